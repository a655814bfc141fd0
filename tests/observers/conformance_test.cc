// One conformance suite run for every registered observer (tensorstore's
// register-and-test pattern) and every observed dtype: qparam shapes and
// dtypes per strategy, determinism across thread counts, reset, g_idx
// equivalence, empty and non-finite inputs, and the running-statistic shape
// rule.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/float_convert.h"
#include "core/qparams.h"
#include "gtest/gtest.h"
#include "observers/observer.h"
#include "registry/registry.h"
#include "tests/observers/test_tensors.h"

namespace qcal {
namespace {

using testing_util::MakeTensor;
using testing_util::RandomTensor;
using testing_util::SameBits;
using testing_util::ToFloats;

QuantizationArgs Args(const std::string& json) {
  auto args = ParseQuantizationArgs(json);
  EXPECT_TRUE(args.ok()) << json << ": " << args.status();
  return *args;
}

class ConformanceTest
    : public ::testing::TestWithParam<std::tuple<std::string, DType>> {
 protected:
  const std::string& observer_name() const { return std::get<0>(GetParam()); }
  DType dtype() const { return std::get<1>(GetParam()); }

  std::unique_ptr<Observer> Make(const QuantizationArgs& args,
                                 int threads = 0) {
    auto obs = CreateObserver(observer_name(), args);
    EXPECT_TRUE(obs.ok()) << obs.status();
    ObserveOptions options;
    options.tensor_name = "layer.weight";
    options.exec.threads = threads;
    (*obs)->set_options(options);
    return std::move(*obs);
  }
};

struct StrategyCase {
  const char* args;
  std::vector<int64_t> shape;
  std::vector<int64_t> want_qparam_shape;
};

TEST_P(ConformanceTest, ShapesAndDtypesPerStrategy) {
  const StrategyCase cases[] = {
      {R"({"num_bits": 8})", {6, 10}, {1}},
      {R"({"num_bits": 8, "strategy": "channel"})", {6, 10}, {6, 1}},
      {R"({"num_bits": 4, "group_size": 4, "symmetric": false})",
       {6, 10},
       {6, 3}},
      {R"({"num_bits": 4, "type": "float", "strategy": "tensor_group",
           "group_size": 4})",
       {3, 16},
       {3, 4}},
      {R"({"type": "float", "strategy": "block", "block_structure": [4, 3]})",
       {6, 10},
       {2, 4}},
      {R"({"num_bits": 8, "strategy": "token"})", {7, 5}, {7, 1}},
      {R"({"num_bits": 8, "strategy": "token"})", {2, 3, 5}, {6, 1}},
      {R"({"num_bits": 16, "symmetric": false, "strategy": "channel"})",
       {3, 4, 5},
       {3, 1}},
  };
  for (const StrategyCase& c : cases) {
    const QuantizationArgs args = Args(c.args);
    auto obs = Make(args);
    Tensor x = RandomTensor(dtype(), c.shape, 3, 2.0f, true);
    auto qp = obs->GetQParams(x.view());
    ASSERT_TRUE(qp.ok()) << c.args << ": " << qp.status();
    EXPECT_EQ(std::vector<int64_t>((*qp)->scale.shape().begin(),
                                   (*qp)->scale.shape().end()),
              c.want_qparam_shape)
        << c.args;
    EXPECT_EQ((*qp)->scale.dtype(), dtype()) << c.args;
    EXPECT_EQ((*qp)->zero_point.dtype(), args.ZeroPointDType()) << c.args;
    EXPECT_EQ((*qp)->zero_point.shape(), (*qp)->scale.shape());
    for (float s : ToFloats((*qp)->scale.view())) {
      EXPECT_TRUE(std::isfinite(s) && s > 0) << c.args << " scale " << s;
    }
    EXPECT_EQ(obs->qparams(), *qp);
  }
}

