#include "core/quant_args.h"

#include <string>

#include "gtest/gtest.h"

namespace qcal {
namespace {

// Expects parsing `json` to fail with InvalidArgument and a message that
// contains every one of `needles`.
void ExpectRejected(const std::string& json,
                    std::initializer_list<const char*> needles) {
  auto args = ParseQuantizationArgs(json);
  ASSERT_FALSE(args.ok()) << "accepted: " << json;
  EXPECT_EQ(args.status().code(), absl::StatusCode::kInvalidArgument) << json;
  for (const char* needle : needles) {
    EXPECT_NE(args.status().message().find(needle), absl::string_view::npos)
        << "message \"" << args.status().message() << "\" lacks \"" << needle
        << "\" for " << json;
  }
}

TEST(QuantArgsTest, DefaultsAndInference) {
  auto args = ParseQuantizationArgs("{}");
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->num_bits, 8);
  EXPECT_EQ(args->type, QuantType::kInt);
  EXPECT_TRUE(args->symmetric);
  EXPECT_EQ(args->strategy, Strategy::kTensor);
  EXPECT_EQ(args->observer, "minmax");
  EXPECT_EQ(args->ZeroPointDType(), DType::kI8);

  auto group = ParseQuantizationArgs(R"({"num_bits": 4, "group_size": 128})");
  ASSERT_TRUE(group.ok());
  EXPECT_EQ(group->strategy, Strategy::kGroup);

  auto channel = ParseQuantizationArgs(R"({"group_size": -1})");
  ASSERT_TRUE(channel.ok());
  EXPECT_EQ(channel->strategy, Strategy::kChannel);
}

TEST(QuantArgsTest, EveryFieldParsesCaseInsensitively) {
  auto args = ParseQuantizationArgs(R"({
      "num_bits": 4, "type": "INT", "symmetric": false, "group_size": 64,
      "strategy": "Group", "block_structure": null, "dynamic": false,
      "actorder": "WEIGHT", "observer": "MSE",
      "observer_kwargs": {"maxshrink": 0.5, "patience": 3}})");
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->num_bits, 4);
  EXPECT_FALSE(args->symmetric);
  EXPECT_EQ(args->group_size, 64);
  EXPECT_EQ(args->actorder, ActOrder::kWeight);
  EXPECT_EQ(args->observer, "mse");
  EXPECT_EQ(args->observer_kwargs.at("maxshrink"), 0.5);
  EXPECT_EQ(args->observer_kwargs.at("patience"), 3);
}

TEST(QuantArgsTest, ActorderBoolAndBlockString) {
  auto a = ParseQuantizationArgs(R"({"group_size": 128, "actorder": true})");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->actorder, ActOrder::kGroup);
  auto b = ParseQuantizationArgs(R"({"group_size": 128, "actorder": false})");
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->actorder.has_value());
  auto block = ParseQuantizationArgs(
      R"({"type": "float", "strategy": "block", "block_structure": "64x32"})");
  ASSERT_TRUE(block.ok()) << block.status();
  EXPECT_EQ((*block->block_structure)[0], 64);
  EXPECT_EQ((*block->block_structure)[1], 32);
  auto block_list = ParseQuantizationArgs(
      R"({"strategy": "block", "block_structure": [128, 128]})");
  ASSERT_TRUE(block_list.ok());
}

TEST(QuantArgsTest, DynamicModes) {
  auto dyn = ParseQuantizationArgs(
      R"({"strategy": "token", "dynamic": true, "observer": "mse"})");
  ASSERT_TRUE(dyn.ok()) << dyn.status();
  EXPECT_EQ(dyn->dynamic, DynamicMode::kDynamic);
  EXPECT_FALSE(dyn->observer.has_value());  // dynamic true clears it
  auto local = ParseQuantizationArgs(R"({"type": "float", "num_bits": 4,
      "strategy": "tensor_group", "group_size": 16, "dynamic": "LOCAL"})");
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(local->dynamic, DynamicMode::kLocal);
  EXPECT_EQ(local->observer, "minmax");
}

