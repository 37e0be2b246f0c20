# Finds Debian's XNNPACK (no CMake config of its own) as the imported target
# nasrt::xnnpack. Used by nasrt's build and by its installed package config.
if(NOT TARGET nasrt::xnnpack)
  find_path(NASRT_XNNPACK_INCLUDE_DIR xnnpack.h)
  find_library(NASRT_XNNPACK_LIBRARY NAMES XNNPACK xnnpack)
  if(NASRT_XNNPACK_INCLUDE_DIR AND NASRT_XNNPACK_LIBRARY)
    add_library(nasrt::xnnpack UNKNOWN IMPORTED)
    set_target_properties(nasrt::xnnpack PROPERTIES
      IMPORTED_LOCATION "${NASRT_XNNPACK_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${NASRT_XNNPACK_INCLUDE_DIR}")
  endif()
endif()
