// Small helpers for absl::Status plumbing (this Abseil release has no public
// RETURN_IF_ERROR / ASSIGN_OR_RETURN).
#ifndef QCAL_CORE_STATUS_MACROS_H_
#define QCAL_CORE_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// QCAL_RETURN_IF_ERROR evaluates `expr` (an absl::Status) once and returns it
// from the enclosing function if it is not OK.
#define QCAL_RETURN_IF_ERROR(expr)                       \
  do {                                                   \
    ::absl::Status qcal_status_ = (expr);                \
    if (!qcal_status_.ok()) return qcal_status_;         \
  } while (false)

#define QCAL_STATUS_CONCAT_INNER_(a, b) a##b
#define QCAL_STATUS_CONCAT_(a, b) QCAL_STATUS_CONCAT_INNER_(a, b)

// QCAL_ASSIGN_OR_RETURN evaluates `rexpr` (an absl::StatusOr<T>) and either
// returns its error status or moves its value into `lhs`, which may be a
// declaration (`auto x`) or an existing variable.
#define QCAL_ASSIGN_OR_RETURN(lhs, rexpr) \
  QCAL_ASSIGN_OR_RETURN_IMPL_(            \
      QCAL_STATUS_CONCAT_(qcal_statusor_, __LINE__), lhs, rexpr)

#define QCAL_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // QCAL_CORE_STATUS_MACROS_H_
