// ComputeTensorStats (calibrate's summary) against a direct computation of
// its documented definitions for float32 tensors, where quantization is
// x / s + zp, round half to even, clamp, and dequantization (q - zp) * s.
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "core/quant_args.h"
#include "gtest/gtest.h"
#include "observers/observer.h"
#include "tests/observers/test_tensors.h"
#include "tools/calibrate_lib.h"

namespace qcal {
namespace {

using ::qcal::testing_util::MakeTensor;
using ::qcal::testing_util::RandomTensor;
using ::qcal::testing_util::ToFloats;

struct Direct {
  double sqnr_db;
  int64_t clipped;
  int64_t finite;
};

// SQNR and clipping by the definitions, for int args on an F32 [rows, cols]
// tensor whose units are [unit_rows, unit_cols] tiles, numbered row-major (a
// whole row for channel, a run of one row for groups).
Direct DirectStats(const std::vector<float>& x, int64_t rows, int64_t cols,
                   int64_t unit_cols, const std::vector<float>& scale,
                   const std::vector<float>& zp, float q_min, float q_max,
                   int64_t unit_rows = 1) {
  const int64_t units_per_row = (cols + unit_cols - 1) / unit_cols;
  double signal = 0.0, noise = 0.0;
  Direct d{0.0, 0, 0};
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float v = x[r * cols + c];
      if (!std::isfinite(v)) continue;
      const int64_t u = (r / unit_rows) * units_per_row + c / unit_cols;
      float q = v / scale[u] + zp[u];
      q = std::nearbyint(std::fmin(std::fmax(q, q_min), q_max));
      const float fq = (q - zp[u]) * scale[u];
      ++d.finite;
      if (q == q_min || q == q_max) ++d.clipped;
      signal += static_cast<double>(v) * v;
      noise += (static_cast<double>(v) - fq) * (static_cast<double>(v) - fq);
    }
  }
  d.sqnr_db = 10.0 * std::log10(signal / noise);
  return d;
}

const QParams& Observe(Observer& observer, const Tensor& x) {
  absl::StatusOr<const QParams*> qp = observer.GetQParams(x.view());
  EXPECT_TRUE(qp.ok()) << qp.status();
  return **qp;
}

TEST(CalibrateStatsTest, MatchesTheDefinitionsForGroupsAndChannels) {
  struct Case {
    std::string json;
    int64_t unit_cols;
    float q_min, q_max;
  };
  const int64_t rows = 7, cols = 37;
  const std::vector<Case> cases = {
      {R"({"num_bits":8,"strategy":"channel"})", cols, -128, 127},
      {R"({"num_bits":4,"group_size":8,"symmetric":false})", 8, -8, 7},
      {R"({"num_bits":4,"group_size":16,"observer":"mse"})", 16, -8, 7},
  };
  Tensor x = RandomTensor(DType::kF32, {rows, cols}, 5, 1.0f, true);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.json);
    QuantizationArgs args = *ParseQuantizationArgs(c.json);
    std::unique_ptr<Observer> observer = *CreateObserver("", args);
    const QParams& qp = Observe(*observer, x);
    for (int threads : {1, 3}) {
      absl::StatusOr<TensorStats> stats =
          ComputeTensorStats(x.view(), qp, std::nullopt, args, threads);
      ASSERT_TRUE(stats.ok()) << stats.status();
      const std::vector<float> scale = ToFloats(qp.scale.view());
      const Direct d =
          DirectStats(ToFloats(x.view()), rows, cols, c.unit_cols, scale,
                      ToFloats(qp.zero_point.view()), c.q_min, c.q_max);
      EXPECT_NEAR(stats->sqnr_db, d.sqnr_db, 1e-9);
      EXPECT_EQ(stats->clipped, d.clipped);
      EXPECT_EQ(stats->finite, rows * cols);
      EXPECT_GT(stats->clipped, 0);
      EXPECT_EQ(stats->scale_min, *std::min_element(scale.begin(), scale.end()));
      EXPECT_EQ(stats->scale_max, *std::max_element(scale.begin(), scale.end()));
    }
  }
}

