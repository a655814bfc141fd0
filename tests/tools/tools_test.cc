// Runs the real `calibrate` and `token_count` binaries (SPEC §11): exit codes,
// error messages that name the file and tensor (or flag), output files left
// byte-identical on every error, and outputs whose tensors equal what the
// Observer API computes for the same data.
#include <dirent.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/float_convert.h"
#include "core/quant_args.h"
#include "core/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "observers/observer.h"
#include "tests/observers/test_tensors.h"
#include "tests/tools/tool_test_util.h"

namespace qcal {
namespace {

using ::qcal::testing_util::FileExists;
using ::qcal::testing_util::MakeTensor;
using ::qcal::testing_util::NewTempDir;
using ::qcal::testing_util::RandomTensor;
using ::qcal::testing_util::RawSafetensors;
using ::qcal::testing_util::ReadBytes;
using ::qcal::testing_util::RunTool;
using ::qcal::testing_util::ToolPath;
using ::qcal::testing_util::ToolRun;
using ::qcal::testing_util::WriteBytes;
using ::qcal::testing_util::WriteTensors;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kSentinel[] = "pre-existing output: must survive every error";

std::string Calibrate() { return ToolPath("calibrate"); }
std::string TokenCount() { return ToolPath("token_count"); }

std::string Describe(const ToolRun& run) {
  return absl::StrCat("exit ", run.exit_code, "\n--- stdout\n", run.out,
                      "\n--- stderr\n", run.err);
}

// Names of the entries of `dir`.
std::set<std::string> ListDir(const std::string& dir) {
  std::set<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") names.insert(n);
    }
    closedir(d);
  }
  return names;
}

Tensor F32(Shape shape, std::vector<float> values) {
  return MakeTensor(DType::kF32, shape, values);
}

// A valid checkpoint with two small weights.
std::string ValidCheckpointBytes(const std::string& dir) {
  const std::string path = dir + "/valid.safetensors";
  std::vector<std::pair<std::string, Tensor>> t;
  t.emplace_back("layer.a.weight", RandomTensor(DType::kF32, {4, 8}, 1));
  t.emplace_back("layer.b.weight", RandomTensor(DType::kBF16, {3, 16}, 2));
  WriteTensors(path, std::move(t));
  return ReadBytes(path);
}

// One malformed-input case: the bytes of the input file and what the error
// must mention.
struct BadFile {
  std::string label;
  std::string bytes;
  std::vector<std::string> mentions;  // besides the file's path
};

std::vector<BadFile> BadFiles(const std::string& dir) {
  std::vector<BadFile> cases;
  const std::string valid = ValidCheckpointBytes(dir);
  cases.push_back({"truncated", valid.substr(0, valid.size() - 10),
                   {"layer.b.weight"}});
  cases.push_back({"empty", "", {}});
  {
    std::string bytes = RawSafetensors("{}", "");
    bytes[0] = static_cast<char>(0xE8);  // N = 1000 > what follows
    bytes[1] = 0x03;
    cases.push_back({"header_beyond_file", bytes, {"1000"}});
  }
  cases.push_back({"header_not_json", RawSafetensors("{not json", ""), {}});
  cases.push_back(
      {"offsets_outside_data",
       RawSafetensors(R"({"x.weight":{"dtype":"F32","shape":[2,2],)"
                      R"("data_offsets":[0,16]}})",
                      std::string(8, '\0')),
       {"x.weight"}});
  cases.push_back(
      {"size_shape_mismatch",
       RawSafetensors(R"({"x.weight":{"dtype":"F32","shape":[2,2],)"
                      R"("data_offsets":[0,12]}})",
                      std::string(12, '\0')),
       {"x.weight"}});
  cases.push_back(
      {"shape_overflow",
       RawSafetensors(R"({"x.weight":{"dtype":"F32",)"
                      R"("shape":[4611686018427387904,4],)"
                      R"("data_offsets":[0,8]}})",
                      std::string(8, '\0')),
       {"x.weight"}});
  cases.push_back(
      {"unknown_dtype",
       RawSafetensors(R"({"x.weight":{"dtype":"F64","shape":[1,1],)"
                      R"("data_offsets":[0,8]}})",
                      std::string(8, '\0')),
       {"x.weight", "F64"}});
  // Hostile files (issue 8): deep JSON nesting, a 4 GiB header length,
  // duplicate tensor names, a negative dimension.
  cases.push_back({"deep_nesting",
                   RawSafetensors(std::string(100000, '['), ""),
                   {"nested deeper"}});
  {
    std::string bytes = RawSafetensors("{}", "");
    bytes[0] = bytes[1] = bytes[2] = bytes[3] = 0;
    bytes[4] = 1;  // N = 2^32
    cases.push_back({"header_length_4gib", bytes, {"4294967296"}});
  }
  cases.push_back(
      {"duplicate_names",
       RawSafetensors(R"({"x.weight":{"dtype":"F32","shape":[1],)"
                      R"("data_offsets":[0,4]},)"
                      R"("x.weight":{"dtype":"F32","shape":[1],)"
                      R"("data_offsets":[4,8]}})",
                      std::string(8, '\0')),
       {"x.weight", "duplicate"}});
  cases.push_back(
      {"negative_dim",
       RawSafetensors(R"({"x.weight":{"dtype":"F32","shape":[-2,2],)"
                      R"("data_offsets":[0,16]}})",
                      std::string(16, '\0')),
       {"x.weight"}});
  return cases;
}

// ---------------------------------------------------------------- calibrate

class CalibrateErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir();
    out_ = dir_ + "/out.safetensors";
    WriteBytes(out_, kSentinel);
    input_ = dir_ + "/in.safetensors";
    std::vector<std::pair<std::string, Tensor>> t;
    t.emplace_back("layer.a.weight", RandomTensor(DType::kF32, {4, 8}, 3));
    WriteTensors(input_, std::move(t));
  }

  // Runs calibrate with --output and checks the exit code, that the output
  // is unchanged and that no temporary file is left behind.
  ToolRun Expect(int code, std::vector<std::string> args) {
    args.push_back("--output=" + out_);
    const std::set<std::string> before = ListDir(dir_);
    ToolRun run = RunTool(Calibrate(), args);
    EXPECT_EQ(run.exit_code, code) << Describe(run);
    EXPECT_EQ(ReadBytes(out_), kSentinel) << Describe(run);
    EXPECT_EQ(ListDir(dir_), before);
    if (code != 0) {
      EXPECT_THAT(run.err, HasSubstr(code == 2 ? "usage error" : "error"));
      EXPECT_EQ(run.out.find("wrote"), std::string::npos);
    }
    return run;
  }

  std::string dir_, out_, input_;
};

TEST_F(CalibrateErrorTest, MalformedFilesAreRuntimeErrorsNamingFileAndTensor) {
  for (const BadFile& bad : BadFiles(dir_)) {
    SCOPED_TRACE(bad.label);
    const std::string path = dir_ + "/" + bad.label + ".safetensors";
    WriteBytes(path, bad.bytes);
    ToolRun run = Expect(1, {"--input=" + path, "--scheme=W8A16"});
    EXPECT_THAT(run.err, HasSubstr(path));
    for (const std::string& m : bad.mentions) {
      EXPECT_THAT(run.err, HasSubstr(m));
    }
  }
}

TEST_F(CalibrateErrorTest, MissingInput) {
  const std::string path = dir_ + "/missing.safetensors";
  ToolRun run = Expect(1, {"--input=" + path, "--scheme=W8A16"});
  EXPECT_THAT(run.err, HasSubstr(path));
  EXPECT_FALSE(FileExists(path));
}

TEST_F(CalibrateErrorTest, NanInAWeightNamesFileTensorAndIndex) {
  std::vector<float> v(16, 0.5f);
  v[9] = std::numeric_limits<float>::quiet_NaN();
  const std::string path = dir_ + "/nan.safetensors";
  std::vector<std::pair<std::string, Tensor>> t;
  t.emplace_back("good.weight", RandomTensor(DType::kF32, {2, 8}, 4));
  t.emplace_back("bad.weight", F32({2, 8}, v));
  WriteTensors(path, std::move(t));
  ToolRun run = Expect(1, {"--input=" + path, "--scheme=W8A16"});
  EXPECT_THAT(run.err, HasSubstr(path));
  EXPECT_THAT(run.err, HasSubstr("'bad.weight'"));
  EXPECT_THAT(run.err, HasSubstr("[1, 1]"));
  EXPECT_THAT(run.err, HasSubstr("--allow_nonfinite"));
}

TEST_F(CalibrateErrorTest, UsageErrors) {
  const std::string in = "--input=" + input_;
  struct Case {
    std::vector<std::string> args;
    std::string mention;
  };
  const std::vector<Case> cases = {
      {{in, "--scheme=W8A16", "--observer=nosuch"}, "--observer"},
      {{in, "--scheme=W9A9"}, "--scheme"},
      {{in, "--args={\"num_bits\": 4,"}, "--args"},
      {{in, "--args={\"num_bits\":4,\"strategy\":\"group\"}"}, "group_size"},
      {{in, "--args={\"num_bits\":4,\"type\":\"float\",\"symmetric\":false}"},
       "--args"},
      {{in, "--args={\"num_bits\":8,\"strategy\":\"token\",\"dynamic\":true}"},
       "dynamic"},
      {{in, "--args={\"num_bits\":8,\"bogus_key\":1}"}, "bogus_key"},
      {{in, "--scheme=W8A16", "--observer_kwargs={\"nosuch\":1}"}, "nosuch"},
      {{in, "--scheme=W8A16", "--observer_kwargs={\"averaging_constant\":2}"},
       "averaging_constant"},
      {{in, "--scheme=W8A16", "--observer=memoryless_mse",
        "--observer_kwargs={\"averaging_constant\":0.5}"},
       "averaging_constant"},
      {{in, "--scheme=W8A16", "--args={\"num_bits\":8}"}, "--scheme"},
      {{in}, "--scheme"},
      {{in, "--scheme=W8A16", "--bogus_flag=1"}, "--bogus_flag"},
      {{in, "--scheme=W8A16", "--threads=many"}, "--threads"},
      {{in, "--scheme=W8A16", "--threads=-1"}, "--threads"},
      {{in, "--scheme=W8A16", "--allow_nonfinite=maybe"}, "--allow_nonfinite"},
      {{in, "--scheme=W8A16", "--backend=tpu"}, "--backend"},
      {{in, "--scheme=W8A16", "--backend=cuda"}, "--backend=cuda"},
      {{in, "--scheme=W8A16", "--targets=("}, "--targets"},
      {{in, "--scheme=W8A16", "--ignore=[a"}, "--ignore"},
      {{in, "--scheme=W8A16", "--targets=^nothing$"}, "--targets"},
      {{in, "--scheme=W8A16", "positional"}, "positional"},
      {{in, "--scheme"}, "--scheme"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrJoin(c.args, " "));
    ToolRun run = Expect(2, c.args);
    EXPECT_THAT(run.err, HasSubstr(c.mention));
  }
}

