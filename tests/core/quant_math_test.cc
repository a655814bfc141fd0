// Tests of the quantization math (SPEC §3-§8) against independent expected
// values: hand-computed literals, and a reference that evaluates the SPEC's
// formulas in double precision with the independent rounding of
// reference_rounding.h after every step.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "core/element_access.h"
#include "core/qparams.h"
#include "core/quant_math.h"
#include "gtest/gtest.h"
#include "tests/core/reference_rounding.h"

namespace qcal {
namespace {

using testing_ref::Fmt;

constexpr double kEps = 1.1920928955078125e-07;  // 2^-23

// ------------------------------------------------------------ reference

// PyTorch's float -> intN cast on x86: truncate to int32 (anything outside
// int32, or NaN, gives INT32_MIN), then keep the low bits of the container.
double ReferenceIntCast(double v, int bits) {
  const int width = bits <= 8 ? 8 : (bits <= 16 ? 16 : 32);
  const double two31 = std::ldexp(1.0, 31);
  double t = (v >= -two31 && v < two31) ? std::trunc(v) : -two31;
  const double m = std::ldexp(1.0, width);
  double r = std::fmod(t, m);
  if (r < -m / 2) r += m;
  if (r >= m / 2) r -= m;
  return r;
}

struct RefQParams {
  double scale;
  double zero_point;
};

// The SPEC §4 formulas in double, rounding each step with Round(., fmt).
RefQParams ReferenceQParams(double mn, double mx, Fmt fmt, bool is_float,
                            int bits, bool symmetric, const double* g) {
  using testing_ref::Round;
  double q_min, q_max;
  if (is_float) {
    q_max = bits == 4 ? 6.0 : 448.0;
    q_min = -q_max;
  } else {
    q_max = testing_ref::ToF32(std::ldexp(1.0, bits - 1) - 1);
    q_min = -std::ldexp(1.0, bits - 1);
  }
  const double bit_range = q_max - q_min;
  mn = std::min(mn, 0.0);
  mx = std::max(mx, 0.0);
  if (symmetric) {
    const double max_pos = std::max(std::fabs(mn), std::fabs(mx));
    if (is_float && bits == 4 && g != nullptr) {
      double s = testing_ref::ToF32(*g * Round(max_pos / 6.0, fmt));
      s = std::min(std::max(s, -448.0), 448.0);
      s = testing_ref::ToE4m3(s);
      if (s == 0) s = 0.125;
      return {s, 0.0};
    }
    const double s = std::max(Round(max_pos / (bit_range / 2), fmt), kEps);
    return {s, 0.0};
  }
  double s = Round(Round(mx - mn, fmt) / bit_range, fmt);
  s = std::max(s, kEps);
  double zp = Round(q_min - Round(mn / s, fmt), fmt);
  zp = Round(std::min(std::max(zp, q_min), q_max), fmt);
  if (is_float) {
    zp = testing_ref::ToE4m3(zp);
  } else {
    zp = ReferenceIntCast(Round(std::nearbyint(zp), fmt), bits);
  }
  return {s, zp};
}

double RoundFmt(double v, Fmt fmt) { return testing_ref::Round(v, fmt); }

template <FloatFormat F>
constexpr Fmt RefFmt() {
  return F == FloatFormat::kF32   ? Fmt::kF32
         : F == FloatFormat::kF16 ? Fmt::kF16
                                  : Fmt::kBF16;
}

// Interesting unit ranges: all-zero, all-positive, all-negative, mixed, a huge
// outlier, tiny and subnormal ranges, equal endpoints.
std::vector<std::pair<double, double>> InterestingRanges() {
  return {
      {0.0, 0.0},          {0.5, 3.0},           {-7.25, -0.125},
      {-1.0, 1.0},         {-0.3, 2.7},          {-1.0, 60000.0},
      {-3e4, 0.01},        {1e-6, 3e-6},         {-2e-7, 5e-8},
      {-1e-38, 2e-38},     {-6e-8, 6e-8},        {1.0, 1.0},
      {-0.0078125, 0.75},  {-100.0, -100.0},     {-65504.0, 65504.0},
      {-1.5e-5, 4.5e-5},   {-3.0, 1e-3},
  };
}

// ---------------------------------------------------------------- fp4

TEST(Fp4Test, TableBoundaries) {
  struct Case {
    float x;
    float want;
  };
  auto below = [](float v) { return std::nextafter(v, 0.0f); };
  auto above = [](float v) { return std::nextafter(v, 100.0f); };
  const Case cases[] = {
      {0.0f, 0.0f},         {0.25f, 0.0f},        {above(0.25f), 0.5f},
      {0.5f, 0.5f},         {below(0.75f), 0.5f}, {0.75f, 1.0f},
      {1.25f, 1.0f},        {above(1.25f), 1.5f}, {below(1.75f), 1.5f},
      {1.75f, 2.0f},        {2.5f, 2.0f},         {above(2.5f), 3.0f},
      {below(3.5f), 3.0f},  {3.5f, 4.0f},         {5.0f, 4.0f},
      {above(5.0f), 6.0f},  {6.0f, 6.0f},         {100.0f, 6.0f},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Fp4Round(c.x), c.want) << c.x;
    EXPECT_EQ(Fp4Round(-c.x), -c.want) << -c.x;
  }
}

TEST(RoundingTest, HalfToEven) {
  EXPECT_EQ(RoundHalfEven(0.5f), 0.0f);
  EXPECT_EQ(RoundHalfEven(1.5f), 2.0f);
  EXPECT_EQ(RoundHalfEven(2.5f), 2.0f);
  EXPECT_EQ(RoundHalfEven(-2.5f), -2.0f);
  EXPECT_EQ(RoundHalfEven(-3.5f), -4.0f);
  EXPECT_EQ(RoundHalfEven(2.4999998f), 2.0f);
}

TEST(RangesTest, QuantizedRanges) {
  const QuantSpec int4 = QuantSpecFor(false, 4, true);
  EXPECT_EQ(int4.q_min, -8.0f);
  EXPECT_EQ(int4.q_max, 7.0f);
  EXPECT_EQ(int4.bit_range, 15.0f);
  const QuantSpec int8 = QuantSpecFor(false, 8, true);
  EXPECT_EQ(int8.q_min, -128.0f);
  EXPECT_EQ(int8.bit_range, 255.0f);
  EXPECT_EQ(int8.zp_kind, ZeroPointKind::kI8);
  const QuantSpec int16 = QuantSpecFor(false, 16, false);
  EXPECT_EQ(int16.q_max, 32767.0f);
  EXPECT_EQ(int16.zp_kind, ZeroPointKind::kI16);
  const QuantSpec int32 = QuantSpecFor(false, 32, true);
  EXPECT_EQ(int32.q_max, 2147483648.0f);  // 2^31 - 1 held as float32
  EXPECT_EQ(int32.zp_kind, ZeroPointKind::kI32);
  const QuantSpec fp8 = QuantSpecFor(true, 8, true);
  EXPECT_EQ(fp8.q_max, 448.0f);
  EXPECT_EQ(fp8.bit_range, 896.0f);
  EXPECT_EQ(fp8.zp_kind, ZeroPointKind::kF8);
  const QuantSpec fp4 = QuantSpecFor(true, 4, true);
  EXPECT_EQ(fp4.q_min, -6.0f);
  EXPECT_EQ(fp4.kind, QuantKind::kFp4);
  EXPECT_EQ(fp4.zp_kind, ZeroPointKind::kF8);
  const QuantSpec int1 = QuantSpecFor(false, 1, false);
  EXPECT_EQ(int1.q_min, -1.0f);
  EXPECT_EQ(int1.q_max, 0.0f);
}

// ------------------------------------------------------------ qparams

TEST(QParamsTest, HandComputedLiterals) {
  // Five ones, int8 symmetric: 1 / 127.5 = 0.00784313...; asymmetric:
  // 1 / 255 = 0.00392156..., zero point -128 - 0 / s = -128.
  const QuantSpec sym8 = QuantSpecFor(false, 8, true);
  const QuantSpec asym8 = QuantSpecFor(false, 8, false);
  ScalarQParams a = ComputeQParams<FloatFormat::kF32>(1, 1, sym8, false, 0);
  EXPECT_EQ(a.scale, 1.0f / 127.5f);
  EXPECT_NEAR(a.scale, 0.0078, 5e-5);
  EXPECT_EQ(a.zero_point, 0.0f);
  ScalarQParams b = ComputeQParams<FloatFormat::kF32>(1, 1, asym8, false, 0);
  EXPECT_EQ(b.scale, 1.0f / 255.0f);
  EXPECT_NEAR(b.scale, 0.0039, 5e-5);
  EXPECT_EQ(b.zero_point, -128.0f);
  // Asymmetric [-1, 3] int8: s = 4 / 255; zp = -128 - (-1 / s) = -128 + 63.75
  // = -64.25 -> -64.
  ScalarQParams c = ComputeQParams<FloatFormat::kF32>(-1, 3, asym8, false, 0);
  EXPECT_EQ(c.scale, 4.0f / 255.0f);
  EXPECT_EQ(c.zero_point, -64.0f);
  // All-zero: the scale is clamped to float32 eps.
  ScalarQParams z = ComputeQParams<FloatFormat::kBF16>(0, 0, sym8, false, 0);
  EXPECT_EQ(z.scale, 1.1920928955078125e-07f);
  // int4 symmetric, max |x| = 7.5 -> scale exactly 1.
  const QuantSpec sym4 = QuantSpecFor(false, 4, true);
  EXPECT_EQ(ComputeQParams<FloatFormat::kF16>(-7.5, 2, sym4, false, 0).scale,
            1.0f);
  // bf16: 1 / 127.5 rounds to 0.00787353515625 (bf16 0x3C01).
  EXPECT_EQ(ComputeQParams<FloatFormat::kBF16>(-1, 1, sym8, false, 0).scale,
            Bf16BitsToFloat(0x3C01));
  // fp8 symmetric: max 448 -> scale 1; max 896 -> 2.
  const QuantSpec fp8 = QuantSpecFor(true, 8, true);
  EXPECT_EQ(ComputeQParams<FloatFormat::kF32>(-896, 10, fp8, false, 0).scale,
            2.0f);
}

TEST(QParamsTest, Fp4WithGlobalScale) {
  const QuantSpec fp4 = QuantSpecFor(true, 4, true);
  // g = 448 * 6 / 12 = 224; unit max 6 -> 224 * (6 / 6) = 224 (an fp8 value).
  EXPECT_EQ(ComputeQParams<FloatFormat::kF32>(-1, 6, fp4, true, 224).scale,
            224.0f);
  // Unit max 1 with g = 224: 224 / 6 = 37.33 -> nearest e4m3 is 36.
  EXPECT_EQ(ComputeQParams<FloatFormat::kF32>(0, 1, fp4, true, 224).scale,
            36.0f);
  // Large product saturates at 448.
  EXPECT_EQ(ComputeQParams<FloatFormat::kF32>(0, 1e6, fp4, true, 224).scale,
            448.0f);
  // A zero unit gets 0.125.
  EXPECT_EQ(ComputeQParams<FloatFormat::kBF16>(0, 0, fp4, true, 224).scale,
            0.125f);
  // Tiny values below half the smallest subnormal (2^-10) also become 0.125.
  EXPECT_EQ(ComputeQParams<FloatFormat::kF32>(0, 6e-4, fp4, true, 1).scale,
            0.125f);
  // Without a global scale: max / 6, clamped to eps.
  EXPECT_EQ(ComputeQParams<FloatFormat::kF32>(-3, 0, fp4, false, 0).scale,
            0.5f);
}

template <FloatFormat F>
void CheckAgainstReference(bool is_float, int bits, bool symmetric,
                           const double* g) {
  const QuantSpec spec = QuantSpecFor(is_float, bits, symmetric);
  const Fmt fmt = RefFmt<F>();
  for (auto [lo, hi] : InterestingRanges()) {
    // Unit minima / maxima are values of the observed format.
    const double mn = RoundFmt(lo, fmt);
    const double mx = RoundFmt(hi, fmt);
    if (!std::isfinite(mn) || !std::isfinite(mx)) continue;
    const RefQParams want =
        ReferenceQParams(mn, mx, fmt, is_float, bits, symmetric, g);
    const ScalarQParams got = ComputeQParams<F>(
        static_cast<float>(mn), static_cast<float>(mx), spec, g != nullptr,
        g ? static_cast<float>(*g) : 0.0f);
    EXPECT_EQ(static_cast<double>(got.scale), want.scale)
        << "range [" << lo << ", " << hi << "] bits " << bits << " sym "
        << symmetric << " float " << is_float;
    EXPECT_EQ(static_cast<double>(got.zero_point), want.zero_point)
        << "range [" << lo << ", " << hi << "] bits " << bits << " sym "
        << symmetric << " float " << is_float;
  }
}

template <typename T>
class QParamsFormatTest : public ::testing::Test {};
using Formats =
    ::testing::Types<std::integral_constant<FloatFormat, FloatFormat::kF32>,
                     std::integral_constant<FloatFormat, FloatFormat::kF16>,
                     std::integral_constant<FloatFormat, FloatFormat::kBF16>>;
TYPED_TEST_SUITE(QParamsFormatTest, Formats);

TYPED_TEST(QParamsFormatTest, IntMatchesReference) {
  constexpr FloatFormat F = TypeParam::value;
  for (int bits : {2, 4, 8, 16}) {
    for (bool sym : {true, false}) {
      CheckAgainstReference<F>(false, bits, sym, nullptr);
    }
  }
}

TYPED_TEST(QParamsFormatTest, FloatMatchesReference) {
  constexpr FloatFormat F = TypeParam::value;
  CheckAgainstReference<F>(true, 8, true, nullptr);
  CheckAgainstReference<F>(true, 8, false, nullptr);
  CheckAgainstReference<F>(true, 4, true, nullptr);
  for (double g : {1.0, 224.0, 2688.0 / 3.1, 1e-3, 5e7}) {
    CheckAgainstReference<F>(true, 4, true, &g);
  }
}

TYPED_TEST(QParamsFormatTest, RandomRangesMatchReference) {
  constexpr FloatFormat F = TypeParam::value;
  const Fmt fmt = RefFmt<F>();
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> expo(-20, 10);
  std::uniform_real_distribution<double> unit(-1, 1);
  for (int iter = 0; iter < 20000; ++iter) {
    const double a = RoundFmt(unit(rng) * std::exp2(expo(rng)), fmt);
    const double b = RoundFmt(unit(rng) * std::exp2(expo(rng)), fmt);
    const double mn = std::min(a, b), mx = std::max(a, b);
    const int bits = (iter % 3 == 0) ? 4 : (iter % 3 == 1 ? 8 : 16);
    const bool sym = (iter & 4) != 0;
    const QuantSpec spec = QuantSpecFor(false, bits, sym);
    const RefQParams want =
        ReferenceQParams(mn, mx, fmt, false, bits, sym, nullptr);
    const ScalarQParams got = ComputeQParams<F>(
        static_cast<float>(mn), static_cast<float>(mx), spec, false, 0);
    ASSERT_EQ(static_cast<double>(got.scale), want.scale) << mn << " " << mx;
    ASSERT_EQ(static_cast<double>(got.zero_point), want.zero_point)
        << mn << " " << mx << " bits " << bits;
  }
}

TEST(QParamsTest, Int16ZeroPointOverflowWrapsLikePyTorch) {
  // All-negative bf16 unit, int16 asymmetric: zp = -32768 + 65535 = 32767,
  // which bf16 rounds to 32768; PyTorch's cast to int16 wraps to -32768.
  const QuantSpec spec = QuantSpecFor(false, 16, false);
  const ScalarQParams qp =
      ComputeQParams<FloatFormat::kBF16>(-3.0f, -1.0f, spec, false, 0);
  EXPECT_EQ(qp.zero_point, -32768.0f);
  // In float32 the same unit gives 32767.
  const ScalarQParams f32 =
      ComputeQParams<FloatFormat::kF32>(-3.0f, -1.0f, spec, false, 0);
  EXPECT_EQ(f32.zero_point, 32767.0f);
  EXPECT_EQ(FloatToIntLikeTorch(200.0f, ZeroPointKind::kI8), -56);
  EXPECT_EQ(FloatToIntLikeTorch(2147483648.0f, ZeroPointKind::kI32), INT32_MIN);
  EXPECT_EQ(FloatToIntLikeTorch(NAN, ZeroPointKind::kI32), INT32_MIN);
}

// --------------------------------------------------------- global scale

TEST(GlobalScaleTest, Values) {
  EXPECT_EQ(GlobalScale(-1.0f, 1.0f), 2688.0f);
  EXPECT_EQ(GlobalScale(-2.0f, 1.0f), 1344.0f);
  EXPECT_EQ(GlobalScale(0.5f, 7.0f), 384.0f);      // min clamped to 0
  EXPECT_EQ(GlobalScale(-3.0f, -1.0f), 896.0f);    // max clamped to 0
  EXPECT_EQ(GlobalScale(0.0f, 0.0f), 1.0f);        // 2688 / FLT_MIN = inf -> 1
  EXPECT_EQ(GlobalScale(0.0f, 1e-37f), 1.0f);      // overflows float32 -> 1
  EXPECT_EQ(GlobalScale(-3.0f, 1.0f), static_cast<float>(2688.0 / 3.0));
  EXPECT_EQ(GlobalScale(0.0f, 1e30f), 2688.0f / 1e30f);
}

TEST(GlobalScaleTest, ArrayApi) {
  uint16_t mn = FloatToBf16Bits(-5.0f), mx = FloatToBf16Bits(3.0f);
  auto mnv = TensorView::Contiguous(&mn, DType::kBF16, {});
  auto mxv = TensorView::Contiguous(&mx, DType::kBF16, {1});
  auto g = GenerateGlobalScale(*mnv, *mxv);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->dtype(), DType::kF32);
  EXPECT_EQ(g->numel(), 1);
  EXPECT_EQ(g->data_as<float>()[0], static_cast<float>(2688.0 / 5.0));
}

