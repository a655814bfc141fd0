// The host/device building blocks of the CUDA reduction kernels
// (kernels/min_max.cu, kernels/mse_errors.cu): work plans, the per-lane
// element loops and the order-independent merge rules. Everything here is
// plain C++ (QCAL_HD), so the CPU tests run the very code the kernels run and
// check it against the CPU backend (core/backend.cc), whose results the
// kernels must reproduce bit for bit.
//
// Min/max. A unit (a tile of a TileGrid) is cut into "items": a range of rows
// times a range of columns of the unit, small enough to fit a 32-bit position
// (p = row offset * item width + column offset, which runs in flat-index
// order). A team of T lanes (T a power of two <= 32) reads one item: each row
// run is split into an unaligned head, 16-byte vectors and a tail
// (SplitRun); lane t takes elements/vectors t, t + T, ... Lanes keep the
// minimum, maximum, the position of their first zero and of their first
// non-finite element (MinMaxLane). The team combines lanes and items combine
// per unit with min/max of integer keys (MinMaxKey), which is exact and
// independent of the order of combination. The CPU keeps the first element
// (in flat order) among equal extremes, which only shows for +0 and -0; the
// keys merge the two zeros and the unit's first zero, found through the
// zero positions, gives the sign (FinishUnit).
//
// MSE. A unit row is summed by 16 lanes: lane l takes column offsets
// l, l + 16, ... in order into its double accumulator, exactly RowErrorSum's
// accumulator l (AccumulateLaneErrors); the 16 lane sums are then added in
// lane order (CombineLaneSums) and the rows of a unit in row order, which is
// the canonical summation order of MseRequest (core/backend.h).
#ifndef QCAL_CUDA_KERNELS_REDUCE_COMMON_H_
#define QCAL_CUDA_KERNELS_REDUCE_COMMON_H_

#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "core/element_access.h"
#include "core/float_convert.h"
#include "core/host_device.h"
#include "core/quant_math.h"

namespace qcal {
namespace internal_cuda {

// ------------------------------------------------------------------ grid

// ReduceGrid is TileGrid (core/layout.h) without Abseil: a [rows, cols]
// tensor cut into tiles of [tile_rows, tile_cols], edge tiles partial, units
// numbered row-major.
struct ReduceGrid {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t tile_rows = 1;
  int64_t tile_cols = 1;

