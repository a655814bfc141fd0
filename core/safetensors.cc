#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status_macros.h"
#include "nlohmann/json.hpp"

// Tensor data is stored little-endian and handed out as views into the
// mapping (and written from the tensors' own buffers) without byte swapping.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "qcal's safetensors I/O assumes a little-endian host"
#endif

namespace qcal {
namespace {

using Json = nlohmann::json;

constexpr int64_t kLengthFieldBytes = 8;
constexpr absl::string_view kMetadataKey = "__metadata__";
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

// Quote returns `s` in double quotes, cut to a readable length: header
// strings may be megabytes long.
std::string Quote(absl::string_view s) {
  constexpr size_t kMaxQuoted = 200;
  if (s.size() <= kMaxQuoted) return absl::StrCat("\"", s, "\"");
  return absl::StrCat("\"", s.substr(0, kMaxQuoted), "\"... (", s.size(),
                      " bytes)");
}

// IsValidUtf8 checks well-formed UTF-8 (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), which JSON text requires.
bool IsValidUtf8(absl::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int trailing;
    // The allowed range of the first continuation byte depends on the lead
    // byte; the later ones are always 0x80..0xBF.
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      trailing = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      trailing = 2;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // UTF-16 surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      trailing = 3;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return false;
    }
    if (end - p <= trailing) return false;
    if (p[1] < lo || p[1] > hi) return false;
    for (int i = 2; i <= trailing; ++i) {
      if (p[i] < 0x80 || p[i] > 0xBF) return false;
    }
    p += trailing + 1;
  }
  return true;
}

// AppendJsonString appends `s` (valid UTF-8) as a JSON string literal.
void AppendJsonString(absl::string_view s, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (c < 0x20) {
          out->append("\\u00");
          out->push_back(kHex[c >> 4]);
          out->push_back(kHex[c & 0xF]);
        } else {
          out->push_back(ch);
        }
    }
  }
  out->push_back('"');
}

// HeaderParser receives nlohmann's SAX events for the header and checks them
// against the safetensors schema as they arrive, so that neither deep nesting
// nor a huge header builds a DOM or recurses.
//
// Error precedence: a JSON syntax error or a nesting depth over the limit
// stops the parse at once and wins. The first schema error is remembered and
// the rest of the header is only scanned for syntax and depth (nothing more is
// stored), so that e.g. 100000 '[' are reported as too deep rather than as
// "not an object".
class HeaderParser final : public nlohmann::json_sax<Json> {
 public:
  HeaderParser(const std::string& path, int64_t data_size,
               const SafetensorsLimits& limits)
      : path_(path), data_size_(data_size), limits_(limits) {}

