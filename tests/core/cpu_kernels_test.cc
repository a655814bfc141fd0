// The vectorised CPU kernels (core/cpu/simd_kernels.h) against the scalar
// reference kernels (core/cpu/reference_kernels.h), bit for bit, on every
// SIMD target compiled in and supported here, for several thread counts:
// min/max of every strategy's grid (partial groups and blocks, single rows
// and columns, lengths that are not multiples of the vector width) with both
// non-finite policies, and MSE errors for every quantized kind, with and
// without a global scale, for several norms, including NaN, +-Inf,
// subnormals and +-max inputs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/backend.h"
#include "core/cpu/reference_kernels.h"
#include "core/cpu/simd_kernels.h"
#include "core/element_access.h"
#include "core/float_convert.h"
#include "core/qparams.h"
#include "core/quant_math.h"
#include "core/tensor.h"
#include "gtest/gtest.h"

namespace qcal {
namespace {

constexpr FloatFormat kFormats[] = {FloatFormat::kF32, FloatFormat::kF16,
                                    FloatFormat::kBF16};
constexpr int kThreadCounts[] = {1, 2, 3, 7};

const char* FormatName(FloatFormat f) {
  return f == FloatFormat::kF32 ? "f32" : f == FloatFormat::kF16 ? "f16" : "bf16";
}

bool SameFloat(float a, float b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  return FloatToBits(a) == FloatToBits(b);
}

// A subnormal of a format.
float FormatSubnormal(FloatFormat f, int k) {
  switch (f) {
    case FloatFormat::kF16:
      return F16BitsToFloat(static_cast<uint16_t>(1 + k % 1000));
    case FloatFormat::kBF16:
      return Bf16BitsToFloat(static_cast<uint16_t>(1 + k % 100));
    default:
      return BitsToFloat(static_cast<uint32_t>(1 + k * 7919 % 8000000));
  }
}

enum class Fill {
  kRandom,       // normal values with a per-row scale
  kSpecial,      // random plus NaN, +-Inf, subnormals, +-max, +-0
  kSignedZeros,  // mostly +-0 with a few tiny values
  kMostlyBad,    // mostly non-finite, some rows entirely
};

const char* FillName(Fill f) {
  switch (f) {
    case Fill::kRandom:
      return "random";
    case Fill::kSpecial:
      return "special";
    case Fill::kSignedZeros:
      return "zeros";
    default:
      return "mostly_bad";
  }
}

Tensor MakeData(FloatFormat format, int64_t rows, int64_t cols, Fill fill,
                uint32_t seed) {
  const DType dtype = DTypeOf(format);
  Tensor t = Tensor::Zeros(dtype, {rows, cols}).value();
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 99);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < rows; ++r) {
    const float row_scale = std::ldexp(1.0f, static_cast<int>(rng() % 9) - 4);
    for (int64_t c = 0; c < cols; ++c) {
      float v = normal(rng) * row_scale;
      const int p = pick(rng);
      switch (fill) {
        case Fill::kRandom:
          break;
        case Fill::kSpecial:
          if (p == 0) v = nan;
          if (p == 1) v = inf;
          if (p == 2) v = -inf;
          if (p == 3 || p == 4) v = FormatSubnormal(format, static_cast<int>(c));
          if (p == 5) v = -FormatSubnormal(format, static_cast<int>(r));
          if (p == 6) v = FormatMax(format);
          if (p == 7) v = -FormatMax(format);
          if (p == 8) v = 0.0f;
          if (p == 9) v = -0.0f;
          break;
        case Fill::kSignedZeros:
          v = p < 45 ? 0.0f : p < 90 ? -0.0f : p < 95 ? 1e-3f : -1e-3f;
          break;
        case Fill::kMostlyBad:
          if (r % 3 == 0 || p < 80) v = p % 3 == 0 ? nan : p % 3 == 1 ? inf : -inf;
          break;
      }
      switch (format) {
        case FloatFormat::kF32:
          t.mutable_data_as<float>()[r * cols + c] = v;
          break;
        case FloatFormat::kF16:
          t.mutable_data_as<uint16_t>()[r * cols + c] = FloatToF16Bits(v);
          break;
        case FloatFormat::kBF16:
          t.mutable_data_as<uint16_t>()[r * cols + c] = FloatToBf16Bits(v);
          break;
      }
    }
  }
  return t;
}

struct GridCase {
  std::string name;
  TileGrid grid;
};

TileGrid Grid(int64_t rows, int64_t cols, int64_t th, int64_t tw) {
  TileGrid g;
  g.rows = rows;
  g.cols = cols;
  g.tile_rows = th;
  g.tile_cols = tw;
  return g;
}

// Grids of every strategy over shapes with odd edges.
std::vector<GridCase> MinMaxGrids() {
  std::vector<GridCase> out;
  const int64_t shapes[][2] = {{1, 1},   {1, 7},    {3, 1},   {2, 15},
                               {5, 16},  {4, 17},   {3, 33},  {9, 64},
                               {7, 100}, {17, 129}, {2, 257}, {33, 1000},
                               {130, 40}};
  for (const auto& s : shapes) {
    const int64_t r = s[0], c = s[1];
    const std::string shape = absl::StrCat(r, "x", c);
    out.push_back({"tensor_" + shape, Grid(r, c, r, c)});
    out.push_back({"channel_" + shape, Grid(r, c, 1, c)});
    for (int64_t gs : {1, 7, 16, 33, 128}) {
      if (gs < c) {
        out.push_back({absl::StrCat("group", gs, "_", shape), Grid(r, c, 1, gs)});
      }
    }
    for (auto [bh, bw] : {std::pair<int64_t, int64_t>{2, 3}, {4, 16}, {3, 40},
                          {128, 128}, {16, 8}}) {
      if (bh <= r * 2 && bw <= c * 2) {
        out.push_back(
            {absl::StrCat("block", bh, "x", bw, "_", shape), Grid(r, c, bh, bw)});
      }
    }
  }
  return out;
}

