#include "cuda/backend.h"

#include <map>
#include <memory>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/backend.h"
#include "core/status_macros.h"
#include "cuda/reduce.h"
#include "cuda/runtime.h"
#include "cuda_runtime_api.h"

namespace qcal {
namespace {

// One device's reducer and stream; `mu` serializes the calls.
struct DeviceContext {
  absl::Mutex mu;
  std::unique_ptr<CudaReducer> reducer ABSL_GUARDED_BY(mu);
  std::optional<CudaStream> stream ABSL_GUARDED_BY(mu);
};

struct ContextTable {
  absl::Mutex mu;
  std::map<int, std::unique_ptr<DeviceContext>> contexts ABSL_GUARDED_BY(mu);
};

ContextTable& Contexts() {
  // Never destroyed: the CUDA runtime may already be shut down at exit.
  static ContextTable* table = new ContextTable;
  return *table;
}

// Creates the reducer and stream of `device` with it made current.
absl::Status InitContext(int device, DeviceContext* ctx)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(ctx->mu) {
  int previous = -1;
  QCAL_RETURN_IF_ERROR(CudaStatus(cudaGetDevice(&previous), "cudaGetDevice"));
  if (previous != device) {
    QCAL_RETURN_IF_ERROR(CudaStatus(
        cudaSetDevice(device), absl::StrCat("cudaSetDevice(", device, ")")));
  }
  absl::Status status = absl::OkStatus();
  absl::StatusOr<std::unique_ptr<CudaReducer>> reducer = CudaReducer::Create();
  absl::StatusOr<CudaStream> stream = CudaStream::Create();
  if (!reducer.ok()) {
    status = reducer.status();
  } else if (!stream.ok()) {
    status = stream.status();
  } else {
    ctx->reducer = std::move(*reducer);
    ctx->stream.emplace(std::move(*stream));
  }
  if (previous != device) cudaSetDevice(previous);
  return status;
}

// The context of the device that `data` lives on, created and initialized
// on first use.
absl::StatusOr<DeviceContext*> ContextFor(const void* data) {
  QCAL_ASSIGN_OR_RETURN(const int device, CudaDeviceOfPointer(data));
  ContextTable& table = Contexts();
  DeviceContext* ctx;
  {
    absl::MutexLock lock(&table.mu);
    std::unique_ptr<DeviceContext>& slot = table.contexts[device];
    if (slot == nullptr) slot = std::make_unique<DeviceContext>();
    ctx = slot.get();
  }
  absl::MutexLock lock(&ctx->mu);
  if (ctx->reducer == nullptr) QCAL_RETURN_IF_ERROR(InitContext(device, ctx));
  return ctx;
}

absl::Status CudaMinMax(const MinMaxRequest& request, const ExecOptions&,
                        const MinMaxOutput& out) {
  // Argument errors and empty requests need no device.
  QCAL_RETURN_IF_ERROR(
      CheckReductionInput(request.x, request.grid, request.format));
  if (request.grid.num_units() == 0) {
    if (out.first_nonfinite != nullptr) *out.first_nonfinite = -1;
    return absl::OkStatus();
  }
  QCAL_ASSIGN_OR_RETURN(DeviceContext* ctx, ContextFor(request.x.data()));
  absl::MutexLock lock(&ctx->mu);
  return ctx->reducer->MinMax(request, out, ctx->stream->get());
}

absl::Status CudaMseErrors(const MseRequest& request, const ExecOptions&,
                           float* errors) {
  QCAL_RETURN_IF_ERROR(
      CheckReductionInput(request.x, request.grid, request.format));
  if (request.unit_min.size() != request.units.size() ||
      request.unit_max.size() != request.units.size()) {
    return absl::InvalidArgumentError("unit_min/unit_max must match units");
  }
  if (request.units.empty() || request.shrink.empty()) {
    return absl::OkStatus();
  }
  QCAL_ASSIGN_OR_RETURN(DeviceContext* ctx, ContextFor(request.x.data()));
  absl::MutexLock lock(&ctx->mu);
  return ctx->reducer->MseErrors(request, errors, ctx->stream->get());
}

const BackendOps kCudaOps = {"cuda", &CudaMinMax, &CudaMseErrors};

}  // namespace

const BackendOps& CudaBackend() { return kCudaOps; }

// Registers the CUDA table when this library is linked (alwayslink).
const bool kCudaBackendRegistered = RegisterBackend(Device::kCuda, &kCudaOps);

}  // namespace qcal