  // Result combines the parse outcome with the recorded errors, then checks
  // that the tensors tile the data region.
  absl::Status Result(bool parsed) {
    if (!fatal_.ok()) return fatal_;
    if (!schema_error_.ok()) return schema_error_;
    if (!parsed) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": header is not valid JSON"));
    }
    return CheckLayout();
  }

  std::vector<SafetensorsEntry>& entries() { return entries_; }
  absl::flat_hash_map<std::string, int64_t>& index() { return index_; }
  std::map<std::string, std::string>& metadata() { return metadata_; }

  // nlohmann::json_sax:
  bool null() override { return Scalar("null"); }
  bool boolean(bool value) override { return Scalar(value ? "true" : "false"); }
  bool number_integer(number_integer_t value) override {
    // nlohmann reports non-negative numbers through number_unsigned, so this
    // sees negative values (and "-0").
    if (skipping()) return true;
    if (depth_ == 3 && (field_ == Field::kShape || field_ == Field::kOffsets)) {
      if (value >= 0) return ArrayInteger(value);
      return Fail(TensorError(absl::StrCat(
          FieldName(field_), " holds the negative value ", value)));
    }
    return Fail(UnexpectedValue(depth_, absl::StrCat("the number ", value)));
  }
  bool number_unsigned(number_unsigned_t value) override {
    if (skipping()) return true;
    if (depth_ == 3 && (field_ == Field::kShape || field_ == Field::kOffsets)) {
      if (value <= static_cast<uint64_t>(kInt64Max)) {
        return ArrayInteger(static_cast<int64_t>(value));
      }
      return Fail(TensorError(absl::StrCat(FieldName(field_), " value ", value,
                                           " does not fit in int64")));
    }
    return Fail(UnexpectedValue(depth_, absl::StrCat("the number ", value)));
  }
  bool number_float(number_float_t /*value*/, const string_t& text) override {
    return Scalar(absl::StrCat("the non-integer number ", text));
  }
  bool string(string_t& value) override {
    if (skipping()) return true;
    if (depth_ == 2 && in_metadata_) {
      metadata_[meta_key_] = std::move(value);
      return true;
    }
    if (depth_ == 2 && field_ == Field::kDType) {
      absl::StatusOr<DType> dtype = DTypeFromName(value);
      if (!dtype.ok()) return Fail(TensorError(dtype.status().message()));
      dtype_ = *dtype;
      return true;
    }
    return Fail(
        UnexpectedValue(depth_, absl::StrCat("the string ", Quote(value))));
  }
  bool binary(binary_t& /*value*/) override { return Scalar("binary data"); }

  bool start_object(std::size_t /*elements*/) override {
    if (!Enter()) return false;
    if (skipping()) return true;
    if (depth_ == 1) return true;  // the header itself
    if (depth_ == 2) {
      if (!in_metadata_) StartEntry();
      return true;
    }
    return Fail(UnexpectedValue(depth_ - 1, "an object"));
  }
  bool start_array(std::size_t /*elements*/) override {
    if (!Enter()) return false;
    if (skipping()) return true;
    if (depth_ == 3 && !in_metadata_ &&
        (field_ == Field::kShape || field_ == Field::kOffsets)) {
      return true;
    }
    return Fail(UnexpectedValue(depth_ - 1, "an array"));
  }
  bool key(string_t& key) override {
    if (skipping()) return true;
    if (depth_ == 1) return TopLevelKey(std::move(key));
    if (depth_ == 2 && in_metadata_) {
      if (metadata_.count(key) != 0) {
        return Fail(absl::InvalidArgumentError(absl::StrCat(
            path_, ": ", kMetadataKey, " key ", Quote(key), " appears twice")));
      }
      meta_key_ = std::move(key);
      return true;
    }
    // depth_ == 2: a key inside a tensor entry.
    Field field = Field::kNone;
    bool* seen = nullptr;
    if (key == "dtype") {
      field = Field::kDType;
      seen = &has_dtype_;
    } else if (key == "shape") {
      field = Field::kShape;
      seen = &has_shape_;
    } else if (key == "data_offsets") {
      field = Field::kOffsets;
      seen = &has_offsets_;
    } else {
      return Fail(TensorError(absl::StrCat(
          "unknown key ", Quote(key),
          " (an entry has exactly \"dtype\", \"shape\", \"data_offsets\")")));
    }
    if (*seen) {
      return Fail(
          TensorError(absl::StrCat("key ", Quote(key), " appears twice")));
    }
    *seen = true;
    field_ = field;
    return true;
  }
  bool end_object() override {
    if (!skipping() && depth_ == 2 && !in_metadata_) FinishEntry();
    --depth_;
    return true;
  }
  bool end_array() override {
    if (!skipping() && depth_ == 3 && field_ == Field::kOffsets &&
        offsets_.size() != 2) {
      Fail(TensorError(absl::StrCat("data_offsets has ", offsets_.size(),
                                    " elements, expected 2")));
    }
    --depth_;
    return true;
  }
  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& ex) override {
    fatal_ = absl::InvalidArgumentError(
        absl::StrCat(path_, ": header is not valid JSON: ", ex.what()));
    return false;
  }

 private:
  // Field is the key of a tensor entry whose value is being read.
  enum class Field { kNone, kDType, kShape, kOffsets };

  static absl::string_view FieldName(Field field) {
    switch (field) {
      case Field::kDType:
        return "dtype";
      case Field::kShape:
        return "shape";
      case Field::kOffsets:
        return "data_offsets";
      case Field::kNone:
        break;
    }
    return "?";
  }

  bool skipping() const { return !schema_error_.ok(); }

  // Fail records the first schema error and keeps the parse going (see the
  // class comment).
  bool Fail(absl::Status status) {
    if (schema_error_.ok()) schema_error_ = std::move(status);
    return true;
  }

  absl::Status TensorError(absl::string_view message) const {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": tensor ", Quote(name_), ": ", message));
  }

  // Enter opens an array or object; false (stop) when too deep.
  bool Enter() {
    ++depth_;
    if (depth_ > limits_.max_json_depth) {
      fatal_ = absl::InvalidArgumentError(
          absl::StrCat(path_, ": header JSON is nested deeper than ",
                       limits_.max_json_depth, " levels"));
      return false;
    }
    return true;
  }

  bool Scalar(absl::string_view what) {
    if (skipping()) return true;
    return Fail(UnexpectedValue(depth_, what));
  }

  // UnexpectedValue describes a value `what` found where the schema wants
  // something else; `at` is the number of containers around the value.
  absl::Status UnexpectedValue(int at, absl::string_view what) const {
    if (at == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": header is ", what, ", not a JSON object"));
    }
    if (at == 1) {
      if (in_metadata_) {
        return absl::InvalidArgumentError(absl::StrCat(
            path_, ": ", kMetadataKey, " is ", what, ", not an object"));
      }
      return TensorError(absl::StrCat("entry is ", what, ", not an object"));
    }
    if (at == 2 && in_metadata_) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": ", kMetadataKey, " value for key ",
                       Quote(meta_key_), " is ", what, ", not a string"));
    }
    if (at == 2) {
      return TensorError(absl::StrCat(
          FieldName(field_), " is ", what, ", not ",
          field_ == Field::kDType ? "a string" : "an array of integers"));
    }
    return TensorError(absl::StrCat(FieldName(field_), " holds ", what,
                                    ", not a non-negative integer"));
  }

  bool TopLevelKey(std::string key) {
    if (key == kMetadataKey) {
      in_metadata_ = true;
      if (seen_metadata_) {
        return Fail(absl::InvalidArgumentError(
            absl::StrCat(path_, ": ", kMetadataKey, " appears twice")));
      }
      seen_metadata_ = true;
      return true;
    }
    in_metadata_ = false;
    name_ = std::move(key);
    if (index_.contains(name_)) {
      return Fail(TensorError("duplicate tensor name"));
    }
    if (static_cast<int64_t>(entries_.size()) >= limits_.max_tensors) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat(path_, ": header has more than ", limits_.max_tensors,
                       " tensors (the limit)")));
    }
    return true;
  }

  void StartEntry() {
    has_dtype_ = has_shape_ = has_offsets_ = false;
    field_ = Field::kNone;
    shape_.clear();
    offsets_.clear();
  }

  bool ArrayInteger(int64_t value) {
    if (field_ == Field::kShape) {
      if (static_cast<int64_t>(shape_.size()) >= kMaxRank) {
        return Fail(TensorError(absl::StrCat("shape has more than ", kMaxRank,
                                             " dimensions (the rank limit)")));
      }
      shape_.push_back(value);
      return true;
    }
    if (offsets_.size() >= 2) {
      return Fail(TensorError("data_offsets has more than 2 elements"));
    }
    offsets_.push_back(value);
    return true;
  }

  void FinishEntry() {
    for (const auto& [seen, field] :
         {std::pair{has_dtype_, "dtype"}, std::pair{has_shape_, "shape"},
          std::pair{has_offsets_, "data_offsets"}}) {
      if (!seen) {
        Fail(TensorError(absl::StrCat("missing \"", field, "\"")));
        return;
      }
    }
    absl::StatusOr<int64_t> bytes = CheckedByteSize(dtype_, shape_);
    if (!bytes.ok()) {
      Fail(TensorError(bytes.status().message()));
      return;
    }
    const int64_t begin = offsets_[0];
    const int64_t end = offsets_[1];
    const std::string offsets =
        absl::StrCat("data_offsets [", begin, ", ", end, "]");
    if (begin > end) {
      Fail(TensorError(absl::StrCat(offsets, " have begin after end")));
      return;
    }
    if (end > data_size_) {
      Fail(absl::DataLossError(absl::StrCat(
          path_, ": tensor ", Quote(name_), ": ", offsets,
          " extend past the end of the file (the data region holds ",
          data_size_, " bytes)")));
      return;
    }
    if (end - begin != *bytes) {
      Fail(TensorError(absl::StrCat(
          "shape ", ShapeToString(shape_), " of ", DTypeName(dtype_), " needs ",
          *bytes, " bytes but ", offsets, " span ", end - begin)));
      return;
    }
    index_.emplace(name_, static_cast<int64_t>(entries_.size()));
    entries_.push_back(SafetensorsEntry{name_, dtype_, shape_, begin, end});
  }

  // CheckLayout requires the tensors, sorted by offset, to cover the data
  // region exactly once: no overlap, no gap, nothing after the last one.
  absl::Status CheckLayout() const {
    std::vector<int64_t> order(entries_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      const SafetensorsEntry& x = entries_[a];
      const SafetensorsEntry& y = entries_[b];
      if (x.begin != y.begin) return x.begin < y.begin;
      if (x.end != y.end) return x.end < y.end;
      return a < b;
    });
    int64_t covered = 0;  // every byte before this belongs to a tensor
    const SafetensorsEntry* last = nullptr;
    for (int64_t i : order) {
      const SafetensorsEntry& e = entries_[i];
      if (e.begin < covered) {
        return absl::InvalidArgumentError(absl::StrCat(
            path_, ": tensor ", Quote(e.name), ": data_offsets [", e.begin,
            ", ", e.end, "] overlap tensor ", Quote(last->name), " [",
            last->begin, ", ", last->end, "]"));
      }
      if (e.begin > covered) {
        return absl::InvalidArgumentError(absl::StrCat(
            path_, ": tensor ", Quote(e.name), ": gap of ", e.begin - covered,
            " unused bytes before its data_offsets [", e.begin, ", ", e.end,
            "] (",
            last == nullptr ? std::string("start of the data region")
                            : absl::StrCat("after tensor ", Quote(last->name),
                                           " ending at ", last->end),
            "); tensors must tile the data region"));
      }
      // Empty tensors at `covered` do not advance it; keep the last tensor
      // with data for the messages.
      if (e.end > covered || last == nullptr) last = &e;
      covered = e.end;
    }
    if (covered != data_size_) {
      return absl::InvalidArgumentError(absl::StrCat(
          path_, ": ", data_size_ - covered,
          " trailing bytes after the last tensor (the data region holds ",
          data_size_, " bytes, the tensors cover ", covered, ")"));
    }
    return absl::OkStatus();
  }

  const std::string& path_;
  const int64_t data_size_;
  const SafetensorsLimits limits_;

  absl::Status fatal_;         // syntax or depth: parse stopped
  absl::Status schema_error_;  // first schema violation: now only scanning
  int depth_ = 0;              // open arrays and objects

  bool in_metadata_ = false;  // the current top-level key is __metadata__
  bool seen_metadata_ = false;
  std::string meta_key_;

  // The tensor entry being read.
  std::string name_;
  Field field_ = Field::kNone;
  bool has_dtype_ = false;
  bool has_shape_ = false;
  bool has_offsets_ = false;
  DType dtype_ = DType::kF32;
  Shape shape_;
  absl::InlinedVector<int64_t, 2> offsets_;

  std::vector<SafetensorsEntry> entries_;
  absl::flat_hash_map<std::string, int64_t> index_;
  std::map<std::string, std::string> metadata_;
};