void RunMinMax(bool simd, const Tensor& data, const TileGrid& grid,
               FloatFormat format, NonFinitePolicy policy, int threads,
               std::vector<float>* mn, std::vector<float>* mx, int64_t* bad) {
  MinMaxRequest req;
  req.x = data.view();
  req.grid = grid;
  req.format = format;
  req.nonfinite = policy;
  mn->assign(grid.num_units(), -1.0f);
  mx->assign(grid.num_units(), -1.0f);
  *bad = -7;
  MinMaxOutput out{mn->data(), mx->data(), bad};
  ExecOptions exec;
  exec.threads = threads;
  const absl::Status s = simd ? SimdMinMax(req, exec, out)
                              : ReferenceMinMax(req, exec, out);
  ASSERT_TRUE(s.ok()) << s;
}

TEST(CpuKernelsTest, SimdTargetsAreListedAndSelectable) {
  const std::vector<int64_t> targets = SimdTargets();
  ASSERT_FALSE(targets.empty());
  for (int64_t t : targets) {
    ScopedSimdTarget scoped(t);
    EXPECT_EQ(ActiveSimdTarget(), t) << SimdTargetName(t);
  }
  EXPECT_EQ(ActiveSimdTarget(), targets.front());
}

TEST(CpuKernelsTest, MinMaxMatchesReference) {
  const std::vector<GridCase> grids = MinMaxGrids();
  for (int64_t target : SimdTargets()) {
    ScopedSimdTarget scoped(target);
    for (FloatFormat format : kFormats) {
      for (Fill fill : {Fill::kRandom, Fill::kSpecial, Fill::kSignedZeros,
                        Fill::kMostlyBad}) {
        for (size_t gi = 0; gi < grids.size(); ++gi) {
          const GridCase& gcase = grids[gi];
          const TileGrid& g = gcase.grid;
          const Tensor data =
              MakeData(format, g.rows, g.cols, fill, static_cast<uint32_t>(gi));
          for (NonFinitePolicy policy :
               {NonFinitePolicy::kError, NonFinitePolicy::kSkip}) {
            std::vector<float> ref_min, ref_max;
            int64_t ref_bad;
            RunMinMax(false, data, g, format, policy, 1, &ref_min, &ref_max,
                      &ref_bad);
            for (int threads : kThreadCounts) {
              SCOPED_TRACE(absl::StrCat(
                  SimdTargetName(target), " ", FormatName(format), " ",
                  FillName(fill), " ", gcase.name, " policy ",
                  policy == NonFinitePolicy::kSkip ? "skip" : "error",
                  " threads ", threads));
              std::vector<float> mn, mx;
              int64_t bad;
              RunMinMax(true, data, g, format, policy, threads, &mn, &mx, &bad);
              ASSERT_EQ(bad, ref_bad);
              // With kError and a non-finite value the minima and maxima are
              // those of the finite values, as in the reference.
              for (int64_t u = 0; u < g.num_units(); ++u) {
                ASSERT_TRUE(SameFloat(mn[u], ref_min[u]))
                    << "unit " << u << " min " << mn[u] << " vs " << ref_min[u];
                ASSERT_TRUE(SameFloat(mx[u], ref_max[u]))
                    << "unit " << u << " max " << mx[u] << " vs " << ref_max[u];
              }
            }
          }
        }
      }
    }
  }
}

TEST(CpuKernelsTest, MinMaxZeroExtremesTakeTheFirstZerosSign) {
  // Units whose minimum or maximum is a zero report the sign of their first
  // zero in flat order, in both kernels: rows of positive values or negative
  // values with +0 and -0 in either order, at positions inside and after the
  // first vector, for whole-tensor, channel, group and block units.
  for (FloatFormat format : kFormats) {
    for (int64_t pos : {0, 3, 40, 70}) {
      for (bool negative_first : {false, true}) {
        for (float fill : {1.5f, -2.0f}) {
          const int64_t rows = 3, cols = 80;
          std::vector<float> v(rows * cols, fill);
          const float first = negative_first ? -0.0f : 0.0f;
          v[1 * cols + pos] = first;
          v[1 * cols + 79] = -first;
          v[2 * cols + 0] = -first;
          Tensor t = Tensor::Zeros(DTypeOf(format), {rows, cols}).value();
          for (int64_t i = 0; i < rows * cols; ++i) {
            if (format == FloatFormat::kF32) {
              t.mutable_data_as<float>()[i] = v[i];
            } else if (format == FloatFormat::kF16) {
              t.mutable_data_as<uint16_t>()[i] = FloatToF16Bits(v[i]);
            } else {
              t.mutable_data_as<uint16_t>()[i] = FloatToBf16Bits(v[i]);
            }
          }
          for (const TileGrid& g :
               {Grid(rows, cols, rows, cols), Grid(rows, cols, 1, cols),
                Grid(rows, cols, 1, 40), Grid(rows, cols, 2, 16)}) {
            std::vector<float> ref_min, ref_max, mn, mx;
            int64_t ref_bad, bad;
            RunMinMax(false, t, g, format, NonFinitePolicy::kError, 1, &ref_min,
                      &ref_max, &ref_bad);
            for (int64_t target : SimdTargets()) {
              ScopedSimdTarget scoped(target);
              RunMinMax(true, t, g, format, NonFinitePolicy::kSkip, 2, &mn, &mx,
                        &bad);
              for (int64_t u = 0; u < g.num_units(); ++u) {
                ASSERT_EQ(FloatToBits(mn[u]), FloatToBits(ref_min[u]))
                    << SimdTargetName(target) << " unit " << u;
                ASSERT_EQ(FloatToBits(mx[u]), FloatToBits(ref_max[u]))
                    << SimdTargetName(target) << " unit " << u;
              }
            }
          }
          // The whole tensor's zero extreme is the first zero, row 1.
          std::vector<float> mn, mx;
          int64_t bad;
          RunMinMax(true, t, Grid(rows, cols, rows, cols), format,
                    NonFinitePolicy::kError, 1, &mn, &mx, &bad);
          const float zero_extreme = fill > 0 ? mn[0] : mx[0];
          EXPECT_EQ(FloatToBits(zero_extreme), FloatToBits(first));
        }
      }
    }
  }
}

