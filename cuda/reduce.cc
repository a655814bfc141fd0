#include "cuda/reduce.h"

#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/backend.h"
#include "core/qparams.h"
#include "core/status_macros.h"
#include "cuda/kernels/reduce_common.h"
#include "cuda/kernels/reduce_kernels.h"
#include "cuda/runtime.h"
#include "cuda_runtime_api.h"

namespace qcal {
namespace {

using internal_cuda::MinMaxLaunch;
using internal_cuda::MinMaxPlan;
using internal_cuda::MseLaunch;
using internal_cuda::ReduceGrid;

// Makes `device` current for the lifetime of the object and restores the
// previous device afterwards (errors restoring are dropped).
class ScopedDevice {
 public:
  ScopedDevice() = default;
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;
  ~ScopedDevice() {
    if (restore_ >= 0) cudaSetDevice(restore_);
  }

  absl::Status Enter(int device) {
    int current = -1;
    QCAL_RETURN_IF_ERROR(CudaStatus(cudaGetDevice(&current), "cudaGetDevice"));
    if (current == device) return absl::OkStatus();
    QCAL_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device),
                                    absl::StrCat("cudaSetDevice(", device, ")")));
    restore_ = current;
    return absl::OkStatus();
  }

 private:
  int restore_ = -1;
};

}  // namespace

absl::Status CheckReductionInput(const TensorView& x, const TileGrid& grid,
                                 FloatFormat format) {
  if (x.rank() != 2 || !x.is_contiguous() || x.dim(0) != grid.rows ||
      x.dim(1) != grid.cols || x.dtype() != DTypeOf(format)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "reduction input ", x.DebugString(),
        " is not a contiguous 2-D tensor matching its grid [", grid.rows,
        ", ", grid.cols, "] of ", DTypeName(DTypeOf(format))));
  }
  if (grid.tile_rows <= 0 || grid.tile_cols <= 0) {
    return absl::InvalidArgumentError("tile sizes must be positive");
  }
  if (x.device() != Device::kCuda) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the CUDA backend got a tensor on the ", DeviceName(x.device()), ": ",
        x.DebugString()));
  }
  if (!x.empty()) {
    const uintptr_t address = reinterpret_cast<uintptr_t>(x.data());
    if (address == 0 ||
        address % static_cast<uintptr_t>(DTypeSize(x.dtype())) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device tensor ", x.DebugString(), " has a null or misaligned "
          "data address"));
    }
  }
  return absl::OkStatus();
}

namespace {

ReduceGrid ToReduceGrid(const TileGrid& g) {
  ReduceGrid r;
  r.rows = g.rows;
  r.cols = g.cols;
  r.tile_rows = g.tile_rows;
  r.tile_cols = g.tile_cols;
  return r;
}

// Returns a buffer of at least `bytes`, reallocating (with 25% headroom)
// when `buffer` is smaller. Reallocation frees the old memory, which
// cudaFree does only after the device finished using it.
absl::Status EnsureDevice(DeviceBuffer* buffer, int64_t bytes) {
  if (buffer->size_bytes() >= bytes) return absl::OkStatus();
  *buffer = DeviceBuffer();
  QCAL_ASSIGN_OR_RETURN(*buffer, DeviceBuffer::Allocate(bytes + bytes / 4));
  return absl::OkStatus();
}

// a * b for non-negative operands, or an error when it exceeds `limit`.
absl::StatusOr<int64_t> CheckedProduct(int64_t a, int64_t b, int64_t limit,
                                       const char* what) {
  if (a != 0 && b > limit / a) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " too large: ", a, " x ", b));
  }
  return a * b;
}

}  // namespace

absl::StatusOr<int> CudaDeviceOfPointer(const void* ptr) {
  cudaPointerAttributes attr;
  const cudaError_t err = cudaPointerGetAttributes(&attr, ptr);
  if (err != cudaSuccess) {
    cudaGetLastError();  // not left behind for the next launch check
    return CudaStatus(err, "cudaPointerGetAttributes on a tensor's data");
  }
  if (attr.type != cudaMemoryTypeDevice &&
      attr.type != cudaMemoryTypeManaged) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a tensor marked as CUDA points at memory that is not CUDA device "
        "memory (address ",
        absl::Hex(reinterpret_cast<uintptr_t>(ptr)),
        "); copy it to the device first, e.g. with DeviceBuffer"));
  }
  return attr.device;
}

absl::StatusOr<std::unique_ptr<CudaReducer>> CudaReducer::Create() {
  int device = 0;
  QCAL_RETURN_IF_ERROR(CudaStatus(cudaGetDevice(&device), "cudaGetDevice"));
  int sms = 0;
  QCAL_RETURN_IF_ERROR(CudaStatus(
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device),
      "cudaDeviceGetAttribute(multiprocessor count)"));
  return std::unique_ptr<CudaReducer>(new CudaReducer(device, sms));
}