// FileCloser closes a file descriptor when it goes out of scope.
class FileCloser {
 public:
  explicit FileCloser(int fd) : fd_(fd) {}
  FileCloser(const FileCloser&) = delete;
  FileCloser& operator=(const FileCloser&) = delete;
  ~FileCloser() { ::close(fd_); }

 private:
  int fd_;
};

// ReadFully reads exactly `size` bytes at `offset`.
absl::Status ReadFully(int fd, int64_t offset, void* out, int64_t size,
                       const std::string& path) {
  auto* p = static_cast<char*>(out);
  while (size > 0) {
    const ssize_t n = ::pread(fd, p, size, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", path));
    }
    if (n == 0) {
      return absl::DataLossError(
          absl::StrCat(path, ": file shrank while being read"));
    }
    p += n;
    offset += n;
    size -= n;
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// HeaderLength validates a file's size and its 8-byte length prefix against
// the limits and returns the header length N. It runs before anything is
// allocated or mapped.
absl::StatusOr<uint64_t> HeaderLength(const std::string& path, int64_t size,
                                      const uint8_t* prefix,
                                      const SafetensorsLimits& limits) {
  if (size == 0) {
    return absl::DataLossError(absl::StrCat(
        path,
        ": empty file (a safetensors file starts with an 8-byte header "
        "length)"));
  }
  if (size < kLengthFieldBytes) {
    return absl::DataLossError(
        absl::StrCat(path, ": truncated: ", size,
                     " bytes, fewer than the 8-byte header length"));
  }
  uint64_t header_size = 0;
  for (int i = kLengthFieldBytes - 1; i >= 0; --i) {
    header_size = (header_size << 8) | prefix[i];
  }
  // Compare in uint64 so that a length near 2^64 cannot wrap.
  const uint64_t limit =
      static_cast<uint64_t>(std::max<int64_t>(0, limits.max_header_bytes));
  if (header_size > limit) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header length ", header_size,
                     " exceeds the limit of ", limit, " bytes"));
  }
  const uint64_t after_length = static_cast<uint64_t>(size - kLengthFieldBytes);
  if (header_size > after_length) {
    return absl::DataLossError(absl::StrCat(
        path, ": truncated: header length ", header_size, " but only ",
        after_length, " bytes follow the length field"));
  }
  return header_size;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path, const SafetensorsLimits& limits) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat("cannot open safetensors file ", path));
  }
  // The mapping outlives the descriptor; close it on every way out.
  FileCloser closer(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot stat ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a regular file"));
  }
  const int64_t size = st.st_size;
  uint8_t prefix[kLengthFieldBytes] = {};
  if (size >= kLengthFieldBytes) {
    QCAL_RETURN_IF_ERROR(ReadFully(fd, 0, prefix, kLengthFieldBytes, path));
  }
  QCAL_ASSIGN_OR_RETURN(uint64_t header_size,
                        HeaderLength(path, size, prefix, limits));
  void* map =
      ::mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
  if (map == MAP_FAILED) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot mmap ", path));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->map_ =
      static_cast<const uint8_t*>(map);  // unmapped by ~SafetensorsFile
  file->mapped_ = true;
  file->path_ = path;
  file->file_size_ = size;
  file->header_size_ = static_cast<int64_t>(header_size);
  QCAL_RETURN_IF_ERROR(file->ParseHeader(limits));
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(
    std::string name, std::vector<uint8_t> bytes,
    const SafetensorsLimits& limits) {
  const int64_t size = static_cast<int64_t>(bytes.size());
  QCAL_ASSIGN_OR_RETURN(uint64_t header_size,
                        HeaderLength(name, size, bytes.data(), limits));
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->owned_ = std::move(bytes);
  file->map_ = file->owned_.data();
  file->path_ = std::move(name);
  file->file_size_ = size;
  file->header_size_ = static_cast<int64_t>(header_size);
  QCAL_RETURN_IF_ERROR(file->ParseHeader(limits));
  return file;
}

