#include "core/safetensors.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <ostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "core/dtype.h"
#include "core/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qcal {
namespace {

using ::testing::HasSubstr;

// TempPath returns a path in the test's temporary directory that is unique to
// the running test.
std::string TempPath(absl::string_view suffix) {
  const auto* info = testing::UnitTest::GetInstance()->current_test_info();
  std::string name =
      absl::StrCat(info->test_suite_name(), ".", info->name(), suffix);
  std::replace(name.begin(), name.end(), '/', '_');
  return absl::StrCat(testing::TempDir(), name);
}

void WriteBytes(const std::string& path, absl::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), bytes.size());
  ASSERT_TRUE(out.good()) << path;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// TempFilesFor lists the writer's temporary files for `path` that are left in
// its directory.
std::vector<std::string> TempFilesFor(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir = path.substr(0, slash);
  const std::string prefix = absl::StrCat(path.substr(slash + 1), ".tmp.");
  std::vector<std::string> found;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return found;
  while (const dirent* e = ::readdir(d)) {
    if (absl::string_view(e->d_name).substr(0, prefix.size()) == prefix) {
      found.push_back(e->d_name);
    }
  }
  ::closedir(d);
  return found;
}

// LengthPrefix is the 8-byte little-endian header length field.
std::string LengthPrefix(uint64_t n) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i)
    bytes[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return bytes;
}

// RawFile builds a safetensors file byte by byte: length, header, data.
std::string RawFile(absl::string_view header, absl::string_view data = "") {
  return absl::StrCat(LengthPrefix(header.size()), header, data);
}

// Entry is one header entry as JSON text, e.g. "a": {F32, [2], [0, 8]}.
std::string Entry(absl::string_view name, absl::string_view dtype,
                  absl::string_view shape, int64_t begin, int64_t end) {
  return absl::StrCat("\"", name, "\":{\"dtype\":\"", dtype,
                      "\",\"shape\":", shape, ",\"data_offsets\":[", begin, ",",
                      end, "]}");
}

// Floats returns the little-endian bytes of `values`.
std::string Floats(std::vector<float> values) {
  return std::string(reinterpret_cast<const char*>(values.data()),
                     values.size() * sizeof(float));
}

std::string Bytes(const TensorView& view) {
  return std::string(static_cast<const char*>(view.data()), view.nbytes());
}

std::vector<int64_t> ToVector(absl::Span<const int64_t> s) {
  return std::vector<int64_t>(s.begin(), s.end());
}

// Filled makes a tensor whose bytes follow a pattern seeded by `seed` (0/1
// for BOOL), and returns those bytes too.
std::pair<Tensor, std::string> Filled(DType dtype, std::vector<int64_t> shape,
                                      int seed) {
  Tensor t = Tensor::Zeros(dtype, shape).value();
  auto* p = static_cast<uint8_t*>(t.mutable_data());
  for (int64_t i = 0; i < t.nbytes(); ++i) {
    p[i] = dtype == DType::kBool ? (i + seed) % 2
                                 : static_cast<uint8_t>(i * 31 + seed * 7 + 1);
  }
  std::string bytes(reinterpret_cast<const char*>(t.data()), t.nbytes());
  return {std::move(t), std::move(bytes)};
}

// ---------------------------------------------------------------------------
// Reading valid files

TEST(SafetensorsTest, RoundTripsEveryDTypeAndShapeKind) {
  const std::string path = TempPath(".safetensors");
  const std::vector<std::vector<int64_t>> shapes = {{},  {0},    {3, 0},
                                                    {5}, {2, 3}, {1, 2, 1, 3}};
  struct Expected {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::string bytes;
  };
  std::vector<Expected> expected;
  SafetensorsWriter writer(path);
  int seed = 0;
  for (DType dtype : kAllDTypes) {
    for (const auto& shape : shapes) {
      auto [tensor, bytes] = Filled(dtype, shape, ++seed);
      std::string name = absl::StrCat(DTypeName(dtype), ".", seed);
      expected.push_back({name, dtype, shape, bytes});
      ASSERT_TRUE(writer.Add(name, std::move(tensor)).ok());
    }
  }
  writer.SetMetadata("format", "pt");
  writer.SetMetadata("observer", "minmax");
  writer.SetMetadata("empty", "");
  ASSERT_TRUE(writer.Finish().ok());

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsFile& f = **file;
  EXPECT_EQ(f.path(), path);
  EXPECT_EQ(f.header_size() % 8, 0);
  ASSERT_EQ(f.entries().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const SafetensorsEntry& e = f.entries()[i];
    SCOPED_TRACE(expected[i].name);
    EXPECT_EQ(e.name, expected[i].name);
    EXPECT_EQ(e.dtype, expected[i].dtype);
    EXPECT_EQ(ToVector(e.shape), expected[i].shape);
    auto view = f.Get(e.name);
    ASSERT_TRUE(view.ok()) << view.status();
    EXPECT_EQ(view->dtype(), expected[i].dtype);
    EXPECT_EQ(ToVector(view->shape()), expected[i].shape);
    EXPECT_EQ(view->rank(), static_cast<int>(expected[i].shape.size()));
    EXPECT_EQ(Bytes(*view), expected[i].bytes);
    EXPECT_EQ(view->data(), f.data_region().data() + e.begin);
  }
  EXPECT_EQ(f.metadata(),
            (std::map<std::string, std::string>{
                {"empty", ""}, {"format", "pt"}, {"observer", "minmax"}}));
}

