// CPU tests of cuda/kernels/reduce_common.h, the code the CUDA reduction
// kernels run per lane and per item. They run everywhere (no toolkit or GPU
// needed): each test replays a kernel's work decomposition on the host with
// the shared functions — every item, every lane of its team, the team and
// unit merges — and checks the result against CpuBackend() bit for bit.
// The CUDA-only parts (shuffles, atomics, thread indexing) are covered by
// tests/cuda/parity_test.cc on a GPU.
#include "cuda/kernels/reduce_common.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "core/backend.h"
#include "core/float_convert.h"
#include "core/layout.h"
#include "core/qparams.h"
#include "core/quant_math.h"
#include "core/tensor.h"
#include "gtest/gtest.h"

namespace qcal {
namespace internal_cuda {
namespace {

uint32_t Bits(float f) { return FloatToBits(f); }

// Host memory for a [rows, cols] tensor of `format` whose first element
// sits `offset` elements past a 64-byte boundary (to exercise unaligned row
// heads), filled with `values` rounded to the format.
class HostTensor {
 public:
  HostTensor(FloatFormat format, int64_t rows, int64_t cols, int offset,
             const std::vector<float>& values)
      : format_(format), rows_(rows), cols_(cols) {
    const int64_t size = DTypeSize(DTypeOf(format));
    storage_.resize(static_cast<size_t>((rows * cols + offset) * size + 64));
    uintptr_t p = reinterpret_cast<uintptr_t>(storage_.data());
    p = (p + 63) & ~uintptr_t{63};
    data_ = reinterpret_cast<char*>(p) + offset * size;
    for (int64_t i = 0; i < rows * cols; ++i) {
      const float v = values[i];
      switch (format) {
        case FloatFormat::kF32:
          StoreAs<FloatFormat::kF32>(data_, i, v);
          break;
        case FloatFormat::kF16:
          // Keep NaN/inf/zero signs; round the rest.
          reinterpret_cast<uint16_t*>(data_)[i] = FloatToF16Bits(v);
          break;
        case FloatFormat::kBF16:
          reinterpret_cast<uint16_t*>(data_)[i] = FloatToBf16Bits(v);
          break;
      }
    }
  }

  const void* data() const { return data_; }
  TensorView view() const {
    return *TensorView::Contiguous(data_, DTypeOf(format_), {rows_, cols_});
  }