TEST(CpuKernelsTest, MinMaxFirstNonFiniteIsTheSmallestFlatIndex) {
  for (FloatFormat format : kFormats) {
    for (int64_t pos : {0, 5, 63, 64, 1000, 4095}) {
      Tensor t = MakeData(format, 64, 64, Fill::kRandom, 3);
      const int64_t second = std::min<int64_t>(pos + 17, 4095);
      for (int64_t k : {second, pos}) {
        if (format == FloatFormat::kF32) {
          t.mutable_data_as<float>()[k] = -std::numeric_limits<float>::infinity();
        } else {
          t.mutable_data_as<uint16_t>()[k] =
              format == FloatFormat::kBF16 ? 0x7FC1 : 0x7C01;  // NaNs
        }
      }
      for (const TileGrid& g : {Grid(64, 64, 64, 64), Grid(64, 64, 1, 64),
                                Grid(64, 64, 1, 16), Grid(64, 64, 8, 8)}) {
        std::vector<float> mn, mx;
        int64_t bad;
        RunMinMax(true, t, g, format, NonFinitePolicy::kError, 2, &mn, &mx,
                  &bad);
        EXPECT_EQ(bad, pos) << FormatName(format);
        RunMinMax(true, t, g, format, NonFinitePolicy::kSkip, 2, &mn, &mx,
                  &bad);
        EXPECT_EQ(bad, -1);
      }
    }
  }
}

// ------------------------------------------------------------------- MSE

struct SpecCase {
  std::string name;
  QuantSpec spec;
  bool global;
};

std::vector<SpecCase> SpecCases() {
  return {
      {"int8_sym", QuantSpecFor(false, 8, true), false},
      {"int4_asym", QuantSpecFor(false, 4, false), false},
      {"int16_asym", QuantSpecFor(false, 16, false), false},
      {"fp8_sym", QuantSpecFor(true, 8, true), false},
      {"fp8_asym", QuantSpecFor(true, 8, false), false},
      {"fp4_sym_global", QuantSpecFor(true, 4, true), true},
      {"int8_sym_global", QuantSpecFor(false, 8, true), true},
  };
}

std::vector<GridCase> MseGrids() {
  return {
      {"elements_3x20", Grid(3, 20, 1, 1)},
      {"channel_5x37", Grid(5, 37, 1, 37)},
      {"channel_2x300", Grid(2, 300, 1, 300)},
      {"group16_4x48", Grid(4, 48, 1, 16)},
      {"group7_3x30", Grid(3, 30, 1, 7)},
      {"group128_3x200", Grid(3, 200, 1, 128)},
      {"block_9x50_4x16", Grid(9, 50, 4, 16)},
      {"tensor_21x19", Grid(21, 19, 21, 19)},
  };
}

MseRequest MakeMseRequest(const Tensor& data, const TileGrid& grid,
                          FloatFormat format, NonFinitePolicy policy,
                          const SpecCase& sc, float norm_exponent,
                          const std::vector<int64_t>& units,
                          const std::vector<float>& umin,
                          const std::vector<float>& umax,
                          const std::vector<float>& shrink,
                          float global_scale) {
  MseRequest req;
  req.x = data.view();
  req.grid = grid;
  req.format = format;
  req.nonfinite = policy;
  req.spec = sc.spec;
  req.has_global_scale = sc.global;
  req.global_scale = global_scale;
  req.norm_exponent = norm_exponent;
  req.units = units;
  req.unit_min = umin;
  req.unit_max = umax;
  req.shrink = shrink;
  return req;
}

void RunMse(bool simd, const Tensor& data, const TileGrid& grid,
            FloatFormat format, NonFinitePolicy policy, const SpecCase& sc,
            float norm_exponent, const std::vector<int64_t>& units,
            const std::vector<float>& umin, const std::vector<float>& umax,
            const std::vector<float>& shrink, float global_scale, int threads,
            std::vector<float>* errors) {
  const MseRequest req = MakeMseRequest(data, grid, format, policy, sc,
                                        norm_exponent, units, umin, umax,
                                        shrink, global_scale);
  errors->assign(units.size() * shrink.size(), -1.0f);
  ExecOptions exec;
  exec.threads = threads;
  const absl::Status s = simd ? SimdMseErrors(req, exec, errors->data())
                              : ReferenceMseErrors(req, exec, errors->data());
  ASSERT_TRUE(s.ok()) << s;
}

// Checks SimdMseErrorBounds for the request of `errors` (the exact errors
// from SimdMseErrors): every bracket holds its error, equal keys of a unit
// mean equal errors, and the brackets are exact where no approximation is
// used (f16/bf16, exponents 2, 3 and 0.5) and tight where one is.
void CheckMseBounds(const MseRequest& req, int threads,
                    const std::vector<float>& errors) {
  const size_t nc = req.shrink.size();
  const size_t n = req.units.size() * nc;
  std::vector<float> lo(n, -2.0f), hi(n, -2.0f);
  std::vector<uint64_t> keys(n, 0);
  ExecOptions exec;
  exec.threads = threads;
  ASSERT_TRUE(SimdMseErrorBounds(req, exec,
                                 MseBoundsOutput{lo.data(), hi.data(),
                                                 keys.data()})
                  .ok());
  const float p = req.norm_exponent;
  const bool approx =
      req.format == FloatFormat::kF32 && p != 2.0f && p != 3.0f && p != 0.5f;
  for (size_t k = 0; k < n; ++k) {
    const float e = errors[k];
    bool ok;
    if (!approx) {
      ok = SameFloat(lo[k], e) && SameFloat(hi[k], e);
    } else if (std::isnan(e)) {
      ok = lo[k] == -HUGE_VALF && hi[k] == HUGE_VALF;
    } else {
      ok = lo[k] <= e && e <= hi[k];
      // Used, and tight.
      if (std::isfinite(e) && e > 1e-30f) ok = ok && hi[k] - lo[k] <= 1e-4f * e;
    }
    for (size_t c = 0; c < k % nc; ++c) {
      const size_t other = k - k % nc + c;
      if (keys[other] == keys[k]) ok = ok && SameFloat(errors[other], e);
    }
    ASSERT_TRUE(ok) << "unit " << req.units[k / nc] << " candidate " << k % nc
                    << ": " << e << " in [" << lo[k] << ", " << hi[k]
                    << "] (or a candidate with the same key differs)";
  }
}

float NormFor(FloatFormat f, double norm) {
  return DispatchFormat(f, [&](auto tag) {
    return NormExponent<decltype(tag)::value>(norm);
  });
}

