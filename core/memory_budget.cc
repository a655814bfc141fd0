#include "core/memory_budget.h"

#include <atomic>

#include "absl/strings/str_cat.h"

namespace qcal {
namespace {

std::atomic<int64_t> g_budget{0};
std::atomic<int64_t> g_in_use{0};

}  // namespace

void SetTensorMemoryBudget(int64_t bytes) {
  g_budget.store(bytes > 0 ? bytes : 0);
}

int64_t TensorMemoryBudget() { return g_budget.load(); }

int64_t TensorBytesInUse() { return g_in_use.load(); }

absl::Status ReserveTensorMemory(int64_t bytes, absl::string_view what) {
  const int64_t budget = g_budget.load();
  int64_t current = g_in_use.load();
  while (true) {
    if (budget > 0 && (bytes > budget || current > budget - bytes)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "allocating ", bytes, " bytes for ", what,
          " would exceed the memory budget of ", budget, " bytes (",
          current, " in use); raise it with --memory_budget_mb"));
    }
    if (g_in_use.compare_exchange_weak(current, current + bytes)) {
      return absl::OkStatus();
    }
  }
}

void ReleaseTensorMemory(int64_t bytes) { g_in_use.fetch_sub(bytes); }

}  // namespace qcal
