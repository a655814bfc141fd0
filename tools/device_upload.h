// Copies of host tensors on an accelerator, for `--backend=cuda`.
//
// An observer runs the kernels of the device its input lives on (core/
// backend.h), so a tool that observes on a GPU first copies each tensor
// there. core never depends on cuda, and the tools' own code is plain C++, so
// the copy function is looked up here: a device-specific target
// (//tools:cuda_upload, built only with a CUDA toolkit) registers it from a
// namespace-scope constant, as observer plugins register themselves.
#ifndef QCAL_TOOLS_DEVICE_UPLOAD_H_
#define QCAL_TOOLS_DEVICE_UPLOAD_H_

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace qcal {

// DeviceCopy is a contiguous copy of a tensor in device memory: `view` is
// valid while `owner` (which frees the memory) lives.
struct DeviceCopy {
  TensorView view;
  std::shared_ptr<void> owner;
};

// DeviceUploadFn copies a contiguous CPU tensor to its device.
using DeviceUploadFn = absl::StatusOr<DeviceCopy> (*)(const TensorView& host);

// DeviceProbeFn says whether a device is usable: OK, or FailedPrecondition
// saying why not (no driver, no device).
using DeviceProbeFn = absl::Status (*)();

// RegisterDeviceUpload installs `fn` and `probe` for `device`; a second
// registration for the same device aborts at start-up. Returns true (for a
// registration constant).
bool RegisterDeviceUpload(Device device, DeviceUploadFn fn,
                          DeviceProbeFn probe);

// FindDeviceUpload returns the function registered for `device`, or nullptr.
DeviceUploadFn FindDeviceUpload(Device device);

// ToDevice returns `host` itself for the CPU, otherwise a copy on `device`
// kept alive by `*holder` (Internal error when no upload is registered).
absl::StatusOr<TensorView> ToDevice(const TensorView& host, Device device,
                                    DeviceCopy* holder);

// ProbeDevice runs the probe registered for `device` (FailedPrecondition if
// none is registered).
absl::Status ProbeDevice(Device device);

}  // namespace qcal

#endif  // QCAL_TOOLS_DEVICE_UPLOAD_H_