TEST_F(CalibrateErrorTest, MemoryBudgetStopsLargeAllocations) {
  // A [1024, 1024] F32 weight.
  const std::string big = dir_ + "/big.safetensors";
  std::vector<std::pair<std::string, Tensor>> t;
  t.emplace_back("big.weight", RandomTensor(DType::kF32, {1024, 1024}, 5));
  WriteTensors(big, std::move(t));
  // NVFP4: 65536 units of 16 elements; their statistics and qparams need
  // more than 1 MiB.
  ToolRun run = Expect(1, {"--input=" + big, "--scheme=NVFP4",
                           "--memory_budget_mb=1"});
  EXPECT_THAT(run.err, HasSubstr("big.weight"));
  EXPECT_THAT(run.err, HasSubstr("memory budget"));
  EXPECT_THAT(run.err, HasSubstr("--memory_budget_mb"));
  Expect(2, {"--input=" + big, "--scheme=W8A16", "--memory_budget_mb=-1"});
  // A sufficient budget succeeds.
  ToolRun ok = RunTool(Calibrate(), {"--input=" + big, "--scheme=W8A16",
                                     "--memory_budget_mb=256",
                                     "--output=" + dir_ + "/ok.safetensors"});
  EXPECT_EQ(ok.exit_code, 0) << Describe(ok);
}

TEST_F(CalibrateErrorTest, UnwritableOutputIsARuntimeError) {
  const std::string bad = dir_ + "/no/such/dir/out.safetensors";
  ToolRun run = RunTool(Calibrate(), {"--input=" + input_, "--scheme=FP8",
                                      "--output=" + bad});
  EXPECT_EQ(run.exit_code, 1) << Describe(run);
  EXPECT_THAT(run.err, HasSubstr(bad));
  EXPECT_FALSE(FileExists(bad));
}

// What the Observer API gives for one weight, in stored form (SPEC §10).
std::vector<std::pair<std::string, Tensor>> ExpectedWeightQParams(
    const std::string& name, const TensorView& x, const QuantizationArgs& args,
    NonFinitePolicy nonfinite) {
  std::vector<std::pair<std::string, Tensor>> out;
  absl::StatusOr<std::unique_ptr<Observer>> observer = CreateObserver("", args);
  EXPECT_TRUE(observer.ok()) << observer.status();
  if (!observer.ok()) return out;
  ObserveOptions options;
  options.nonfinite = nonfinite;
  options.tensor_name = name;
  (*observer)->set_options(options);
  std::optional<float> g;
  if (args.strategy_or_tensor() == Strategy::kTensorGroup) {
    absl::StatusOr<float> gs = (*observer)->GetGParam(x);
    EXPECT_TRUE(gs.ok()) << gs.status();
    g = *gs;
    (*observer)->Reset();
  }
  absl::StatusOr<const QParams*> qp = (*observer)->GetQParams(x, nullptr, g);
  EXPECT_TRUE(qp.ok()) << qp.status();
  if (!qp.ok()) return out;
  Tensor scale = *Tensor::CopyOf((*qp)->scale.view());
  if (args.is_fp4()) {
    // fp4 scales are stored as float8_e4m3fn.
    std::vector<float> values = testing_util::ToFloats(scale.view());
    Tensor f8 = *Tensor::Zeros(DType::kF8E4M3FN, scale.shape());
    for (size_t i = 0; i < values.size(); ++i) {
      f8.mutable_data_as<uint8_t>()[i] = FloatToE4m3fnBits(values[i]);
      EXPECT_EQ(E4m3fnBitsToFloat(f8.data_as<uint8_t>()[i]), values[i])
          << "an fp4 scale that is not an fp8 value";
    }
    scale = std::move(f8);
  }
  out.emplace_back(name + "_scale", std::move(scale));
  out.emplace_back(name + "_zero_point",
                   *Tensor::CopyOf((*qp)->zero_point.view()));
  if (g.has_value()) {
    out.emplace_back(name + "_global_scale", F32({1}, {*g}));
  }
  return out;
}

// Checks that `path` holds exactly `expected` (names, dtypes, shapes, bytes;
// in this order) and the metadata of `args`.
void ExpectQParamsFile(
    const std::string& path,
    const std::vector<std::pair<std::string, Tensor>>& expected,
    const QuantizationArgs& args) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<std::string> names, want_names;
  for (const SafetensorsEntry& e : (*file)->entries()) names.push_back(e.name);
  for (const auto& [name, t] : expected) want_names.push_back(name);
  EXPECT_EQ(names, want_names);
  for (const auto& [name, want] : expected) {
    SCOPED_TRACE(name);
    absl::StatusOr<TensorView> got = (*file)->Get(name);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->dtype(), want.dtype());
    EXPECT_EQ(ShapeToString(got->shape()), ShapeToString(want.shape()));
    ASSERT_EQ(got->nbytes(), want.nbytes());
    EXPECT_EQ(std::memcmp(got->data(), want.data(), want.nbytes()), 0);
  }
  const auto& meta = (*file)->metadata();
  ASSERT_TRUE(meta.count("quantization_args"));
  EXPECT_EQ(meta.at("quantization_args"), args.ToJson());
  ASSERT_TRUE(meta.count("observer"));
  EXPECT_EQ(meta.at("observer"), *args.observer);
}

