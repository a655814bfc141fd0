#include "tools/cli_common.h"

#include <sstream>
#include <string>
#include <vector>

#include "core/float_convert.h"
#include "core/quant_args.h"
#include "gflags/gflags.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/observers/test_tensors.h"

DEFINE_string(test_str, "", "a string flag for the tests");
DEFINE_bool(test_bool, false, "a bool flag for the tests");
DEFINE_int32(test_int, 0, "an int flag for the tests");

namespace qcal {
namespace {

using ::qcal::testing_util::MakeTensor;
using ::testing::HasSubstr;

// ----------------------------------------------------------- flag parsing

absl::StatusOr<FlagParse> Parse(std::vector<std::string> args) {
  FLAGS_test_str = "";
  FLAGS_test_bool = false;
  FLAGS_test_int = 0;
  args.insert(args.begin(), "prog");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return ParseFlagsStrictly(static_cast<int>(argv.size()), argv.data());
}

TEST(ParseFlagsStrictlyTest, AcceptedForms) {
  ASSERT_TRUE(Parse({"--test_str=a=b", "-test_int=7", "--test_bool"}).ok());
  EXPECT_EQ(FLAGS_test_str, "a=b");
  EXPECT_EQ(FLAGS_test_int, 7);
  EXPECT_TRUE(FLAGS_test_bool);
  ASSERT_TRUE(Parse({"--test_str", "x y", "--test_int", "-3"}).ok());
  EXPECT_EQ(FLAGS_test_str, "x y");
  EXPECT_EQ(FLAGS_test_int, -3);
  FLAGS_test_bool = true;
  ASSERT_TRUE(Parse({"--test_bool", "--notest_bool"}).ok());
  EXPECT_FALSE(FLAGS_test_bool);
  ASSERT_TRUE(Parse({"--test_bool=true", "--"}).ok());
  EXPECT_TRUE(FLAGS_test_bool);
  ASSERT_TRUE(Parse({"--test_str="}).ok());
  EXPECT_EQ(FLAGS_test_str, "");
}

TEST(ParseFlagsStrictlyTest, Help) {
  absl::StatusOr<FlagParse> p = Parse({"--help"});
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->help);
  p = Parse({"--test_int=1"});
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->help);
}

TEST(ParseFlagsStrictlyTest, Errors) {
  struct Case {
    std::vector<std::string> args;
    std::string mention;
  };
  const std::vector<Case> cases = {
      {{"--nosuch=1"}, "unknown flag --nosuch"},
      {{"--nosuch"}, "unknown flag --nosuch"},
      {{"--notest_str"}, "unknown flag --notest_str"},
      {{"--notest_bool=1"}, "unknown flag --notest_bool"},
      {{"--test_int=x"}, "invalid value 'x' for flag --test_int"},
      {{"--test_int=99999999999"}, "--test_int"},
      {{"--test_bool=perhaps"}, "--test_bool"},
      {{"--test_bool", "yes"}, "positional argument 'yes'"},
      {{"--test_str"}, "--test_str needs a value"},
      {{"file.safetensors"}, "positional argument 'file.safetensors'"},
      {{"--", "x"}, "positional argument 'x'"},
      {{"-"}, "positional argument '-'"},
      {{"--=3"}, "malformed flag"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.args[0]);
    absl::StatusOr<FlagParse> p = Parse(c.args);
    ASSERT_FALSE(p.ok());
    EXPECT_THAT(p.status().message(), HasSubstr(c.mention));
  }
}

// ------------------------------------------------------------------- args

TEST(ResolveArgsTest, SchemeArgsAndDefault) {
  absl::StatusOr<ResolvedArgs> r = ResolveArgs({"w4a16", "", "", ""}, "");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->source, "scheme W4A16");
  EXPECT_EQ(r->args.ToJson(), QuantizationArgsFromScheme("W4A16")->ToJson());

  r = ResolveArgs({"", R"({"num_bits":8,"strategy":"channel"})", "", ""}, "");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->source, "--args");
  EXPECT_EQ(*r->args.observer, "minmax");

  r = ResolveArgs({}, "FP8");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->source, "scheme FP8");

  r = ResolveArgs({}, "");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("--scheme"));
  r = ResolveArgs({"FP8", "{}", "", ""}, "FP8");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("not both"));
}

TEST(ResolveArgsTest, ObserverOverrides) {
  // --observer replaces the args' observer; --observer_kwargs replaces the
  // args' kwargs (here: dropping averaging_constant, which mse_memoryless
  // would reject).
  const std::string json =
      R"({"num_bits":8,"observer":"minmax","observer_kwargs":{"averaging_constant":0.5}})";
  absl::StatusOr<ResolvedArgs> r =
      ResolveArgs({"", json, "Memoryless_MSE", R"({"grid":50})"}, "");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r->args.observer, "memoryless_mse");
  EXPECT_EQ(r->args.observer_kwargs, (ObserverKwargs{{"grid", 50.0}}));

  // Without the kwargs override the args' kwargs stay and must suit the new
  // observer.
  r = ResolveArgs({"", json, "memoryless_mse", ""}, "");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("averaging_constant"));
}

