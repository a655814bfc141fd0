// The min/max kernels: every unit's minimum and maximum, and the first
// non-finite element, for any TileGrid (tensor, channel, group with a short
// last group, block with partial edge blocks, token).
//
// Work mapping (see reduce_common.h): a team of plan.team_size lanes of one
// warp reads one item with coalesced 16-byte loads; a warp holds 32 /
// team_size teams and walks the items in a grid-stride loop. Lanes combine
// with warp shuffles (xor within the team: every lane of the warp takes part,
// so the shuffles never run under divergence). Direct plans (one item per
// unit) write the unit's result from the team. Otherwise items merge with
// atomicMin on integer keys, which is exact and order-independent, and a
// second kernel finishes every unit. The first non-finite index is an
// atomicMin on a 64-bit word, also order-independent.
#include <cstdint>

#include "core/quant_math.h"
#include "cuda/kernels/reduce_common.h"
#include "cuda/kernels/reduce_kernels.h"
#include "cuda_runtime.h"

namespace qcal {
namespace internal_cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xFFFFFFFFu;

// Per-unit merge state of a non-direct plan (all ones before the kernel).
struct MergeState {
  unsigned long long* zero_words;  // smallest ZeroWord of the unit
  unsigned int* min_keys;          // smallest min key
  unsigned int* max_keys_inv;      // smallest ~(max key), i.e. largest key
};

__device__ __forceinline__ MergeState StateOf(void* state, int64_t units) {
  MergeState s;
  s.zero_words = static_cast<unsigned long long*>(state);
  s.min_keys = reinterpret_cast<unsigned int*>(s.zero_words + units);
  s.max_keys_inv = s.min_keys + units;
  return s;
}

// Team reductions: xor shuffles stay inside aligned groups of `team` lanes.
__device__ __forceinline__ uint32_t TeamMin(uint32_t v, int team) {
  if (team == 32) return __reduce_min_sync(kFullMask, v);
  for (int off = team >> 1; off > 0; off >>= 1) {
    const uint32_t o = __shfl_xor_sync(kFullMask, v, off);
    v = o < v ? o : v;
  }
  return v;
}

__device__ __forceinline__ uint32_t TeamMax(uint32_t v, int team) {
  if (team == 32) return __reduce_max_sync(kFullMask, v);
  for (int off = team >> 1; off > 0; off >>= 1) {
    const uint32_t o = __shfl_xor_sync(kFullMask, v, off);
    v = o > v ? o : v;
  }
  return v;
}

// Only a smaller value replaces the word, so skipping the atomic when the
// word already holds a value <= v never loses an update (values only fall).
__device__ __forceinline__ void AtomicMinIfSmaller(unsigned int* word,
                                                   unsigned int v) {
  if (v < __ldcg(word)) atomicMin(word, v);
}

__device__ __forceinline__ void AtomicMinIfSmaller(unsigned long long* word,
                                                   unsigned long long v) {
  if (v < __ldcg(word)) atomicMin(word, v);
}

// 4 blocks per SM (<= 64 registers): half occupancy, with four 16-byte
// loads in flight per lane, is enough to saturate memory.
template <FloatFormat F>
__global__ void __launch_bounds__(kThreads, 4)
    MinMaxItemsKernel(MinMaxLaunch a) {
  const int team = a.plan.team_size;
  const int lane = threadIdx.x & 31;
  const int t = lane & (team - 1);
  const int teams_per_warp = 32 / team;
  const int team_in_warp = lane / team;
  const int64_t warps = int64_t{gridDim.x} * (kThreads / 32);
  const int64_t batches =
      (a.plan.num_items + teams_per_warp - 1) / teams_per_warp;
  const int64_t units = a.grid.num_units();
  // The loop bound is the same for every lane of a warp, so the whole warp
  // reaches the shuffles together.
  for (int64_t b = int64_t{blockIdx.x} * (kThreads / 32) + threadIdx.x / 32;
       b < batches; b += warps) {
    const int64_t item = b * teams_per_warp + team_in_warp;
    const bool active = item < a.plan.num_items;
    MinMaxLane st;
    ItemSpan span{};
    if (active) {
      span = ItemAt(a.grid, a.plan, item);
      AddItemLane<F>(a.data, a.grid.cols, span, t, team, a.skip_nonfinite,
                     &st);
    }
    const uint32_t min_key = TeamMin(MinMaxKey(st.mn), team);
    const uint32_t max_key = TeamMax(MinMaxKey(st.mx), team);
    const uint32_t zero_pos = TeamMin(st.zero_pos, team);
    uint32_t bad_pos = kNoPos;
    if (!a.skip_nonfinite && __any_sync(kFullMask, st.bad_pos != kNoPos)) {
      bad_pos = TeamMin(st.bad_pos, team);
    }
    if (!active || t != 0) continue;
    if (bad_pos != kNoPos) {
      atomicMin(a.first_nonfinite, static_cast<unsigned long long>(
                                       ItemFlatIndex(span, a.grid.cols,
                                                     bad_pos)));
    }
    const bool zero_extreme = min_key == kZeroKey || max_key == kZeroKey;
    float first_zero = 0.0f;
    int64_t zero_index = 0;
    if (zero_extreme) {
      zero_index = ItemFlatIndex(span, a.grid.cols, zero_pos);
      first_zero = LoadAs<F>(a.data, zero_index);
    }
    if (a.plan.direct) {
      float mn, mx;
      FinishUnit(min_key, max_key, first_zero, &mn, &mx);
      a.out_min[span.unit] = mn;
      a.out_max[span.unit] = mx;
    } else if (min_key < kNoMinKey) {
      const MergeState s = StateOf(a.state, units);
      AtomicMinIfSmaller(&s.min_keys[span.unit], min_key);
      AtomicMinIfSmaller(&s.max_keys_inv[span.unit], ~max_key);
      if (zero_extreme) {
        AtomicMinIfSmaller(&s.zero_words[span.unit],
                           static_cast<unsigned long long>(
                               ZeroWord(zero_index, first_zero)));
      }
    }
  }
}

__global__ void __launch_bounds__(kThreads)
    MinMaxFinishKernel(void* state, int64_t units, float* out_min,
                       float* out_max) {
  const MergeState s = StateOf(state, units);
  const int64_t stride = int64_t{gridDim.x} * kThreads;
  for (int64_t u = int64_t{blockIdx.x} * kThreads + threadIdx.x; u < units;
       u += stride) {
    float mn, mx;
    // A unit no item reached keeps all-ones keys: min key >= kNoMinKey.
    FinishUnit(s.min_keys[u], ~s.max_keys_inv[u],
               ZeroWordValue(s.zero_words[u]), &mn, &mx);
    out_min[u] = mn;
    out_max[u] = mx;
  }
}

int64_t CappedBlocks(int64_t wanted, int sm_count) {
  const int64_t cap = int64_t{sm_count > 0 ? sm_count : 1} * 32;
  if (wanted < 1) return 1;
  return wanted < cap ? wanted : cap;
}

}  // namespace