TEST(SafetensorsTest, KeepsHeaderOrderAndViewsPointIntoTheMapping) {
  const std::string path = TempPath(".safetensors");
  // Key order z, a, m differs from both the alphabetical and the offset
  // order (a, m, z).
  const std::string header =
      absl::StrCat("{", Entry("z", "F32", "[2]", 12, 20), ",",
                   "\"__metadata__\":{\"b\":\"2\",\"a\":\"1\"},",
                   Entry("a", "F32", "[1, 2]", 0, 8), ",",
                   Entry("m", "I32", "[]", 8, 12), "}");
  const std::string data =
      absl::StrCat(Floats({1.5f, -2.0f}), std::string("\x07\x00\x00\x00", 4),
                   Floats({3.25f, 1e-3f}));
  WriteBytes(path, RawFile(header, data));

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsFile& f = **file;
  std::vector<std::string> names;
  for (const auto& e : f.entries()) names.push_back(e.name);
  EXPECT_EQ(names, (std::vector<std::string>{"z", "a", "m"}));
  EXPECT_EQ(f.file_size(), static_cast<int64_t>(8 + header.size() + 20));
  EXPECT_EQ(f.header_size(), static_cast<int64_t>(header.size()));
  EXPECT_EQ(f.data_region().size(), 20u);
  EXPECT_EQ(f.metadata(),
            (std::map<std::string, std::string>{{"a", "1"}, {"b", "2"}}));

  const SafetensorsEntry* z = f.Find("z");
  ASSERT_NE(z, nullptr);
  EXPECT_EQ(z->begin, 12);
  EXPECT_EQ(z->end, 20);
  EXPECT_EQ(f.Find("nope"), nullptr);

  for (const auto& e : f.entries()) {
    TensorView view = f.View(e);
    EXPECT_EQ(view.data(), f.data_region().data() + e.begin) << e.name;
    EXPECT_TRUE(view.is_contiguous());
  }
  // Copy before reading typed values: the data region need not be aligned.
  auto a = Tensor::CopyOf(f.Get("a").value()).value();
  EXPECT_EQ(a.data_as<float>()[0], 1.5f);
  EXPECT_EQ(a.data_as<float>()[1], -2.0f);
  auto m = Tensor::CopyOf(f.Get("m").value()).value();
  EXPECT_EQ(m.rank(), 0);
  EXPECT_EQ(m.data_as<int32_t>()[0], 7);
  auto zt = Tensor::CopyOf(f.Get("z").value()).value();
  EXPECT_EQ(zt.data_as<float>()[1], 1e-3f);
}

TEST(SafetensorsTest, EmptyHeaderAndWhitespacePadding) {
  const std::string path = TempPath(".safetensors");
  WriteBytes(path, RawFile("{}      "));
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->entries().empty());
  EXPECT_TRUE((*file)->metadata().empty());
  EXPECT_TRUE((*file)->data_region().empty());
}

TEST(SafetensorsTest, EmptyTensorsMayShareAnyOffset) {
  const std::string path = TempPath(".safetensors");
  const std::string header = absl::StrCat(
      "{", Entry("e0", "F32", "[0]", 0, 0), ",", Entry("a", "F32", "[1]", 0, 4),
      ",", Entry("e4", "BF16", "[2, 0]", 4, 4), ",",
      Entry("b", "U8", "[2]", 4, 6), ",", Entry("e6", "I64", "[0, 3]", 6, 6),
      "}");
  WriteBytes(path, RawFile(header, "abcdef"));
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto e6 = (*file)->Get("e6");
  ASSERT_TRUE(e6.ok());
  EXPECT_TRUE(e6->empty());
  EXPECT_EQ(Bytes((*file)->Get("b").value()), "ef");
}

TEST(SafetensorsTest, MisalignedDataIsReportedAndCopiable) {
  const std::string path = TempPath(".safetensors");
  // Pad the header so that the data region starts at an odd byte of the
  // page-aligned mapping: F32 data there is misaligned.
  std::string header = absl::StrCat("{", Entry("w", "F32", "[2]", 0, 8), "}");
  while ((8 + header.size()) % 4 != 1) header.push_back(' ');
  WriteBytes(path, RawFile(header, Floats({0.5f, 4.0f})));
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  TensorView view = (*file)->Get("w").value();
  EXPECT_FALSE(IsAlignedFor(view));
  Tensor copy = Tensor::CopyOf(view).value();
  EXPECT_TRUE(IsAlignedFor(copy.view()));
  EXPECT_EQ(copy.data_as<float>()[0], 0.5f);
  EXPECT_EQ(copy.data_as<float>()[1], 4.0f);
}

