# Cross-compiling for aarch64 Linux with Debian's crossbuild-essential-arm64.
# The C library is the cross toolchain's own (/usr/aarch64-linux-gnu); NASRT_SYSROOT
# holds only the extracted arm64 kernel libraries (XNNPACK, pthreadpool, cpuinfo)
# and headers, so two C libraries never mix.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
if(NOT NASRT_SYSROOT)
  set(NASRT_SYSROOT $ENV{NASRT_SYSROOT})
endif()
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES NASRT_SYSROOT)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu ${NASRT_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
# XNNPACK's own dependencies (pthreadpool, cpuinfo) are found at link time here.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-Wl,-rpath-link,${NASRT_SYSROOT}/usr/lib/aarch64-linux-gnu")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-Wl,-rpath-link,${NASRT_SYSROOT}/usr/lib/aarch64-linux-gnu")