TEST(ResolveArgsTest, ErrorsNameTheFlag) {
  struct Case {
    ArgsFlags flags;
    std::string mention;
  };
  const std::vector<Case> cases = {
      {{"W3", "", "", ""}, "--scheme: unknown scheme"},
      {{"", "{", "", ""}, "--args: "},
      {{"", R"({"num_bits":"8"})", "", ""}, "--args: QuantizationArgs.num_bits"},
      {{"", R"({"strategy":"group"})", "", ""}, "group_size"},
      {{"", R"({"num_bits":8,"strategy":"tensor","dynamic":true})", "", ""},
       "dynamic"},
      {{"FP8", "", "nosuch", ""}, "--observer: unknown observer \"nosuch\""},
      {{"", R"({"observer":"nosuch"})", "", ""}, "--args: unknown observer"},
      {{"FP8", "", "", "{\"bad\":1}"}, "--observer_kwargs: "},
      {{"FP8", "", "", "[1]"}, "--observer_kwargs"},
      {{"FP8", "", "", R"({"averaging_constant":0})"}, "averaging_constant"},
      {{"", R"({"num_bits":4,"type":"float","symmetric":false})", "", ""},
       "--args"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.mention);
    absl::StatusOr<ResolvedArgs> r = ResolveArgs(c.flags, "");
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r.status().message(), HasSubstr(c.mention));
  }
}

// ------------------------------------------------------- backend, paths

TEST(ResolveBackendTest, CpuAlwaysCudaOnlyWhenLinked) {
  EXPECT_EQ(*ResolveBackend("cpu"), Device::kCpu);
  EXPECT_EQ(*ResolveBackend("CPU"), Device::kCpu);
  // This test links neither the CUDA backend nor the device upload.
  absl::StatusOr<Device> cuda = ResolveBackend("cuda");
  ASSERT_FALSE(cuda.ok());
  EXPECT_EQ(cuda.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cuda.status().message(), HasSubstr("--backend=cuda"));
  absl::StatusOr<Device> other = ResolveBackend("tpu");
  ASSERT_FALSE(other.ok());
  EXPECT_THAT(other.status().message(), HasSubstr("'tpu'"));
  EXPECT_TRUE(CheckThreads(0).ok());
  EXPECT_FALSE(CheckThreads(-2).ok());
}

TEST(ResolveUserPathTest, RelativeToBase) {
  EXPECT_EQ(ResolveUserPath("a.st", "/w"), "/w/a.st");
  EXPECT_EQ(ResolveUserPath("a.st", "/w/"), "/w/a.st");
  EXPECT_EQ(ResolveUserPath("/abs/a.st", "/w"), "/abs/a.st");
  EXPECT_EQ(ResolveUserPath("a.st", ""), "a.st");
  EXPECT_EQ(ResolveUserPath("", "/w"), "");
}

TEST(NameFilterTest, SearchSemantics) {
  absl::StatusOr<NameFilter> f = NameFilter::Create(kDefaultTargets, "");
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->Selects("model.q_proj.weight"));
  EXPECT_FALSE(f->Selects("model.q_proj.weight_scale"));
  EXPECT_FALSE(f->Selects("model.q_proj.bias"));
  f = NameFilter::Create("proj", "^lm_head|\\.k_");
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->Selects("a.q_proj.weight"));  // found inside the name
  EXPECT_FALSE(f->Selects("a.k_proj.weight"));
  EXPECT_FALSE(f->Selects("lm_head.proj"));
  EXPECT_TRUE(f->Selects("x.lm_head.proj"));  // ^ anchors at the start
  absl::StatusOr<NameFilter> bad = NameFilter::Create("a(", "");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("--targets"));
  bad = NameFilter::Create("a", "[");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("--ignore"));
}

// ---------------------------------------------------------------- storage

TEST(StoredQParamsTest, IntKeepsObservedDtype) {
  QuantizationArgs args = *QuantizationArgsFromScheme("W4A16");
  QParams qp;
  qp.scale = MakeTensor(DType::kBF16, {2, 1}, {0.5f, 0.25f});
  qp.zero_point = *Tensor::Zeros(DType::kI8, {2, 1});
  auto stored = StoredQParams("m.w", qp, std::nullopt, args);
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(stored->size(), 2u);
  EXPECT_EQ((*stored)[0].first, "m.w_scale");
  EXPECT_EQ((*stored)[0].second.dtype(), DType::kBF16);
  EXPECT_TRUE(testing_util::SameBits((*stored)[0].second.view(),
                                     qp.scale.view()));
  EXPECT_EQ((*stored)[1].first, "m.w_zero_point");
  EXPECT_EQ((*stored)[1].second.dtype(), DType::kI8);
  // A zero point of the wrong dtype is a bug, not a silent conversion.
  qp.zero_point = *Tensor::Zeros(DType::kI16, {2, 1});
  EXPECT_FALSE(StoredQParams("m.w", qp, std::nullopt, args).ok());
}