TEST(CpuKernelsTest, MseErrorsMatchReference) {
  const std::vector<float> shrink = {1.0f, ShrinkFactor(1, 100.0),
                                     ShrinkFactor(7, 100.0), 0.8f, 0.37f};
  const std::vector<SpecCase> specs = SpecCases();
  const std::vector<GridCase> grids = MseGrids();
  const double norms[] = {2.4, 2.0, 3.0, 0.5, 1.0, 7.3};
  int case_index = 0;
  for (int64_t target : SimdTargets()) {
    ScopedSimdTarget scoped(target);
    for (FloatFormat format : kFormats) {
      for (size_t si = 0; si < specs.size(); ++si) {
        const SpecCase& sc = specs[si];
        for (size_t gi = 0; gi < grids.size(); ++gi) {
          const TileGrid& g = grids[gi].grid;
          for (Fill fill : {Fill::kRandom, Fill::kSpecial}) {
            ++case_index;
            const Tensor data = MakeData(format, g.rows, g.cols, fill,
                                         static_cast<uint32_t>(case_index));
            // The units' ranges as the observers get them (non-finite
            // values skipped); every other unit, in reverse order.
            std::vector<float> all_min, all_max;
            int64_t bad;
            RunMinMax(false, data, g, format, NonFinitePolicy::kSkip, 1,
                      &all_min, &all_max, &bad);
            std::vector<int64_t> units;
            std::vector<float> umin, umax;
            for (int64_t u = g.num_units() - 1; u >= 0; u -= 1 + (u % 2)) {
              units.push_back(u);
              umin.push_back(all_min[u]);
              umax.push_back(all_max[u]);
            }
            float tmin = 0, tmax = 0;
            for (size_t k = 0; k < all_min.size(); ++k) {
              tmin = std::min(tmin, all_min[k]);
              tmax = std::max(tmax, all_max[k]);
            }
            const float gscale = GlobalScale(tmin, tmax);
            const double norm = norms[(si + gi) % 6];
            const float e = NormFor(format, norm);
            const NonFinitePolicy policy = fill == Fill::kRandom
                                               ? NonFinitePolicy::kError
                                               : NonFinitePolicy::kSkip;
            std::vector<float> ref;
            RunMse(false, data, g, format, policy, sc, e, units, umin, umax,
                   shrink, gscale, 1, &ref);
            for (int threads : {1, 3}) {
              SCOPED_TRACE(absl::StrCat(SimdTargetName(target), " ",
                                        FormatName(format), " ", sc.name, " ",
                                        grids[gi].name, " ", FillName(fill),
                                        " norm ", norm, " threads ", threads));
              std::vector<float> got;
              RunMse(true, data, g, format, policy, sc, e, units, umin, umax,
                     shrink, gscale, threads, &got);
              for (size_t k = 0; k < ref.size(); ++k) {
                ASSERT_TRUE(SameFloat(got[k], ref[k]))
                    << "unit " << units[k / shrink.size()] << " candidate "
                    << k % shrink.size() << ": " << got[k] << " vs " << ref[k];
              }
              CheckMseBounds(MakeMseRequest(data, g, format, policy, sc, e,
                                            units, umin, umax, shrink, gscale),
                             threads, ref);
            }
          }
        }
      }
    }
  }
}

