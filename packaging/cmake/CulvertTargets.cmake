# Helpers that give every culvert target the same flags.
#
#   culvert_library(NAME SOURCES ... DEPS ...)   static library, include root = repo root
#   culvert_executable(NAME SOURCES ... DEPS ...)
#   culvert_test(NAME SOURCES ... DEPS ... LABELS ...)  gtest binary registered with ctest

set(CULVERT_WARNINGS -Wall -Wextra -Wpedantic)
if(CULVERT_WERROR)
  list(APPEND CULVERT_WARNINGS -Werror)
endif()

if(CULVERT_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

function(_culvert_common target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${CULVERT_WARNINGS}>)
  target_compile_definitions(${target} PRIVATE CULVERT_VERSION="${PROJECT_VERSION}")
endfunction()

function(culvert_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  _culvert_common(${name})
endfunction()

function(culvert_executable name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  # Drops the unreferenced sections of the static archives it links (see CulvertDependencies).
  target_link_options(${name} PRIVATE -Wl,--gc-sections)
  _culvert_common(${name})
endfunction()

function(culvert_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;LABELS;RESOURCE_LOCK" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  _culvert_common(${name})
  if(NOT ARG_LABELS)
    set(ARG_LABELS unit)
  endif()
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT 300)
  if(ARG_RESOURCE_LOCK)
    set_tests_properties(${name} PROPERTIES RESOURCE_LOCK "${ARG_RESOURCE_LOCK}")
  endif()
endfunction()
