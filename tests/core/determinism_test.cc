// Determinism of the CPU backend: the min/max and MSE kernels give the same
// bits for every SIMD target, every thread count and every repeated run, on
// tensors large enough that the work is split into many pieces (and, for the
// few-unit cases, into per-row items), and those bits are the scalar
// reference's.
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/backend.h"
#include "core/cpu/reference_kernels.h"
#include "core/cpu/simd_kernels.h"
#include "core/float_convert.h"
#include "core/qparams.h"
#include "core/quant_math.h"
#include "core/tensor.h"
#include "gtest/gtest.h"

namespace qcal {
namespace {

constexpr int kThreadCounts[] = {1, 3, 8};
constexpr int64_t kRows = 160;
constexpr int64_t kCols = 700;

Tensor Weights(FloatFormat format, uint32_t seed) {
  Tensor t = Tensor::Zeros(DTypeOf(format), {kRows, kCols}).value();
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (int64_t i = 0; i < kRows * kCols; ++i) {
    float v = normal(rng);
    if (i % 997 == 0) v *= 30.0f;
    if (i % 4999 == 0) v = 0.0f;
    if (i % 5003 == 0) v = -0.0f;
    switch (format) {
      case FloatFormat::kF32:
        t.mutable_data_as<float>()[i] = v;
        break;
      case FloatFormat::kF16:
        t.mutable_data_as<uint16_t>()[i] = FloatToF16Bits(v);
        break;
      case FloatFormat::kBF16:
        t.mutable_data_as<uint16_t>()[i] = FloatToBf16Bits(v);
        break;
    }
  }
  return t;
}

TileGrid Grid(int64_t th, int64_t tw) {
  TileGrid g;
  g.rows = kRows;
  g.cols = kCols;
  g.tile_rows = th;
  g.tile_cols = tw;
  return g;
}

struct Named {
  std::string name;
  TileGrid grid;
};

std::vector<Named> Grids() {
  return {{"tensor", Grid(kRows, kCols)},
          {"channel", Grid(1, kCols)},
          {"group128", Grid(1, 128)},
          {"group16", Grid(1, 16)},
          {"block128", Grid(128, 128)}};
}

std::vector<uint32_t> Bits(const std::vector<float>& v) {
  std::vector<uint32_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = FloatToBits(v[i]);
  return out;
}

std::vector<uint32_t> MinMaxBits(bool simd, const Tensor& x, const TileGrid& g,
                                 FloatFormat format, NonFinitePolicy policy,
                                 int threads) {
  MinMaxRequest req;
  req.x = x.view();
  req.grid = g;
  req.format = format;
  req.nonfinite = policy;
  std::vector<float> mn(g.num_units()), mx(g.num_units());
  int64_t bad = -2;
  ExecOptions exec;
  exec.threads = threads;
  const absl::Status s =
      simd ? SimdMinMax(req, exec, {mn.data(), mx.data(), &bad})
           : ReferenceMinMax(req, exec, {mn.data(), mx.data(), &bad});
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(bad, -1);
  std::vector<uint32_t> out = Bits(mn);
  const std::vector<uint32_t> b = Bits(mx);
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

TEST(DeterminismTest, MinMaxIsIdenticalForEveryTargetAndThreadCount) {
  for (FloatFormat format :
       {FloatFormat::kF32, FloatFormat::kF16, FloatFormat::kBF16}) {
    const Tensor x = Weights(format, 7);
    for (const Named& g : Grids()) {
      for (NonFinitePolicy policy :
           {NonFinitePolicy::kError, NonFinitePolicy::kSkip}) {
        const std::vector<uint32_t> want =
            MinMaxBits(false, x, g.grid, format, policy, 1);
        for (int64_t target : SimdTargets()) {
          ScopedSimdTarget scoped(target);
          for (int threads : kThreadCounts) {
            for (int repeat = 0; repeat < (threads == 3 ? 2 : 1); ++repeat) {
              ASSERT_EQ(MinMaxBits(true, x, g.grid, format, policy, threads),
                        want)
                  << SimdTargetName(target) << " " << g.name << " threads "
                  << threads << " repeat " << repeat;
            }
          }
        }
      }
    }
  }
}

struct MseCase {
  std::string name;
  QuantSpec spec;
  bool global;
  TileGrid grid;
};

std::vector<uint32_t> MseBits(bool simd, const Tensor& x, const MseCase& c,
                              FloatFormat format, float global_scale,
                              int threads) {
  // Ranges of every unit from the reference min/max; candidates as the
  // observer's first chunk.
  MinMaxRequest mreq;
  mreq.x = x.view();
  mreq.grid = c.grid;
  mreq.format = format;
  std::vector<float> mn(c.grid.num_units()), mx(c.grid.num_units());
  EXPECT_TRUE(ReferenceMinMax(mreq, ExecOptions(), {mn.data(), mx.data(),
                                                    nullptr})
                  .ok());
  std::vector<int64_t> units(c.grid.num_units());
  for (size_t u = 0; u < units.size(); ++u) units[u] = static_cast<int64_t>(u);
  std::vector<float> shrink;
  for (int i = 0; i < 6; ++i) shrink.push_back(ShrinkFactor(i * 3, 100.0));
  MseRequest req;
  req.x = x.view();
  req.grid = c.grid;
  req.format = format;
  req.spec = c.spec;
  req.has_global_scale = c.global;
  req.global_scale = global_scale;
  req.norm_exponent = DispatchFormat(
      format, [](auto f) { return NormExponent<decltype(f)::value>(2.4); });
  req.units = units;
  req.unit_min = mn;
  req.unit_max = mx;
  req.shrink = shrink;
  std::vector<float> errors(units.size() * shrink.size());
  ExecOptions exec;
  exec.threads = threads;
  const absl::Status s = simd ? SimdMseErrors(req, exec, errors.data())
                              : ReferenceMseErrors(req, exec, errors.data());
  EXPECT_TRUE(s.ok()) << s;
  return Bits(errors);
}

TEST(DeterminismTest, MseErrorsAreIdenticalForEveryTargetAndThreadCount) {
  const std::vector<MseCase> cases = {
      {"int8_channel", QuantSpecFor(false, 8, true), false, Grid(1, kCols)},
      {"int4_asym_group128", QuantSpecFor(false, 4, false), false,
       Grid(1, 128)},
      {"nvfp4_group16", QuantSpecFor(true, 4, true), true, Grid(1, 16)},
      {"fp8_block128", QuantSpecFor(true, 8, true), false, Grid(128, 128)},
      {"int8_tensor", QuantSpecFor(false, 8, true), false, Grid(kRows, kCols)},
  };
  for (FloatFormat format : {FloatFormat::kF32, FloatFormat::kBF16}) {
    const Tensor x = Weights(format, 11);
    for (const MseCase& c : cases) {
      const std::vector<uint32_t> want = MseBits(false, x, c, format, 37.5f, 1);
      for (int64_t target : SimdTargets()) {
        ScopedSimdTarget scoped(target);
        for (int threads : kThreadCounts) {
          for (int repeat = 0; repeat < (threads == 3 ? 2 : 1); ++repeat) {
            ASSERT_EQ(MseBits(true, x, c, format, 37.5f, threads), want)
                << SimdTargetName(target) << " " << c.name << " threads "
                << threads << " repeat " << repeat;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace qcal
