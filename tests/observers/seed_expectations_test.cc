// The expectations of llmcompressor's own observer tests, reproduced.
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "observers/observer.h"
#include "tests/observers/test_tensors.h"

namespace qcal {
namespace {

using testing_util::MakeTensor;
using testing_util::ToFloats;

QuantizationArgs Int8(bool symmetric) {
  QuantizationArgs args;
  args.num_bits = 8;
  args.symmetric = symmetric;
  EXPECT_TRUE(args.Validate().ok());
  return args;
}

// A tensor of five ones: int8 symmetric -> scale 0.0078 (4 d.p.) zp 0;
// asymmetric -> scale 0.0039, zp -128. For minmax and mse.
TEST(SeedExpectationsTest, FiveOnes) {
  for (const char* name : {"minmax", "mse"}) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      Tensor ones = MakeTensor(dtype, {5}, {1, 1, 1, 1, 1});
      auto sym = CreateObserver(name, Int8(true));
      ASSERT_TRUE(sym.ok());
      auto qs = (*sym)->Forward(ones.view());
      ASSERT_TRUE(qs.ok()) << qs.status();
      const float sym_scale = ToFloats(qs->qparams->scale.view())[0];
      // The seed's test is in float32: round(scale, 4) == 0.0078. In f16 and
      // bf16 the scale is 1 / 127.5 rounded to the dtype.
      if (dtype == DType::kF32) {
        EXPECT_EQ(std::round(sym_scale * 1e4) / 1e4, 0.0078) << name;
      }
      EXPECT_EQ(sym_scale, ToFloats(MakeTensor(dtype, {1}, {1.0f / 127.5f})
                                        .view())[0])
          << name;
      EXPECT_EQ(ToFloats(qs->qparams->zero_point.view())[0], 0) << name;
      auto asym = CreateObserver(name, Int8(false));
      ASSERT_TRUE(asym.ok());
      auto qa = (*asym)->Forward(ones.view());
      ASSERT_TRUE(qa.ok());
      const float asym_scale = ToFloats(qa->qparams->scale.view())[0];
      if (dtype == DType::kF32) {
        EXPECT_EQ(std::round(asym_scale * 1e4) / 1e4, 0.0039) << name;
      }
      EXPECT_EQ(asym_scale, ToFloats(MakeTensor(dtype, {1}, {1.0f / 255.0f})
                                         .view())[0])
          << name;
      EXPECT_EQ(ToFloats(qa->qparams->zero_point.view())[0], -128) << name;
    }
  }
}

// Running max 1 -> 2.26 after observing [127, 1, 1, 1, 1] once (averaging
// constant 0.01), and the running min -> -0.29 after a later
// [-128, 1, 1, 1, 1].
TEST(SeedExpectationsTest, MovingAverageOfMinMax) {
  QuantizationArgs args = Int8(true);
  args.observer_kwargs["averaging_constant"] = 0.01;
  auto obs = CreateObserver("minmax", args);
  ASSERT_TRUE(obs.ok());
  Tensor ones = MakeTensor(DType::kF32, {5}, {1, 1, 1, 1, 1});
  Tensor max_update = MakeTensor(DType::kF32, {5}, {127, 1, 1, 1, 1});
  Tensor min_update = MakeTensor(DType::kF32, {5}, {-128, 1, 1, 1, 1});
  ASSERT_TRUE((*obs)->Forward(ones.view()).ok());
  ASSERT_TRUE((*obs)->Forward(ones.view()).ok());
  ASSERT_TRUE((*obs)->Forward(max_update.view()).ok());
  const RunningMinMax* running = (*obs)->running("");
  ASSERT_NE(running, nullptr);
  EXPECT_NEAR(running->max(0), 2.26, 1e-6);
  EXPECT_NEAR(running->min(0), 1.0, 1e-6);
  ASSERT_TRUE((*obs)->Forward(min_update.view()).ok());
  EXPECT_NEAR(running->min(0), -0.29, 1e-6);
  // The qparams follow the running values: max(|-0.29|, 2.2474) / 127.5.
  const float max_now = running->max(0);
  EXPECT_NEAR(max_now, 2.26 + 0.01 * (1 - 2.26), 1e-6);
  EXPECT_EQ(ToFloats((*obs)->qparams()->scale.view())[0], max_now / 127.5f);
}

// averaging_constant = 1 keeps no running state: every observation stands
// alone.
TEST(SeedExpectationsTest, AveragingConstantOneDisablesTheRunningState) {
  QuantizationArgs args = Int8(true);
  args.observer_kwargs["averaging_constant"] = 1.0;
  auto obs = CreateObserver("minmax", args);
  ASSERT_TRUE(obs.ok());
  Tensor big = MakeTensor(DType::kF32, {3}, {-50, 0, 50});
  Tensor small = MakeTensor(DType::kF32, {3}, {-1, 0, 1});
  ASSERT_TRUE((*obs)->Forward(big.view()).ok());
  auto q = (*obs)->Forward(small.view());
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(ToFloats(q->qparams->scale.view())[0], 1.0f / 127.5f);
  EXPECT_EQ((*obs)->running(""), nullptr);
}

TEST(SeedExpectationsTest, StaticAndMemorylessMinMax) {
  Tensor a = MakeTensor(DType::kF32, {3}, {-4, 0, 2});
  Tensor b = MakeTensor(DType::kF32, {3}, {-1, 0, 6});
  auto stat = CreateObserver("static_minmax", Int8(false));
  auto mem = CreateObserver("memoryless_minmax", Int8(false));
  ASSERT_TRUE(stat.ok() && mem.ok());
  ASSERT_TRUE((*stat)->Forward(a.view()).ok());
  ASSERT_TRUE((*mem)->Forward(a.view()).ok());
  auto qs = (*stat)->Forward(b.view());
  auto qm = (*mem)->Forward(b.view());
  ASSERT_TRUE(qs.ok() && qm.ok());
  // static: range [-4, 6] -> scale 10 / 255; memoryless: [-1, 6] -> 7 / 255.
  EXPECT_EQ(ToFloats(qs->qparams->scale.view())[0], 10.0f / 255.0f);
  EXPECT_EQ(ToFloats(qm->qparams->scale.view())[0], 7.0f / 255.0f);
}

}  // namespace
}  // namespace qcal
