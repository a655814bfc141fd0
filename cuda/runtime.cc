#include "cuda/runtime.h"

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/status_macros.h"
#include "cuda_runtime_api.h"

namespace qcal {
namespace internal_cuda {
namespace {

// StatusCodeFor maps a CUDA error (not cudaSuccess) to the closest absl code.
absl::StatusCode StatusCodeFor(cudaError_t err) {
  switch (err) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
      return absl::StatusCode::kFailedPrecondition;
    case cudaErrorMemoryAllocation:
      return absl::StatusCode::kResourceExhausted;
    case cudaErrorInvalidValue:
    case cudaErrorInvalidDevice:
    case cudaErrorInvalidDevicePointer:
    case cudaErrorInvalidMemcpyDirection:
    case cudaErrorInvalidConfiguration:
    case cudaErrorInvalidResourceHandle:
      return absl::StatusCode::kInvalidArgument;
    case cudaErrorNotSupported:
      return absl::StatusCode::kUnimplemented;
    default:
      return absl::StatusCode::kInternal;
  }
}

// IsNoDeviceError reports whether cudaGetDeviceCount's `err` means there is
// no usable device rather than a broken installation (see ProbeCudaDevices).
bool IsNoDeviceError(cudaError_t err) {
  return err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver;
}

// Check returns CudaStatus(err, what) and, on failure, also clears the
// error the runtime recorded as the thread's last error, so that a later
// launch check (cudaGetLastError) does not report it again. Sticky errors
// (a kernel fault) stay, as does a failed runtime initialization (no
// driver): every later call reports them.
absl::Status Check(cudaError_t err, absl::string_view what) {
  if (err == cudaSuccess) return absl::OkStatus();
  cudaGetLastError();
  return CudaStatus(err, what);
}

// CheckCopyArgs validates the arguments shared by the two copy directions.
absl::Status CheckCopyArgs(absl::string_view op, const void* host,
                           int64_t bytes, int64_t size_bytes) {
  if (bytes < 0 || bytes > size_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("DeviceBuffer::", op, ": cannot copy ", bytes,
                     " bytes with a buffer of ", size_bytes, " bytes"));
  }
  if (bytes > 0 && host == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DeviceBuffer::", op, ": null host pointer for ", bytes, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace internal_cuda

absl::Status CudaStatus(cudaError_t err, absl::string_view what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::Status(
      internal_cuda::StatusCodeFor(err),
      absl::StrCat(what, ": ", cudaGetErrorName(err), " (",
                   static_cast<int>(err), "): ", cudaGetErrorString(err)));
}

absl::StatusOr<CudaDeviceProbe> ProbeCudaDevices() {
  CudaDeviceProbe probe;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    absl::Status status = internal_cuda::Check(err, "cudaGetDeviceCount");
    if (!internal_cuda::IsNoDeviceError(err)) return status;
    probe.no_device_reason = std::string(status.message());
    return probe;
  }
  probe.device_count = count;
  if (count == 0) {
    probe.no_device_reason = "cudaGetDeviceCount reported 0 devices";
  }
  return probe;
}

absl::StatusOr<int> CudaDeviceCount() {
  QCAL_ASSIGN_OR_RETURN(const CudaDeviceProbe probe, ProbeCudaDevices());
  return probe.device_count;
}

absl::StatusOr<std::string> CudaDeviceName(int device) {
  QCAL_ASSIGN_OR_RETURN(const int count, CudaDeviceCount());
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("CudaDeviceName: no CUDA device ", device, " (", count,
                     " device", count == 1 ? "" : "s", " present)"));
  }
  cudaDeviceProp prop;
  QCAL_RETURN_IF_ERROR(internal_cuda::Check(
      cudaGetDeviceProperties(&prop, device),
      absl::StrCat("cudaGetDeviceProperties(device ", device, ")")));
  return std::string(prop.name);
}