// Scaled terms (float32, symmetric integer grids of at most 4 bits; see
// ScaledRowSums in core/cpu/mse_kernels.cc): with the refinement off every
// bracket holds its exact error on every target, for weights, multiples of
// a step that put quotients on half-integers (ties), uniform values (many
// clamped elements), several exponents and shrink factors down to 0.3 (and
// int8, which keeps the windowed terms); with the refinement on, a unit
// whose scaled brackets leave the search's replay open gets the windowed
// terms' brackets, narrower (so both kinds are used, and differ).
TEST(CpuKernelsTest, ScaledTermBracketsHoldTheExactErrors) {
  std::vector<float> shrink;
  for (int i = 0; i < 20; ++i) shrink.push_back(ShrinkFactor(i, 100.0));
  std::vector<float> deep = shrink;
  for (float p : {0.7f, 0.5f, 0.3f}) deep.push_back(p);
  const std::vector<SpecCase> specs = {
      {"int4_sym", QuantSpecFor(false, 4, true), false},
      {"int2_sym", QuantSpecFor(false, 2, true), false},
      {"int8_sym", QuantSpecFor(false, 8, true), false},  // not scaled
  };
  const std::vector<GridCase> grids = {
      {"group128_4x512", Grid(4, 512, 1, 128)},
      {"group16_3x64", Grid(3, 64, 1, 16)},
      {"channel_2x300", Grid(2, 300, 1, 300)},
      {"block_9x50_4x16", Grid(9, 50, 4, 16)},
  };
  enum class Kind { kWeights, kTies, kUniform };
  int case_index = 0, refined = 0;
  for (int64_t target : SimdTargets()) {
    ScopedSimdTarget scoped(target);
    for (const SpecCase& sc : specs) {
      const bool scaled = sc.spec.q_max <= 8.0f;
      double widest = 0.0;  // relative to the error
      std::vector<double> widths;  // of the default search's steps, norm 2.4
      for (const GridCase& gc : grids) {
        const TileGrid& g = gc.grid;
        for (Kind kind : {Kind::kWeights, Kind::kTies, Kind::kUniform}) {
          ++case_index;
          Tensor data = Tensor::Zeros(DType::kF32, {g.rows, g.cols}).value();
          std::mt19937 rng(static_cast<uint32_t>(case_index));
          std::normal_distribution<float> normal(0.0f, 0.02f);
          std::uniform_int_distribution<int> step(-15, 15);
          std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
          float* v = data.mutable_data_as<float>();
          for (int64_t k = 0; k < g.rows * g.cols; ++k) {
            if (kind == Kind::kWeights) {
              v[k] = normal(rng) * (k % 997 == 0 ? 8 : 1);
            } else if (kind == Kind::kTies) {
              v[k] = 0.01f * static_cast<float>(step(rng));
            } else {
              v[k] = uniform(rng);
            }
          }
          std::vector<float> all_min, all_max;
          int64_t bad;
          RunMinMax(false, data, g, FloatFormat::kF32, NonFinitePolicy::kError,
                    1, &all_min, &all_max, &bad);
          std::vector<int64_t> units(g.num_units());
          for (int64_t u = 0; u < g.num_units(); ++u) units[u] = u;
          for (float norm : {2.4f, 1.5f, 4.4f}) {
            for (const std::vector<float>* sh : {&shrink, &deep}) {
              SCOPED_TRACE(absl::StrCat(SimdTargetName(target), " ", sc.name,
                                        " ", gc.name, " kind ",
                                        static_cast<int>(kind), " norm ", norm,
                                        " shrink ", sh->size()));
              MseRequest req = MakeMseRequest(
                  data, g, FloatFormat::kF32, NonFinitePolicy::kError, sc,
                  norm, units, all_min, all_max, *sh, 1.0f);
              req.whole_search = true;  // (scaled terms only then)
              const size_t nc = sh->size(), n = units.size() * nc;
              std::vector<float> exact(n);
              ExecOptions exec;
              exec.threads = 2;
              ASSERT_TRUE(SimdMseErrors(req, exec, exact.data()).ok());
              std::vector<float> lo(n), hi(n), lo2(n), hi2(n);
              std::vector<uint64_t> keys(n), keys2(n);
              SetMseScaledRefineForTest(false);
              const absl::Status s1 = SimdMseErrorBounds(
                  req, exec,
                  MseBoundsOutput{lo.data(), hi.data(), keys.data()});
              SetMseScaledRefineForTest(true);
              const absl::Status s2 = SimdMseErrorBounds(
                  req, exec,
                  MseBoundsOutput{lo2.data(), hi2.data(), keys2.data()});
              ASSERT_TRUE(s1.ok() && s2.ok());
              for (size_t k = 0; k < n; ++k) {
                ASSERT_TRUE(lo[k] <= exact[k] && exact[k] <= hi[k] &&
                            lo2[k] <= exact[k] && exact[k] <= hi2[k])
                    << "unit " << k / nc << " candidate " << k % nc << ": "
                    << exact[k] << " in [" << lo[k] << ", " << hi[k]
                    << "] and [" << lo2[k] << ", " << hi2[k] << "]";
                if (exact[k] > 1e-30f) {
                  const double w =
                      (static_cast<double>(hi[k]) - lo[k]) / exact[k];
                  widest = std::max(widest, w);
                  if (norm == 2.4f && sh == &shrink && kind == Kind::kWeights) {
                    widths.push_back(w);
                  }
                }
              }
              // The replay of MseSearch from its start on one unit.
              auto open = [&](const std::vector<float>& l,
                              const std::vector<float>& h, size_t u) {
                float best_lo = std::numeric_limits<float>::max();
                float best_hi = best_lo;
                int64_t best = -1;
                for (size_t c = 0; c < nc; ++c) {
                  const size_t k = u * nc + c;
                  if (best >= 0 && keys[k] == keys[u * nc + best]) continue;
                  if (h[k] < best_lo) {
                    best = static_cast<int64_t>(c);
                    best_lo = l[k];
                    best_hi = h[k];
                  } else if (!(l[k] >= best_hi)) {
                    return true;
                  }
                }
                return false;
              };
              for (size_t u = 0; u < units.size(); ++u) {
                if (!scaled || !open(lo, hi, u)) continue;
                ++refined;
                bool narrower = false;
                for (size_t c = 0; c < nc; ++c) {
                  const size_t k = u * nc + c;
                  ASSERT_LE(hi2[k] - lo2[k], hi[k] - lo[k]) << "unit " << u;
                  narrower = narrower || hi2[k] - lo2[k] < hi[k] - lo[k];
                }
                ASSERT_TRUE(narrower) << "unit " << u;
              }
            }
          }
        }
      }
      std::sort(widths.begin(), widths.end());
      std::printf("%s %s: bracket widths (refinement off) relative to the "
                  "error: widest %.3g, median for weights at norm 2.4 %.3g\n",
                  SimdTargetName(target).c_str(), sc.name.c_str(), widest,
                  widths.empty() ? 0.0 : widths[widths.size() / 2]);
    }
  }
  std::printf("units refined: %d\n", refined);
  EXPECT_GT(refined, 0);
}

TEST(CpuKernelsTest, MseErrorsExtremeRangesAndNonFiniteInErrorMode) {
  // +-max ranges (asymmetric scales overflow to infinity: 0 * inf = NaN
  // inside fake quantization), tiny ranges (scale = eps), and non-finite
  // values reaching the kernel in kError mode: NaN and Inf errors must come
  // out the same.
  const std::vector<float> shrink = {1.0f, 0.9f};
  for (int64_t target : SimdTargets()) {
    ScopedSimdTarget scoped(target);
    for (FloatFormat format : kFormats) {
      const float big = FormatMax(format);
      for (const SpecCase& sc : SpecCases()) {
        const TileGrid g = Grid(6, 35, 1, 35);
        const Tensor data = MakeData(format, g.rows, g.cols, Fill::kSpecial, 9);
        std::vector<int64_t> units = {0, 1, 2, 3, 4, 5};
        std::vector<float> umin = {-big, 0.0f, -1e-30f, -big, -1.0f, 0.0f};
        std::vector<float> umax = {big, 0.0f, 1e-30f, 0.0f, big, 1e-3f};
        for (NonFinitePolicy policy :
             {NonFinitePolicy::kError, NonFinitePolicy::kSkip}) {
          SCOPED_TRACE(absl::StrCat(SimdTargetName(target), " ",
                                    FormatName(format), " ", sc.name));
          std::vector<float> ref, got;
          RunMse(false, data, g, format, policy, sc, NormFor(format, 2.4),
                 units, umin, umax, shrink, 3.5f, 1, &ref);
          RunMse(true, data, g, format, policy, sc, NormFor(format, 2.4),
                 units, umin, umax, shrink, 3.5f, 2, &got);
          for (size_t k = 0; k < ref.size(); ++k) {
            ASSERT_TRUE(SameFloat(got[k], ref[k]))
                << k << ": " << got[k] << " vs " << ref[k];
          }
          CheckMseBounds(
              MakeMseRequest(data, g, format, policy, sc, NormFor(format, 2.4),
                             units, umin, umax, shrink, 3.5f),
              2, ref);
        }
      }
    }
  }
}