 private:
  FloatFormat format_;
  int64_t rows_, cols_;
  std::vector<char> storage_;
  char* data_;
};

// Random values with zeros of both signs, ties, and (optionally) NaN/inf.
std::vector<float> RandomValues(int64_t n, std::mt19937& rng,
                                bool nonfinite, bool nonnegative) {
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_int_distribution<int> pick(0, 99);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) {
    const int k = pick(rng);
    if (k < 8) {
      x = 0.0f;
    } else if (k < 14) {
      x = -0.0f;
    } else if (nonfinite && k == 14) {
      x = std::numeric_limits<float>::quiet_NaN();
    } else if (nonfinite && k == 15) {
      x = (pick(rng) & 1) ? INFINITY : -INFINITY;
    } else {
      x = normal(rng);
      if (k < 30) x = std::round(x);  // many equal values
    }
    if (nonnegative && x < 0.0f) x = -x;
  }
  return v;
}

// The min/max kernels replayed on the host: items, lanes, team merge, then
// the direct write or the atomic merge and finishing kernel.
void SimulateMinMaxKernel(const ReduceGrid& g, FloatFormat format,
                          const void* data, bool skip, int sm_count,
                          std::vector<float>* out_min,
                          std::vector<float>* out_max, int64_t* first_bad) {
  const int elem = static_cast<int>(DTypeSize(DTypeOf(format)));
  const MinMaxPlan plan = PlanMinMax(g, elem, sm_count);
  const int64_t units = g.num_units();
  out_min->assign(units, 12345.0f);
  out_max->assign(units, 12345.0f);
  std::vector<uint64_t> zero_words(units, ~uint64_t{0});
  std::vector<uint32_t> min_keys(units, ~0u), max_keys_inv(units, ~0u);
  uint64_t bad = ~uint64_t{0};
  for (int64_t item = 0; item < plan.num_items; ++item) {
    const ItemSpan span = ItemAt(g, plan, item);
    uint32_t kmin = ~0u, kmax = 0, zero_pos = kNoPos, bad_pos = kNoPos;
    for (int t = 0; t < plan.team_size; ++t) {
      MinMaxLane lane;
      DispatchFormat(format, [&](auto f) {
        AddItemLane<decltype(f)::value>(data, g.cols, span, t, plan.team_size,
                                        skip, &lane);
      });
      kmin = std::min(kmin, MinMaxKey(lane.mn));
      kmax = std::max(kmax, MinMaxKey(lane.mx));
      zero_pos = std::min(zero_pos, lane.zero_pos);
      bad_pos = std::min(bad_pos, lane.bad_pos);
    }
    if (bad_pos != kNoPos) {
      bad = std::min<uint64_t>(bad, ItemFlatIndex(span, g.cols, bad_pos));
    }
    const bool zero_extreme = kmin == kZeroKey || kmax == kZeroKey;
    float first_zero = 0.0f;
    int64_t zero_index = 0;
    if (zero_extreme) {
      zero_index = ItemFlatIndex(span, g.cols, zero_pos);
      first_zero = DispatchFormat(format, [&](auto f) {
        return LoadAs<decltype(f)::value>(data, zero_index);
      });
    }
    if (plan.direct) {
      FinishUnit(kmin, kmax, first_zero, &(*out_min)[span.unit],
                 &(*out_max)[span.unit]);
    } else if (kmin < kNoMinKey) {
      min_keys[span.unit] = std::min(min_keys[span.unit], kmin);
      max_keys_inv[span.unit] = std::min(max_keys_inv[span.unit], ~kmax);
      if (zero_extreme) {
        zero_words[span.unit] = std::min(zero_words[span.unit],
                                         ZeroWord(zero_index, first_zero));
      }
    }
  }
  if (!plan.direct) {
    for (int64_t u = 0; u < units; ++u) {
      FinishUnit(min_keys[u], ~max_keys_inv[u], ZeroWordValue(zero_words[u]),
                 &(*out_min)[u], &(*out_max)[u]);
    }
  }
  *first_bad = bad == ~uint64_t{0} ? -1 : static_cast<int64_t>(bad);
}

// ------------------------------------------------------------------ keys

TEST(MinMaxKeyTest, PreservesOrderAndInverts) {
  std::vector<float> values = {-INFINITY,
                               -std::numeric_limits<float>::max(),
                               -1e30f,
                               -2.5f,
                               -1.0f,
                               -std::numeric_limits<float>::min(),
                               -std::numeric_limits<float>::denorm_min(),
                               0.0f,
                               std::numeric_limits<float>::denorm_min(),
                               std::numeric_limits<float>::min(),
                               1.0f,
                               3.0f,
                               std::numeric_limits<float>::max(),
                               INFINITY};
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 20000; ++i) {
    const float f = BitsToFloat(bits(rng));
    if (IsFiniteF(f)) values.push_back(f);
  }
  for (float a : values) {
    if (a != 0.0f) {
      EXPECT_EQ(Bits(KeyToFloat(MinMaxKey(a))), Bits(a)) << a;
    }
    for (int j = 0; j < 20; ++j) {
      const float b = values[(j * 7919) % values.size()];
      EXPECT_EQ(a < b, MinMaxKey(a) < MinMaxKey(b)) << a << " vs " << b;
      EXPECT_EQ(a == b, MinMaxKey(a) == MinMaxKey(b)) << a << " vs " << b;
    }
  }
  EXPECT_EQ(MinMaxKey(0.0f), kZeroKey);
  EXPECT_EQ(MinMaxKey(-0.0f), kZeroKey);
  EXPECT_EQ(MinMaxKey(INFINITY), kNoMinKey);
  EXPECT_EQ(MinMaxKey(-INFINITY), kNoMaxKey);
  // Finite keys lie strictly between the "nothing seen" keys, and the
  // all-ones merge state counts as "nothing seen" too.
  EXPECT_LT(MinMaxKey(std::numeric_limits<float>::max()), kNoMinKey);
  EXPECT_GT(MinMaxKey(-std::numeric_limits<float>::max()), kNoMaxKey);
  EXPECT_EQ(Bits(KeyToFloat(kZeroKey)), Bits(0.0f));
}

TEST(ZeroWordTest, SmallestIndexWinsAndKeepsTheSign) {
  EXPECT_LT(ZeroWord(5, -0.0f), ZeroWord(6, 0.0f));
  EXPECT_LT(ZeroWord(5, 0.0f), ZeroWord(5, -0.0f));
  EXPECT_EQ(Bits(ZeroWordValue(ZeroWord(123456789012, -0.0f))),
            Bits(-0.0f));
  EXPECT_EQ(Bits(ZeroWordValue(ZeroWord(123456789012, 0.0f))), Bits(0.0f));
}

TEST(FinishUnitTest, NoFiniteValuesGiveZeros) {
  float mn = 1, mx = 1;
  FinishUnit(kNoMinKey, kNoMaxKey, 0.0f, &mn, &mx);
  EXPECT_EQ(Bits(mn), Bits(0.0f));
  EXPECT_EQ(Bits(mx), Bits(0.0f));
  FinishUnit(~0u, 0u, 0.0f, &mn, &mx);  // untouched merge state
  EXPECT_EQ(Bits(mn), Bits(0.0f));
  FinishUnit(kZeroKey, MinMaxKey(2.0f), -0.0f, &mn, &mx);
  EXPECT_EQ(Bits(mn), Bits(-0.0f));
  EXPECT_EQ(mx, 2.0f);
}

// --------------------------------------------------------------- splits

TEST(SplitRunTest, CoversTheRunWithAlignedVectors) {
  for (int elem : {2, 4}) {
    for (uintptr_t mis = 0; mis < 16; mis += elem) {
      for (int n = 0; n < 70; ++n) {
        const uintptr_t address = 4096 + mis;
        const RunSplit s = SplitRun(address, elem, n);
        const int per = 16 / elem;
        EXPECT_EQ(s.head + s.vectors * per + s.tail, n);
        EXPECT_GE(s.head, 0);
        EXPECT_LT(s.head, per);
        EXPECT_LT(s.tail, per);
        if (s.vectors > 0) {
          EXPECT_EQ((address + s.head * elem) % 16, 0u);
        }
        if (s.head < n) {
          // The head ends at the first boundary when the run reaches it.
          EXPECT_TRUE(mis == 0 ? s.head == 0
                               : (address + s.head * elem) % 16 == 0);
        }
      }
    }
  }
}

TEST(DivMod64Test, BothPaths) {
  const int64_t cases[][2] = {{0, 1},
                              {17, 5},
                              {4294967295LL, 7},
                              {4294967296LL, 7},
                              {(int64_t{1} << 62) + 12345, 4096},
                              {99, int64_t{1} << 40}};
  for (const auto& c : cases) {
    int64_t q, r;
    DivMod64(c[0], c[1], &q, &r);
    EXPECT_EQ(q, c[0] / c[1]);
    EXPECT_EQ(r, c[0] % c[1]);
  }
}

// A lane that records which positions and values it saw.
struct RecordingLane {
  std::vector<std::pair<uint32_t, float>>* seen;
  void Add(float v, uint32_t p, bool) { seen->push_back({p, v}); }
};

// Every element of every unit is read exactly once, by the item that covers
// it, at the position ItemFlatIndex maps back to it.
TEST(MinMaxPlanTest, ItemsAndLanesCoverEveryElementOnce) {
  struct Case {
    int64_t rows, cols, tile_rows, tile_cols;
  };
  const Case cases[] = {{1, 1, 1, 1},       {7, 13, 7, 13},
                        {7, 13, 1, 13},     {9, 300, 1, 128},
                        {9, 301, 1, 16},    {33, 77, 4, 3},
                        {300, 260, 128, 128}, {10, 7, 128, 128},
                        {3, 20000, 1, 20000}, {2, 40000, 2, 40000},
                        {600, 100, 600, 100}};
  for (const Case& c : cases) {
    for (FloatFormat f : {FloatFormat::kF32, FloatFormat::kBF16}) {
      for (int offset : {0, 1, 3}) {
        for (int sms : {1, 132}) {
          ReduceGrid g{c.rows, c.cols, c.tile_rows, c.tile_cols};
          // Element i holds i (exact in f32 for these sizes; for bf16 we
          // check positions only).
          std::vector<float> values(c.rows * c.cols);
          for (size_t i = 0; i < values.size(); ++i) values[i] = float(i);
          const HostTensor x(f, c.rows, c.cols, offset, values);
          const int elem = static_cast<int>(DTypeSize(DTypeOf(f)));
          const MinMaxPlan plan = PlanMinMax(g, elem, sms);
          SCOPED_TRACE(absl::StrCat(c.rows, "x", c.cols, " tiles ",
                                    c.tile_rows, "x", c.tile_cols, " elem ",
                                    elem, " offset ", offset, " sms ", sms));
          ASSERT_GE(plan.team_size, 1);
          ASSERT_LE(plan.team_size, 32);
          ASSERT_EQ(plan.team_size & (plan.team_size - 1), 0);
          ASSERT_EQ(plan.direct, plan.items_per_unit == 1);
          ASSERT_EQ(plan.num_items, g.num_units() * plan.items_per_unit);
          ASSERT_LE(plan.item_rows * plan.item_cols, int64_t{1} << 20);
          std::vector<int> visits(values.size(), 0);
          for (int64_t item = 0; item < plan.num_items; ++item) {
            const ItemSpan span = ItemAt(g, plan, item);
            // The item lies inside its unit.
            const int64_t ti = span.unit / g.grid_cols();
            const int64_t tj = span.unit % g.grid_cols();
            if (span.row_begin < span.row_end &&
                span.col_begin < span.col_end) {
              ASSERT_GE(span.row_begin, ti * g.tile_rows);
              ASSERT_LE(span.row_end,
                        std::min((ti + 1) * g.tile_rows, g.rows));
              ASSERT_GE(span.col_begin, tj * g.tile_cols);
              ASSERT_LE(span.col_end,
                        std::min((tj + 1) * g.tile_cols, g.cols));
            }
            std::vector<std::pair<uint32_t, float>> seen;
            for (int t = 0; t < plan.team_size; ++t) {
              std::vector<std::pair<uint32_t, float>> lane_seen;
              RecordingLane lane{&lane_seen};
              DispatchFormat(f, [&](auto ff) {
                AddItemLane<decltype(ff)::value>(x.data(), g.cols, span, t,
                                                 plan.team_size, false, &lane);
              });
              // A lane sees its positions in increasing order.
              for (size_t k = 1; k < lane_seen.size(); ++k) {
                ASSERT_LT(lane_seen[k - 1].first, lane_seen[k].first);
              }
              seen.insert(seen.end(), lane_seen.begin(), lane_seen.end());
            }
            for (const auto& [p, v] : seen) {
              const int64_t flat = ItemFlatIndex(span, g.cols, p);
              ASSERT_GE(flat, 0);
              ASSERT_LT(flat, static_cast<int64_t>(values.size()));
              if (f == FloatFormat::kF32) {
                ASSERT_EQ(v, float(flat));
              }
              ++visits[flat];
            }
          }
          for (size_t i = 0; i < visits.size(); ++i) {
            ASSERT_EQ(visits[i], 1) << "element " << i;
          }
        }
      }
    }
  }
}

TEST(MinMaxPlanTest, TypicalPlans) {
  // Group-128 of a 4096x4096 bf16 weight: a 16-lane team per group, one
  // item per unit.
  MinMaxPlan p = PlanMinMax({4096, 4096, 1, 128}, 2, 132);
  EXPECT_TRUE(p.direct);
  EXPECT_EQ(p.team_size, 16);
  EXPECT_EQ(p.num_items, 4096 * 32);
  // f32: 32 lanes of 16 bytes cover 128 floats.
  EXPECT_EQ(PlanMinMax({4096, 4096, 1, 128}, 4, 132).team_size, 32);
  // Channel: one row per item.
  p = PlanMinMax({4096, 4096, 1, 4096}, 4, 132);
  EXPECT_TRUE(p.direct);
  EXPECT_EQ(p.num_items, 4096);
  // Tensor: many items merged per unit.
  p = PlanMinMax({4096, 4096, 4096, 4096}, 4, 132);
  EXPECT_FALSE(p.direct);
  EXPECT_GE(p.num_items, 132 * 8);
  // Block 128x128: several row chunks per block.
  p = PlanMinMax({4096, 4096, 128, 128}, 2, 132);
  EXPECT_FALSE(p.direct);
  EXPECT_GE(p.num_items / 2, 132 * 8);  // 2 items per warp at 16 lanes
  // A very wide unit is cut into column chunks.
  p = PlanMinMax({1, 100000, 1, 100000}, 4, 132);
  EXPECT_EQ(p.item_cols, kItemColChunk);
  EXPECT_EQ(p.col_chunks, (100000 + kItemColChunk - 1) / kItemColChunk);
}

// ------------------------------------------------- min/max vs CPU backend

TEST(MinMaxSimulationTest, MatchesCpuBackendBitForBit) {
  std::mt19937 rng(2024);
  struct Case {
    int64_t rows, cols, tile_rows, tile_cols;
  };
  std::vector<Case> cases = {
      {1, 1, 1, 1},         {5, 9, 5, 9},           {5, 9, 1, 9},
      {17, 300, 1, 128},    {17, 301, 1, 16},       {33, 77, 4, 3},
      {300, 260, 128, 128}, {10, 7, 128, 128},      {3, 20000, 1, 20000},
      {2, 40000, 2, 40000}, {600, 100, 600, 100},   {64, 64, 64, 64},
      {100, 1000, 100, 1000}};
  std::uniform_int_distribution<int64_t> dim(1, 90);
  for (int i = 0; i < 12; ++i) {
    const int64_t r = dim(rng), c = dim(rng);
    cases.push_back({r, c, 1 + dim(rng) % r, 1 + dim(rng) % (c + 3)});
  }
  int checked = 0;
  for (const Case& c : cases) {
    for (FloatFormat f :
         {FloatFormat::kF32, FloatFormat::kF16, FloatFormat::kBF16}) {
      for (bool skip : {false, true}) {
        for (bool nonneg : {false, true}) {
          const int offset = static_cast<int>(rng() % 4);
          const int sms = (rng() & 1) ? 1 : 132;
          const std::vector<float> values =
              RandomValues(c.rows * c.cols, rng, /*nonfinite=*/(rng() % 3) == 0,
                           nonneg);
          const HostTensor x(f, c.rows, c.cols, offset, values);
          TileGrid grid;
          grid.rows = c.rows;
          grid.cols = c.cols;
          grid.tile_rows = c.tile_rows;
          grid.tile_cols = c.tile_cols;
          MinMaxRequest req;
          req.x = x.view();
          req.grid = grid;
          req.format = f;
          req.nonfinite = skip ? NonFinitePolicy::kSkip : NonFinitePolicy::kError;
          const int64_t units = grid.num_units();
          std::vector<float> want_min(units), want_max(units);
          int64_t want_bad = -2;
          ASSERT_TRUE(CpuBackend()
                          .min_max(req, ExecOptions{1},
                                   {want_min.data(), want_max.data(),
                                    &want_bad})
                          .ok());
          std::vector<float> got_min, got_max;
          int64_t got_bad = -2;
          SimulateMinMaxKernel({c.rows, c.cols, c.tile_rows, c.tile_cols}, f,
                               x.data(), skip, sms, &got_min, &got_max,
                               &got_bad);
          SCOPED_TRACE(absl::StrCat(c.rows, "x", c.cols, " tiles ",
                                    c.tile_rows, "x", c.tile_cols, " format ",
                                    static_cast<int>(f), " skip ", skip,
                                    " offset ", offset, " sms ", sms));
          ASSERT_EQ(got_bad, want_bad);
          for (int64_t u = 0; u < units; ++u) {
            ASSERT_EQ(Bits(got_min[u]), Bits(want_min[u])) << "unit " << u;
            ASSERT_EQ(Bits(got_max[u]), Bits(want_max[u])) << "unit " << u;
          }
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 100);
}

TEST(MinMaxSimulationTest, SignOfZeroFollowsTheFirstZero) {
  // All values >= 0: the minimum is a zero, and the CPU reports the first
  // zero of the unit in flat order, here -0 in one unit and +0 in the other,
  // placed in different items of a multi-item unit.
  const int64_t rows = 400, cols = 600;
  for (float first : {-0.0f, 0.0f}) {
    std::vector<float> values(rows * cols, 1.0f);
    values[rows * cols - 1] = -first;          // a later zero of other sign
    values[(rows / 2) * cols + 17] = first;    // the first zero
    values[(rows - 3) * cols + 5] = -first;
    const HostTensor x(FloatFormat::kF32, rows, cols, 0, values);
    TileGrid grid{rows, cols, rows, cols};
    MinMaxRequest req;
    req.x = x.view();
    req.grid = grid;
    std::vector<float> got_min, got_max;
    int64_t got_bad;
    SimulateMinMaxKernel({rows, cols, rows, cols}, FloatFormat::kF32,
                         x.data(), false, 132, &got_min, &got_max, &got_bad);
    ASSERT_FALSE(PlanMinMax({rows, cols, rows, cols}, 4, 132).direct);
    float want_min, want_max;
    int64_t want_bad;
    ASSERT_TRUE(CpuBackend()
                    .min_max(req, ExecOptions{1}, {&want_min, &want_max,
                                                   &want_bad})
                    .ok());
    EXPECT_EQ(Bits(want_min), Bits(first));
    EXPECT_EQ(Bits(got_min[0]), Bits(want_min));
    EXPECT_EQ(got_max[0], 1.0f);
  }
}

// ---------------------------------------------------------------- MSE

struct SpecCase {
  const char* name;
  QuantSpec spec;
  bool has_global_scale;
  float global_scale;
};

std::vector<SpecCase> SpecCases() {
  return {
      {"int8 sym", QuantSpecFor(false, 8, true), false, 1.0f},
      {"int4 asym", QuantSpecFor(false, 4, false), false, 1.0f},
      {"fp8 sym", QuantSpecFor(true, 8, true), false, 1.0f},
      {"fp4 global", QuantSpecFor(true, 4, true), true, 448.0f * 6.0f / 9.5f},
      {"fp4 no global", QuantSpecFor(true, 4, true), false, 1.0f},
  };
}

TEST(MseLaneTest, LaneSplitEqualsRowErrorSum) {
  std::mt19937 rng(99);
  int checked = 0;
  for (FloatFormat f :
       {FloatFormat::kF32, FloatFormat::kF16, FloatFormat::kBF16}) {
    for (const SpecCase& sc : SpecCases()) {
      for (double norm : {2.4, 2.0, 3.0, 0.5, 1.0}) {
        for (int64_t n : {0, 1, 15, 16, 17, 33, 128, 1000}) {
          for (bool skip : {false, true}) {
            const std::vector<float> values =
                RandomValues(n, rng, /*nonfinite=*/skip, false);
            const HostTensor x(f, 1, std::max<int64_t>(n, 1), 0,
                               n > 0 ? values : std::vector<float>{0.0f});
            DispatchFormat(f, [&](auto ff) {
              constexpr FloatFormat F = decltype(ff)::value;
              const float e = NormExponent<F>(norm);
              float a = 0, b = 0;
              for (int64_t k = 0; k < n; ++k) {
                const float v = LoadAs<F>(x.data(), k);
                if (!IsFiniteF(v)) continue;
                a = std::min(a, v);
                b = std::max(b, v);
              }
              FakeQuantParams params[kMseCandBatch];
              const int count = 1 + static_cast<int>(rng() % kMseCandBatch);
              for (int c = 0; c < count; ++c) {
                params[c] = CandidateParams<F>(a, b, ShrinkFactor(c, 100.0),
                                               sc.spec, sc.has_global_scale,
                                               sc.global_scale);
              }
              auto load = [&](int64_t k) { return LoadAs<F>(x.data(), k); };
              double lanes[kMseTeam][kMseCandBatch];
              for (int l = 0; l < kMseTeam; ++l) {
                for (double& v : lanes[l]) v = 0.0;
                AccumulateLaneErrors<F>(load, n, l, params, count, sc.spec, e,
                                        skip, lanes[l]);
              }
              for (int c = 0; c < count; ++c) {
                const double got = CombineLaneSums(&lanes[0][c], kMseCandBatch);
                const double want = RowErrorSum<F>(load, n, params[c], sc.spec,
                                                   e, skip);
                uint64_t gb, wb;
                std::memcpy(&gb, &got, 8);
                std::memcpy(&wb, &want, 8);
                // NaN sums (non-finite data, not skipped) may differ in
                // payload only.
                if (std::isnan(want)) {
                  EXPECT_TRUE(std::isnan(got));
                } else {
                  EXPECT_EQ(gb, wb) << sc.name << " n=" << n << " norm="
                                    << norm << " c=" << c;
                }
                ++checked;
              }
            });
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 500);
}

TEST(PlanMseItemsTest, UniformAndRaggedUnits) {
  // 10 rows in tiles of 4: tile rows of 4, 4 and 2 rows; 3 tile columns.
  const ReduceGrid g{10, 9, 4, 3};
  MseItems items;
  int64_t bad = 0;
  const std::vector<int64_t> top = {0, 1, 4, 5};
  ASSERT_EQ(PlanMseItems(g, top.data(), 4, &items, &bad), MsePlanResult::kOk);
  EXPECT_EQ(items.uniform_h, 4);
  EXPECT_EQ(items.num_items, 16);
  const std::vector<int64_t> bottom = {6, 8};
  ASSERT_EQ(PlanMseItems(g, bottom.data(), 2, &items, &bad),
            MsePlanResult::kOk);
  EXPECT_EQ(items.uniform_h, 2);
  EXPECT_EQ(items.num_items, 4);
  const std::vector<int64_t> mixed = {7, 0, 8, 3};
  ASSERT_EQ(PlanMseItems(g, mixed.data(), 4, &items, &bad),
            MsePlanResult::kOk);
  EXPECT_EQ(items.uniform_h, 0);
  EXPECT_EQ(items.item_start, (std::vector<int64_t>{0, 2, 6, 8, 12}));
  EXPECT_EQ(items.num_items, 12);
  for (int64_t item = 0; item < items.num_items; ++item) {
    int64_t unit, row;
    LocateItem(item, 0, items.item_start.data(), 4, &unit, &row);
    EXPECT_GE(item, items.item_start[unit]);
    EXPECT_LT(item, items.item_start[unit + 1]);
    EXPECT_EQ(row, item - items.item_start[unit]);
  }
  const std::vector<int64_t> outside = {2, 9};
  EXPECT_EQ(PlanMseItems(g, outside.data(), 2, &items, &bad),
            MsePlanResult::kUnitOutsideGrid);
  EXPECT_EQ(bad, 9);
  const std::vector<int64_t> negative = {-1};
  EXPECT_EQ(PlanMseItems(g, negative.data(), 1, &items, &bad),
            MsePlanResult::kUnitOutsideGrid);
  EXPECT_EQ(bad, -1);
}

// The MSE kernels replayed on the host with the kernels' indexing: block
// batches (candidate groups of `sm_count`'s plan), 16 teams per batch with
// the batch's unit slots, candidates in batches of kMseCandBatch, lanes
// combined, then rows in row order.
std::vector<float> SimulateMseKernels(const MseRequest& req, int sm_count) {
  const ReduceGrid g{req.grid.rows, req.grid.cols, req.grid.tile_rows,
                     req.grid.tile_cols};
  const int64_t n = static_cast<int64_t>(req.units.size());
  const int64_t ncand = static_cast<int64_t>(req.shrink.size());
  MseItems items;
  int64_t bad;
  EXPECT_EQ(PlanMseItems(g, req.units.data(), n, &items, &bad),
            MsePlanResult::kOk);
  const MseCandGroups groups =
      PlanMseCandGroups(items.num_items, ncand, sm_count);
  EXPECT_GE(groups.groups * groups.per_group, ncand);
  std::vector<double> row_sums(items.num_items * ncand, -1.0);
  std::vector<int> written(items.num_items * ncand, 0);
  std::vector<float> errors(n * ncand, -1.0f);
  const bool skip = req.nonfinite == NonFinitePolicy::kSkip;
  DispatchFormat(req.format, [&](auto ff) {
    constexpr FloatFormat F = decltype(ff)::value;
    const int64_t batches = MseNumBatches(items.num_items, groups);
    for (int64_t b = 0; b < batches; ++b) {
      const MseBatch batch = MseBatchAt(b, items.num_items, ncand, groups);
      int64_t s_unit[kMseTeamsPerBlock];
      for (int team = 0; team < kMseTeamsPerBlock; ++team) {
        const int64_t item = batch.item_begin + team;
        s_unit[team] = -1;
        if (item < items.num_items) {
          int64_t i, rr;
          LocateItem(item, items.uniform_h, items.item_start.data(), n, &i,
                     &rr);
          s_unit[team] = i;
        }
      }
      const int64_t last_team = std::min<int64_t>(
          kMseTeamsPerBlock - 1, items.num_items - 1 - batch.item_begin);
      const int64_t slots = s_unit[last_team] - s_unit[0] + 1;
      EXPECT_GE(slots, 1);
      EXPECT_LE(slots, kMseTeamsPerBlock);
      for (int team = 0; team < kMseTeamsPerBlock; ++team) {
        const int64_t item = batch.item_begin + team;
        if (item >= items.num_items) continue;
        int64_t i, rr;
        LocateItem(item, items.uniform_h, items.item_start.data(), n, &i, &rr);
        EXPECT_LT(i - s_unit[0], slots);
        int64_t ti, tj;
        DivMod64(req.units[i], g.grid_cols(), &ti, &tj);
        const int64_t c0 = tj * g.tile_cols;
        const int64_t width = std::min(c0 + g.tile_cols, g.cols) - c0;
        const int64_t base = (ti * g.tile_rows + rr) * g.cols + c0;
        auto load = [&](int64_t k) {
          return LoadAs<F>(req.x.data(), base + k);
        };
        for (int64_t cb = batch.cand_begin; cb < batch.cand_end;
             cb += kMseCandBatch) {
          const int count = static_cast<int>(
              std::min<int64_t>(kMseCandBatch, batch.cand_end - cb));
          FakeQuantParams params[kMseCandBatch];
          for (int c = 0; c < count; ++c) {
            params[c] = CandidateParams<F>(req.unit_min[i], req.unit_max[i],
                                           req.shrink[cb + c], req.spec,
                                           req.has_global_scale,
                                           req.global_scale);
          }
          double lanes[kMseTeam][kMseCandBatch + 1];
          for (int l = 0; l < kMseTeam; ++l) {
            for (double& v : lanes[l]) v = 0.0;
            AccumulateLaneErrors<F>(load, width, l, params, count, req.spec,
                                    req.norm_exponent, skip, lanes[l]);
          }
          for (int c = 0; c < count; ++c) {
            row_sums[(cb + c) * items.num_items + item] =
                CombineLaneSums(&lanes[0][c], kMseCandBatch + 1);
            ++written[(cb + c) * items.num_items + item];
          }
        }
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t first = items.uniform_h > 0 ? i * items.uniform_h
                                                : items.item_start[i];
      const int64_t last = items.uniform_h > 0 ? first + items.uniform_h
                                               : items.item_start[i + 1];
      for (int64_t c = 0; c < ncand; ++c) {
        double sum = 0.0;
        for (int64_t it = first; it < last; ++it) {
          sum += row_sums[c * items.num_items + it];
        }
        errors[i * ncand + c] = FinishErrorSum<F>(sum);
      }
    }
  });
  // Every (item, candidate) row sum was computed exactly once.
  for (size_t k = 0; k < written.size(); ++k) {
    EXPECT_EQ(written[k], 1) << "row sum " << k;
  }
  return errors;
}

TEST(PlanMseCandGroupsTest, SplitsOnlyWhenItemsAreFew) {
  // Group-128 of a 4096x4096 weight: plenty of items, one group.
  MseCandGroups g = PlanMseCandGroups(4096 * 32, 6, 132);
  EXPECT_EQ(g.groups, 1);
  EXPECT_EQ(g.per_group, 6);
  // Channel: 4096 rows fill a fraction of the device; one candidate each.
  g = PlanMseCandGroups(4096, 6, 132);
  EXPECT_EQ(g.groups, 6);
  EXPECT_EQ(g.per_group, 1);
  for (int64_t items : {1, 7, 100, 5000, 100000}) {
    for (int64_t ncand : {1, 2, 6, 13, 20}) {
      for (int sms : {1, 132}) {
        g = PlanMseCandGroups(items, ncand, sms);
        EXPECT_GE(g.groups, 1);
        EXPECT_GE(g.per_group, 1);
        EXPECT_GE(g.groups * g.per_group, ncand);
        EXPECT_LT((g.groups - 1) * g.per_group, ncand);  // no empty group
        // Batches cover each (item, candidate) once.
        std::vector<int> seen(items * ncand, 0);
        for (int64_t b = 0; b < MseNumBatches(items, g); ++b) {
          const MseBatch batch = MseBatchAt(b, items, ncand, g);
          ASSERT_LT(batch.cand_begin, batch.cand_end);
          for (int64_t it = batch.item_begin;
               it < std::min(items, batch.item_begin + kMseTeamsPerBlock);
               ++it) {
            for (int64_t c = batch.cand_begin; c < batch.cand_end; ++c) {
              ++seen[it * ncand + c];
            }
          }
        }
        for (int v : seen) ASSERT_EQ(v, 1);
      }
    }
  }
}

TEST(MseSimulationTest, MatchesCpuBackendBitForBit) {
  std::mt19937 rng(5);
  struct Case {
    int64_t rows, cols, tile_rows, tile_cols;
  };
  const Case cases[] = {{6, 10, 1, 4},   {5, 40, 1, 16},  {10, 9, 4, 3},
                        {13, 33, 13, 33}, {7, 300, 1, 128}, {9, 20, 1, 20}};
  int checked = 0;
  for (const Case& c : cases) {
    for (FloatFormat f :
         {FloatFormat::kF32, FloatFormat::kF16, FloatFormat::kBF16}) {
      for (const SpecCase& sc : SpecCases()) {
        const bool skip = (rng() & 1) != 0;
        const std::vector<float> values =
            RandomValues(c.rows * c.cols, rng, skip, false);
        const HostTensor x(f, c.rows, c.cols, static_cast<int>(rng() % 3),
                           values);
        TileGrid grid{c.rows, c.cols, c.tile_rows, c.tile_cols};
        MseRequest req;
        req.x = x.view();
        req.grid = grid;
        req.format = f;
        req.nonfinite = skip ? NonFinitePolicy::kSkip : NonFinitePolicy::kError;
        req.spec = sc.spec;
        req.has_global_scale = sc.has_global_scale;
        req.global_scale = sc.global_scale;
        req.norm_exponent = DispatchFormat(f, [](auto ff) {
          return NormExponent<decltype(ff)::value>(2.4);
        });
        // A shuffled subset of units (the last tile row included or not),
        // with ranges from the unit data.
        std::vector<float> mins(grid.num_units()), maxs(grid.num_units());
        MinMaxRequest mm;
        mm.x = req.x;
        mm.grid = grid;
        mm.format = f;
        mm.nonfinite = NonFinitePolicy::kSkip;
        int64_t unused;
        ASSERT_TRUE(CpuBackend()
                        .min_max(mm, ExecOptions{1},
                                 {mins.data(), maxs.data(), &unused})
                        .ok());
        std::vector<int64_t> units;
        std::vector<float> unit_min, unit_max;
        for (int64_t u = 0; u < grid.num_units(); ++u) {
          if (rng() % 4 == 0) continue;
          units.push_back(u);
        }
        std::shuffle(units.begin(), units.end(), rng);
        for (int64_t u : units) {
          unit_min.push_back(mins[u]);
          unit_max.push_back(maxs[u]);
        }
        const int ncand = 1 + static_cast<int>(rng() % 13);  // batches of 8
        std::vector<float> shrink;
        for (int i = 0; i < ncand; ++i) shrink.push_back(ShrinkFactor(i, 100.0));
        req.units = units;
        req.unit_min = unit_min;
        req.unit_max = unit_max;
        req.shrink = shrink;
        std::vector<float> want(units.size() * ncand);
        ASSERT_TRUE(CpuBackend().mse_errors(req, ExecOptions{1}, want.data())
                        .ok());
        // 1 SM: no candidate groups; many SMs: groups of candidates.
        for (int sms : {1, 100000}) {
          const std::vector<float> got = SimulateMseKernels(req, sms);
          for (size_t k = 0; k < want.size(); ++k) {
            if (std::isnan(want[k])) {
              EXPECT_TRUE(std::isnan(got[k]));
            } else {
              ASSERT_EQ(Bits(got[k]), Bits(want[k]))
                  << sc.name << " " << c.rows << "x" << c.cols << " entry "
                  << k << " sms " << sms;
            }
          }
        }
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 50);
}

}  // namespace
}  // namespace internal_cuda
}  // namespace qcal