TEST_P(ConformanceTest, DeterministicAcrossThreadCounts) {
  const char* configs[] = {
      R"({"num_bits": 4, "group_size": 16})",
      R"({"num_bits": 8, "strategy": "channel", "symmetric": false})",
      R"({"num_bits": 8})",
      R"({"type": "float", "strategy": "block", "block_structure": [8, 8]})",
  };
  for (const char* json : configs) {
    const QuantizationArgs args = Args(json);
    Tensor x = RandomTensor(dtype(), {37, 50}, 11, 1.0f, true);
    auto reference = Make(args, 1);
    auto want = reference->GetQParams(x.view());
    ASSERT_TRUE(want.ok()) << want.status();
    for (int threads : {2, 3, 8}) {
      auto obs = Make(args, threads);
      auto got = obs->GetQParams(x.view());
      ASSERT_TRUE(got.ok());
      EXPECT_TRUE(SameBits((*got)->scale.view(), (*want)->scale.view()))
          << json << " threads " << threads;
      EXPECT_TRUE(
          SameBits((*got)->zero_point.view(), (*want)->zero_point.view()))
          << json << " threads " << threads;
    }
  }
}

TEST_P(ConformanceTest, ResetStartsOver) {
  const QuantizationArgs args = Args(R"({"num_bits": 8, "strategy": "channel",
                                         "symmetric": false})");
  Tensor a = RandomTensor(dtype(), {4, 9}, 1);
  Tensor b = RandomTensor(dtype(), {4, 9}, 2, 3.0f);
  auto obs = Make(args);
  ASSERT_TRUE(obs->Forward(a.view()).ok());
  ASSERT_TRUE(obs->Forward(a.view()).ok());
  EXPECT_EQ(obs->num_observed_tokens(), 8);
  obs->Reset();
  EXPECT_EQ(obs->num_observed_tokens(), std::nullopt);
  EXPECT_EQ(obs->qparams(), nullptr);
  EXPECT_EQ(obs->running(""), nullptr);
  auto after_reset = obs->GetQParams(b.view());
  ASSERT_TRUE(after_reset.ok());
  auto fresh = Make(args);
  auto fresh_qp = fresh->GetQParams(b.view());
  ASSERT_TRUE(fresh_qp.ok());
  EXPECT_TRUE(SameBits((*after_reset)->scale.view(), (*fresh_qp)->scale.view()));
  EXPECT_TRUE(SameBits((*after_reset)->zero_point.view(),
                       (*fresh_qp)->zero_point.view()));
}

TEST_P(ConformanceTest, GIdxEqualsObservingThePermutedTensor) {
  const int64_t rows = 5, cols = 22, group = 4;  // 6 groups, the last short
  for (const char* json :
       {R"({"num_bits": 4, "group_size": 4, "actorder": "group"})",
        R"({"num_bits": 4, "type": "float", "strategy": "tensor_group",
            "group_size": 4})"}) {
    const QuantizationArgs args = Args(json);
    Tensor x = RandomTensor(dtype(), {rows, cols}, 5, 1.0f, true);
    // A random activation order: column perm[k] belongs to group k / 4.
    std::vector<int64_t> perm(cols);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), std::mt19937(9));
    std::vector<float> g_idx(cols);
    for (int64_t k = 0; k < cols; ++k) g_idx[perm[k]] = k / group;
    Tensor g = MakeTensor(DType::kI32, {cols}, g_idx);
    // The permuted tensor: columns stably sorted by group index.
    std::vector<int64_t> order(cols);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return g_idx[a] < g_idx[b];
    });
    const std::vector<float> xs = ToFloats(x.view());
    std::vector<float> permuted(rows * cols);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        permuted[r * cols + c] = xs[r * cols + order[c]];
      }
    }
    Tensor xp = MakeTensor(dtype(), {rows, cols}, permuted);
    for (int round = 0; round < 2; ++round) {  // running state too
      auto with_gidx = Make(args);
      auto without = Make(args);
      const TensorView gv = g.view();
      auto a = with_gidx->GetQParams(x.view(), &gv);
      auto b = without->GetQParams(xp.view());
      ASSERT_TRUE(a.ok()) << a.status();
      ASSERT_TRUE(b.ok()) << b.status();
      EXPECT_TRUE(SameBits((*a)->scale.view(), (*b)->scale.view())) << json;
      EXPECT_TRUE(SameBits((*a)->zero_point.view(), (*b)->zero_point.view()));
    }
    // A g_idx containing -1 means column order.
    std::vector<float> minus(cols, -1.0f);
    Tensor gm = MakeTensor(DType::kI64, {cols}, minus);
    auto o1 = Make(args);
    auto o2 = Make(args);
    const TensorView gmv = gm.view();
    auto c1 = o1->GetQParams(x.view(), &gmv);
    auto c2 = o2->GetQParams(x.view());
    ASSERT_TRUE(c1.ok() && c2.ok());
    EXPECT_TRUE(SameBits((*c1)->scale.view(), (*c2)->scale.view()));
    // Malformed g_idx: wrong length, group out of range, uneven groups.
    auto o3 = Make(args);
    Tensor short_g = MakeTensor(DType::kI32, {cols - 1}, g_idx);
    const TensorView sv = short_g.view();
    EXPECT_FALSE(o3->GetQParams(x.view(), &sv).ok());
    std::vector<float> bad = g_idx;
    bad[0] = 99;
    Tensor bad_g = MakeTensor(DType::kI32, {cols}, bad);
    const TensorView bv = bad_g.view();
    EXPECT_FALSE(o3->GetQParams(x.view(), &bv).ok());
    std::vector<float> one_group(cols, 0.0f);  // 1 distinct index, 6 groups
    Tensor one_g = MakeTensor(DType::kI32, {cols}, one_group);
    const TensorView ov = one_g.view();
    EXPECT_FALSE(o3->GetQParams(x.view(), &ov).ok());
  }
}

