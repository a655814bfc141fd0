// Vectorised, fused MSE-error evaluation (SimdMseErrors), compiled for every
// SIMD target by Highway (this file is re-included once per target).
//
// Work is a list of units, each a rectangle of rows. For each row of a unit
// the row is converted once into a float32 buffer (zero-padded to a multiple
// of 16) that stays in L1/L2 cache while every requested candidate is
// evaluated on it, with the candidate's constants in registers: each unit's
// data is read from memory once per call.
//
// Per element and candidate the kernel computes ErrorTerm<F>(x,
// FakeQuantize<F>(x)) with the same IEEE operations in the same order as the
// scalar code (core/cpu/simd_math-inl.h), and adds it to the double
// accumulator of lane (column offset % 16) in column order, exactly the
// canonical order of MseRequest: 16 consecutive floats are 16/N vectors of N
// floats, each split into two halves widened to double, so accumulator
// vector 2i + h holds lanes [i N + h N/2, i N + (h + 1) N/2). The last,
// partial block of a row is masked lane by lane. For f16/bf16 tensors the
// error term |e|^norm takes one of 2^15 values (e is a value of the format),
// so it is looked up in a table of PowNorm<F> built once per exponent.
//
// Each unit's candidate constants (CandidateParams<F>) are computed
// vectorised across the candidates, bit for bit as the scalar code.
//
// Rows that contain a non-finite value (only possible with kSkip, or when a
// caller bypasses the min/max check) go through the scalar RowErrorSum.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/cpu/kernel_jobs.h"
#include "core/element_access.h"
#include "core/parallel.h"
#include "core/quant_math.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/cpu/mse_kernels.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/aligned_allocator.h"
#include "hwy/highway.h"
#include "core/cpu/simd_math-inl.h"