// A checkpoint with weights of every observable dtype, a misaligned weight,
// and tensors that --targets selects but that are not observed.
struct TestCheckpoint {
  std::string path;
  // The observed weights, in file order.
  std::vector<std::pair<std::string, Tensor>> weights;
};

TestCheckpoint MakeTestCheckpoint(const std::string& dir) {
  TestCheckpoint c;
  c.path = dir + "/model.safetensors";
  c.weights.emplace_back("layer.a.weight",
                         RandomTensor(DType::kF32, {8, 40}, 11, 0.05f, true));
  c.weights.emplace_back("layer.b.weight",
                         RandomTensor(DType::kBF16, {6, 33}, 12, 1.0f, true));
  c.weights.emplace_back("layer.c.weight",
                         RandomTensor(DType::kF16, {5, 16}, 13, 0.2f));
  c.weights.emplace_back("misaligned.weight",
                         RandomTensor(DType::kF32, {4, 24}, 14, 3.0f));
  std::vector<std::pair<std::string, Tensor>> t;
  t.emplace_back("layer.a.weight", *Tensor::CopyOf(c.weights[0].second.view()));
  t.emplace_back("layer.a.bias", RandomTensor(DType::kF32, {8}, 15));
  t.emplace_back("layer.b.weight", *Tensor::CopyOf(c.weights[1].second.view()));
  t.emplace_back("layer.norm.weight", RandomTensor(DType::kBF16, {40}, 16));
  t.emplace_back("ids.weight", MakeTensor(DType::kI32, {2, 2}, {1, 2, 3, 4}));
  t.emplace_back("empty.weight", *Tensor::Zeros(DType::kF32, {0, 4}));
  t.emplace_back("layer.c.weight", *Tensor::CopyOf(c.weights[2].second.view()));
  // Three bytes before the next tensor leave it misaligned in the mapping.
  t.emplace_back("pad", *Tensor::Zeros(DType::kU8, {3}));
  t.emplace_back("misaligned.weight",
                 *Tensor::CopyOf(c.weights[3].second.view()));
  WriteTensors(c.path, std::move(t));
  return c;
}

struct ArgsCase {
  std::vector<std::string> flags;
  QuantizationArgs args;  // what the flags mean
};

std::vector<ArgsCase> ArgsCases() {
  std::vector<ArgsCase> cases;
  for (const char* scheme :
       {"W8A16", "W4A16_ASYM", "FP8", "FP8_DYNAMIC", "FP8_BLOCK", "NVFP4"}) {
    cases.push_back({{absl::StrCat("--scheme=", scheme)},
                     *QuantizationArgsFromScheme(scheme)});
  }
  {
    const std::string json =
        R"({"num_bits":4,"strategy":"group","group_size":16,"symmetric":false})";
    QuantizationArgs args = *ParseQuantizationArgs(json);
    args.observer = "mse";
    args.observer_kwargs = {{"maxshrink", 0.5}, {"grid", 20}};
    cases.push_back({{"--args=" + json, "--observer=MSE",
                      R"(--observer_kwargs={"maxshrink":0.5,"grid":20})"},
                     args});
  }
  {
    QuantizationArgs args = *QuantizationArgsFromScheme("NVFP4");
    args.observer = "memoryless_mse";
    cases.push_back({{"--scheme=nvfp4", "--observer=memoryless_mse"}, args});
  }
  {
    const std::string json =
        R"({"num_bits":8,"strategy":"block","block_structure":"4x16","observer":"static_minmax"})";
    cases.push_back({{"--args=" + json}, *ParseQuantizationArgs(json)});
  }
  return cases;
}

TEST(CalibrateTest, OutputEqualsTheObserverApi) {
  const std::string dir = NewTempDir();
  const TestCheckpoint c = MakeTestCheckpoint(dir);
  for (const ArgsCase& ac : ArgsCases()) {
    SCOPED_TRACE(absl::StrJoin(ac.flags, " "));
    const std::string out = dir + "/qp.safetensors";
    std::vector<std::string> args = ac.flags;
    args.push_back("--input=" + c.path);
    args.push_back("--output=" + out);
    args.push_back("--threads=2");
    ToolRun run = RunTool(Calibrate(), args);
    ASSERT_EQ(run.exit_code, 0) << Describe(run);
    std::vector<std::pair<std::string, Tensor>> expected;
    for (const auto& [name, x] : c.weights) {
      for (auto& e : ExpectedWeightQParams(name, x.view(), ac.args,
                                           NonFinitePolicy::kError)) {
        expected.push_back(std::move(e));
      }
      EXPECT_THAT(run.out, HasSubstr(name));
    }
    ExpectQParamsFile(out, expected, ac.args);
    // Selected but not observed: 1-D, integer and empty tensors.
    EXPECT_THAT(run.out, HasSubstr("layer.norm.weight (BF16 [40])"));
    EXPECT_THAT(run.out, HasSubstr("ids.weight (I32 [2, 2])"));
    EXPECT_THAT(run.out, HasSubstr("empty.weight (empty [0, 4]"));
    EXPECT_THAT(run.out, Not(HasSubstr("layer.a.bias")));
    // stderr is not a terminal: no progress bar.
    EXPECT_EQ(run.err.find('\r'), std::string::npos) << run.err;
  }
}