// Uneven group sizes (the counts of each g_idx value, as torch.unique gives)
// are the seed's calculate_qparams on each group's columns under its tensor
// id.
TEST_P(ConformanceTest, GIdxWithUnevenGroupSizes) {
  const QuantizationArgs args = Args(R"({"num_bits": 4, "group_size": 4,
                                         "symmetric": false})");
  const int64_t rows = 4, cols = 22;  // 6 qparam columns
  const int64_t counts[] = {2, 6, 4, 4, 3, 3};
  std::vector<float> g_idx(cols);
  std::vector<int64_t> order(cols);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(3));
  // Group values 10, 20, ... : only their order matters.
  int64_t pos = 0;
  for (int k = 0; k < 6; ++k) {
    for (int64_t i = 0; i < counts[k]; ++i) g_idx[order[pos++]] = 10 * (k + 1);
  }
  Tensor g = MakeTensor(DType::kI64, {cols}, g_idx);
  Tensor x = RandomTensor(dtype(), {rows, cols}, 17, 1.0f, true);
  const std::vector<float> xs = ToFloats(x.view());
  std::vector<int64_t> sorted(cols);
  std::iota(sorted.begin(), sorted.end(), 0);
  std::stable_sort(sorted.begin(), sorted.end(),
                   [&](int64_t a, int64_t b) { return g_idx[a] < g_idx[b]; });
  for (int round = 0; round < 2; ++round) {
    auto obs = Make(args);
    auto seed = Make(args);
    for (int r = 0; r <= round; ++r) {
      const TensorView gv = g.view();
      auto got = obs->GetQParams(x.view(), &gv);
      ASSERT_TRUE(got.ok()) << got.status();
      ASSERT_EQ((*got)->scale.dim(1), 6);
      int64_t begin = 0;
      for (int k = 0; k < 6; ++k) {
        std::vector<float> part;
        for (int64_t row = 0; row < rows; ++row) {
          for (int64_t c = begin; c < begin + counts[k]; ++c) {
            part.push_back(xs[row * cols + sorted[c]]);
          }
        }
        Tensor slice = MakeTensor(dtype(), {rows, counts[k]}, part);
        auto want = seed->CalculateQParams(slice.view(), {1}, GroupTensorId(k));
        ASSERT_TRUE(want.ok()) << want.status();
        const std::vector<float> got_scale = ToFloats((*got)->scale.view());
        const std::vector<float> got_zp = ToFloats((*got)->zero_point.view());
        const std::vector<float> want_scale = ToFloats(want->scale.view());
        const std::vector<float> want_zp = ToFloats(want->zero_point.view());
        for (int64_t row = 0; row < rows; ++row) {
          EXPECT_EQ(got_scale[row * 6 + k], want_scale[row]) << k;
          EXPECT_EQ(got_zp[row * 6 + k], want_zp[row]) << k;
        }
        begin += counts[k];
      }
    }
  }
}

TEST_P(ConformanceTest, EmptyInputIsNotObserved) {
  const QuantizationArgs args = Args(R"({"num_bits": 8, "strategy": "channel"})");
  auto obs = Make(args);
  Tensor empty = Tensor::Zeros(dtype(), {0, 8}).value();
  auto r = obs->Forward(empty.view());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->qparams, nullptr);
  EXPECT_EQ(obs->num_observed_tokens(), std::nullopt);
  EXPECT_EQ(obs->running(""), nullptr);
  Tensor x = RandomTensor(dtype(), {3, 8}, 4);
  auto first = obs->Forward(x.view());
  ASSERT_TRUE(first.ok());
  auto again = obs->Forward(empty.view());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->qparams, first->qparams);  // the last qparams, unchanged
  EXPECT_EQ(obs->num_observed_tokens(), 3);
}

