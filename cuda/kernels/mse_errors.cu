// The fused MSE error kernels (MseRequest in core/backend.h): for every
// listed unit and every candidate shrink factor, the sum over the unit of
// |fake_quant(x) - x|^norm in the canonical order, bit-identical to the CPU.
//
// Row kernel: a block of 256 threads is 16 teams of 16 lanes; a team takes
// one item (a row of a listed unit); a block takes 16 consecutive items and
// one group of candidates (all of them unless the items are too few to fill
// the GPU; see PlanMseCandGroups). The
// block first computes CandidateParams<F> once for each of its units (at most
// 16) and each candidate of the current batch of up to 8 into shared memory.
// Lane l of a team then reads column offsets l, l + 16, ... of its row once
// per batch, evaluating every candidate of the batch on each element into 8
// double accumulators (accumulator l of RowErrorSum, in column order); the 16
// lane sums go through shared memory and lane c adds them in lane order for
// candidate c. With one row per unit that is the unit's sum: the lane writes
// the error. Otherwise row sums go to global memory and the unit kernel (a
// warp per unit and candidate) adds them in row order; every lane of that warp
// adds the same values in the same order, so no lane's sum differs.
#include <cstdint>

#include "core/quant_math.h"
#include "cuda/kernels/reduce_common.h"
#include "cuda/kernels/reduce_kernels.h"
#include "cuda_runtime.h"