// --------------------------------------------------------- moving average

TEST(MovingAverageTest, SeedExpectations) {
  // Running max 1 -> 1 + 0.01 * (127 - 1) = 2.26 after observing 127.
  const float max1 = MovingAverage<FloatFormat::kF32>(1.0f, 127.0f, 0.01f);
  EXPECT_NEAR(max1, 2.26, 1e-6);
  // Running min 0 (five ones: min 1 -> clamped later; the stored min is 1)
  // then -128: 1 + 0.01 * (-128 - 1) = -0.29.
  const float min1 = MovingAverage<FloatFormat::kF32>(1.0f, -128.0f, 0.01f);
  EXPECT_NEAR(min1, -0.29, 1e-6);
  // bf16 rounds every step: 127 - 1 = 126; 0.01f * 126 = 1.26 -> 1.2578125
  // (bf16 step 2^-7); 1 + 1.2578125 = 2.2578125 is halfway between the bf16
  // values 2.25 and 2.265625 (step 2^-6) and rounds to the even one, 2.25.
  EXPECT_EQ(MovingAverage<FloatFormat::kBF16>(1.0f, 127.0f, 0.01f), 2.25f);
}

// --------------------------------------------------------- fake quantize

template <FloatFormat F>
double ReferenceFakeQuant(double x, double s, double zp, const QuantSpec& spec) {
  const Fmt fmt = RefFmt<F>();
  double q = RoundFmt(x / s, fmt);
  q = RoundFmt(q + RoundFmt(zp, fmt), fmt);
  q = RoundFmt(std::min(std::max(q, static_cast<double>(spec.q_min)),
                        static_cast<double>(spec.q_max)),
               fmt);
  switch (spec.kind) {
    case QuantKind::kInt:
      q = RoundFmt(std::nearbyint(q), fmt);
      break;
    case QuantKind::kFp8:
      q = RoundFmt(testing_ref::ToE4m3(q), fmt);
      break;
    case QuantKind::kFp4:
      q = Fp4Round(static_cast<float>(q));  // table tested above
      break;
  }
  return RoundFmt(RoundFmt(q - RoundFmt(zp, fmt), fmt) * s, fmt);
}

