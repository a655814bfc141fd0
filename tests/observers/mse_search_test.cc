// The MSE observers against a literal transcription of the seed's search:
// for each call, step by step over every candidate, all units evaluated,
// strict improvement, shared patience counter, break. The production path
// evaluates candidates in chunks and replays the rule; the results must be
// identical. The scalar building blocks (ComputeQParams, FakeQuantize,
// ErrorTerm, RowErrorSum) are tested on their own in core.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/backend.h"
#include "core/cpu/simd_kernels.h"
#include "core/element_access.h"
#include "core/float_convert.h"
#include "core/quant_math.h"
#include "gtest/gtest.h"
#include "observers/mse_search.h"
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

// ------------------------------------------ the search on error bounds

// The CPU backend's kernels with a counter on mse_errors (the exact errors,
// which the search on bounds asks for only where the bounds leave a decision
// open), and the CPU backend without bounds (every decision on exact errors).
std::atomic<int64_t> exact_units_asked{0};

absl::Status CountingMseErrors(const MseRequest& request,
                               const ExecOptions& exec, float* errors) {
  exact_units_asked += static_cast<int64_t>(request.units.size());
  return CpuBackend().mse_errors(request, exec, errors);
}

const BackendOps& CountingBackend() {
  static const BackendOps ops = {"cpu-counting", CpuBackend().min_max,
                                 &CountingMseErrors,
                                 CpuBackend().mse_error_bounds};
  return ops;
}

const BackendOps& ExactBackend() {
  static const BackendOps ops = {"cpu-exact", CpuBackend().min_max,
                                 CpuBackend().mse_errors, nullptr};
  return ops;
}

struct SearchCase {
  std::string name;
  QuantSpec spec;
  int64_t rows, cols, tile_rows, tile_cols;
  bool global;
  float data_scale;
  double norm;
  // Whether the search on bounds asks for exact errors (-1: not checked).
  int expect_exact = 0;
  // The data's seed (0: the next of the test's sequence).
  uint32_t seed = 0;
};

// Runs MseSearch on an f32 tensor with `ops` (one call per grid column, as
// the group strategies do); returns the chosen minima then maxima.
std::vector<float> Search(const BackendOps& ops, const Tensor& x,
                          const SearchCase& c, int threads,
                          MseSearchOptions options = {}) {
  Observation obs;
  obs.x = x.view();
  obs.grid = TileGrid{c.rows, c.cols, c.tile_rows, c.tile_cols};
  obs.format = FloatFormat::kF32;
  obs.spec = c.spec;
  obs.backend = &ops;
  obs.options.exec.threads = threads;
  const int64_t gr = obs.grid.grid_rows(), gc = obs.grid.grid_cols();
  for (int64_t j = 0; j < gc; ++j) {
    obs.calls.push_back({GroupTensorId(j), UnitRange(j, gc, gr), {gr, 1}});
  }
  const int64_t n = obs.grid.num_units();
  std::vector<float> mn(n), mx(n);
  MinMaxRequest req;
  req.x = obs.x;
  req.grid = obs.grid;
  req.format = obs.format;
  int64_t bad = -1;
  EXPECT_TRUE(ops.min_max(req, obs.options.exec,
                          MinMaxOutput{mn.data(), mx.data(), &bad})
                  .ok());
  obs.min = mn;
  obs.max = mx;
  if (c.global) {
    float lo = 0, hi = 0;
    for (int64_t u = 0; u < n; ++u) {
      lo = std::min(lo, mn[u]);
      hi = std::max(hi, mx[u]);
    }
    obs.global_scale = GlobalScale(lo, hi);
  }
  options.norm = c.norm;
  std::vector<float> out_min(n), out_max(n);
  const absl::Status s = MseSearch(obs, options, absl::MakeSpan(out_min),
                                   absl::MakeSpan(out_max));
  EXPECT_TRUE(s.ok()) << s;
  out_min.insert(out_min.end(), out_max.begin(), out_max.end());
  return out_min;
}

