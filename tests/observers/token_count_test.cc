#include "observers/token_count.h"

#include "gtest/gtest.h"
#include "tests/observers/test_tensors.h"

namespace qcal {
namespace {

using testing_util::RandomTensor;

std::unique_ptr<Observer> MinMax() {
  QuantizationArgs args;
  EXPECT_TRUE(args.Validate().ok());
  return std::move(CreateObserver("minmax", args).value());
}

TEST(TokenCountTest, CountsTwoDimensionalBatchesOfInputObservers) {
  ObserverTree tree;
  tree["model.layers.0.self_attn.q_proj"].input = MinMax();
  tree["model.layers.0.self_attn.q_proj"].weight = MinMax();
  tree["model.layers.0.mlp.experts.0.up_proj"].input = MinMax();
  tree["model.layers.0.mlp.experts.1.up_proj"].input = MinMax();  // unused
  tree["lm_head"].weight = MinMax();  // no input observer: left out

  Tensor batch = RandomTensor(DType::kBF16, {7, 16}, 1);
  Tensor batch3d = RandomTensor(DType::kBF16, {2, 3, 16}, 2);
  Observer* q = tree["model.layers.0.self_attn.q_proj"].input.get();
  ASSERT_TRUE(q->Forward(batch.view()).ok());
  ASSERT_TRUE(q->Forward(batch.view()).ok());
  Observer* e0 = tree["model.layers.0.mlp.experts.0.up_proj"].input.get();
  ASSERT_TRUE(e0->Forward(batch3d.view()).ok());  // 3-D: not counted
  // Weight observers do not contribute.
  ASSERT_TRUE(tree["model.layers.0.self_attn.q_proj"]
                  .weight->Forward(batch.view())
                  .ok());

  const auto counts = GetObserverTokenCount(tree);
  ASSERT_EQ(counts.size(), 3u);
  EXPECT_EQ(counts.at("model.layers.0.self_attn.q_proj"), 14);
  EXPECT_EQ(counts.at("model.layers.0.mlp.experts.0.up_proj"), std::nullopt);
  EXPECT_EQ(counts.at("model.layers.0.mlp.experts.1.up_proj"), std::nullopt);
  EXPECT_EQ(counts.count("lm_head"), 0u);

  e0->RecordObservedTokens(batch.view());
  EXPECT_EQ(GetObserverTokenCount(tree).at(
                "model.layers.0.mlp.experts.0.up_proj"),
            7);
  q->Reset();
  EXPECT_EQ(GetObserverTokenCount(tree).at("model.layers.0.self_attn.q_proj"),
            std::nullopt);
}

}  // namespace
}  // namespace qcal