absl::Status SafetensorsFile::ParseHeader(const SafetensorsLimits& limits) {
  const uint64_t header_size = static_cast<uint64_t>(header_size_);
  const int64_t data_size = file_size_ - kLengthFieldBytes - header_size_;
  HeaderParser parser(path_, data_size, limits);
  const char* json = reinterpret_cast<const char*>(map_) + kLengthFieldBytes;
  // nlohmann's lexer takes a NUL byte for the end of the input, which would
  // let anything follow it unchecked. JSON text never contains a raw NUL
  // (inside strings it must be escaped), so reject it up front.
  if (const void* nul = std::memchr(json, '\0', header_size); nul != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        path_, ": header is not valid JSON: NUL byte at header offset ",
        static_cast<const char*>(nul) - json));
  }
  // Strict (nothing but whitespace after the object), no comments. The SAX
  // parser keeps its own explicit stack and reports errors through
  // parse_error instead of throwing.
  const bool parsed =
      Json::sax_parse(json, json + header_size, &parser,
                      Json::input_format_t::json, /*strict=*/true,
                      /*ignore_comments=*/false);
  QCAL_RETURN_IF_ERROR(parser.Result(parsed));
  entries_ = std::move(parser.entries());
  index_ = std::move(parser.index());
  metadata_ = std::move(parser.metadata());
  return absl::OkStatus();
}