TYPED_TEST(QParamsFormatTest, FakeQuantizeMatchesReference) {
  constexpr FloatFormat F = TypeParam::value;
  const Fmt fmt = RefFmt<F>();
  std::mt19937 rng(11);
  std::normal_distribution<double> normal(0, 1);
  const QuantSpec specs[] = {
      QuantSpecFor(false, 4, true), QuantSpecFor(false, 8, false),
      QuantSpecFor(false, 16, false), QuantSpecFor(true, 8, true),
      QuantSpecFor(true, 4, true)};
  for (const QuantSpec& spec : specs) {
    for (int unit = 0; unit < 50; ++unit) {
      const double a = RoundFmt(normal(rng) * 3, fmt);
      const double b = RoundFmt(normal(rng) * 3, fmt);
      const ScalarQParams qp = ComputeQParams<F>(
          static_cast<float>(std::min(a, b)), static_cast<float>(std::max(a, b)),
          spec, false, 0);
      const FakeQuantParams p = MakeFakeQuantParams(qp, false, 1);
      for (int k = 0; k < 100; ++k) {
        const double x = RoundFmt(normal(rng) * 3.5, fmt);
        const double want =
            ReferenceFakeQuant<F>(x, qp.scale, qp.zero_point, spec);
        const float got = FakeQuantize<F>(static_cast<float>(x), p, spec);
        ASSERT_EQ(static_cast<double>(got), want)
            << "x " << x << " s " << qp.scale << " zp " << qp.zero_point;
      }
    }
  }
}

