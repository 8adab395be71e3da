# ADMIT_SANITIZE=address,undefined or thread: applied to every target. Debug information comes
# from the build type (scripts/test: -O1 -g1, line tables for the reports' stack traces).
if(ADMIT_SANITIZE)
  add_compile_options(-fsanitize=${ADMIT_SANITIZE} -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${ADMIT_SANITIZE})
endif()