HWY_BEFORE_NAMESPACE();
namespace qcal {
namespace internal_cpu {
namespace HWY_NAMESPACE {

namespace hn = hwy::HWY_NAMESPACE;
namespace simd = qcal::HWY_NAMESPACE::simd;

using DF = hn::ScalableTag<float>;
constexpr size_t kNF = hn::MaxLanes(DF());
static_assert(kErrorSumLanes % kNF == 0, "16 must be a multiple of lanes");
// Float vectors per block of 16 columns. Each float vector is widened to
// double in kParts parts of kDL lanes (halves; the whole single lane on the
// scalar target), each with its own accumulator vector.
constexpr size_t kVecs = kErrorSumLanes / kNF;
#if HWY_TARGET == HWY_SCALAR
constexpr size_t kParts = 1;
using DFP = DF;
#else
constexpr size_t kParts = 2;
using DFP = hn::Half<DF>;
#endif
constexpr size_t kDL = kNF / kParts;
constexpr size_t kAccs = kVecs * kParts;
using DD = hn::Rebind<double, DFP>;

using simd::Unroll;

// Part kPart of a float vector (see kParts).
template <size_t kPart>
HWY_INLINE hn::Vec<DFP> Part(hn::Vec<DF> v) {
#if HWY_TARGET == HWY_SCALAR
  return v;
#else
  if constexpr (kPart == 0) {
    return hn::LowerHalf(DFP(), v);
  } else {
    return hn::UpperHalf(DFP(), v);
  }
#endif
}

// QuantizeToGrid<F>: the grid value of x (NaN or junk for non-finite x).
template <FloatFormat F, QuantKind K, bool kGlobal>
HWY_INLINE hn::Vec<DF> QuantizeV(DF df, hn::Vec<DF> x, hn::Vec<DF> scale,
                                 hn::Vec<DF> zp_rounded, hn::Vec<DF> eff,
                                 hn::Vec<DF> q_min, hn::Vec<DF> q_max) {
  if constexpr (kGlobal) {
    // Promoted to float32 throughout; the grid value stays float32 until
    // dequantized.
    auto q = hn::Add(hn::Div(x, eff), zp_rounded);
    q = hn::Min(hn::Max(q, q_min), q_max);
    return simd::GridV<K>(df, q);
  } else {
    auto q = simd::RoundV<F>(df, hn::Div(x, scale));
    q = simd::RoundV<F>(df, hn::Add(q, zp_rounded));
    q = simd::RoundV<F>(df, hn::Min(hn::Max(q, q_min), q_max));
    return simd::RoundV<F>(df, simd::GridV<K>(df, q));
  }
}

// DequantizeFromGrid<F> of a grid value.
template <FloatFormat F, bool kGlobal>
HWY_INLINE hn::Vec<DF> DequantizeV(DF df, hn::Vec<DF> q, hn::Vec<DF> scale,
                                   hn::Vec<DF> zp_rounded, hn::Vec<DF> zp,
                                   hn::Vec<DF> eff) {
  if constexpr (kGlobal) {
    // The zero point converted straight to float32.
    return simd::RoundV<F>(df, hn::Mul(hn::Sub(q, zp), eff));
  } else {
    return simd::RoundV<F>(
        df, hn::Mul(simd::RoundV<F>(df, hn::Sub(q, zp_rounded)), scale));
  }
}

// x / s as the lean path's first step computes it before rounding to F.
// For bf16 it is x * (1 / s), two float32 roundings instead of a division
// (one division per AccumulateBlock call: the reciprocal is the same for
// all its vectors), and RoundV<bf16> of it is bit for bit RoundV<bf16>(x / s):
// x and s are bf16 values (8-bit significands m_x, m_s), so x / s is either a
// bf16 value itself (m_x / m_s has at most 8 significant bits when it is a
// dyadic rational) or a non-dyadic rational whose distance to every bf16
// rounding boundary is at least 1 / (m_s 2^9) > 7.6e-6 relative, while
// x * fl(1 / s) is within 2^-23 relative of x / s. Where the quotient is tiny
// (below 2^-126, or generally below 0.4) both round to values below 0.5 that
// the grid's rounding takes to a zero of the same sign (the lean path is
// symmetric: no zero point is added), and overflow gives infinity either way.
// LeanQuotientMatchesDivision (tests/core/quant_math_test.cc) checks the
// identity over every bf16 x for every bf16 significand of s.
template <FloatFormat F>
HWY_INLINE hn::Vec<DF> LeanQuotient(DF df, hn::Vec<DF> x, hn::Vec<DF> scale) {
  if constexpr (F == FloatFormat::kBF16) {
    return hn::Mul(x, hn::Div(hn::Set(df, 1.0f), scale));
  } else {
    return hn::Div(x, scale);
  }
}

// fake_quantize(x) - x before its rounding to F (ErrorTerm's e, unrounded).
//
// kLean (symmetric args whose clamp bounds and grid values are values of F)
// leaves out steps that provably change nothing: adding and
// subtracting a zero point of 0 (which could only turn -0 into +0 in q and
// fq; a zero's sign never reaches |fq - x|, which is |x| or 0 then), and
// rounding to F a clamp result or a grid value that already is a value of F.
template <FloatFormat F, QuantKind K, bool kGlobal, bool kLean>
HWY_INLINE hn::Vec<DF> RawError(DF df, hn::Vec<DF> x, hn::Vec<DF> scale,
                                hn::Vec<DF> zp_rounded, hn::Vec<DF> zp,
                                hn::Vec<DF> eff, hn::Vec<DF> q_min,
                                hn::Vec<DF> q_max) {
  hn::Vec<DF> fq;
  if constexpr (kLean && kGlobal) {
    // Under a global scale every step is float32 until the dequantized value.
    const auto q = simd::GridV<K>(
        df, hn::Min(hn::Max(hn::Div(x, eff), q_min), q_max));
    fq = simd::RoundV<F>(df, hn::Mul(q, eff));
  } else if constexpr (kLean) {
    auto q = simd::RoundV<F>(df, LeanQuotient<F>(df, x, scale));
    q = simd::GridV<K>(df, hn::Min(hn::Max(q, q_min), q_max));
    fq = simd::RoundV<F>(df, hn::Mul(q, scale));
  } else {
    fq = DequantizeV<F, kGlobal>(
        df, QuantizeV<F, K, kGlobal>(df, x, scale, zp_rounded, eff, q_min, q_max),
        scale, zp_rounded, zp, eff);
  }
  return hn::Sub(fq, x);
}

// fake_quantize(x) - x, rounded to F, in absolute value (ErrorTerm's |e|).
template <FloatFormat F, QuantKind K, bool kGlobal, bool kLean>
HWY_INLINE hn::Vec<DF> AbsError(DF df, hn::Vec<DF> x, hn::Vec<DF> scale,
                                hn::Vec<DF> zp_rounded, hn::Vec<DF> zp,
                                hn::Vec<DF> eff, hn::Vec<DF> q_min,
                                hn::Vec<DF> q_max) {
  return hn::Abs(simd::RoundV<F>(
      df, RawError<F, K, kGlobal, kLean>(df, x, scale, zp_rounded, zp, eff,
                                         q_min, q_max)));
}

// Table index of a non-negative value of F (or NaN) held in a float: its
// bit pattern in F.
template <FloatFormat F>
HWY_INLINE hn::Vec<hn::RebindToSigned<DF>> TableIndex(DF df, hn::Vec<DF> e) {
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const auto u = hn::BitCast(du, e);
  if constexpr (F == FloatFormat::kBF16) {
    return hn::BitCast(di, hn::ShiftRight<16>(u));
  } else {
    // Normal halves: rebias the exponent; subnormal halves: e * 2^24 is the
    // mantissa (exact); infinity and NaN: their canonical codes.
    // e >= 0 (or a NaN without sign), so its bits compare as signed ints.
    const auto ui = hn::BitCast(di, u);
    const auto normal = hn::Sub(hn::ShiftRight<13>(ui), hn::Set(di, 0x1C000));
    const auto sub = hn::ConvertTo(di, hn::Mul(e, hn::Set(df, 16777216.0f)));
    auto idx = hn::IfThenElse(hn::Lt(ui, hn::Set(di, 0x38800000)), sub, normal);
    idx = hn::IfThenElse(
        hn::Gt(ui, hn::Set(di, 0x7F7FFFFF)),
        hn::IfThenElse(hn::Eq(ui, hn::Set(di, 0x7F800000)),
                       hn::Set(di, 0x7C00), hn::Set(di, 0x7E00)),
        idx);
    return idx;
  }
}

// The table index of |RoundV<F>(d)| for a raw error d (RawError). For bf16
// it rounds and indexes in one go: RoundBf16V's final masking of the low
// 16 bits is the shift that makes the index (and the sign, cleared first,
// does not take part in the rounding). The same index for every d except
// NaNs whose payload is within 2^15 of the largest, which no finite row
// produces.
template <FloatFormat F>
HWY_INLINE hn::Vec<hn::RebindToSigned<DF>> ErrorIndex(DF df, hn::Vec<DF> d) {
  if constexpr (F == FloatFormat::kBF16) {
    const hn::RebindToUnsigned<DF> du;
    const auto u = hn::And(hn::BitCast(du, d), hn::Set(du, 0x7FFFFFFFu));
    const auto lsb = hn::And(hn::ShiftRight<16>(u), hn::Set(du, 1u));
    return hn::BitCast(hn::RebindToSigned<DF>(),
                       hn::ShiftRight<16>(hn::Add(
                           u, hn::Add(hn::Set(du, 0x7FFFu), lsb))));
  } else {
    return TableIndex<F>(df, hn::Abs(simd::RoundV<F>(df, d)));
  }
}

// What the error terms need besides |e|: the exponent (as a double), the
// 16-bit formats' table, ApproxPowV's constants.
struct PowArgs {
  hn::Vec<DD> exponent;
  const float* HWY_RESTRICT table;
  const double* HWY_RESTRICT wide;
  simd::ApproxPowArgsV<DF> approx;
};

HWY_INLINE PowArgs MakePowArgs(const MseJob& job) {
  const DF df;
  return PowArgs{
      hn::Set(DD(), static_cast<double>(job.norm_exponent)), job.pow_table,
      job.pow_table_wide,
      simd::ApproxPowArgsV<DF>{
          hn::Set(df, job.approx_p_hi), hn::Set(df, job.approx_p_lo),
          hn::Set(df, job.approx_log[0]), hn::Set(df, job.approx_log[1]),
          hn::Set(df, job.approx_log[2]), hn::Set(df, job.approx_log[3])}};
}

// The error terms of a vector of table indices (f16 / bf16), widened to
// double in kParts parts.
HWY_INLINE void TableTerms(hn::Vec<hn::RebindToSigned<DF>> idx_v,
                           const PowArgs& pa, hn::Vec<DD>* t) {
#if HWY_TARGET == HWY_AVX2
  // The table widened to double, read with eight scalar loads. AVX2's
  // gather is microcode on Zen 3 (9.6 cycles per 8 lanes measured alone)
  // and the other work of the loop waited on it; the loads overlap it:
  // one thread, bf16 int8 channel 161 -> 134 ms, int4 group 128 373 -> 318
  // (an index vector through memory instead of vmovq/vpextrq: 184 ms;
  // half the vectors gathered: 152; indices packed to 16 bits: 144).
  HWY_ALIGN int32_t idx[kNF];
  hn::Store(idx_v, hn::RebindToSigned<DF>(), idx);
  uint64_t pairs[kNF / 2];
  memcpy(pairs, idx, sizeof(pairs));
  const double* HWY_RESTRICT w = pa.wide;
  Unroll<kParts>([&](auto p) {
    const uint64_t a = pairs[2 * p], b = pairs[2 * p + 1];
    const __m128d lo = _mm_loadh_pd(
        _mm_load_sd(w + static_cast<uint32_t>(a)), w + (a >> 32));
    const __m128d hi = _mm_loadh_pd(
        _mm_load_sd(w + static_cast<uint32_t>(b)), w + (b >> 32));
    t[p] = hn::Vec<DD>{
        _mm256_insertf128_pd(_mm256_castpd128_pd256(lo), hi, 1)};
  });
#else
  const DF df;
  const DD dd;
  const auto v = hn::GatherIndex(df, pa.table, idx_v);
  t[0] = hn::PromoteTo(dd, Part<0>(v));
  if constexpr (kParts == 2) t[1] = hn::PromoteTo(dd, Part<1>(v));
#endif
}

// The error terms |e|^norm of a vector of error magnitudes, widened to
// double in kParts parts.
template <FloatFormat F, PowMode kPow>
HWY_INLINE void Terms(hn::Vec<DF> e, const PowArgs& pa, hn::Vec<DD>* t) {
  const DF df;
  const DFP dfp;
  const DD dd;
  const auto exponent = pa.exponent;
  if constexpr (F == FloatFormat::kF32 && kPow == PowMode::kGeneral) {
    // PowPositive in double, rounded to float32 (static_cast<float>), then
    // widened for the sum.
    t[0] = hn::PromoteTo(
        dd, simd::DemoteF64V(dfp, simd::PowPositiveV(
                                      dd, hn::PromoteTo(dd, Part<0>(e)),
                                      exponent)));
    if constexpr (kParts == 2) {
      t[1] = hn::PromoteTo(
          dd, simd::DemoteF64V(dfp, simd::PowPositiveV(
                                        dd, hn::PromoteTo(dd, Part<1>(e)),
                                        exponent)));
    }
  } else if constexpr (F != FloatFormat::kF32) {
    TableTerms(TableIndex<F>(df, e), pa, t);
  } else {
    hn::Vec<DF> v;
    if constexpr (kPow == PowMode::kApprox) {
      v = simd::ApproxPowV(df, e, pa.approx);
    } else if constexpr (kPow == PowMode::kSquare) {
      v = hn::Mul(e, e);
    } else if constexpr (kPow == PowMode::kCube) {
      v = hn::Mul(hn::Mul(e, e), e);
    } else {
      v = hn::Sqrt(e);
    }
    t[0] = hn::PromoteTo(dd, Part<0>(v));
    if constexpr (kParts == 2) t[1] = hn::PromoteTo(dd, Part<1>(v));
  }
}

// Adds the error terms of kBlocks consecutive blocks of 16 values (kVecs
// vectors each, at x) to the accumulators, block by block; `valid` leading
// lanes count (16 for a full block; masking takes one block).
template <FloatFormat F, QuantKind K, bool kGlobal, bool kLean, PowMode kPow,
          bool kMasked, size_t kBlocks = 1>
HWY_INLINE void AccumulateBlock(const float* HWY_RESTRICT x, size_t valid,
                                const CandidateConsts& c, hn::Vec<DF> q_min,
                                hn::Vec<DF> q_max, const PowArgs& pa,
                                hn::Vec<DD>* acc) {
  static_assert(!kMasked || kBlocks == 1, "masking takes one block");
  const DF df;
  const DD dd;
  const auto scale = hn::Set(df, c.scale);
  const auto zp_rounded = hn::Set(df, c.zero_point_rounded);
  const auto zp = hn::Set(df, c.zero_point);
  const auto eff = hn::Set(df, c.effective_scale);
  // Stage by stage over the vectors: their chains (a division and the exact
  // pow for float32; three roundings and the table terms for f16/bf16) are
  // independent, and in program order the
  // scheduler sees them together; one chain after the other left it waiting.
  // f16 / bf16 keep the raw errors, which ErrorIndex rounds and indexes.
  hn::Vec<DF> e[kBlocks * kVecs];
  Unroll<kBlocks * kVecs>([&](auto v) {
    const auto xv = hn::Load(df, x + v * kNF);
    if constexpr (F == FloatFormat::kF32) {
      e[v] = AbsError<F, K, kGlobal, kLean>(df, xv, scale, zp_rounded, zp, eff,
                                            q_min, q_max);
    } else {
      e[v] = RawError<F, K, kGlobal, kLean>(df, xv, scale, zp_rounded, zp, eff,
                                            q_min, q_max);
    }
  });
  Unroll<kBlocks * kVecs>([&](auto v) {
    constexpr size_t i = decltype(v)::value % kVecs;
    hn::Vec<DD> t[kParts];
    if constexpr (F == FloatFormat::kF32) {
      Terms<F, kPow>(e[v], pa, t);
    } else {
      TableTerms(ErrorIndex<F>(df, e[v]), pa, t);
    }
    Unroll<kParts>([&](auto p) {
      if constexpr (kMasked) {
        const size_t base = i * kNF + p * kDL;
        const size_t n = valid > base ? std::min(valid - base, kDL) : 0;
        t[p] = hn::IfThenElseZero(hn::FirstN(dd, n), t[p]);
      }
      // Adding a masked-out +0.0 leaves an accumulator unchanged (they
      // start at +0.0 and only grow), so this is exactly "skip the lane".
      acc[kParts * i + p] = hn::Add(acc[kParts * i + p], t[p]);
    });
  });
}

// Whether candidate c has the previous candidate's constants (bit for bit):
// then its row sums are the previous one's. Scales are monotone in the
// shrink factor, so equal candidates are consecutive; with an fp8 scale
// (NVFP4) a few distinct scales cover all twenty steps.
HWY_INLINE bool SameAsPrevious(const CandidateConsts* consts, int64_t c) {
  return c > 0 && FloatToBits(consts[c].scale) == FloatToBits(consts[c - 1].scale) &&
         FloatToBits(consts[c].zero_point_rounded) ==
             FloatToBits(consts[c - 1].zero_point_rounded) &&
         FloatToBits(consts[c].zero_point) == FloatToBits(consts[c - 1].zero_point) &&
         FloatToBits(consts[c].effective_scale) ==
             FloatToBits(consts[c - 1].effective_scale);
}

// Row sums of every candidate for one row held in x (n values, zero-padded
// to a multiple of 16, all finite).
template <FloatFormat F, QuantKind K, bool kGlobal, bool kLean, PowMode kPow>
HWY_NOINLINE void CandidateRowSums(const MseJob& job,
                                   const float* HWY_RESTRICT x, int64_t n,
                                   const CandidateConsts* consts,
                                   double* sums, uint8_t* /*term_kinds*/,
                                   double* /*rho*/) {
  const DF df;
  const DD dd;
  const auto q_min = hn::Set(df, job.spec.q_min);
  const auto q_max = hn::Set(df, job.spec.q_max);
  const PowArgs pa = MakePowArgs(job);
  const int64_t full = n / kErrorSumLanes;
  const size_t rest = static_cast<size_t>(n % kErrorSumLanes);
  HWY_ALIGN double lanes[kErrorSumLanes];
  for (int64_t c = 0; c < job.num_candidates; ++c) {
    if (SameAsPrevious(consts, c)) {
      sums[c] = sums[c - 1];
      continue;
    }
    hn::Vec<DD> acc[kAccs];
    Unroll<kAccs>([&](auto a) { acc[a] = hn::Zero(dd); });
    int64_t b = 0;
    if constexpr (F != FloatFormat::kF32) {
      // Four blocks at a time for the table terms: more independent chains
      // for the scheduler (one thread: bf16 int8 channel 129 -> 113 ms, int4
      // group 128 315 -> 286; three blocks: 118 / 301). Not for float32's
      // exact terms, whose double-precision pow made that instantiation
      // slow to compile (minutes) for no gain (106 -> 105 ms).
      for (; b + 4 <= full; b += 4) {
        AccumulateBlock<F, K, kGlobal, kLean, kPow, false, 4>(
            x + b * kErrorSumLanes, kErrorSumLanes, consts[c], q_min, q_max,
            pa, acc);
      }
    }
    for (; b + 2 <= full; b += 2) {
      AccumulateBlock<F, K, kGlobal, kLean, kPow, false, 2>(
          x + b * kErrorSumLanes, kErrorSumLanes, consts[c], q_min, q_max, pa,
          acc);
    }
    if (b < full) {
      AccumulateBlock<F, K, kGlobal, kLean, kPow, false>(
          x + b * kErrorSumLanes, kErrorSumLanes, consts[c], q_min, q_max, pa,
          acc);
    }
    if (rest != 0) {
      AccumulateBlock<F, K, kGlobal, kLean, kPow, true>(
          x + full * kErrorSumLanes, rest, consts[c], q_min, q_max, pa, acc);
    }
    Unroll<kAccs>([&](auto a) { hn::Store(acc[a], dd, lanes + a * kDL); });
    double sum = 0.0;
    for (int l = 0; l < kErrorSumLanes; ++l) sum += lanes[l];
    sums[c] = sum;
  }
}

// One candidate's fake-quantization constants as vectors.
struct FakeQuantVecs {
  hn::Vec<DF> scale, zp_rounded, zp, eff, q_min, q_max;
};

// Adds float32 partial sums into the double totals, part by part.
HWY_INLINE void AddRuns(const hn::Vec<DF>* run, hn::Vec<DD>* total) {
  const DD dd;
  Unroll<kVecs>([&](auto i) {
    total[0] = hn::Add(total[0], hn::PromoteTo(dd, Part<0>(run[i])));
    if constexpr (kParts == 2) {
      total[1] = hn::Add(total[1], hn::PromoteTo(dd, Part<1>(run[i])));
    }
  });
}

// Kinds of error terms a row's sums used (OctaveRowSums).
constexpr uint8_t kWindowTerms = 1;  // OctavePowV
constexpr uint8_t kApproxTerms = 2;  // ApproxPowV

// One candidate's constants as vectors.
HWY_INLINE FakeQuantVecs MakeFakeQuantVecs(const MseJob& job,
                                           const CandidateConsts& cc) {
  const DF df;
  return FakeQuantVecs{hn::Set(df, cc.scale),
                       hn::Set(df, cc.zero_point_rounded),
                       hn::Set(df, cc.zero_point),
                       hn::Set(df, cc.effective_scale),
                       hn::Set(df, job.spec.q_min),
                       hn::Set(df, job.spec.q_max)};
}

// The sum over a row (n values at x, all finite) of term(|fq - x|) for one
// candidate's constants v, for the error bounds: any order will do, the
// bound covers it. Each lane sums its terms in float32 for kApproxFloatRun
// blocks (the bound's kApproxFloatRun 2^-24), then adds them into double;
// no canonical lanes. The last block's missing lanes get an error of 0
// and no term.
// FloatRunSumWith is that sum with the error magnitudes given: error(at)
// returns the vector of errors of the values at `at`.
template <class Error, class Term>
HWY_INLINE double FloatRunSumWith(const float* HWY_RESTRICT x, int64_t n,
                                  const Error& error, const Term& term) {
  const DF df;
  const DD dd;
  const int64_t full = n / kErrorSumLanes;
  const size_t rest = static_cast<size_t>(n % kErrorSumLanes);
  hn::Vec<DD> total[kParts];
  for (size_t p = 0; p < kParts; ++p) total[p] = hn::Zero(dd);
  hn::Vec<DF> run[kVecs];
  // Adds the terms of `count` blocks from block b into the runs.
  auto blocks = [&](int64_t b, auto count) {
    constexpr size_t kN = decltype(count)::value * kVecs;
    hn::Vec<DF> e[kN];
    Unroll<kN>([&](auto v) { e[v] = error(x + b * kErrorSumLanes + v * kNF); });
    term(std::integral_constant<size_t, kN>(), e);
    Unroll<kN>([&](auto v) {
      constexpr size_t i = decltype(v)::value % kVecs;
      run[i] = hn::Add(run[i], e[v]);
    });
  };
  for (int64_t b0 = 0; b0 < full; b0 += kApproxFloatRun) {
    Unroll<kVecs>([&](auto i) { run[i] = hn::Zero(df); });
    const int64_t b1 = std::min<int64_t>(full, b0 + kApproxFloatRun);
    int64_t b = b0;
    // Two blocks at a time, stage by stage (see AccumulateBlock).
    for (; b + 2 <= b1; b += 2) blocks(b, std::integral_constant<size_t, 2>());
    if (b < b1) blocks(b, std::integral_constant<size_t, 1>());
    AddRuns(run, total);
  }
  if (rest != 0) {
    hn::Vec<DF> e[kVecs];
    hn::Mask<DF> valid[kVecs];
    Unroll<kVecs>([&](auto i) {
      const size_t base = i * kNF;
      valid[i] = hn::FirstN(df, rest > base ? std::min(rest - base, kNF) : 0);
      e[i] = hn::IfThenElseZero(valid[i],
                                error(x + full * kErrorSumLanes + base));
    });
    term(std::integral_constant<size_t, kVecs>(), e);
    Unroll<kVecs>([&](auto i) { run[i] = hn::IfThenElseZero(valid[i], e[i]); });
    AddRuns(run, total);
  }
  if constexpr (kParts == 2) total[0] = hn::Add(total[0], total[1]);
  return hn::GetLane(hn::SumOfLanes(dd, total[0]));
}

template <QuantKind K, bool kGlobal, bool kLean, class Term>
HWY_INLINE double FloatRunSum(const float* HWY_RESTRICT x, int64_t n,
                              const FakeQuantVecs& v, const Term& term) {
  const DF df;
  return FloatRunSumWith(
      x, n,
      [&](const float* at) {
        return AbsError<FloatFormat::kF32, K, kGlobal, kLean>(
            df, hn::Load(df, at), v.scale, v.zp_rounded, v.zp, v.eff, v.q_min,
            v.q_max);
      },
      term);
}

// One candidate's row sum with ApproxPowV terms (float32 tensors; for error
// bounds).
template <QuantKind K, bool kGlobal, bool kLean>
HWY_INLINE double ApproxCandidateSum(const MseJob& job, const PowArgs& pa,
                                     const float* HWY_RESTRICT x, int64_t n,
                                     const CandidateConsts& cc) {
  const DF df;
  return FloatRunSum<K, kGlobal, kLean>(
      x, n, MakeFakeQuantVecs(job, cc),
      [&](auto count, hn::Vec<DF>* e) {
        Unroll<count>(
            [&](auto k) { e[k] = simd::ApproxPowV(df, e[k], pa.approx); });
      });
}

// Row sums of every candidate with ApproxPowV terms.
template <QuantKind K, bool kGlobal, bool kLean>
HWY_NOINLINE void ApproxRowSums(const MseJob& job,
                                const float* HWY_RESTRICT x, int64_t n,
                                const CandidateConsts* consts, double* sums,
                                uint8_t* /*term_kinds*/, double* /*rho*/) {
  const PowArgs pa = MakePowArgs(job);
  for (int64_t c = 0; c < job.num_candidates; ++c) {
    sums[c] = SameAsPrevious(consts, c)
                  ? sums[c - 1]
                  : ApproxCandidateSum<K, kGlobal, kLean>(job, pa, x, n,
                                                          consts[c]);
  }
}

// OctavePowV's polynomial coefficients as vectors.
HWY_INLINE simd::OctaveCoefsV<DF> MakeOctaveCoefs(const MseJob& job) {
  const DF df;
  return simd::OctaveCoefsV<DF>{
      hn::Set(df, job.octave_coef[0]), hn::Set(df, job.octave_coef[1]),
      hn::Set(df, job.octave_coef[2]), hn::Set(df, job.octave_coef[3]),
      hn::Set(df, job.octave_coef[4]), hn::Set(df, job.octave_coef[5])};
}

// The window of 16 octaves below biased exponent `top`: its table rotation
// and its floor 2^(top - 142).
struct OctaveWindow {
  simd::OctaveTableV<DF> table;
  hn::Vec<DF> floor;
};

HWY_INLINE OctaveWindow MakeOctaveWindow(const MseJob& job, int top) {
  const DF df;
  return OctaveWindow{
      simd::LoadOctaveTableV(df, job.octave_tables + 16 * (top & 15)),
      hn::Set(df, BitsToFloat(static_cast<uint32_t>(top - 15) << 23))};
}

// Row sums of every candidate with OctavePowV terms (float32 tensors; for
// error bounds). Each candidate's window is the 16 octaves below
// OctaveTop(max_error); errors below it are clamped to its floor (the
// caller's slack covers them). A candidate is summed with ApproxPowV terms
// instead (and bounded with ApproxPowV's bound) when it has no window
// (errors that may reach 2^127), when its errors leave the window (data
// outside the unit's range; checked on the error bits, which also catches
// NaN), or when the floor's slack would exceed 2^-16 of its sum.
// The sum (FloatRunSum) is scaled back by 2^(p (top - 127)).
template <QuantKind K, bool kGlobal, bool kLean>
HWY_NOINLINE void OctaveRowSums(const MseJob& job,
                                const float* HWY_RESTRICT x, int64_t n,
                                const CandidateConsts* consts, double* sums,
                                uint8_t* term_kinds, double* /*rho*/) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const simd::OctaveCoefsV<DF> coef = MakeOctaveCoefs(job);
  const PowArgs pa = MakePowArgs(job);
  for (int64_t c = 0; c < job.num_candidates; ++c) {
    if (SameAsPrevious(consts, c)) {
      sums[c] = sums[c - 1];
      term_kinds[c] |= term_kinds[c - 1];
      continue;
    }
    const int top = OctaveTop(consts[c].max_error);
    if (top < 0) {
      sums[c] =
          ApproxCandidateSum<K, kGlobal, kLean>(job, pa, x, n, consts[c]);
      term_kinds[c] |= kApproxTerms;
      continue;
    }
    const OctaveWindow w = MakeOctaveWindow(job, top);
    // Largest error bit pattern seen (errors are >= +0 or NaN).
    auto max_bits = hn::Zero(di);
    const double scaled = FloatRunSum<K, kGlobal, kLean>(
        x, n, MakeFakeQuantVecs(job, consts[c]), [&](auto count, hn::Vec<DF>* e) {
          Unroll<count>([&](auto k) {
            max_bits = hn::Max(max_bits, hn::BitCast(di, e[k]));
            e[k] = hn::Max(e[k], w.floor);
          });
          simd::OctavePowV<count>(df, e, w.table, coef);
        });
    const bool inside = hn::GetLane(hn::MaxOfLanes(di, max_bits)) <
                        static_cast<int32_t>((top + 1) << 23);
    if (!inside || static_cast<double>(n) * job.octave_floor_term >
                       0x1p-16 * scaled) {
      // Errors above the window (data outside the unit's range), or far
      // below it (the floor's slack would swamp the sum).
      sums[c] =
          ApproxCandidateSum<K, kGlobal, kLean>(job, pa, x, n, consts[c]);
      term_kinds[c] |= kApproxTerms;
    } else {
      sums[c] = scaled * job.octave_scale[top];
      term_kinds[c] |= kWindowTerms;
    }
  }
}

// ------------------------------------------------------------ scaled terms
//
// Symmetric integer grids of at most 4 bits (W4A16's groups) on float32,
// for the error bounds, with the exponents OctavePowV serves. A candidate of
// scale s gives x the error s |u - q| with u = x / s and q its clamped grid
// value; here u = x * fl(1 / s), d = u - q, and the term is s^p |d|^p: no
// division and no dequantization per element. Elements that no candidate
// of the row clamps ("small": (q_min - 1/2) s_min < x < (q_max + 1/2)
// s_min, with a margin) have |d| <= 1/2: their terms come from one fixed
// window of 8 octaves, |d| in [2^-9, 2^-1) (one 8-entry table), without the
// clamp. The others (the row's largest magnitudes, a few per group) are
// evaluated across the candidates, clamped, in the 16 octaves below their
// largest |d|. Each candidate's sum of |d|^p is then multiplied by s^p
// (OctavePowV, vectorised across the candidates).
//
// The bound (ScaledRowSums' *rho, relative to the sums): |d| differs from
// the reference's |fq - x| / s by at most
//   eta = 3 2^-23 U + 2^-24 (Q + 2 D) + 2^-25
// (U, Q, D: the largest |u|, |q|, |d|): the two quotients x * fl(1 / s) and
// fl(x / s) are within 2^-23 U and 2^-24 U of x / s, and where they round to
// different sides of a half-integer the two distances to the grid differ by
// at most twice their sum; the reference's roundings of q s and fq - x add
// 2^-24 (Q + D), the subtraction u - q here (exact unless a clamped u is
// more than twice q) 2^-24 D; capping |d| = 1/2 below 2^-1 adds 2^-25.
// By the mean value theorem and Hölder's inequality the n terms then move
// by at most
//   p eta sum (|d| + eta)^(p - 1)
//     <= p eta n^(1/p) (S^(1/p) + n^(1/p) eta)^(p - 1)
// for S = sum |d|^p, i.e. relative to S by
//   rho_H = p eta t (1 + eta t)^(p - 1),  t = (n / S)^(1/p),
// which is largest for the smallest S among the row's candidates. Terms
// clamped to a window's floor add their floor term each (relative to that
// smallest S too). OctavePowV's own error and the float32 runs are
// bound_rho's, as for the other windowed terms; s^p, also from OctavePowV,
// adds bound_rho once more.
constexpr uint8_t kScaledTerms = 4;
// The small elements' window: |d| in [2^-9, 2^-1), capped below 1/2.
constexpr int kScaledTop = 125;
constexpr int32_t kScaledFloorBits = (kScaledTop - 7) << 23;
constexpr int32_t kScaledCapBits = 0x3EFFFFFF;

// The 8-entry window table (job.scaled_table repeats it to 16 entries, so
// that 16-lane permutes and Lookup16V's gathers read it too). The
// exponents looked up are 118 .. 125 (>= 0): vpermps reads an index's low
// 3 bits (low 4 with 16 lanes), so x86 needs no mask.
HWY_INLINE hn::Vec<DF> Lookup8V(DF df, hn::Vec<hn::RebindToSigned<DF>> e,
                                const simd::OctaveTableV<DF>& t) {
#if HWY_TARGET == HWY_AVX2
  (void)df;
  return hn::Vec<DF>{_mm256_permutevar8x32_ps(t.v[0].raw, e.raw)};
#elif HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  (void)df;
  return hn::Vec<DF>{_mm512_permutexvar_ps(e.raw, t.v[0].raw)};
#else
  return simd::Lookup16V(df, e, t);
#endif
}

// Adds the small elements' terms of kN vectors of |d| (clamped to the
// window) to runs[k]: WindowPowV's polynomial in fused multiply-adds, the
// table value's product fused into the sum. A fused operation rounds once
// where WindowPowV's multiplication and addition round twice, so every term
// passes fewer roundings than OctavePowV's bound counts, and the float32
// runs' bound holds as before; a target without FMA (MulAdd is then a
// multiplication and an addition) computes other bits within the same
// bounds. (Brackets only decide what the exact errors would: they need not
// be the same bits on every target.)
template <size_t kN>
HWY_INLINE void AddScaledTermsV(DF df, const hn::Vec<DF>* a,
                                const simd::OctaveTableV<DF>& t8,
                                const simd::OctaveCoefsV<DF>& c,
                                hn::Vec<DF>* runs) {
  const hn::RebindToSigned<DF> di;
  hn::Vec<DF> scale[kN], t[kN];
  Unroll<kN>([&](auto k) {
    const auto bits = hn::BitCast(di, a[k]);
    scale[k] = Lookup8V(df, hn::ShiftRight<23>(bits), t8);
    t[k] = simd::MantissaMinusOneV(df, bits);
  });
  Unroll<kN>([&](auto k) {
    const auto t2 = hn::Mul(t[k], t[k]);
    const auto t4 = hn::Mul(t2, t2);
    const auto p01 = hn::MulAdd(t[k], c.c1, c.c0);
    const auto p23 = hn::MulAdd(t[k], c.c3, c.c2);
    const auto p45 = hn::MulAdd(t[k], c.c5, c.c4);
    const auto poly = hn::MulAdd(t4, p45, hn::MulAdd(t2, p23, p01));
    runs[k] = hn::MulAdd(poly, scale[k], runs[k]);
  });
}

// An upper bound on x^e for x > 0, e > 0 (within ~10% of it), without a
// libm pow: x = 2^k (1 + f) with log2(1 + f) <= f + 0.0861 (Mitchell's
// approximation's largest error), then 2^y = 2^floor(y) 2^g <= 2^floor(y)
// (1 + g) for g in [0, 1).
HWY_INLINE double PowUpperBound(double x, double e) {
  int k;
  const double m = std::frexp(x, &k);  // x = m 2^k, m in [1/2, 1)
  const double y = (static_cast<double>(k - 1) + (2.0 * m - 1.0) + 0.0861) * e;
  const double fl = std::floor(y);
  return std::ldexp(1.0 + (y - fl), static_cast<int>(fl));
}

// Per-thread buffers of ScaledRowSums.
struct ScaledScratch {
  hwy::AlignedFreeUniquePtr<float[]> small;  // aligned: FloatRunSumWith loads
  int64_t small_size = 0;
  std::vector<float> big, scale, recip, lanes;
  std::vector<double> small_sum, big_sum, spow;
};

// Row sums of every candidate with scaled terms (job.scaled; see above);
// rows with a scale out of [2^-60, 2^60] take OctaveRowSums. *rho becomes
// at least the row's relative bound.
HWY_NOINLINE void ScaledRowSums(const MseJob& job, const float* HWY_RESTRICT x,
                                int64_t n, const CandidateConsts* consts,
                                double* sums, uint8_t* term_kinds,
                                double* rho) {
  const DF df;
  const DD dd;
  const hn::RebindToSigned<DF> di;
  const int64_t nc = job.num_candidates;
  float s_min = HUGE_VALF, s_max = 0.0f;
  for (int64_t c = 0; c < nc; ++c) {
    s_min = std::min(s_min, consts[c].scale);
    s_max = std::max(s_max, consts[c].scale);
  }
  if (!(s_min >= 0x1p-60f && s_max <= 0x1p60f)) {
    OctaveRowSums<QuantKind::kInt, false, true>(job, x, n, consts, sums,
                                                term_kinds, rho);
    return;
  }
  static thread_local ScaledScratch s;
  const int64_t padded =
      (n + kErrorSumLanes - 1) / kErrorSumLanes * kErrorSumLanes;
  const int64_t cpad = (nc + kShrinkPad - 1) / kShrinkPad * kShrinkPad;
  if (s.small_size < padded) {
    s.small = hwy::AllocateAligned<float>(padded);
    s.small_size = padded;
    s.big.resize(padded + kNF);
  }
  if (static_cast<int64_t>(s.recip.size()) < cpad) {
    s.scale.resize(cpad);
    s.recip.resize(cpad);
    s.lanes.resize(cpad * kNF);  // a vector per candidate (short rows), s^p
    s.small_sum.resize(cpad);
    s.big_sum.resize(cpad);
    s.spow.resize(cpad);
  }
  const float q_min = job.spec.q_min, q_max = job.spec.q_max;
  // Small: no candidate clamps it and |u| < q_max + 1/2 (or 1/2 - q_min)
  // for every candidate (x s_min^-1 (1 + 2^-23) stays below the limit with
  // the margin 2^-18, which also covers this float32 arithmetic).
  const float t_hi = (q_max + 0.5f) * s_min * (1.0f - 0x1p-18f);
  const float t_lo = (q_min - 0.5f) * s_min * (1.0f - 0x1p-18f);
  const auto v_lo = hn::Set(df, t_lo), v_hi = hn::Set(df, t_hi);
  auto amax = hn::Zero(df);
  int64_t nb = 0;
  for (int64_t i = 0; i < padded; i += kNF) {
    const auto v = hn::Load(df, x + i);
    const auto small = hn::And(hn::Gt(v, v_lo), hn::Lt(v, v_hi));
    amax = hn::Max(amax, hn::Abs(v));
    hn::Store(hn::IfThenElseZero(small, v), df, s.small.get() + i);
    if (!hn::AllTrue(df, small)) {
      // (big holds kNF more: CompressStore may write a whole vector.)
      nb += static_cast<int64_t>(
          hn::CompressStore(v, hn::Not(small), df, s.big.data() + nb));
    }
  }
  const float a = hn::GetLane(hn::MaxOfLanes(df, amax));
  for (int64_t c = 0; c < cpad; ++c) {
    s.scale[c] = consts[std::min(c, nc - 1)].scale;
  }
  for (int64_t c = 0; c < cpad; c += kNF) {
    hn::StoreU(hn::Div(hn::Set(df, 1.0f), hn::LoadU(df, s.scale.data() + c)),
               df, s.recip.data() + c);
  }
  const float r_max = 1.0f / s_min;  // fl(1 / s) is monotone in s
  const double u_max = static_cast<double>(a) * r_max * (1.0 + 0x1p-20);
  const double q_abs = std::max(-q_min, q_max);
  const double d_max =
      std::max(0.5, u_max - std::min<double>(q_max, -q_min));
  // The big elements' window: the 16 octaves below their largest |d|.
  const int top = OctaveTop(static_cast<float>(d_max * (1.0 + 0x1p-20)));
  if (nb > 0 && !(top >= 0 && d_max < 0x1p100)) {
    OctaveRowSums<QuantKind::kInt, false, true>(job, x, n, consts, sums,
                                                term_kinds, rho);
    return;
  }
  const simd::OctaveCoefsV<DF> coef = MakeOctaveCoefs(job);

  // The small elements, candidate by candidate.
  const simd::OctaveTableV<DF> t8 =
      simd::LoadOctaveTableV(df, job.scaled_table);
  const auto floor_bits = hn::Set(di, kScaledFloorBits);
  const auto cap_bits = hn::Set(di, kScaledCapBits);
  const auto abs_mask = hn::Set(di, 0x7FFFFFFF);
  const auto lookup8 = [&](hn::Vec<hn::RebindToSigned<DF>> bits) {
    return Lookup8V(df, hn::ShiftRight<23>(bits), t8);
  };
  const auto small_error = [&](const float* at, hn::Vec<DF> r) {
    const auto u = hn::Mul(hn::Load(df, at), r);
    const auto bits =
        hn::And(hn::BitCast(di, hn::Sub(u, hn::Round(u))), abs_mask);
    return hn::BitCast(df, hn::Min(hn::Max(bits, floor_bits), cap_bits));
  };
  if (padded <= 16 * static_cast<int64_t>(kNF)) {
    // Short rows (W4A16's groups): each lane of four float32 vectors sums
    // its terms (at most 16 in all: the float32 runs' bound), the four are
    // added, and the lanes of all candidates are added in double at the
    // end, instead of a reduction per candidate. Four vectors per
    // iteration, stage by stage.
    for (int64_t c = 0; c < nc; ++c) {
      if (SameAsPrevious(consts, c)) continue;
      const auto r = hn::Set(df, s.recip[c]);
      hn::Vec<DF> runs[4] = {hn::Zero(df), hn::Zero(df), hn::Zero(df),
                             hn::Zero(df)};
      int64_t i = 0;
      for (; i + 4 * static_cast<int64_t>(kNF) <= padded; i += 4 * kNF) {
        hn::Vec<DF> e[4];
        Unroll<4>([&](auto k) {
          e[k] = small_error(s.small.get() + i + k * kNF, r);
        });
        AddScaledTermsV<4>(df, e, t8, coef, runs);
      }
      for (; i < padded; i += kNF) {
        const hn::Vec<DF> e[1] = {small_error(s.small.get() + i, r)};
        AddScaledTermsV<1>(df, e, t8, coef, runs);
      }
      hn::StoreU(hn::Add(hn::Add(runs[0], runs[2]), hn::Add(runs[1], runs[3])),
                 df, s.lanes.data() + c * kNF);
    }
    for (int64_t c = 0; c < nc; ++c) {
      if (SameAsPrevious(consts, c)) {
        s.small_sum[c] = s.small_sum[c - 1];
        continue;
      }
      // (A double holds a sum of 16 float32 values to within 2^-49 of
      // it, in any order: within the rounding slack FinishUnitErrors adds.)
      const auto v = hn::LoadU(df, s.lanes.data() + c * kNF);
      auto sum = hn::PromoteTo(dd, Part<0>(v));
      if constexpr (kParts == 2) sum = hn::Add(sum, hn::PromoteTo(dd, Part<1>(v)));
      s.small_sum[c] = hn::GetLane(hn::SumOfLanes(dd, sum));
    }
  } else {
    for (int64_t c = 0; c < nc; ++c) {
      if (SameAsPrevious(consts, c)) {
        s.small_sum[c] = s.small_sum[c - 1];
        continue;
      }
      const auto r = hn::Set(df, s.recip[c]);
      s.small_sum[c] = FloatRunSumWith(
          s.small.get(), padded,
          [&](const float* at) { return small_error(at, r); },
          [&](auto count, hn::Vec<DF>* e) {
            simd::WindowPowV<count>(df, e, lookup8, coef);
          });
    }
  }

  // The big elements, across the candidates (lanes), clamped.
  double big_floor = 0.0;
  if (nb > 0) {
    const OctaveWindow w = MakeOctaveWindow(job, top);
    const double back = job.octave_scale[top];
    big_floor = static_cast<double>(nb) * job.octave_floor_term * back;
    const auto vq_min = hn::Set(df, q_min), vq_max = hn::Set(df, q_max);
    for (int64_t c0 = 0; c0 < nc; c0 += kNF) {
      const auto r = hn::LoadU(df, s.recip.data() + c0);
      auto total = hn::Zero(dd);
      auto total1 = hn::Zero(dd);
      for (int64_t j0 = 0; j0 < nb; j0 += kErrorSumLanes) {
        auto run = hn::Zero(df);
        const int64_t j1 = std::min<int64_t>(nb, j0 + kErrorSumLanes);
        for (int64_t j = j0; j < j1; ++j) {
          const auto u = hn::Mul(hn::Set(df, s.big[j]), r);
          const auto q = hn::Min(hn::Max(hn::Round(u), vq_min), vq_max);
          auto e = hn::Max(hn::Abs(hn::Sub(u, q)), w.floor);
          simd::OctavePowV<1>(df, &e, w.table, coef);
          run = hn::Add(run, e);
        }
        total = hn::Add(total, hn::PromoteTo(dd, Part<0>(run)));
        if constexpr (kParts == 2) {
          total1 = hn::Add(total1, hn::PromoteTo(dd, Part<1>(run)));
        }
      }
      HWY_ALIGN double out[kNF];
      hn::Store(total, dd, out);
      if constexpr (kParts == 2) hn::Store(total1, dd, out + kDL);
      for (int64_t k = 0; k < static_cast<int64_t>(kNF) && c0 + k < nc; ++k) {
        s.big_sum[c0 + k] = out[k] * back;
      }
    }
  } else {
    std::fill(s.big_sum.begin(), s.big_sum.begin() + nc, 0.0);
  }

  // s^p, across the candidates: OctavePowV in the 16 octaves below the
  // largest scale (its relative error is within MseOctavePowBound, part of
  // bound_rho), scaled back in double; std::pow where the scales span more.
  const int s_top = OctaveTop(s_max);
  if (s_top >= 0 && static_cast<int>(FloatToBits(s_min) >> 23) >= s_top - 15) {
    const OctaveWindow sw = MakeOctaveWindow(job, s_top);
    for (int64_t c = 0; c < cpad; c += kNF) {
      auto v = hn::LoadU(df, s.scale.data() + c);
      simd::OctavePowV<1>(df, &v, sw.table, coef);
      hn::StoreU(v, df, s.lanes.data() + c);
    }
    const double back = job.octave_scale[s_top];
    for (int64_t c = 0; c < nc; ++c) s.spow[c] = s.lanes[c] * back;
  } else {
    for (int64_t c = 0; c < nc; ++c) {
      s.spow[c] = std::pow(static_cast<double>(consts[c].scale),
                           static_cast<double>(job.norm_exponent));
    }
  }

  // The sums and the row's bound.
  const double back_small = job.octave_scale[kScaledTop];
  double s_low = HUGE_VAL;
  for (int64_t c = 0; c < nc; ++c) {
    const double sd = s.small_sum[c] * back_small + s.big_sum[c];
    s_low = std::min(s_low, sd);
    sums[c] = sd * s.spow[c];
    term_kinds[c] |= kScaledTerms;
  }
  const double p = job.norm_exponent;
  // Floor terms (d units): each of the padded small elements (zeros and the
  // big elements' places included) whose |d| is below the small window's
  // floor f has a term in [0, f^p) and gets f^p times 1 + OctavePowV's
  // error (below 1e-5): 1.0001 f^p covers it; the big window's per big
  // element (its floor_term).
  const double floor_d = static_cast<double>(padded) * 1.0001 *
                             job.octave_scale[kScaledTop - 7] +
                         big_floor;
  const double eta = (3.0 * 0x1p-23 * u_max + 0x1p-24 * (q_abs + 2.0 * d_max) +
                      0x1p-25) *
                     (1.0 + 0x1p-10);
  const double elements = static_cast<double>(padded + nb);
  // A lower bound of the smallest true sum of |d|^p.
  const double s_true = s_low * (1.0 - 1e-4) - floor_d;
  double bound = 1e30;
  if (s_true > 0.0) {
    const double t = PowUpperBound(elements / s_true, 1.0 / p);
    const double et = eta * t;
    // (1 + et)^(p - 1) <= 1 + 2 (p - 1) et for (p - 1) et <= 1.
    const double growth =
        (p - 1.0) * et <= 1.0 ? 1.0 + 2.0 * (p - 1.0) * et
                              : std::pow(1.0 + et, p - 1.0);
    bound = p * et * growth + floor_d / s_true + job.bound_rho;
  }
  // (Capped: a bound of 1e30 already decides nothing, and 1 + inf would
  // turn a zero sum's bracket into NaN.)
  *rho = std::max(*rho, std::min(bound, 1e30));
}

// Row sums of every candidate; OctaveRowSums and ScaledRowSums also OR into
// term_kinds[c] which terms they used for the row (kWindowTerms,
// kApproxTerms, kScaledTerms), and ScaledRowSums raises *rho to its row's
// relative bound.
using RowSumsFn = void (*)(const MseJob&, const float*, int64_t,
                           const CandidateConsts*, double*, uint8_t*,
                           double*);

template <FloatFormat F, QuantKind K, bool kGlobal, bool kLean>
RowSumsFn PickPow(PowMode mode) {
  if constexpr (F != FloatFormat::kF32) {
    return &CandidateRowSums<F, K, kGlobal, kLean, PowMode::kGeneral>;
  } else {
    switch (mode) {
      case PowMode::kSquare:
        return &CandidateRowSums<F, K, kGlobal, kLean, PowMode::kSquare>;
      case PowMode::kCube:
        return &CandidateRowSums<F, K, kGlobal, kLean, PowMode::kCube>;
      case PowMode::kSqrt:
        return &CandidateRowSums<F, K, kGlobal, kLean, PowMode::kSqrt>;
      case PowMode::kApprox:
        return &ApproxRowSums<K, kGlobal, kLean>;
      case PowMode::kOctave:
        return &OctaveRowSums<K, kGlobal, kLean>;
      default:
        return &CandidateRowSums<F, K, kGlobal, kLean, PowMode::kGeneral>;
    }
  }
}

template <FloatFormat F, QuantKind K>
RowSumsFn PickGlobal(const MseJob& job) {
  if (job.has_global_scale) {
    return job.lean ? PickPow<F, K, true, true>(job.pow_mode)
                    : PickPow<F, K, true, false>(job.pow_mode);
  }
  if (job.lean) return PickPow<F, K, false, true>(job.pow_mode);
  return PickPow<F, K, false, false>(job.pow_mode);
}

template <FloatFormat F>
RowSumsFn PickKind(const MseJob& job) {
  switch (job.spec.kind) {
    case QuantKind::kFp8:
      return PickGlobal<F, QuantKind::kFp8>(job);
    case QuantKind::kFp4:
      return PickGlobal<F, QuantKind::kFp4>(job);
    default:
      return PickGlobal<F, QuantKind::kInt>(job);
  }
}

// MinF / MaxF / ClampF of core/quant_math.h for non-NaN inputs, with the
// scalar functions' choice between equal values (Highway's Min/Max leave it
// to the target).
template <class V>
HWY_INLINE V MinFV(V a, V b) {
  return hn::IfThenElse(hn::Lt(a, b), a, b);
}
template <class V>
HWY_INLINE V MaxFV(V a, V b) {
  return hn::IfThenElse(hn::Gt(a, b), a, b);
}
template <class V>
HWY_INLINE V ClampFV(V x, V lo, V hi) {
  return hn::IfThenElse(hn::Lt(x, lo), lo, hn::IfThenElse(hn::Gt(x, hi), hi, x));
}

// FloatToIntLikeTorch of integer-valued floats, widened back to float.
HWY_INLINE hn::Vec<DF> ZeroPointToIntV(hn::Vec<DF> x, ZeroPointKind kind) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  // Truncate; out of [-2^31, 2^31) (and NaN) gives INT32_MIN, as x86's cast.
  const auto in_range = hn::And(hn::Ge(x, hn::Set(df, -2147483648.0f)),
                                hn::Lt(x, hn::Set(df, 2147483648.0f)));
  auto v = hn::IfThenElse(hn::RebindMask(di, in_range), hn::ConvertTo(di, x),
                          hn::Set(di, std::numeric_limits<int32_t>::min()));
  if (kind == ZeroPointKind::kI8) {
    v = hn::ShiftRight<24>(hn::ShiftLeft<24>(v));
  } else if (kind == ZeroPointKind::kI16) {
    v = hn::ShiftRight<16>(hn::ShiftLeft<16>(v));
  }
  return hn::ConvertTo(df, v);
}

// A bound on every computed |fake_quantize(x) - x| of a unit whose values
// lie in [x_min, x_max], per candidate lane (z its zero point as the
// dequantization subtracts it, s its scale or effective scale; +inf where
// there is none, which OctaveTop turns into no window). The dequantized value is (q - z) s
// with q a grid value in [q_min, q_max]: x inside [(q_min - z) s,
// (q_max - z) s] is at most half the grid's widest step from one (1/2 for
// integers, 1 for fp4, 16 for e4m3), x outside it at most its distance to
// the nearer end. The roundings of x / s, q s and the difference add at
// most 3 2^-24 (|x| + Q s), Q = max(|q_min - z|, |q_max - z|), the float32
// evaluation here a few 2^-24 of each part: the slack 2^-20 (a + Q s) and
// the factor 1 + 2^-18 cover both. A dequantized value that may reach 2^127
// (q s can overflow to infinity) gives +inf.
HWY_INLINE hn::Vec<DF> MaxErrorBoundV(const MseJob& job, float x_min,
                                      float x_max, hn::Vec<DF> z,
                                      hn::Vec<DF> s) {
  const DF df;
  const QuantSpec& spec = job.spec;
  s = hn::Abs(s);
  const float half_step = spec.kind == QuantKind::kFp8   ? 16.0f
                          : spec.kind == QuantKind::kFp4 ? 1.0f
                                                         : 0.5f;
  const auto hi_q = hn::Sub(hn::Set(df, spec.q_max), z);
  const auto lo_q = hn::Sub(hn::Set(df, spec.q_min), z);
  const auto top = hn::Mul(hi_q, s), bottom = hn::Mul(lo_q, s);
  const auto inside = MaxFV(
      MaxFV(hn::Mul(hn::Set(df, half_step), s),
            hn::Sub(hn::Set(df, x_max), top)),
      MaxFV(hn::Sub(bottom, hn::Set(df, x_min)), hn::Zero(df)));
  const auto a = hn::Set(df, std::max(std::fabs(x_min), std::fabs(x_max)));
  const auto qs = hn::Mul(MaxFV(hn::Abs(hi_q), hn::Abs(lo_q)), s);
  const auto bound = hn::Mul(
      hn::Add(inside, hn::Mul(hn::Add(a, qs), hn::Set(df, 0x1p-20f))),
      hn::Set(df, 1.0f + 0x1p-18f));
  // !(qs < 2^127) also turns NaN constants into +inf. (qs is the kernel's
  // largest |q - z| s, rounded the same way.)
  return hn::IfThenElse(hn::Lt(qs, hn::Set(df, 0x1p127f)), bound,
                        hn::Set(df, HUGE_VALF));
}

// CandidateParams<F> (then the kernel's constants) of one unit with absolute
// range [a, b] for Lanes(DF) shrink factors at once, lane by lane the bits of
// the scalar ComputeQParams<F> / MakeFakeQuantParams (inputs are finite).
template <FloatFormat F>
HWY_INLINE void CandidateConstsV(const MseJob& job, float a, float b,
                                 const float* HWY_RESTRICT shrink,
                                 float* HWY_RESTRICT scale,
                                 float* HWY_RESTRICT zero_point,
                                 float* HWY_RESTRICT effective,
                                 float* HWY_RESTRICT max_error) {
  const DF df;
  const QuantSpec& spec = job.spec;
  const auto p = hn::LoadU(df, shrink);
  const auto zero = hn::Zero(df);
  const auto cmin = simd::RoundV<F>(df, hn::Mul(p, hn::Set(df, a)));
  const auto cmax = simd::RoundV<F>(df, hn::Mul(p, hn::Set(df, b)));
  // We extend the [min, max] interval to ensure that it contains 0.
  const auto mn = MinFV(cmin, zero);
  const auto mx = MaxFV(cmax, zero);
  const auto g = hn::Set(df, job.global_scale);
  const auto eps = hn::Set(df, kFloat32Eps);
  hn::Vec<DF> s, zp;
  if (spec.symmetric) {
    const auto max_pos = MaxFV(hn::Abs(mn), hn::Abs(mx));
    if (spec.kind == QuantKind::kFp4 && job.has_global_scale) {
      s = hn::Mul(g, simd::RoundV<F>(df, hn::Div(max_pos, hn::Set(df, kFp4Max))));
      s = ClampFV(s, hn::Set(df, -kE4m3fnMax), hn::Set(df, kE4m3fnMax));
      s = simd::E4m3V(df, s);
      s = hn::IfThenElse(hn::Eq(s, zero), hn::Set(df, kFp8ZeroScale), s);
    } else {
      s = simd::RoundV<F>(df,
                          hn::Div(max_pos, hn::Set(df, spec.bit_range * 0.5f)));
      s = MaxFV(s, eps);
    }
    zp = zero;
  } else {
    s = simd::RoundV<F>(
        df, hn::Div(simd::RoundV<F>(df, hn::Sub(mx, mn)),
                    hn::Set(df, spec.bit_range)));
    s = MaxFV(s, eps);
    const auto q_min = hn::Set(df, spec.q_min);
    zp = simd::RoundV<F>(
        df, hn::Sub(q_min, simd::RoundV<F>(df, hn::Div(mn, s))));
    zp = simd::RoundV<F>(df, ClampFV(zp, q_min, hn::Set(df, spec.q_max)));
    if (spec.zp_kind == ZeroPointKind::kF8) {
      zp = simd::E4m3V(df, zp);
    } else {
      zp = ZeroPointToIntV(simd::RoundV<F>(df, hn::Round(zp)), spec.zp_kind);
    }
  }
  const auto eff = job.has_global_scale ? hn::Div(s, g) : s;
  hn::StoreU(s, df, scale);
  hn::StoreU(zp, df, zero_point);
  hn::StoreU(eff, df, effective);
  if (job.pow_mode == PowMode::kOctave) {
    hn::StoreU(MaxErrorBoundV(job, a, b,
                              job.has_global_scale ? zp : simd::RoundV<F>(df, zp),
                              job.has_global_scale ? eff : s),
               df, max_error);
  }
}

// The kernel constants of listed unit i for every candidate.
template <FloatFormat F>
HWY_INLINE void UnitConsts(const MseJob& job, int64_t i,
                           CandidateConsts* consts) {
  const int64_t n = job.num_candidates;
  static_assert(kShrinkPad % kNF == 0, "padding must cover whole vectors");
  HWY_ALIGN float scale[kNF], zp[kNF], eff[kNF], max_error[kNF] = {};
  for (int64_t c0 = 0; c0 < n; c0 += kNF) {
    const int64_t m = std::min<int64_t>(kNF, n - c0);
    CandidateConstsV<F>(job, job.unit_min[i], job.unit_max[i],
                        job.shrink_padded + c0, scale, zp, eff, max_error);
    for (int64_t k = 0; k < m; ++k) {
      consts[c0 + k] = CandidateConsts{scale[k], Round<F>(zp[k]), zp[k],
                                       eff[k], max_error[k]};
    }
  }
}

// Converts n elements of row data to float32 into buf (zero-padded to a
// multiple of 16); returns whether all are finite.
template <FloatFormat F>
HWY_INLINE bool LoadRow(const void* data, int64_t begin, int64_t n,
                        float* HWY_RESTRICT buf) {
  const DF df;
  const hn::RebindToSigned<DF> du;
  const int64_t padded =
      (n + kErrorSumLanes - 1) / kErrorSumLanes * kErrorSumLanes;
  const int64_t vec_end = n / kNF * kNF;
  auto any_bad = hn::Zero(du);
  const auto mag = hn::Set(du, 0x7FFFFFFF);
  for (int64_t i = 0; i < vec_end; i += kNF) {
    const auto v = simd::LoadF32V<F>(df, data, begin + i);
    // A value is non-finite when its magnitude bits are >= 0x7F800000:
    // keep the largest magnitude and test once.
    any_bad = hn::Max(any_bad, hn::And(hn::BitCast(du, v), mag));
    hn::Store(v, df, buf + i);
  }
  bool finite =
      hn::GetLane(hn::MaxOfLanes(du, any_bad)) < 0x7F800000;
  for (int64_t i = vec_end; i < n; ++i) {
    const float v = LoadAs<F>(data, begin + i);
    finite = finite && IsFiniteF(v);
    buf[i] = v;
  }
  for (int64_t i = n; i < padded; ++i) buf[i] = 0.0f;
  return finite;
}

// Writes listed unit i's results from its per-candidate double sums
// (`elements` values each): the errors, or the bounds and keys (see
// MseJob::lo).
template <FloatFormat F>
HWY_INLINE void FinishUnitErrors(const MseJob& job, int64_t i,
                                 int64_t elements,
                                 const CandidateConsts* consts,
                                 const double* total,
                                 const uint8_t* term_kinds,
                                 double scaled_rho) {
  const int64_t ncand = job.num_candidates;
  if (job.lo == nullptr) {  // (job.errors is null when bounds are asked for)
    for (int64_t c = 0; c < ncand; ++c) {
      job.errors[i * ncand + c] = FinishErrorSum<F>(total[c]);
    }
    return;
  }
  const bool octave = F == FloatFormat::kF32 && job.pow_mode == PowMode::kOctave;
  const bool approx =
      octave || (F == FloatFormat::kF32 && job.pow_mode == PowMode::kApprox);
  const double rho = job.bound_rho + static_cast<double>(elements + 16) * 0x1p-51;
  const double fallback_rho =
      job.fallback_rho + static_cast<double>(elements + 16) * 0x1p-51;
  const double n = static_cast<double>(elements);
  for (int64_t c = 0; c < ncand; ++c) {
    const int64_t k = i * ncand + c;
    if (SameAsPrevious(consts, c) && term_kinds[c] == term_kinds[c - 1] &&
        total[c] == total[c - 1]) {
      job.lo[k] = job.lo[k - 1];  // the same bracket and key
      job.hi[k] = job.hi[k - 1];
      job.keys[k] = job.keys[k - 1];
      continue;
    }
    const double sum = total[c];
    // An error clamped to the window's floor f is computed as about f^p
    // where the exact term lies in [0, f^p): 2 f^p covers it.
    // With kOctave a unit's rows may have windowed terms, ApproxPowV terms
    // or exact ones (rows with non-finite values); the bracket covers the
    // kinds used.
    const int top = octave ? OctaveTop(consts[c].max_error) : -1;
    const bool window = octave && (term_kinds[c] & kWindowTerms) != 0;
    const bool fallback = octave && (term_kinds[c] & kApproxTerms) != 0;
    const double slack =
        n * (job.bound_tau +
             (window && top >= 0 ? 2.0 * job.octave_scale[top - 15] : 0.0) +
             (fallback ? job.fallback_tau : 0.0));
    // Scaled terms add their rows' largest relative bound (ScaledRowSums).
    const bool scaled = octave && (term_kinds[c] & kScaledTerms) != 0;
    const double r = (fallback ? std::max(rho, fallback_rho) : rho) +
                     (scaled ? scaled_rho : 0.0);
    float lo, hi;
    if (!approx) {
      lo = hi = FinishErrorSum<F>(sum);
    } else if (!(sum < HUGE_VAL)) {  // +inf or NaN: no bound
      lo = -HUGE_VALF;
      hi = HUGE_VALF;
    } else {
      lo = static_cast<float>((sum - slack) * (1.0 - r));
      hi = static_cast<float>((sum + slack) * (1.0 + r));
    }
    job.lo[k] = lo;
    job.hi[k] = hi;
    job.keys[k] = (uint64_t{FloatToBits(consts[c].scale)} << 32) |
                  FloatToBits(consts[c].zero_point);
  }
}

// Whether MseSearch's step-by-step rule, replayed on listed unit i's
// brackets from its start (no best yet), meets a decision they leave open.
HWY_INLINE bool ReplayOpen(const MseJob& job, int64_t i) {
  const int64_t nc = job.num_candidates;
  const float* lo = job.lo + i * nc;
  const float* hi = job.hi + i * nc;
  const uint64_t* keys = job.keys + i * nc;
  float best_lo = std::numeric_limits<float>::max(), best_hi = best_lo;
  uint64_t best_key = 0;
  bool has_best = false, open = false;
  // Without branches on the outcomes (they are data: mispredicted).
  for (int64_t c = 0; c < nc; ++c) {
    const bool same = has_best && keys[c] == best_key;
    const bool improved = !same && hi[c] < best_lo;
    open |= !same && !improved && !(lo[c] >= best_hi);
    best_lo = improved ? lo[c] : best_lo;
    best_hi = improved ? hi[c] : best_hi;
    best_key = improved ? keys[c] : best_key;
    has_best |= improved;
  }
  return open;
}

template <FloatFormat F>
void MseImpl(const MseJob& job) {
  const TileGrid& g = job.grid;
  const int64_t gc = g.grid_cols();
  const int64_t ncand = job.num_candidates;
  const RowSumsFn row_sums = PickKind<F>(job);
  // Units (not the few-units rows below) take scaled terms first where the
  // job allows them; a unit whose brackets then leave a decision of the
  // search open is summed again with row_sums' tighter windowed terms.
  RowSumsFn first_sums = row_sums;
  if constexpr (F == FloatFormat::kF32) {
    if (job.scaled && job.pow_mode == PowMode::kOctave) {
      first_sums = &ScaledRowSums;
    }
  }
  // Rows of listed unit i.
  auto unit_rows = [&](int64_t i) {
    const int64_t ti = job.units[i] / gc;
    return g.row_end(ti) - g.row_begin(ti);
  };
  auto unit_cols = [&](int64_t i) {
    const int64_t tj = job.units[i] % gc;
    return g.col_end(tj) - g.col_begin(tj);
  };
  // Per-thread scratch: the row as float32, the unit's constants.
  struct Scratch {
    hwy::AlignedFreeUniquePtr<float[]> buf;
    std::vector<FakeQuantParams> params;
    std::vector<CandidateConsts> consts;
    std::vector<double> row;
    std::vector<double> total;
    std::vector<uint8_t> term_kinds;  // see RowSumsFn, per unit
    double scaled_rho = 0.0;          // see RowSumsFn, per unit
  };
  const int64_t max_cols = std::min(g.tile_cols, g.cols);
  const int64_t buf_len =
      (max_cols + kErrorSumLanes - 1) / kErrorSumLanes * kErrorSumLanes;
  auto make_scratch = [&]() {
    Scratch s{hwy::AllocateAligned<float>(buf_len), {}, {}, {}, {}, {}};
    s.term_kinds.resize(ncand);
    s.params.resize(ncand);
    s.consts.resize(ncand);
    s.row.resize(ncand);
    s.total.resize(ncand);
    return s;
  };
  // One row of listed unit i (whose constants are in s): every candidate's
  // row sum into out[ncand], term_kinds flags into term_kinds[ncand].
  // (ti, tj: the unit's tile row and column.)
  auto do_row = [&](RowSumsFn fn, int64_t i, int64_t ti, int64_t tj,
                    int64_t row_in_unit, Scratch& s, double* out,
                    uint8_t* term_kinds) {
    const int64_t r = g.row_begin(ti) + row_in_unit;
    const int64_t c0 = g.col_begin(tj), n = g.col_end(tj) - c0;
    const int64_t begin = r * g.cols + c0;
    if (LoadRow<F>(job.data, begin, n, s.buf.get())) {
      fn(job, s.buf.get(), n, s.consts.data(), out, term_kinds,
         &s.scaled_rho);
      return;
    }
    // A row with non-finite values: the scalar reference path.
    UnitCandidates<F>(job, i, s.params.data());
    const void* data = job.data;
    auto load = [data, begin](int64_t k) { return LoadAs<F>(data, begin + k); };
    for (int64_t c = 0; c < ncand; ++c) {
      out[c] = RowErrorSum<F>(load, n, s.params[c], job.spec,
                              job.norm_exponent, job.skip_nonfinite);
    }
  };
  const int threads = job.threads;
  // Work of one row, to size the hand-out chunks (~2^16 element-candidates).
  const int64_t row_work = std::max<int64_t>(1, max_cols * ncand);
  const bool few_units = job.num_units < 4 * static_cast<int64_t>(threads);
  auto single_rows = [&]() {
    if (g.tile_rows == 1) return true;
    for (int64_t i = 0; i < job.num_units; ++i) {
      if (unit_rows(i) != 1) return false;
    }
    return true;
  };
  if (!few_units || threads == 1 || single_rows()) {
    // Units are the work items; a unit's rows are added in row order. They
    // are visited in memory order (by tile row, a stable counting sort):
    // callers list group units column by column, and jumping a row per
    // unit would defeat the hardware prefetchers.
    std::vector<int64_t> order(job.num_units);
    // Ascending unit indices (MseSearch lists them so) are in memory order
    // already; the check costs no division.
    bool ascending = true;
    for (int64_t i = 1; i < job.num_units && ascending; ++i) {
      ascending = job.units[i - 1] < job.units[i];
    }
    if (ascending) {
      for (int64_t i = 0; i < job.num_units; ++i) order[i] = i;
    } else {
      const int64_t gr = g.grid_rows();
      std::vector<int64_t> first(gr + 1, 0);
      for (int64_t i = 0; i < job.num_units; ++i) ++first[job.units[i] / gc + 1];
      for (int64_t t = 0; t < gr; ++t) first[t + 1] += first[t];
      for (int64_t i = 0; i < job.num_units; ++i) {
        order[first[job.units[i] / gc]++] = i;
      }
    }
    const int64_t unit_work =
        std::max<int64_t>(1, row_work * std::max<int64_t>(1, g.tile_rows));
    ParallelFor(job.num_units, threads,
                std::max<int64_t>(1, (int64_t{1} << 16) / unit_work),
                [&](int64_t begin, int64_t end) {
                  Scratch s = make_scratch();
                  for (int64_t pos = begin; pos < end; ++pos) {
                    const int64_t i = order[pos];
                    UnitConsts<F>(job, i, s.consts.data());
                    // (One division per unit: they cost ~2% of W4A16.)
                    const int64_t ti = job.units[i] / gc;
                    const int64_t tj = job.units[i] - ti * gc;
                    const int64_t rows = g.row_end(ti) - g.row_begin(ti);
                    const int64_t cols = g.col_end(tj) - g.col_begin(tj);
                    auto unit = [&](RowSumsFn fn) {
                      std::fill(s.total.begin(), s.total.end(), 0.0);
                      std::fill(s.term_kinds.begin(), s.term_kinds.end(), 0);
                      s.scaled_rho = 0.0;
                      for (int64_t k = 0; k < rows; ++k) {
                        do_row(fn, i, ti, tj, k, s, s.row.data(),
                               s.term_kinds.data());
                        for (int64_t c = 0; c < ncand; ++c) {
                          s.total[c] += s.row[c];
                        }
                      }
                      FinishUnitErrors<F>(job, i, rows * cols,
                                          s.consts.data(), s.total.data(),
                                          s.term_kinds.data(), s.scaled_rho);
                    };
                    unit(first_sums);
                    if (first_sums != row_sums && job.lo != nullptr &&
                        MseScaledRefine() && ReplayOpen(job, i)) {
                      unit(row_sums);
                    }
                  }
                });
    return;
  }
  // Few units with many rows (tensor, a few blocks): rows are the work
  // items; their sums are kept and added per unit in row order afterwards.
  std::vector<int64_t> start(job.num_units + 1, 0);
  for (int64_t i = 0; i < job.num_units; ++i) {
    start[i + 1] = start[i] + unit_rows(i);
  }
  const int64_t items = start.back();
  std::vector<double> sums(static_cast<size_t>(items * ncand));
  std::vector<uint8_t> term_kinds(static_cast<size_t>(items * ncand), 0);
  ParallelFor(items, threads,
              std::max<int64_t>(1, (int64_t{1} << 16) / row_work),
              [&](int64_t begin, int64_t end) {
                Scratch s = make_scratch();
                int64_t i = std::upper_bound(start.begin(), start.end(), begin) -
                            start.begin() - 1;
                int64_t consts_of = -1;
                for (int64_t item = begin; item < end; ++item) {
                  while (item >= start[i + 1]) ++i;
                  if (consts_of != i) {
                    UnitConsts<F>(job, i, s.consts.data());
                    consts_of = i;
                  }
                  do_row(row_sums, i, job.units[i] / gc, job.units[i] % gc,
                         item - start[i], s,
                         sums.data() + item * ncand,
                         term_kinds.data() + item * ncand);
                }
              });
  Scratch s = make_scratch();
  for (int64_t i = 0; i < job.num_units; ++i) {
    for (int64_t c = 0; c < ncand; ++c) {
      double total = 0.0;
      uint8_t any = 0;
      for (int64_t item = start[i]; item < start[i + 1]; ++item) {
        total += sums[item * ncand + c];
        any |= term_kinds[item * ncand + c];
      }
      s.term_kinds[c] = any;
      s.total[c] = total;
    }
    if (job.lo != nullptr) UnitConsts<F>(job, i, s.consts.data());
    FinishUnitErrors<F>(job, i, unit_rows(i) * unit_cols(i), s.consts.data(),
                        s.total.data(), s.term_kinds.data(), 0.0);
  }
}

// Copies up to kNF values from a[i..n) into buf, padded with zeros; returns
// how many are real (for the test hooks below).
HWY_INLINE int64_t LoadPadded(const float* a, int64_t i, int64_t n,
                              float* HWY_RESTRICT buf) {
  const int64_t m = std::min<int64_t>(kNF, n - i);
  for (int64_t k = 0; k < static_cast<int64_t>(kNF); ++k) {
    buf[k] = k < m ? a[i + k] : 0.0f;
  }
  return m;
}

// PowNorm of n values as the kernel computes error terms for `job` (its
// format, exponent, table; pow_mode kApprox: ApproxPowV), for tests.
void PowNormTarget(const MseJob& job, const float* a, int64_t n, float* out) {
  const DF df;
  const DD dd;
  const PowArgs pa = MakePowArgs(job);
  HWY_ALIGN float in[kNF];
  HWY_ALIGN double parts[kNF];
  for (int64_t i = 0; i < n; i += kNF) {
    const int64_t m = LoadPadded(a, i, n, in);
    const auto e = hn::Load(df, in);
    hn::Vec<DD> t[kParts];
    if (job.format == FloatFormat::kBF16) {
      Terms<FloatFormat::kBF16, PowMode::kGeneral>(e, pa, t);
    } else if (job.format == FloatFormat::kF16) {
      Terms<FloatFormat::kF16, PowMode::kGeneral>(e, pa, t);
    } else if (job.pow_mode == PowMode::kApprox) {
      Terms<FloatFormat::kF32, PowMode::kApprox>(e, pa, t);
    } else {
      Terms<FloatFormat::kF32, PowMode::kGeneral>(e, pa, t);
    }
    for (size_t p = 0; p < kParts; ++p) hn::Store(t[p], dd, parts + p * kDL);
    for (int64_t k = 0; k < m; ++k) out[i + k] = static_cast<float>(parts[k]);
  }
}

// OctavePowV of n values a >= 0 in the window below OctaveTop(max a),
// scaled back to a^p (in double), for tests.
void OctavePowTarget(const MseJob& job, const float* a, int64_t n,
                     double* out) {
  const DF df;
  float max_a = 0.0f;
  for (int64_t i = 0; i < n; ++i) max_a = std::max(max_a, a[i]);
  const int top = OctaveTop(max_a);
  const simd::OctaveCoefsV<DF> coef = MakeOctaveCoefs(job);
  const OctaveWindow w = MakeOctaveWindow(job, top);
  HWY_ALIGN float buf[kNF];
  for (int64_t i = 0; i < n; i += kNF) {
    const int64_t m = LoadPadded(a, i, n, buf);
    hn::Store(simd::OctavePowV(df, hn::Max(hn::Load(df, buf), w.floor),
                               w.table, coef),
              df, buf);
    for (int64_t k = 0; k < m; ++k) {
      out[i + k] = static_cast<double>(buf[k]) * job.octave_scale[top];
    }
  }
}

// GridV<kind> of n values, for tests.
void GridTarget(QuantKind kind, const float* in, int64_t n, float* out) {
  const DF df;
  HWY_ALIGN float buf[kNF];
  for (int64_t i = 0; i < n; i += kNF) {
    const int64_t m = LoadPadded(in, i, n, buf);
    const auto v = hn::Load(df, buf);
    const auto g = kind == QuantKind::kFp4   ? simd::GridV<QuantKind::kFp4>(df, v)
                   : kind == QuantKind::kFp8 ? simd::GridV<QuantKind::kFp8>(df, v)
                                             : simd::GridV<QuantKind::kInt>(df, v);
    hn::Store(g, df, buf);
    for (int64_t k = 0; k < m; ++k) out[i + k] = buf[k];
  }
}

void CandidateParamsTarget(const MseJob& job, FakeQuantParams* out) {
  std::vector<CandidateConsts> consts(job.num_candidates);
  switch (job.format) {
    case FloatFormat::kF16:
      UnitConsts<FloatFormat::kF16>(job, 0, consts.data());
      break;
    case FloatFormat::kBF16:
      UnitConsts<FloatFormat::kBF16>(job, 0, consts.data());
      break;
    default:
      UnitConsts<FloatFormat::kF32>(job, 0, consts.data());
      break;
  }
  for (int64_t c = 0; c < job.num_candidates; ++c) {
    out[c].scale = consts[c].scale;
    out[c].zero_point = consts[c].zero_point;
    out[c].has_global_scale = job.has_global_scale;
    out[c].effective_scale = consts[c].effective_scale;
  }
}

// ------------------------------------------------ quantization statistics

// One row's statistics (see SimdQuantErrorStats), read from the tensor, or
// from buf (the row as float32 with 16 zero floats of padding) when given. kLean as in AbsError (the grid
// value may then differ from QuantizeToGrid's in the sign of a zero only,
// which changes neither the clipped count nor (x - fq)^2).
template <FloatFormat F, QuantKind K, bool kGlobal, bool kLean>
void RowQuantStats(const QuantStatsJob& job, int64_t r,
                   float* HWY_RESTRICT buf) {
  const DF df;
  const DD dd;
  const hn::RebindToSigned<DF> di;
  const auto one = hn::Set(di, 1);
  auto clipped_v = hn::Zero(di), finite_v = hn::Zero(di);
  const TileGrid& g = job.grid;
  const int64_t gc = g.grid_cols();
  const int64_t ti = r / g.tile_rows;
  const auto q_min = hn::Set(df, job.spec.q_min);
  const auto q_max = hn::Set(df, job.spec.q_max);
  hn::Vec<DD> acc_s[kAccs], acc_n[kAccs];
  for (size_t a = 0; a < kAccs; ++a) {
    acc_s[a] = hn::Zero(dd);
    acc_n[a] = hn::Zero(dd);
  }
  int64_t clipped = 0, finite = 0;
  for (int64_t tj = 0; tj < gc; ++tj) {
    const int64_t u = ti * gc + tj;
    const float scale = LoadAs<F>(job.scale, u);
    const float zero_point = LoadZeroPoint(job.zero_point, u, job.zp_kind);
    const auto vscale = hn::Set(df, scale);
    const auto vzp_rounded = hn::Set(df, Round<F>(zero_point));
    const auto vzp = hn::Set(df, zero_point);
    const auto veff = hn::Set(
        df, job.has_global_scale ? scale / job.global_scale : scale);
    const int64_t c0 = g.col_begin(tj), n = g.col_end(tj) - c0;
    for (int64_t b = 0; b < n; b += kErrorSumLanes) {
      const int64_t valid = std::min<int64_t>(kErrorSumLanes, n - b);
      for (size_t i = 0; i < kVecs; ++i) {
        const int64_t base = b + static_cast<int64_t>(i * kNF);
        // Rows but the last are read in place (a vector may run into the
        // next row: those lanes are masked out); the last row from buf.
        const auto x =
            buf == nullptr
                ? simd::LoadF32V<F>(df, job.data, r * g.cols + c0 + base)
                : hn::LoadU(df, buf + c0 + base);
        // Finite and inside the segment.
        const auto mag = hn::And(hn::BitCast(di, x), hn::Set(di, 0x7FFFFFFF));
        const auto ok = hn::And(
            hn::RebindMask(df, hn::Lt(mag, hn::Set(di, 0x7F800000))),
            hn::FirstN(df, static_cast<size_t>(
                               std::max<int64_t>(0, valid - base + b))));
        hn::Vec<DF> q, fq;
        if constexpr (kLean && !kGlobal) {
          q = simd::GridV<K>(
              df, hn::Min(hn::Max(simd::RoundV<F>(df, hn::Div(x, vscale)),
                                  q_min),
                          q_max));
          fq = simd::RoundV<F>(df, hn::Mul(q, vscale));
        } else {
          q = QuantizeV<F, K, kGlobal>(df, x, vscale, vzp_rounded, veff, q_min,
                                       q_max);
          fq = DequantizeV<F, kGlobal>(df, q, vscale, vzp_rounded, vzp, veff);
        }
        const auto oki = hn::RebindMask(di, ok);
        finite_v = hn::Add(finite_v, hn::IfThenElseZero(oki, one));
        clipped_v = hn::Add(
            clipped_v,
            hn::IfThenElseZero(
                hn::RebindMask(di, hn::And(ok, hn::Or(hn::Eq(q, q_min),
                                                       hn::Eq(q, q_max)))),
                one));
        // Masked-out lanes add +0.0: accumulators unchanged.
        const auto xm = hn::IfThenElseZero(ok, x);
        const auto fm = hn::IfThenElseZero(ok, fq);
        const auto add = [&](size_t p, hn::Vec<DD> xd, hn::Vec<DD> fd) {
          const auto e = hn::Sub(xd, fd);
          acc_s[kParts * i + p] = hn::Add(acc_s[kParts * i + p], hn::Mul(xd, xd));
          acc_n[kParts * i + p] = hn::Add(acc_n[kParts * i + p], hn::Mul(e, e));
        };
        add(0, hn::PromoteTo(dd, Part<0>(xm)), hn::PromoteTo(dd, Part<0>(fm)));
        if constexpr (kParts == 2) {
          add(1, hn::PromoteTo(dd, Part<1>(xm)),
              hn::PromoteTo(dd, Part<1>(fm)));
        }
      }
    }
  }
  HWY_ALIGN double lanes_s[kErrorSumLanes], lanes_n[kErrorSumLanes];
  for (size_t a = 0; a < kAccs; ++a) {
    hn::Store(acc_s[a], dd, lanes_s + a * kDL);
    hn::Store(acc_n[a], dd, lanes_n + a * kDL);
  }
  double s = 0.0, e = 0.0;
  for (int l = 0; l < kErrorSumLanes; ++l) {
    s += lanes_s[l];
    e += lanes_n[l];
  }
  // Per-lane counts of one row (each at most cols / lanes + 1) fit int32.
  HWY_ALIGN int32_t counts[kNF];
  hn::Store(clipped_v, di, counts);
  for (size_t l = 0; l < kNF; ++l) clipped += counts[l];
  hn::Store(finite_v, di, counts);
  for (size_t l = 0; l < kNF; ++l) finite += counts[l];
  job.signal[r] = s;
  job.noise[r] = e;
  job.clipped[r] = clipped;
  job.finite[r] = finite;
}

using RowStatsFn = void (*)(const QuantStatsJob&, int64_t, float*);

template <FloatFormat F, QuantKind K>
RowStatsFn PickStatsGlobal(const QuantStatsJob& job) {
  if (job.has_global_scale) return &RowQuantStats<F, K, true, false>;
  if (LeanArgs(F, job.spec)) return &RowQuantStats<F, K, false, true>;
  return &RowQuantStats<F, K, false, false>;
}

// The tensor's last row as float32, zero-padded to buf_len.
template <FloatFormat F>
void LoadLastRow(const QuantStatsJob& job, int64_t r, float* buf,
                 int64_t buf_len) {
  const int64_t cols = job.grid.cols;
  for (int64_t k = 0; k < cols; ++k) {
    buf[k] = LoadAs<F>(job.data, r * cols + k);
  }
  for (int64_t k = cols; k < buf_len; ++k) buf[k] = 0.0f;
}

template <FloatFormat F>
void QuantStatsImpl(const QuantStatsJob& job) {
  RowStatsFn fn;
  switch (job.spec.kind) {
    case QuantKind::kFp8:
      fn = PickStatsGlobal<F, QuantKind::kFp8>(job);
      break;
    case QuantKind::kFp4:
      fn = PickStatsGlobal<F, QuantKind::kFp4>(job);
      break;
    default:
      fn = PickStatsGlobal<F, QuantKind::kInt>(job);
      break;
  }
  const int64_t cols = job.grid.cols;
  const int64_t buf_len =
      (cols + kErrorSumLanes - 1) / kErrorSumLanes * kErrorSumLanes +
      kErrorSumLanes;
  ParallelFor(job.grid.rows, job.threads,
              std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, cols)),
              [&](int64_t begin, int64_t end) {
                for (int64_t r = begin; r < end; ++r) {
                  // In-place vector loads may read up to 15 elements past
                  // a row's end: fine except after the tensor's last row.
                  if (r + 1 < job.grid.rows) {
                    fn(job, r, nullptr);
                    continue;
                  }
                  auto buf = hwy::AllocateAligned<float>(buf_len);
                  LoadLastRow<F>(job, r, buf.get(), buf_len);
                  fn(job, r, buf.get());
                }
              });
}