TEST(FakeQuantizeTest, HandComputed) {
  const QuantSpec int8 = QuantSpecFor(false, 8, true);
  FakeQuantParams p = MakeFakeQuantParams({0.1f, 0.0f}, false, 1);
  // 0.25 / 0.1 = 2.5 -> 2 (ties to even) -> 0.2.
  EXPECT_EQ(FakeQuantize<FloatFormat::kF32>(0.25f, p, int8), 2.0f * 0.1f);
  // 0.34 / 0.1 = 3.4 -> 3.
  EXPECT_EQ(FakeQuantize<FloatFormat::kF32>(0.34f, p, int8), 3.0f * 0.1f);
  // 0.35f / 0.1f is 3.49999989 exactly, which rounds to 3.5 in float32, and
  // then to 4 (ties to even).
  EXPECT_EQ(FakeQuantize<FloatFormat::kF32>(0.35f, p, int8), 4.0f * 0.1f);
  // Clamped at 127 and -128.
  EXPECT_EQ(FakeQuantize<FloatFormat::kF32>(100.0f, p, int8), 127.0f * 0.1f);
  EXPECT_EQ(FakeQuantize<FloatFormat::kF32>(-100.0f, p, int8), -128.0f * 0.1f);
  // Asymmetric uint-like: zp -128, scale 1: x = 3 -> q = 3 - 128 = -125 ->
  // dequant (-125 + 128) * 1 = 3.
  const QuantSpec asym = QuantSpecFor(false, 8, false);
  FakeQuantParams pa = MakeFakeQuantParams({1.0f, -128.0f}, false, 1);
  EXPECT_EQ(FakeQuantize<FloatFormat::kF32>(3.0f, pa, asym), 3.0f);
  EXPECT_EQ(FakeQuantize<FloatFormat::kF32>(300.0f, pa, asym), 255.0f);
  // fp4 with a global scale: s = 36, g = 224 -> s' = 36 / 224; x = 1 ->
  // 1 / s' = 6.222 -> clamp 6 -> 6 * s' = 0.964285...
  const QuantSpec fp4 = QuantSpecFor(true, 4, true);
  FakeQuantParams pg = MakeFakeQuantParams({36.0f, 0.0f}, true, 224.0f);
  EXPECT_EQ(FakeQuantize<FloatFormat::kF32>(1.0f, pg, fp4),
            6.0f * (36.0f / 224.0f));
  // In bf16 only the final result is rounded (float32 intermediates).
  EXPECT_EQ(FakeQuantize<FloatFormat::kBF16>(1.0f, pg, fp4),
            RoundToBf16(6.0f * (36.0f / 224.0f)));
  // With a global scale the grid value stays float32: an int12 grid value of
  // 1001 (not a bf16 value: bf16 steps by 8 there) is dequantized as is.
  const QuantSpec int12 = QuantSpecFor(false, 12, true);
  FakeQuantParams pw = MakeFakeQuantParams({1.0f, 0.0f}, true, 2.0f);
  EXPECT_EQ(QuantizeToGrid<FloatFormat::kBF16>(500.5f, pw, int12), 1001.0f);
  EXPECT_EQ(FakeQuantize<FloatFormat::kBF16>(500.5f, pw, int12),
            RoundToBf16(1001.0f * 0.5f));
  // 0.3 / s' = 1.8667 -> 2 -> 2 * s' = 0.32142857.
  EXPECT_EQ(FakeQuantize<FloatFormat::kF32>(0.3f, pg, fp4),
            2.0f * (36.0f / 224.0f));
}

