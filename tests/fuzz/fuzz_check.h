// FUZZ_CHECK: an invariant of the code under fuzzing. A broken one prints what broke and aborts,
// which libFuzzer records as a crash (with the input that caused it) like any sanitizer report.
#pragma once

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond, what)                                                               \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "%s:%d: invariant broken: %s (%s)\n", __FILE__, __LINE__, #cond, \
                   what);                                                                    \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)
