#include "core/dtype.h"

#include "gtest/gtest.h"

namespace qcal {
namespace {

TEST(DTypeTest, SizesAndNames) {
  EXPECT_EQ(DTypeSize(DType::kF32), 4);
  EXPECT_EQ(DTypeSize(DType::kF16), 2);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2);
  EXPECT_EQ(DTypeSize(DType::kF8E4M3FN), 1);
  EXPECT_EQ(DTypeSize(DType::kI8), 1);
  EXPECT_EQ(DTypeSize(DType::kI16), 2);
  EXPECT_EQ(DTypeSize(DType::kI32), 4);
  EXPECT_EQ(DTypeSize(DType::kI64), 8);
  EXPECT_EQ(DTypeSize(DType::kU8), 1);
  EXPECT_EQ(DTypeSize(DType::kBool), 1);
  EXPECT_EQ(DTypeName(DType::kF8E4M3FN), "F8_E4M3");
  EXPECT_EQ(DTypeName(DType::kBF16), "BF16");
  EXPECT_EQ(DTypeName(DType::kBool), "BOOL");
}

TEST(DTypeTest, NamesRoundTrip) {
  for (DType dtype : kAllDTypes) {
    auto parsed = DTypeFromName(DTypeName(dtype));
    ASSERT_TRUE(parsed.ok()) << DTypeName(dtype);
    EXPECT_EQ(*parsed, dtype);
  }
}

TEST(DTypeTest, UnknownNameIsAnErrorQuotingIt) {
  auto parsed = DTypeFromName("F64");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(parsed.status().message().find("\"F64\""), absl::string_view::npos);
  // Names are case-sensitive, as in the safetensors format.
  EXPECT_FALSE(DTypeFromName("f32").ok());
  EXPECT_FALSE(DTypeFromName("").ok());
}

TEST(DTypeTest, Categories) {
  EXPECT_TRUE(IsFloatingDType(DType::kF8E4M3FN));
  EXPECT_FALSE(IsFloatingDType(DType::kI8));
  EXPECT_TRUE(IsObservableDType(DType::kBF16));
  EXPECT_TRUE(IsObservableDType(DType::kF16));
  EXPECT_TRUE(IsObservableDType(DType::kF32));
  EXPECT_FALSE(IsObservableDType(DType::kF8E4M3FN));
  EXPECT_FALSE(IsObservableDType(DType::kI32));
}

}  // namespace
}  // namespace qcal
