// Vectorised min/max of every unit of a TileGrid (SimdMinMax), compiled for
// every SIMD target by Highway (this file is re-included once per target).
//
// Values are reduced as integers on their bit patterns (f16/bf16 as 16-bit
// lanes, without widening). Integer min/max are exact and order-free, so the
// vector lane layout, the overlapping re-read of a segment's last vector and
// the split of work across threads never change a result. With
// NonFinitePolicy::kError three reductions per vector suffice (signed min,
// signed max, unsigned max: see Partial), and non-finite values reveal
// themselves in them for free (then a scan finds the first flat index). With
// kSkip the bit patterns become keys (magnitude bits of negative values
// flipped: monotonic in the float value) so that non-finite ones can be
// replaced by each reduction's identity. Both order -0 below +0; the
// reference reports the first of equal extremes, so a zero result takes the
// sign of the unit's first zero (FirstZeroBits).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/cpu/kernel_jobs.h"
#include "core/float_convert.h"
#include "core/parallel.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/cpu/minmax_kernels.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/aligned_allocator.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "core/cpu/simd_math-inl.h"

HWY_BEFORE_NAMESPACE();
namespace qcal {
namespace internal_cpu {
namespace HWY_NAMESPACE {

namespace hn = hwy::HWY_NAMESPACE;
namespace simd = qcal::HWY_NAMESPACE::simd;

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

// Partial is the running reduction of one unit (or part of one) in scalars.
//   kError: the signed minimum (a) and maximum (b) and the unsigned maximum
//     (c) of the raw bit patterns. Floats are sign-magnitude, so the
//     largest value is b when some value is non-negative (b >= 0) and
//     otherwise the negative of smallest magnitude, a; the smallest value
//     is the negative of largest magnitude, c, when there is a negative
//     (c has the sign bit) and otherwise a. This is the total order with
//     -0 below +0, in three plain integer reductions per vector.
//   kSkip: the minimum (a) and maximum (b) keys (see Keys), non-finite
//     values kept out; c unused.
struct Partial {
  int32_t a = std::numeric_limits<int32_t>::max();
  int32_t b = std::numeric_limits<int32_t>::min();
  uint32_t c = 0;
  void Merge(const Partial& o) {
    a = std::min(a, o.a);
    b = std::max(b, o.b);
    c = std::max(c, o.c);
  }
};

// VecState is Partial in vectors of lane type T.
template <class D>
struct VecState {
  hn::Vec<D> a, b, c;
};

template <class D>
HWY_INLINE VecState<D> InitState(D d) {
  using T = hn::TFromD<D>;
  return {hn::Set(d, hwy::LimitsMax<T>()), hn::Set(d, hwy::LimitsMin<T>()),
          hn::Zero(d)};
}

// Folds a vector of bit patterns into the state.
template <FloatFormat F, bool kSkip, class D>
HWY_INLINE void Fold(D d, hn::Vec<D> bits, VecState<D>& s) {
  using T = typename KeyTraits<F>::T;
  if constexpr (kSkip) {
    // Negative non-finite keys stay out of the minimum, positive ones out
    // of the maximum (see FinishUnit).
    const auto k = Keys<F>(d, bits);
    const auto lo = hn::Set(d, static_cast<T>(KeyTraits<F>::kMinFinite));
    const auto hi = hn::Set(d, static_cast<T>(KeyTraits<F>::kMaxFinite));
    s.a = hn::Min(s.a, hn::IfThenElse(hn::Lt(k, lo),
                                      hn::Set(d, hwy::LimitsMax<T>()), k));
    s.b = hn::Max(s.b, hn::IfThenElse(hn::Gt(k, hi),
                                      hn::Set(d, hwy::LimitsMin<T>()), k));
  } else {
    const hn::RebindToUnsigned<D> du;
    s.a = hn::Min(s.a, bits);
    s.b = hn::Max(s.b, bits);
    s.c = hn::BitCast(d, hn::Max(hn::BitCast(du, s.c), hn::BitCast(du, bits)));
  }
}

// Folds four vectors of bit patterns into the state: combined pairwise
// first, so that one state (three registers) suffices at full throughput.
template <FloatFormat F, bool kSkip, class D>
HWY_INLINE void Fold4(D d, hn::Vec<D> v0, hn::Vec<D> v1, hn::Vec<D> v2,
                      hn::Vec<D> v3, VecState<D>& s) {
  using T = typename KeyTraits<F>::T;
  if constexpr (kSkip) {
    const auto lo = hn::Set(d, static_cast<T>(KeyTraits<F>::kMinFinite));
    const auto hi = hn::Set(d, static_cast<T>(KeyTraits<F>::kMaxFinite));
    const auto top = hn::Set(d, hwy::LimitsMax<T>());
    const auto bottom = hn::Set(d, hwy::LimitsMin<T>());
    const auto k0 = Keys<F>(d, v0), k1 = Keys<F>(d, v1);
    const auto k2 = Keys<F>(d, v2), k3 = Keys<F>(d, v3);
    const auto a01 = hn::Min(hn::IfThenElse(hn::Lt(k0, lo), top, k0),
                             hn::IfThenElse(hn::Lt(k1, lo), top, k1));
    const auto a23 = hn::Min(hn::IfThenElse(hn::Lt(k2, lo), top, k2),
                             hn::IfThenElse(hn::Lt(k3, lo), top, k3));
    s.a = hn::Min(s.a, hn::Min(a01, a23));
    const auto b01 = hn::Max(hn::IfThenElse(hn::Gt(k0, hi), bottom, k0),
                             hn::IfThenElse(hn::Gt(k1, hi), bottom, k1));
    const auto b23 = hn::Max(hn::IfThenElse(hn::Gt(k2, hi), bottom, k2),
                             hn::IfThenElse(hn::Gt(k3, hi), bottom, k3));
    s.b = hn::Max(s.b, hn::Max(b01, b23));
  } else {
    const hn::RebindToUnsigned<D> du;
    s.a = hn::Min(s.a, hn::Min(hn::Min(v0, v1), hn::Min(v2, v3)));
    s.b = hn::Max(s.b, hn::Max(hn::Max(v0, v1), hn::Max(v2, v3)));
    const auto u0 = hn::BitCast(du, v0), u1 = hn::BitCast(du, v1);
    const auto u2 = hn::BitCast(du, v2), u3 = hn::BitCast(du, v3);
    s.c = hn::BitCast(d, hn::Max(hn::BitCast(du, s.c),
                                 hn::Max(hn::Max(u0, u1), hn::Max(u2, u3))));
  }
}

// The unit loops prefetch the cache lines kPrefetchAhead elements (4 KiB of
// f32, 2 KiB of f16/bf16) beyond the kBytes bytes they are about to load:
// with many short units per row, or three reductions per vector, they keep
// too few loads in flight for the hardware prefetchers alone and wait on
// memory. The address is formed as an integer (it may lie past the data;
// a prefetch never faults).
constexpr size_t kPrefetchAhead = 1024;

template <size_t kBytes, class T>
HWY_INLINE void PrefetchAhead(const T* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p) + kPrefetchAhead * sizeof(T);
  for (size_t k = 0; k < kBytes; k += 64) {
    hwy::Prefetch(reinterpret_cast<const uint8_t*>(a + k));
  }
}

// Folds the n >= Lanes(d) elements at p into the state: four vectors per
// step with prefetching, then single vectors, then the last vector
// overlapping the previous one (re-reading elements is harmless for min/max).
template <FloatFormat F, bool kSkip, class D>
HWY_INLINE void FoldRun(D d, const typename KeyTraits<F>::T* HWY_RESTRICT p,
                        size_t n, VecState<D>& s) {
  using T = typename KeyTraits<F>::T;
  constexpr size_t kN = hn::MaxLanes(D());
  size_t i = 0;
  for (; i + 4 * kN <= n; i += 4 * kN) {
    PrefetchAhead<4 * kN * sizeof(T)>(p + i);
    Fold4<F, kSkip>(d, hn::LoadU(d, p + i), hn::LoadU(d, p + i + kN),
                    hn::LoadU(d, p + i + 2 * kN), hn::LoadU(d, p + i + 3 * kN),
                    s);
  }
  for (; i + kN <= n; i += kN) {
    PrefetchAhead<kN * sizeof(T)>(p + i);
    Fold<F, kSkip>(d, hn::LoadU(d, p + i), s);
  }
  if (i < n) Fold<F, kSkip>(d, hn::LoadU(d, p + n - kN), s);
}

template <FloatFormat F, bool kSkip>
HWY_INLINE void FoldScalar(typename KeyTraits<F>::T bits, Partial& p) {
  using T = typename KeyTraits<F>::T;
  using U = std::make_unsigned_t<T>;
  if constexpr (kSkip) {
    const int32_t k = ScalarKey<F>(bits);
    if (k >= KeyTraits<F>::kMinFinite) p.a = std::min(p.a, k);
    if (k <= KeyTraits<F>::kMaxFinite) p.b = std::max(p.b, k);
  } else {
    p.a = std::min<int32_t>(p.a, bits);
    p.b = std::max<int32_t>(p.b, bits);
    p.c = std::max<uint32_t>(p.c, static_cast<U>(bits));
  }
}

// Horizontal reductions of 16-bit lanes: fold to 128 bits with the lane
// operation, then one unsigned minimum of eight lanes (a single instruction,
// phminposuw, on SSE4 and later), with the values mapped so that the wanted
// extreme is the unsigned minimum (Highway's own 512-bit 16-bit reductions
// widen to 32 bits and cost three times as many instructions).
enum class Reduce16 { kSignedMin, kSignedMax, kUnsignedMax };

template <Reduce16 kOp, class D>
HWY_INLINE uint16_t Horizontal16(D d, hn::Vec<D> v) {
#if HWY_TARGET == HWY_SCALAR
  if constexpr (false) {
#else
  if constexpr (hn::MaxLanes(D()) > 8) {
    const hn::Half<D> dh;
    const auto lo = hn::LowerHalf(dh, v), hi = hn::UpperHalf(dh, v);
    if constexpr (kOp == Reduce16::kSignedMin) {
      return Horizontal16<kOp>(dh, hn::Min(lo, hi));
    } else if constexpr (kOp == Reduce16::kSignedMax) {
      return Horizontal16<kOp>(dh, hn::Max(lo, hi));
    } else {
      const hn::RebindToUnsigned<decltype(dh)> du;
      return Horizontal16<kOp>(
          dh, hn::BitCast(dh, hn::Max(hn::BitCast(du, lo), hn::BitCast(du, hi))));
    }
#endif
  } else {
    const hn::RebindToUnsigned<D> du;
    // Map so that the wanted extreme becomes the unsigned minimum.
    constexpr uint16_t kMap = kOp == Reduce16::kSignedMin   ? 0x8000
                              : kOp == Reduce16::kSignedMax ? 0x7FFF
                                                            : 0xFFFF;
    const auto u = hn::Xor(hn::BitCast(du, v), hn::Set(du, kMap));
    return static_cast<uint16_t>(hn::GetLane(hn::MinOfLanes(du, u)) ^ kMap);
  }
}

// Adds a vector state's lanes to a Partial.
template <bool kSkip, class D>
HWY_INLINE void Horizontal(D d, const VecState<D>& s, Partial& p) {
  using T = hn::TFromD<D>;
  if constexpr (sizeof(T) == 2) {
    p.a = std::min<int32_t>(
        p.a, static_cast<int16_t>(Horizontal16<Reduce16::kSignedMin>(d, s.a)));
    p.b = std::max<int32_t>(
        p.b, static_cast<int16_t>(Horizontal16<Reduce16::kSignedMax>(d, s.b)));
    if constexpr (!kSkip) {
      p.c = std::max<uint32_t>(p.c,
                               Horizontal16<Reduce16::kUnsignedMax>(d, s.c));
    }
  } else {
    p.a = std::min<int32_t>(p.a, hn::GetLane(hn::MinOfLanes(d, s.a)));
    p.b = std::max<int32_t>(p.b, hn::GetLane(hn::MaxOfLanes(d, s.b)));
    if constexpr (!kSkip) {
      const hn::RebindToUnsigned<D> du;
      p.c = std::max<uint32_t>(
          p.c, hn::GetLane(hn::MaxOfLanes(du, hn::BitCast(du, s.c))));
    }
  }
}

#if HWY_TARGET != HWY_SCALAR
// Batched horizontal reductions: the states of kBatch = 16 / sizeof(T) units
// (one 128-bit block's worth of lanes) are reduced together by a transpose
// tree: at each level, pairs of vectors are interleaved at twice the
// previous width and combined, halving the vectors and the lanes per unit;
// after log2(kBatch) levels lane u of each 128-bit block holds unit u's
// partial result, and folding the blocks finishes all kBatch units at once.
// About 3 instructions per unit and reduction instead of ~8.
enum class LaneOp { kMin, kMax, kUMax };

template <LaneOp kOp, class D>
HWY_INLINE hn::Vec<D> ApplyOp(D d, hn::Vec<D> x, hn::Vec<D> y) {
  if constexpr (kOp == LaneOp::kMin) {
    return hn::Min(x, y);
  } else if constexpr (kOp == LaneOp::kMax) {
    return hn::Max(x, y);
  } else {
    const hn::RebindToUnsigned<D> du;
    return hn::BitCast(d, hn::Max(hn::BitCast(du, x), hn::BitCast(du, y)));
  }
}

template <LaneOp kOp, size_t kWidth, size_t kCount, class D>
HWY_INLINE void TransposeLevels(D d, hn::Vec<D>* v) {
  if constexpr (kCount > 1) {
    using TW = hwy::SignedFromSize<kWidth>;
    const hn::Repartition<TW, D> dw;
    for (size_t i = 0; i < kCount / 2; ++i) {
      const auto x = hn::BitCast(dw, v[2 * i]);
      const auto y = hn::BitCast(dw, v[2 * i + 1]);
      v[i] = ApplyOp<kOp>(d, hn::BitCast(d, hn::InterleaveLower(dw, x, y)),
                          hn::BitCast(d, hn::InterleaveUpper(dw, x, y)));
    }
    TransposeLevels<kOp, kWidth * 2, kCount / 2>(d, v);
  }
}

// Reduces v[0 .. kBatch) (destroyed); writes unit u's result to out[u].
template <LaneOp kOp, class D>
HWY_INLINE void BatchReduce(D d, hn::Vec<D>* v, hn::TFromD<D>* out) {
  using T = hn::TFromD<D>;
  constexpr size_t kBatch = 16 / sizeof(T);
  TransposeLevels<kOp, sizeof(T), kBatch>(d, v);
  auto r = v[0];
  if constexpr (hn::MaxLanes(D()) * sizeof(T) > 32) {  // 512 -> 256 bits
    const hn::Half<D> dh;
    const auto h = ApplyOp<kOp>(dh, hn::LowerHalf(dh, r), hn::UpperHalf(dh, r));
    const hn::Half<decltype(dh)> dq;
    const auto q = ApplyOp<kOp>(dq, hn::LowerHalf(dq, h), hn::UpperHalf(dq, h));
    hn::StoreU(q, dq, out);
  } else if constexpr (hn::MaxLanes(D()) * sizeof(T) > 16) {  // 256 bits
    const hn::Half<D> dh;
    const auto h = ApplyOp<kOp>(dh, hn::LowerHalf(dh, r), hn::UpperHalf(dh, r));
    hn::StoreU(h, dh, out);
  } else {
    hn::StoreU(r, d, out);
  }
}

// Units [j0, j0 + kBatch) of one row, every one at least a vector long:
// unit u's reductions go to ra[u], rb[u] and (kError) rc[u] (see Partial).
template <FloatFormat F, bool kSkip, class D>
HWY_INLINE void ReduceBatch(D d, const typename KeyTraits<F>::T* HWY_RESTRICT row,
                            const TileGrid& g, int64_t j0,
                            typename KeyTraits<F>::T* HWY_RESTRICT ra,
                            typename KeyTraits<F>::T* HWY_RESTRICT rb,
                            typename KeyTraits<F>::T* HWY_RESTRICT rc) {
  using T = typename KeyTraits<F>::T;
  constexpr size_t kN = hn::MaxLanes(D());
  constexpr size_t kBatch = 16 / sizeof(T);
  hn::Vec<D> va[kBatch], vb[kBatch], vc[kBatch];
  for (size_t u = 0; u < kBatch; ++u) {
    const int64_t c0 = g.col_begin(j0 + u);
    const size_t n = static_cast<size_t>(g.col_end(j0 + u) - c0);
    const T* p = row + c0;
    VecState<D> s = InitState(d);
    FoldRun<F, kSkip>(d, p, n, s);
    va[u] = s.a;
    vb[u] = s.b;
    vc[u] = s.c;
  }
  BatchReduce<LaneOp::kMin>(d, va, ra);
  BatchReduce<LaneOp::kMax>(d, vb, rb);
  if constexpr (!kSkip) BatchReduce<LaneOp::kUMax>(d, vc, rc);
}

// ReduceBatch's reductions as the units' Partials.
template <FloatFormat F, bool kSkip>
HWY_INLINE void StorePartials(const typename KeyTraits<F>::T* HWY_RESTRICT ra,
                              const typename KeyTraits<F>::T* HWY_RESTRICT rb,
                              const typename KeyTraits<F>::T* HWY_RESTRICT rc,
                              Partial* out) {
  using T = typename KeyTraits<F>::T;
  using U = std::make_unsigned_t<T>;
  constexpr size_t kBatch = 16 / sizeof(T);
  for (size_t u = 0; u < kBatch; ++u) {
    out[u].a = ra[u];
    out[u].b = rb[u];
    out[u].c = kSkip ? 0u : static_cast<U>(rc[u]);
  }
}
#endif  // HWY_TARGET != HWY_SCALAR

// Reduces n elements at p into the Partial. Uses vectors of D when
// n >= Lanes(D) (the last vector overlapping the previous one: re-reading
// elements is harmless for min/max), smaller vectors for shorter runs,
// scalars below 4 lanes.
template <FloatFormat F, bool kSkip, class D>
HWY_INLINE void ReduceRun(D d, const typename KeyTraits<F>::T* HWY_RESTRICT p,
                          size_t n, Partial& out) {
  constexpr size_t kN = hn::MaxLanes(D());
  if (n >= kN) {
    VecState<D> s0 = InitState(d);
    FoldRun<F, kSkip>(d, p, n, s0);
    Horizontal<kSkip>(d, s0, out);
    return;
  }
  if constexpr (kN / 2 >= 4) {
    ReduceRun<F, kSkip>(hn::Half<D>(), p, n, out);
  } else {
    for (size_t i = 0; i < n; ++i) FoldScalar<F, kSkip>(p[i], out);
  }
}

// Adds n >= Lanes(d) elements at p to a vector state kept in memory (for
// units that span several rows: one horizontal reduction per unit, not per
// row). `state` holds the three vectors a, b, c.
template <FloatFormat F, bool kSkip, class D>
HWY_INLINE void AccumulateRun(D d, const typename KeyTraits<F>::T* HWY_RESTRICT p,
                              size_t n, typename KeyTraits<F>::T* state) {
  constexpr size_t kN = hn::MaxLanes(D());
  VecState<D> s{hn::Load(d, state), hn::Load(d, state + kN),
                hn::Load(d, state + 2 * kN)};
  FoldRun<F, kSkip>(d, p, n, s);
  hn::Store(s.a, d, state);
  hn::Store(s.b, d, state + kN);
  hn::Store(s.c, d, state + 2 * kN);
}

// Decodes a float's bit pattern (sign-extended int32 for 16-bit formats).
template <FloatFormat F>
HWY_INLINE float BitsToValue(uint32_t bits) {
  if constexpr (F == FloatFormat::kF32) {
    return BitsToFloat(bits);
  } else if constexpr (F == FloatFormat::kBF16) {
    return Bf16BitsToFloat(static_cast<uint16_t>(bits));
  } else {
    return F16BitsToFloat(static_cast<uint16_t>(bits));
  }
}

// The bit pattern of the first zero (+0 or -0) of unit u in flat order.
// The reductions order -0 below +0, but the reference reports, of equal
// extremes, the first one met; so a zero minimum or maximum takes the sign of
// the unit's first zero (a scan that stops there; rare for weights, cheap
// for ReLU activations, whose zeros come early).
template <FloatFormat F>
uint32_t FirstZeroBits(const MinMaxJob& job, int64_t u) {
  using T = typename KeyTraits<F>::T;
  using U = std::make_unsigned_t<T>;
  const hn::ScalableTag<T> d;
  const int64_t kN = static_cast<int64_t>(hn::Lanes(d));
  const TileGrid& g = job.grid;
  const int64_t ti = u / g.grid_cols(), tj = u % g.grid_cols();
  const int64_t c0 = g.col_begin(tj), n = g.col_end(tj) - c0;
  const auto mag = hn::Set(d, static_cast<T>(KeyTraits<F>::kMagnitude));
  for (int64_t r = g.row_begin(ti); r < g.row_end(ti); ++r) {
    const T* p = static_cast<const T*>(job.data) + r * g.cols + c0;
    int64_t i = 0;
    for (; i + kN <= n; i += kN) {
      const auto zero = hn::Eq(hn::And(hn::LoadU(d, p + i), mag), hn::Zero(d));
      if (!hn::AllFalse(d, zero)) {
        return static_cast<U>(p[i + hn::FindFirstTrue(d, zero)]);
      }
    }
    for (; i < n; ++i) {
      if ((p[i] & KeyTraits<F>::kMagnitude) == 0) return static_cast<U>(p[i]);
    }
  }
  return 0;  // not reached: a zero extreme implies a zero element
}

// Writes a unit's result. With kSkip, a unit without finite values has a
// minimum key beyond the largest finite key and gets min = max = 0. With
// kError, bit patterns beyond the finite range flag a non-finite value.
template <FloatFormat F, bool kSkip>
HWY_INLINE void FinishUnit(const MinMaxJob& job, int64_t u, const Partial& r,
                           std::atomic<bool>& saw_nonfinite) {
  constexpr uint32_t kMag = static_cast<uint32_t>(KeyTraits<F>::kMagnitude);
  uint32_t min_bits, max_bits;
  if constexpr (kSkip) {
    if (r.a > KeyTraits<F>::kMaxFinite) {
      job.out_min[u] = 0.0f;
      job.out_max[u] = 0.0f;
      return;
    }
    min_bits = static_cast<uint32_t>(r.a) ^ (r.a < 0 ? kMag : 0u);
    max_bits = static_cast<uint32_t>(r.b) ^ (r.b < 0 ? kMag : 0u);
  } else {
    using U = std::make_unsigned_t<typename KeyTraits<F>::T>;
    constexpr uint32_t kSign = static_cast<uint32_t>(
        std::numeric_limits<U>::max() ^ static_cast<U>(KeyTraits<F>::kMagnitude));
    constexpr uint32_t kExp = static_cast<uint32_t>(KeyTraits<F>::kExponent);
    if (r.b >= KeyTraits<F>::kExponent || r.c >= (kSign | kExp)) {
      saw_nonfinite.store(true, std::memory_order_relaxed);
    }
    min_bits = r.c >= kSign ? r.c : static_cast<uint32_t>(r.a);
    max_bits =
        r.b >= 0 ? static_cast<uint32_t>(r.b) : static_cast<uint32_t>(r.a);
  }
  // Bits are sign-extended for 16-bit formats; compare magnitudes only.
  if ((min_bits & kMag) == 0 || (max_bits & kMag) == 0) {
    const uint32_t first_zero = FirstZeroBits<F>(job, u);
    if ((min_bits & kMag) == 0) min_bits = first_zero;
    if ((max_bits & kMag) == 0) max_bits = first_zero;
  }
  job.out_min[u] = BitsToValue<F>(min_bits);
  job.out_max[u] = BitsToValue<F>(max_bits);
}

#if HWY_TARGET != HWY_SCALAR
// Widens 128 bits of bit patterns of F (as KeyTraits<F>::T) to float32 and
// stores them at out (16 / sizeof(T) values), as BitsToValue<F> does.
template <FloatFormat F>
HWY_INLINE void StoreValues(hn::Vec<hn::Full128<typename KeyTraits<F>::T>> v,
                            float* HWY_RESTRICT out) {
  using T = typename KeyTraits<F>::T;
  const hn::Full128<float> df;
  if constexpr (F == FloatFormat::kF32) {
    hn::StoreU(hn::BitCast(df, v), df, out);
  } else {
    const hn::Full128<uint16_t> d16;
    const hn::Full64<uint16_t> dh;
    const hn::Full128<uint32_t> d32;
    const auto u = hn::BitCast(d16, v);
    const auto lo = hn::PromoteTo(d32, hn::LowerHalf(dh, u));
    const auto hi = hn::PromoteTo(d32, hn::UpperHalf(dh, u));
    static_assert(sizeof(T) == 2, "16-bit formats");
    if constexpr (F == FloatFormat::kBF16) {
      hn::StoreU(hn::BitCast(df, hn::ShiftLeft<16>(lo)), df, out);
      hn::StoreU(hn::BitCast(df, hn::ShiftLeft<16>(hi)), df, out + 4);
    } else {
      hn::StoreU(simd::F16ToF32V(df, lo), df, out);
      hn::StoreU(simd::F16ToF32V(df, hi), df, out + 4);
    }
  }
}

// FinishUnit (kError) of units [u0, u0 + 16 / sizeof(T)) from ReduceBatch's
// reductions, lane by lane the same selections and conversions. Returns
// false, writing nothing, if an extreme is a zero (whose sign FinishUnit
// looks up); the caller then finishes those units one by one.
template <FloatFormat F>
HWY_INLINE bool FinishBatch(const MinMaxJob& job, int64_t u0,
                            const typename KeyTraits<F>::T* HWY_RESTRICT ra,
                            const typename KeyTraits<F>::T* HWY_RESTRICT rb,
                            const typename KeyTraits<F>::T* HWY_RESTRICT rc,
                            std::atomic<bool>& saw_nonfinite) {
  using T = typename KeyTraits<F>::T;
  using U = std::make_unsigned_t<T>;
  const hn::Full128<T> d;
  const auto a = hn::Load(d, ra), b = hn::Load(d, rb), c = hn::Load(d, rc);
  const auto zero = hn::Zero(d);
  // Sign and exponent all ones, as T (negative): c (unsigned) reaches it
  // exactly when c, as T, lies in [kSignExp, 0).
  const T kSignExp = static_cast<T>(static_cast<U>(
      std::numeric_limits<U>::max() ^
      static_cast<U>(KeyTraits<F>::kMagnitude ^ KeyTraits<F>::kExponent)));
  const auto bad = hn::Or(
      hn::Gt(b, hn::Set(d, static_cast<T>(KeyTraits<F>::kExponent - 1))),
      hn::And(hn::Gt(c, hn::Set(d, static_cast<T>(kSignExp - 1))),
              hn::Lt(c, zero)));
  const auto min_bits = hn::IfThenElse(hn::Lt(c, zero), c, a);
  const auto max_bits = hn::IfThenElse(hn::Lt(b, zero), a, b);
  const auto mag = hn::Set(d, static_cast<T>(KeyTraits<F>::kMagnitude));
  if (!hn::AllFalse(d, hn::Or(hn::Eq(hn::And(min_bits, mag), zero),
                              hn::Eq(hn::And(max_bits, mag), zero)))) {
    return false;
  }
  if (!hn::AllFalse(d, bad)) {
    saw_nonfinite.store(true, std::memory_order_relaxed);
  }
  StoreValues<F>(min_bits, job.out_min + u0);
  StoreValues<F>(max_bits, job.out_max + u0);
  return true;
}
#endif  // HWY_TARGET != HWY_SCALAR

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
void MinMaxImpl(const MinMaxJob& job);

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
                      Partial r;
                      ReduceRun<F, kSkip>(d, data + a, b - a, r);
                      FinishUnit<F, kSkip>(job, ti, r, saw_nonfinite);
                    }
                  });
    } else {
      std::vector<Partial> parts(gr * pieces);
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
        Partial r;
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
    std::vector<Partial> parts(splits > 1 ? gr * splits * gc : 0);
    // Reduces rows [ra, rb) of tile row ti into out[0 .. gc).
    // With finish_u0 >= 0 (rows of whole units: the first is unit
    // finish_u0), units of full batches may be finished here (kError);
    // returns how many leading units were, whose out[] stays unset.
    auto reduce_rows = [&](int64_t ra, int64_t rb, Partial* out,
                           hwy::AlignedFreeUniquePtr<T[]>& acc,
                           int64_t finish_u0) -> int64_t {
      for (int64_t j = 0; j < gc; ++j) out[j] = Partial();
      int64_t finished = 0;
      if (rb - ra == 1) {
        const T* row = data + ra * g.cols;
        int64_t j = 0;
#if HWY_TARGET != HWY_SCALAR
        // Full-width units in batches (all but a short last group).
        constexpr int64_t kBatch = 16 / sizeof(T);
        const int64_t full_units =
            g.tile_cols >= static_cast<int64_t>(kN) ? g.cols / g.tile_cols : 0;
        HWY_ALIGN T ba[kBatch], bb[kBatch], bc[kBatch];
        for (; j + kBatch <= full_units; j += kBatch) {
          ReduceBatch<F, kSkip>(d, row, g, j, ba, bb, bc);
          if constexpr (!kSkip) {
            if (finish_u0 >= 0 && finished == j &&
                FinishBatch<F>(job, finish_u0 + j, ba, bb, bc,
                               saw_nonfinite)) {
              finished = j + kBatch;
              continue;
            }
          }
          StorePartials<F, kSkip>(ba, bb, bc, out + j);
        }
#endif
        for (; j < gc; ++j) {
          ReduceRun<F, kSkip>(d, row + g.col_begin(j),
                              g.col_end(j) - g.col_begin(j), out[j]);
        }
        return finished;
      }
      // Vector states per tile column: one horizontal reduction per unit at
      // the end instead of one per row.
      if (!acc) acc = hwy::AllocateAligned<T>(3 * kN * gc);
      const VecState<hn::ScalableTag<T>> init = InitState(d);
      for (int64_t j = 0; j < gc; ++j) {
        hn::Store(init.a, d, acc.get() + 3 * kN * j);
        hn::Store(init.b, d, acc.get() + 3 * kN * j + kN);
        hn::Store(init.c, d, acc.get() + 3 * kN * j + 2 * kN);
      }
      for (int64_t r = ra; r < rb; ++r) {
        const T* row = data + r * g.cols;
        for (int64_t j = 0; j < gc; ++j) {
          const int64_t c0 = g.col_begin(j), n = g.col_end(j) - c0;
          if (n >= static_cast<int64_t>(kN)) {
            AccumulateRun<F, kSkip>(d, row + c0, n, acc.get() + 3 * kN * j);
          } else {
            ReduceRun<F, kSkip>(d, row + c0, n, out[j]);
          }
        }
      }
      for (int64_t j = 0; j < gc; ++j) {
        const T* st = acc.get() + 3 * kN * j;
        Horizontal<kSkip>(d,
                          VecState<hn::ScalableTag<T>>{hn::Load(d, st),
                                                hn::Load(d, st + kN),
                                                hn::Load(d, st + 2 * kN)},
                          out[j]);
      }
      return 0;
    };
    const int64_t row_len = split_rows * g.cols;
    const int64_t min_chunk =
        std::max<int64_t>(1, kMinPiece / std::max<int64_t>(1, row_len));
    ParallelFor(gr * splits, job.threads, min_chunk,
                [&](int64_t begin, int64_t end) {
                  hwy::AlignedFreeUniquePtr<T[]> acc(nullptr,
                                                     hwy::AlignedFreer());
                  std::vector<Partial> local(splits == 1 ? gc : 0);
                  for (int64_t it = begin; it < end; ++it) {
                    const int64_t ti = it / splits, si = it % splits;
                    const int64_t ra = std::min(
                        g.row_end(ti), g.row_begin(ti) + si * split_rows);
                    const int64_t rb = std::min(g.row_end(ti), ra + split_rows);
                    if (splits == 1) {
                      const int64_t finished =
                          reduce_rows(ra, rb, local.data(), acc, ti * gc);
                      for (int64_t j = finished; j < gc; ++j) {
                        FinishUnit<F, kSkip>(job, ti * gc + j, local[j],
                                             saw_nonfinite);
                      }
                    } else {
                      reduce_rows(ra, rb, parts.data() + it * gc, acc, -1);
                    }
                  }
                });
    if (splits > 1) {
      for (int64_t ti = 0; ti < gr; ++ti) {
        for (int64_t j = 0; j < gc; ++j) {
          Partial r;
          for (int64_t si = 0; si < splits; ++si) {
            r.Merge(parts[(ti * splits + si) * gc + j]);
          }
          FinishUnit<F, kSkip>(job, ti * gc + j, r, saw_nonfinite);
        }
      }
    }
  }
  if constexpr (!kSkip) {
    if (saw_nonfinite.load()) {
      // Like the reference, report the minima and maxima of the finite
      // values (the observers turn this case into an error anyway): redo the
      // reductions skipping non-finite values.
      MinMaxJob skipping = job;
      skipping.skip_nonfinite = true;
      skipping.first_nonfinite = nullptr;
      MinMaxImpl<F, true>(skipping);
      if (job.first_nonfinite != nullptr) {
        *job.first_nonfinite = FindFirstNonFinite<F>(job);
      }
      return;
    }
  }
  if (job.first_nonfinite != nullptr) *job.first_nonfinite = -1;
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

// The dispatch happens inside this namespace: with a single compiled target
// HWY_DYNAMIC_DISPATCH(F) is the unqualified N_<TARGET>::F.
void DispatchMinMax(const MinMaxJob& job) {
  HWY_DYNAMIC_DISPATCH(MinMaxTarget)(job);
}
int64_t DispatchTargetOfThisCode() {
  return HWY_DYNAMIC_DISPATCH(TargetOfThisCode)();
}

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
  internal_cpu::DispatchMinMax(job);
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
  return internal_cpu::DispatchTargetOfThisCode();
}

ScopedSimdTarget::ScopedSimdTarget(int64_t target) {
  hwy::SetSupportedTargetsForTest(target);
}

ScopedSimdTarget::~ScopedSimdTarget() { hwy::SetSupportedTargetsForTest(0); }

}  // namespace qcal
#endif  // HWY_ONCE