// The search on bounds chooses exactly what the search on exact errors
// chooses: for ordinary weights without a single exact error (the bounds
// settle every decision), and where the bounds cannot settle decisions:
// errors far below 2^-126 (the bounds' absolute slack), overflowing errors
// (no bound), a wide bound (exponent 1000), all-zero units (equal keys).
TEST(MseSearchTest, SearchOnBoundsEqualsSearchOnExactErrors) {
  const QuantSpec int8 = QuantSpecFor(false, 8, true);
  const QuantSpec int4 = QuantSpecFor(false, 4, true);
  const QuantSpec int4_asym = QuantSpecFor(false, 4, false);
  const QuantSpec fp4 = QuantSpecFor(true, 4, true);
  const QuantSpec fp8 = QuantSpecFor(true, 8, true);
  const std::vector<SearchCase> ordinary = {
      {"int8_channel", int8, 24, 300, 1, 300, false, 0.02f, 2.4},
      {"int4_group128", int4, 16, 512, 1, 128, false, 0.02f, 2.4},
      // Calls of 512 units: one speculative chunk of every step, where
      // float32 int4 takes the scaled terms (whole_search). Of its 1024
      // units, decisions the windowed terms cannot settle need exact
      // errors (two units with this seed; 31 with the scaled brackets
      // alone, below).
      {"int4_group128_512_units", int4, 512, 256, 1, 128, false, 0.02f, 2.4,
       -1, 7},
      {"int4_asym_group32", int4_asym, 8, 200, 1, 32, false, 0.02f, 2.4},
      {"nvfp4", fp4, 16, 256, 1, 16, true, 0.02f, 2.4},
      {"fp8_block", fp8, 20, 70, 8, 16, false, 1.0f, 2.4},
      {"int8_tensor", int8, 13, 50, 13, 50, false, 3.0f, 2.4},
      {"int4_group64_norm3.7", int4, 8, 256, 1, 64, false, 0.02f, 3.7},
  };
  const std::vector<SearchCase> hard = {
      // Scales clamped to eps: equal keys settle every decision.
      {"tiny_int4_group16", int4, 8, 64, 1, 16, false, 1e-17f, 2.4, 0},
      {"tiny_nvfp4", fp4, 8, 64, 1, 16, true, 1e-20f, 2.4, 1},
      // Terms above float32's range (huge: each term; overflow: the errors
      // themselves are +inf) are decided on brackets too: the windowed
      // terms are scaled back in double.
      {"huge_int4_asym_group16", int4_asym, 6, 64, 1, 16, false, 1e30f, 2.4, 0},
      {"overflow_int4_asym_group16", int4_asym, 6, 64, 1, 16, false, 5e37f, 2.4,
       0},
      {"norm1000_int8_channel", int8, 8, 64, 1, 64, false, 0.5f, 1000.0, 1},
      {"zeros_int8_channel", int8, 4, 40, 1, 40, false, 0.0f, 2.4, 0},
  };
  uint32_t seed = 100;
  for (bool is_hard : {false, true}) {
    for (const SearchCase& c : is_hard ? hard : ordinary) {
      Tensor x = RandomTensor(DType::kF32, {c.rows, c.cols},
                              c.seed != 0 ? c.seed : ++seed,
                              c.data_scale == 0.0f ? 1.0f : c.data_scale,
                              !is_hard);
      if (c.data_scale == 0.0f) {
        std::fill_n(static_cast<float*>(x.mutable_data()), c.rows * c.cols,
                    0.0f);
      }
      for (int threads : {1, 3}) {
        SCOPED_TRACE(absl::StrCat(c.name, " threads ", threads));
        const std::vector<float> want = Search(ExactBackend(), x, c, threads);
        exact_units_asked = 0;
        const std::vector<float> got = Search(CountingBackend(), x, c, threads);
        ASSERT_EQ(got.size(), want.size());
        for (size_t k = 0; k < want.size(); ++k) {
          ASSERT_EQ(FloatToBits(got[k]), FloatToBits(want[k])) << k;
        }
        std::printf("%s, %d threads: exact errors of %lld units\n",
                    c.name.c_str(), threads,
                    static_cast<long long>(exact_units_asked.load()));
        if (c.expect_exact == 0) {
          EXPECT_EQ(exact_units_asked.load(), 0);
        } else if (c.expect_exact == 1) {
          EXPECT_GT(exact_units_asked.load(), 0);
        }
        // The scaled terms' own brackets (float32 int4), without the
        // kernel's refinement of units they leave open: the search takes
        // exact errors there and still chooses what the exact search does.
        SetMseScaledRefineForTest(false);
        exact_units_asked = 0;
        const std::vector<float> raw = Search(CountingBackend(), x, c, threads);
        SetMseScaledRefineForTest(true);
        for (size_t k = 0; k < want.size(); ++k) {
          ASSERT_EQ(FloatToBits(raw[k]), FloatToBits(want[k])) << k;
        }
        std::printf("%s, %d threads, scaled brackets alone: exact errors of "
                    "%lld units\n",
                    c.name.c_str(), threads,
                    static_cast<long long>(exact_units_asked.load()));
      }
    }
  }
}

