# ADMIT_SANITIZE=address,undefined or thread: applied to every target.
if(ADMIT_SANITIZE)
  add_compile_options(-fsanitize=${ADMIT_SANITIZE} -fno-sanitize-recover=all -fno-omit-frame-pointer -g)
  add_link_options(-fsanitize=${ADMIT_SANITIZE})
endif()
