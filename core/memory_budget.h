// A process-wide budget for the memory qcal allocates for tensors.
//
// Every Tensor buffer is counted against it; an allocation that would take
// the live total past the budget fails with ResourceExhausted instead of
// exhausting the machine. Tools expose it as --memory_budget_mb. Thread-safe.
#ifndef QCAL_CORE_MEMORY_BUDGET_H_
#define QCAL_CORE_MEMORY_BUDGET_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace qcal {

// SetTensorMemoryBudget sets the limit in bytes (<= 0: unlimited, the
// default). Tensors already allocated keep counting.
void SetTensorMemoryBudget(int64_t bytes);

// TensorMemoryBudget returns the limit (0: unlimited).
int64_t TensorMemoryBudget();

// TensorBytesInUse returns the bytes of all live Tensor buffers.
int64_t TensorBytesInUse();

// ReserveTensorMemory counts `bytes` as in use, or returns ResourceExhausted
// naming `what` when that would exceed the budget.
absl::Status ReserveTensorMemory(int64_t bytes, absl::string_view what);

// ReleaseTensorMemory returns `bytes` reserved earlier.
void ReleaseTensorMemory(int64_t bytes);

}  // namespace qcal

#endif  // QCAL_CORE_MEMORY_BUDGET_H_