TEST(CalibrateStatsTest, LargeTensorsAreChunkedWithoutChangingResults) {
  // 1100 x 1000 elements: more than one row chunk. Compared with the direct
  // computation (int) and with the same tensor viewed as 3-D, which is
  // fake-quantized whole (float types).
  const int64_t rows = 1100, cols = 1000;
  Tensor x = RandomTensor(DType::kF32, {rows, cols}, 17, 1.0f, true);
  const std::vector<float> xf = ToFloats(x.view());
  struct Case {
    std::string json;
    int64_t unit_rows, unit_cols;
  };
  const std::vector<Case> int_cases = {
      {R"({"num_bits":8,"strategy":"channel"})", 1, cols},
      {R"({"num_bits":4,"group_size":128,"symmetric":false})", 1, 128},
      {R"({"num_bits":8})", rows, cols},
      {R"({"num_bits":8,"strategy":"block","block_structure":[128,96]})", 128,
       96},
  };
  for (const Case& c : int_cases) {
    SCOPED_TRACE(c.json);
    QuantizationArgs args = *ParseQuantizationArgs(c.json);
    std::unique_ptr<Observer> observer = *CreateObserver("", args);
    const QParams& qp = Observe(*observer, x);
    absl::StatusOr<TensorStats> stats =
        ComputeTensorStats(x.view(), qp, std::nullopt, args, 3);
    ASSERT_TRUE(stats.ok()) << stats.status();
    const int bits = args.num_bits;
    const Direct d = DirectStats(
        xf, rows, cols, c.unit_cols, ToFloats(qp.scale.view()),
        ToFloats(qp.zero_point.view()), -std::ldexp(1.0f, bits - 1),
        std::ldexp(1.0f, bits - 1) - 1, c.unit_rows);
    EXPECT_NEAR(stats->sqnr_db, d.sqnr_db, 1e-9);
    EXPECT_EQ(stats->clipped, d.clipped);
    EXPECT_EQ(stats->finite, rows * cols);
  }
  // (Strategies whose units are the same in the 3-D view: channel is not.)
  for (const char* json :
       {R"({"num_bits":8,"type":"float"})",
        R"({"num_bits":8,"type":"float","group_size":64})",
        R"({"num_bits":4,"type":"float","group_size":16,"strategy":"tensor_group"})"}) {
    SCOPED_TRACE(json);
    QuantizationArgs args = *ParseQuantizationArgs(json);
    std::unique_ptr<Observer> observer = *CreateObserver("", args);
    std::optional<float> g;
    if (args.strategy_or_tensor() == Strategy::kTensorGroup) {
      g = *observer->GetGParam(x.view());
    }
    const QParams& qp = *observer->GetQParams(x.view(), nullptr, g).value();
    absl::StatusOr<TensorStats> chunked =
        ComputeTensorStats(x.view(), qp, g, args, 2);
    absl::StatusOr<TensorStats> whole = ComputeTensorStats(
        *x.view().Reshape({1, rows, cols}), qp, g, args, 1);
    ASSERT_TRUE(chunked.ok()) << chunked.status();
    ASSERT_TRUE(whole.ok()) << whole.status();
    EXPECT_EQ(chunked->sqnr_db, whole->sqnr_db);
    EXPECT_EQ(chunked->clipped, whole->clipped);
    EXPECT_GT(chunked->clipped, 0);
  }
}

TEST(CalibrateStatsTest, ExactTensorHasInfiniteSqnr) {
  QuantizationArgs args = *QuantizationArgsFromScheme("W8A16");
  Tensor x = *Tensor::Zeros(DType::kBF16, {3, 5});
  std::unique_ptr<Observer> observer = *CreateObserver("", args);
  absl::StatusOr<TensorStats> stats = ComputeTensorStats(
      x.view(), Observe(*observer, x), std::nullopt, args, 0);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_TRUE(std::isinf(stats->sqnr_db) && stats->sqnr_db > 0);
  EXPECT_EQ(stats->clipped, 0);
  EXPECT_EQ(stats->clipped_fraction(), 0.0);
}

TEST(CalibrateStatsTest, NonFiniteElementsAreLeftOut) {
  QuantizationArgs args = *QuantizationArgsFromScheme("W8A16");
  std::vector<float> v = {1.0f, -2.0f, std::numeric_limits<float>::quiet_NaN(),
                          0.5f, 4.0f, -std::numeric_limits<float>::infinity()};
  Tensor x = MakeTensor(DType::kF32, {2, 3}, v);
  std::unique_ptr<Observer> observer = *CreateObserver("", args);
  ObserveOptions options;
  options.nonfinite = NonFinitePolicy::kSkip;
  observer->set_options(options);
  const QParams& qp = Observe(*observer, x);
  absl::StatusOr<TensorStats> stats =
      ComputeTensorStats(x.view(), qp, std::nullopt, args, 1);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->finite, 4);
  const Direct d = DirectStats(v, 2, 3, 3, ToFloats(qp.scale.view()),
                               ToFloats(qp.zero_point.view()), -128, 127);
  EXPECT_EQ(stats->clipped, d.clipped);
  EXPECT_NEAR(stats->sqnr_db, d.sqnr_db, 1e-9);
  EXPECT_TRUE(std::isfinite(stats->sqnr_db));
}

TEST(CalibrateStatsTest, Fp4WithGlobalScaleCountsTheRangeEdge) {
  // NVFP4: q = fp4(x / (s / g)); the largest |x| of each group maps to 6.
  QuantizationArgs args = *QuantizationArgsFromScheme("NVFP4");
  Tensor x = RandomTensor(DType::kBF16, {4, 32}, 9);
  std::unique_ptr<Observer> observer = *CreateObserver("", args);
  const float g = *observer->GetGParam(x.view());
  observer->Reset();
  const QParams& qp = *observer->GetQParams(x.view(), nullptr, g).value();
  absl::StatusOr<TensorStats> stats =
      ComputeTensorStats(x.view(), qp, g, args, 2);
  ASSERT_TRUE(stats.ok()) << stats.status();
  // Every one of the 8 groups has its extreme value on the edge (+-6).
  EXPECT_GE(stats->clipped, 8);
  EXPECT_LT(stats->clipped_fraction(), 0.5);
  EXPECT_GT(stats->sqnr_db, 10.0);
}

}  // namespace
}  // namespace qcal