TEST(SafetensorsTest, WriterOutputIsAlignedWhenSizesAllow) {
  const std::string path = TempPath(".safetensors");
  std::vector<std::pair<std::string, Tensor>> tensors;
  tensors.emplace_back("a", Filled(DType::kI64, {3}, 1).first);
  tensors.emplace_back("b", Filled(DType::kF32, {3}, 2).first);
  tensors.emplace_back("c", Filled(DType::kF16, {2}, 3).first);
  ASSERT_TRUE(WriteSafetensors(path, std::move(tensors)).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  for (const auto& e : (*file)->entries()) {
    EXPECT_TRUE(IsAlignedFor((*file)->View(e))) << e.name;
  }
}

TEST(SafetensorsTest, GetAndReleasePagesOfAMissingTensorNameFileAndTensor) {
  const std::string path = TempPath(".safetensors");
  WriteBytes(
      path,
      RawFile(absl::StrCat("{", Entry("a", "U8", "[1]", 0, 1), "}"), "x"));
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto missing = (*file)->Get("b.weight");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr(path));
  EXPECT_THAT(missing.status().message(), HasSubstr("\"b.weight\""));
  absl::Status release = (*file)->ReleasePages("b.weight");
  EXPECT_EQ(release.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(release.message(), HasSubstr(path));
}

TEST(SafetensorsTest, ReleasePagesKeepsViewsReadable) {
  const std::string path = TempPath(".safetensors");
  // Two tensors larger than a page, so that whole pages are dropped.
  auto [big, big_bytes] = Filled(DType::kF32, {4096}, 1);
  auto [small, small_bytes] = Filled(DType::kI8, {3}, 2);
  SafetensorsWriter writer(path);
  ASSERT_TRUE(writer.Add("big", std::move(big)).ok());
  ASSERT_TRUE(writer.Add("small", std::move(small)).ok());
  ASSERT_TRUE(writer.Add("empty", Tensor()).ok());
  ASSERT_TRUE(writer.Finish().ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  TensorView view = (*file)->Get("big").value();
  EXPECT_EQ(Bytes(view), big_bytes);
  EXPECT_TRUE((*file)->ReleasePages("big").ok());
  EXPECT_TRUE((*file)->ReleasePages("small").ok());
  EXPECT_TRUE((*file)->ReleasePages("empty").ok());
  EXPECT_EQ(Bytes(view), big_bytes);
  EXPECT_EQ(Bytes((*file)->Get("small").value()), small_bytes);
}

TEST(SafetensorsTest, NamesAndMetadataNeedingEscapesRoundTrip) {
  const std::string path = TempPath(".safetensors");
  const std::vector<std::string> names = {"quote\"d",
                                          "back\\slash",
                                          "tab\tnew\nline\r",
                                          std::string("ctl\x01\x1f", 5),
                                          "caf\xc3\xa9",
                                          "\xe6\x97\xa5\xe6\x9c\xac",
                                          "\xf0\x9f\x99\x82",
                                          "",
                                          "/"};
  SafetensorsWriter writer(path);
  int seed = 0;
  for (const auto& name : names) {
    ASSERT_TRUE(writer.Add(name, Filled(DType::kU8, {2}, ++seed).first).ok())
        << name;
  }
  writer.SetMetadata("args", R"({"num_bits": 8, "strategy": "channel"})");
  writer.SetMetadata("k\"\\", "v\n\xc3\xa9");
  ASSERT_TRUE(writer.Finish().ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->entries().size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ((*file)->entries()[i].name, names[i]);
  }
  EXPECT_EQ((*file)->metadata().at("args"),
            R"({"num_bits": 8, "strategy": "channel"})");
  EXPECT_EQ((*file)->metadata().at("k\"\\"), "v\n\xc3\xa9");
}

TEST(SafetensorsTest, ReadsUnicodeEscapesInTheHeader) {
  const std::string path = TempPath(".safetensors");
  WriteBytes(
      path,
      RawFile(absl::StrCat(
                  "{", Entry("\\u00e9\\ud83d\\ude42", "U8", "[1]", 0, 1), "}"),
              "x"));
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->entries()[0].name, "\xc3\xa9\xf0\x9f\x99\x82");
}

// ---------------------------------------------------------------------------
// Limits

TEST(SafetensorsTest, LimitsApply) {
  const std::string path = TempPath(".safetensors");
  const std::string header = absl::StrCat(
      "{", Entry("a", "U8", "[1]", 0, 1), ",", Entry("b", "U8", "[1]", 1, 2),
      ",", Entry("c", "U8", "[1]", 2, 3), "}");
  WriteBytes(path, RawFile(header, "xyz"));
  ASSERT_TRUE(SafetensorsFile::Open(path).ok());

  SafetensorsLimits tensors;
  tensors.max_tensors = 2;
  auto too_many = SafetensorsFile::Open(path, tensors);
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_many.status().message(), HasSubstr(path));
  EXPECT_THAT(too_many.status().message(), HasSubstr("more than 2 tensors"));
  tensors.max_tensors = 3;
  EXPECT_TRUE(SafetensorsFile::Open(path, tensors).ok());

  SafetensorsLimits depth;
  depth.max_json_depth = 2;  // a valid header needs 3 (header, entry, shape)
  auto too_deep = SafetensorsFile::Open(path, depth);
  EXPECT_EQ(too_deep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_deep.status().message(), HasSubstr("deeper than 2"));
  depth.max_json_depth = 3;
  EXPECT_TRUE(SafetensorsFile::Open(path, depth).ok());

  SafetensorsLimits bytes;
  bytes.max_header_bytes = static_cast<int64_t>(header.size()) - 1;
  auto too_long = SafetensorsFile::Open(path, bytes);
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_long.status().message(), HasSubstr("exceeds the limit"));
  bytes.max_header_bytes = static_cast<int64_t>(header.size());
  EXPECT_TRUE(SafetensorsFile::Open(path, bytes).ok());
}