cudaError_t LaunchMinMax(const MinMaxLaunch& a, cudaStream_t stream) {
  const int64_t units = a.grid.num_units();
  if (units <= 0) return cudaSuccess;
  const int team = a.plan.team_size;
  if (a.data == nullptr || a.out_min == nullptr || a.out_max == nullptr ||
      a.first_nonfinite == nullptr || team < 1 || team > 32 ||
      (team & (team - 1)) != 0 || (!a.plan.direct && a.state == nullptr)) {
    return cudaErrorInvalidValue;
  }
  cudaError_t err;
  const int64_t state_bytes = MinMaxStateBytes(units);
  if (!a.plan.direct && static_cast<char*>(a.state) + state_bytes ==
                            reinterpret_cast<char*>(a.first_nonfinite)) {
    err = cudaMemsetAsync(a.state, 0xFF, state_bytes + 8, stream);
  } else {
    err = cudaMemsetAsync(a.first_nonfinite, 0xFF, 8, stream);
    if (err == cudaSuccess && !a.plan.direct) {
      err = cudaMemsetAsync(a.state, 0xFF, state_bytes, stream);
    }
  }
  if (err != cudaSuccess) return err;

  const int teams_per_block = (kThreads / 32) * (32 / team);
  const int64_t blocks = CappedBlocks(
      (a.plan.num_items + teams_per_block - 1) / teams_per_block, a.sm_count);
  const dim3 grid(static_cast<unsigned int>(blocks));
  switch (a.format) {
    case FloatFormat::kF16:
      MinMaxItemsKernel<FloatFormat::kF16><<<grid, kThreads, 0, stream>>>(a);
      break;
    case FloatFormat::kBF16:
      MinMaxItemsKernel<FloatFormat::kBF16><<<grid, kThreads, 0, stream>>>(a);
      break;
    default:
      MinMaxItemsKernel<FloatFormat::kF32><<<grid, kThreads, 0, stream>>>(a);
      break;
  }
  err = cudaGetLastError();
  if (err != cudaSuccess || a.plan.direct) return err;

  const int64_t finish_blocks =
      CappedBlocks((units + kThreads - 1) / kThreads, a.sm_count);
  MinMaxFinishKernel<<<static_cast<unsigned int>(finish_blocks), kThreads, 0,
                       stream>>>(a.state, units, a.out_min, a.out_max);
  return cudaGetLastError();
}

}  // namespace internal_cuda
}  // namespace qcal