SafetensorsFile::~SafetensorsFile() {
  if (mapped_ && map_ != nullptr) {
    ::munmap(const_cast<uint8_t*>(map_), static_cast<size_t>(file_size_));
  }
}

absl::Span<const uint8_t> SafetensorsFile::data_region() const {
  const int64_t start = kLengthFieldBytes + header_size_;
  return absl::Span<const uint8_t>(map_ + start,
                                   static_cast<size_t>(file_size_ - start));
}

const SafetensorsEntry* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

TensorView SafetensorsFile::View(const SafetensorsEntry& entry) const {
  // Open checked the shape and that [begin, end) lies inside the data region,
  // so this cannot fail.
  absl::StatusOr<TensorView> view = TensorView::Contiguous(
      data_region().data() + entry.begin, entry.dtype, entry.shape);
  return view.ok() ? *std::move(view) : TensorView();
}

absl::StatusOr<TensorView> SafetensorsFile::Get(absl::string_view name) const {
  const SafetensorsEntry* entry = Find(name);
  if (entry == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(path_, ": no tensor named ", Quote(name)));
  }
  return View(*entry);
}

absl::Status SafetensorsFile::ReleasePages(absl::string_view name) const {
  const SafetensorsEntry* entry = Find(name);
  if (entry == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(path_, ": no tensor named ", Quote(name)));
  }
  // Only a file mapping can drop pages (on owned memory MADV_DONTNEED would
  // zero the bytes).
  if (!mapped_ || entry->begin == entry->end) return absl::OkStatus();
  // madvise wants page-aligned ranges: round outwards. The mapping is
  // read-only and private, so dropped pages are simply read again from the
  // file if a neighbour needs them.
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uint8_t* data = data_region().data();
  uintptr_t first = reinterpret_cast<uintptr_t>(data + entry->begin);
  uintptr_t last = reinterpret_cast<uintptr_t>(data + entry->end);
  first = first / page * page;
  last = (last + page - 1) / page * page;
  if (::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED) !=
      0) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat(path_, ": cannot release the pages of tensor ",
                            Quote(name)));
  }
  return absl::OkStatus();
}