TEST(CpuKernelsTest, PowNormMatchesScalarOnEveryTarget) {
  // Random bit patterns over the whole non-negative float range, plus the
  // special values, for several exponents.
  std::mt19937 rng(11);
  std::vector<float> a;
  for (int i = 0; i < 20000; ++i) {
    a.push_back(BitsToFloat(static_cast<uint32_t>(rng()) & 0x7FFFFFFFu));
  }
  for (float v : {0.0f, 1.0f, 2.0f, 0.5f, std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::quiet_NaN(),
                  std::numeric_limits<float>::denorm_min(),
                  std::numeric_limits<float>::max(), 1.4142135f, 1.4142137f}) {
    a.push_back(v);
  }
  for (int64_t target : SimdTargets()) {
    ScopedSimdTarget scoped(target);
    for (FloatFormat format : kFormats) {
      std::vector<float> in(a.size());
      for (size_t i = 0; i < a.size(); ++i) in[i] = RoundTo(format, a[i]);
      for (double norm : {2.4, 2.5, 1.1, 0.3, 17.0, 150.0}) {
        const float e = NormFor(format, norm);
        std::vector<float> got(in.size());
        SimdPowNormForTest(format, in.data(), static_cast<int64_t>(in.size()),
                           e, got.data());
        for (size_t i = 0; i < in.size(); ++i) {
          const float want = DispatchFormat(format, [&](auto tag) {
            return PowNorm<decltype(tag)::value>(in[i], e);
          });
          ASSERT_TRUE(SameFloat(got[i], want))
              << SimdTargetName(target) << " " << FormatName(format) << " "
              << in[i] << "^" << e << ": " << got[i] << " vs " << want;
        }
      }
    }
  }
}

// ApproxPowV against PowNorm<kF32> over a sweep of the whole float range
// (every 4093rd bit pattern, plus special values): within half of
// MseApproxPowBound(p) relative for inputs and results of at least 2^-126,
// within MseApproxPowTinyBound(p) otherwise, the same on every target. The largest
// relative error seen is printed (docs/PERFORMANCE.md quotes it).
TEST(CpuKernelsTest, ApproxPowIsWithinItsBoundOnEveryTarget) {
  std::vector<float> a;
  for (uint32_t bits = 0; bits < 0x7F800000u; bits += 4093) {
    a.push_back(BitsToFloat(bits));
  }
  for (float v : {0.0f, 1.0f, 2.0f, 0.5f, std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::quiet_NaN(),
                  std::numeric_limits<float>::denorm_min(),
                  std::numeric_limits<float>::min(),
                  std::numeric_limits<float>::max(), 1.4142135f, 1.4142137f,
                  0.70710677f, 0.7071068f}) {
    a.push_back(v);
  }
  const int64_t n = static_cast<int64_t>(a.size());
  for (float p : {2.4f, 1.0f, 2.5f, 1.1f, 0.3f, 3.7f, 17.0f, 150.0f, 1000.0f}) {
    std::vector<float> want(n), first;
    SimdPowNormForTest(FloatFormat::kF32, a.data(), n, p, want.data());
    const double rho = MseApproxPowBound(p), tau = MseApproxPowTinyBound(p);
    double worst = 0.0;
    for (int64_t target : SimdTargets()) {
      ScopedSimdTarget scoped(target);
      std::vector<float> got(n);
      SimdApproxPowForTest(a.data(), n, p, got.data());
      for (int64_t i = 0; i < n; ++i) {
        const double w = want[i], g = got[i];
        bool ok;
        if (std::isnan(w)) {
          ok = std::isnan(g);
        } else if (w >= 0x1p127) {
          // Near overflow the kernel's sums become +inf and have no bound.
          ok = g >= 0x1p126;
        } else if (w >= 0x1p-126 && a[i] >= 0x1p-126f) {
          const double rel = std::fabs(g - w) / w;
          worst = std::max(worst, rel);
          ok = rel <= 0.5 * rho;
        } else {
          ok = std::fabs(g - w) <= tau;
        }
        ASSERT_TRUE(ok) << SimdTargetName(target) << " " << a[i] << "^" << p
                        << ": " << g << " vs " << w;
      }
      if (first.empty()) {
        first = got;
      } else {
        for (int64_t i = 0; i < n; ++i) ASSERT_TRUE(SameFloat(got[i], first[i]));
      }
    }
    std::printf("ApproxPowV, p = %g: largest relative error %.3g (bound %.3g)\n",
                p, worst, rho);
  }
}

// OctavePowV against PowNorm within its bound: every float in [1, 2) (all
// 2^23 mantissas for the default exponent 2.4, every 7th for the others)
// at the bottom of a window of 16 octaves, a sweep of the other 15
// octaves, and values below the window (which must stay below the
// caller's slack, twice the floor's power); bit-identical across targets.
TEST(CpuKernelsTest, OctavePowIsWithinItsBoundOnEveryTarget) {
  for (float p : {2.4f, 1.5f, 3.7f, 4.49f}) {
    ASSERT_TRUE(MseOctavePowServes(p));
    std::vector<float> a;
    for (uint32_t bits = 0x3F800000u; bits < 0x40000000u;
         bits += p == 2.4f ? 1 : 7) {
      a.push_back(BitsToFloat(bits));
    }
    for (uint32_t bits = 0x40000000u; bits < 0x47800000u; bits += 997) {
      a.push_back(BitsToFloat(bits));  // [2, 2^16): the window's top is 2^15
    }
    const size_t in_window = a.size();
    for (float v : {0.0f, 1e-30f, 0.5f, 0.99999994f}) a.push_back(v);
    const int64_t n = static_cast<int64_t>(a.size());
    std::vector<float> want(n);
    SimdPowNormForTest(FloatFormat::kF32, a.data(), n, p, want.data());
    const double rho = MseOctavePowBound(p);
    double worst = 0.0;
    std::vector<double> first;
    for (int64_t target : SimdTargets()) {
      ScopedSimdTarget scoped(target);
      std::vector<double> got(n);
      SimdOctavePowForTest(a.data(), n, p, got.data());
      for (int64_t i = 0; i < n; ++i) {
        const double w = want[i], g = got[i];
        bool ok;
        if (static_cast<size_t>(i) < in_window) {
          const double rel = std::fabs(g - w) / w;
          worst = std::max(worst, rel);
          ok = rel <= rho;
        } else {
          ok = g >= 0.0 && g <= 2.0 && w < 1.0;  // the floor is 1: 1^p = 1
        }
        ASSERT_TRUE(ok) << SimdTargetName(target) << " " << a[i] << "^" << p
                        << ": " << g << " vs " << w;
      }
      if (first.empty()) {
        first = got;
      } else {
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], first[i]) << a[i];
      }
    }
    std::printf("OctavePowV, p = %g: largest relative error %.3g (bound %.3g)\n",
                p, worst, rho);
    // The bound is not vacuous: within eight times the worst error seen.
    EXPECT_LE(rho, 8.0 * worst);
  }
  for (float p : {1.4f, 4.5f, 17.0f}) EXPECT_FALSE(MseOctavePowServes(p));
}

