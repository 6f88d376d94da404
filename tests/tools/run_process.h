// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_TOOLS_RUN_PROCESS_H_
#define SESSIOND_TESTS_TOOLS_RUN_PROCESS_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace sessiond::testing {

// What a finished process said.
struct ProcessRun {
  int exit_code = -1;  // -1: killed after the timeout, or did not exit
  std::string out;
  std::string err;
};

std::ostream& operator<<(std::ostream& os, const ProcessRun& run);

// Runs argv[0] (a path) with `argv`, exactly the environment `env`
// ("NAME=value"), and `input` on stdin (then closed); collects stdout and
// stderr; SIGKILLs it after `timeout` (bounded: a test never hangs on it).
ProcessRun RunProcess(const std::vector<std::string>& argv,
                      const std::vector<std::string>& env,
                      const std::string& input, absl::Duration timeout);

}  // namespace sessiond::testing

#endif  // SESSIOND_TESTS_TOOLS_RUN_PROCESS_H_