// ------------------------------------------------------------ DeviceBuffer

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(int64_t bytes) {
  if (bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DeviceBuffer::Allocate: negative size ", bytes, " bytes"));
  }
  if (bytes == 0) return DeviceBuffer();
  void* data = nullptr;
  QCAL_RETURN_IF_ERROR(
      internal_cuda::Check(cudaMalloc(&data, static_cast<size_t>(bytes)),
                           absl::StrCat("cudaMalloc(", bytes, " bytes)")));
  return DeviceBuffer(data, bytes);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_bytes_(std::exchange(other.size_bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    Reset();
    data_ = std::exchange(other.data_, nullptr);
    size_bytes_ = std::exchange(other.size_bytes_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() { Reset(); }

void DeviceBuffer::Reset() {
  if (data_ != nullptr) cudaFree(data_);
  data_ = nullptr;
  size_bytes_ = 0;
}

absl::Status DeviceBuffer::CopyFromHost(const void* src, int64_t bytes,
                                        cudaStream_t stream) {
  QCAL_RETURN_IF_ERROR(
      internal_cuda::CheckCopyArgs("CopyFromHost", src, bytes, size_bytes_));
  if (bytes == 0) return absl::OkStatus();
  QCAL_RETURN_IF_ERROR(internal_cuda::Check(
      cudaMemcpyAsync(data_, src, static_cast<size_t>(bytes),
                      cudaMemcpyHostToDevice, stream),
      absl::StrCat("cudaMemcpyAsync(host to device, ", bytes, " bytes)")));
  return internal_cuda::Check(
      cudaStreamSynchronize(stream),
      "cudaStreamSynchronize after a host-to-device copy");
}

absl::Status DeviceBuffer::CopyToHost(void* dst, int64_t bytes,
                                      cudaStream_t stream) const {
  QCAL_RETURN_IF_ERROR(
      internal_cuda::CheckCopyArgs("CopyToHost", dst, bytes, size_bytes_));
  if (bytes == 0) return absl::OkStatus();
  QCAL_RETURN_IF_ERROR(internal_cuda::Check(
      cudaMemcpyAsync(dst, data_, static_cast<size_t>(bytes),
                      cudaMemcpyDeviceToHost, stream),
      absl::StrCat("cudaMemcpyAsync(device to host, ", bytes, " bytes)")));
  return internal_cuda::Check(
      cudaStreamSynchronize(stream),
      "cudaStreamSynchronize after a device-to-host copy");
}

// -------------------------------------------------------- PinnedHostBuffer

absl::StatusOr<PinnedHostBuffer> PinnedHostBuffer::Allocate(int64_t bytes) {
  if (bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PinnedHostBuffer::Allocate: negative size ", bytes, " bytes"));
  }
  if (bytes == 0) return PinnedHostBuffer();
  void* data = nullptr;
  QCAL_RETURN_IF_ERROR(internal_cuda::Check(
      cudaHostAlloc(&data, static_cast<size_t>(bytes), cudaHostAllocDefault),
      absl::StrCat("cudaHostAlloc(", bytes, " bytes)")));
  return PinnedHostBuffer(data, bytes);
}

PinnedHostBuffer::PinnedHostBuffer(PinnedHostBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_bytes_(std::exchange(other.size_bytes_, 0)) {}

PinnedHostBuffer& PinnedHostBuffer::operator=(
    PinnedHostBuffer&& other) noexcept {
  if (this != &other) {
    Reset();
    data_ = std::exchange(other.data_, nullptr);
    size_bytes_ = std::exchange(other.size_bytes_, 0);
  }
  return *this;
}

PinnedHostBuffer::~PinnedHostBuffer() { Reset(); }

void PinnedHostBuffer::Reset() {
  if (data_ != nullptr) cudaFreeHost(data_);
  data_ = nullptr;
  size_bytes_ = 0;
}

// -------------------------------------------------------------- CudaStream

absl::StatusOr<CudaStream> CudaStream::Create() {
  cudaStream_t stream = nullptr;
  QCAL_RETURN_IF_ERROR(internal_cuda::Check(
      cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
      "cudaStreamCreateWithFlags"));
  return CudaStream(stream);
}

CudaStream::CudaStream(CudaStream&& other) noexcept
    : stream_(std::exchange(other.stream_, nullptr)) {}

CudaStream& CudaStream::operator=(CudaStream&& other) noexcept {
  if (this != &other) {
    Reset();
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

CudaStream::~CudaStream() { Reset(); }

void CudaStream::Reset() {
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  stream_ = nullptr;
}

absl::Status CudaStream::Synchronize() const {
  return internal_cuda::Check(cudaStreamSynchronize(stream_),
                              "cudaStreamSynchronize");
}

}  // namespace qcal
