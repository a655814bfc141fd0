// Vectorised min/max of every unit of a TileGrid (SimdMinMax), compiled for
// every SIMD target by Highway (this file is re-included once per target).
//
// Values are reduced as integer keys: a float's bit pattern with the
// magnitude bits of negative values flipped orders all floats totally, -0
// below +0 and NaNs beyond the infinities. Integer min/max are exact and
// order-free, so the vector lane layout, the overlapping re-read of a
// segment's last vector and the split of work across threads never change a
// result. f16/bf16 are reduced as 16-bit keys, without widening.
//
// Non-finite values show up in the keys as values beyond the largest finite
// magnitude: with NonFinitePolicy::kError a unit's reduction reveals them for
// free (then a scan finds the first flat index); with kSkip they are
// replaced by the identity of each reduction.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/cpu/kernel_jobs.h"
#include "core/float_convert.h"
#include "core/parallel.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/cpu/minmax_kernels.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/aligned_allocator.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace qcal {
namespace internal_cpu {
namespace HWY_NAMESPACE {

namespace hn = hwy::HWY_NAMESPACE;

// KeyTraits<F> describes the keys of format F: the lane type, the keys of
// the largest and smallest finite values, and the magnitude mask.
template <FloatFormat F>
struct KeyTraits;
template <>
struct KeyTraits<FloatFormat::kF32> {
  using T = int32_t;
  static constexpr int32_t kMaxFinite = 0x7F7FFFFF;  // FLT_MAX
  static constexpr int32_t kMinFinite = -0x7F800000;  // -FLT_MAX: 0x80800000
  static constexpr int32_t kMagnitude = 0x7FFFFFFF;
  static constexpr int32_t kExponent = 0x7F800000;
};
template <>
struct KeyTraits<FloatFormat::kBF16> {
  using T = int16_t;
  static constexpr int32_t kMaxFinite = 0x7F7F;
  static constexpr int32_t kMinFinite = -0x7F80;  // 0x8080
  static constexpr int32_t kMagnitude = 0x7FFF;
  static constexpr int32_t kExponent = 0x7F80;
};
template <>
struct KeyTraits<FloatFormat::kF16> {
  using T = int16_t;
  static constexpr int32_t kMaxFinite = 0x7BFF;  // 65504
  static constexpr int32_t kMinFinite = -0x7C00;  // 0x8400
  static constexpr int32_t kMagnitude = 0x7FFF;
  static constexpr int32_t kExponent = 0x7C00;
};

// Key of one scalar bit pattern (sign-extended to int32).
template <FloatFormat F>
HWY_INLINE int32_t ScalarKey(typename KeyTraits<F>::T bits) {
  using T = typename KeyTraits<F>::T;
  const T mask = static_cast<T>(bits < 0 ? KeyTraits<F>::kMagnitude : 0);
  return static_cast<T>(bits ^ mask);
}

template <FloatFormat F, class D>
HWY_INLINE hn::Vec<D> Keys(D d, hn::Vec<D> bits) {
  using T = typename KeyTraits<F>::T;
  constexpr int kShift = sizeof(T) * 8 - 1;
  return hn::Xor(bits,
                 hn::And(hn::ShiftRight<kShift>(bits),
                         hn::Set(d, static_cast<T>(KeyTraits<F>::kMagnitude))));
}

// Folds a vector of keys into running minima and maxima. With kSkip,
// negative non-finite keys stay out of the minimum and positive ones out of
// the maximum (see FinishUnit).
template <FloatFormat F, bool kSkip, class D>
HWY_INLINE void Fold(D d, hn::Vec<D> k, hn::Vec<D>& vmin, hn::Vec<D>& vmax) {
  using T = typename KeyTraits<F>::T;
  if constexpr (kSkip) {
    const auto lo = hn::Set(d, static_cast<T>(KeyTraits<F>::kMinFinite));
    const auto hi = hn::Set(d, static_cast<T>(KeyTraits<F>::kMaxFinite));
    vmin = hn::Min(vmin, hn::IfThenElse(hn::Lt(k, lo),
                                        hn::Set(d, hwy::LimitsMax<T>()), k));
    vmax = hn::Max(vmax, hn::IfThenElse(hn::Gt(k, hi),
                                        hn::Set(d, hwy::LimitsMin<T>()), k));
  } else {
    vmin = hn::Min(vmin, k);
    vmax = hn::Max(vmax, k);
  }
}

// KeyRange is the running reduction of one unit (or part of one).
struct KeyRange {
  int32_t min = std::numeric_limits<int32_t>::max();
  int32_t max = std::numeric_limits<int32_t>::min();
  void Merge(const KeyRange& o) {
    min = std::min(min, o.min);
    max = std::max(max, o.max);
  }
};

template <FloatFormat F, bool kSkip>
HWY_INLINE void FoldScalar(int32_t k, KeyRange& r) {
  if (!kSkip || k >= KeyTraits<F>::kMinFinite) r.min = std::min(r.min, k);
  if (!kSkip || k <= KeyTraits<F>::kMaxFinite) r.max = std::max(r.max, k);
}

// Reduces n elements at p into r. Uses vectors of D when n >= Lanes(D)
// (the last vector overlapping the previous one), smaller vectors for
// shorter runs, scalars below 4 lanes.
template <FloatFormat F, bool kSkip, class D>
HWY_INLINE void ReduceRun(D d, const typename KeyTraits<F>::T* HWY_RESTRICT p,
                          size_t n, KeyRange& r) {
  using T = typename KeyTraits<F>::T;
  constexpr size_t kN = hn::MaxLanes(D());
  if (n >= kN) {
    auto vmin0 = hn::Set(d, hwy::LimitsMax<T>());
    auto vmax0 = hn::Set(d, hwy::LimitsMin<T>());
    size_t i = 0;
    if (n >= 4 * kN) {
      auto vmin1 = vmin0, vmin2 = vmin0, vmin3 = vmin0;
      auto vmax1 = vmax0, vmax2 = vmax0, vmax3 = vmax0;
      for (; i + 4 * kN <= n; i += 4 * kN) {
        Fold<F, kSkip>(d, Keys<F>(d, hn::LoadU(d, p + i)), vmin0, vmax0);
        Fold<F, kSkip>(d, Keys<F>(d, hn::LoadU(d, p + i + kN)), vmin1, vmax1);
        Fold<F, kSkip>(d, Keys<F>(d, hn::LoadU(d, p + i + 2 * kN)), vmin2,
                       vmax2);
        Fold<F, kSkip>(d, Keys<F>(d, hn::LoadU(d, p + i + 3 * kN)), vmin3,
                       vmax3);
      }
      vmin0 = hn::Min(hn::Min(vmin0, vmin1), hn::Min(vmin2, vmin3));
      vmax0 = hn::Max(hn::Max(vmax0, vmax1), hn::Max(vmax2, vmax3));
    }
    for (; i + kN <= n; i += kN) {
      Fold<F, kSkip>(d, Keys<F>(d, hn::LoadU(d, p + i)), vmin0, vmax0);
    }
    if (i < n) {  // re-reading elements is harmless for min/max
      Fold<F, kSkip>(d, Keys<F>(d, hn::LoadU(d, p + n - kN)), vmin0, vmax0);
    }
    r.min = std::min<int32_t>(r.min, hn::GetLane(hn::MinOfLanes(d, vmin0)));
    r.max = std::max<int32_t>(r.max, hn::GetLane(hn::MaxOfLanes(d, vmax0)));
    return;
  }
  if constexpr (kN / 2 >= 4) {
    ReduceRun<F, kSkip>(hn::Half<D>(), p, n, r);
  } else {
    for (size_t i = 0; i < n; ++i) FoldScalar<F, kSkip>(ScalarKey<F>(p[i]), r);
  }
}

// Adds n >= Lanes(d) elements at p to vector accumulators (for units that
// span several rows: one horizontal reduction per unit, not per row).
template <FloatFormat F, bool kSkip, class D>
HWY_INLINE void AccumulateRun(D d, const typename KeyTraits<F>::T* HWY_RESTRICT p,
                              size_t n, typename KeyTraits<F>::T* acc_min,
                              typename KeyTraits<F>::T* acc_max) {
  constexpr size_t kN = hn::MaxLanes(D());
  auto vmin = hn::Load(d, acc_min);
  auto vmax = hn::Load(d, acc_max);
  size_t i = 0;
  for (; i + kN <= n; i += kN) {
    Fold<F, kSkip>(d, Keys<F>(d, hn::LoadU(d, p + i)), vmin, vmax);
  }
  if (i < n) Fold<F, kSkip>(d, Keys<F>(d, hn::LoadU(d, p + n - kN)), vmin, vmax);
  hn::Store(vmin, d, acc_min);
  hn::Store(vmax, d, acc_max);
}

// Decodes a key back to the float it came from.
template <FloatFormat F>
HWY_INLINE float KeyToFloat(int32_t key) {
  if constexpr (F == FloatFormat::kF32) {
    const uint32_t bits = static_cast<uint32_t>(key) ^
                          (key < 0 ? 0x7FFFFFFFu : 0u);
    return BitsToFloat(bits);
  } else {
    const uint16_t bits =
        static_cast<uint16_t>(static_cast<uint32_t>(key) ^ (key < 0 ? 0x7FFFu : 0u));
    return F == FloatFormat::kBF16 ? Bf16BitsToFloat(bits)
                                   : F16BitsToFloat(bits);
  }
}

// Writes a unit's result. With kSkip, a unit without finite values has a
// minimum key beyond the largest finite key and gets min = max = 0. With
// kError, keys beyond the finite range flag a non-finite value.
template <FloatFormat F, bool kSkip>
HWY_INLINE void FinishUnit(const MinMaxJob& job, int64_t u, const KeyRange& r,
                           std::atomic<bool>& saw_nonfinite) {
  if constexpr (kSkip) {
    if (r.min > KeyTraits<F>::kMaxFinite) {
      job.out_min[u] = 0.0f;
      job.out_max[u] = 0.0f;
      return;
    }
  } else {
    if (r.min < KeyTraits<F>::kMinFinite || r.max > KeyTraits<F>::kMaxFinite) {
      saw_nonfinite.store(true, std::memory_order_relaxed);
    }
  }
  job.out_min[u] = KeyToFloat<F>(r.min);
  job.out_max[u] = KeyToFloat<F>(r.max);
}

// The smallest flat index of a non-finite element, or -1.
template <FloatFormat F>
int64_t FindFirstNonFinite(const MinMaxJob& job) {
  using T = typename KeyTraits<F>::T;
  const hn::ScalableTag<T> d;
  const size_t kN = hn::Lanes(d);
  const T* p = static_cast<const T*>(job.data);
  const int64_t n = job.grid.rows * job.grid.cols;
  const auto mag = hn::Set(d, static_cast<T>(KeyTraits<F>::kMagnitude));
  // (x86 has no integer >=: compare with exponent - 1.)
  const auto below_exp =
      hn::Set(d, static_cast<T>(KeyTraits<F>::kExponent - 1));
  int64_t i = 0;
  for (; i + static_cast<int64_t>(kN) <= n; i += kN) {
    const auto bad = hn::Gt(hn::And(hn::LoadU(d, p + i), mag), below_exp);
    if (!hn::AllFalse(d, bad)) return i + hn::FindFirstTrue(d, bad);
  }
  for (; i < n; ++i) {
    if ((p[i] & KeyTraits<F>::kMagnitude) >= KeyTraits<F>::kExponent) return i;
  }
  return -1;
}

template <FloatFormat F, bool kSkip>
void MinMaxImpl(const MinMaxJob& job) {
  using T = typename KeyTraits<F>::T;
  const hn::ScalableTag<T> d;
  constexpr size_t kN = hn::MaxLanes(hn::ScalableTag<T>());
  const TileGrid& g = job.grid;
  const T* data = static_cast<const T*>(job.data);
  const int64_t gc = g.grid_cols();
  const int64_t gr = g.grid_rows();
  const int64_t threads = ResolveThreads(job.threads);
  std::atomic<bool> saw_nonfinite{false};
  // Work pieces of at least this many elements amortise the hand-out.
  constexpr int64_t kMinPiece = int64_t{1} << 15;

  if (gc == 1) {
    // Each unit is a contiguous run [r0 * cols, r1 * cols): tensor, channel,
    // token, and groups/blocks as wide as the tensor. Long units are cut
    // into pieces so that every thread has work.
    const int64_t unit_len = g.tile_rows * g.cols;
    const int64_t total = g.rows * g.cols;
    const int64_t piece_target =
        std::max(kMinPiece, total / std::max<int64_t>(1, threads * 8));
    const int64_t pieces = std::max<int64_t>(
        1, (unit_len + piece_target - 1) / piece_target);
    const int64_t piece_len = (unit_len + pieces - 1) / pieces;
    if (pieces == 1) {
      ParallelFor(gr, job.threads,
                  std::max<int64_t>(1, kMinPiece / std::max<int64_t>(1, unit_len)),
                  [&](int64_t begin, int64_t end) {
                    for (int64_t ti = begin; ti < end; ++ti) {
                      const int64_t a = g.row_begin(ti) * g.cols;
                      const int64_t b = g.row_end(ti) * g.cols;
                      KeyRange r;
                      ReduceRun<F, kSkip>(d, data + a, b - a, r);
                      FinishUnit<F, kSkip>(job, ti, r, saw_nonfinite);
                    }
                  });
    } else {
      std::vector<KeyRange> parts(gr * pieces);
      ParallelFor(gr * pieces, job.threads, 1, [&](int64_t begin, int64_t end) {
        for (int64_t it = begin; it < end; ++it) {
          const int64_t ti = it / pieces, pi = it % pieces;
          const int64_t unit_end = g.row_end(ti) * g.cols;
          const int64_t a = std::min(unit_end, g.row_begin(ti) * g.cols +
                                                   pi * piece_len);
          const int64_t b = std::min(unit_end, a + piece_len);
          ReduceRun<F, kSkip>(d, data + a, b - a, parts[it]);
        }
      });
      for (int64_t ti = 0; ti < gr; ++ti) {
        KeyRange r;
        for (int64_t pi = 0; pi < pieces; ++pi) r.Merge(parts[ti * pieces + pi]);
        FinishUnit<F, kSkip>(job, ti, r, saw_nonfinite);
      }
    }
  } else {
    // Several units per row (group, block): work items are tile rows, or
    // parts of tile rows when there are few (e.g. a tensor of few blocks).
    int64_t splits = 1;
    if (gr < 4 * threads && g.tile_rows > 1) {
      splits = std::min<int64_t>(g.tile_rows, (4 * threads + gr - 1) / gr);
    }
    const int64_t split_rows = (g.tile_rows + splits - 1) / splits;
    std::vector<KeyRange> parts(splits > 1 ? gr * splits * gc : 0);
    // Reduces rows [ra, rb) of tile row ti into out[0 .. gc).
    auto reduce_rows = [&](int64_t ra, int64_t rb, KeyRange* out,
                           hwy::AlignedFreeUniquePtr<T[]>& acc) {
      for (int64_t j = 0; j < gc; ++j) out[j] = KeyRange();
      if (rb - ra == 1) {
        const T* row = data + ra * g.cols;
        for (int64_t j = 0; j < gc; ++j) {
          ReduceRun<F, kSkip>(d, row + g.col_begin(j),
                              g.col_end(j) - g.col_begin(j), out[j]);
        }
        return;
      }
      // Vector accumulators per tile column: one horizontal reduction per
      // unit at the end instead of one per row.
      if (!acc) acc = hwy::AllocateAligned<T>(2 * kN * gc);
      for (int64_t j = 0; j < gc; ++j) {
        hn::Store(hn::Set(d, hwy::LimitsMax<T>()), d, acc.get() + 2 * kN * j);
        hn::Store(hn::Set(d, hwy::LimitsMin<T>()), d,
                  acc.get() + 2 * kN * j + kN);
      }
      for (int64_t r = ra; r < rb; ++r) {
        const T* row = data + r * g.cols;
        for (int64_t j = 0; j < gc; ++j) {
          const int64_t c0 = g.col_begin(j), n = g.col_end(j) - c0;
          if (n >= static_cast<int64_t>(kN)) {
            AccumulateRun<F, kSkip>(d, row + c0, n, acc.get() + 2 * kN * j,
                                    acc.get() + 2 * kN * j + kN);
          } else {
            ReduceRun<F, kSkip>(d, row + c0, n, out[j]);
          }
        }
      }
      for (int64_t j = 0; j < gc; ++j) {
        const auto vmin = hn::Load(d, acc.get() + 2 * kN * j);
        const auto vmax = hn::Load(d, acc.get() + 2 * kN * j + kN);
        KeyRange v;
        v.min = hn::GetLane(hn::MinOfLanes(d, vmin));
        v.max = hn::GetLane(hn::MaxOfLanes(d, vmax));
        out[j].Merge(v);
      }
    };
    const int64_t row_len = split_rows * g.cols;
    const int64_t min_chunk =
        std::max<int64_t>(1, kMinPiece / std::max<int64_t>(1, row_len));
    ParallelFor(gr * splits, job.threads, min_chunk,
                [&](int64_t begin, int64_t end) {
                  hwy::AlignedFreeUniquePtr<T[]> acc(nullptr,
                                                     hwy::AlignedFreer());
                  std::vector<KeyRange> local(splits == 1 ? gc : 0);
                  for (int64_t it = begin; it < end; ++it) {
                    const int64_t ti = it / splits, si = it % splits;
                    const int64_t ra = std::min(
                        g.row_end(ti), g.row_begin(ti) + si * split_rows);
                    const int64_t rb = std::min(g.row_end(ti), ra + split_rows);
                    if (splits == 1) {
                      reduce_rows(ra, rb, local.data(), acc);
                      for (int64_t j = 0; j < gc; ++j) {
                        FinishUnit<F, kSkip>(job, ti * gc + j, local[j],
                                             saw_nonfinite);
                      }
                    } else {
                      reduce_rows(ra, rb, parts.data() + it * gc, acc);
                    }
                  }
                });
    if (splits > 1) {
      for (int64_t ti = 0; ti < gr; ++ti) {
        for (int64_t j = 0; j < gc; ++j) {
          KeyRange r;
          for (int64_t si = 0; si < splits; ++si) {
            r.Merge(parts[(ti * splits + si) * gc + j]);
          }
          FinishUnit<F, kSkip>(job, ti * gc + j, r, saw_nonfinite);
        }
      }
    }
  }
  if (job.first_nonfinite != nullptr) {
    *job.first_nonfinite =
        (!kSkip && saw_nonfinite.load()) ? FindFirstNonFinite<F>(job) : -1;
  }
}

void MinMaxTarget(const MinMaxJob& job) {
  switch (job.format) {
    case FloatFormat::kF16:
      return job.skip_nonfinite ? MinMaxImpl<FloatFormat::kF16, true>(job)
                                : MinMaxImpl<FloatFormat::kF16, false>(job);
    case FloatFormat::kBF16:
      return job.skip_nonfinite ? MinMaxImpl<FloatFormat::kBF16, true>(job)
                                : MinMaxImpl<FloatFormat::kBF16, false>(job);
    default:
      return job.skip_nonfinite ? MinMaxImpl<FloatFormat::kF32, true>(job)
                                : MinMaxImpl<FloatFormat::kF32, false>(job);
  }
}

int64_t TargetOfThisCode() { return HWY_TARGET; }

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace internal_cpu
}  // namespace qcal
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/cpu/reference_kernels.h"
#include "core/cpu/simd_kernels.h"
#include "hwy/targets.h"

namespace qcal {
namespace internal_cpu {

HWY_EXPORT(MinMaxTarget);
HWY_EXPORT(TargetOfThisCode);

}  // namespace internal_cpu

absl::Status SimdMinMax(const MinMaxRequest& request, const ExecOptions& exec,
                        const MinMaxOutput& out) {
  absl::Status s = ValidateMinMaxRequest(request);
  if (!s.ok()) return s;
  internal_cpu::MinMaxJob job;
  job.data = request.x.data();
  job.grid = request.grid;
  job.format = request.format;
  job.skip_nonfinite = request.nonfinite == NonFinitePolicy::kSkip;
  job.threads = ResolveThreads(exec.threads);
  job.out_min = out.min;
  job.out_max = out.max;
  job.first_nonfinite = out.first_nonfinite;
  if (request.grid.rows * request.grid.cols == 0) {
    for (int64_t u = 0; u < request.grid.num_units(); ++u) {
      out.min[u] = 0.0f;
      out.max[u] = 0.0f;
    }
    if (out.first_nonfinite != nullptr) *out.first_nonfinite = -1;
    return absl::OkStatus();
  }
  HWY_DYNAMIC_DISPATCH(internal_cpu::MinMaxTarget)(job);
  return absl::OkStatus();
}

std::vector<int64_t> SimdTargets() {
  std::vector<int64_t> targets;
  const int64_t supported = hwy::SupportedTargets() & HWY_TARGETS;
  // Lower bits are better targets on x86.
  for (int64_t t = supported; t != 0; t &= t - 1) {
    targets.push_back(t & ~(t - 1));
  }
  return targets;
}

std::string SimdTargetName(int64_t target) { return hwy::TargetName(target); }

int64_t ActiveSimdTarget() {
  return HWY_DYNAMIC_DISPATCH(internal_cpu::TargetOfThisCode)();
}

ScopedSimdTarget::ScopedSimdTarget(int64_t target) {
  hwy::SetSupportedTargetsForTest(target);
}

ScopedSimdTarget::~ScopedSimdTarget() { hwy::SetSupportedTargetsForTest(0); }

}  // namespace qcal
#endif  // HWY_ONCE
