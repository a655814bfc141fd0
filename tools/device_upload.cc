#include "tools/device_upload.h"

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace qcal {
namespace {

constexpr int kNumDevices = 2;

struct UploadTable {
  absl::Mutex mu;
  DeviceUploadFn fns[kNumDevices] ABSL_GUARDED_BY(mu) = {nullptr, nullptr};
  DeviceProbeFn probes[kNumDevices] ABSL_GUARDED_BY(mu) = {nullptr, nullptr};
};

UploadTable& Table() {
  static UploadTable* table = new UploadTable;
  return *table;
}

}  // namespace

bool RegisterDeviceUpload(Device device, DeviceUploadFn fn,
                          DeviceProbeFn probe) {
  UploadTable& table = Table();
  absl::MutexLock lock(&table.mu);
  DeviceUploadFn& slot = table.fns[static_cast<int>(device)];
  if (slot != nullptr) {
    std::fprintf(stderr, "qcal: a device upload for %s is registered twice\n",
                 device == Device::kCuda ? "cuda" : "cpu");
    std::abort();
  }
  slot = fn;
  table.probes[static_cast<int>(device)] = probe;
  return true;
}

DeviceUploadFn FindDeviceUpload(Device device) {
  UploadTable& table = Table();
  absl::MutexLock lock(&table.mu);
  return table.fns[static_cast<int>(device)];
}

absl::StatusOr<TensorView> ToDevice(const TensorView& host, Device device,
                                    DeviceCopy* holder) {
  if (device == Device::kCpu) return host;
  DeviceUploadFn upload = FindDeviceUpload(device);
  if (upload == nullptr) {
    return absl::InternalError("no device upload for the chosen backend");
  }
  absl::StatusOr<DeviceCopy> copy = upload(host);
  if (!copy.ok()) return copy.status();
  *holder = *std::move(copy);
  return holder->view;
}

absl::Status ProbeDevice(Device device) {
  DeviceProbeFn probe;
  {
    UploadTable& table = Table();
    absl::MutexLock lock(&table.mu);
    probe = table.probes[static_cast<int>(device)];
  }
  if (probe == nullptr) {
    return absl::FailedPreconditionError("no device probe is linked");
  }
  return probe();
}

}  // namespace qcal