// ---------------------------------------------------------------------------
// Files that cannot be opened

TEST(SafetensorsTest, NonexistentFile) {
  const std::string path = TempPath(".does_not_exist");
  auto file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(file.status().message(), HasSubstr(path));
  EXPECT_THAT(file.status().message(), HasSubstr("No such file or directory"));
}

TEST(SafetensorsTest, DirectoryIsNotAFile) {
  const std::string path = TempPath(".dir");
  ASSERT_EQ(::mkdir(path.c_str(), 0755), 0);
  auto file = SafetensorsFile::Open(path);
  EXPECT_FALSE(file.ok());
  EXPECT_THAT(file.status().message(), HasSubstr(path));
}

// ---------------------------------------------------------------------------
// Malformed files: one case each. Every error must name the file, and the
// tensor where there is one.

struct BadCase {
  std::string name;
  std::string bytes;
  absl::StatusCode code;
  std::vector<std::string> substrings;
};

std::string Header(std::vector<std::string> entries) {
  return absl::StrCat("{", absl::StrJoin(entries, ","), "}");
}

std::vector<BadCase> BadCases() {
  using C = absl::StatusCode;
  const C kInvalid = C::kInvalidArgument;
  const C kDataLoss = C::kDataLoss;
  const std::string four(4, 'x');
  const std::string eight(8, 'x');
  const std::string twelve(12, 'x');
  const std::string a4 = Entry("a", "F32", "[1]", 0, 4);
  std::string deep_objects;
  for (int i = 0; i < 100000; ++i) deep_objects += "{\"a\":";
  return {
      // Length field.
      {"Empty", "", kDataLoss, {"empty"}},
      {"FiveBytes",
       std::string("\x10\0\0\0\0", 5),
       kDataLoss,
       {"truncated", "5 bytes"}},
      {"HeaderLongerThanFile",
       LengthPrefix(100) + "{}",
       kDataLoss,
       {"truncated", "header length 100", "only 2 bytes"}},
      {"HeaderLength4GiB",
       LengthPrefix(uint64_t{1} << 32) + "{}",
       kInvalid,
       {"header length 4294967296", "exceeds the limit of 100000000"}},
      {"HeaderLengthMaxUint64",
       LengthPrefix(~uint64_t{0}) + "{}",
       kInvalid,
       {"header length 18446744073709551615"}},
      // JSON syntax.
      {"ZeroLengthHeader", RawFile(""), kInvalid, {"not valid JSON"}},
      {"NotJson", RawFile("safetensors?"), kInvalid, {"not valid JSON"}},
      {"TruncatedJson",
       RawFile("{\"a\":{\"dtype\":"),
       kInvalid,
       {"not valid JSON"}},
      {"GarbageAfterObject", RawFile("{} {}"), kInvalid, {"not valid JSON"}},
      {"Comment", RawFile("{/* x */}"), kInvalid, {"not valid JSON"}},
      {"InvalidUtf8",
       RawFile("{\"\xff\xfe\":1}"),
       kInvalid,
       {"not valid JSON"}},
      // nlohmann's lexer would stop at the NUL and ignore the rest.
      {"NulAfterObject",
       RawFile(std::string("{}\0{\"x\"", 6)),
       kInvalid,
       {"not valid JSON", "NUL byte at header offset 2"}},
      {"NulInString",
       RawFile(std::string("{\"a\0\":1}", 8)),
       kInvalid,
       {"not valid JSON", "NUL byte"}},
      {"DeepArrays",
       RawFile(std::string(100000, '[')),
       kInvalid,
       {"nested deeper than 32 levels"}},
      {"DeepObjects",
       RawFile(deep_objects),
       kInvalid,
       {"nested deeper than 32 levels"}},
      {"DeepInsideAnEntry",
       RawFile("{\"a\":{\"shape\":" + std::string(100, '[')),
       kInvalid,
       {"nested deeper than 32 levels"}},
      // Header structure.
      {"JsonArray",
       RawFile("[]"),
       kInvalid,
       {"header is an array", "not a JSON object"}},
      {"JsonNumber", RawFile("42"), kInvalid, {"not a JSON object"}},
      {"JsonString", RawFile("\"{}\""), kInvalid, {"not a JSON object"}},
      {"DuplicateTensorNames",
       RawFile(Header({Entry("w", "F32", "[1]", 0, 4),
                       Entry("w", "F32", "[1]", 4, 8)}),
               eight),
       kInvalid,
       {"tensor \"w\"", "duplicate tensor name"}},
      {"EntryNotAnObject",
       RawFile("{\"w\":[0,4]}", four),
       kInvalid,
       {"tensor \"w\"", "entry is an array, not an object"}},
      {"EntryNull",
       RawFile("{\"w\":null}"),
       kInvalid,
       {"tensor \"w\"", "entry is null"}},
      {"MissingDtype",
       RawFile("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", four),
       kInvalid,
       {"tensor \"w\"", "missing \"dtype\""}},
      {"MissingShape",
       RawFile("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", four),
       kInvalid,
       {"tensor \"w\"", "missing \"shape\""}},
      {"MissingDataOffsets",
       RawFile("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}"),
       kInvalid,
       {"tensor \"w\"", "missing \"data_offsets\""}},
      {"UnknownKeyInEntry",
       RawFile("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],"
               "\"scale\":1}}",
               four),
       kInvalid,
       {"tensor \"w\"", "unknown key \"scale\""}},
      {"RepeatedKeyInEntry",
       RawFile("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],"
               "\"data_offsets\":[0,4]}}",
               four),
       kInvalid,
       {"tensor \"w\"", "key \"dtype\" appears twice"}},
      // dtype.
      {"UnknownDtypeF64",
       RawFile(Header({Entry("w", "F64", "[1]", 0, 8)}), eight),
       kInvalid,
       {"tensor \"w\"", "\"F64\""}},
      {"LowercaseDtype",
       RawFile(Header({Entry("w", "f32", "[1]", 0, 4)}), four),
       kInvalid,
       {"tensor \"w\"", "\"f32\""}},
      {"DtypeNotAString",
       RawFile("{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}",
               four),
       kInvalid,
       {"tensor \"w\"", "dtype is the number 4, not a string"}},
      // shape.
      {"ShapeNotAnArray",
       RawFile(Header({Entry("w", "F32", "4", 0, 16)}), eight + eight),
       kInvalid,
       {"tensor \"w\"", "shape is the number 4"}},
      {"NegativeDim",
       RawFile(Header({Entry("w", "F32", "[-1, 2]", 0, 0)})),
       kInvalid,
       {"tensor \"w\"", "negative value -1"}},
      {"NonIntegerDim",
       RawFile(Header({Entry("w", "F32", "[2.5]", 0, 8)}), eight),
       kInvalid,
       {"tensor \"w\"", "non-integer number 2.5"}},
      {"IntegralFloatDim",
       RawFile(Header({Entry("w", "F32", "[2.0]", 0, 8)}), eight),
       kInvalid,
       {"tensor \"w\"", "non-integer number 2.0"}},
      {"StringDim",
       RawFile(Header({Entry("w", "F32", "[\"2\"]", 0, 8)}), eight),
       kInvalid,
       {"tensor \"w\"", "shape holds the string \"2\""}},
      {"NullDim",
       RawFile(Header({Entry("w", "F32", "[null]", 0, 4)}), four),
       kInvalid,
       {"tensor \"w\"", "shape holds null"}},
      {"NestedDim",
       RawFile(Header({Entry("w", "F32", "[[1]]", 0, 4)}), four),
       kInvalid,
       {"tensor \"w\"", "shape holds an array"}},
      {"Rank9",
       RawFile(Header({Entry("w", "F32", "[1,1,1,1,1,1,1,1,1]", 0, 4)}), four),
       kInvalid,
       {"tensor \"w\"", "more than 8 dimensions"}},
      {"DimBeyondInt64",
       RawFile(Header({Entry("w", "U8", "[18446744073709551615]", 0, 0)})),
       kInvalid,
       {"tensor \"w\"", "18446744073709551615", "int64"}},
      {"ElementCountOverflow",
       RawFile(Header({Entry("w", "F32", "[4294967296, 4294967296]", 0, 0)})),
       kInvalid,
       {"tensor \"w\"", "too many elements"}},
      {"ByteSizeOverflow",
       RawFile(Header({Entry("w", "I64", "[2305843009213693952]", 0, 0)})),
       kInvalid,
       {"tensor \"w\"", "too large"}},
      // data_offsets.
      {"OneOffset",
       RawFile("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],"
               "\"data_offsets\":[4]}}",
               four),
       kInvalid,
       {"tensor \"w\"", "data_offsets has 1 elements, expected 2"}},
      {"ThreeOffsets",
       RawFile("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],"
               "\"data_offsets\":[0,4,4]}}",
               four),
       kInvalid,
       {"tensor \"w\"", "more than 2 elements"}},
      {"OffsetsNotAnArray",
       RawFile("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],"
               "\"data_offsets\":\"0-4\"}}",
               four),
       kInvalid,
       {"tensor \"w\"", "data_offsets is the string \"0-4\""}},
      {"NegativeOffset",
       RawFile(Header({Entry("w", "F32", "[1]", -4, 0)}), four),
       kInvalid,
       {"tensor \"w\"", "negative value -4"}},
      {"NonIntegerOffset",
       RawFile("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],"
               "\"data_offsets\":[0,4.0]}}",
               four),
       kInvalid,
       {"tensor \"w\"", "non-integer number 4.0"}},
      {"BeginAfterEnd",
       RawFile(Header({Entry("w", "F32", "[1]", 8, 4)}), eight),
       kInvalid,
       {"tensor \"w\"", "data_offsets [8, 4] have begin after end"}},
      {"OffsetsOutsideTheData",
       RawFile(Header({Entry("w", "F32", "[2]", 0, 8)}), four),
       kDataLoss,
       {"tensor \"w\"", "data_offsets [0, 8] extend past the end of the file",
        "holds 4 bytes"}},
      {"OffsetsNearInt64Max",
       RawFile(Header({Entry("w", "U8", "[1]", 9223372036854775806,
                             9223372036854775807)}),
               four),
       kDataLoss,
       {"tensor \"w\"", "extend past the end"}},
      {"SizeShapeMismatch",
       RawFile(Header({Entry("w", "F32", "[2]", 0, 4)}), four),
       kInvalid,
       {"tensor \"w\"", "needs 8 bytes", "span 4"}},
      // Layout of the data region.
      {"OverlappingTensors",
       RawFile(Header({Entry("a", "F32", "[2]", 0, 8),
                       Entry("b", "F32", "[2]", 4, 12)}),
               twelve),
       kInvalid,
       {"tensor \"b\"", "overlap tensor \"a\""}},
      {"SameOffsets",
       RawFile(Header({a4, Entry("b", "F32", "[1]", 0, 4)}), four),
       kInvalid,
       {"tensor \"b\"", "overlap tensor \"a\""}},
      {"EmptyTensorInsideAnother",
       RawFile(Header({Entry("a", "F32", "[2]", 0, 8),
                       Entry("e", "F32", "[0]", 4, 4)}),
               eight),
       kInvalid,
       {"tensor \"e\"", "overlap tensor \"a\""}},
      {"GapBetweenTensors",
       RawFile(Header({a4, Entry("b", "F32", "[1]", 8, 12)}), twelve),
       kInvalid,
       {"tensor \"b\"", "gap of 4 unused bytes", "after tensor \"a\""}},
      {"GapAtTheStart",
       RawFile(Header({Entry("a", "F32", "[1]", 4, 8)}), eight),
       kInvalid,
       {"tensor \"a\"", "gap of 4", "start of the data region"}},
      {"TrailingBytes",
       RawFile(Header({a4}), eight),
       kInvalid,
       {"4 trailing bytes"}},
      {"TrailingBytesWithoutTensors",
       RawFile("{}", four),
       kInvalid,
       {"4 trailing bytes"}},
      // __metadata__.
      {"MetadataNonStringValue",
       RawFile(Header({"\"__metadata__\":{\"step\":1}", a4}), four),
       kInvalid,
       {"__metadata__ value for key \"step\" is the number 1, not a string"}},
      {"MetadataNestedObject",
       RawFile(Header({"\"__metadata__\":{\"args\":{\"x\":\"y\"}}", a4}), four),
       kInvalid,
       {"__metadata__ value for key \"args\" is an object"}},
      {"MetadataNotAnObject",
       RawFile(Header({"\"__metadata__\":[]", a4}), four),
       kInvalid,
       {"__metadata__ is an array, not an object"}},
      {"MetadataRepeated",
       RawFile(Header({"\"__metadata__\":{}", "\"__metadata__\":{}"})),
       kInvalid,
       {"__metadata__ appears twice"}},
      {"MetadataRepeatedKey",
       RawFile(Header({"\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}"})),
       kInvalid,
       {"key \"k\" appears twice"}},
  };
}