void QuantStatsTarget(const QuantStatsJob& job) {
  switch (job.format) {
    case FloatFormat::kF16:
      return QuantStatsImpl<FloatFormat::kF16>(job);
    case FloatFormat::kBF16:
      return QuantStatsImpl<FloatFormat::kBF16>(job);
    default:
      return QuantStatsImpl<FloatFormat::kF32>(job);
  }
}

void MseTarget(const MseJob& job) {
  switch (job.format) {
    case FloatFormat::kF16:
      return MseImpl<FloatFormat::kF16>(job);
    case FloatFormat::kBF16:
      return MseImpl<FloatFormat::kBF16>(job);
    default:
      return MseImpl<FloatFormat::kF32>(job);
  }
}

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace internal_cpu
}  // namespace qcal
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <atomic>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "core/cpu/reference_kernels.h"
#include "core/cpu/simd_kernels.h"
#include "core/qparams.h"
#include "core/status_macros.h"

namespace qcal {
namespace internal_cpu {

namespace {
std::atomic<bool> g_scaled_refine{true};
}  // namespace

bool MseScaledRefine() {
  return g_scaled_refine.load(std::memory_order_relaxed);
}

HWY_EXPORT(MseTarget);
HWY_EXPORT(PowNormTarget);
HWY_EXPORT(OctavePowTarget);
HWY_EXPORT(CandidateParamsTarget);
HWY_EXPORT(GridTarget);
HWY_EXPORT(QuantStatsTarget);

// The dispatch happens inside this namespace: with a single compiled target
// HWY_DYNAMIC_DISPATCH(F) is the unqualified N_<TARGET>::F.
void DispatchMse(const MseJob& job) { HWY_DYNAMIC_DISPATCH(MseTarget)(job); }
void DispatchQuantStats(const QuantStatsJob& job) {
  HWY_DYNAMIC_DISPATCH(QuantStatsTarget)(job);
}
void DispatchCandidateParams(const MseJob& job, FakeQuantParams* out) {
  HWY_DYNAMIC_DISPATCH(CandidateParamsTarget)(job, out);
}
void DispatchPowNorm(const MseJob& job, const float* a, int64_t n,
                     float* out) {
  HWY_DYNAMIC_DISPATCH(PowNormTarget)(job, a, n, out);
}
void DispatchOctavePow(const MseJob& job, const float* a, int64_t n,
                       double* out) {
  HWY_DYNAMIC_DISPATCH(OctavePowTarget)(job, a, n, out);
}
void DispatchGrid(QuantKind kind, const float* in, int64_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(GridTarget)(kind, in, n, out);
}

void SetApproxPow(float p, MseJob* job) {
  job->approx_p_hi = BitsToFloat(FloatToBits(p) & ~uint32_t{0xFFF});
  job->approx_p_lo = p - job->approx_p_hi;  // exact
  for (int i = 0; i < 4; ++i) {
    job->approx_log[i] = static_cast<float>(static_cast<double>(p) *
                                            2.8853900817779268 /  // 2 / ln 2
                                            (2 * i + 1));
  }
}

void UseOctavePow(const OctaveConsts& octave, MseJob* job) {
  job->pow_mode = PowMode::kOctave;
  job->octave_tables = octave.tables;
  job->octave_scale = octave.scale;
  job->octave_floor_term = octave.floor_term;
  job->scaled_table = octave.scaled_table;
  std::copy(octave.coef, octave.coef + 6, job->octave_coef);
}

void SetOctavePow(float p, OctaveConsts* out) {
  const double pd = p;
  for (int r = 0; r < 16; ++r) {
    const int top = 128 + r;  // any top with top mod 16 = r
    for (int e = top - 15; e <= top; ++e) {
      out->tables[16 * r + (e & 15)] =
          static_cast<float>(std::exp2(pd * (e - top)));
    }
  }
  for (int e = 0; e < 256; ++e) out->scale[e] = std::exp2(pd * (e - 127));
  out->floor_term = 2.0 * std::exp2(-15.0 * pd);
  for (int e = 118; e <= 125; ++e) {
    const float v = static_cast<float>(std::exp2(pd * (e - 125)));
    out->scaled_table[e & 7] = v;
    out->scaled_table[(e & 7) + 8] = v;
  }
  // The interpolant of (1 + t)^p at the Chebyshev nodes of [0, 1], by
  // Gaussian elimination with partial pivoting on the Vandermonde system.
  constexpr int kN = 6;
  double a[kN][kN + 1];
  for (int k = 0; k < kN; ++k) {
    const double t = 0.5 + 0.5 * std::cos((2 * k + 1) * M_PI / (2 * kN));
    double power = 1.0;
    for (int i = 0; i < kN; ++i, power *= t) a[k][i] = power;
    a[k][kN] = std::pow(1.0 + t, pd);
  }
  for (int col = 0; col < kN; ++col) {
    int pivot = col;
    for (int r = col + 1; r < kN; ++r) {
      if (std::fabs(a[r][col]) > std::fabs(a[pivot][col])) pivot = r;
    }
    std::swap(a[col], a[pivot]);
    for (int r = col + 1; r < kN; ++r) {
      const double f = a[r][col] / a[col][col];
      for (int i = col; i <= kN; ++i) a[r][i] -= f * a[col][i];
    }
  }
  double c[kN];
  for (int r = kN - 1; r >= 0; --r) {
    double v = a[r][kN];
    for (int i = r + 1; i < kN; ++i) v -= a[r][i] * c[i];
    c[r] = v / a[r][r];
  }
  // The bound, relative to a^p (>= 1 at the top of every octave's range):
  // - interpolation: max |d^6/dt^6 (1 + t)^p| / 6! * 2 (1/4)^6, the
  //   derivative |p (p - 1) ... (p - 5)| (1 + t)^(p - 6) largest at t = 0
  //   for p < 6;
  // - the float32 coefficients: sum |c_f - c| (t <= 1), plus 1e-12 for
  //   the solve;
  // - Estrin's evaluation: each term c_i t^i passes at most 7 roundings,
  //   so the error is below gamma_7 sum |c_i| t^i <= gamma_7 (P(t) + 2
  //   sum over negative c_i of |c_i|), relative to P(t) >= 1 - the above;
  // - the table value's rounding, the product's, and the exact term's own
  //   rounding to float32 (3 units), and PowPositive's error (< 1e-9).
  double derivative = 1.0;
  for (int i = 0; i < kN; ++i) derivative *= std::fabs(pd - i);
  const double interp = derivative / 720.0 * 2.0 / 4096.0;
  double coef_error = 1e-12, negative = 0.0;
  for (int i = 0; i < kN; ++i) {
    out->coef[i] = static_cast<float>(c[i]);
    coef_error += std::fabs(static_cast<double>(out->coef[i]) - c[i]);
    if (out->coef[i] < 0.0f) negative -= out->coef[i];
  }
  constexpr double kU = 0x1p-24;
  const double gamma7 = 7 * kU / (1 - 7 * kU);
  const double low = 1.0 - interp - coef_error;
  out->bound = interp + coef_error + gamma7 * (1.0 + 2.0 * negative / low) +
               3 * kU + 1e-9;
}

namespace {

// PowTable is PowNorm<F>(v, exponent) for every non-negative value v of a
// 16-bit format, indexed by v's bit pattern (NaN codes map to NaN).
struct PowTable {
  FloatFormat format;
  uint32_t exponent_bits;
  std::vector<float> values;
  std::vector<double> wide;  // values widened to double
};

template <FloatFormat F>
std::vector<float> BuildPowTable(float exponent) {
  std::vector<float> t(1 << 15);
  for (uint32_t i = 0; i < t.size(); ++i) {
    const uint16_t bits = static_cast<uint16_t>(i);
    const float v = F == FloatFormat::kBF16 ? Bf16BitsToFloat(bits)
                                            : F16BitsToFloat(bits);
    t[i] = PowNorm<F>(v, exponent);
  }
  return t;
}

// Returns the (cached) table of `format` and `exponent`. Building one costs
// 2^15 scalar pows; calibration uses one or two exponents per process.
std::shared_ptr<const PowTable> GetPowTable(FloatFormat format,
                                            float exponent) {
  static std::mutex* mu = new std::mutex;  // never destroyed
  static auto* cache = new std::vector<std::shared_ptr<const PowTable>>();
  const uint32_t bits = FloatToBits(exponent);
  {
    std::lock_guard<std::mutex> lock(*mu);
    for (const auto& t : *cache) {
      if (t->format == format && t->exponent_bits == bits) return t;
    }
  }
  auto table = std::make_shared<PowTable>();
  table->format = format;
  table->exponent_bits = bits;
  table->values = format == FloatFormat::kBF16
                      ? BuildPowTable<FloatFormat::kBF16>(exponent)
                      : BuildPowTable<FloatFormat::kF16>(exponent);
  table->wide.assign(table->values.begin(), table->values.end());
  std::lock_guard<std::mutex> lock(*mu);
  if (cache->size() >= 8) cache->erase(cache->begin());
  cache->push_back(table);
  return table;
}

// Points the job at the cached table of `format` and `exponent` (f16/bf16;
// nothing for float32: nullptr) and returns it, to be held while the job
// runs.
std::shared_ptr<const PowTable> UsePowTable(FloatFormat format,
                                            float exponent, MseJob* job) {
  if (format == FloatFormat::kF32) return nullptr;
  std::shared_ptr<const PowTable> table = GetPowTable(format, exponent);
  job->pow_table = table->values.data();
  job->pow_table_wide = table->wide.data();
  return table;
}

}  // namespace
}  // namespace internal_cpu

namespace {

// Runs the MSE kernel for `request`: errors into `errors`, or, when `bounds`
// is given, bounds and keys (with ApproxPowV for float32 tensors whose
// exponent has no exact shortcut).
absl::Status RunMse(const MseRequest& request, const ExecOptions& exec,
                    float* errors, const MseBoundsOutput* bounds) {
  absl::Status s = ValidateMseRequest(request);
  if (!s.ok()) return s;
  using internal_cpu::CandidateConsts;
  internal_cpu::MseJob job;
  job.data = request.x.data();
  job.grid = request.grid;
  job.format = request.format;
  job.spec = request.spec;
  job.has_global_scale = request.has_global_scale;
  job.skip_nonfinite = request.nonfinite == NonFinitePolicy::kSkip;
  job.norm_exponent = request.norm_exponent;
  job.units = request.units.data();
  job.num_units = static_cast<int64_t>(request.units.size());
  job.num_candidates = static_cast<int64_t>(request.shrink.size());
  job.threads = ResolveThreads(exec.threads);
  job.errors = errors;
  if (job.num_units == 0 || job.num_candidates == 0) return absl::OkStatus();
  const float e = request.norm_exponent;
  job.pow_mode = e == 2.0f   ? internal_cpu::PowMode::kSquare
                 : e == 3.0f ? internal_cpu::PowMode::kCube
                 : e == 0.5f ? internal_cpu::PowMode::kSqrt
                             : internal_cpu::PowMode::kGeneral;
  const std::shared_ptr<const internal_cpu::PowTable> table =
      internal_cpu::UsePowTable(request.format, e, &job);
  job.global_scale = request.global_scale;
  job.unit_min = request.unit_min.data();
  job.unit_max = request.unit_max.data();
  job.shrink = request.shrink.data();
  std::vector<float> shrink_padded(
      (job.num_candidates + internal_cpu::kShrinkPad - 1) /
      internal_cpu::kShrinkPad * internal_cpu::kShrinkPad);
  for (size_t c = 0; c < shrink_padded.size(); ++c) {
    shrink_padded[c] = request.shrink[std::min<size_t>(c, request.shrink.size() - 1)];
  }
  job.shrink_padded = shrink_padded.data();
  job.lean = internal_cpu::LeanArgs(request.format, request.spec);
  internal_cpu::OctaveConsts octave;
  if (bounds != nullptr) {
    job.lo = bounds->lo;
    job.hi = bounds->hi;
    job.keys = bounds->keys;
    if (request.format == FloatFormat::kF32 &&
        job.pow_mode == internal_cpu::PowMode::kGeneral) {
      // ApproxPowV's terms: all of them, or those of the candidates (rows)
      // OctavePowV leaves to it.
      internal_cpu::SetApproxPow(e, &job);
      const double approx_rho =
          MseApproxPowBound(e) + internal_cpu::kApproxFloatRun * 0x1p-24;
      const double approx_tau = MseApproxPowTinyBound(e);
      if (internal_cpu::OctaveExponentOk(e)) {
        internal_cpu::SetOctavePow(e, &octave);
        internal_cpu::UseOctavePow(octave, &job);
        job.scaled = request.whole_search && job.lean &&
                     internal_cpu::ScaledTermsOk(request.spec,
                                                 request.has_global_scale);
        job.bound_rho = octave.bound + internal_cpu::kApproxFloatRun * 0x1p-24;
        job.bound_tau = 0x1p-125;
        job.fallback_rho = approx_rho;
        job.fallback_tau = approx_tau;
      } else {
        job.pow_mode = internal_cpu::PowMode::kApprox;
        job.bound_rho = approx_rho;
        job.bound_tau = approx_tau;
      }
    }
  }
  internal_cpu::DispatchMse(job);
  return absl::OkStatus();
}

}  // namespace

absl::Status SimdMseErrors(const MseRequest& request, const ExecOptions& exec,
                           float* errors) {
  return RunMse(request, exec, errors, nullptr);
}

absl::Status SimdMseErrorBounds(const MseRequest& request,
                                const ExecOptions& exec,
                                const MseBoundsOutput& out) {
  return RunMse(request, exec, nullptr, &out);
}

double MseApproxPowBound(float exponent) {
  // Four times the analysis of ApproxPowV for an exponent p: rounding and
  // truncation of the logarithm (~2.5e-7 p relative after the exponential),
  // the polynomial of 2^f (3.1e-7), the reference's own rounding to float32
  // (6e-8); tests/core/cpu_kernels_test.cc checks the measured error against
  // half of this.
  return 1e-6 * static_cast<double>(exponent) + 3e-6;
}

bool MseOctavePowServes(float exponent) {
  return internal_cpu::OctaveExponentOk(exponent);
}

double MseOctavePowBound(float exponent) {
  internal_cpu::OctaveConsts octave;
  internal_cpu::SetOctavePow(exponent, &octave);
  return octave.bound;
}

void SimdOctavePowForTest(const float* a, int64_t n, float exponent,
                          double* out) {
  internal_cpu::OctaveConsts octave;
  internal_cpu::SetOctavePow(exponent, &octave);
  internal_cpu::MseJob job;
  job.norm_exponent = exponent;
  internal_cpu::UseOctavePow(octave, &job);
  internal_cpu::DispatchOctavePow(job, a, n, out);
}

double MseApproxPowTinyBound(float exponent) {
  // Inputs below the smallest normal float give 0 where PowNorm gives at
  // most PowPositive(FLT_MIN); a 2^n below it makes the result 0 or a
  // subnormal where PowNorm's is below 2^-126.
  return 2.0 * static_cast<double>(PowPositive(1.17549435e-38f, exponent)) +
         0x1p-125;
}

absl::Status SimdQuantErrorStats(const TensorView& x, const TileGrid& grid,
                                 const QuantSpec& spec,
                                 const TensorView& scale,
                                 const TensorView& zero_point,
                                 std::optional<float> global_scale,
                                 const ExecOptions& exec,
                                 absl::Span<QuantErrorRowStats> rows) {
  QCAL_ASSIGN_OR_RETURN(const FloatFormat format, FloatFormatOf(x.dtype()));
  MinMaxRequest check;
  check.x = x;
  check.grid = grid;
  check.format = format;
  QCAL_RETURN_IF_ERROR(ValidateMinMaxRequest(check));
  QCAL_ASSIGN_OR_RETURN(const ZeroPointKind zp_kind,
                        ZeroPointKindOf(zero_point.dtype()));
  const int64_t units = grid.num_units();
  if (scale.device() != Device::kCpu || !scale.is_contiguous() ||
      scale.dtype() != x.dtype() || scale.numel() != units ||
      zero_point.device() != Device::kCpu || !zero_point.is_contiguous() ||
      zero_point.numel() != units ||
      static_cast<int64_t>(rows.size()) != grid.rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "quantization statistics of ", x.DebugString(), " (", units,
        " units, ", grid.rows, " rows): scales ", scale.DebugString(),
        ", zero points ", zero_point.DebugString(), ", ", rows.size(),
        " outputs"));
  }
  if (grid.rows == 0 || grid.cols == 0) {
    for (QuantErrorRowStats& r : rows) r = QuantErrorRowStats();
    return absl::OkStatus();
  }
  std::vector<double> signal(grid.rows), noise(grid.rows);
  std::vector<int64_t> clipped(grid.rows), finite(grid.rows);
  internal_cpu::QuantStatsJob job;
  job.data = x.data();
  job.grid = grid;
  job.format = format;
  job.spec = spec;
  job.has_global_scale = global_scale.has_value();
  job.global_scale = global_scale.value_or(1.0f);
  job.scale = scale.data();
  job.zero_point = zero_point.data();
  job.zp_kind = zp_kind;
  job.threads = ResolveThreads(exec.threads);
  job.signal = signal.data();
  job.noise = noise.data();
  job.clipped = clipped.data();
  job.finite = finite.data();
  internal_cpu::DispatchQuantStats(job);
  for (int64_t r = 0; r < grid.rows; ++r) {
    rows[r] = QuantErrorRowStats{signal[r], noise[r], clipped[r], finite[r]};
  }
  return absl::OkStatus();
}

