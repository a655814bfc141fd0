// Registers the CUDA device upload of tools/device_upload.h: each tensor is
// copied into a fresh cudaMalloc buffer (freed when the DeviceCopy's owner
// goes) through a stream of this thread. Built only with a CUDA toolkit
// (qcal_cuda_library); the tools link it so that --backend=cuda works once the
// CUDA backend is linked too.
#include <memory>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "core/tensor.h"
#include "cuda/runtime.h"
#include "tools/device_upload.h"

namespace qcal {
namespace {

absl::StatusOr<DeviceCopy> UploadToCuda(const TensorView& host) {
  if (host.device() != Device::kCpu || !host.is_contiguous()) {
    return absl::InvalidArgumentError(
        "UploadToCuda needs a contiguous CPU tensor, got " +
        host.DebugString());
  }
  QCAL_ASSIGN_OR_RETURN(CudaStream stream, CudaStream::Create());
  QCAL_ASSIGN_OR_RETURN(DeviceBuffer buffer,
                        DeviceBuffer::Allocate(host.nbytes()));
  QCAL_RETURN_IF_ERROR(
      buffer.CopyFromHost(host.data(), host.nbytes(), stream.get()));
  auto owner = std::make_shared<DeviceBuffer>(std::move(buffer));
  QCAL_ASSIGN_OR_RETURN(
      TensorView view,
      TensorView::Contiguous(owner->data(), host.dtype(), host.shape(),
                             Device::kCuda));
  return DeviceCopy{view, std::move(owner)};
}

absl::Status ProbeCuda() {
  QCAL_ASSIGN_OR_RETURN(CudaDeviceProbe probe, ProbeCudaDevices());
  if (probe.device_count == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device is available (", probe.no_device_reason,
                     ")"));
  }
  return absl::OkStatus();
}

const bool kCudaUploadRegistered =
    RegisterDeviceUpload(Device::kCuda, &UploadToCuda, &ProbeCuda);

}  // namespace
}  // namespace qcal
