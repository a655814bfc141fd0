// The CUDA reductions of the backend table (core/backend.h) as absl::Status
// host calls: every unit's min/max (MinMaxRequest) and the MSE candidates'
// errors (MseRequest) of a tensor in device memory, with results equal bit
// for bit to the CPU backend's (see cuda/kernels/reduce_common.h for how).
//
// A CudaReducer belongs to one device and keeps its device scratch memory and
// a pinned host staging buffer between calls (they only grow), so that a call
// costs one upload of its per-unit inputs, the kernels and one download of
// the results, without allocations once warm. Requests are host structs whose
// TensorView `x` points at device memory of the reducer's device; spans
// (units, unit_min, unit_max, shrink) and outputs are host memory. Every
// call takes the stream explicitly; the caller must have finished writing
// `x` before the work enqueued on that stream reads it. Use one stream for
// the steps of one request (other streams are waited for, which costs a
// synchronization).
//
// Not thread-safe: one reducer per thread, or a lock (cuda/backend.cc does
// the latter).
#ifndef QCAL_CUDA_REDUCE_H_
#define QCAL_CUDA_REDUCE_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/backend.h"
#include "cuda/kernels/reduce_kernels.h"
#include "cuda/runtime.h"
#include "cuda_runtime_api.h"

namespace qcal {

// CheckReductionInput checks what the CPU backend checks of a request's
// tensor (a contiguous 2-D view matching `grid` and `format`, positive tile
// sizes) and that the view is marked Device::kCuda with an address aligned to
// its element size. InvalidArgument otherwise; no CUDA call.
absl::Status CheckReductionInput(const TensorView& x, const TileGrid& grid,
                                 FloatFormat format);

// CudaDeviceOfPointer returns the device whose memory `ptr` points into.
// InvalidArgument when it is not CUDA device (or managed) memory, e.g. a host
// pointer in a view marked Device::kCuda; FailedPrecondition without a device.
absl::StatusOr<int> CudaDeviceOfPointer(const void* ptr);

// CudaReducer runs the backend reductions on one CUDA device.
class CudaReducer {
 public:
  // Create makes a reducer for the calling thread's current device.
  static absl::StatusOr<std::unique_ptr<CudaReducer>> Create();

  CudaReducer(const CudaReducer&) = delete;
  CudaReducer& operator=(const CudaReducer&) = delete;

  // device is the CUDA device ordinal; sm_count its multiprocessors.
  int device() const { return device_; }
  int sm_count() const { return sm_count_; }

  // MinMax fills `out` (host memory: grid.num_units() floats each, and
  // *first_nonfinite when not null) as CpuBackend().min_max does, and waits
  // for the result. EnqueueMinMax + FetchMinMax.
  absl::Status MinMax(const MinMaxRequest& request, const MinMaxOutput& out,
                      cudaStream_t stream);

  // MseErrors writes errors[i * shrink.size() + c] (host memory) as
  // CpuBackend().mse_errors does, and waits. StageMse + EnqueueMseErrors +
  // FetchMseErrors.
  absl::Status MseErrors(const MseRequest& request, float* errors,
                         cudaStream_t stream);

  // The steps of MinMax, so that the device work can be timed alone.
  // EnqueueMinMax checks the request and enqueues the kernels; the results
  // stay in device memory until FetchMinMax copies them to `out` and waits
  // (FailedPrecondition without a prior EnqueueMinMax). FetchMinMax may be
  // called again for the same results.
  absl::Status EnqueueMinMax(const MinMaxRequest& request,
                             cudaStream_t stream);
  absl::Status FetchMinMax(const MinMaxOutput& out, cudaStream_t stream);

  // The steps of MseErrors. StageMse checks the request and uploads its
  // per-unit inputs (the spans are not read afterwards; x must stay valid);
  // EnqueueMseErrors enqueues the kernels for the staged request (any number
  // of times); FetchMseErrors copies the errors of the last run to `errors`
  // and waits.
  absl::Status StageMse(const MseRequest& request, cudaStream_t stream);
  absl::Status EnqueueMseErrors(cudaStream_t stream);
  absl::Status FetchMseErrors(float* errors, cudaStream_t stream);

 private:
  CudaReducer(int device, int sm_count)
      : device_(device), sm_count_(sm_count) {}

  // Checks that x's memory is on this reducer's device.
  absl::Status CheckOnDevice(const TensorView& x) const;
  // Waits for an asynchronous upload out of host_staging_, if one is pending.
  absl::Status WaitForStaging();
  // Grows host_staging_ to at least `bytes` (waiting for pending uploads).
  absl::Status EnsureStaging(int64_t bytes);

  int device_;
  int sm_count_;
  // Host staging: uploads of MSE inputs, downloads of every result.
  PinnedHostBuffer host_staging_;
  bool staging_busy_ = false;          // an upload from it may be running
  cudaStream_t staging_stream_ = nullptr;  // on this stream

  // Min/max: [merge state][first_nonfinite u64][min f32 x units][max ...].
  DeviceBuffer min_max_scratch_;
  bool has_min_max_ = false;
  int64_t min_max_units_ = 0;
  int64_t min_max_result_offset_ = 0;

  // MSE: uploaded inputs, errors, row sums.
  DeviceBuffer mse_inputs_;
  DeviceBuffer mse_errors_;
  DeviceBuffer mse_row_sums_;
  bool has_mse_ = false;
  internal_cuda::MseLaunch mse_launch_;
};

}  // namespace qcal

#endif  // QCAL_CUDA_REDUCE_H_
