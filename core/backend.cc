#include "core/backend.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/cpu/simd_kernels.h"

namespace qcal {
namespace {

// ----------------------------------------------------------- registration

struct BackendTable {
  absl::Mutex mu;
  const BackendOps* ops[2] ABSL_GUARDED_BY(mu) = {nullptr, nullptr};
};

BackendTable& Table() {
  static BackendTable* table = new BackendTable;  // never destroyed
  return *table;
}

int DeviceSlot(Device device) { return device == Device::kCuda ? 1 : 0; }

// The CPU table: the vectorised kernels of core/cpu/simd_kernels.h (their
// scalar reference is core/cpu/reference_kernels.h).
const BackendOps kCpuOps = {"cpu", &SimdMinMax, &SimdMseErrors,
                             &SimdMseErrorBounds};

}  // namespace

bool RegisterBackend(Device device, const BackendOps* ops) {
  BackendTable& table = Table();
  absl::MutexLock lock(&table.mu);
  const int slot = DeviceSlot(device);
  if (table.ops[slot] != nullptr) {
    std::fprintf(stderr, "qcal: a second backend registered for device %s\n",
                 std::string(DeviceName(device)).c_str());
    std::abort();
  }
  table.ops[slot] = ops;
  return true;
}

absl::StatusOr<const BackendOps*> GetBackend(Device device) {
  if (device == Device::kCpu) return &kCpuOps;
  BackendTable& table = Table();
  absl::MutexLock lock(&table.mu);
  const BackendOps* ops = table.ops[DeviceSlot(device)];
  if (ops == nullptr) {
    return absl::UnimplementedError(absl::StrCat(
        "no ", DeviceName(device),
        " backend is linked into this program (link //cuda:backend, built "
        "with a CUDA toolkit)"));
  }
  return ops;
}

const BackendOps& CpuBackend() { return kCpuOps; }

}  // namespace qcal