TEST(StoredQParamsTest, Fp4ScalesAreF8AndGlobalScaleF32) {
  QuantizationArgs args = *QuantizationArgsFromScheme("NVFP4");
  QParams qp;
  // 0.1 is not an fp8 value: it is rounded to nearest-even e4m3.
  qp.scale = MakeTensor(DType::kF32, {1, 3}, {448.0f, 0.125f, 0.1f});
  qp.zero_point = *Tensor::Zeros(DType::kF8E4M3FN, {1, 3});
  auto stored = StoredQParams("m.input", qp, 12.5f, args);
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(stored->size(), 3u);
  const Tensor& scale = (*stored)[0].second;
  EXPECT_EQ(scale.dtype(), DType::kF8E4M3FN);
  EXPECT_EQ(scale.data_as<uint8_t>()[0], FloatToE4m3fnBits(448.0f));
  EXPECT_EQ(scale.data_as<uint8_t>()[1], FloatToE4m3fnBits(0.125f));
  EXPECT_EQ(E4m3fnBitsToFloat(scale.data_as<uint8_t>()[2]), 0.1015625f);
  EXPECT_EQ((*stored)[1].second.dtype(), DType::kF8E4M3FN);
  EXPECT_EQ((*stored)[2].first, "m.input_global_scale");
  EXPECT_EQ((*stored)[2].second.dtype(), DType::kF32);
  EXPECT_EQ(ShapeToString((*stored)[2].second.shape()), "[1]");
  EXPECT_EQ((*stored)[2].second.data_as<float>()[0], 12.5f);
}

TEST(QParamsMetadataTest, ArgsAndObserver) {
  QuantizationArgs args = *QuantizationArgsFromScheme("FP8");
  auto meta = QParamsMetadata(args, "calibrate");
  EXPECT_EQ(meta["quantization_args"], args.ToJson());
  EXPECT_EQ(meta["observer"], "minmax");
  EXPECT_EQ(meta["qcal_tool"], "calibrate");
}

// ------------------------------------------------------- messages, progress

TEST(WithTensorContextTest, NamesFileAndTensorOnce) {
  absl::Status s = WithTensorContext(absl::InvalidArgumentError("bad shape"),
                                     "/m.st", "a.weight");
  EXPECT_EQ(s.message(), "/m.st: tensor 'a.weight': bad shape");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  s = WithTensorContext(absl::InvalidArgumentError("tensor 'a.weight' has NaN"),
                        "/m.st", "a.weight");
  EXPECT_EQ(s.message(), "/m.st: tensor 'a.weight' has NaN");
  EXPECT_TRUE(WithTensorContext(absl::OkStatus(), "f", "t").ok());
}

TEST(WithNonFiniteHintTest, OnlyForNonFiniteErrors) {
  absl::Status s = WithNonFiniteHint(
      absl::InvalidArgumentError("t has a non-finite value (nan)"));
  EXPECT_EQ(s.message(),
            "t has a non-finite value (nan); pass --allow_nonfinite to skip "
            "them");
  EXPECT_EQ(WithNonFiniteHint(
                absl::InvalidArgumentError(
                    "a non-finite value (allow non-finite values to skip them)"))
                .message(),
            "a non-finite value (pass --allow_nonfinite to skip them)");
  EXPECT_EQ(WithNonFiniteHint(absl::DataLossError("short file")).message(),
            "short file");
}

TEST(ProgressBarTest, FormatLine) {
  EXPECT_EQ(ProgressBar::FormatLine(512, 1024, 10.0, "a.weight", 100),
            "[############------------]  50%  512 B/1.0 KiB  ETA 0:10  "
            "a.weight");
  EXPECT_EQ(ProgressBar::FormatLine(0, 1024, 3.0, "", 100),
            "[------------------------]   0%  0 B/1.0 KiB  ETA ?  ");
  // Long names keep their end.
  const std::string line = ProgressBar::FormatLine(
      3LL << 30, 4LL << 30, 3600.0, std::string(80, 'x') + ".down_proj", 80);
  EXPECT_EQ(line.size(), 80u);
  EXPECT_THAT(line, HasSubstr(" 75%  3.0 GiB/4.0 GiB  ETA 20:00  ..."));
  EXPECT_THAT(line, ::testing::EndsWith(".down_proj"));
}

TEST(ProgressBarTest, DrawsOnlyWhenEnabled) {
  std::ostringstream off, on;
  {
    ProgressBar bar(off, false, 100, std::chrono::milliseconds(0));
    bar.Update(50, "x");
  }
  EXPECT_EQ(off.str(), "");
  {
    ProgressBar bar(on, true, 100, std::chrono::milliseconds(0));
    bar.Update(50, "x");
  }
  EXPECT_THAT(on.str(), HasSubstr("\r["));
  EXPECT_THAT(on.str(), ::testing::EndsWith("\r\033[K"));  // cleared
}

TEST(FormatBytesTest, Units) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(FormatBytes(1LL << 30), "1.0 GiB");
}

}  // namespace
}  // namespace qcal
