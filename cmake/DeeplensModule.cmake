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

# deeplens_test(NAME LABEL <unit|integration|e2e> SRCS <files...> DEPS <targets...>)
# A GoogleTest executable whose tests ctest discovers and labels by tier.
function(deeplens_test NAME)
  # CONCURRENT: the binary tests threaded code; scripts/test runs it under ThreadSanitizer too
  # (label `concurrency`).
  cmake_parse_arguments(ARG "CONCURRENT" "LABEL" "SRCS;DEPS" ${ARGN})
  set(labels ${ARG_LABEL})
  if(ARG_CONCURRENT)
    list(APPEND labels concurrency)
  endif()
  add_executable(${NAME} ${ARG_SRCS})
  target_compile_options(${NAME} PRIVATE -Wall -Wextra -Werror)
  target_compile_definitions(${NAME} PRIVATE
    DEEPLENS_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    DEEPLENS_BINARY="$<TARGET_FILE:deeplens>")
  target_link_libraries(${NAME} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  add_dependencies(${NAME} deeplens)
  gtest_discover_tests(${NAME} PROPERTIES LABELS "${labels}" DISCOVERY_TIMEOUT 60)
endfunction()