// PrintTo keeps gtest from dumping a BadCase's bytes.
void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class BadFileTest : public testing::TestWithParam<BadCase> {};

TEST_P(BadFileTest, IsRejectedWithAClearError) {
  const BadCase& c = GetParam();
  const std::string path = TempPath(".safetensors");
  WriteBytes(path, c.bytes);
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), c.code) << file.status();
  EXPECT_THAT(file.status().message(), HasSubstr(path));
  for (const auto& s : c.substrings) {
    EXPECT_THAT(file.status().message(), HasSubstr(s));
  }
}

// The in-memory entry point applies exactly the same rules.
TEST_P(BadFileTest, FromBytesRejectsItTheSameWay) {
  const BadCase& c = GetParam();
  auto file = SafetensorsFile::FromBytes(
      "mem.safetensors", std::vector<uint8_t>(c.bytes.begin(), c.bytes.end()));
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), c.code) << file.status();
  EXPECT_THAT(file.status().message(), HasSubstr("mem.safetensors"));
  for (const auto& s : c.substrings) {
    EXPECT_THAT(file.status().message(), HasSubstr(s));
  }
}

TEST(SafetensorsTest, FromBytesReadsAValidImage) {
  const std::string header = absl::StrCat(
      "{", Entry("a", "F32", "[2]", 0, 8), ",", Entry("b", "I8", "[1]", 8, 9),
      "}");
  const std::string raw = RawFile(header, Floats({1.5f, -2.0f}) + "\x07");
  auto file = SafetensorsFile::FromBytes(
      "mem", std::vector<uint8_t>(raw.begin(), raw.end()));
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->entries().size(), 2u);
  EXPECT_EQ(Bytes((*file)->Get("b").value()), "\x07");
  EXPECT_EQ(Bytes((*file)->Get("a").value()), Floats({1.5f, -2.0f}));
  // Owned memory is not a mapping: releasing pages must keep the bytes.
  EXPECT_TRUE((*file)->ReleasePages("a").ok());
  EXPECT_EQ(Bytes((*file)->Get("a").value()), Floats({1.5f, -2.0f}));
}