absl::Status CudaReducer::CheckOnDevice(const TensorView& x) const {
  QCAL_ASSIGN_OR_RETURN(const int device, CudaDeviceOfPointer(x.data()));
  if (device != device_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", x.DebugString(), " is on CUDA device ", device,
        " but this reducer works on device ", device_));
  }
  return absl::OkStatus();
}

absl::Status CudaReducer::WaitForStaging() {
  if (!staging_busy_) return absl::OkStatus();
  QCAL_RETURN_IF_ERROR(
      CudaStatus(cudaStreamSynchronize(staging_stream_),
                 "cudaStreamSynchronize after uploading MSE inputs"));
  staging_busy_ = false;
  return absl::OkStatus();
}

absl::Status CudaReducer::EnsureStaging(int64_t bytes) {
  if (host_staging_.size_bytes() >= bytes) return absl::OkStatus();
  QCAL_RETURN_IF_ERROR(WaitForStaging());
  host_staging_ = PinnedHostBuffer();
  QCAL_ASSIGN_OR_RETURN(host_staging_,
                        PinnedHostBuffer::Allocate(bytes + bytes / 4));
  return absl::OkStatus();
}

// ---------------------------------------------------------------- MinMax

absl::Status CudaReducer::EnqueueMinMax(const MinMaxRequest& request,
                                        cudaStream_t stream) {
  has_min_max_ = false;
  QCAL_RETURN_IF_ERROR(
      CheckReductionInput(request.x, request.grid, request.format));
  const int64_t units = request.grid.num_units();
  min_max_units_ = units;
  if (units == 0) {
    has_min_max_ = true;
    return absl::OkStatus();
  }
  ScopedDevice scoped;
  QCAL_RETURN_IF_ERROR(scoped.Enter(device_));
  QCAL_RETURN_IF_ERROR(CheckOnDevice(request.x));

  MinMaxLaunch launch;
  launch.data = request.x.data();
  launch.format = request.format;
  launch.grid = ToReduceGrid(request.grid);
  launch.plan = internal_cuda::PlanMinMax(
      launch.grid, static_cast<int>(DTypeSize(request.x.dtype())), sm_count_);
  launch.skip_nonfinite = request.nonfinite == NonFinitePolicy::kSkip;
  launch.sm_count = sm_count_;

  // [state (non-direct)][first_nonfinite][min x units][max x units]
  const int64_t state_bytes =
      launch.plan.direct ? 0 : internal_cuda::MinMaxStateBytes(units);
  const int64_t result_bytes = 8 + 8 * units;
  QCAL_RETURN_IF_ERROR(
      EnsureDevice(&min_max_scratch_, state_bytes + result_bytes));
  QCAL_RETURN_IF_ERROR(EnsureStaging(result_bytes));
  char* base = min_max_scratch_.data_as<char>();
  launch.state = launch.plan.direct ? nullptr : base;
  launch.first_nonfinite =
      reinterpret_cast<unsigned long long*>(base + state_bytes);
  launch.out_min = reinterpret_cast<float*>(base + state_bytes + 8);
  launch.out_max = launch.out_min + units;
  QCAL_RETURN_IF_ERROR(CudaStatus(
      internal_cuda::LaunchMinMax(launch, stream),
      absl::StrCat("launching the min/max kernels on ",
                   request.x.DebugString())));
  min_max_result_offset_ = state_bytes;
  has_min_max_ = true;
  return absl::OkStatus();
}

absl::Status CudaReducer::FetchMinMax(const MinMaxOutput& out,
                                      cudaStream_t stream) {
  if (!has_min_max_) {
    return absl::FailedPreconditionError(
        "FetchMinMax without a successful EnqueueMinMax");
  }
  const int64_t units = min_max_units_;
  if (units == 0) {
    if (out.first_nonfinite != nullptr) *out.first_nonfinite = -1;
    return absl::OkStatus();
  }
  ScopedDevice scoped;
  QCAL_RETURN_IF_ERROR(scoped.Enter(device_));
  if (out.min == nullptr || out.max == nullptr) {
    return absl::InvalidArgumentError("FetchMinMax: null output arrays");
  }
  const int64_t result_bytes = 8 + 8 * units;
  QCAL_RETURN_IF_ERROR(WaitForStaging());
  char* host = static_cast<char*>(host_staging_.data());
  QCAL_RETURN_IF_ERROR(CudaStatus(
      cudaMemcpyAsync(host, min_max_scratch_.data_as<char>() +
                                min_max_result_offset_,
                      static_cast<size_t>(result_bytes),
                      cudaMemcpyDeviceToHost, stream),
      absl::StrCat("cudaMemcpyAsync(min/max results, ", result_bytes,
                   " bytes)")));
  QCAL_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream),
                                  "waiting for the min/max kernels"));
  uint64_t bad;
  std::memcpy(&bad, host, sizeof(bad));
  std::memcpy(out.min, host + 8, static_cast<size_t>(4 * units));
  std::memcpy(out.max, host + 8 + 4 * units, static_cast<size_t>(4 * units));
  if (out.first_nonfinite != nullptr) {
    *out.first_nonfinite = bad == ~uint64_t{0} ? -1 : static_cast<int64_t>(bad);
  }
  return absl::OkStatus();
}