TEST(FakeQuantizeTest, TensorApiGroupLayout) {
  // 2 rows x 5 cols, group_size 2 -> groups [0,1] [2,3] [4] per row.
  QuantizationArgs args;
  args.num_bits = 8;
  args.group_size = 2;
  ASSERT_TRUE(args.Validate().ok());
  std::vector<float> x = {0.25f, 1.0f, 2.0f, 3.0f, 4.0f,
                          -1.0f, 0.5f, 7.0f, -7.0f, 0.0f};
  std::vector<float> scale = {0.1f, 1.0f, 2.0f, 0.5f, 0.25f, 1.0f};
  std::vector<int8_t> zp(6, 0);
  auto xv = TensorView::Contiguous(x.data(), DType::kF32, {2, 5});
  auto sv = TensorView::Contiguous(scale.data(), DType::kF32, {2, 3});
  auto zv = TensorView::Contiguous(zp.data(), DType::kI8, {2, 3});
  auto out = FakeQuantizeTensor(*xv, *sv, *zv, args);
  ASSERT_TRUE(out.ok()) << out.status();
  const float* o = out->data_as<float>();
  EXPECT_EQ(o[0], 2.0f * 0.1f);   // 0.25 / 0.1 = 2.5 -> 2
  EXPECT_EQ(o[1], 10.0f * 0.1f);  // 1 / 0.1 = 10
  EXPECT_EQ(o[2], 2.0f);          // group 1: scale 1
  EXPECT_EQ(o[4], 4.0f);          // group 2: 4 / 2 = 2 -> 4
  EXPECT_EQ(o[5], -1.0f);         // row 1 group 0: scale 0.5
  EXPECT_EQ(o[7], 7.0f);          // row 1 group 1: 7 / 0.25 = 28
  EXPECT_EQ(o[9], 0.0f);
  // Wrong number of qparams is an error.
  auto sv_bad = TensorView::Contiguous(scale.data(), DType::kF32, {2, 2});
  auto zv_bad = TensorView::Contiguous(zp.data(), DType::kI8, {2, 2});
  EXPECT_FALSE(FakeQuantizeTensor(*xv, *sv_bad, *zv_bad, args).ok());
}

