// The scalar quantization math of SPEC §3-§8, written once and shared by the
// CPU code and the CUDA kernels (QCAL_HD): quantized ranges, qparams from a
// unit's min/max, the global scale, fake quantization, the moving average and
// the MSE error term.
//
// Reduced precision (SPEC §8). Values of an f16/bf16 observed tensor travel as
// float32 numbers that hold a value of that format exactly. Each elementwise
// step computes in float32 and rounds the result back with Round<F>() — what
// PyTorch's CPU kernels do for such tensors (they widen to float, compute, and
// narrow after every operation). For float32 tensors Round<F> is the identity.
// Where PyTorch promotes to float32 (an operand is a float32 tensor, as the
// global scale is), the step is not rounded; those places say so.
//
// Nothing here may be contracted into an FMA: every file including this
// header is compiled with -ffp-contract=off (nvcc: --fmad=false).
#ifndef QCAL_CORE_QUANT_MATH_H_
#define QCAL_CORE_QUANT_MATH_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/float_convert.h"
#include "core/host_device.h"

namespace qcal {

// FloatFormat is the element format of an observed tensor.
enum class FloatFormat : uint8_t { kF32, kF16, kBF16 };

// Round<F> rounds a float32 result to the observed format F.
template <FloatFormat F>
QCAL_HD_INLINE float Round(float x) {
  if constexpr (F == FloatFormat::kF32) {
    return x;
  } else if constexpr (F == FloatFormat::kF16) {
    return RoundToF16(x);
  } else {
    return RoundToBf16(x);
  }
}

// FormatMax is torch.finfo(dtype).max of a format: its largest finite value
// (the MSE search's initial "best" error).
QCAL_HD_INLINE float FormatMax(FloatFormat f) {
  switch (f) {
    case FloatFormat::kF16:
      return 65504.0f;
    case FloatFormat::kBF16:
      return Bf16BitsToFloat(0x7F7F);
    default:
      return BitsToFloat(0x7F7FFFFFu);
  }
}

// RoundTo is Round<F> with the format chosen at run time.
QCAL_HD_INLINE float RoundTo(FloatFormat f, float x) {
  switch (f) {
    case FloatFormat::kF16:
      return RoundToF16(x);
    case FloatFormat::kBF16:
      return RoundToBf16(x);
    default:
      return x;
  }
}

// QuantKind is the family of quantized values.
enum class QuantKind : uint8_t { kInt, kFp8, kFp4 };

// ZeroPointKind is the storage type of zero points (SPEC §3).
enum class ZeroPointKind : uint8_t { kI8, kI16, kI32, kF8 };

// kFloat32Eps is torch.finfo(torch.float32).eps = 2^-23, the smallest scale.
inline constexpr float kFloat32Eps = 1.1920928955078125e-07f;
// kFloat32Tiny is torch.finfo(torch.float32).tiny = 2^-126 (FLT_MIN).
inline constexpr float kFloat32Tiny = 1.1754943508222875e-38f;
// kFp4Max is the largest float4_e2m1 value.
inline constexpr float kFp4Max = 6.0f;
// kFp8ZeroScale replaces a zero fp8 scale (the smallest normal-ish step the
// compressed-tensors code picks: 0.125).
inline constexpr float kFp8ZeroScale = 0.125f;

// QuantSpec is the plain-data description of a quantized type that the math
// needs, derived from QuantizationArgs (see MakeQuantSpec in qparams.h).
struct QuantSpec {
  QuantKind kind = QuantKind::kInt;
  ZeroPointKind zp_kind = ZeroPointKind::kI8;
  bool symmetric = true;
  // SPEC §3, float32: q_min, q_max, bit_range = q_max - q_min.
  float q_min = -128.0f;
  float q_max = 127.0f;
  float bit_range = 255.0f;
};

// QuantSpecFor builds the QuantSpec of `num_bits` integers or floats.
QCAL_HD_INLINE QuantSpec QuantSpecFor(bool is_float, int num_bits,
                                      bool symmetric) {
  QuantSpec spec;
  spec.symmetric = symmetric;
  if (is_float) {
    spec.kind = num_bits == 4 ? QuantKind::kFp4 : QuantKind::kFp8;
    spec.zp_kind = ZeroPointKind::kF8;
    spec.q_max = num_bits == 4 ? kFp4Max : kE4m3fnMax;
    spec.q_min = -spec.q_max;
  } else {
    spec.kind = QuantKind::kInt;
    spec.zp_kind = num_bits <= 8    ? ZeroPointKind::kI8
                   : num_bits <= 16 ? ZeroPointKind::kI16
                                    : ZeroPointKind::kI32;
    // 2^(b-1) in double, then held as float32 (for b = 32, q_max rounds to
    // 2^31 exactly as torch.tensor(2**31 - 1.0) does).
    const double half = std::ldexp(1.0, num_bits - 1);
    spec.q_max = static_cast<float>(half - 1.0);
    spec.q_min = static_cast<float>(-half);
  }
  spec.bit_range = spec.q_max - spec.q_min;
  return spec;
}

// RoundHalfEven rounds to the nearest integer, ties to even (torch.round).
QCAL_HD_INLINE float RoundHalfEven(float x) {
#if defined(__CUDA_ARCH__)
  return rintf(x);
#else
  return std::nearbyint(x);
#endif
}

// Fp4Round maps a value to the nearest float4_e2m1 value by compressed-tensors'
// table (SPEC §6), keeping the sign. Boundaries: <= 0.25 -> 0, < 0.75 -> 0.5,
// <= 1.25 -> 1, < 1.75 -> 1.5, <= 2.5 -> 2, < 3.5 -> 3, <= 5 -> 4, else 6.
QCAL_HD_INLINE float Fp4Round(float x) {
  const float a = std::fabs(x);
  float q;
  if (a <= 0.25f) {
    q = 0.0f;
  } else if (a < 0.75f) {
    q = 0.5f;
  } else if (a <= 1.25f) {
    q = 1.0f;
  } else if (a < 1.75f) {
    q = 1.5f;
  } else if (a <= 2.5f) {
    q = 2.0f;
  } else if (a < 3.5f) {
    q = 3.0f;
  } else if (a <= 5.0f) {
    q = 4.0f;
  } else {
    q = 6.0f;
  }
  // torch.sign(x) * q: sign(0) is 0, so zero inputs give +0.
  return x < 0.0f ? -q : (x > 0.0f ? q : 0.0f * q);
}

// RoundToQuantGrid rounds a clamped value to the quantized grid: integers half
// to even, fp8 e4m3fn nearest even, fp4 by the table.
QCAL_HD_INLINE float RoundToQuantGrid(float q, QuantKind kind) {
  switch (kind) {
    case QuantKind::kFp8:
      return RoundToE4m3fn(q);
    case QuantKind::kFp4:
      return Fp4Round(q);
    default:
      return RoundHalfEven(q);
  }
}

// ClampF is min(max(x, lo), hi), propagating NaN like torch.clamp.
QCAL_HD_INLINE float ClampF(float x, float lo, float hi) {
  if (x != x) return x;
  return x < lo ? lo : (x > hi ? hi : x);
}

// MaxF / MinF are torch.max / torch.min of two values (NaN propagates).
QCAL_HD_INLINE float MaxF(float a, float b) {
  if (a != a || b != b) return a + b;
  return a > b ? a : b;
}
QCAL_HD_INLINE float MinF(float a, float b) {
  if (a != a || b != b) return a + b;
  return a < b ? a : b;
}

// FloatToIntLikeTorch converts an integer-valued float to a `bits`-wide signed
// integer the way PyTorch's CPU cast does on x86: truncation to int32 (NaN and
// out-of-range give INT32_MIN, the "integer indefinite" value), then keeping
// the low bits (wrap-around). Only reachable in corner cases, e.g. an int16
// zero point of 32767 that bf16 rounds to 32768 becomes -32768.
QCAL_HD_INLINE int32_t FloatToIntLikeTorch(float x, ZeroPointKind kind) {
  int32_t v;
  if (!(x >= -2147483648.0f && x < 2147483648.0f)) {
    v = INT32_MIN;
  } else {
    v = static_cast<int32_t>(x);
  }
  switch (kind) {
    case ZeroPointKind::kI8:
      return static_cast<int8_t>(static_cast<uint8_t>(v & 0xFF));
    case ZeroPointKind::kI16:
      return static_cast<int16_t>(static_cast<uint16_t>(v & 0xFFFF));
    default:
      return v;
  }
}

// ScalarQParams is one unit's scale and zero point. `scale` is a value of the
// observed format; `zero_point` is the value stored in the zero-point dtype
// (an integer, or an fp8 value), as a float, which holds it exactly.
struct ScalarQParams {
  float scale;
  float zero_point;
};

// ComputeQParams is calculate_qparams (SPEC §4) for one unit of format F.
// `global_scale` is used only for symmetric fp4 when `has_global_scale`.
// fp4 asymmetric is rejected before this is reached (Unimplemented upstream).
template <FloatFormat F>
QCAL_HD_INLINE ScalarQParams ComputeQParams(float min_val, float max_val,
                                            const QuantSpec& spec,
                                            bool has_global_scale,
                                            float global_scale) {
  // We extend the [min, max] interval to ensure that it contains 0.
  const float mn = MinF(min_val, 0.0f);
  const float mx = MaxF(max_val, 0.0f);
  ScalarQParams qp;
  if (spec.symmetric) {
    const float max_pos = MaxF(std::fabs(mn), std::fabs(mx));
    if (spec.kind == QuantKind::kFp4 && has_global_scale) {
      // global_scale is a float32 tensor of shape [1], so the product is
      // promoted to float32 (no rounding to F); max_pos / 6 is rounded to F.
      float s = global_scale * Round<F>(max_pos / kFp4Max);
      s = ClampF(s, -kE4m3fnMax, kE4m3fnMax);
      s = RoundToE4m3fn(s);
      // A zero fp8 scale would divide by zero; use 0.125 instead.
      if (s == 0.0f) s = kFp8ZeroScale;
      qp.scale = s;  // an fp8 value: exact in every observed format
    } else {
      // bit_range / 2 is exact in float32 (SPEC: a double constant).
      const float s = Round<F>(max_pos / (spec.bit_range * 0.5f));
      qp.scale = MaxF(s, kFloat32Eps);  // eps is exact in f16 and bf16
    }
    qp.zero_point = 0.0f;
    return qp;
  }
  float s = Round<F>(Round<F>(mx - mn) / spec.bit_range);
  s = MaxF(s, kFloat32Eps);
  float zp = Round<F>(spec.q_min - Round<F>(mn / s));
  // Clamping in float32 then rounding equals clamping with bounds rounded to
  // F, because rounding is monotonic and zp already is an F value.
  zp = Round<F>(ClampF(zp, spec.q_min, spec.q_max));
  qp.scale = s;
  if (spec.zp_kind == ZeroPointKind::kF8) {
    qp.zero_point = RoundToE4m3fn(zp);
  } else {
    qp.zero_point = static_cast<float>(
        FloatToIntLikeTorch(Round<F>(RoundHalfEven(zp)), spec.zp_kind));
  }
  return qp;
}

// GlobalScale is generate_gparam (SPEC §5) from a tensor's min and max:
// 448 * 6 / max(|min(min, 0)|, |max(max, 0)|, FLT_MIN) in float32, with a
// non-finite result replaced by 1.
QCAL_HD_INLINE float GlobalScale(float min_val, float max_val) {
  float m = MaxF(std::fabs(MinF(min_val, 0.0f)), std::fabs(MaxF(max_val, 0.0f)));
  m = MaxF(m, kFloat32Tiny);
  const float g = (kE4m3fnMax * kFp4Max) / m;
  return (g != g || g == INFINITY || g == -INFINITY) ? 1.0f : g;
}

// MovingAverage is `running + c * (current - running)` with each step rounded
// to F; `c` is averaging_constant as float32 (PyTorch's opmath scalar).
template <FloatFormat F>
QCAL_HD_INLINE float MovingAverage(float running, float current, float c) {
  return Round<F>(running + Round<F>(c * Round<F>(current - running)));
}

// FakeQuantParams is what FakeQuantize needs for one unit.
struct FakeQuantParams {
  float scale;       // the unit's scale (value of F, or fp8 value)
  float zero_point;  // stored zero point value
  // With a global scale g, the effective scale is float32(scale) / g and the
  // arithmetic is float32 (the scale became a float32 tensor).
  bool has_global_scale;
  float effective_scale;  // scale / g when has_global_scale
};

// MakeFakeQuantParams precomputes the per-unit constants.
QCAL_HD_INLINE FakeQuantParams MakeFakeQuantParams(const ScalarQParams& qp,
                                                   bool has_global_scale,
                                                   float global_scale) {
  FakeQuantParams p;
  p.scale = qp.scale;
  p.zero_point = qp.zero_point;
  p.has_global_scale = has_global_scale;
  p.effective_scale = has_global_scale ? qp.scale / global_scale : qp.scale;
  return p;
}

// QuantizeToGrid is the quantize half of FakeQuantize: the value x of format F
// mapped to the quantized grid, q = round(clamp(x / s' + zp, q_min, q_max))
// (SPEC §6), with FakeQuantize's rounding steps. The result is a grid value
// (an integer, an fp8 or an fp4 value) in [q_min, q_max], or NaN for a NaN x.
template <FloatFormat F>
QCAL_HD_INLINE float QuantizeToGrid(float x, const FakeQuantParams& p,
                                    const QuantSpec& spec) {
  const float zp = Round<F>(p.zero_point);
  if (p.has_global_scale) {
    // x / s' with s' a float32 tensor: promoted to float32 throughout; the
    // zero point is converted to x's dtype first (exact for fp8 zero points).
    float q = x / p.effective_scale + zp;
    q = ClampF(q, spec.q_min, spec.q_max);
    // The grid value stays float32 until dequantized (SPEC §6; the
    // vectorised compressed-tensors path). Exact in F anyway for fp4, fp8 and
    // int8 grids; only wide int grids in f16/bf16 would differ.
    return RoundToQuantGrid(q, spec.kind);
  }
  float q = Round<F>(x / p.scale);
  q = Round<F>(q + zp);
  q = Round<F>(ClampF(q, spec.q_min, spec.q_max));
  return Round<F>(RoundToQuantGrid(q, spec.kind));
}

// DequantizeFromGrid is the dequantize half of FakeQuantize: (q - zp) * s'
// for a grid value q from QuantizeToGrid, rounded to F.
template <FloatFormat F>
QCAL_HD_INLINE float DequantizeFromGrid(float q, const FakeQuantParams& p) {
  if (p.has_global_scale) {
    // Dequantization converts the zero point straight to float32.
    return Round<F>((q - p.zero_point) * p.effective_scale);
  }
  const float zp = Round<F>(p.zero_point);
  return Round<F>(Round<F>(q - zp) * p.scale);
}

// FakeQuantize is quantize-then-dequantize of one value x of format F
// (SPEC §6), the result rounded to F as compressed-tensors stores it.
template <FloatFormat F>
QCAL_HD_INLINE float FakeQuantize(float x, const FakeQuantParams& p,
                                  const QuantSpec& spec) {
  return DequantizeFromGrid<F>(QuantizeToGrid<F>(x, p, spec), p);
}

// ------------------------------------------------------------- MSE error

// PowPositive returns a^e for a >= 0 and e > 0, rounded to float32.
//
// It is written with IEEE-754 double operations only (+ - * / and exact bit
// manipulation; no libm, no FMA), so that the CPU scalar code, the SIMD
// kernels on every target and the CUDA kernels produce the same bits. Method:
// a = 2^k * m with m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh(t), t = (m-1)/(m+1),
// |t| <= 0.1716, by its series to t^11 (truncation < 1e-11); y = e * log2(a);
// 2^y = 2^n * 2^f with n = rint(y), |f| <= 1/2, and 2^f = exp(f ln 2) by its
// Taylor series to degree 10 (truncation < 1e-12). The double result is within
// about 1e-11 relative of a^e, so the final rounding to float32 agrees with a
// correctly rounded pow except when a^e lies within that distance of a
// float32 rounding boundary.
QCAL_HD_INLINE float PowPositive(float a, float e) {
  if (!(a > 0.0f)) return a == 0.0f ? 0.0f : a;  // 0 -> 0; NaN propagates
  if (a == INFINITY) return INFINITY;
  const double x = static_cast<double>(a);  // float subnormals are normal here
  uint64_t bits;
#if defined(__CUDA_ARCH__)
  bits = static_cast<uint64_t>(__double_as_longlong(x));
#else
  std::memcpy(&bits, &x, sizeof(bits));
#endif
  int64_t k = static_cast<int64_t>((bits >> 52) & 0x7FF) - 1023;
  uint64_t mbits = (bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull;
  double m;
#if defined(__CUDA_ARCH__)
  m = __longlong_as_double(static_cast<long long>(mbits));
#else
  std::memcpy(&m, &mbits, sizeof(m));
#endif
  if (m > 1.4142135623730951) {
    m = m * 0.5;
    k = k + 1;
  }
  const double t = (m - 1.0) / (m + 1.0);
  const double t2 = t * t;
  // 2 * (t + t^3/3 + ... + t^11/11), Horner in t^2.
  double series = 1.0 / 11.0;
  series = series * t2 + 1.0 / 9.0;
  series = series * t2 + 1.0 / 7.0;
  series = series * t2 + 1.0 / 5.0;
  series = series * t2 + 1.0 / 3.0;
  series = series * t2 + 1.0;
  const double ln_m = 2.0 * t * series;
  const double kLog2E = 1.4426950408889634;  // 1 / ln 2
  const double ed = static_cast<double>(e);
  const double y = ed * static_cast<double>(k) + ed * (ln_m * kLog2E);
  if (y > 200.0) return INFINITY;  // beyond float32's range
  if (y < -200.0) return 0.0f;     // below half float32's smallest subnormal
#if defined(__CUDA_ARCH__)
  const double n = rint(y);
#else
  const double n = std::nearbyint(y);
#endif
  const double f = (y - n) * 0.6931471805599453;  // (y - n) * ln 2, |.| <= 0.35
  // exp(f) by Taylor series to degree 10, Horner.
  double p = 1.0 / 3628800.0;
  p = p * f + 1.0 / 362880.0;
  p = p * f + 1.0 / 40320.0;
  p = p * f + 1.0 / 5040.0;
  p = p * f + 1.0 / 720.0;
  p = p * f + 1.0 / 120.0;
  p = p * f + 1.0 / 24.0;
  p = p * f + 1.0 / 6.0;
  p = p * f + 0.5;
  p = p * f + 1.0;
  p = p * f + 1.0;
  // Multiply by 2^n (|n| <= 200: a normal double) built from its bits.
  const uint64_t scale_bits = static_cast<uint64_t>(static_cast<int64_t>(n) + 1023)
                              << 52;
  double scale;
#if defined(__CUDA_ARCH__)
  scale = __longlong_as_double(static_cast<long long>(scale_bits));
#else
  std::memcpy(&scale, &scale_bits, sizeof(scale));
#endif
  return static_cast<float>(p * scale);
}

// NormExponent<F> is the exponent PyTorch's CPU pow applies for a tensor of
// format F: the Python float `norm` converted to float32, and for f16/bf16
// tensors further to the tensor's own dtype (pow's kernel converts the scalar
// exponent with exp_scalar.to<scalar_t>() for those dtypes: 2.4 becomes
// 2.40625 in bf16 and 2.400390625 in f16).
template <FloatFormat F>
QCAL_HD_INLINE float NormExponent(double norm) {
  return Round<F>(static_cast<float>(norm));
}

// PowNorm<F> is |e|.pow_(norm) for one element of format F: PyTorch
// special-cases the exponents 2 (x*x), 3 (x*x*x) and 0.5 (sqrt) for float32
// and bfloat16 (each product rounded to F); half always goes through pow.
template <FloatFormat F>
QCAL_HD_INLINE float PowNorm(float a, float exponent) {
  if constexpr (F != FloatFormat::kF16) {
    if (exponent == 2.0f) return Round<F>(a * a);
    if (exponent == 3.0f) return Round<F>(Round<F>(a * a) * a);
    if (exponent == 0.5f) {
#if defined(__CUDA_ARCH__)
      return Round<F>(__fsqrt_rn(a));
#else
      return Round<F>(std::sqrt(a));
#endif
    }
  }
  return Round<F>(PowPositive(a, exponent));
}

// ErrorTerm<F> is one element's contribution to the MSE observer's error,
// |fake_quant(x) - x| ^ norm, each step rounded to F (SPEC §7).
template <FloatFormat F>
QCAL_HD_INLINE float ErrorTerm(float x, float fake_quantized,
                               float norm_exponent) {
  return PowNorm<F>(std::fabs(Round<F>(fake_quantized - x)), norm_exponent);
}

// ShrinkFactor is the MSE grid's p = 1 - i / grid computed in double, as
// Python does, then converted to float32 for the tensor multiplication.
QCAL_HD_INLINE float ShrinkFactor(int64_t i, double grid) {
  return static_cast<float>(1.0 - static_cast<double>(i) / grid);
}

// IsFiniteF is true for values other than NaN and +-Inf.
QCAL_HD_INLINE bool IsFiniteF(float x) {
  return (FloatToBits(x) & 0x7F800000u) != 0x7F800000u;
}

// CandidateParams returns the fake-quantization constants of the MSE
// candidate [Round(p a), Round(p b)] of a unit with absolute range [a, b].
template <FloatFormat F>
QCAL_HD_INLINE FakeQuantParams CandidateParams(float a, float b, float p,
                                               const QuantSpec& spec,
                                               bool has_global_scale,
                                               float global_scale) {
  const float cmin = Round<F>(p * a);
  const float cmax = Round<F>(p * b);
  const ScalarQParams qp =
      ComputeQParams<F>(cmin, cmax, spec, has_global_scale, global_scale);
  return MakeFakeQuantParams(qp, has_global_scale, global_scale);
}

// kErrorSumLanes is the number of interleaved row accumulators of the MSE
// error sum; see MseRequest in core/backend.h for the summation order.
inline constexpr int kErrorSumLanes = 16;

// RowErrorSum returns one row's error sum for one candidate in the canonical
// order: column offset k accumulates into lane k % 16 (double, in column
// order), then lanes 0..15 are added in order. Non-finite inputs are skipped
// when `skip_nonfinite`.
template <FloatFormat F, typename LoadFn>
QCAL_HD_INLINE double RowErrorSum(LoadFn load, int64_t n,
                                  const FakeQuantParams& p,
                                  const QuantSpec& spec, float norm_exponent,
                                  bool skip_nonfinite) {
  double lanes[kErrorSumLanes];
  for (int l = 0; l < kErrorSumLanes; ++l) lanes[l] = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    const float x = load(k);
    if (skip_nonfinite && !IsFiniteF(x)) continue;
    lanes[k % kErrorSumLanes] += static_cast<double>(
        ErrorTerm<F>(x, FakeQuantize<F>(x, p, spec), norm_exponent));
  }
  double sum = 0.0;
  for (int l = 0; l < kErrorSumLanes; ++l) sum += lanes[l];
  return sum;
}

// FinishErrorSum rounds a unit's double error sum as PyTorch's sum of an
// F tensor ends: to float32, then to F.
template <FloatFormat F>
QCAL_HD_INLINE float FinishErrorSum(double sum) {
  return Round<F>(static_cast<float>(sum));
}

}  // namespace qcal

#endif  // QCAL_CORE_QUANT_MATH_H_