void SimdCandidateParamsForTest(FloatFormat format, const QuantSpec& spec,
                                bool has_global_scale, float global_scale,
                                float a, float b,
                                const std::vector<float>& shrink,
                                std::vector<FakeQuantParams>* out) {
  internal_cpu::MseJob job;
  job.format = format;
  job.spec = spec;
  job.has_global_scale = has_global_scale;
  job.global_scale = global_scale;
  job.unit_min = &a;
  job.unit_max = &b;
  job.num_units = 1;
  job.shrink = shrink.data();
  job.num_candidates = static_cast<int64_t>(shrink.size());
  std::vector<float> padded(shrink);
  while (padded.size() % internal_cpu::kShrinkPad != 0) {
    padded.push_back(shrink.back());
  }
  job.shrink_padded = padded.data();
  out->resize(shrink.size());
  internal_cpu::DispatchCandidateParams(job, out->data());
}

void SimdPowNormForTest(FloatFormat format, const float* a, int64_t n,
                        float exponent, float* out) {
  internal_cpu::MseJob job;
  job.format = format;
  job.norm_exponent = exponent;
  const std::shared_ptr<const internal_cpu::PowTable> table =
      internal_cpu::UsePowTable(format, exponent, &job);
  internal_cpu::DispatchPowNorm(job, a, n, out);
}

void SetMseScaledRefineForTest(bool enabled) {
  internal_cpu::g_scaled_refine.store(enabled, std::memory_order_relaxed);
}

void SimdGridForTest(QuantKind kind, const float* in, int64_t n,
                     float* out) {
  internal_cpu::DispatchGrid(kind, in, n, out);
}

void SimdApproxPowForTest(const float* a, int64_t n, float exponent,
                          float* out) {
  internal_cpu::MseJob job;
  job.norm_exponent = exponent;
  job.pow_mode = internal_cpu::PowMode::kApprox;
  internal_cpu::SetApproxPow(exponent, &job);
  internal_cpu::DispatchPowNorm(job, a, n, out);
}

}  // namespace qcal
#endif  // HWY_ONCE