INSTANTIATE_TEST_SUITE_P(Safetensors, BadFileTest,
                         testing::ValuesIn(BadCases()),
                         [](const testing::TestParamInfo<BadCase>& info) {
                           return info.param.name;
                         });

TEST(SafetensorsTest, CorruptedHeadersNeverCrash) {
  // Every header byte replaced by characters that change the JSON structure,
  // and every truncation of the file: Open must return (usually an error),
  // never crash, throw or read out of bounds.
  const std::string path = TempPath(".safetensors");
  const std::string header = absl::StrCat(
      "{\"__metadata__\":{\"k\":\"v\"},", Entry("a", "F32", "[1, 2]", 0, 8),
      ",", Entry("b", "I8", "[]", 8, 9), "}");
  const std::string good = RawFile(header, std::string(9, '\x01'));
  int opened = 0;
  for (size_t i = 8; i < good.size() - 9; ++i) {
    for (char c : {'{', '}', '[', ']', '"', ',', ':', '-', '9', '\xff'}) {
      std::string bytes = good;
      bytes[i] = c;
      WriteBytes(path, bytes);
      opened += SafetensorsFile::Open(path).ok();
    }
  }
  for (size_t n = 0; n < good.size(); ++n) {
    WriteBytes(path, good.substr(0, n));
    EXPECT_FALSE(SafetensorsFile::Open(path).ok()) << n;
  }
  WriteBytes(path, good);
  EXPECT_TRUE(SafetensorsFile::Open(path).ok());
  // Some substitutions keep the file valid (e.g. a digit in a name).
  EXPECT_GT(opened, 0);
}

