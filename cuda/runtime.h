// The small layer over the CUDA runtime API that qcal's CUDA code uses:
// turning cudaError_t into absl::Status, finding devices (where "no device" is
// an ordinary answer, not an error: CI and developer machines have no GPU), and
// RAII owners for device memory, pinned host memory and streams.
//
// Host C++ only (compiled by g++, linked with the static CUDA runtime); kernels
// in .cu files do not include it. Every function acts on the calling thread's
// current device.
#ifndef QCAL_CUDA_RUNTIME_H_
#define QCAL_CUDA_RUNTIME_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cuda_runtime_api.h"

namespace qcal {

// CudaStatus returns OK for cudaSuccess and otherwise an error whose message
// names what was attempted (`what`, e.g. "cudaMalloc(1024 bytes)"), the CUDA
// error's name and number and cudaGetErrorString's description. Codes map to
// absl codes as follows: no device or no usable driver -> FailedPrecondition;
// out of memory -> ResourceExhausted; invalid value, device, pointer, launch
// configuration or handle -> InvalidArgument; not supported ->
// Unimplemented; anything else (including errors from an earlier kernel) ->
// Internal.
absl::Status CudaStatus(cudaError_t err, absl::string_view what);

// CudaDeviceProbe is what ProbeCudaDevices found.
struct CudaDeviceProbe {
  // device_count is the number of usable CUDA devices; 0 when there are none.
  int device_count = 0;
  // no_device_reason says why device_count is 0 (for example "cudaGetDevice
  // Count: cudaErrorInsufficientDriver (35): CUDA driver version is
  // insufficient for CUDA runtime version"); empty when device_count > 0.
  std::string no_device_reason;
};

// ProbeCudaDevices asks the CUDA runtime how many devices there are. These
// cudaGetDeviceCount errors mean "no device" and give device_count == 0 with
// the reason, not an error:
//   - cudaErrorNoDevice: a driver, but no device (or CUDA_VISIBLE_DEVICES
//     hides them all);
//   - cudaErrorInsufficientDriver: no driver at all (libcuda.so absent, as on
//     CI) or one older than this runtime.
// Any other error (a driver that is installed but broken, for example
// cudaErrorSystemDriverMismatch or cudaErrorInitializationError) is returned
// as an error, so that a misconfigured GPU machine is noticed.
absl::StatusOr<CudaDeviceProbe> ProbeCudaDevices();

// CudaDeviceCount returns ProbeCudaDevices()'s device_count: 0, not an error,
// when there is no device or no driver (see ProbeCudaDevices).
absl::StatusOr<int> CudaDeviceCount();

// CudaDeviceName returns the name of device `device` (e.g. "NVIDIA H100 80GB
// HBM3"). InvalidArgument when `device` is not in [0, CudaDeviceCount()).
absl::StatusOr<std::string> CudaDeviceName(int device);

// DeviceBuffer owns `size_bytes()` bytes of device memory from cudaMalloc
// (never managed memory), freed by the destructor. Move-only; a
// default-constructed or moved-from buffer is empty (data() == nullptr).
//
// Copies are enqueued on the caller's stream, after the work already queued
// there, and the stream is synchronized before they return: on return the
// device holds the data (CopyFromHost) or the host does (CopyToHost), and the
// host memory may be reused.
class DeviceBuffer {
 public:
  // DeviceBuffer constructs an empty buffer.
  DeviceBuffer() = default;

  // Allocate returns a buffer of `bytes` bytes on the current device.
  // InvalidArgument for negative sizes; 0 bytes gives an empty buffer without
  // calling CUDA; FailedPrecondition when there is no device;
  // ResourceExhausted when the device is out of memory.
  static absl::StatusOr<DeviceBuffer> Allocate(int64_t bytes);

  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  // data returns the device address, nullptr when empty.
  void* data() const { return data_; }

  // data_as returns the device address as a `T*`.
  template <typename T>
  T* data_as() const {
    return static_cast<T*>(data_);
  }

  // size_bytes returns the size of the allocation in bytes.
  int64_t size_bytes() const { return size_bytes_; }

  // CopyFromHost copies `bytes` bytes from host memory `src` to the start of
  // the buffer on `stream` and waits for the copy. InvalidArgument when
  // `bytes` is negative or larger than the buffer, or `src` is null with
  // `bytes` > 0.
  absl::Status CopyFromHost(const void* src, int64_t bytes,
                            cudaStream_t stream);

  // CopyToHost copies `bytes` bytes from the start of the buffer to host
  // memory `dst` on `stream` and waits for the copy. Same argument checks as
  // CopyFromHost.
  absl::Status CopyToHost(void* dst, int64_t bytes, cudaStream_t stream) const;

 private:
  DeviceBuffer(void* data, int64_t size_bytes)
      : data_(data), size_bytes_(size_bytes) {}

  // Frees the memory (errors are dropped: a destructor cannot report them)
  // and leaves the buffer empty.
  void Reset();

  void* data_ = nullptr;
  int64_t size_bytes_ = 0;
};

// PinnedHostBuffer owns page-locked host memory (cudaHostAlloc), which
// copies to and from the device read or write directly (no staging copy by
// the driver, and asynchronous with respect to the host). Move-only; freed by
// the destructor.
class PinnedHostBuffer {
 public:
  PinnedHostBuffer() = default;

  // Allocate returns a buffer of `bytes` bytes. InvalidArgument for negative
  // sizes; 0 bytes gives an empty buffer without calling CUDA;
  // FailedPrecondition without a device or driver; ResourceExhausted when
  // the memory cannot be pinned.
  static absl::StatusOr<PinnedHostBuffer> Allocate(int64_t bytes);

  PinnedHostBuffer(PinnedHostBuffer&& other) noexcept;
  PinnedHostBuffer& operator=(PinnedHostBuffer&& other) noexcept;
  PinnedHostBuffer(const PinnedHostBuffer&) = delete;
  PinnedHostBuffer& operator=(const PinnedHostBuffer&) = delete;
  ~PinnedHostBuffer();

  // data returns the host address, nullptr when empty.
  void* data() const { return data_; }

  // size_bytes returns the size of the allocation in bytes.
  int64_t size_bytes() const { return size_bytes_; }

 private:
  PinnedHostBuffer(void* data, int64_t size_bytes)
      : data_(data), size_bytes_(size_bytes) {}

  // Frees the memory (errors dropped) and leaves the buffer empty.
  void Reset();

  void* data_ = nullptr;
  int64_t size_bytes_ = 0;
};

// CudaStream owns a CUDA stream created with cudaStreamNonBlocking (it does
// not synchronize with the legacy default stream), destroyed by the
// destructor. Move-only; a moved-from stream holds nullptr, which CUDA reads
// as the legacy default stream, so do not use it.
class CudaStream {
 public:
  // Create returns a new stream on the current device (FailedPrecondition
  // when there is no device).
  static absl::StatusOr<CudaStream> Create();

  CudaStream(CudaStream&& other) noexcept;
  CudaStream& operator=(CudaStream&& other) noexcept;
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  ~CudaStream();

  // get returns the stream handle to pass to launchers and copies.
  cudaStream_t get() const { return stream_; }

  // Synchronize waits for all work queued on the stream and returns the first
  // error it reported.
  absl::Status Synchronize() const;

 private:
  explicit CudaStream(cudaStream_t stream) : stream_(stream) {}

  // Destroys the stream (errors dropped) and leaves this one holding nullptr.
  void Reset();

  cudaStream_t stream_ = nullptr;
};

}  // namespace qcal

#endif  // QCAL_CUDA_RUNTIME_H_