bool IsAlignedFor(const TensorView& view) {
  return reinterpret_cast<uintptr_t>(view.data()) % DTypeSize(view.dtype()) ==
         0;
}

// ---------------------------------------------------------------------------
// Writer

namespace {

// WriteFully writes `size` bytes, retrying short writes and EINTR.
absl::Status WriteFully(int fd, const void* data, int64_t size,
                        const std::string& path, const std::string& tmp) {
  // Linux transfers at most 0x7ffff000 bytes per write call.
  constexpr int64_t kMaxChunk = int64_t{1} << 30;
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, std::min(size, kMaxChunk));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(
          errno, absl::StrCat(path, ": cannot write temporary file ", tmp));
    }
    if (n == 0) {
      return absl::UnknownError(absl::StrCat(path,
                                             ": cannot write temporary file ",
                                             tmp, ": write wrote nothing"));
    }
    p += n;
    size -= n;
  }
  return absl::OkStatus();
}

// DirName returns the directory part of `path` ("." when there is none).
std::string DirName(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// CreateTempFile creates "<path>.tmp.<pid>.<n>" exclusively. Mode 0666 lets
// the umask decide the final permissions, as for a file opened normally
// (mkstemp would force 0600).
absl::StatusOr<int> CreateTempFile(const std::string& path, std::string* tmp) {
  static std::atomic<uint64_t> counter{0};
  constexpr int kAttempts = 100;
  for (int attempt = 0;; ++attempt) {
    *tmp = absl::StrCat(path, ".tmp.", ::getpid(), ".", counter.fetch_add(1));
    const int fd =
        ::open(tmp->c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) return fd;
    // A stale file from an earlier process with the same pid: try the next
    // name.
    if (errno == EEXIST && attempt + 1 < kAttempts) continue;
    return absl::ErrnoToStatus(
        errno, absl::StrCat(path, ": cannot create temporary file ", *tmp));
  }
}

}  // namespace

SafetensorsWriter::SafetensorsWriter(std::string path)
    : path_(std::move(path)) {}

absl::Status SafetensorsWriter::Add(std::string name, Tensor tensor) {
  if (finished_) {
    return absl::FailedPreconditionError(absl::StrCat(
        path_, ": cannot add tensor ", Quote(name), " after Finish"));
  }
  absl::Status status;
  if (name == kMetadataKey) {
    status = absl::InvalidArgumentError(absl::StrCat(
        path_, ": \"__metadata__\" is reserved and cannot name a tensor"));
  } else if (!IsValidUtf8(name)) {
    status = absl::InvalidArgumentError(absl::StrCat(
        path_, ": tensor name ", Quote(name), " is not valid UTF-8"));
  } else if (names_.contains(name)) {
    status = absl::InvalidArgumentError(
        absl::StrCat(path_, ": tensor ", Quote(name), " added twice"));
  }
  if (!status.ok()) {
    if (status_.ok()) status_ = status;
    return status;
  }
  names_.insert(name);
  tensors_.emplace_back(std::move(name), std::move(tensor));
  return absl::OkStatus();
}