TEST_P(ConformanceTest, NonFiniteInputIsRejectedOrSkipped) {
  const QuantizationArgs args = Args(R"({"num_bits": 8, "strategy": "channel",
                                         "symmetric": false})");
  std::vector<float> values = ToFloats(RandomTensor(dtype(), {3, 6}, 8).view());
  values[1 * 6 + 4] = std::nanf("");
  Tensor x = MakeTensor(dtype(), {3, 6}, values);
  auto obs = Make(args);
  auto qp = obs->GetQParams(x.view());
  ASSERT_FALSE(qp.ok());
  EXPECT_EQ(qp.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(qp.status().message().find("layer.weight"),
            absl::string_view::npos)
      << qp.status();
  EXPECT_NE(qp.status().message().find("[1, 4]"), absl::string_view::npos)
      << qp.status();
  EXPECT_EQ(obs->running(""), nullptr);  // nothing was recorded
  values[1 * 6 + 4] = -INFINITY;
  Tensor y = MakeTensor(dtype(), {3, 6}, values);
  EXPECT_FALSE(obs->GetQParams(y.view()).ok());

  // Opting in skips them: every scale finite.
  ObserveOptions skip = obs->options();
  skip.nonfinite = NonFinitePolicy::kSkip;
  obs->set_options(skip);
  auto skipped = obs->GetQParams(x.view());
  ASSERT_TRUE(skipped.ok()) << skipped.status();
  for (float s : ToFloats((*skipped)->scale.view())) {
    EXPECT_TRUE(std::isfinite(s));
  }
}

TEST_P(ConformanceTest, UnitLayoutMustStayTheSame) {
  // Token units across batches of different lengths: an error for observers
  // with running state, fine for memoryless ones.
  const QuantizationArgs args = Args(R"({"num_bits": 8, "strategy": "token"})");
  auto obs = Make(args);
  Tensor a = RandomTensor(dtype(), {4, 8}, 1);
  Tensor b = RandomTensor(dtype(), {5, 8}, 2);
  ASSERT_TRUE(obs->GetQParams(a.view()).ok());
  auto second = obs->GetQParams(b.view());
  const bool memoryless = observer_name().rfind("memoryless", 0) == 0;
  if (memoryless) {
    EXPECT_TRUE(second.ok()) << second.status();
  } else {
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(second.status().message().find("[4, 1]"),
              absl::string_view::npos)
        << second.status();
  }
}

// Each group's tensor id keeps its own running statistic, also when a later
// observation has more groups (group_2 starts fresh while group_0 and
// group_1 go on) and when the ids' statistics come from different
// observations: group j of the combined observer equals a separate observer
// fed only column block j.
TEST_P(ConformanceTest, RunningStatisticPerGroupIdAcrossGroupCounts) {
  const QuantizationArgs args =
      Args(R"({"num_bits": 4, "symmetric": false, "group_size": 8})");
  const int64_t rows = 3;
  std::vector<Tensor> seen;
  seen.push_back(RandomTensor(dtype(), {rows, 16}, 1));
  seen.push_back(RandomTensor(dtype(), {rows, 24}, 2, 3.0f));
  seen.push_back(RandomTensor(dtype(), {rows, 24}, 3, 0.5f));
  seen.push_back(RandomTensor(dtype(), {rows, 16}, 4, 2.0f));
  auto combined = Make(args);
  std::vector<std::unique_ptr<Observer>> single;
  for (int j = 0; j < 3; ++j) single.push_back(Make(args));
  for (size_t step = 0; step < seen.size(); ++step) {
    auto got = combined->GetQParams(seen[step].view());
    ASSERT_TRUE(got.ok()) << got.status();
    const std::vector<float> x = ToFloats(seen[step].view());
    const int64_t cols = seen[step].view().dim(1);
    const std::vector<float> scale = ToFloats((*got)->scale.view());
    const std::vector<float> zp = ToFloats((*got)->zero_point.view());
    for (int64_t j = 0; j < cols / 8; ++j) {
      std::vector<float> block;
      for (int64_t r = 0; r < rows; ++r) {
        block.insert(block.end(), x.begin() + r * cols + j * 8,
                     x.begin() + r * cols + j * 8 + 8);
      }
      Tensor part = MakeTensor(dtype(), {rows, 8}, block);
      auto want = single[j]->GetQParams(part.view());
      ASSERT_TRUE(want.ok()) << want.status();
      const std::vector<float> want_scale = ToFloats((*want)->scale.view());
      const std::vector<float> want_zp = ToFloats((*want)->zero_point.view());
      for (int64_t r = 0; r < rows; ++r) {
        EXPECT_EQ(scale[r * (cols / 8) + j], want_scale[r])
            << "step " << step << " group " << j << " row " << r;
        EXPECT_EQ(zp[r * (cols / 8) + j], want_zp[r])
            << "step " << step << " group " << j << " row " << r;
      }
    }
  }
}