// The vector grid roundings against RoundToQuantGrid: a sweep of the float
// range (every 1021st bit pattern, both signs) and the few floats around
// every fp4 table boundary and around every e4m3 value.
TEST(CpuKernelsTest, GridRoundingMatchesScalarOnEveryTarget) {
  std::vector<float> in;
  for (uint32_t bits = 0; bits <= 0x7F800000u; bits += 1021) {
    in.push_back(BitsToFloat(bits));
  }
  std::vector<float> centres = {0.25f, 0.5f, 0.75f, 1.0f, 1.25f, 1.5f, 1.75f,
                                2.0f,  2.5f, 3.0f,  3.5f, 4.0f,  5.0f, 6.0f,
                                7.0f,  8.0f, 448.0f, 464.0f, 480.0f};
  for (int b = 0; b < 256; ++b) {
    const float v = E4m3fnBitsToFloat(static_cast<uint8_t>(b));
    if (std::isfinite(v)) centres.push_back(v);
  }
  for (float c : centres) {
    float lo = c, hi = c;
    for (int k = 0; k < 3; ++k) {
      lo = std::nextafter(lo, -HUGE_VALF);
      hi = std::nextafter(hi, HUGE_VALF);
      in.push_back(lo);
      in.push_back(hi);
    }
    in.push_back(c);
  }
  in.push_back(std::numeric_limits<float>::infinity());
  const size_t half = in.size();
  for (size_t i = 0; i < half; ++i) in.push_back(-in[i]);
  const int64_t n = static_cast<int64_t>(in.size());
  for (int64_t target : SimdTargets()) {
    ScopedSimdTarget scoped(target);
    for (QuantKind kind : {QuantKind::kFp4, QuantKind::kFp8, QuantKind::kInt}) {
      std::vector<float> got(n);
      SimdGridForTest(kind, in.data(), n, got.data());
      for (int64_t i = 0; i < n; ++i) {
        // The kernels clamp before rounding: fp8 to +-448.
        if (kind == QuantKind::kFp8 && !(std::fabs(in[i]) <= 448.0f)) continue;
        const float want = RoundToQuantGrid(in[i], kind);
        // SSSE3 has no roundps: Highway's emulated Round may lose a zero's
        // sign, which never reaches an error |fq - x|.
        if (kind == QuantKind::kInt && got[i] == 0.0f && want == 0.0f) continue;
        ASSERT_TRUE(SameFloat(got[i], want))
            << SimdTargetName(target) << " kind " << static_cast<int>(kind)
            << " " << in[i] << ": " << got[i] << " vs " << want;
      }
    }
  }
}

TEST(CpuKernelsTest, CandidateParamsMatchScalarOnEveryTarget) {
  std::vector<SpecCase> specs = SpecCases();
  specs.push_back({"int16_sym", QuantSpecFor(false, 16, true), false});
  specs.push_back({"int32_asym", QuantSpecFor(false, 32, false), false});
  specs.push_back({"fp4_sym", QuantSpecFor(true, 4, true), false});
  specs.push_back({"int8_asym_global", QuantSpecFor(false, 8, false), true});
  std::vector<float> shrink;
  for (int i = 0; i < 37; ++i) shrink.push_back(ShrinkFactor(i, 40.0));
  std::mt19937 rng(21);
  std::vector<std::pair<float, float>> ranges = {
      {0.0f, 0.0f},   {-1.0f, 0.0f},   {0.0f, 2.5f},  {-0.0f, 0.0f},
      {-3e38f, 3e38f}, {-1e-40f, 1e-40f}, {-65504.0f, 7.0f},
      {-1e30f, -1e20f}, {1e-3f, 1e5f}};
  for (int k = 0; k < 300; ++k) {
    const float scale = std::ldexp(1.0f, static_cast<int>(rng() % 80) - 40);
    std::normal_distribution<float> normal(0.0f, scale);
    const float u = normal(rng), v = normal(rng);
    ranges.push_back({std::min(u, v), std::max(u, v)});
  }
  for (int64_t target : SimdTargets()) {
    ScopedSimdTarget scoped(target);
    for (FloatFormat format : kFormats) {
      for (const SpecCase& sc : specs) {
        for (float g : {1.0f, 3.5f, 2688.0f / 1e-3f, 1e30f}) {
          for (const auto& [a0, b0] : ranges) {
            const float a = RoundTo(format, a0), b = RoundTo(format, b0);
            std::vector<FakeQuantParams> got;
            SimdCandidateParamsForTest(format, sc.spec, sc.global, g, a, b,
                                       shrink, &got);
            for (size_t c = 0; c < shrink.size(); ++c) {
              const FakeQuantParams want = DispatchFormat(format, [&](auto f) {
                return CandidateParams<decltype(f)::value>(
                    a, b, shrink[c], sc.spec, sc.global, g);
              });
              ASSERT_TRUE(SameFloat(got[c].scale, want.scale) &&
                          SameFloat(got[c].zero_point, want.zero_point) &&
                          SameFloat(got[c].effective_scale,
                                    want.effective_scale))
                  << SimdTargetName(target) << " " << FormatName(format)
                  << " " << sc.name << " g " << g << " [" << a << ", " << b
                  << "] p " << shrink[c] << ": scale " << got[c].scale
                  << " vs " << want.scale << ", zp " << got[c].zero_point
                  << " vs " << want.zero_point << ", eff "
                  << got[c].effective_scale << " vs " << want.effective_scale;
            }
          }
        }
      }
    }
  }
}

