// Exhaustive tests of the float conversions against independent computations:
// decoding every bit pattern is checked against the textbook formula
// (-1)^s * 2^e * 1.m evaluated with ldexp in double precision, and narrowing is
// checked at every representable value, every midpoint between neighbours
// (where ties-to-even decides) and the floats just either side of each
// midpoint. Where the CPU has F16C, the hardware conversion is a second,
// independent reference for half.
#include "core/float_convert.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace qcal {
namespace {

// Independent decoder for a binary format with `exp_bits` / `mant_bits`,
// IEEE-style (all-ones exponent = inf/NaN) unless `fn` (finite-only, e4m3fn:
// only all-ones exponent and mantissa is NaN).
double DecodeReference(uint32_t bits, int exp_bits, int mant_bits, bool fn) {
  const uint32_t sign = bits >> (exp_bits + mant_bits);
  const uint32_t exp = (bits >> mant_bits) & ((1u << exp_bits) - 1);
  const uint32_t mant = bits & ((1u << mant_bits) - 1);
  const int bias = (1 << (exp_bits - 1)) - 1;
  const uint32_t exp_all_ones = (1u << exp_bits) - 1;
  double value;
  if (!fn && exp == exp_all_ones) {
    value = mant == 0 ? std::numeric_limits<double>::infinity()
                      : std::numeric_limits<double>::quiet_NaN();
  } else if (fn && exp == exp_all_ones && mant == (1u << mant_bits) - 1) {
    value = std::numeric_limits<double>::quiet_NaN();
  } else if (exp == 0) {
    value = std::ldexp(static_cast<double>(mant), 1 - bias - mant_bits);
  } else {
    value = std::ldexp(static_cast<double>(mant + (1u << mant_bits)),
                       static_cast<int>(exp) - bias - mant_bits);
  }
  return sign ? -value : value;
}

void ExpectSameFloat(float got, double want, uint32_t code) {
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got)) << "code " << code;
  } else {
    EXPECT_EQ(static_cast<double>(got), want) << "code " << code;
    EXPECT_EQ(std::signbit(got), std::signbit(want)) << "code " << code;
  }
}

// The finite, non-negative values of a format with their codes, ascending.
struct Entry {
  double value;
  uint32_t code;
};

std::vector<Entry> NonNegativeFinite(int exp_bits, int mant_bits, bool fn) {
  std::vector<Entry> out;
  const uint32_t count = 1u << (exp_bits + mant_bits);  // sign bit clear
  for (uint32_t code = 0; code < count; ++code) {
    const double v = DecodeReference(code, exp_bits, mant_bits, fn);
    if (std::isfinite(v)) out.push_back({v, code});
  }
  std::sort(out.begin(), out.end(),
            [](const Entry& a, const Entry& b) { return a.value < b.value; });
  return out;
}

// Nearest-even reference for a non-negative finite x within the format's
// finite range: the nearest value, or on a tie the one with an even code.
uint32_t NearestEvenCode(const std::vector<Entry>& table, double x) {
  auto hi = std::lower_bound(
      table.begin(), table.end(), x,
      [](const Entry& e, double v) { return e.value < v; });
  if (hi == table.end()) return table.back().code;
  if (hi->value == x || hi == table.begin()) return hi->code;
  auto lo = hi - 1;
  const double dlo = x - lo->value;
  const double dhi = hi->value - x;
  if (dlo < dhi) return lo->code;
  if (dhi < dlo) return hi->code;
  return (lo->code & 1u) == 0 ? lo->code : hi->code;
}

// ------------------------------------------------------------------ bfloat16

TEST(Bf16Test, DecodeEveryPattern) {
  for (uint32_t code = 0; code < 65536; ++code) {
    ExpectSameFloat(Bf16BitsToFloat(static_cast<uint16_t>(code)),
                    DecodeReference(code, 8, 7, false), code);
  }
}

TEST(Bf16Test, EveryValueRoundTrips) {
  for (uint32_t code = 0; code < 65536; ++code) {
    const float f = Bf16BitsToFloat(static_cast<uint16_t>(code));
    if (std::isnan(f)) {
      EXPECT_EQ(FloatToBf16Bits(f), kBf16CanonicalNan) << code;
    } else {
      EXPECT_EQ(FloatToBf16Bits(f), code) << code;
    }
  }
}

