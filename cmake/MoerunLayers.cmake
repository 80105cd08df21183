# Layers as CMake sees them (declared once, in cmake/layers.txt).
#
#   moerun_layer(<target> <layer>)        <target> belongs to <layer>: it gets an include root
#                                         holding only that layer's public headers, and links
#                                         the libraries of the layers it may use (whose roots
#                                         come along), so a header above it is not even found.
#   moerun_private_folder(<target> <dir>) <target> owns the private folder <dir> (say
#                                         runtime/cpu): its headers get a root of their own that
#                                         only <target> and what links it see.
# Include roots live in <build>/include_roots/<name>/ as symbolic links to the sources, so
# `#include "parallel/grad_sync.h"` keeps its path and error messages point at the source.

file(STRINGS ${PROJECT_SOURCE_DIR}/cmake/layers.txt _moerun_layer_lines REGEX "^(layer|private) ")
set(MOERUN_PRIVATE_FOLDERS "")
foreach(_line IN LISTS _moerun_layer_lines)
  string(REGEX REPLACE "[ \t]+" ";" _words "${_line}")
  list(POP_FRONT _words _kind _name)
  if(_kind STREQUAL "layer")
    set(MOERUN_LAYER_USES_${_name} "${_words}")
  else()
    list(APPEND MOERUN_PRIVATE_FOLDERS ${_name})
  endif()
endforeach()
set_property(DIRECTORY ${PROJECT_SOURCE_DIR} APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/cmake/layers.txt)

# Links every header under <folder> (skipping private folders other than <folder> itself) into
# <root>/<folder>/..., freshly at each configure so a removed header disappears.
function(_moerun_header_root root folder)
  file(REMOVE_RECURSE ${root})
  file(GLOB_RECURSE headers CONFIGURE_DEPENDS RELATIVE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/${folder}/*.h)
  foreach(h IN LISTS headers)
    set(skip FALSE)
    foreach(p IN LISTS MOERUN_PRIVATE_FOLDERS)
      if(NOT p STREQUAL folder AND h MATCHES "^${p}/")
        set(skip TRUE)
      endif()
    endforeach()
    if(NOT skip)
      get_filename_component(dir ${root}/${h} DIRECTORY)
      file(MAKE_DIRECTORY ${dir})
      file(CREATE_LINK ${PROJECT_SOURCE_DIR}/${h} ${root}/${h} SYMBOLIC)
    endif()
  endforeach()
endfunction()

function(moerun_layer target layer)
  if(NOT DEFINED MOERUN_LAYER_USES_${layer})
    message(FATAL_ERROR "moerun_layer: '${layer}' is not declared in cmake/layers.txt")
  endif()
  set(root ${PROJECT_BINARY_DIR}/include_roots/${layer})
  get_property(done GLOBAL PROPERTY MOERUN_ROOT_DONE_${layer})
  if(NOT done)
    _moerun_header_root(${root} ${layer})
    set_property(GLOBAL PROPERTY MOERUN_ROOT_DONE_${layer} TRUE)
  endif()
  target_include_directories(${target} PUBLIC ${root})
  foreach(dep IN LISTS MOERUN_LAYER_USES_${layer})
    target_link_libraries(${target} PUBLIC moerun_${dep})
  endforeach()
  target_link_libraries(${target} PRIVATE moerun_warnings)
endfunction()

function(moerun_private_folder target folder)
  string(REPLACE "/" "_" name ${folder})
  set(root ${PROJECT_BINARY_DIR}/include_roots/private_${name})
  _moerun_header_root(${root} ${folder})
  target_include_directories(${target} PUBLIC ${root})
endfunction()