TEST(CalibrateTest, TargetsAndIgnoreUseRegexSearch) {
  const std::string dir = NewTempDir();
  const TestCheckpoint c = MakeTestCheckpoint(dir);
  const std::string out = dir + "/qp.safetensors";
  // "layer\.[ab]" matches inside the names (search, not full match); the
  // ignore pattern then drops layer.b.
  ToolRun run = RunTool(Calibrate(),
                        {"--input=" + c.path, "--output=" + out,
                         "--scheme=W8A16", R"(--targets=layer\.[ab])",
                         R"(--ignore=\.b\.)"});
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  const QuantizationArgs args = *QuantizationArgsFromScheme("W8A16");
  std::vector<std::pair<std::string, Tensor>> expected =
      ExpectedWeightQParams("layer.a.weight", c.weights[0].second.view(), args,
                            NonFinitePolicy::kError);
  ExpectQParamsFile(out, expected, args);
  // layer.a.bias is 1-D: selected by the pattern but not observed.
  EXPECT_THAT(run.out, HasSubstr("layer.a.bias (F32 [8])"));
}

TEST(CalibrateTest, AllowNonfiniteSkipsNan) {
  const std::string dir = NewTempDir();
  std::vector<float> v(32);
  for (int i = 0; i < 32; ++i) v[i] = 0.1f * (i - 13);
  v[9] = std::numeric_limits<float>::quiet_NaN();
  v[20] = std::numeric_limits<float>::infinity();
  const std::string in = dir + "/nan.safetensors";
  std::vector<std::pair<std::string, Tensor>> t;
  t.emplace_back("bad.weight", F32({4, 8}, v));
  WriteTensors(in, std::move(t));
  const std::string out = dir + "/qp.safetensors";
  ToolRun run = RunTool(Calibrate(), {"--input=" + in, "--output=" + out,
                                      "--scheme=NVFP4", "--allow_nonfinite"});
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  const QuantizationArgs args = *QuantizationArgsFromScheme("NVFP4");
  Tensor x = F32({4, 8}, v);
  ExpectQParamsFile(out,
                    ExpectedWeightQParams("bad.weight", x.view(), args,
                                          NonFinitePolicy::kSkip),
                    args);
}

TEST(CalibrateTest, BundledSampleWritesIntoTheWorkingDirectory) {
  const std::string cwd = NewTempDir();
  ToolRun run = RunTool(Calibrate(), {}, cwd, {{"BUILD_WORKING_DIRECTORY", ""}});
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  EXPECT_THAT(run.out, HasSubstr("input     the bundled sample checkpoint (//tools:sample_model)"));
  EXPECT_THAT(run.out, HasSubstr("scheme W4A16"));
  EXPECT_THAT(run.out, HasSubstr("model.layers.1.mlp.experts.3.down_proj.weight"));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(cwd + "/qparams.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsEntry* scale =
      (*file)->Find("model.layers.0.self_attn.q_proj.weight_scale");
  ASSERT_NE(scale, nullptr);
  EXPECT_EQ(scale->dtype, DType::kBF16);
  EXPECT_EQ(ShapeToString(scale->shape), "[256, 2]");  // group 128 of 256
  const SafetensorsEntry* zp =
      (*file)->Find("model.layers.0.self_attn.q_proj.weight_zero_point");
  ASSERT_NE(zp, nullptr);
  EXPECT_EQ(zp->dtype, DType::kI8);
  // Only qparams: no bias, norm or other tensor of the checkpoint.
  for (const SafetensorsEntry& e : (*file)->entries()) {
    EXPECT_TRUE(absl::EndsWith(e.name, ".weight_scale") ||
                absl::EndsWith(e.name, ".weight_zero_point"))
        << e.name;
  }
  EXPECT_EQ((*file)->entries().size(), 2u * 26u);

  // Under `bazel run` relative paths are those of the invoking directory.
  const std::string invoking = NewTempDir();
  run = RunTool(Calibrate(), {"--output=sub.safetensors", "--scheme=FP8"}, cwd,
                {{"BUILD_WORKING_DIRECTORY", invoking}});
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  EXPECT_TRUE(FileExists(invoking + "/sub.safetensors"));
  EXPECT_FALSE(FileExists(cwd + "/sub.safetensors"));
}

// 64-bit FNV-1a.
uint64_t Fnv1a(absl::Span<const uint8_t> bytes) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (uint8_t b : bytes) {
    h ^= b;
    h *= 0x100000001B3ull;
  }
  return h;
}

TEST(CalibrateTest, BundledSampleIsDeterministic) {
  // The generator uses its own PRNG and exact bf16 rounding: these bytes
  // must be the same on every platform and compiler.
  const std::string path =
      ToolPath("samples/sample_model.safetensors");
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->entries().size(), 33u);
  EXPECT_LE((*file)->file_size(), 4 << 20);
  for (const SafetensorsEntry& e : (*file)->entries()) {
    EXPECT_EQ(e.dtype, DType::kBF16) << e.name;
  }
  EXPECT_EQ(Fnv1a((*file)->data_region()), 0xfc3d67b38ab4bece)
      << std::hex << Fnv1a((*file)->data_region());
}

// Both tools replace Highway's timer measurement at load with a cheaper one
// (tools/hwy_timer_resolution.cc, 4.6 ms per process here): libhwy.so's
// call must bind to the tool's definition, which the tool must export.
TEST(ToolsTest, HighwayTimerMeasurementIsInterposed) {
#if defined(__x86_64__) || defined(__i386__)
  for (const std::string& tool : {Calibrate(), TokenCount()}) {
    ToolRun run = RunTool(tool, {"--help"}, "", {{"LD_DEBUG", "bindings"}});
    // ld.so: "binding file <from> [0] to <to> [0]: normal symbol `<name>'".
    std::string to;
    for (absl::string_view line : absl::StrSplit(run.err, '\n')) {
      if (!absl::StrContains(line, "_ZN3hwy8platform15TimerResolutionEv'") ||
          !absl::StrContains(line, "libhwy")) {
        continue;
      }
      const size_t at = line.find(" to ");
      ASSERT_NE(at, absl::string_view::npos) << line;
      to = std::string(line.substr(at + 4, line.find(" [", at) - at - 4));
    }
    EXPECT_EQ(to, tool) << "exit " << run.exit_code;
  }
#else
  GTEST_SKIP() << "the interposition is x86 only";
#endif
}

