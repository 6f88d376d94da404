// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// FUZZ_CHECK: a property a fuzz target asserts about what a decoder did
// (beyond "it did not crash"); a failure aborts, which both the replay main
// and libFuzzer report with the input.
#ifndef SESSIOND_TESTS_FUZZ_FUZZ_CHECK_H_
#define SESSIOND_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(condition)                                          \
  do {                                                                 \
    if (!(condition)) {                                                \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, \
                   __LINE__, #condition);                              \
      std::abort();                                                    \
    }                                                                  \
  } while (false)

#endif  // SESSIOND_TESTS_FUZZ_FUZZ_CHECK_H_