namespace qcal {
namespace internal_cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kTeams = kThreads / kMseTeam;  // items per block batch
constexpr unsigned kFullMask = 0xFFFFFFFFu;
static_assert(kTeams == kMseTeamsPerBlock,
              "a batch holds at most 16 distinct units");

// 3 blocks per SM (<= 85 registers): without a minimum, ptxas capped the
// kernel at 64 registers and spilled.
template <FloatFormat F>
__global__ void __launch_bounds__(kThreads, 3) MseRowKernel(MseLaunch a) {
  __shared__ FakeQuantParams s_params[kTeams][kMseCandBatch];
  // +1: lane c reads s_lanes[team][c][0..15]; the padding spreads the eight
  // candidates' rows over different banks.
  __shared__ double s_lanes[kTeams][kMseCandBatch][kMseTeam + 1];
  __shared__ int64_t s_unit[kTeams];

  const int team = threadIdx.x / kMseTeam;
  const int lane = threadIdx.x % kMseTeam;
  const int64_t batches = MseNumBatches(a.num_items, a.cand_groups);
  const int64_t gc = a.grid.grid_cols();
  const bool direct = a.uniform_h == 1;
  // Every thread of the block runs the same iterations (the bound depends
  // only on blockIdx), so the barriers inside are reached by all.
  for (int64_t b = blockIdx.x; b < batches; b += gridDim.x) {
    const MseBatch batch =
        MseBatchAt(b, a.num_items, a.num_cands, a.cand_groups);
    const int64_t item = batch.item_begin + team;
    const bool active = item < a.num_items;
    int64_t i = 0, rr = 0;
    if (active) {
      LocateItem(item, a.uniform_h, a.item_start, a.num_units, &i, &rr);
    }
    if (lane == 0) s_unit[team] = active ? i : -1;
    __syncthreads();
    // Units of consecutive items are non-decreasing list positions, so the
    // batch's units are first_unit .. first_unit + slots - 1.
    const int64_t first_unit = s_unit[0];
    int64_t last_team = a.num_items - 1 - batch.item_begin;
    if (last_team > kTeams - 1) last_team = kTeams - 1;
    const int slots = static_cast<int>(s_unit[last_team] - first_unit + 1);

    int64_t row_base = 0, width = 0;
    if (active) {
      int64_t ti, tj;
      DivMod64(a.units[i], gc, &ti, &tj);
      const int64_t c0 = tj * a.grid.tile_cols;
      const int64_t c1 = c0 + a.grid.tile_cols < a.grid.cols
                             ? c0 + a.grid.tile_cols
                             : a.grid.cols;
      width = c1 - c0;
      row_base = (ti * a.grid.tile_rows + rr) * a.grid.cols + c0;
    }
    const void* data = a.data;
    auto load = [data, row_base](int64_t k) {
      return LoadAs<F>(data, row_base + k);
    };

    for (int64_t cb = batch.cand_begin; cb < batch.cand_end;
         cb += kMseCandBatch) {
      const int count = batch.cand_end - cb < kMseCandBatch
                            ? static_cast<int>(batch.cand_end - cb)
                            : kMseCandBatch;
      for (int k = threadIdx.x; k < slots * count; k += kThreads) {
        const int s = k / count, c = k % count;
        s_params[s][c] = CandidateParams<F>(
            a.unit_min[first_unit + s], a.unit_max[first_unit + s],
            a.shrink[cb + c], a.spec, a.has_global_scale, a.global_scale);
      }
      __syncthreads();

      double acc[kMseCandBatch];
#pragma unroll
      for (int c = 0; c < kMseCandBatch; ++c) acc[c] = 0.0;
      if (active) {
        AccumulateLaneErrors<F>(load, width, lane, s_params[i - first_unit],
                                count, a.spec, a.norm_exponent,
                                a.skip_nonfinite, acc);
      }
#pragma unroll
      for (int c = 0; c < kMseCandBatch; ++c) s_lanes[team][c][lane] = acc[c];
      __syncthreads();

      if (active && lane < count) {
        const double row = CombineLaneSums(&s_lanes[team][lane][0], 1);
        if (direct) {
          // The unit's sum: 0 + its only row, as the CPU adds rows.
          a.errors[i * a.num_cands + cb + lane] =
              FinishErrorSum<F>(0.0 + row);
        } else {
          a.row_sums[(cb + lane) * a.num_items + item] = row;
        }
      }
      // s_params and s_lanes are rewritten by the next batch.
      __syncthreads();
    }
  }
}

// One warp per (listed unit, candidate): the unit's row sums in row order.
template <FloatFormat F>
__global__ void __launch_bounds__(kThreads) MseUnitKernel(MseLaunch a) {
  const int lane = threadIdx.x & 31;
  const int64_t pairs = a.num_units * a.num_cands;
  const int64_t warps = int64_t{gridDim.x} * (kThreads / 32);
  for (int64_t pair = int64_t{blockIdx.x} * (kThreads / 32) + threadIdx.x / 32;
       pair < pairs; pair += warps) {
    int64_t i, c;
    DivMod64(pair, a.num_cands, &i, &c);
    int64_t first, last;
    if (a.uniform_h > 0) {
      first = i * a.uniform_h;
      last = first + a.uniform_h;
    } else {
      first = a.item_start[i];
      last = a.item_start[i + 1];
    }
    const double* sums = a.row_sums + c * a.num_items;
    double sum = 0.0;
    for (int64_t base = first; base < last; base += 32) {
      const double v = base + lane < last ? sums[base + lane] : 0.0;
      const int n = last - base < 32 ? static_cast<int>(last - base) : 32;
      // Every lane adds the same values in row order.
      for (int j = 0; j < n; ++j) sum += __shfl_sync(kFullMask, v, j);
    }
    if (lane == 0) a.errors[i * a.num_cands + c] = FinishErrorSum<F>(sum);
  }
}

int64_t CappedBlocks(int64_t wanted, int64_t cap) {
  if (wanted < 1) return 1;
  return wanted < cap ? wanted : cap;
}

template <FloatFormat F>
cudaError_t LaunchFor(const MseLaunch& a, cudaStream_t stream) {
  const int64_t sms = a.sm_count > 0 ? a.sm_count : 1;
  const int64_t row_blocks =
      CappedBlocks(MseNumBatches(a.num_items, a.cand_groups), sms * 16);
  MseRowKernel<F><<<static_cast<unsigned int>(row_blocks), kThreads, 0,
                    stream>>>(a);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || a.uniform_h == 1) return err;
  const int64_t pairs = a.num_units * a.num_cands;
  const int64_t unit_blocks =
      CappedBlocks((pairs + kThreads / 32 - 1) / (kThreads / 32), sms * 32);
  MseUnitKernel<F><<<static_cast<unsigned int>(unit_blocks), kThreads, 0,
                     stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchMseErrors(const MseLaunch& a, cudaStream_t stream) {
  if (a.num_units <= 0 || a.num_cands <= 0) return cudaSuccess;
  if (a.data == nullptr || a.units == nullptr || a.unit_min == nullptr ||
      a.unit_max == nullptr || a.shrink == nullptr || a.errors == nullptr ||
      a.num_items < a.num_units ||
      (a.uniform_h <= 0 && a.item_start == nullptr) ||
      (a.uniform_h != 1 && a.row_sums == nullptr) ||
      a.cand_groups.groups < 1 || a.cand_groups.per_group < 1 ||
      a.cand_groups.groups * a.cand_groups.per_group < a.num_cands) {
    return cudaErrorInvalidValue;
  }
  switch (a.format) {
    case FloatFormat::kF16:
      return LaunchFor<FloatFormat::kF16>(a, stream);
    case FloatFormat::kBF16:
      return LaunchFor<FloatFormat::kBF16>(a, stream);
    default:
      return LaunchFor<FloatFormat::kF32>(a, stream);
  }
}

}  // namespace internal_cuda
}  // namespace qcal