// -------------------------------------------------------------- token_count

class TokenCountTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir();
    // Batch 0: a 2-D, a 3-D, an empty activation, and a tensor that is not
    // an activation. Batch 1: a new module. Batch 2: a empty.
    b_[0] = dir_ + "/b0.safetensors";
    b_[1] = dir_ + "/b1.safetensors";
    b_[2] = dir_ + "/b2.safetensors";
    xs_["m.a"].push_back(RandomTensor(DType::kF32, {4, 8}, 21, 1.0f, true));
    xs_["m.a"].push_back(RandomTensor(DType::kF32, {6, 8}, 22));
    xs_["m.a"].push_back(*Tensor::Zeros(DType::kF32, {0, 8}));
    xs_["m.b"].push_back(RandomTensor(DType::kBF16, {2, 3, 8}, 23));
    xs_["m.b"].push_back(RandomTensor(DType::kBF16, {1, 5, 8}, 24));
    std::vector<std::pair<std::string, Tensor>> t0, t1, t2;
    t0.emplace_back("m.a.input", *Tensor::CopyOf(xs_["m.a"][0].view()));
    t0.emplace_back("m.b.input", *Tensor::CopyOf(xs_["m.b"][0].view()));
    t0.emplace_back("m.c.input", *Tensor::Zeros(DType::kF32, {0, 8}));
    t0.emplace_back("not_an_activation", *Tensor::Zeros(DType::kF32, {2}));
    xs_["m.d"].push_back(RandomTensor(DType::kF16, {3, 8}, 25, 4.0f));
    t1.emplace_back("m.d.input", *Tensor::CopyOf(xs_["m.d"][0].view()));
    t1.emplace_back("m.b.input", *Tensor::CopyOf(xs_["m.b"][1].view()));
    t1.emplace_back("m.a.input", *Tensor::CopyOf(xs_["m.a"][1].view()));
    t2.emplace_back("m.a.input", *Tensor::CopyOf(xs_["m.a"][2].view()));
    WriteTensors(b_[0], std::move(t0));
    WriteTensors(b_[1], std::move(t1));
    WriteTensors(b_[2], std::move(t2));
    inputs_ = "--inputs=" + b_[0] + "," + b_[1] + "," + b_[2];
  }

  // The stored input qparams of `module` after observing its batches the
  // way SPEC §11 says, through the Observer API.
  std::vector<std::pair<std::string, Tensor>> Expected(
      const std::string& module, const QuantizationArgs& args) {
    std::vector<std::pair<std::string, Tensor>> out;
    std::unique_ptr<Observer> observer = *CreateObserver("", args);
    std::optional<float> g;
    bool observed = false;
    for (const Tensor& x : xs_[module]) {
      if (x.numel() == 0) continue;
      observer->RecordObservedTokens(x.view());
      TensorView flat = *x.view().As2D();
      g.reset();
      if (args.strategy_or_tensor() == Strategy::kTensorGroup) {
        g = *observer->GetGParam(flat);
      }
      EXPECT_TRUE(observer->GetQParams(flat, nullptr, g).ok());
      observed = true;
    }
    if (!observed) return out;
    const QParams* qp = observer->qparams();
    Tensor scale = *Tensor::CopyOf(qp->scale.view());
    if (args.is_fp4()) {
      std::vector<float> values = testing_util::ToFloats(scale.view());
      Tensor f8 = *Tensor::Zeros(DType::kF8E4M3FN, scale.shape());
      for (size_t i = 0; i < values.size(); ++i) {
        f8.mutable_data_as<uint8_t>()[i] = FloatToE4m3fnBits(values[i]);
      }
      scale = std::move(f8);
    }
    out.emplace_back(module + ".input_scale", std::move(scale));
    out.emplace_back(module + ".input_zero_point",
                     *Tensor::CopyOf(qp->zero_point.view()));
    if (g.has_value()) {
      out.emplace_back(module + ".input_global_scale", F32({1}, {*g}));
    }
    return out;
  }

  std::string dir_;
  std::string b_[3];
  std::string inputs_;
  std::map<std::string, std::vector<Tensor>> xs_;
};

TEST_F(TokenCountTest, JsonIsTheOnlyStdout) {
  ToolRun run = RunTool(TokenCount(), {inputs_, "--scheme=FP8",
                                       "--format=json"});
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  // Sorted keys; null where never counted (3-D only, or always empty).
  EXPECT_EQ(run.out, "{\"m.a\":10,\"m.b\":null,\"m.c\":null,\"m.d\":3}\n");
  EXPECT_THAT(run.err, HasSubstr("not_an_activation"));
}

