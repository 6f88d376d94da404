// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_COMMON_STATUS_MACROS_H_
#define SESSIOND_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Abseil 20220623 (Debian 12) predates absl/status/status_macros.h, so sessiond
// carries its own two macros.

// Returns from the enclosing function when `expr` is not OK.
#define SESSIOND_RETURN_IF_ERROR(expr)                \
  do {                                                \
    ::absl::Status sessiond_status_ = (expr);         \
    if (!sessiond_status_.ok()) return sessiond_status_; \
  } while (0)

#define SESSIOND_STATUS_CONCAT_INNER_(a, b) a##b
#define SESSIOND_STATUS_CONCAT_(a, b) SESSIOND_STATUS_CONCAT_INNER_(a, b)

// `SESSIOND_ASSIGN_OR_RETURN(auto x, Foo());` assigns the value of an OK
// StatusOr to `lhs`, or returns its status from the enclosing function.
#define SESSIOND_ASSIGN_OR_RETURN(lhs, expr) \
  SESSIOND_ASSIGN_OR_RETURN_IMPL_(           \
      SESSIOND_STATUS_CONCAT_(sessiond_statusor_, __LINE__), lhs, expr)

#define SESSIOND_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                    \
  if (!statusor.ok()) return std::move(statusor).status();   \
  lhs = std::move(statusor).value()

#endif  // SESSIOND_COMMON_STATUS_MACROS_H_