// ---------------------------------------------------------------------------
// Writer

TEST(SafetensorsWriterTest, WritesTheExpectedBytes) {
  const std::string path = TempPath(".safetensors");
  Tensor w = Tensor::Zeros(DType::kF32, {2}).value();
  w.mutable_data_as<float>()[0] = 1.0f;
  w.mutable_data_as<float>()[1] = -2.0f;
  Tensor s = Tensor::Zeros(DType::kI16, {}).value();
  s.mutable_data_as<int16_t>()[0] = 0x0102;
  SafetensorsWriter writer(path);
  ASSERT_TRUE(writer.Add("w", std::move(w)).ok());
  ASSERT_TRUE(writer.Add("s", std::move(s)).ok());
  writer.SetMetadata("k", "v");
  ASSERT_TRUE(writer.Finish().ok());

  const std::string json =
      "{\"__metadata__\":{\"k\":\"v\"},"
      "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
      "\"s\":{\"dtype\":\"I16\",\"shape\":[],\"data_offsets\":[8,10]}}";
  std::string header = json;
  header.append((8 - json.size() % 8) % 8, ' ');
  const std::string expected =
      absl::StrCat(LengthPrefix(header.size()), header,
                   std::string("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8),
                   std::string("\x02\x01", 2));
  EXPECT_EQ(ReadBytes(path), expected);
}

TEST(SafetensorsWriterTest, EmptyFile) {
  const std::string path = TempPath(".safetensors");
  ASSERT_TRUE(SafetensorsWriter(path).Finish().ok());
  EXPECT_EQ(ReadBytes(path), LengthPrefix(8) + "{}      ");
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->entries().empty());
}

TEST(SafetensorsWriterTest, ReplacesAnExistingFileOnSuccess) {
  const std::string path = TempPath(".safetensors");
  WriteBytes(path, "old contents");
  SafetensorsWriter writer(path);
  ASSERT_TRUE(writer.Add("a", Filled(DType::kBF16, {4}, 1).first).ok());
  // Nothing happens before Finish.
  EXPECT_EQ(ReadBytes(path), "old contents");
  EXPECT_TRUE(TempFilesFor(path).empty());
  ASSERT_TRUE(writer.Finish().ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->entries().size(), 1u);
  EXPECT_TRUE(TempFilesFor(path).empty());
}

