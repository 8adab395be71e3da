# Warning set (abseil copts + spdlog); -Werror through ADMIT_WERROR.
function(admit_target_options target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast
    -Woverloaded-virtual -Wcast-qual -Wimplicit-fallthrough -Wconversion -Wsign-conversion)
  if(ADMIT_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