absl::Status CudaReducer::MinMax(const MinMaxRequest& request,
                                 const MinMaxOutput& out,
                                 cudaStream_t stream) {
  QCAL_RETURN_IF_ERROR(EnqueueMinMax(request, stream));
  return FetchMinMax(out, stream);
}

// ------------------------------------------------------------------- MSE

absl::Status CudaReducer::StageMse(const MseRequest& request,
                                   cudaStream_t stream) {
  has_mse_ = false;
  QCAL_RETURN_IF_ERROR(
      CheckReductionInput(request.x, request.grid, request.format));
  const int64_t n = static_cast<int64_t>(request.units.size());
  if (static_cast<int64_t>(request.unit_min.size()) != n ||
      static_cast<int64_t>(request.unit_max.size()) != n) {
    return absl::InvalidArgumentError("unit_min/unit_max must match units");
  }
  const TileGrid& g = request.grid;
  internal_cuda::MseItems items;
  int64_t bad_unit = 0;
  switch (internal_cuda::PlanMseItems(ToReduceGrid(g), request.units.data(),
                                      n, &items, &bad_unit)) {
    case internal_cuda::MsePlanResult::kOk:
      break;
    case internal_cuda::MsePlanResult::kUnitOutsideGrid:
      return absl::InvalidArgumentError(
          absl::StrCat("unit ", bad_unit, " outside the grid"));
    case internal_cuda::MsePlanResult::kTooLarge:
      return absl::InvalidArgumentError(absl::StrCat(
          "MSE request too large: ", n, " units of up to ", g.tile_rows,
          " rows"));
  }
  const int64_t ncand = static_cast<int64_t>(request.shrink.size());
  MseLaunch launch;
  launch.num_units = n;
  launch.num_cands = ncand;
  if (n == 0 || ncand == 0) {
    mse_launch_ = launch;
    has_mse_ = true;
    return absl::OkStatus();
  }
  ScopedDevice scoped;
  QCAL_RETURN_IF_ERROR(scoped.Enter(device_));
  QCAL_RETURN_IF_ERROR(CheckOnDevice(request.x));

  const std::vector<int64_t>& item_start = items.item_start;
  const int64_t uniform_h = items.uniform_h;
  launch.uniform_h = uniform_h;
  launch.num_items = items.num_items;

  // Uploaded inputs: [units i64][item_start i64 (n + 1)][min f32][max f32]
  // [shrink f32], 8-byte arrays first.
  const int64_t starts = item_start.empty() ? 0 : n + 1;
  const int64_t input_bytes = 8 * n + 8 * starts + 4 * n + 4 * n + 4 * ncand;
  QCAL_ASSIGN_OR_RETURN(
      const int64_t error_count,
      CheckedProduct(n, ncand, std::numeric_limits<int64_t>::max() / 8,
                     "MSE result"));
  const int64_t error_bytes = 4 * error_count;
  int64_t row_sum_bytes = 0;
  if (uniform_h != 1) {
    QCAL_ASSIGN_OR_RETURN(
        const int64_t row_sums,
        CheckedProduct(launch.num_items, ncand,
                       std::numeric_limits<int64_t>::max() / 8,
                       "MSE row sums"));
    row_sum_bytes = 8 * row_sums;
  }
  QCAL_RETURN_IF_ERROR(EnsureDevice(&mse_inputs_, input_bytes));
  QCAL_RETURN_IF_ERROR(EnsureDevice(&mse_errors_, error_bytes));
  QCAL_RETURN_IF_ERROR(EnsureDevice(&mse_row_sums_, row_sum_bytes));
  // Sized for the download of the errors too, so that FetchMseErrors never
  // frees the buffer under the upload.
  QCAL_RETURN_IF_ERROR(
      EnsureStaging(input_bytes > error_bytes ? input_bytes : error_bytes));
  QCAL_RETURN_IF_ERROR(WaitForStaging());

  char* host = static_cast<char*>(host_staging_.data());
  char* dev = mse_inputs_.data_as<char>();
  int64_t offset = 0;
  auto put = [&](const void* src, int64_t bytes) {
    if (bytes > 0) std::memcpy(host + offset, src, static_cast<size_t>(bytes));
    const int64_t at = offset;
    offset += bytes;
    return dev + at;
  };
  launch.units = reinterpret_cast<const int64_t*>(
      put(request.units.data(), 8 * n));
  launch.item_start = starts > 0 ? reinterpret_cast<const int64_t*>(
                                       put(item_start.data(), 8 * starts))
                                 : nullptr;
  launch.unit_min = reinterpret_cast<const float*>(
      put(request.unit_min.data(), 4 * n));
  launch.unit_max = reinterpret_cast<const float*>(
      put(request.unit_max.data(), 4 * n));
  launch.shrink = reinterpret_cast<const float*>(
      put(request.shrink.data(), 4 * ncand));
  QCAL_RETURN_IF_ERROR(CudaStatus(
      cudaMemcpyAsync(dev, host, static_cast<size_t>(input_bytes),
                      cudaMemcpyHostToDevice, stream),
      absl::StrCat("cudaMemcpyAsync(MSE inputs, ", input_bytes, " bytes)")));
  staging_busy_ = true;
  staging_stream_ = stream;

  launch.data = request.x.data();
  launch.format = request.format;
  launch.grid = ToReduceGrid(g);
  launch.spec = request.spec;
  launch.has_global_scale = request.has_global_scale;
  launch.global_scale = request.global_scale;
  launch.norm_exponent = request.norm_exponent;
  launch.skip_nonfinite = request.nonfinite == NonFinitePolicy::kSkip;
  launch.sm_count = sm_count_;
  launch.cand_groups =
      internal_cuda::PlanMseCandGroups(launch.num_items, ncand, sm_count_);
  launch.errors = mse_errors_.data_as<float>();
  launch.row_sums = uniform_h == 1 ? nullptr : mse_row_sums_.data_as<double>();
  mse_launch_ = launch;
  has_mse_ = true;
  return absl::OkStatus();
}