TEST(SafetensorsWriterTest, PermissionsFollowTheUmask) {
  const std::string path = TempPath(".safetensors");
  const mode_t old = ::umask(027);
  absl::Status status = SafetensorsWriter(path).Finish();
  ::umask(old);
  ASSERT_TRUE(status.ok()) << status;
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
}

TEST(SafetensorsWriterTest, DuplicateNameIsRejectedAndNothingIsWritten) {
  const std::string path = TempPath(".safetensors");
  WriteBytes(path, "old contents");
  SafetensorsWriter writer(path);
  ASSERT_TRUE(writer.Add("a", Filled(DType::kF32, {1}, 1).first).ok());
  absl::Status dup = writer.Add("a", Filled(DType::kF32, {1}, 2).first);
  EXPECT_EQ(dup.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dup.message(), HasSubstr(path));
  EXPECT_THAT(dup.message(), HasSubstr("tensor \"a\" added twice"));
  // The error is sticky: Finish refuses to write a file missing a tensor.
  absl::Status finish = writer.Finish();
  EXPECT_EQ(finish.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(finish.message(), HasSubstr("nothing written"));
  EXPECT_THAT(finish.message(), HasSubstr("\"a\""));
  EXPECT_EQ(ReadBytes(path), "old contents");
  EXPECT_TRUE(TempFilesFor(path).empty());
}

TEST(SafetensorsWriterTest, ReservedAndInvalidNamesAreRejected) {
  const std::string path = TempPath(".safetensors");
  SafetensorsWriter writer(path);
  absl::Status reserved = writer.Add("__metadata__", Tensor());
  EXPECT_EQ(reserved.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(reserved.message(), HasSubstr("reserved"));
  absl::Status bad_utf8 = writer.Add("w\xc0\xaf", Tensor());  // overlong '/'
  EXPECT_EQ(bad_utf8.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_utf8.message(), HasSubstr("UTF-8"));
  EXPECT_FALSE(writer.Finish().ok());
  EXPECT_FALSE(Exists(path));
}

TEST(SafetensorsWriterTest, InvalidUtf8MetadataFailsFinish) {
  const std::string path = TempPath(".safetensors");
  for (const std::string bad :
       {"\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "\x80"}) {
    SafetensorsWriter writer(path);
    writer.SetMetadata("k", bad);
    absl::Status status = writer.Finish();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr("UTF-8"));
    EXPECT_FALSE(Exists(path));
  }
}

TEST(SafetensorsWriterTest, MissingDirectoryFailsCleanly) {
  const std::string dir = TempPath(".no_such_dir");
  const std::string path = dir + "/out.safetensors";
  SafetensorsWriter writer(path);
  ASSERT_TRUE(writer.Add("a", Filled(DType::kU8, {3}, 1).first).ok());
  absl::Status status = writer.Finish();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr(path));
  EXPECT_THAT(status.message(), HasSubstr("No such file or directory"));
  EXPECT_FALSE(Exists(dir));
}

TEST(SafetensorsWriterTest, FailedRenameRemovesTheTemporaryFile) {
  // The target is a non-empty directory: the temporary file is written and
  // synced, then rename fails. The directory must survive, the temporary file
  // must not.
  const std::string path = TempPath(".safetensors");
  ASSERT_EQ(::mkdir(path.c_str(), 0755), 0);
  WriteBytes(path + "/keep", "keep");
  SafetensorsWriter writer(path);
  ASSERT_TRUE(writer.Add("a", Filled(DType::kF16, {3}, 1).first).ok());
  absl::Status status = writer.Finish();
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr(path));
  EXPECT_THAT(status.message(), HasSubstr("cannot rename"));
  EXPECT_EQ(ReadBytes(path + "/keep"), "keep");
  EXPECT_TRUE(TempFilesFor(path).empty());
}

TEST(SafetensorsWriterTest, AddAndFinishAfterFinishFail) {
  const std::string path = TempPath(".safetensors");
  SafetensorsWriter writer(path);
  ASSERT_TRUE(writer.Finish().ok());
  EXPECT_EQ(writer.Add("a", Tensor()).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(writer.Finish().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SafetensorsWriterTest, LaterMetadataReplacesEarlier) {
  const std::string path = TempPath(".safetensors");
  SafetensorsWriter writer(path);
  writer.SetMetadata("observer", "mse");
  writer.SetMetadata("observer", "minmax");
  ASSERT_TRUE(writer.Finish().ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata(),
            (std::map<std::string, std::string>{{"observer", "minmax"}}));
}

TEST(SafetensorsWriterTest, WriteSafetensorsStopsAtTheFirstBadName) {
  const std::string path = TempPath(".safetensors");
  std::vector<std::pair<std::string, Tensor>> tensors;
  tensors.emplace_back("x", Tensor());
  tensors.emplace_back("x", Tensor());
  absl::Status status =
      WriteSafetensors(path, std::move(tensors), {{"a", "b"}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(Exists(path));
}

}  // namespace
}  // namespace qcal