TEST_F(TokenCountTest, TableMarksModulesWithoutTokens) {
  ToolRun run = RunTool(TokenCount(), {inputs_, "--scheme=FP8"});
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  const size_t a = run.out.find("\nm.a "), b = run.out.find("\nm.b "),
               c = run.out.find("\nm.c "), d = run.out.find("\nm.d ");
  ASSERT_NE(a, std::string::npos) << run.out;
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_LT(c, d);
  auto line = [&](size_t at) {
    return run.out.substr(at + 1, run.out.find('\n', at + 1) - at - 1);
  };
  EXPECT_THAT(line(a), ::testing::MatchesRegex(R"(m\.a +10 +2/3)"));
  EXPECT_THAT(line(b), ::testing::MatchesRegex(
                           R"(m\.b +none +2/3 +\* no token counted.*)"));
  EXPECT_THAT(line(c), ::testing::MatchesRegex(
                           R"(m\.c +none +0/3 +\* never saw a token.*)"));
  EXPECT_THAT(line(d), ::testing::MatchesRegex(R"(m\.d +3 +1/3)"));
}

TEST_F(TokenCountTest, OutputEqualsTheObserverApi) {
  struct Case {
    std::vector<std::string> flags;
    QuantizationArgs args;
  };
  std::vector<Case> cases;
  cases.push_back({{"--scheme=FP8"}, *QuantizationArgsFromScheme("FP8")});
  {
    QuantizationArgs args = *QuantizationArgsFromScheme("NVFP4");
    args.observer = "memoryless_minmax";
    cases.push_back({{"--scheme=NVFP4", "--observer=memoryless_minmax"}, args});
  }
  {
    const std::string json =
        R"({"num_bits":8,"symmetric":false,"observer":"mse","observer_kwargs":{"averaging_constant":0.5}})";
    cases.push_back({{"--args=" + json}, *ParseQuantizationArgs(json)});
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrJoin(c.flags, " "));
    const std::string out = dir_ + "/qp.safetensors";
    std::vector<std::string> args = c.flags;
    args.push_back(inputs_);
    args.push_back("--output=" + out);
    ToolRun run = RunTool(TokenCount(), args);
    ASSERT_EQ(run.exit_code, 0) << Describe(run);
    std::vector<std::pair<std::string, Tensor>> expected;
    for (const char* m : {"m.a", "m.b", "m.d"}) {  // m.c: never observed
      for (auto& e : Expected(m, c.args)) expected.push_back(std::move(e));
    }
    ExpectQParamsFile(out, expected, c.args);
    EXPECT_THAT(run.err, HasSubstr("m.c"));
  }
}

TEST_F(TokenCountTest, MinTokensReportsAndExits3) {
  ToolRun run = RunTool(TokenCount(), {inputs_, "--scheme=FP8",
                                       "--min_tokens=4"});
  EXPECT_EQ(run.exit_code, 3) << Describe(run);
  EXPECT_THAT(run.out, HasSubstr("3 of 4 modules saw fewer than 4 tokens"));
  EXPECT_THAT(run.out, HasSubstr("\n  m.b  none\n  m.c  none\n  m.d  3\n"));
  EXPECT_THAT(run.out, Not(HasSubstr("\n  m.a ")));

  // JSON: the report goes to stderr; the output file is still written.
  const std::string out = dir_ + "/qp.safetensors";
  run = RunTool(TokenCount(), {inputs_, "--scheme=FP8", "--min_tokens=3",
                               "--format=json", "--output=" + out});
  EXPECT_EQ(run.exit_code, 3) << Describe(run);
  EXPECT_EQ(run.out, "{\"m.a\":10,\"m.b\":null,\"m.c\":null,\"m.d\":3}\n");
  EXPECT_THAT(run.err, HasSubstr("2 of 4 modules saw fewer than 3 tokens"));
  EXPECT_TRUE(FileExists(out));

  run = RunTool(TokenCount(), {"--inputs=" + b_[1], "--scheme=FP8",
                               "--min_tokens=3", "--format=json"});
  EXPECT_EQ(run.exit_code, 3) << Describe(run);  // m.b is 3-D: none
  run = RunTool(TokenCount(), {"--inputs=" + b_[0], "--scheme=FP8",
                               "--min_tokens=0"});
  EXPECT_EQ(run.exit_code, 0) << Describe(run);
  EXPECT_THAT(run.out, Not(HasSubstr("coverage")));
}

TEST_F(TokenCountTest, EveryModuleCoveredExits0) {
  const std::string in = dir_ + "/only_a.safetensors";
  std::vector<std::pair<std::string, Tensor>> t;
  t.emplace_back("m.a.input", RandomTensor(DType::kF32, {5, 8}, 31));
  WriteTensors(in, std::move(t));
  ToolRun run = RunTool(TokenCount(), {"--inputs=" + in + "," + in,
                                       "--scheme=FP8", "--min_tokens=10"});
  EXPECT_EQ(run.exit_code, 0) << Describe(run);
  EXPECT_THAT(run.out, HasSubstr("every module saw at least 10 tokens"));
}

TEST_F(TokenCountTest, BundledSampleBatches) {
  ToolRun run = RunTool(TokenCount(), {"--format=json", "--min_tokens=8"});
  EXPECT_EQ(run.exit_code, 3) << Describe(run);
  EXPECT_EQ(run.out,
            "{\"model.layers.0.mlp.down_proj\":35,"
            "\"model.layers.0.self_attn.o_proj\":null,"
            "\"model.layers.0.self_attn.q_proj\":35,"
            "\"model.layers.1.mlp.experts.0\":20,"
            "\"model.layers.1.mlp.experts.1\":12,"
            "\"model.layers.1.mlp.experts.2\":null,"
            "\"model.layers.1.mlp.experts.3\":3}\n");
}

