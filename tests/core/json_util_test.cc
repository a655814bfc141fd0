#include "core/json_util.h"

#include <string>

#include "gtest/gtest.h"

namespace qcal {
namespace {

TEST(JsonUtilTest, ParsesValidJson) {
  auto j = ParseJsonStrict(R"({"a": [1, 2, {"b": null}], "c": "x"})", "test");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ((*j)["c"], "x");
}

TEST(JsonUtilTest, RejectsInvalidJsonNamingTheSource) {
  auto j = ParseJsonStrict("{\"a\": }", "--args");
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(j.status().message().find("--args"), absl::string_view::npos);
  EXPECT_FALSE(ParseJsonStrict("", "x").ok());
  EXPECT_FALSE(ParseJsonStrict("{} {}", "x").ok());
}

TEST(JsonUtilTest, RejectsDuplicateKeys) {
  auto j = ParseJsonStrict(R"({"a": 1, "a": 2})", "x");
  ASSERT_FALSE(j.ok());
  EXPECT_NE(j.status().message().find("duplicate key \"a\""),
            absl::string_view::npos);
  // The same key in different objects is fine.
  EXPECT_TRUE(ParseJsonStrict(R"({"a": {"a": 1}, "b": {"a": 2}})", "x").ok());
  EXPECT_FALSE(ParseJsonStrict(R"({"o": {"k": 1, "k": 1}})", "x").ok());
}

TEST(JsonUtilTest, RejectsDeepNestingWithoutCrashing) {
  const std::string deep(100000, '[');
  auto j = ParseJsonStrict(deep, "x");
  ASSERT_FALSE(j.ok());
  EXPECT_NE(j.status().message().find("nested deeper"),
            absl::string_view::npos);
  std::string ok_depth;
  for (int i = 0; i < 32; ++i) ok_depth += "[";
  for (int i = 0; i < 32; ++i) ok_depth += "]";
  EXPECT_TRUE(ParseJsonStrict(ok_depth, "x").ok());
  EXPECT_FALSE(ParseJsonStrict("[" + ok_depth + "]", "x").ok());
}

}  // namespace
}  // namespace qcal
