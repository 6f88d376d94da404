// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_COMMON_CHECK_H_
#define SESSIOND_COMMON_CHECK_H_

#include <string_view>

namespace sessiond {

// Prints "file:line: CHECK failed: <condition> <message>" to stderr and
// aborts. Used where going on would risk acknowledging a write that is not
// durable: a failed log fsync, a corrupt log, a broken Raft invariant. Like
// etcd's "inoperable" storage error, the process stops instead of retrying.
[[noreturn]] void CheckFailed(const char* file, int line, const char* condition,
                              std::string_view message);

}  // namespace sessiond

#define SESSIOND_CHECK(cond)                                           \
  do {                                                                 \
    if (!(cond)) ::sessiond::CheckFailed(__FILE__, __LINE__, #cond, ""); \
  } while (0)

#define SESSIOND_CHECK_MSG(cond, msg)                                     \
  do {                                                                    \
    if (!(cond)) ::sessiond::CheckFailed(__FILE__, __LINE__, #cond, (msg)); \
  } while (0)

// Aborts when `status_expr` (an absl::Status) is not OK.
#define SESSIOND_CHECK_OK(status_expr)                                    \
  do {                                                                    \
    const ::absl::Status sessiond_check_status_ = (status_expr);          \
    if (!sessiond_check_status_.ok())                                     \
      ::sessiond::CheckFailed(__FILE__, __LINE__, #status_expr,           \
                              sessiond_check_status_.ToString());         \
  } while (0)

#endif  // SESSIOND_COMMON_CHECK_H_
