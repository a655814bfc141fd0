// Launchers of the reduction kernels (kernels/min_max.cu,
// kernels/mse_errors.cu) as seen from host code: plain C++ over the CUDA
// runtime API, no Abseil, so that nvcc compiles the .cu files that define
// them. Every pointer in the argument structs is device memory. Each launcher
// enqueues its work on `stream`, returns the first error of its CUDA calls and
// launches (cudaGetLastError) and does not wait. Host code calls the
// absl::Status layer in cuda/reduce.h instead.
#ifndef QCAL_CUDA_KERNELS_REDUCE_KERNELS_H_
#define QCAL_CUDA_KERNELS_REDUCE_KERNELS_H_

#include <cstdint>

#include "core/quant_math.h"
#include "cuda/kernels/reduce_common.h"
#include "cuda_runtime_api.h"

namespace qcal {
namespace internal_cuda {

// MinMaxLaunch describes one min/max reduction over every unit of a grid.
struct MinMaxLaunch {
  const void* data = nullptr;  // contiguous [rows, cols] of `format`
  FloatFormat format = FloatFormat::kF32;
  ReduceGrid grid;
  MinMaxPlan plan;
  bool skip_nonfinite = false;
  int sm_count = 1;
  // Results: out_min / out_max (num_units floats each) and first_nonfinite
  // (one word: the smallest flat index of a NaN/+-inf when not skipping, or
  // all ones when there is none).
  float* out_min = nullptr;
  float* out_max = nullptr;
  unsigned long long* first_nonfinite = nullptr;
  // Only when !plan.direct: per-unit merge state, MinMaxStateBytes(units)
  // bytes, 8-byte aligned, and immediately followed by first_nonfinite (the
  // launcher sets both to all ones with one memset).
  void* state = nullptr;
};

// MinMaxStateBytes is the merge state a non-direct launch needs for
// `num_units` units: a zero word (8 bytes), a min key and a max key (4 bytes
// each) per unit.
inline int64_t MinMaxStateBytes(int64_t num_units) { return 16 * num_units; }

// LaunchMinMax enqueues the reduction: a memset of the merge state (or of
// first_nonfinite alone), the item kernel and, when not direct, the kernel
// that finishes every unit.
cudaError_t LaunchMinMax(const MinMaxLaunch& launch, cudaStream_t stream);

// MseLaunch describes one evaluation of MSE candidates (MseRequest in
// core/backend.h) over `num_units` listed units.
struct MseLaunch {
  const void* data = nullptr;  // contiguous [rows, cols] of `format`
  FloatFormat format = FloatFormat::kF32;
  ReduceGrid grid;
  QuantSpec spec;
  bool has_global_scale = false;
  float global_scale = 1.0f;
  float norm_exponent = 2.4f;
  bool skip_nonfinite = false;
  int sm_count = 1;
  int64_t num_units = 0;   // listed units
  int64_t num_cands = 0;   // shrink factors
  const int64_t* units = nullptr;     // [num_units] grid unit indices
  const float* unit_min = nullptr;    // [num_units]
  const float* unit_max = nullptr;    // [num_units]
  const float* shrink = nullptr;      // [num_cands]
  // Items are (listed unit, row of that unit), unit-major. uniform_h > 0:
  // every listed unit has uniform_h rows; otherwise item_start
  // ([num_units + 1]) holds each unit's first item.
  int64_t uniform_h = 1;
  const int64_t* item_start = nullptr;
  int64_t num_items = 0;
  // Candidate groups per item (PlanMseCandGroups).
  MseCandGroups cand_groups;
  // errors[i * num_cands + c] (num_units * num_cands floats).
  float* errors = nullptr;
  // Row sums [num_cands][num_items] doubles; needed unless uniform_h == 1.
  double* row_sums = nullptr;
};

// LaunchMseErrors enqueues the row-sum kernel and, unless every listed unit
// is one row, the kernel adding each unit's rows in row order.
cudaError_t LaunchMseErrors(const MseLaunch& launch, cudaStream_t stream);

}  // namespace internal_cuda
}  // namespace qcal

#endif  // QCAL_CUDA_KERNELS_REDUCE_KERNELS_H_
