// The MSE observers against a literal transcription of the seed's search:
// for each call, step by step over every candidate, all units evaluated,
// strict improvement, shared patience counter, break. The production path
// evaluates candidates in chunks and replays the rule; the results must be
// identical. The scalar building blocks (ComputeQParams, FakeQuantize,
// ErrorTerm, RowErrorSum) are tested on their own in core.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/element_access.h"
#include "core/quant_math.h"
#include "gtest/gtest.h"
#include "observers/observer.h"
#include "tests/observers/test_tensors.h"

namespace qcal {
namespace {

using testing_util::RandomTensor;
using testing_util::ToFloats;

struct Unit {
  std::vector<std::vector<float>> rows;  // the unit's data, row by row
};

struct Kwargs {
  double maxshrink = 0.2;
  int64_t patience = 5;
  double grid = 100.0;
  double norm = 2.4;
};

// One seed-level call: returns the chosen [min, max] of each unit.
template <FloatFormat F>
void ReferenceCall(const std::vector<Unit>& units, const QuantSpec& spec,
                   const Kwargs& kw, bool has_g, float g,
                   std::vector<float>* mins, std::vector<float>* maxs) {
  const size_t n = units.size();
  std::vector<float> a(n), b(n);
  for (size_t u = 0; u < n; ++u) {
    float mn = units[u].rows[0][0], mx = mn;
    for (const auto& row : units[u].rows) {
      for (float v : row) {
        mn = std::min(mn, v);
        mx = std::max(mx, v);
      }
    }
    a[u] = mn;
    b[u] = mx;
  }
  std::vector<float> best(n, FormatMax(F));
  mins->assign(n, 1.0f);
  maxs->assign(n, 0.0f);
  const float norm = NormExponent<F>(kw.norm);
  int64_t no_improve = 0;
  for (int64_t i = 0; i < static_cast<int64_t>(kw.maxshrink * kw.grid); ++i) {
    const float p = ShrinkFactor(i, kw.grid);
    bool improved = false;
    for (size_t u = 0; u < n; ++u) {
      const float cmin = Round<F>(p * a[u]);
      const float cmax = Round<F>(p * b[u]);
      const FakeQuantParams fq = MakeFakeQuantParams(
          ComputeQParams<F>(cmin, cmax, spec, has_g, g), has_g, g);
      double total = 0;
      for (const auto& row : units[u].rows) {
        total += RowErrorSum<F>([&](int64_t k) { return row[k]; },
                                static_cast<int64_t>(row.size()), fq, spec,
                                norm, false);
      }
      const float err = FinishErrorSum<F>(total);
      if (err < best[u]) {
        best[u] = err;
        (*mins)[u] = cmin;
        (*maxs)[u] = cmax;
        improved = true;
      }
    }
    if (improved) {
      no_improve = 0;
    } else if (++no_improve >= kw.patience) {
      break;
    }
  }
}

// Cuts a [rows, cols] tensor (as floats) into the units of a strategy's
// calls, and returns the expected scale per qparam position.
template <FloatFormat F>
std::vector<float> ReferenceScales(const std::vector<float>& x, int64_t rows,
                                   int64_t cols, const QuantizationArgs& args,
                                   const Kwargs& kw, bool has_g, float g) {
  const QuantSpec spec = QuantSpecFor(args.type == QuantType::kFloat,
                                      args.num_bits, args.symmetric);
  auto rect = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    Unit unit;
    for (int64_t r = r0; r < r1; ++r) {
      unit.rows.emplace_back(x.begin() + r * cols + c0,
                             x.begin() + r * cols + c1);
    }
    return unit;
  };
  auto scales_of = [&](const std::vector<Unit>& units) {
    std::vector<float> mins, maxs, out;
    ReferenceCall<F>(units, spec, kw, has_g, g, &mins, &maxs);
    for (size_t u = 0; u < units.size(); ++u) {
      out.push_back(ComputeQParams<F>(mins[u], maxs[u], spec, has_g, g).scale);
    }
    return out;
  };
  std::vector<float> result;
  switch (args.strategy_or_tensor()) {
    case Strategy::kTensor:
      return scales_of({rect(0, rows, 0, cols)});
    case Strategy::kChannel:
    case Strategy::kToken: {
      std::vector<Unit> units;
      for (int64_t r = 0; r < rows; ++r) units.push_back(rect(r, r + 1, 0, cols));
      return scales_of(units);
    }
    case Strategy::kGroup:
    case Strategy::kTensorGroup: {
      const int64_t gs = *args.group_size;
      const int64_t groups = (cols + gs - 1) / gs;
      result.assign(rows * groups, 0);
      for (int64_t j = 0; j < groups; ++j) {
        std::vector<Unit> units;
        for (int64_t r = 0; r < rows; ++r) {
          units.push_back(rect(r, r + 1, j * gs, std::min(cols, (j + 1) * gs)));
        }
        const std::vector<float> s = scales_of(units);
        for (int64_t r = 0; r < rows; ++r) result[r * groups + j] = s[r];
      }
      return result;
    }
    case Strategy::kBlock: {
      const int64_t bh = (*args.block_structure)[0];
      const int64_t bw = (*args.block_structure)[1];
      for (int64_t i = 0; i * bh < rows; ++i) {
        for (int64_t j = 0; j * bw < cols; ++j) {
          result.push_back(scales_of({rect(i * bh, std::min(rows, (i + 1) * bh),
                                           j * bw,
                                           std::min(cols, (j + 1) * bw))})[0]);
        }
      }
      return result;
    }
  }
  return result;
}

struct Case {
  const char* args;
  int64_t rows, cols;
  Kwargs kw;
};

template <FloatFormat F>
void RunCases(DType dtype) {
  const Case cases[] = {
      {R"({"num_bits": 8, "strategy": "channel"})", 9, 70, {}},
      {R"({"num_bits": 8, "strategy": "channel", "symmetric": false})", 9, 70,
       {0.5, 2, 40.0, 2.0}},
      {R"({"num_bits": 4, "group_size": 16})", 7, 40, {}},  // short last group
      {R"({"num_bits": 4, "group_size": 16, "symmetric": false})", 7, 40,
       {0.8, 1, 25.0, 3.0}},
      {R"({"num_bits": 8})", 12, 33, {0.3, 3, 10.0, 1.0}},
      {R"({"type": "float", "strategy": "block", "block_structure": [4, 8]})",
       10, 21, {}},  // partial edge blocks
      {R"({"num_bits": 8, "strategy": "token"})", 6, 17, {0.2, 5, 100.0, 0.5}},
      {R"({"type": "float", "num_bits": 8, "strategy": "channel"})", 5, 64, {}},
      {R"({"num_bits": 2, "strategy": "channel", "symmetric": false})", 5, 64,
       {}},
  };
  for (const Case& c : cases) {
    QuantizationArgs args = *ParseQuantizationArgs(c.args);
    args.observer_kwargs = {{"maxshrink", c.kw.maxshrink},
                            {"patience", static_cast<double>(c.kw.patience)},
                            {"grid", c.kw.grid},
                            {"norm", c.kw.norm}};
    Tensor x = RandomTensor(dtype, {c.rows, c.cols}, 21, 1.5f, true);
    const std::vector<float> want = ReferenceScales<F>(
        ToFloats(x.view()), c.rows, c.cols, args, c.kw, false, 0);
    for (const char* name : {"memoryless_mse", "mse"}) {
      QuantizationArgs named = args;
      if (std::string(name) == "mse") named.observer_kwargs["averaging_constant"] = 0.5;
      auto obs = CreateObserver(name, named);
      ASSERT_TRUE(obs.ok()) << obs.status();
      auto qp = (*obs)->GetQParams(x.view());
      ASSERT_TRUE(qp.ok()) << c.args << ": " << qp.status();
      EXPECT_EQ(ToFloats((*qp)->scale.view()), want)
          << name << " " << c.args << " " << DTypeName(dtype);
    }
  }
}

TEST(MseSearchTest, MatchesTheLiteralAlgorithmF32) {
  RunCases<FloatFormat::kF32>(DType::kF32);
}
TEST(MseSearchTest, MatchesTheLiteralAlgorithmF16) {
  RunCases<FloatFormat::kF16>(DType::kF16);
}
TEST(MseSearchTest, MatchesTheLiteralAlgorithmBf16) {
  RunCases<FloatFormat::kBF16>(DType::kBF16);
}

TEST(MseSearchTest, TensorGroupWithGlobalScale) {
  QuantizationArgs args = *QuantizationArgsFromScheme("NVFP4");
  Tensor x = RandomTensor(DType::kBF16, {6, 48}, 4, 1.0f, true);
  auto obs = CreateObserver("memoryless_mse", args);
  ASSERT_TRUE(obs.ok());
  auto g = (*obs)->GetGParam(x.view());
  ASSERT_TRUE(g.ok());
  auto qp = (*obs)->GetQParams(x.view(), nullptr, *g);
  ASSERT_TRUE(qp.ok()) << qp.status();
  const std::vector<float> want = ReferenceScales<FloatFormat::kBF16>(
      ToFloats(x.view()), 6, 48, args, Kwargs{}, true, *g);
  EXPECT_EQ(ToFloats((*qp)->scale.view()), want);
}

// The MSE observer's moving average applies to every tensor id, starting
// from the first observation (SPEC §9.2).
TEST(MseSearchTest, MovingAverageForEveryTensorId) {
  QuantizationArgs args = *ParseQuantizationArgs(
      R"({"num_bits": 4, "group_size": 8, "symmetric": false,
          "observer_kwargs": {"averaging_constant": 0.25}})");
  const QuantSpec spec = QuantSpecFor(false, 4, false);
  Tensor a = RandomTensor(DType::kF32, {3, 16}, 1);
  Tensor b = RandomTensor(DType::kF32, {3, 16}, 2, 4.0f);
  auto mse = CreateObserver("mse", args);
  ASSERT_TRUE(mse.ok());
  ASSERT_TRUE((*mse)->GetQParams(a.view()).ok());
  ASSERT_TRUE((*mse)->GetQParams(b.view()).ok());
  EXPECT_EQ((*mse)->running(""), nullptr);  // group 0 is not the tensor id
  for (int64_t j = 0; j < 2; ++j) {
    const RunningMinMax* run = (*mse)->running(GroupTensorId(j));
    ASSERT_NE(run, nullptr);
    std::vector<Unit> ua, ub;
    const std::vector<float> xa = ToFloats(a.view()), xb = ToFloats(b.view());
    for (int64_t r = 0; r < 3; ++r) {
      ua.push_back({{std::vector<float>(xa.begin() + r * 16 + j * 8,
                                        xa.begin() + r * 16 + j * 8 + 8)}});
      ub.push_back({{std::vector<float>(xb.begin() + r * 16 + j * 8,
                                        xb.begin() + r * 16 + j * 8 + 8)}});
    }
    std::vector<float> amin, amax, bmin, bmax;
    ReferenceCall<FloatFormat::kF32>(ua, spec, Kwargs{}, false, 0, &amin, &amax);
    ReferenceCall<FloatFormat::kF32>(ub, spec, Kwargs{}, false, 0, &bmin, &bmax);
    for (int64_t r = 0; r < 3; ++r) {
      EXPECT_EQ(run->min(r),
                MovingAverage<FloatFormat::kF32>(amin[r], bmin[r], 0.25f));
      EXPECT_EQ(run->max(r),
                MovingAverage<FloatFormat::kF32>(amax[r], bmax[r], 0.25f));
    }
  }
}