class TokenCountErrorTest : public TokenCountTest {
 protected:
  ToolRun Expect(int code, std::vector<std::string> args) {
    const std::string out = dir_ + "/out.safetensors";
    WriteBytes(out, kSentinel);
    args.push_back("--output=" + out);
    const std::set<std::string> before = ListDir(dir_);
    ToolRun run = RunTool(TokenCount(), args);
    EXPECT_EQ(run.exit_code, code) << Describe(run);
    EXPECT_EQ(ReadBytes(out), kSentinel);
    EXPECT_EQ(ListDir(dir_), before);
    return run;
  }
};

TEST_F(TokenCountErrorTest, MalformedBatches) {
  for (const BadFile& bad : BadFiles(dir_)) {
    SCOPED_TRACE(bad.label);
    const std::string path = dir_ + "/" + bad.label + ".safetensors";
    WriteBytes(path, bad.bytes);
    ToolRun run = Expect(1, {"--inputs=" + b_[0] + "," + path,
                             "--scheme=FP8", "--format=json"});
    EXPECT_THAT(run.err, HasSubstr(path));
    for (const std::string& m : bad.mentions) {
      EXPECT_THAT(run.err, HasSubstr(m));
    }
    EXPECT_EQ(run.out, "");  // nothing on stdout, not even partial JSON
  }
  const std::string missing = dir_ + "/missing.safetensors";
  ToolRun run = Expect(1, {"--inputs=" + missing, "--scheme=FP8"});
  EXPECT_THAT(run.err, HasSubstr(missing));
}

TEST_F(TokenCountErrorTest, DataErrors) {
  struct Case {
    std::string label;
    std::string tensor;
    Tensor x;
    std::string mention;
  };
  std::vector<float> nan(16, 1.0f);
  nan[5] = std::numeric_limits<float>::quiet_NaN();
  std::vector<Case> cases;
  cases.push_back({"int", "m.a.input",
                   MakeTensor(DType::kI32, {2, 2}, {1, 2, 3, 4}),
                   "unsupported dtype I32"});
  cases.push_back({"scalar", "m.a.input", F32({}, {1.0f}), "0-d"});
  cases.push_back({"nan", "m.a.input", F32({2, 8}, nan), "[0, 5]"});
  for (Case& c : cases) {
    SCOPED_TRACE(c.label);
    const std::string path = dir_ + "/" + c.label + ".safetensors";
    std::vector<std::pair<std::string, Tensor>> t;
    t.emplace_back(c.tensor, std::move(c.x));
    WriteTensors(path, std::move(t));
    ToolRun run = Expect(1, {"--inputs=" + b_[0] + "," + path, "--scheme=FP8"});
    EXPECT_THAT(run.err, HasSubstr(path));
    EXPECT_THAT(run.err, HasSubstr("'" + c.tensor + "'"));
    EXPECT_THAT(run.err, HasSubstr(c.mention));
  }
  // Shape error: per-token-row units change with the batch length, which a
  // running statistic cannot follow (SPEC §7).
  ToolRun run = Expect(1, {inputs_, "--args={\"num_bits\":8,\"strategy\":"
                                    "\"channel\"}"});
  EXPECT_THAT(run.err, HasSubstr(b_[1]));
  EXPECT_THAT(run.err, HasSubstr("m.a.input"));
  EXPECT_THAT(run.err, HasSubstr("shape"));
}

TEST_F(TokenCountErrorTest, UsageErrors) {
  struct Case {
    std::vector<std::string> args;
    std::string mention;
  };
  const std::vector<Case> cases = {
      {{inputs_}, "--scheme"},
      {{inputs_, "--scheme=FP8", "--args={\"num_bits\":8}"}, "--scheme"},
      {{inputs_, "--scheme=NOPE"}, "--scheme"},
      {{inputs_, "--args=[1,2]"}, "--args"},
      {{inputs_, "--args={\"num_bits\":4,\"strategy\":\"group\"}"},
       "group_size"},
      {{inputs_, "--scheme=FP8", "--observer=nosuch"}, "--observer"},
      {{inputs_, "--scheme=FP8", "--observer_kwargs={\"nosuch\":1}"},
       "nosuch"},
      {{inputs_, "--scheme=FP8", "--format=xml"}, "--format"},
      {{inputs_, "--scheme=FP8", "--min_tokens=-1"}, "--min_tokens"},
      {{inputs_, "--scheme=FP8", "--min_tokens=ten"}, "--min_tokens"},
      {{"--inputs=" + b_[0] + ",,", "--scheme=FP8"}, "--inputs"},
      {{inputs_, "--scheme=FP8", "--backend=cuda"}, "--backend=cuda"},
      {{inputs_, "--scheme=FP8", "--nosuch_flag"}, "--nosuch_flag"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrJoin(c.args, " "));
    ToolRun run = Expect(2, c.args);
    EXPECT_THAT(run.err, HasSubstr(c.mention));
    EXPECT_THAT(run.err, HasSubstr("usage error"));
    EXPECT_EQ(run.out, "");
  }
}

TEST(ToolsTest, HelpExits0) {
  for (const std::string& tool : {Calibrate(), TokenCount()}) {
    ToolRun run = RunTool(tool, {"--help"});
    EXPECT_EQ(run.exit_code, 0) << Describe(run);
    EXPECT_THAT(run.out, HasSubstr("Exit codes"));
    EXPECT_THAT(run.out, HasSubstr("--observer_kwargs"));
  }
}

}  // namespace
}  // namespace qcal