// ------------------------------------------------------ array qparams API

TEST(CalculateQParamsTest, ShapesAndDtypes) {
  QuantizationArgs args;
  args.num_bits = 4;
  args.symmetric = false;
  ASSERT_TRUE(args.Validate().ok());
  std::vector<uint16_t> mn = {FloatToBf16Bits(-1.0f), FloatToBf16Bits(0.0f)};
  std::vector<uint16_t> mx = {FloatToBf16Bits(3.0f), FloatToBf16Bits(0.0f)};
  auto mnv = TensorView::Contiguous(mn.data(), DType::kBF16, {2, 1});
  auto mxv = TensorView::Contiguous(mx.data(), DType::kBF16, {2, 1});
  auto qp = CalculateQParams(*mnv, *mxv, args);
  ASSERT_TRUE(qp.ok()) << qp.status();
  EXPECT_EQ(qp->scale.dtype(), DType::kBF16);
  EXPECT_EQ(qp->zero_point.dtype(), DType::kI8);
  EXPECT_EQ(qp->scale.rank(), 2);
  // s = 4 / 15 -> bf16 0.267578125; zp = -8 - (-1 / s) = -8 + 3.737 = -4.26
  // -> -4.
  EXPECT_EQ(Bf16BitsToFloat(qp->scale.data_as<uint16_t>()[0]),
            RoundToBf16(RoundToBf16(4.0f) / 15.0f));
  EXPECT_EQ(qp->zero_point.data_as<int8_t>()[0], -4);
  // 0-d input gives shape [1].
  float a = -2, b = 2;
  auto av = TensorView::Contiguous(&a, DType::kF32, {});
  auto bv = TensorView::Contiguous(&b, DType::kF32, {});
  auto qp0 = CalculateQParams(*av, *bv, args);
  ASSERT_TRUE(qp0.ok());
  EXPECT_EQ(qp0->scale.rank(), 1);
  EXPECT_EQ(qp0->scale.dim(0), 1);
  // Mismatched inputs and fp4 asymmetric are errors.
  EXPECT_FALSE(CalculateQParams(*mnv, *bv, args).ok());
  QuantizationArgs fp4;
  fp4.type = QuantType::kFloat;
  fp4.num_bits = 4;
  fp4.symmetric = false;
  ASSERT_TRUE(fp4.Validate().ok());
  auto unimpl = CalculateQParams(*av, *bv, fp4);
  ASSERT_FALSE(unimpl.ok());
  EXPECT_EQ(unimpl.status().code(), absl::StatusCode::kUnimplemented);
}