// Checks narrowing at the midpoint of every pair of neighbouring values and at
// the floats adjacent to it, for a format that float32 can hold midpoints of.
template <typename Narrow>
void CheckMidpoints(const std::vector<Entry>& table, uint32_t sign_bit,
                    Narrow narrow) {
  for (size_t i = 0; i + 1 < table.size(); ++i) {
    const double mid = 0.5 * (table[i].value + table[i + 1].value);
    const float fmid = static_cast<float>(mid);
    ASSERT_EQ(static_cast<double>(fmid), mid) << "midpoint not exact";
    const float below = std::nextafter(fmid, 0.0f);
    const float above = std::nextafter(fmid, 1e30f);
    for (float x : {fmid, below, above}) {
      const uint32_t want = NearestEvenCode(table, x);
      EXPECT_EQ(narrow(x), want) << "x=" << x;
      EXPECT_EQ(narrow(-x), want | sign_bit) << "x=" << -x;
    }
  }
}

TEST(Bf16Test, NarrowingAtEveryMidpoint) {
  const auto table = NonNegativeFinite(8, 7, false);
  CheckMidpoints(table, 0x8000u,
                 [](float x) { return uint32_t{FloatToBf16Bits(x)}; });
}

TEST(Bf16Test, OverflowInfinityAndNan) {
  // Largest finite bf16 is 0x7F7F = (2 - 2^-7) * 2^127. Halfway to 2^128
  // rounds to even, i.e. up to infinity.
  const float max_bf16 = Bf16BitsToFloat(0x7F7F);
  EXPECT_EQ(FloatToBf16Bits(max_bf16), 0x7F7F);
  EXPECT_EQ(FloatToBf16Bits(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(FloatToBf16Bits(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(FloatToBf16Bits(std::numeric_limits<float>::quiet_NaN()), 0x7FC0);
  EXPECT_EQ(FloatToBf16Bits(-std::numeric_limits<float>::quiet_NaN()), 0x7FC0);
  // float32 subnormals keep their top bits in bf16.
  EXPECT_EQ(FloatToBf16Bits(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(FloatToBf16Bits(BitsToFloat(0x00010000u)), 0x0001);
  EXPECT_EQ(FloatToBf16Bits(BitsToFloat(0x00018000u)), 0x0002);  // tie, up
  EXPECT_EQ(FloatToBf16Bits(BitsToFloat(0x00028000u)), 0x0002);  // tie, down
}

TEST(Bf16Test, RandomFloatsAgainstReference) {
  const auto table = NonNegativeFinite(8, 7, false);
  std::mt19937 rng(1234);
  for (int i = 0; i < 200000; ++i) {
    const float x = BitsToFloat(rng());
    if (!std::isfinite(x)) continue;
    const double ax = std::fabs(static_cast<double>(x));
    if (ax >= 0.5 * (table.back().value + std::ldexp(1.0, 128))) continue;
    const uint32_t want =
        NearestEvenCode(table, ax) | (std::signbit(x) ? 0x8000u : 0u);
    ASSERT_EQ(FloatToBf16Bits(x), want) << x;
  }
}

// ------------------------------------------------------------------- float16

TEST(F16Test, DecodeEveryPattern) {
  for (uint32_t code = 0; code < 65536; ++code) {
    ExpectSameFloat(F16BitsToFloat(static_cast<uint16_t>(code)),
                    DecodeReference(code, 5, 10, false), code);
  }
}

TEST(F16Test, EveryValueRoundTrips) {
  for (uint32_t code = 0; code < 65536; ++code) {
    const float f = F16BitsToFloat(static_cast<uint16_t>(code));
    if (std::isnan(f)) {
      EXPECT_EQ(FloatToF16Bits(f) & 0x7FFFu, kF16CanonicalNan) << code;
    } else {
      EXPECT_EQ(FloatToF16Bits(f), code) << code;
    }
  }
}

TEST(F16Test, NarrowingAtEveryMidpoint) {
  const auto table = NonNegativeFinite(5, 10, false);
  CheckMidpoints(table, 0x8000u,
                 [](float x) { return uint32_t{FloatToF16Bits(x)}; });
}

TEST(F16Test, OverflowUnderflowAndSpecials) {
  EXPECT_EQ(FloatToF16Bits(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToF16Bits(65519.996f), 0x7BFF);
  EXPECT_EQ(FloatToF16Bits(65520.0f), 0x7C00);  // tie rounds to even = inf
  EXPECT_EQ(FloatToF16Bits(-1e30f), 0xFC00);
  EXPECT_EQ(FloatToF16Bits(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(FloatToF16Bits(std::numeric_limits<float>::quiet_NaN()) & 0x7E00u,
            0x7E00u);
  // Smallest subnormal 2^-24; half of it ties to even (zero); just above
  // half rounds up.
  EXPECT_EQ(FloatToF16Bits(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(FloatToF16Bits(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(FloatToF16Bits(std::nextafter(std::ldexp(1.0f, -25), 1.0f)),
            0x0001);
  EXPECT_EQ(FloatToF16Bits(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 -> 2
  EXPECT_EQ(FloatToF16Bits(-std::ldexp(1.0f, -26)), 0x8000);
  EXPECT_EQ(FloatToF16Bits(std::numeric_limits<float>::denorm_min()), 0x0000);
  // Largest subnormal rounds up into the smallest normal.
  EXPECT_EQ(FloatToF16Bits(std::ldexp(1.0f, -14) * (1 - 1.0f / 4096)), 0x0400);
}

#if defined(__x86_64__)
__attribute__((target("f16c"))) uint16_t HardwareF16(float x) {
  return static_cast<uint16_t>(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT));
}
__attribute__((target("f16c"))) float HardwareF16ToFloat(uint16_t h) {
  return _cvtsh_ss(h);
}

TEST(F16Test, AgreesWithF16cHardware) {
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "CPU lacks F16C";
  for (uint32_t code = 0; code < 65536; ++code) {
    const float a = F16BitsToFloat(static_cast<uint16_t>(code));
    const float b = HardwareF16ToFloat(static_cast<uint16_t>(code));
    if (std::isnan(b)) {
      ASSERT_TRUE(std::isnan(a));
    } else {
      ASSERT_EQ(FloatToBits(a), FloatToBits(b)) << code;
    }
  }
  // Every float32 whose top 20 bits vary, low bits random: 1M patterns.
  std::mt19937 rng(99);
  for (uint32_t hi = 0; hi < (1u << 20); ++hi) {
    const uint32_t bits = (hi << 12) | (rng() & 0xFFFu);
    const float x = BitsToFloat(bits);
    if (std::isnan(x)) continue;
    ASSERT_EQ(FloatToF16Bits(x), HardwareF16(x)) << "bits " << bits;
  }
}
#endif

// ------------------------------------------------------------ float8_e4m3fn

TEST(E4m3fnTest, DecodeEveryCode) {
  for (uint32_t code = 0; code < 256; ++code) {
    ExpectSameFloat(E4m3fnBitsToFloat(static_cast<uint8_t>(code)),
                    DecodeReference(code, 4, 3, true), code);
  }
  EXPECT_EQ(E4m3fnBitsToFloat(0x7E), 448.0f);
  EXPECT_EQ(E4m3fnBitsToFloat(0x01), 0.001953125f);  // 2^-9
  EXPECT_EQ(E4m3fnBitsToFloat(0x08), 0.015625f);     // 2^-6
  EXPECT_TRUE(std::isnan(E4m3fnBitsToFloat(0x7F)));
  EXPECT_TRUE(std::isnan(E4m3fnBitsToFloat(0xFF)));
  EXPECT_FALSE(std::isnan(E4m3fnBitsToFloat(0x78)));  // 256: exponent all ones
}

TEST(E4m3fnTest, EveryCodeRoundTrips) {
  for (uint32_t code = 0; code < 256; ++code) {
    const float f = E4m3fnBitsToFloat(static_cast<uint8_t>(code));
    if (std::isnan(f)) {
      EXPECT_EQ(FloatToE4m3fnBits(f) & 0x7Fu, kE4m3fnNan) << code;
    } else {
      EXPECT_EQ(FloatToE4m3fnBits(f), code) << code;
    }
  }
}

TEST(E4m3fnTest, NarrowingAtEveryMidpoint) {
  const auto table = NonNegativeFinite(4, 3, true);
  ASSERT_EQ(table.size(), 127u);  // 0x00..0x7E
  CheckMidpoints(table, 0x80u,
                 [](float x) { return uint32_t{FloatToE4m3fnBits(x)}; });
}

TEST(E4m3fnTest, FineGridOverTheClampedRange) {
  // Every multiple of 2^-12 in [-448, 448] (about 3.7 million values) rounds
  // to the nearest e4m3fn value, ties to even.
  const auto table = NonNegativeFinite(4, 3, true);
  const int64_t steps = 448 * 4096;
  for (int64_t i = -steps; i <= steps; ++i) {
    const float x = static_cast<float>(std::ldexp(static_cast<double>(i), -12));
    const uint32_t want = NearestEvenCode(table, std::fabs(x)) |
                          (std::signbit(x) ? 0x80u : 0u);
    ASSERT_EQ(uint32_t{FloatToE4m3fnBits(x)}, want) << "x=" << x;
  }
}

TEST(E4m3fnTest, SaturatesAndKeepsNan) {
  EXPECT_EQ(FloatToE4m3fnBits(448.0f), 0x7E);
  EXPECT_EQ(FloatToE4m3fnBits(464.0f), 0x7E);  // tie between 448 and "480"
  EXPECT_EQ(FloatToE4m3fnBits(470.0f), 0x7E);
  EXPECT_EQ(FloatToE4m3fnBits(1e9f), 0x7E);
  EXPECT_EQ(FloatToE4m3fnBits(-std::numeric_limits<float>::infinity()), 0xFE);
  EXPECT_EQ(FloatToE4m3fnBits(std::numeric_limits<float>::quiet_NaN()), 0x7F);
  EXPECT_EQ(FloatToE4m3fnBits(std::ldexp(1.0f, -10)), 0x00);  // tie to zero
  EXPECT_EQ(FloatToE4m3fnBits(std::ldexp(3.0f, -11)), 0x01);  // 0.75u -> 1u
  EXPECT_EQ(FloatToE4m3fnBits(std::ldexp(3.0f, -10)), 0x02);  // 1.5u -> 2u
  EXPECT_EQ(FloatToE4m3fnBits(std::ldexp(5.0f, -10)), 0x02);  // 2.5u -> 2u
  EXPECT_EQ(FloatToE4m3fnBits(-0.0f), 0x80);
  EXPECT_EQ(RoundToE4m3fn(0.3f), 0.3125f);
}

TEST(E4m3fnTest, TorchCastTurnsOverflowIntoNan) {
  // Below the 448/480 midpoint (464) values round as usual; 464 ties to 448.
  for (uint32_t code = 0; code < 0x7F; ++code) {
    const float v = E4m3fnBitsToFloat(static_cast<uint8_t>(code));
    EXPECT_EQ(FloatToE4m3fnBitsLikeTorch(v), code);
    EXPECT_EQ(FloatToE4m3fnBitsLikeTorch(-v), code | 0x80u);
  }
  EXPECT_EQ(FloatToE4m3fnBitsLikeTorch(464.0f), 0x7E);
  EXPECT_EQ(FloatToE4m3fnBitsLikeTorch(std::nextafter(464.0f, 1e9f)), 0x7F);
  EXPECT_EQ(FloatToE4m3fnBitsLikeTorch(-500.0f), 0xFF);
  EXPECT_EQ(FloatToE4m3fnBitsLikeTorch(INFINITY), 0x7F);
  EXPECT_EQ(FloatToE4m3fnBitsLikeTorch(std::nanf("")), 0x7F);
  EXPECT_EQ(FloatToE4m3fnBitsLikeTorch(0.3f), FloatToE4m3fnBits(0.3f));
}

}  // namespace
}  // namespace qcal