TEST_P(ConformanceTest, GlobalScaleOnlyForTensorGroup) {
  auto tensor = Make(Args(R"({"num_bits": 8})"));
  Tensor x = RandomTensor(dtype(), {4, 16}, 6);
  EXPECT_EQ(tensor->GetGParam(x.view()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto nvfp4 = Make(*QuantizationArgsFromScheme("NVFP4"));
  auto g = nvfp4->GetGParam(x.view());
  ASSERT_TRUE(g.ok()) << g.status();
  // First observation: every observer gives 448 * 6 / max|x|.
  float max_abs = 0;
  for (float v : ToFloats(x.view())) max_abs = std::max(max_abs, std::fabs(v));
  EXPECT_EQ(*g, 2688.0f / max_abs);
  auto qp = nvfp4->GetQParams(x.view(), nullptr, *g);
  ASSERT_TRUE(qp.ok());
  for (float s : ToFloats((*qp)->scale.view())) {
    EXPECT_EQ(s, RoundToE4m3fn(s)) << "fp4 scales are fp8 values";
  }
  // Forward in gparam mode records tokens too.
  auto fwd = nvfp4->Forward(x.view(), nullptr, std::nullopt, true);
  ASSERT_TRUE(fwd.ok());
  EXPECT_TRUE(fwd->global_scale.has_value());
  EXPECT_EQ(nvfp4->num_observed_tokens(), 4);
}

TEST_P(ConformanceTest, CalculateQParamsAlongDims) {
  const QuantizationArgs args = Args(R"({"num_bits": 8, "symmetric": false})");
  Tensor x = RandomTensor(dtype(), {3, 4, 5}, 12);
  auto obs = Make(args);
  auto all = obs->CalculateQParams(x.view());
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->scale.numel(), 1);
  auto keep0 = obs->GetQParamsAlongDim(x.view(), {0}, "t0");
  ASSERT_TRUE(keep0.ok()) << keep0.status();
  EXPECT_EQ(std::vector<int64_t>(keep0->scale.shape().begin(),
                                 keep0->scale.shape().end()),
            (std::vector<int64_t>{3, 1, 1}));
  // Keeping a trailing dimension moves it first; the result must equal
  // observing the transposed tensor.
  auto keep2 = obs->GetQParamsAlongDim(x.view(), {2}, "t2");
  ASSERT_TRUE(keep2.ok()) << keep2.status();
  EXPECT_EQ(std::vector<int64_t>(keep2->scale.shape().begin(),
                                 keep2->scale.shape().end()),
            (std::vector<int64_t>{1, 1, 5}));
  const std::vector<float> xs = ToFloats(x.view());
  std::vector<float> moved(60);
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 4; ++b)
      for (int c = 0; c < 5; ++c) moved[c * 12 + a * 4 + b] = xs[a * 20 + b * 5 + c];
  Tensor xt = MakeTensor(dtype(), {5, 12}, moved);
  auto fresh = Make(args);
  auto want = fresh->GetQParamsAlongDim(xt.view(), {0}, "t2");
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(ToFloats(keep2->scale.view()), ToFloats(want->scale.view()));
  EXPECT_FALSE(obs->GetQParamsAlongDim(x.view(), {0, 1, 2}).ok());
  EXPECT_FALSE(obs->GetQParamsAlongDim(x.view(), {3}).ok());
}

INSTANTIATE_TEST_SUITE_P(AllObservers, ConformanceTest,
                         ::testing::ValuesIn(testing_util::ObserverDTypeCases()),
                         testing_util::ObserverDTypeCaseName);

}  // namespace
}  // namespace qcal