// Unlike minmax, mse keeps averaging with averaging_constant = 1: the seed's
// MovingAverageMSEObserver computes running + 1 * (current - running).
TEST(MseSearchTest, AveragingConstantOneStillAverages) {
  QuantizationArgs args = *ParseQuantizationArgs(
      R"({"num_bits": 8, "observer_kwargs": {"averaging_constant": 1.0}})");
  Tensor a = RandomTensor(DType::kBF16, {4, 32}, 1);
  Tensor b = RandomTensor(DType::kBF16, {4, 32}, 2, 3.0f);
  auto mse = CreateObserver("mse", args);
  ASSERT_TRUE(mse.ok());
  ASSERT_TRUE((*mse)->GetQParams(a.view()).ok());
  const RunningMinMax* run = (*mse)->running("");
  ASSERT_NE(run, nullptr);
  const float first_min = run->min(0), first_max = run->max(0);
  ASSERT_TRUE((*mse)->GetQParams(b.view()).ok());
  std::vector<Unit> ub(1);
  const std::vector<float> xb = ToFloats(b.view());
  for (int r = 0; r < 4; ++r) {
    ub[0].rows.emplace_back(xb.begin() + r * 32, xb.begin() + r * 32 + 32);
  }
  std::vector<float> bmin, bmax;
  ReferenceCall<FloatFormat::kBF16>(ub, QuantSpecFor(false, 8, true), Kwargs{},
                                    false, 0, &bmin, &bmax);
  EXPECT_EQ(run->min(0),
            MovingAverage<FloatFormat::kBF16>(first_min, bmin[0], 1.0f));
  EXPECT_EQ(run->max(0),
            MovingAverage<FloatFormat::kBF16>(first_max, bmax[0], 1.0f));
}

}  // namespace
}  // namespace qcal