TEST(QuantArgsTest, RejectsEveryInvalidCombinationOfSpec2) {
  // 1. group_size below -1.
  ExpectRejected(R"({"group_size": -2})", {"group_size", "-2"});
  // 2. A strategy cannot be inferred from group_size 0.
  ExpectRejected(R"({"group_size": 0})", {"group_size", "0"});
  // 3. group needs a positive group_size; positive sizes need group(s).
  ExpectRejected(R"({"strategy": "group"})", {"group_size", "group"});
  ExpectRejected(R"({"strategy": "group", "group_size": -1})",
                 {"group_size", "-1"});
  ExpectRejected(R"({"strategy": "tensor_group", "type": "float",
                     "num_bits": 4})",
                 {"group_size", "tensor_group"});
  ExpectRejected(R"({"strategy": "channel", "group_size": 128})",
                 {"group_size", "128", "channel"});
  ExpectRejected(R"({"strategy": "tensor", "group_size": 16})",
                 {"group_size", "tensor"});
  // 4. actorder needs strategy group.
  ExpectRejected(R"({"strategy": "channel", "actorder": "group"})",
                 {"actorder", "channel"});
  ExpectRejected(R"({"type": "float", "num_bits": 4, "strategy":
                     "tensor_group", "group_size": 16, "actorder": "static"})",
                 {"actorder", "tensor_group"});
  // 5. dynamic needs token/tensor/tensor_group/group; local needs
  // tensor_group.
  ExpectRejected(R"({"strategy": "channel", "dynamic": true})",
                 {"dynamic", "channel"});
  ExpectRejected(R"({"strategy": "block", "block_structure": [2, 2],
                     "dynamic": true})",
                 {"dynamic", "block"});
  ExpectRejected(R"({"strategy": "token", "dynamic": "local"})",
                 {"dynamic", "local", "token"});
  // 7. Bit widths.
  ExpectRejected(R"({"type": "float", "num_bits": 16})", {"num_bits", "16"});
  ExpectRejected(R"({"type": "float", "num_bits": 6})", {"num_bits", "6"});
  ExpectRejected(R"({"num_bits": 0})", {"num_bits", "0"});
  ExpectRejected(R"({"num_bits": 33})", {"num_bits", "33"});
  // 8. block needs two positive dims.
  ExpectRejected(R"({"strategy": "block"})", {"block_structure"});
  ExpectRejected(R"({"strategy": "block", "block_structure": [0, 128]})",
                 {"block_structure", "positive"});
  ExpectRejected(R"({"strategy": "block", "block_structure": [-4, 4]})",
                 {"block_structure"});
}

TEST(QuantArgsTest, RejectsMalformedValues) {
  ExpectRejected(R"({"bits": 8})", {"unknown key \"bits\""});
  ExpectRejected(R"({"scale_dtype": null})", {"scale_dtype"});
  ExpectRejected(R"({"num_bits": "8"})", {"num_bits", "\"8\""});
  ExpectRejected(R"({"num_bits": 8.5})", {"num_bits"});
  ExpectRejected(R"({"type": "uint"})", {"type", "uint"});
  ExpectRejected(R"({"symmetric": "yes"})", {"symmetric"});
  ExpectRejected(R"({"strategy": "attn_head"})", {"strategy", "attn_head"});
  ExpectRejected(R"({"dynamic": "global"})", {"dynamic", "global"});
  ExpectRejected(R"({"actorder": "random"})", {"actorder", "random"});
  ExpectRejected(R"({"block_structure": [1, 2, 3]})", {"block_structure"});
  ExpectRejected(R"({"block_structure": "128by128"})", {"block_structure"});
  ExpectRejected(R"({"observer": 5})", {"observer"});
  ExpectRejected(R"({"observer_kwargs": {"grid": "big"}})",
                 {"observer_kwargs", "grid"});
  ExpectRejected(R"({"observer_kwargs": [1]})", {"observer_kwargs"});
  ExpectRejected(R"([1, 2])", {"object"});
  ExpectRejected(R"({"num_bits": 8, "num_bits": 4})", {"duplicate"});
  ExpectRejected(R"({"num_bits": 99999999999999999999})", {"num_bits"});
  ExpectRejected("not json", {"QuantizationArgs"});
}