  QCAL_HD int64_t grid_rows() const {
    return (rows + tile_rows - 1) / tile_rows;
  }
  QCAL_HD int64_t grid_cols() const {
    return (cols + tile_cols - 1) / tile_cols;
  }
  QCAL_HD int64_t num_units() const { return grid_rows() * grid_cols(); }
};

// DivMod64 sets *q = a / b and *r = a % b for a >= 0, b > 0, with 32-bit
// division when both fit (a 64-bit division is several times slower on a
// GPU).
QCAL_HD_INLINE void DivMod64(int64_t a, int64_t b, int64_t* q, int64_t* r) {
  if (((a | b) >> 32) == 0) {
    const uint32_t a32 = static_cast<uint32_t>(a);
    const uint32_t b32 = static_cast<uint32_t>(b);
    *q = a32 / b32;
    *r = a32 - static_cast<uint32_t>(*q) * b32;
  } else {
    *q = a / b;
    *r = a - *q * b;
  }
}

// ------------------------------------------------------------ min / max

// kNoPos marks "no such element" in a 32-bit item position.
inline constexpr uint32_t kNoPos = 0xFFFFFFFFu;

// kMaxItemCols is the widest item; wider units are cut into column chunks of
// kItemColChunk columns.
inline constexpr int64_t kMaxItemCols = 16384;
inline constexpr int64_t kItemColChunk = 8192;

// MinMaxPlan says how a grid is cut into items and teams.
struct MinMaxPlan {
  int64_t item_rows = 1;   // rows per item (the last of a unit may be fewer)
  int64_t item_cols = 1;   // columns per item (likewise)
  int64_t row_chunks = 1;  // items per unit along rows
  int64_t col_chunks = 1;  // items per unit along columns
  int64_t items_per_unit = 1;
  int64_t num_items = 0;   // num_units * items_per_unit
  int team_size = 32;      // lanes per item: 1, 2, 4, 8, 16 or 32
  // direct: one item per unit, whose team writes the unit's result; else
  // items merge through per-unit atomics and a finishing kernel.
  bool direct = true;
};

// PlanMinMax picks items of about `target bytes` (between 2 KiB and 16 KiB,
// smaller when the tensor is small compared with the device, so that every
// SM gets work) and the smallest team whose 16-byte loads cover an item row.
inline MinMaxPlan PlanMinMax(const ReduceGrid& g, int elem_size,
                             int sm_count) {
  MinMaxPlan p;
  const int64_t total_bytes = g.rows * g.cols * elem_size;
  // About 64 items per SM, each at least 2 KiB and at most 16 KiB.
  int64_t target = 16384;
  const int64_t per_sm = total_bytes / (64 * (sm_count > 0 ? sm_count : 1));
  while (target > 2048 && target > per_sm) target /= 2;
  // A unit is never larger than the tensor (a block may be wider than it).
  const int64_t unit_rows = g.tile_rows < g.rows ? g.tile_rows : g.rows;
  const int64_t unit_cols = g.tile_cols < g.cols ? g.tile_cols : g.cols;
  if (unit_rows <= 0 || unit_cols <= 0) {
    p.num_items = 0;
    return p;
  }
  p.item_cols = unit_cols <= kMaxItemCols ? unit_cols : kItemColChunk;
  const int64_t row_bytes = p.item_cols * elem_size;
  int64_t rows = target / row_bytes;
  if (rows < 1) rows = 1;
  if (rows > unit_rows) rows = unit_rows;
  p.item_rows = rows;
  p.row_chunks = (unit_rows + p.item_rows - 1) / p.item_rows;
  p.col_chunks = (unit_cols + p.item_cols - 1) / p.item_cols;
  p.items_per_unit = p.row_chunks * p.col_chunks;
  p.num_items = g.num_units() * p.items_per_unit;
  p.direct = p.items_per_unit == 1;
  // Lanes needed to cover one item row with 16-byte vectors, rounded up to a
  // power of two.
  const int64_t vectors = (row_bytes + 15) / 16;
  int team = 1;
  while (team < 32 && team < vectors) team *= 2;
  p.team_size = team;
  return p;
}

// ItemSpan is the part of the tensor one item covers: rows [row_begin,
// row_end) x columns [col_begin, col_end) of unit `unit`. Empty (row_begin
// == row_end or col_begin == col_end) for chunks past a partial edge unit.
struct ItemSpan {
  int64_t unit;
  int64_t row_begin, row_end;
  int64_t col_begin, col_end;
};

// ItemAt returns item `item` (0 <= item < plan.num_items). Items are
// numbered unit-major, then row chunk, then column chunk.
QCAL_HD_INLINE ItemSpan ItemAt(const ReduceGrid& g, const MinMaxPlan& p,
                               int64_t item) {
  ItemSpan s;
  int64_t rem, rc, cc, ti, tj;
  DivMod64(item, p.items_per_unit, &s.unit, &rem);
  DivMod64(rem, p.col_chunks, &rc, &cc);
  DivMod64(s.unit, g.grid_cols(), &ti, &tj);
  const int64_t tile_row_end =
      (ti + 1) * g.tile_rows < g.rows ? (ti + 1) * g.tile_rows : g.rows;
  const int64_t tile_col_end =
      (tj + 1) * g.tile_cols < g.cols ? (tj + 1) * g.tile_cols : g.cols;
  s.row_begin = ti * g.tile_rows + rc * p.item_rows;
  s.row_end = s.row_begin + p.item_rows;
  if (s.row_end > tile_row_end) s.row_end = tile_row_end;
  if (s.row_begin > s.row_end) s.row_begin = s.row_end;
  s.col_begin = tj * g.tile_cols + cc * p.item_cols;
  s.col_end = s.col_begin + p.item_cols;
  if (s.col_end > tile_col_end) s.col_end = tile_col_end;
  if (s.col_begin > s.col_end) s.col_begin = s.col_end;
  return s;
}

// RunSplit cuts a run of n contiguous elements into `head` elements before
// the first 16-byte boundary, `vectors` aligned 16-byte vectors and `tail`
// elements after them.
struct RunSplit {
  int head;
  int vectors;
  int tail;
};

// SplitRun splits the run of `n` elements of `elem_size` bytes (4 or 2)
// starting at byte address `address` (a multiple of elem_size).
QCAL_HD_INLINE RunSplit SplitRun(uintptr_t address, int elem_size, int n) {
  RunSplit s;
  const int mis = static_cast<int>(address & 15u);
  int head = mis == 0 ? 0 : (16 - mis) / elem_size;
  if (head > n) head = n;
  const int per_vector = 16 / elem_size;
  s.head = head;
  s.vectors = (n - head) / per_vector;
  s.tail = (n - head) - s.vectors * per_vector;
  return s;
}

// Vec16 is one 16-byte vector of elements.
struct Vec16 {
  uint32_t w[4];
};

// LoadVec16 reads the 16-byte aligned vector at `p` (one 128-bit load
// through the read-only cache on the device).
QCAL_HD_INLINE Vec16 LoadVec16(const void* p) {
  Vec16 v;
#if defined(__CUDA_ARCH__)
  const uint4 u = __ldg(static_cast<const uint4*>(p));
  v.w[0] = u.x;
  v.w[1] = u.y;
  v.w[2] = u.z;
  v.w[3] = u.w;
#else
  std::memcpy(&v, p, sizeof(v));
#endif
  return v;
}

// VecElement<F> returns element k of a vector of format F (k < 16 /
// size of F), widened exactly as LoadAs<F> does (little-endian lanes).
template <FloatFormat F>
QCAL_HD_INLINE float VecElement(const Vec16& v, int k) {
  if constexpr (F == FloatFormat::kF32) {
    return BitsToFloat(v.w[k]);
  } else {
    const uint16_t bits =
        static_cast<uint16_t>(v.w[k >> 1] >> ((k & 1) * 16));
    if constexpr (F == FloatFormat::kF16) {
      return F16BitsToFloat(bits);
    } else {
      return Bf16BitsToFloat(bits);
    }
  }
}

// ElementSize<F> is the size of one element of F in bytes.
template <FloatFormat F>
QCAL_HD_INLINE constexpr int ElementSize() {
  return F == FloatFormat::kF32 ? 4 : 2;
}

// MinMaxKey maps a finite float, or +-infinity, to an unsigned key with the
// same order, +0 and -0 both mapping to kZeroKey. NaN never reaches it.
QCAL_HD_INLINE uint32_t MinMaxKey(float v) {
  if (v == 0.0f) return 0x80000000u;
  const uint32_t b = FloatToBits(v);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// KeyToFloat inverts MinMaxKey (kZeroKey gives +0).
QCAL_HD_INLINE float KeyToFloat(uint32_t k) {
  return BitsToFloat((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
}

// kZeroKey is the key of +0 and -0; kNoMinKey / kNoMaxKey are the keys of
// +inf / -inf, the starting minimum / maximum of a lane without finite
// values. Every finite value's key lies strictly between them.
inline constexpr uint32_t kZeroKey = 0x80000000u;
inline constexpr uint32_t kNoMinKey = 0xFF800000u;
inline constexpr uint32_t kNoMaxKey = 0x007FFFFFu;

// MinMaxLane is one lane's running state over its elements, which it sees in
// increasing position order.
struct MinMaxLane {
  float mn = INFINITY;
  float mx = -INFINITY;
  uint32_t zero_pos = kNoPos;  // position of the lane's first +-0
  uint32_t bad_pos = kNoPos;   // position of its first NaN/+-inf (kError)

  // Add takes element value v at item position p.
  QCAL_HD_INLINE void Add(float v, uint32_t p, bool skip) {
    if (!IsFiniteF(v)) {
      if (!skip && p < bad_pos) bad_pos = p;
      return;
    }
    // Which of two equal zeros wins does not matter here: zeros are
    // resolved through zero_pos (see FinishUnit).
#if defined(__CUDA_ARCH__)
    mn = fminf(mn, v);
    mx = fmaxf(mx, v);
#else
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
#endif
    if (v == 0.0f && p < zero_pos) zero_pos = p;
  }
};

// AddItemRowLane feeds lane `t` of a team of `team` lanes with its elements
// of one row run: `n` elements of format F starting at `row_data` (device or
// host memory), whose item positions start at `pos0`. Lane is MinMaxLane (or
// anything with its Add).
template <FloatFormat F, typename Lane>
QCAL_HD_INLINE void AddItemRowLane(const void* row_data, int n, uint32_t pos0,
                                   int t, int team, bool skip, Lane* lane) {
  constexpr int kSize = ElementSize<F>();
  constexpr int kPerVec = 16 / kSize;
  const RunSplit s =
      SplitRun(reinterpret_cast<uintptr_t>(row_data), kSize, n);
  for (int k = t; k < s.head; k += team) {
    lane->Add(LoadAs<F>(row_data, k), pos0 + k, skip);
  }
  const char* vec_base = static_cast<const char*>(row_data) + s.head * kSize;
  const uint32_t vec_pos = pos0 + static_cast<uint32_t>(s.head);
  int j = t;
  // Four independent 16-byte loads in flight per lane.
  for (; j + 3 * team < s.vectors; j += 4 * team) {
    Vec16 v[4];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int q = 0; q < 4; ++q) v[q] = LoadVec16(vec_base + (j + q * team) * 16);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int q = 0; q < 4; ++q) {
      const uint32_t p = vec_pos + static_cast<uint32_t>((j + q * team) * kPerVec);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
      for (int k = 0; k < kPerVec; ++k) {
        lane->Add(VecElement<F>(v[q], k), p + k, skip);
      }
    }
  }
  for (; j < s.vectors; j += team) {
    const Vec16 v = LoadVec16(vec_base + j * 16);
    const uint32_t p = vec_pos + static_cast<uint32_t>(j * kPerVec);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int k = 0; k < kPerVec; ++k) {
      lane->Add(VecElement<F>(v, k), p + k, skip);
    }
  }
  const int tail0 = s.head + s.vectors * kPerVec;
  for (int k = t; k < s.tail; k += team) {
    lane->Add(LoadAs<F>(row_data, tail0 + k), pos0 + tail0 + k, skip);
  }
}

// AddItemLane feeds lane `t` with its elements of every row of `span` of a
// contiguous [rows, cols] tensor at `data`. Position of element (r, c) of the
// item: (r - row_begin) * width + (c - col_begin).
template <FloatFormat F, typename Lane>
QCAL_HD_INLINE void AddItemLane(const void* data, int64_t cols,
                                const ItemSpan& span, int t, int team,
                                bool skip, Lane* lane) {
  const int width = static_cast<int>(span.col_end - span.col_begin);
  if (width <= 0) return;
  const char* bytes = static_cast<const char*>(data);
  for (int64_t r = span.row_begin; r < span.row_end; ++r) {
    const char* row =
        bytes + (r * cols + span.col_begin) * ElementSize<F>();
    const uint32_t pos0 =
        static_cast<uint32_t>((r - span.row_begin) * width);
    AddItemRowLane<F>(row, width, pos0, t, team, skip, lane);
  }
}

// ItemFlatIndex maps an item position back to the flat element index.
QCAL_HD_INLINE int64_t ItemFlatIndex(const ItemSpan& span, int64_t cols,
                                     uint32_t pos) {
  const int64_t width = span.col_end - span.col_begin;
  int64_t dr, dc;
  DivMod64(pos, width, &dr, &dc);
  return (span.row_begin + dr) * cols + span.col_begin + dc;
}

// ZeroWord packs the flat index of a zero and its sign so that the smallest
// word is the first zero: (index << 1) | sign.
QCAL_HD_INLINE uint64_t ZeroWord(int64_t flat_index, float zero) {
  return (static_cast<uint64_t>(flat_index) << 1) |
         (FloatToBits(zero) >> 31);
}

// ZeroWordValue is the zero (+0 or -0) a ZeroWord records.
QCAL_HD_INLINE float ZeroWordValue(uint64_t word) {
  return (word & 1u) ? -0.0f : 0.0f;
}

// FinishUnit turns a unit's combined keys into its minimum and maximum, as
// the CPU backend reports them: min = max = 0 without finite values; a zero
// extreme takes the sign of the unit's first zero (`first_zero`, which is
// read only when an extreme is zero).
QCAL_HD_INLINE void FinishUnit(uint32_t min_key, uint32_t max_key,
                               float first_zero, float* mn, float* mx) {
  if (min_key >= kNoMinKey) {
    *mn = 0.0f;
    *mx = 0.0f;
    return;
  }
  *mn = min_key == kZeroKey ? first_zero : KeyToFloat(min_key);
  *mx = max_key == kZeroKey ? first_zero : KeyToFloat(max_key);
}

// ------------------------------------------------------------------- MSE

// kMseTeam is the number of lanes summing one unit row (the accumulators of
// the canonical order); kMseCandBatch the candidates evaluated per pass over
// the data (their accumulators live in registers).
inline constexpr int kMseTeam = kErrorSumLanes;
inline constexpr int kMseCandBatch = 8;

// AccumulateLaneErrors adds, for lane `lane` (0..15) of a unit row of `n`
// elements read by `load(k)`, the error terms of column offsets lane,
// lane + 16, ... in order into acc[c] for the `count` candidates params[c]
// (count <= kMseCandBatch): accumulator `lane` of RowErrorSum<F>.
template <FloatFormat F, typename LoadFn>
QCAL_HD_INLINE void AccumulateLaneErrors(LoadFn load, int64_t n, int lane,
                                         const FakeQuantParams* params,
                                         int count, const QuantSpec& spec,
                                         float norm_exponent,
                                         bool skip_nonfinite, double* acc) {
  for (int64_t k = lane; k < n; k += kErrorSumLanes) {
    const float x = load(k);
    if (skip_nonfinite && !IsFiniteF(x)) continue;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int c = 0; c < kMseCandBatch; ++c) {
      if (c < count) {
        acc[c] += static_cast<double>(ErrorTerm<F>(
            x, FakeQuantize<F>(x, params[c], spec), norm_exponent));
      }
    }
  }
}

// CombineLaneSums adds the 16 lane accumulators of a row in lane order, as
// RowErrorSum does. `lanes[l * stride]` is lane l's sum.
QCAL_HD_INLINE double CombineLaneSums(const double* lanes, int stride) {
  double sum = 0.0;
  for (int l = 0; l < kErrorSumLanes; ++l) sum += lanes[l * stride];
  return sum;
}

// kMseTeamsPerBlock is the number of items one block of the row kernel takes
// at a time (256 threads / kMseTeam).
inline constexpr int kMseTeamsPerBlock = 16;

// MseCandGroups splits the candidates into groups run by different teams:
// with few items (e.g. a channel strategy's few long rows) one team per item
// leaves most of the GPU idle, so each item gets `groups` teams of at most
// `per_group` candidates (each group reads the item again). With enough
// items, groups = 1: each item is read once for all candidates.
struct MseCandGroups {
  int64_t groups = 1;
  int64_t per_group = 1;
};

// PlanMseCandGroups aims at about 4096 threads per SM (two waves of full
// occupancy) before splitting.
inline MseCandGroups PlanMseCandGroups(int64_t num_items, int64_t num_cands,
                                       int sm_count) {
  MseCandGroups g;
  if (num_items <= 0 || num_cands <= 0) {
    g.per_group = num_cands > 1 ? num_cands : 1;
    return g;
  }
  const int64_t target_teams =
      int64_t{sm_count > 0 ? sm_count : 1} * 4096 / kMseTeam;
  int64_t groups = (target_teams + num_items - 1) / num_items;
  if (groups > num_cands) groups = num_cands;
  if (groups < 1) groups = 1;
  g.per_group = (num_cands + groups - 1) / groups;
  g.groups = (num_cands + g.per_group - 1) / g.per_group;
  return g;
}

// MseBatch is one block iteration of the row kernel: items
// [item_begin, item_begin + kMseTeamsPerBlock) (those < num_items) and
// candidates [cand_begin, cand_end).
struct MseBatch {
  int64_t item_begin;
  int64_t cand_begin;
  int64_t cand_end;
};

// MseNumBatches is the number of block iterations: the item batches of every
// candidate group. Batches run group-major, so that one batch has one
// candidate range.
QCAL_HD_INLINE int64_t MseNumBatches(int64_t num_items,
                                     const MseCandGroups& g) {
  return (num_items + kMseTeamsPerBlock - 1) / kMseTeamsPerBlock * g.groups;
}

// MseBatchAt returns batch `b` (0 <= b < MseNumBatches).
QCAL_HD_INLINE MseBatch MseBatchAt(int64_t b, int64_t num_items,
                                   int64_t num_cands, const MseCandGroups& g) {
  const int64_t item_batches =
      (num_items + kMseTeamsPerBlock - 1) / kMseTeamsPerBlock;
  int64_t group, ib;
  DivMod64(b, item_batches, &group, &ib);
  MseBatch batch;
  batch.item_begin = ib * kMseTeamsPerBlock;
  batch.cand_begin = group * g.per_group;
  batch.cand_end = batch.cand_begin + g.per_group;
  if (batch.cand_end > num_cands) batch.cand_end = num_cands;
  return batch;
}

// LocateItem finds the listed unit `*unit` and its row `*row` of MSE item
// `item`: with uniform_h > 0 every listed unit has that many rows; otherwise
// item_start (num_units + 1 entries, ascending) gives each unit's first item.
QCAL_HD_INLINE void LocateItem(int64_t item, int64_t uniform_h,
                               const int64_t* item_start, int64_t num_units,
                               int64_t* unit, int64_t* row) {
  if (uniform_h > 0) {
    DivMod64(item, uniform_h, unit, row);
    return;
  }
  // Largest i with item_start[i] <= item.
  int64_t lo = 0, hi = num_units - 1;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (item_start[mid] <= item) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  *unit = lo;
  *row = item - item_start[lo];
}

// MseItems maps MSE work items (a row of a listed unit, unit-major) to the
// listed units.
struct MseItems {
  // uniform_h > 0: every listed unit has uniform_h rows and item_start is
  // empty; otherwise item_start[i] is unit i's first item (n + 1 entries).
  int64_t uniform_h = 0;
  int64_t num_items = 0;
  std::vector<int64_t> item_start;
};

// MsePlanResult is PlanMseItems' verdict.
enum class MsePlanResult { kOk, kUnitOutsideGrid, kTooLarge };

// PlanMseItems plans the items of `n` listed units (host only). Units of the
// last tile row may have fewer rows than the others; one pass without
// divisions decides whether every listed unit has the same number. A unit
// outside the grid is reported in *bad_unit; more than 2^60 items is
// kTooLarge.
inline MsePlanResult PlanMseItems(const ReduceGrid& g, const int64_t* units,
                                  int64_t n, MseItems* out,
                                  int64_t* bad_unit) {
  const int64_t num_units = g.num_units();
  const int64_t last_row_first = (g.grid_rows() - 1) * g.grid_cols();
  const int64_t h_full = g.tile_rows < g.rows ? g.tile_rows : g.rows;
  const int64_t h_last = g.rows - (g.grid_rows() - 1) * g.tile_rows;
  bool any_last = false, any_other = false;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t u = units[i];
    if (u < 0 || u >= num_units) {
      *bad_unit = u;
      return MsePlanResult::kUnitOutsideGrid;
    }
    if (u >= last_row_first) {
      any_last = true;
    } else {
      any_other = true;
    }
  }
  constexpr int64_t kMaxItems = int64_t{1} << 60;
  out->item_start.clear();
  if (!any_last || !any_other || h_last == h_full) {
    out->uniform_h = any_last ? h_last : h_full;
    if (n > 0 && out->uniform_h > kMaxItems / n) {
      return MsePlanResult::kTooLarge;
    }
    out->num_items = n * out->uniform_h;
    return MsePlanResult::kOk;
  }
  out->uniform_h = 0;
  out->item_start.resize(static_cast<size_t>(n) + 1);
  out->item_start[0] = 0;
  for (int64_t i = 0; i < n; ++i) {
    // Each term is at most h_full <= rows, so the sum cannot overflow before
    // it passes kMaxItems.
    out->item_start[i + 1] =
        out->item_start[i] + (units[i] >= last_row_first ? h_last : h_full);
    if (out->item_start[i + 1] > kMaxItems) return MsePlanResult::kTooLarge;
  }
  out->num_items = out->item_start[n];
  return MsePlanResult::kOk;
}

}  // namespace internal_cuda
}  // namespace qcal

#endif  // QCAL_CUDA_KERNELS_REDUCE_COMMON_H_