// ------------------------------------------------- bf16 lean quotient

// The bf16 MSE kernel's lean path computes x / s as x * fl(1 / s)
// (LeanQuotient in core/cpu/mse_kernels.cc). Rounded to bf16 it must be the
// rounded quotient bit for bit: for every bf16 x and every bf16 significand
// of s (at exponents that cover float32 epsilon, the scales of weights,
// 1 and large values; scaling both by a power of two changes neither side
// otherwise), the two agree wherever x / s is at least 2^-126, and below
// that both are tiny values, which every quantization grid takes to zero.
TEST(Bf16Test, LeanQuotientMatchesDivision) {
  int64_t checked = 0, mismatches = 0;
  for (int exponent : {-126, -23, -9, -6, 0, 3, 60, 126}) {
    for (uint32_t m = 0; m < 128; ++m) {
      const float s = Bf16BitsToFloat(
          static_cast<uint16_t>(((exponent + 127) << 7) | m));
      const float recip = 1.0f / s;
      for (uint32_t b = 0; b < 0x10000; ++b) {
        const float x = Bf16BitsToFloat(static_cast<uint16_t>(b));
        if (!std::isfinite(x)) continue;
        const float want = Round<FloatFormat::kBF16>(x / s);
        const float got = Round<FloatFormat::kBF16>(x * recip);
        ++checked;
        if (std::fabs(static_cast<double>(x) / s) >= 0x1p-126) {
          if (FloatToBits(got) != FloatToBits(want)) ++mismatches;
        } else if (!(std::fabs(got) < 0x1p-120f &&
                     std::fabs(want) < 0x1p-120f &&
                     std::signbit(got) == std::signbit(want))) {
          ++mismatches;
        }
      }
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << checked;
  EXPECT_GT(checked, 60000000);
}

// ------------------------------------------------------------- pow

TEST(PowTest, AgreesWithCorrectlyRoundedPow) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> expo(-40, 40);
  int64_t mismatches = 0, total = 0;
  for (float e : {2.4f, 2.40625f, 2.400390625f, 1.0f, 0.7f, 4.0f, 3.3f}) {
    for (int i = 0; i < 100000; ++i) {
      const float a = static_cast<float>(std::exp2(expo(rng)));
      // Reference in long double, rounded once to float.
      const float want = static_cast<float>(
          std::pow(static_cast<long double>(a), static_cast<long double>(e)));
      const float got = PowPositive(a, e);
      ++total;
      if (got != want) {
        ++mismatches;
        // Never more than one ulp away.
        ASSERT_LE(std::fabs(got - want),
                  std::fabs(std::nextafter(want, 2 * want) - want))
            << a << "^" << e;
      }
    }
  }
  // Mismatches need a^e within ~1e-11 of a float32 rounding boundary.
  EXPECT_LE(mismatches, total / 10000) << mismatches << " of " << total;
}

TEST(PowTest, SpecialValues) {
  EXPECT_EQ(PowPositive(0.0f, 2.4f), 0.0f);
  EXPECT_EQ(PowPositive(1.0f, 2.4f), 1.0f);
  EXPECT_EQ(PowPositive(INFINITY, 2.4f), INFINITY);
  EXPECT_TRUE(std::isnan(PowPositive(NAN, 2.4f)));
  EXPECT_EQ(PowPositive(1e30f, 2.4f), INFINITY);
  EXPECT_EQ(PowPositive(1e-30f, 2.4f), 0.0f);
  EXPECT_EQ(PowPositive(4.0f, 0.5f), 2.0f);
  EXPECT_EQ(PowPositive(std::numeric_limits<float>::denorm_min(), 0.5f),
            std::sqrt(std::numeric_limits<float>::denorm_min()));
}

TEST(PowTest, NormExponentFollowsTheObservedDtype) {
  EXPECT_EQ(NormExponent<FloatFormat::kF32>(2.4), 2.4f);
  EXPECT_EQ(NormExponent<FloatFormat::kBF16>(2.4), 2.40625f);
  EXPECT_EQ(NormExponent<FloatFormat::kF16>(2.4), 2.400390625f);
  // Special-cased exponents: bf16 3 rounds the square before multiplying.
  const float x = Bf16BitsToFloat(0x3FB5);  // 1.4140625
  EXPECT_EQ(PowNorm<FloatFormat::kBF16>(x, 3.0f),
            RoundToBf16(RoundToBf16(x * x) * x));
  EXPECT_EQ(PowNorm<FloatFormat::kF32>(3.0f, 2.0f), 9.0f);
  EXPECT_EQ(PowNorm<FloatFormat::kF32>(9.0f, 0.5f), 3.0f);
}

TEST(FormatMaxTest, LargestFiniteValues) {
  EXPECT_EQ(FormatMax(FloatFormat::kF32), std::numeric_limits<float>::max());
  EXPECT_EQ(FormatMax(FloatFormat::kF16), F16BitsToFloat(0x7BFF));
  EXPECT_EQ(FormatMax(FloatFormat::kBF16), 3.3895313892515355e38f);
}

TEST(ShrinkTest, GridFactors) {
  EXPECT_EQ(ShrinkFactor(0, 100.0), 1.0f);
  EXPECT_EQ(ShrinkFactor(1, 100.0), 0.99f);
  EXPECT_EQ(ShrinkFactor(19, 100.0), static_cast<float>(1.0 - 19 / 100.0));
}

}  // namespace
}  // namespace qcal