// Units of at most kMseSpeculateElements elements in calls of many units
// are searched in one chunk of every step, past the calls' stops: a call
// that stops inside it must keep each unit's last improvement up to the
// stop. Speculation is forced here (speculate_min_call_units = 0) on
// tensors whose calls stop early, chosen so that some unit would still
// improve after its call's stop (the reference without a stop differs); a
// search without the roll-back fails. Both the search on bounds and the
// one on exact errors (the f16/bf16 path) are checked against the literal
// algorithm.
TEST(MseSearchTest, SpeculativeChunksKeepTheStop) {
  const QuantSpec int4 = QuantSpecFor(false, 4, true);
  const QuantSpec int4_asym = QuantSpecFor(false, 4, false);
  const QuantSpec int8 = QuantSpecFor(false, 8, true);
  const QuantSpec fp8 = QuantSpecFor(true, 8, true);
  struct SpecCase {
    SearchCase c;
    Kwargs kw;
  };
  const std::vector<SpecCase> cases = {
      {{"int4_group16", int4, 3, 48, 1, 16, false, 1.0f, 2.4}, {0.3, 1, 100.0, 2.4}},
      {{"int4_asym_group16", int4_asym, 2, 64, 1, 16, false, 1.0f, 2.0},
       {0.4, 2, 100.0, 2.0}},
      {{"int8_group32", int8, 2, 96, 1, 32, false, 1.0f, 2.4}, {0.2, 1, 100.0, 2.4}},
      {{"fp8_block4x8", fp8, 8, 32, 4, 8, false, 1.0f, 2.4}, {0.3, 1, 100.0, 2.4}},
  };
  int rolled_back = 0;
  for (const SpecCase& sc : cases) {
    const SearchCase& c = sc.c;
    ASSERT_LE(c.tile_rows * c.tile_cols, kMseSpeculateElements);
    const int64_t gr = (c.rows + c.tile_rows - 1) / c.tile_rows;
    const int64_t gc = (c.cols + c.tile_cols - 1) / c.tile_cols;
    for (uint32_t seed = 1; seed <= 12; ++seed) {
      Tensor x = RandomTensor(DType::kF32, {c.rows, c.cols}, seed, 1.0f, true);
      const std::vector<float> v = ToFloats(x.view());
      // The literal algorithm, one call per grid column (as Search).
      auto reference = [&](const Kwargs& kw) {
        std::vector<float> out(2 * gr * gc);
        for (int64_t j = 0; j < gc; ++j) {
          std::vector<Unit> units(gr);
          for (int64_t i = 0; i < gr; ++i) {
            for (int64_t r = i * c.tile_rows;
                 r < std::min(c.rows, (i + 1) * c.tile_rows); ++r) {
              units[i].rows.emplace_back(
                  v.begin() + r * c.cols + j * c.tile_cols,
                  v.begin() + r * c.cols +
                      std::min(c.cols, (j + 1) * c.tile_cols));
            }
          }
          std::vector<float> mins, maxs;
          ReferenceCall<FloatFormat::kF32>(units, c.spec, kw, false, 0, &mins,
                                           &maxs);
          for (int64_t i = 0; i < gr; ++i) {
            out[i * gc + j] = mins[i];
            out[gr * gc + i * gc + j] = maxs[i];
          }
        }
        return out;
      };
      const std::vector<float> want = reference(sc.kw);
      Kwargs unstopped = sc.kw;
      unstopped.patience = 1000;
      if (reference(unstopped) != want) ++rolled_back;
      MseSearchOptions options;
      options.maxshrink = sc.kw.maxshrink;
      options.patience = sc.kw.patience;
      options.grid = sc.kw.grid;
      options.speculate_min_call_units = 0;
      for (const BackendOps* ops : {&CountingBackend(), &ExactBackend()}) {
        for (int threads : {1, 3}) {
          SCOPED_TRACE(absl::StrCat(c.name, " seed ", seed, " ", ops->name,
                                    " threads ", threads));
          const std::vector<float> got = Search(*ops, x, c, threads, options);
          ASSERT_EQ(got.size(), want.size());
          for (size_t k = 0; k < want.size(); ++k) {
            ASSERT_EQ(FloatToBits(got[k]), FloatToBits(want[k])) << k;
          }
        }
      }
    }
  }
  // The roll-back was needed (and checked) in several tensors.
  EXPECT_GE(rolled_back, 4);
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
