# ADMIT_SANITIZE=address,undefined or thread: applied to every target. Debug information comes
# from the build type (scripts/test: -O1 -g1, line tables for the reports' stack traces).
if(ADMIT_SANITIZE)
  add_compile_options(-fsanitize=${ADMIT_SANITIZE} -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${ADMIT_SANITIZE})
  if(ADMIT_SANITIZE MATCHES "thread" AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # GCC warns that TSan does not model std::atomic_thread_fence, which Asio's handler
    # machinery uses; every target that includes Asio would need the same exception.
    add_compile_options(-Wno-tsan)
  endif()
endif()