// The statistics of SimdQuantErrorStats computed with the scalar functions in
// the same lane order.
std::vector<QuantErrorRowStats> ReferenceStats(
    const Tensor& x, const TileGrid& g, FloatFormat format,
    const QuantSpec& spec, const std::vector<float>& scale,
    const std::vector<float>& zp, std::optional<float> global) {
  std::vector<QuantErrorRowStats> out(g.rows);
  DispatchFormat(format, [&](auto f) {
    constexpr FloatFormat F = decltype(f)::value;
    for (int64_t r = 0; r < g.rows; ++r) {
      double ls[16] = {}, ln[16] = {};
      const int64_t ti = r / g.tile_rows;
      for (int64_t tj = 0; tj < g.grid_cols(); ++tj) {
        const int64_t u = ti * g.grid_cols() + tj;
        const FakeQuantParams p = MakeFakeQuantParams(
            ScalarQParams{scale[u], zp[u]}, global.has_value(),
            global.value_or(1.0f));
        for (int64_t c = g.col_begin(tj); c < g.col_end(tj); ++c) {
          const float v = LoadAs<F>(x.view().data(), r * g.cols + c);
          if (!IsFiniteF(v)) continue;
          const float q = QuantizeToGrid<F>(v, p, spec);
          const float fq = DequantizeFromGrid<F>(q, p);
          const double e = static_cast<double>(v) - fq;
          const int64_t lane = (c - g.col_begin(tj)) % 16;
          ls[lane] += static_cast<double>(v) * v;
          ln[lane] += e * e;
          ++out[r].finite;
          if (q == spec.q_min || q == spec.q_max) ++out[r].clipped;
        }
      }
      for (int l = 0; l < 16; ++l) {
        out[r].signal += ls[l];
        out[r].noise += ln[l];
      }
    }
  });
  return out;
}

TEST(CpuKernelsTest, QuantErrorStatsMatchScalarOnEveryTarget) {
  for (int64_t target : SimdTargets()) {
    ScopedSimdTarget scoped(target);
    for (FloatFormat format : kFormats) {
      for (const SpecCase& sc : SpecCases()) {
        for (const GridCase& gcase : MseGrids()) {
          const TileGrid& g = gcase.grid;
          const Tensor x = MakeData(format, g.rows, g.cols, Fill::kSpecial, 4);
          // Qparams from the units' finite ranges, in stored form.
          std::vector<float> mn, mx;
          int64_t bad;
          RunMinMax(false, x, g, format, NonFinitePolicy::kSkip, 1, &mn, &mx,
                    &bad);
          const std::optional<float> global =
              sc.global ? std::optional<float>(5.5f) : std::nullopt;
          std::vector<float> scale(g.num_units()), zp(g.num_units());
          for (int64_t u = 0; u < g.num_units(); ++u) {
            const ScalarQParams qp = DispatchFormat(format, [&](auto f) {
              return ComputeQParams<decltype(f)::value>(
                  mn[u], mx[u], sc.spec, sc.global, global.value_or(1.0f));
            });
            scale[u] = qp.scale;
            zp[u] = qp.zero_point;
          }
          const DType zp_dtype =
              sc.spec.zp_kind == ZeroPointKind::kF8    ? DType::kF8E4M3FN
              : sc.spec.zp_kind == ZeroPointKind::kI16 ? DType::kI16
              : sc.spec.zp_kind == ZeroPointKind::kI32 ? DType::kI32
                                                       : DType::kI8;
          Tensor scale_t = Tensor::Zeros(DTypeOf(format), {g.num_units()}).value();
          Tensor zp_t = Tensor::Zeros(zp_dtype, {g.num_units()}).value();
          DispatchFormat(format, [&](auto f) {
            for (int64_t u = 0; u < g.num_units(); ++u) {
              StoreAs<decltype(f)::value>(scale_t.mutable_data(), u, scale[u]);
              StoreZeroPoint(zp_t.mutable_data(), u, zp[u], sc.spec.zp_kind);
            }
          });
          const std::vector<QuantErrorRowStats> want =
              ReferenceStats(x, g, format, sc.spec, scale, zp, global);
          for (int threads : {1, 3}) {
            std::vector<QuantErrorRowStats> got(g.rows);
            ExecOptions exec;
            exec.threads = threads;
            ASSERT_TRUE(SimdQuantErrorStats(x.view(), g, sc.spec,
                                            scale_t.view(), zp_t.view(),
                                            global, exec, absl::MakeSpan(got))
                            .ok());
            for (int64_t r = 0; r < g.rows; ++r) {
              SCOPED_TRACE(absl::StrCat(SimdTargetName(target), " ",
                                        FormatName(format), " ", sc.name, " ",
                                        gcase.name, " row ", r));
              EXPECT_EQ(got[r].finite, want[r].finite);
              EXPECT_EQ(got[r].clipped, want[r].clipped);
              EXPECT_TRUE((std::isnan(want[r].noise) &&
                           std::isnan(got[r].noise)) ||
                          got[r].noise == want[r].noise)
                  << got[r].noise << " vs " << want[r].noise;
              EXPECT_EQ(got[r].signal, want[r].signal);
            }
          }
        }
      }
    }
  }
}

TEST(CpuKernelsTest, BadRequestsAreErrors) {
  const Tensor data = MakeData(FloatFormat::kF32, 4, 4, Fill::kRandom, 1);
  MinMaxRequest req;
  req.x = data.view();
  req.grid = Grid(4, 5, 1, 5);
  req.format = FloatFormat::kF32;
  std::vector<float> mn(4), mx(4);
  MinMaxOutput out{mn.data(), mx.data(), nullptr};
  EXPECT_FALSE(SimdMinMax(req, ExecOptions(), out).ok());
  req.grid = Grid(4, 4, 1, 4);
  req.format = FloatFormat::kBF16;
  EXPECT_FALSE(SimdMinMax(req, ExecOptions(), out).ok());

  MseRequest mreq;
  mreq.x = data.view();
  mreq.grid = Grid(4, 4, 1, 4);
  const std::vector<int64_t> units = {9};
  const std::vector<float> r = {1.0f};
  mreq.units = units;
  mreq.unit_min = r;
  mreq.unit_max = r;
  mreq.shrink = r;
  float err;
  EXPECT_FALSE(SimdMseErrors(mreq, ExecOptions(), &err).ok());
}

}  // namespace
}  // namespace qcal