void SafetensorsWriter::SetMetadata(std::string key, std::string value) {
  if (status_.ok() && (!IsValidUtf8(key) || !IsValidUtf8(value))) {
    status_ = absl::InvalidArgumentError(
        absl::StrCat(path_, ": metadata key ", Quote(key),
                     " or its value is not valid UTF-8"));
    return;
  }
  metadata_[std::move(key)] = std::move(value);
}

absl::Status SafetensorsWriter::Finish() {
  if (finished_) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": Finish called twice"));
  }
  finished_ = true;
  if (!status_.ok()) {
    return absl::Status(
        status_.code(),
        absl::StrCat("nothing written because of an earlier error: ",
                     status_.message()));
  }

  // The header: metadata first, then the tensors in insertion order with
  // contiguous offsets.
  std::string header = "{";
  bool first = true;
  if (!metadata_.empty()) {
    header.append("\"__metadata__\":{");
    for (const auto& [key, value] : metadata_) {
      if (!first) header.push_back(',');
      first = false;
      AppendJsonString(key, &header);
      header.push_back(':');
      AppendJsonString(value, &header);
    }
    header.push_back('}');
    first = false;
  }
  int64_t offset = 0;
  for (const auto& [name, tensor] : tensors_) {
    const int64_t bytes = tensor.nbytes();
    if (bytes > kInt64Max - offset) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": total tensor data exceeds int64 bytes"));
    }
    if (!first) header.push_back(',');
    first = false;
    AppendJsonString(name, &header);
    absl::StrAppend(&header, ":{\"dtype\":\"", DTypeName(tensor.dtype()),
                    "\",\"shape\":[", absl::StrJoin(tensor.shape(), ","),
                    "],\"data_offsets\":[", offset, ",", offset + bytes, "]}");
    offset += bytes;
  }
  header.push_back('}');
  // Pad with spaces (valid trailing JSON whitespace) so that the data region
  // starts at a multiple of 8 bytes.
  header.append((8 - header.size() % 8) % 8, ' ');
  uint8_t length[kLengthFieldBytes];
  uint64_t n = header.size();
  for (int i = 0; i < kLengthFieldBytes; ++i) {
    length[i] = static_cast<uint8_t>(n & 0xFF);
    n >>= 8;
  }

  std::string tmp;
  QCAL_ASSIGN_OR_RETURN(const int fd, CreateTempFile(path_, &tmp));
  absl::Status status = WriteFully(fd, length, kLengthFieldBytes, path_, tmp);
  if (status.ok()) {
    status = WriteFully(fd, header.data(), header.size(), path_, tmp);
  }
  for (const auto& [name, tensor] : tensors_) {
    if (!status.ok()) break;
    if (tensor.nbytes() == 0) continue;
    status = WriteFully(fd, tensor.data(), tensor.nbytes(), path_, tmp);
  }
  if (status.ok() && ::fsync(fd) != 0) {
    status = absl::ErrnoToStatus(
        errno, absl::StrCat(path_, ": cannot fsync temporary file ", tmp));
  }
  // close() reports delayed write errors on some file systems; never retry
  // it (on Linux the descriptor is gone even after EINTR).
  if (::close(fd) != 0 && status.ok()) {
    status = absl::ErrnoToStatus(
        errno, absl::StrCat(path_, ": cannot close temporary file ", tmp));
  }
  if (status.ok() && ::rename(tmp.c_str(), path_.c_str()) != 0) {
    status = absl::ErrnoToStatus(
        errno, absl::StrCat(path_, ": cannot rename temporary file ", tmp,
                            " over it"));
  }
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return status;
  }
  // Make the rename durable. Best effort: the file is already in place, so a
  // failure here must not be reported as "path left untouched".
  const int dir =
      ::open(DirName(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return absl::OkStatus();
}

absl::Status WriteSafetensors(
    const std::string& path,
    std::vector<std::pair<std::string, Tensor>> tensors,
    const std::map<std::string, std::string>& metadata) {
  SafetensorsWriter writer(path);
  for (auto& [name, tensor] : tensors) {
    QCAL_RETURN_IF_ERROR(writer.Add(std::move(name), std::move(tensor)));
  }
  for (const auto& [key, value] : metadata) writer.SetMetadata(key, value);
  return writer.Finish();
}

}  // namespace qcal
