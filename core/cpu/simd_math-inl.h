// Vector forms of the scalar math in core/quant_math.h and
// core/float_convert.h, for the Highway kernels of core/cpu/. Included once
// per SIMD target (Highway's foreach_target mechanism), hence no ordinary
// include guard.
//
// Each function produces, lane by lane, exactly the bits of its scalar
// counterpart for the inputs the kernels give it (stated per function): the
// same IEEE-754 operations in the same order, never a fused multiply-add
// (files including this are compiled with -ffp-contract=off, and only
// explicit Mul/Add/Sub/Div are used), and bit manipulation for the roundings
// to narrow formats.

#if defined(QCAL_CORE_CPU_SIMD_MATH_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QCAL_CORE_CPU_SIMD_MATH_INL_H_
#undef QCAL_CORE_CPU_SIMD_MATH_INL_H_
#else
#define QCAL_CORE_CPU_SIMD_MATH_INL_H_
#endif

#include <cstdint>
#include <utility>

#include "core/quant_math.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace qcal {
namespace HWY_NAMESPACE {
namespace simd {

namespace hn = hwy::HWY_NAMESPACE;

// ------------------------------------------------------ narrow formats

// RoundBf16V is RoundToBf16 for every input except NaN, which stays a NaN
// (possibly of another sign or payload; the kernels only compare NaN-ness).
template <class DF>
HWY_INLINE hn::Vec<DF> RoundBf16V(DF df, hn::Vec<DF> v) {
  const hn::RebindToUnsigned<DF> du;
  auto u = hn::BitCast(du, v);
  // Round the discarded 16 bits to nearest, ties to even; a carry into the
  // exponent is the correct result (up to overflow to infinity).
  const auto lsb = hn::And(hn::ShiftRight<16>(u), hn::Set(du, 1u));
  u = hn::Add(u, hn::Add(hn::Set(du, 0x7FFFu), lsb));
  return hn::BitCast(df, hn::And(u, hn::Set(du, 0xFFFF0000u)));
}

// RoundF16V is RoundToF16, bit for bit, for every input.
template <class DF>
HWY_INLINE hn::Vec<DF> RoundF16V(DF df, hn::Vec<DF> v) {
  const hn::RebindToUnsigned<DF> du;
  const auto u = hn::BitCast(du, v);
  const auto sign = hn::And(u, hn::Set(du, 0x80000000u));
  const auto a = hn::And(u, hn::Set(du, 0x7FFFFFFFu));
  // Normal half range: round the 13 discarded bits to nearest even.
  const auto lsb = hn::And(hn::ShiftRight<13>(a), hn::Set(du, 1u));
  const auto normal = hn::And(hn::Add(a, hn::Add(hn::Set(du, 0xFFFu), lsb)),
                              hn::Set(du, 0xFFFFE000u));
  // Subnormal half range (|v| < 2^-14): a multiple of 2^-24, nearest even.
  // Adding 0.5 (whose ulp is 2^-24) rounds exactly so; subtracting is exact.
  const auto half = hn::Set(df, 0.5f);
  const auto sub = hn::BitCast(
      du, hn::Sub(hn::Add(hn::BitCast(df, a), half), half));
  // Magnitudes compare as signed integers (x86 has no unsigned compares).
  const hn::RebindToSigned<DF> di;
  const auto ai = hn::BitCast(di, a);
  auto r = hn::IfThenElse(hn::RebindMask(du, hn::Lt(ai, hn::Set(di, 0x38800000))),
                          sub, normal);
  // >= 65520 (including infinity) becomes infinity; NaN the quiet NaN
  // 0x7E00 widened (0x7FC00000) with the sign kept.
  r = hn::IfThenElse(hn::RebindMask(du, hn::Gt(ai, hn::Set(di, 0x477FEFFF))),
                     hn::Set(du, 0x7F800000u), r);
  r = hn::IfThenElse(hn::RebindMask(du, hn::Gt(ai, hn::Set(di, 0x7F800000))),
                     hn::Set(du, 0x7FC00000u), r);
  return hn::BitCast(df, hn::Or(r, sign));
}

// RoundV<F> is Round<F> (see RoundBf16V for NaN inputs).
template <FloatFormat F, class DF>
HWY_INLINE hn::Vec<DF> RoundV(DF df, hn::Vec<DF> v) {
  if constexpr (F == FloatFormat::kF32) {
    return v;
  } else if constexpr (F == FloatFormat::kF16) {
    return RoundF16V(df, v);
  } else {
    return RoundBf16V(df, v);
  }
}

// F16ToF32V widens IEEE half bit patterns (in 32-bit lanes) to float32,
// exactly as F16BitsToFloat (subnormals, infinities and NaN payloads).
template <class DF>
HWY_INLINE hn::Vec<DF> F16ToF32V(DF df, hn::Vec<hn::RebindToUnsigned<DF>> h) {
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const auto sign = hn::ShiftLeft<16>(hn::And(h, hn::Set(du, 0x8000u)));
  const auto exp = hn::And(hn::ShiftRight<10>(h), hn::Set(du, 0x1Fu));
  const auto mant = hn::And(h, hn::Set(du, 0x3FFu));
  const auto normal = hn::Or(hn::ShiftLeft<23>(hn::Add(exp, hn::Set(du, 112u))),
                             hn::ShiftLeft<13>(mant));
  const auto special =
      hn::Or(hn::Set(du, 0x7F800000u), hn::ShiftLeft<13>(mant));
  // mant * 2^-24: an exact product (mant < 2^10).
  const auto sub = hn::BitCast(
      du, hn::Mul(hn::ConvertTo(df, hn::BitCast(di, mant)),
                  hn::Set(df, 5.9604644775390625e-08f)));
  auto r = hn::IfThenElse(hn::Eq(exp, hn::Set(du, 31u)), special, normal);
  r = hn::IfThenElse(hn::Eq(exp, hn::Zero(du)), sub, r);
  return hn::BitCast(df, hn::Or(r, sign));
}

// LoadF32V loads Lanes(df) consecutive elements of format F as float32.
template <FloatFormat F, class DF>
HWY_INLINE hn::Vec<DF> LoadF32V(DF df, const void* base, int64_t index) {
  if constexpr (F == FloatFormat::kF32) {
    return hn::LoadU(df, static_cast<const float*>(base) + index);
  } else {
    const hn::Rebind<uint16_t, DF> du16;
    const hn::RebindToUnsigned<DF> du;
    const auto h = hn::PromoteTo(
        du, hn::LoadU(du16, static_cast<const uint16_t*>(base) + index));
    if constexpr (F == FloatFormat::kBF16) {
      return hn::BitCast(df, hn::ShiftLeft<16>(h));
    } else {
      return F16ToF32V(df, h);
    }
  }
}

// ---------------------------------------------------- quantization grids

// E4m3V is RoundToE4m3fn for |v| <= 448 (what fake quantization feeds it
// after clamping), bit for bit.
template <class DF>
HWY_INLINE hn::Vec<DF> E4m3V(DF df, hn::Vec<DF> v) {
  const hn::RebindToUnsigned<DF> du;
  const auto u = hn::BitCast(du, v);
  const auto sign = hn::And(u, hn::Set(du, 0x80000000u));
  const auto a = hn::And(u, hn::Set(du, 0x7FFFFFFFu));
  // Normal range (>= 2^-6): keep 3 mantissa bits, nearest even.
  const auto lsb = hn::And(hn::ShiftRight<20>(a), hn::Set(du, 1u));
  const auto normal = hn::And(hn::Add(a, hn::Add(hn::Set(du, 0x7FFFFu), lsb)),
                              hn::Set(du, 0xFFF00000u));
  // Subnormal range: a multiple of 2^-9, nearest even (2^14 has ulp 2^-9).
  const auto big = hn::Set(df, 16384.0f);
  const auto sub =
      hn::BitCast(du, hn::Sub(hn::Add(hn::BitCast(df, a), big), big));
  const hn::RebindToSigned<DF> di;
  const auto r = hn::IfThenElse(
      hn::RebindMask(du, hn::Lt(hn::BitCast(di, a), hn::Set(di, 0x3C800000))),
      sub, normal);
  return hn::BitCast(df, hn::Or(r, sign));
}

// Fp4V is Fp4Round, bit for bit, for non-NaN inputs.
template <class DF>
HWY_INLINE hn::Vec<DF> Fp4V(DF df, hn::Vec<DF> x) {
  // The table's values and ties are those of rounding |x| to nearest, ties
  // to even, on a grid of spacing 1/2 below 2, 1 below 4 and 2 above, then
  // capping at 6: round(|x| k) / k with k = 2, 1, 1/2 (all steps exact).
  const auto a = hn::Abs(x);
  const auto below2 = hn::Lt(a, hn::Set(df, 2.0f));
  const auto below4 = hn::Lt(a, hn::Set(df, 4.0f));
  const auto k = hn::IfThenElse(
      below2, hn::Set(df, 2.0f),
      hn::IfThenElse(below4, hn::Set(df, 1.0f), hn::Set(df, 0.5f)));
  const auto k_inv = hn::IfThenElse(
      below2, hn::Set(df, 0.5f),
      hn::IfThenElse(below4, hn::Set(df, 1.0f), hn::Set(df, 2.0f)));
  const auto q = hn::Min(hn::Mul(hn::Round(hn::Mul(a, k)), k_inv),
                         hn::Set(df, 6.0f));
  // -q for x < 0, q for x > 0, +0 for zeros (torch.sign(0) = 0).
  const auto zero = hn::Zero(df);
  return hn::IfThenElse(hn::Lt(x, zero), hn::Neg(q),
                        hn::IfThenElseZero(hn::Gt(x, zero), q));
}

// GridV<K> is RoundToQuantGrid for kind K.
template <QuantKind K, class DF>
HWY_INLINE hn::Vec<DF> GridV(DF df, hn::Vec<DF> q) {
  if constexpr (K == QuantKind::kFp8) {
    return E4m3V(df, q);
  } else if constexpr (K == QuantKind::kFp4) {
    return Fp4V(df, q);
  } else {
    return hn::Round(q);  // nearest, ties to even (as std::nearbyint)
  }
}

// ------------------------------------------------------------------ pow

// PowPositiveV is PowPositive on doubles that hold float32 values, with the
// double result before its final rounding to float32 (which the caller does
// with DemoteTo, as static_cast<float> does). Every special case of the
// scalar function is reproduced: 0 -> 0, NaN -> NaN, inf -> inf, and the
// y > 200 / y < -200 cut-offs.
template <class DD>
HWY_INLINE hn::Vec<DD> PowPositiveV(DD dd, hn::Vec<DD> x, hn::Vec<DD> ed) {
  const hn::RebindToUnsigned<DD> du;
  const auto bits = hn::BitCast(du, x);
  // k = biased exponent - 1023, as an exact double: the exponent field e
  // placed in the low mantissa bits of 2^52 gives 2^52 + e, minus
  // 2^52 + 1023.
  const auto efield =
      hn::And(hn::ShiftRight<52>(bits), hn::Set(du, uint64_t{0x7FF}));
  auto k = hn::Sub(
      hn::BitCast(dd, hn::Or(efield, hn::Set(du, uint64_t{0x4330000000000000}))),
      hn::Set(dd, 4503599627371519.0));  // 2^52 + 1023
  auto m = hn::BitCast(
      dd, hn::Or(hn::And(bits, hn::Set(du, uint64_t{0x000FFFFFFFFFFFFF})),
                 hn::Set(du, uint64_t{0x3FF0000000000000})));
  const auto big = hn::Gt(m, hn::Set(dd, 1.4142135623730951));
  m = hn::IfThenElse(big, hn::Mul(m, hn::Set(dd, 0.5)), m);
  k = hn::IfThenElse(big, hn::Add(k, hn::Set(dd, 1.0)), k);
  const auto one = hn::Set(dd, 1.0);
  const auto t = hn::Div(hn::Sub(m, one), hn::Add(m, one));
  const auto t2 = hn::Mul(t, t);
  auto series = hn::Set(dd, 1.0 / 11.0);
  series = hn::Add(hn::Mul(series, t2), hn::Set(dd, 1.0 / 9.0));
  series = hn::Add(hn::Mul(series, t2), hn::Set(dd, 1.0 / 7.0));
  series = hn::Add(hn::Mul(series, t2), hn::Set(dd, 1.0 / 5.0));
  series = hn::Add(hn::Mul(series, t2), hn::Set(dd, 1.0 / 3.0));
  series = hn::Add(hn::Mul(series, t2), one);
  const auto ln_m = hn::Mul(hn::Mul(hn::Set(dd, 2.0), t), series);
  const auto y =
      hn::Add(hn::Mul(ed, k),
              hn::Mul(ed, hn::Mul(ln_m, hn::Set(dd, 1.4426950408889634))));
  const auto n = hn::Round(y);  // nearest, ties to even (std::nearbyint)
  const auto f = hn::Mul(hn::Sub(y, n), hn::Set(dd, 0.6931471805599453));
  auto p = hn::Set(dd, 1.0 / 3628800.0);
  p = hn::Add(hn::Mul(p, f), hn::Set(dd, 1.0 / 362880.0));
  p = hn::Add(hn::Mul(p, f), hn::Set(dd, 1.0 / 40320.0));
  p = hn::Add(hn::Mul(p, f), hn::Set(dd, 1.0 / 5040.0));
  p = hn::Add(hn::Mul(p, f), hn::Set(dd, 1.0 / 720.0));
  p = hn::Add(hn::Mul(p, f), hn::Set(dd, 1.0 / 120.0));
  p = hn::Add(hn::Mul(p, f), hn::Set(dd, 1.0 / 24.0));
  p = hn::Add(hn::Mul(p, f), hn::Set(dd, 1.0 / 6.0));
  p = hn::Add(hn::Mul(p, f), hn::Set(dd, 0.5));
  p = hn::Add(hn::Mul(p, f), one);
  p = hn::Add(hn::Mul(p, f), one);
  // 2^n from its bits: n + 2^52 + 1023 is exact and holds n + 1023 in its
  // low mantissa bits (|n| <= 200 wherever the result is used); shifting
  // left by 52 moves them into the exponent field and drops the rest.
  const auto scale = hn::BitCast(
      dd, hn::ShiftLeft<52>(hn::BitCast(
              du, hn::Add(n, hn::Set(dd, 4503599627371519.0)))));
  auto r = hn::Mul(p, scale);
  const auto inf = hn::Set(dd, HUGE_VAL);
  const auto zero = hn::Zero(dd);
  r = hn::IfThenElse(hn::Gt(y, hn::Set(dd, 200.0)), inf, r);
  r = hn::IfThenElse(hn::Lt(y, hn::Set(dd, -200.0)), zero, r);
  r = hn::IfThenElse(hn::Eq(x, inf), inf, r);
  // !(a > 0): a == 0 gives +0, NaN gives itself.
  return hn::IfThenElse(hn::Gt(x, zero), r,
                        hn::IfThenZeroElse(hn::Eq(x, zero), x));
}

// ApproxPowArgsV are ApproxPowV's per-exponent constants (see
// internal_cpu::SetApproxPow): p_hi is p with its 12 low mantissa bits
// cleared (so p_hi * k is exact for |k| <= 152), p_lo = p - p_hi, and
// log[i] = float(p * 2 / ln 2 / (2 i + 1)), the series of p log2 m.
template <class DF>
struct ApproxPowArgsV {
  hn::Vec<DF> p_hi, p_lo, log0, log1, log2, log3;
};

// ApproxPowV approximates a^p in float32 arithmetic for a >= 0, for the MSE
// search's certified fast path (see core/cpu/mse_kernels.cc): its results
// are never returned as errors, only used with the error bound
// MseApproxPowBound(p).
//
// a = 2^k m with m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh(s) with
// s = (m - 1) / (m + 1), |s| <= 0.1716, by its series to s^7 / 7 (truncation
// < 3e-8); y = p log2 a = p_hi k + (p_lo k + s series(s^2)), evaluated so
// that no rounding error scales with |k|; 2^y = 2^n 2^f with n = round(y),
// |f| <= 0.52, 2^f by a degree-5 polynomial (Chebyshev interpolation on
// [-1/2, 1/2]), 2^n from its bits. Both polynomials are evaluated in
// Estrin's scheme: the loop is bound by the latency of this chain, which
// Horner's scheme makes twice as long. Inputs below the smallest normal
// float (zero included) give 0, +inf and NaN themselves; 2^n below it gives
// 0 or a subnormal, above the largest float +inf. Explicit Mul/Add only, so
// every target computes the same bits.
template <class DF>
HWY_INLINE hn::Vec<DF> ApproxPowV(DF df, hn::Vec<DF> a,
                                  const ApproxPowArgsV<DF>& c) {
  const hn::RebindToSigned<DF> di;
  // Adding 0x3F800000 - 0x3F3504F3 carries into the exponent exactly when
  // the mantissa is >= sqrt(2); re-adding 0x3F3504F3 to the low 23 bits then
  // gives m in [sqrt(1/2), sqrt(2)).
  const auto ix = hn::Add(hn::BitCast(di, a), hn::Set(di, 0x004AFB0D));
  const auto k = hn::ConvertTo(
      df, hn::Sub(hn::ShiftRight<23>(ix), hn::Set(di, 127)));
  const auto m = hn::BitCast(
      df, hn::Add(hn::And(ix, hn::Set(di, 0x007FFFFF)), hn::Set(di, 0x3F3504F3)));
  const auto one = hn::Set(df, 1.0f);
  const auto s = hn::Div(hn::Sub(m, one), hn::Add(m, one));
  const auto s2 = hn::Mul(s, s);
  const auto s4 = hn::Mul(s2, s2);
  const auto series = hn::Add(hn::Add(c.log0, hn::Mul(s2, c.log1)),
                              hn::Mul(s4, hn::Add(c.log2, hn::Mul(s2, c.log3))));
  const auto y_hi = hn::Mul(c.p_hi, k);
  const auto y_lo = hn::Add(hn::Mul(c.p_lo, k), hn::Mul(s, series));
  const auto n = hn::Round(hn::Add(y_hi, y_lo));
  const auto f = hn::Add(hn::Sub(y_hi, n), y_lo);
  const auto f2 = hn::Mul(f, f);
  const auto f4 = hn::Mul(f2, f2);
  const auto e01 =
      hn::Add(hn::Set(df, 1.0000001192092896f),
              hn::Mul(f, hn::Set(df, 0.6931471824645996f)));
  const auto e23 =
      hn::Add(hn::Set(df, 0.2402210682630539f),
              hn::Mul(f, hn::Set(df, 0.055503569543361664f)));
  const auto e45 =
      hn::Add(hn::Set(df, 0.009676031768321991f),
              hn::Mul(f, hn::Set(df, 0.0013390863314270973f)));
  const auto e = hn::Add(hn::Add(e01, hn::Mul(f2, e23)), hn::Mul(f4, e45));
  // 2^n for n in [-127, 128]: the biased exponent n + 127 shifted into
  // place (0 for n = -127, the infinity pattern for n = 128). n + 1.5 2^23
  // holds n in its low mantissa bits (exact: |n| < 2^22).
  const auto nc = hn::Min(hn::Max(n, hn::Set(df, -127.0f)), hn::Set(df, 128.0f));
  const auto nbits = hn::BitCast(di, hn::Add(nc, hn::Set(df, 12582912.0f)));
  const auto scale = hn::BitCast(
      df, hn::ShiftLeft<23>(hn::Sub(nbits, hn::Set(di, 0x4B400000 - 127))));
  const auto r = hn::Mul(e, scale);
  // +inf and NaN give themselves (NaN when a candidate's scale overflowed).
  return hn::IfThenElse(
      hn::Lt(a, hn::Set(df, HUGE_VALF)),
      hn::IfThenZeroElse(hn::Lt(a, hn::Set(df, 1.17549435e-38f)), r), a);
}

// Calls fn(std::integral_constant<size_t, i>()) for i = 0 .. N - 1, unrolled:
// vector accumulators indexed by a loop GCC leaves rolled live in memory,
// and the store-to-load latency then bounds the loop.
template <class Fn, size_t... kI>
HWY_INLINE void UnrollImpl(Fn&& fn, std::index_sequence<kI...>) {
  (fn(std::integral_constant<size_t, kI>()), ...);
}
template <size_t kN, class Fn>
HWY_INLINE void Unroll(Fn&& fn) {
  UnrollImpl(fn, std::make_index_sequence<kN>());
}

// OctaveTableV holds a 16-entry float table for Lookup16V: in registers
// where two vectors or one hold it, otherwise read by a gather.
template <class DF>
struct OctaveTableV {
  static constexpr size_t kN = hn::MaxLanes(DF());
  static constexpr size_t kVecs = kN >= 16 ? 1 : (kN == 8 ? 2 : 0);
  hn::Vec<DF> v[kVecs == 0 ? 1 : kVecs];
  const float* table;
};

template <class DF>
HWY_INLINE OctaveTableV<DF> LoadOctaveTableV(DF df,
                                             const float* HWY_RESTRICT table) {
  OctaveTableV<DF> t;
  t.table = table;
  for (size_t i = 0; i < OctaveTableV<DF>::kVecs; ++i) {
    t.v[i] = hn::LoadU(df, table + i * OctaveTableV<DF>::kN);
  }
  if constexpr (OctaveTableV<DF>::kVecs == 0) t.v[0] = hn::Zero(df);
  return t;
}

// Lookup16V is table[idx mod 16] in each lane (idx >= 0).
template <class DF>
HWY_INLINE hn::Vec<DF> Lookup16V(DF df, hn::Vec<hn::RebindToSigned<DF>> idx,
                                 const OctaveTableV<DF>& t) {
  const hn::RebindToSigned<DF> di;
  if constexpr (OctaveTableV<DF>::kVecs == 1) {
    return hn::TableLookupLanes(
        t.v[0], hn::IndicesFromVec(df, hn::And(idx, hn::Set(di, 15))));
  } else if constexpr (OctaveTableV<DF>::kVecs == 2) {
    const auto i7 = hn::IndicesFromVec(df, hn::And(idx, hn::Set(di, 7)));
    return hn::IfThenElse(hn::RebindMask(df, hn::TestBit(idx, hn::Set(di, 8))),
                          hn::TableLookupLanes(t.v[1], i7),
                          hn::TableLookupLanes(t.v[0], i7));
  } else {
    return hn::GatherIndex(df, t.table, hn::And(idx, hn::Set(di, 15)));
  }
}

// OctaveCoefsV are the coefficients of OctavePowV's polynomial in t = m - 1
// (see internal_cpu::SetOctavePow).
template <class DF>
struct OctaveCoefsV {
  hn::Vec<DF> c0, c1, c2, c3, c4, c5;
};

// MantissaMinusOneV is t = m - 1 (exact) for the float32 values of bit
// patterns `bits` (a = 2^(E - 127) m, m in [1, 2)): OctavePowV's variable.
template <class DF>
HWY_INLINE hn::Vec<DF> MantissaMinusOneV(
    DF df, hn::Vec<hn::RebindToSigned<DF>> bits) {
  const hn::RebindToSigned<DF> di;
  return hn::Sub(
      hn::BitCast(df, hn::Or(hn::And(bits, hn::Set(di, 0x007FFFFF)),
                             hn::Set(di, 0x3F800000))),
      hn::Set(df, 1.0f));
}

// OctavePowV approximates a^p / 2^(p (top - 127)) in float32 for the MSE
// search's certified fast path (core/cpu/mse_kernels.cc), for a normal
// float a whose biased exponent E lies in [top - 15, top]: with
// a = 2^(E - 127) m, m in [1, 2), it is table[E mod 16] P(m - 1), where
// table[E mod 16] = 2^(p (E - top)) (rounded to float32; the window of 16
// octaves makes E mod 16 unique) and P interpolates (1 + t)^p at the six
// Chebyshev nodes of [0, 1]. P is evaluated in Estrin's scheme with explicit
// Mul/Add, so every target computes the same bits. No division and no
// exponential: this is about twice as fast as ApproxPowV, and its error is
// bounded by MseOctavePowBound(p) (callers clamp a from below and keep a
// slack for what they clamped).
// This form replaces kN vectors a[k] by their terms, stage by stage: the
// vectors' chains are independent, and written one after the other they
// kept the out-of-order window waiting (int8 channel ~17% slower).
// WindowPowV is OctavePowV with the table lookup given: lookup(bits of a)
// returns the lanes' table values.
template <size_t kN, class DF, class Lookup>
HWY_INLINE void WindowPowV(DF df, hn::Vec<DF>* a, const Lookup& lookup,
                           const OctaveCoefsV<DF>& c) {
  const hn::RebindToSigned<DF> di;
  using V = hn::Vec<DF>;
  V scale[kN], t[kN];
  Unroll<kN>([&](auto k) {
    const auto bits = hn::BitCast(di, a[k]);
    scale[k] = lookup(bits);
    t[k] = MantissaMinusOneV(df, bits);
  });
  Unroll<kN>([&](auto k) {
    const auto t2 = hn::Mul(t[k], t[k]);
    const auto t4 = hn::Mul(t2, t2);
    const auto p01 = hn::Add(c.c0, hn::Mul(t[k], c.c1));
    const auto p23 = hn::Add(c.c2, hn::Mul(t[k], c.c3));
    const auto p45 = hn::Add(c.c4, hn::Mul(t[k], c.c5));
    const auto poly =
        hn::Add(hn::Add(p01, hn::Mul(t2, p23)), hn::Mul(t4, p45));
    a[k] = hn::Mul(poly, scale[k]);
  });
}

template <size_t kN, class DF>
HWY_INLINE void OctavePowV(DF df, hn::Vec<DF>* a,
                           const OctaveTableV<DF>& table,
                           const OctaveCoefsV<DF>& c) {
  WindowPowV<kN>(
      df, a,
      [&](hn::Vec<hn::RebindToSigned<DF>> bits) {
        return Lookup16V(df, hn::ShiftRight<23>(bits), table);
      },
      c);
}

template <class DF>
HWY_INLINE hn::Vec<DF> OctavePowV(DF df, hn::Vec<DF> a,
                                  const OctaveTableV<DF>& table,
                                  const OctaveCoefsV<DF>& c) {
  OctavePowV<1>(df, &a, table, c);
  return a;
}

// DemoteF64V is static_cast<float> of each lane: round to nearest even,
// overflow to infinity. (Highway's scalar target saturates instead, so it
// gets the plain cast.)
template <class DF, class VD>
HWY_INLINE hn::Vec<DF> DemoteF64V(DF df, VD v) {
#if HWY_TARGET == HWY_SCALAR
  (void)df;
  return hn::Set(df, static_cast<float>(hn::GetLane(v)));
#else
  return hn::DemoteTo(df, v);
#endif
}

}  // namespace simd
// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace qcal
HWY_AFTER_NAMESPACE();

#endif  // QCAL_CORE_CPU_SIMD_MATH_INL_H_