TEST(QuantArgsTest, JsonRoundTrip) {
  auto args = ParseQuantizationArgs(
      R"({"num_bits": 4, "group_size": 128, "symmetric": false,
          "actorder": "group", "observer": "mse",
          "observer_kwargs": {"norm": 2.0}})");
  ASSERT_TRUE(args.ok());
  const std::string json = args->ToJson();
  EXPECT_EQ(json,
            R"({"num_bits":4,"type":"int","symmetric":false,"group_size":128,)"
            R"("strategy":"group","block_structure":null,"dynamic":false,)"
            R"("actorder":"group","observer":"mse",)"
            R"("observer_kwargs":{"norm":2.0}})");
  auto again = ParseQuantizationArgs(json);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->ToJson(), json);
}

TEST(QuantArgsTest, PresetSchemes) {
  struct Want {
    const char* name;
    int bits;
    QuantType type;
    bool symmetric;
    Strategy strategy;
    int64_t group_size;  // 0: none
  };
  const Want wants[] = {
      {"W8A16", 8, QuantType::kInt, true, Strategy::kChannel, 0},
      {"W4A16", 4, QuantType::kInt, true, Strategy::kGroup, 128},
      {"W4A16_ASYM", 4, QuantType::kInt, false, Strategy::kGroup, 128},
      {"W8A8", 8, QuantType::kInt, true, Strategy::kChannel, 0},
      {"INT8", 8, QuantType::kInt, true, Strategy::kChannel, 0},
      {"W4A8", 4, QuantType::kInt, true, Strategy::kGroup, 128},
      {"FP8", 8, QuantType::kFloat, true, Strategy::kTensor, 0},
      {"FP8_DYNAMIC", 8, QuantType::kFloat, true, Strategy::kChannel, 0},
      {"FP8_BLOCK", 8, QuantType::kFloat, true, Strategy::kBlock, 0},
      {"NVFP4A16", 4, QuantType::kFloat, true, Strategy::kTensorGroup, 16},
      {"NVFP4", 4, QuantType::kFloat, true, Strategy::kTensorGroup, 16},
  };
  for (const Want& w : wants) {
    auto args = QuantizationArgsFromScheme(w.name);
    ASSERT_TRUE(args.ok()) << w.name << ": " << args.status();
    EXPECT_EQ(args->num_bits, w.bits) << w.name;
    EXPECT_EQ(args->type, w.type) << w.name;
    EXPECT_EQ(args->symmetric, w.symmetric) << w.name;
    EXPECT_EQ(args->strategy, w.strategy) << w.name;
    EXPECT_EQ(args->group_size.value_or(0), w.group_size) << w.name;
    EXPECT_EQ(args->observer, "minmax") << w.name;
  }
  auto block = QuantizationArgsFromScheme("fp8_block");
  ASSERT_TRUE(block.ok());
  EXPECT_EQ((*block->block_structure)[0], 128);
  EXPECT_EQ((*block->block_structure)[1], 128);
  EXPECT_EQ(QuantizationArgsFromScheme("NVFP4")->ZeroPointDType(),
            DType::kF8E4M3FN);
  auto unknown = QuantizationArgsFromScheme("W3A16");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("W4A16_ASYM"),
            absl::string_view::npos);
  EXPECT_EQ(SchemeNames().size(), 11u);
}

TEST(QuantArgsTest, ZeroPointDTypes) {
  QuantizationArgs args;
  args.num_bits = 8;
  EXPECT_EQ(args.ZeroPointDType(), DType::kI8);
  args.num_bits = 9;
  EXPECT_EQ(args.ZeroPointDType(), DType::kI16);
  args.num_bits = 16;
  EXPECT_EQ(args.ZeroPointDType(), DType::kI16);
  args.num_bits = 17;
  EXPECT_EQ(args.ZeroPointDType(), DType::kI32);
  args.type = QuantType::kFloat;
  args.num_bits = 8;
  EXPECT_EQ(args.ZeroPointDType(), DType::kF8E4M3FN);
}

TEST(QuantArgsTest, ObserverKwargs) {
  auto kw = ParseObserverKwargs(R"({"grid": 50, "norm": 2.5})", "--kw");
  ASSERT_TRUE(kw.ok());
  EXPECT_EQ(kw->at("grid"), 50);
  auto bad = ParseObserverKwargs(R"({"grid": true})", "--kw");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--kw"), absl::string_view::npos);
  EXPECT_FALSE(ParseObserverKwargs("[]", "--kw").ok());
}

}  // namespace
}  // namespace qcal
