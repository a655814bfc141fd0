// Exact conversions between float32 and the narrow floating-point formats qcal
// reads and writes: bfloat16, IEEE half (float16) and float8_e4m3fn.
//
// Every narrowing conversion rounds to nearest, ties to even, exactly as
// PyTorch's c10::BFloat16 / c10::Half / c10::Float8_e4m3fn do for finite
// inputs; widening conversions are exact. The functions work on raw bit
// patterns (uint16_t / uint8_t) so that they are usable from host code and from
// CUDA kernels alike (QCAL_HD), without depending on any half-precision type.
#ifndef QCAL_CORE_FLOAT_CONVERT_H_
#define QCAL_CORE_FLOAT_CONVERT_H_

#include <cstdint>
#include <cstring>

#include "core/host_device.h"

namespace qcal {

// FloatToBits returns the IEEE-754 bit pattern of `f`.
QCAL_HD_INLINE uint32_t FloatToBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

// BitsToFloat returns the float whose IEEE-754 bit pattern is `u`.
QCAL_HD_INLINE float BitsToFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

namespace internal_float {

// RoundShiftRightEven returns m / 2^shift rounded to nearest, ties to even,
// for 1 <= shift. Used for results that land in a narrow format's subnormal
// range, where the number of kept mantissa bits depends on the exponent.
QCAL_HD_INLINE uint32_t RoundShiftRightEven(uint32_t m, uint32_t shift) {
  if (shift >= 32) return 0;  // m < 2^24 <= 2^(shift-1): below half a unit.
  const uint32_t q = m >> shift;
  const uint32_t rem = m & ((uint32_t{1} << shift) - 1);
  const uint32_t half = uint32_t{1} << (shift - 1);
  return (rem > half || (rem == half && (q & 1u))) ? q + 1 : q;
}

}  // namespace internal_float

// ---------------------------------------------------------------- bfloat16

// kBf16CanonicalNan is the NaN PyTorch produces when narrowing to bfloat16.
inline constexpr uint16_t kBf16CanonicalNan = 0x7FC0;

// Bf16BitsToFloat widens a bfloat16 bit pattern to float32 (exact).
QCAL_HD_INLINE float Bf16BitsToFloat(uint16_t h) {
  return BitsToFloat(static_cast<uint32_t>(h) << 16);
}

// FloatToBf16Bits narrows float32 to bfloat16, round to nearest even. Values
// beyond the largest finite bfloat16 by half an ulp or more become infinity;
// NaN becomes the canonical NaN 0x7FC0 (as c10::BFloat16 does).
QCAL_HD_INLINE uint16_t FloatToBf16Bits(float f) {
  uint32_t u = FloatToBits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return kBf16CanonicalNan;
  // Adding 0x7FFF plus the lowest kept bit rounds the discarded 16 bits to
  // nearest, ties to even; a carry into the exponent is the correct result
  // (including overflow to infinity).
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// RoundToBf16 rounds a float32 value to the nearest bfloat16 value, returned
// as a float32 (which holds it exactly).
QCAL_HD_INLINE float RoundToBf16(float f) {
  return Bf16BitsToFloat(FloatToBf16Bits(f));
}

// ------------------------------------------------------------------ float16

// kF16CanonicalNan is the quiet NaN produced when narrowing NaN to float16.
inline constexpr uint16_t kF16CanonicalNan = 0x7E00;

// F16BitsToFloat widens an IEEE half bit pattern to float32 (exact, including
// subnormals, infinities and NaN payloads).
QCAL_HD_INLINE float F16BitsToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) return BitsToFloat(sign | 0x7F800000u | (mant << 13));
  if (exp != 0) return BitsToFloat(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return BitsToFloat(sign);
  // Subnormal half: mant * 2^-24. Normalise the mantissa into float32 form.
  uint32_t e = 113;  // biased float32 exponent of 2^-14
  while ((mant & 0x400u) == 0) {
    mant <<= 1;
    --e;
  }
  return BitsToFloat(sign | (e << 23) | ((mant & 0x3FFu) << 13));
}

// FloatToF16Bits narrows float32 to IEEE half, round to nearest even,
// including results in half's subnormal range. Magnitudes at or above 65520
// (halfway between 65504 and 65536) become infinity; NaN becomes 0x7E00 with
// the sign kept.
QCAL_HD_INLINE uint16_t FloatToF16Bits(float f) {
  uint32_t u = FloatToBits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7FFFFFFFu;
  if (u > 0x7F800000u) return sign | kF16CanonicalNan;
  if (u >= 0x477FF000u) return sign | 0x7C00u;  // >= 65520: infinity
  if (u >= 0x38800000u) {
    // Normal half (>= 2^-14): rebias the exponent and round the 13 discarded
    // mantissa bits to nearest even; a carry into the exponent is correct.
    u += (static_cast<uint32_t>(15 - 127) << 23) + 0xFFFu + ((u >> 13) & 1u);
    return sign | static_cast<uint16_t>(u >> 13);
  }
  // Half subnormal range: the result is round(|f| / 2^-24). With
  // |f| = m * 2^(e - 150) that is m / 2^(126 - e).
  const uint32_t e = u >> 23;
  if (e == 0) return sign;  // float32 subnormals are far below 2^-25.
  const uint32_t m = (u & 0x7FFFFFu) | 0x800000u;
  return sign | static_cast<uint16_t>(
                    internal_float::RoundShiftRightEven(m, 126u - e));
}

// RoundToF16 rounds a float32 value to the nearest half value, returned as a
// float32 (which holds it exactly).
QCAL_HD_INLINE float RoundToF16(float f) {
  return F16BitsToFloat(FloatToF16Bits(f));
}

// ------------------------------------------------------------ float8_e4m3fn
//
// 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits; no infinities; the
// only NaN codes are S.1111.111. Largest finite value 448 (0x7E), smallest
// normal 2^-6, smallest subnormal 2^-9.

// kE4m3fnMax is the largest finite float8_e4m3fn value.
inline constexpr float kE4m3fnMax = 448.0f;

// kE4m3fnNan is the positive NaN code of float8_e4m3fn.
inline constexpr uint8_t kE4m3fnNan = 0x7F;

// E4m3fnBitsToFloat widens a float8_e4m3fn code to float32 (exact).
QCAL_HD_INLINE float E4m3fnBitsToFloat(uint8_t b) {
  const uint32_t sign = static_cast<uint32_t>(b & 0x80u) << 24;
  const uint32_t exp = (b >> 3) & 0xFu;
  const uint32_t mant = b & 0x7u;
  if (exp == 0xF && mant == 0x7) return BitsToFloat(sign | 0x7FC00000u);
  if (exp != 0) return BitsToFloat(sign | ((exp + 120u) << 23) | (mant << 20));
  if (mant == 0) return BitsToFloat(sign);
  // Subnormal: mant * 2^-9, an exact float32 product of small powers of two.
  const float magnitude = static_cast<float>(mant) * (1.0f / 512.0f);
  return sign ? -magnitude : magnitude;
}

// FloatToE4m3fnBits narrows float32 to float8_e4m3fn, round to nearest even,
// saturating: every magnitude above 448 (including infinity) becomes +-448.
// NaN becomes the NaN code with the sign kept. Callers that follow PyTorch
// clamp to [-448, 448] first, where saturation and PyTorch's cast agree.
QCAL_HD_INLINE uint8_t FloatToE4m3fnBits(float f) {
  uint32_t u = FloatToBits(f);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  u &= 0x7FFFFFFFu;
  if (u > 0x7F800000u) return sign | kE4m3fnNan;
  if (u >= 0x43E00000u) return sign | 0x7Eu;  // >= 448: saturate
  if (u >= 0x3C800000u) {
    // Normal (>= 2^-6): rebias and round the 20 discarded bits to nearest
    // even. Below 448 a carry never reaches the NaN code: the largest value
    // rounded here is < 448 and rounds to at most 448 (0x7E).
    u += (static_cast<uint32_t>(7 - 127) << 23) + 0x7FFFFu + ((u >> 20) & 1u);
    return sign | static_cast<uint8_t>(u >> 20);
  }
  // Subnormal range: round(|f| / 2^-9) = m / 2^(141 - e).
  const uint32_t e = u >> 23;
  if (e == 0) return sign;
  const uint32_t m = (u & 0x7FFFFFu) | 0x800000u;
  return sign | static_cast<uint8_t>(
                    internal_float::RoundShiftRightEven(m, 141u - e));
}

// FloatToE4m3fnBitsLikeTorch is PyTorch's `tensor.to(torch.float8_e4m3fn)`:
// round to nearest even, but magnitudes above 464 (which round past 448) and
// infinities become NaN (0x7F with the sign), as c10::Float8_e4m3fn does.
// Used where a value is stored as F8_E4M3 without a preceding clamp.
QCAL_HD_INLINE uint8_t FloatToE4m3fnBitsLikeTorch(float f) {
  const uint32_t u = FloatToBits(f);
  if ((u & 0x7FFFFFFFu) > 0x43E80000u) {  // |f| > 464, inf or NaN
    return static_cast<uint8_t>(((u >> 24) & 0x80u) | kE4m3fnNan);
  }
  return FloatToE4m3fnBits(f);
}

// RoundToE4m3fn rounds a float32 value to the nearest float8_e4m3fn value
// (saturating), returned as float32.
QCAL_HD_INLINE float RoundToE4m3fn(float f) {
  return E4m3fnBitsToFloat(FloatToE4m3fnBits(f));
}

}  // namespace qcal

#endif  // QCAL_CORE_FLOAT_CONVERT_H_
