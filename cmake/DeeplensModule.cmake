# deeplens_module(NAME SRCS <files...> DEPS <targets...>)
# One static library per module under src/, named deeplens_<NAME>. Our own code gets
# -Wall -Wextra -Werror; third-party headers come in through imported targets (SYSTEM includes).
function(deeplens_module NAME)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_library(deeplens_${NAME} STATIC ${ARG_SRCS})
  target_include_directories(deeplens_${NAME} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_compile_options(deeplens_${NAME} PRIVATE -Wall -Wextra -Werror)
  target_link_libraries(deeplens_${NAME} PUBLIC ${ARG_DEPS})
endfunction()

# deeplens_test(NAME LABEL <unit|integration|e2e> [models] SRCS <files...> DEPS <targets...>)
# A GoogleTest executable whose tests ctest discovers and labels by tier.
function(deeplens_test NAME)
  # CONCURRENT: the binary tests threaded code. The ThreadSanitizer build (DEEPLENS_TSAN, the
  # `tsan` preset) builds and registers only these, so scripts/test runs exactly them under TSan.
  # SERIAL: the binary's assertions are about throughput and timing; ctest runs its tests alone,
  # not beside another test on the same cores.
  cmake_parse_arguments(ARG "CONCURRENT;SERIAL" "" "LABEL;SRCS;DEPS" ${ARGN})
  set(skip_under_tsan OFF)
  if(DEEPLENS_TSAN AND NOT ARG_CONCURRENT)
    set(skip_under_tsan ON)
  endif()
  if(skip_under_tsan)
    add_executable(${NAME} EXCLUDE_FROM_ALL ${ARG_SRCS})  # defined (others configure it), not built
  else()
    add_executable(${NAME} ${ARG_SRCS})
  endif()
  target_compile_options(${NAME} PRIVATE -Wall -Wextra -Werror)
  target_compile_definitions(${NAME} PRIVATE
    DEEPLENS_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    DEEPLENS_BINARY="$<TARGET_FILE:deeplens>")
  target_link_libraries(${NAME} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  add_dependencies(${NAME} deeplens)
  if(NOT skip_under_tsan)
    list(GET ARG_LABEL 0 tier)
    gtest_discover_tests(${NAME} PROPERTIES LABELS ${tier} RUN_SERIAL ${ARG_SERIAL} DISCOVERY_TIMEOUT 60)
    list(LENGTH ARG_LABEL label_count)
    if(label_count GREATER 1)
      # More labels (LABEL integration models): gtest_discover_tests passes no list through its
      # PROPERTIES, so a script run after its own sets them on every test it discovered.
      set(labels_script ${CMAKE_CURRENT_BINARY_DIR}/${NAME}_labels.cmake)
      file(WRITE ${labels_script}
           "if(${NAME}_TESTS)\n  set_tests_properties(\${${NAME}_TESTS} PROPERTIES LABELS \"${ARG_LABEL}\")\nendif()\n")
      set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${labels_script})
    endif()
  endif()
endfunction()