absl::Status CudaReducer::EnqueueMseErrors(cudaStream_t stream) {
  if (!has_mse_) {
    return absl::FailedPreconditionError(
        "EnqueueMseErrors without a successful StageMse");
  }
  if (mse_launch_.num_units == 0 || mse_launch_.num_cands == 0) {
    return absl::OkStatus();
  }
  ScopedDevice scoped;
  QCAL_RETURN_IF_ERROR(scoped.Enter(device_));
  // The kernels read the uploaded inputs: wait for an upload made on
  // another stream.
  if (stream != staging_stream_) QCAL_RETURN_IF_ERROR(WaitForStaging());
  return CudaStatus(
      internal_cuda::LaunchMseErrors(mse_launch_, stream),
      absl::StrCat("launching the MSE kernels on ", mse_launch_.num_units,
                   " units x ", mse_launch_.num_cands, " candidates"));
}

absl::Status CudaReducer::FetchMseErrors(float* errors, cudaStream_t stream) {
  if (!has_mse_) {
    return absl::FailedPreconditionError(
        "FetchMseErrors without a successful StageMse");
  }
  const int64_t count = mse_launch_.num_units * mse_launch_.num_cands;
  if (count == 0) return absl::OkStatus();
  if (errors == nullptr) {
    return absl::InvalidArgumentError("FetchMseErrors: null output array");
  }
  ScopedDevice scoped;
  QCAL_RETURN_IF_ERROR(scoped.Enter(device_));
  // The staging buffer already holds 4 * count bytes (StageMse). On the
  // upload's stream the download is ordered after it; on another, wait.
  if (stream != staging_stream_) QCAL_RETURN_IF_ERROR(WaitForStaging());
  QCAL_RETURN_IF_ERROR(CudaStatus(
      cudaMemcpyAsync(host_staging_.data(), mse_errors_.data(),
                      static_cast<size_t>(4 * count), cudaMemcpyDeviceToHost,
                      stream),
      absl::StrCat("cudaMemcpyAsync(MSE errors, ", 4 * count, " bytes)")));
  QCAL_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream),
                                  "waiting for the MSE kernels"));
  staging_busy_ = false;
  std::memcpy(errors, host_staging_.data(), static_cast<size_t>(4 * count));
  return absl::OkStatus();
}

absl::Status CudaReducer::MseErrors(const MseRequest& request, float* errors,
                                    cudaStream_t stream) {
  QCAL_RETURN_IF_ERROR(StageMse(request, stream));
  QCAL_RETURN_IF_ERROR(EnqueueMseErrors(stream));
  return FetchMseErrors(errors, stream);
}

}  // namespace qcal
