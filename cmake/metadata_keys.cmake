# <nasrt/metadata_keys.h>: the model file's metadata keys as C macros (NASRT_KEY_<NAME> "nasrt.key"),
# made from nasrt/contract/metadata_keys.txt, the one list (nasrt/contract/modelfile.py reads it too).
# CMakeLists.txt includes this file; tests/test_metadata_keys.py runs it as a script:
#   cmake -DKEYS=nasrt/contract/metadata_keys.txt -DHEADER=OUT/nasrt/metadata_keys.h -P cmake/metadata_keys.cmake
function(nasrt_metadata_keys_header keys header)
  file(STRINGS "${keys}" lines ENCODING UTF-8)
  set(defines "")
  foreach(line IN LISTS lines)
    if(line MATCHES "^#" OR line MATCHES "^[ \t]*$")
      continue()
    endif()
    if(NOT line MATCHES "^([A-Z][A-Z0-9_]*)[ \t]+(nasrt\\.[a-z0-9_.]*)[ \t]+(.+)$")
      message(FATAL_ERROR "${keys}: expected NAME nasrt.KEY MEANING, got '${line}'")
    endif()
    string(REPLACE "*/" "* /" meaning "${CMAKE_MATCH_3}")
    string(APPEND defines "/* ${meaning} */\n#define NASRT_KEY_${CMAKE_MATCH_1} \"${CMAKE_MATCH_2}\"\n")
  endforeach()
  # Written beside the header, then copied only when it changed: no rebuild on every configure.
  file(WRITE "${header}.new"
       "/* The metadata keys of a model file (docs/FORMATS.md), made by the build from\n"
       "   nasrt/contract/metadata_keys.txt: edit that list, not this file. */\n"
       "#ifndef NASRT_METADATA_KEYS_H\n#define NASRT_METADATA_KEYS_H\n\n${defines}\n#endif\n")
  configure_file("${header}.new" "${header}" COPYONLY)
  file(REMOVE "${header}.new")
  if(NOT CMAKE_SCRIPT_MODE_FILE)
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${keys}")  # edit the list: configure again
  endif()
endfunction()

if(CMAKE_SCRIPT_MODE_FILE AND DEFINED KEYS AND DEFINED HEADER)
  nasrt_metadata_keys_header("${KEYS}" "${HEADER}")
endif()
