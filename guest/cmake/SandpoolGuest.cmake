# Building sandpool guests: freestanding, statically linked, non-PIE x86-64
# ELF programs for the sandpool guest ABI (guest/include/sandpool/abi.h).
#
#   sandpool_add_guest(<name> SOURCES a.c b.cpp ...)
#
# builds <name> (an ELF file in the build tree) from the sources, linked at
# SANDPOOL_IMAGE_BASE with the SDK runtime (entry point, tiny libc, fault
# handlers). Baseline x86-64 only (no AVX: the emulated backend lacks it),
# no red zone (exceptions are delivered on the guest's own stack).

set(SANDPOOL_GUEST_DIR ${CMAKE_CURRENT_LIST_DIR}/..)

# Guests see only the compiler's freestanding headers (stdint.h, stddef.h,
# stdarg.h, stdbool.h) and the SDK's own libc, never the host's.
execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=include
                OUTPUT_VARIABLE SANDPOOL_COMPILER_INCLUDE OUTPUT_STRIP_TRAILING_WHITESPACE)
set(SANDPOOL_GUEST_INCLUDES ${SANDPOOL_GUEST_DIR}/include ${SANDPOOL_GUEST_DIR}/include/libc)

set(SANDPOOL_GUEST_COMPILE_OPTIONS
  -nostdinc $<$<COMPILE_LANGUAGE:CXX>:-nostdinc++>
  # As an option: CMake drops the compiler's own directory from include lists.
  -isystem ${SANDPOOL_COMPILER_INCLUDE}
  -ffreestanding -fno-pie -fno-pic -mno-red-zone -march=x86-64 -mtune=generic
  -fno-stack-protector -fcf-protection=none -fno-asynchronous-unwind-tables
  -fno-unwind-tables -fno-builtin -fno-sanitize=all -O2
  $<$<COMPILE_LANGUAGE:CXX>:-fno-exceptions -fno-rtti -fno-threadsafe-statics -fno-use-cxa-atexit>)
set(SANDPOOL_GUEST_LINK_OPTIONS
  -nostdlib -static -no-pie -fno-sanitize=all
  -Wl,-T,${SANDPOOL_GUEST_DIR}/runtime/guest.ld -Wl,--build-id=none
  -Wl,-z,noexecstack -Wl,-z,max-page-size=4096)

function(sandpool_add_guest name)
  cmake_parse_arguments(ARG "" "" "SOURCES" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_compile_options(${name} PRIVATE ${SANDPOOL_GUEST_COMPILE_OPTIONS})
  target_link_options(${name} PRIVATE ${SANDPOOL_GUEST_LINK_OPTIONS})
  target_include_directories(${name} SYSTEM PRIVATE ${SANDPOOL_GUEST_INCLUDES})
  target_link_libraries(${name} PRIVATE sandpool_guest_runtime gcc)
  set_target_properties(${name} PROPERTIES LINK_DEPENDS ${SANDPOOL_GUEST_DIR}/runtime/guest.ld
                                           POSITION_INDEPENDENT_CODE OFF)
endfunction()
