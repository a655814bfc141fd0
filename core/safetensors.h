// Safetensors I/O: a strict, memory-mapped reader and an atomic writer.
//
// File layout: an 8-byte little-endian uint64 N, N bytes of UTF-8 JSON (the
// header), then the data region. The header is an object mapping tensor names
// to {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]} (byte
// offsets relative to the start of the data region), plus an optional
// "__metadata__" object of string values.
//
// Public API:
//   SafetensorsFile::Open(path, limits) -> unique_ptr<SafetensorsFile>
//     path(), file_size(), header_size(), entries() (header order),
//     Find(name), Get(name) -> TensorView into the mapping, metadata(),
//     data_region(), ReleasePages(name).
//   IsAlignedFor(view): whether a view's data pointer suits its dtype; copy
//     misaligned views with Tensor::CopyOf before reading typed elements.
//   SafetensorsWriter(path): Add(name, Tensor), SetMetadata(key, value),
//     Finish(). WriteSafetensors(path, tensors, metadata) wraps it.
//
// Validation on Open (each failure names the file, and the tensor where there
// is one):
//   - NotFound: the file does not exist.
//   - DataLoss: empty file, fewer than 8 bytes, header length N beyond the end
//     of the file, a tensor whose data_offsets end beyond the end of the file.
//   - InvalidArgument: N above limits.max_header_bytes (checked before any
//     allocation); the header is not valid JSON (which includes invalid
//     UTF-8), not an object, or nested deeper than limits.max_json_depth (a
//     SAX parse: no recursion, no DOM); more than limits.max_tensors entries;
//     duplicate tensor names; an entry that is not an object, lacks "dtype",
//     "shape" or "data_offsets", repeats one, or has any other key; a dtype
//     outside F32 F16 BF16 F8_E4M3 I8 I16 I32 I64 U8 BOOL; a shape that is not
//     an array of at most kMaxRank non-negative integers or whose byte size
//     overflows int64; data_offsets that are not two non-negative integers
//     with begin <= end, or whose length differs from the shape's byte size;
//     tensors that overlap; a gap between tensors or bytes after the last one
//     (the tensors, sorted by offset, must tile the data region exactly, as
//     the reference Rust implementation requires); "__metadata__" that is not
//     an object of string values or repeats a key.
//
// Writer: tensors in insertion order, contiguous offsets, the header padded
// with spaces to a multiple of 8 bytes, data raw little-endian. Finish writes
// a temporary file next to the target, checks every write, fsyncs it and
// renames it over the target; on any error the temporary file is removed and
// the target is left untouched.
#ifndef QCAL_CORE_SAFETENSORS_H_
#define QCAL_CORE_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/dtype.h"
#include "core/tensor.h"

namespace qcal {

// SafetensorsLimits bounds the work SafetensorsFile::Open does on untrusted
// input. The tensor rank limit is kMaxRank.
struct SafetensorsLimits {
  // max_header_bytes caps the header length N (the reference implementation
  // uses the same 100 MB).
  int64_t max_header_bytes = 100'000'000;
  // max_tensors caps the number of tensor entries (not counting metadata).
  int64_t max_tensors = 1'000'000;
  // max_json_depth caps the nesting of JSON arrays and objects; the top-level
  // object is depth 1 and a valid header needs 3.
  int max_json_depth = 32;
};

// SafetensorsEntry describes one tensor of a safetensors file.
struct SafetensorsEntry {
  // name is the tensor's key in the header.
  std::string name;
  // dtype is the element type ("dtype").
  DType dtype = DType::kF32;
  // shape holds the dimensions ("shape"); empty for a 0-d tensor.
  Shape shape;
  // begin and end are byte offsets into the data region, end exclusive.
  int64_t begin = 0;
  int64_t end = 0;
};

// SafetensorsFile is an open, validated, read-only, memory-mapped safetensors
// file. Tensor data is never copied: Get returns views into the mapping, valid
// as long as the SafetensorsFile lives. All methods are const and may be
// called from several threads at once.
//
// The mapping is MAP_PRIVATE and PROT_READ; if another process truncates the
// file while it is mapped, reading a view may raise SIGBUS.
class SafetensorsFile {
 public:
  // Open maps and validates the file at `path` (see the top of this header
  // for the rules).
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(
      const std::string& path, const SafetensorsLimits& limits = {});

  // FromBytes validates a safetensors image held in memory (the same rules
  // as Open; `name` stands for the path in messages). The file keeps the
  // bytes; ReleasePages does nothing for it. Used by fuzzers and tests.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBytes(
      std::string name, std::vector<uint8_t> bytes,
      const SafetensorsLimits& limits = {});

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  // path returns the path the file was opened with.
  const std::string& path() const { return path_; }
  // file_size returns the size of the file in bytes.
  int64_t file_size() const { return file_size_; }
  // header_size returns N, the length of the JSON header in bytes; the data
  // region starts at byte 8 + N.
  int64_t header_size() const { return header_size_; }
  // entries returns every tensor in the order of the header's keys.
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  // metadata returns the "__metadata__" object (empty when absent).
  const std::map<std::string, std::string>& metadata() const {
    return metadata_;
  }
  // data_region returns the bytes after the header, inside the mapping.
  absl::Span<const uint8_t> data_region() const;

  // Find returns the entry named `name`, or nullptr.
  const SafetensorsEntry* Find(absl::string_view name) const;

  // Get returns a contiguous CPU view of tensor `name` into the mapping, or
  // NotFound naming the file and the tensor. The view's data pointer need not
  // be aligned for its dtype: check IsAlignedFor before reading typed
  // elements.
  absl::StatusOr<TensorView> Get(absl::string_view name) const;

  // View returns the view of `entry`, which must come from entries() or Find
  // of this file.
  TensorView View(const SafetensorsEntry& entry) const;

  // ReleasePages tells the kernel that tensor `name`'s pages are no longer
  // needed (madvise MADV_DONTNEED), to keep the resident set small while
  // walking a large file. Views stay valid: later reads fault the pages back
  // in from the file. Pages shared with neighbouring tensors are released
  // too, with the same effect.
  absl::Status ReleasePages(absl::string_view name) const;

 private:
  SafetensorsFile() = default;
  // Validates the header at map_ (header_size_ bytes after the length).
  absl::Status ParseHeader(const SafetensorsLimits& limits);

  std::string path_;
  const uint8_t* map_ = nullptr;
  bool mapped_ = false;             // map_ is an mmap (else owned_.data())
  std::vector<uint8_t> owned_;
  int64_t file_size_ = 0;
  int64_t header_size_ = 0;
  std::vector<SafetensorsEntry> entries_;
  absl::flat_hash_map<std::string, int64_t> index_;
  std::map<std::string, std::string> metadata_;
};

// IsAlignedFor is true when `view`'s data pointer is a multiple of its
// dtype's size, so that reading elements through a typed pointer is defined
// behaviour. Safetensors does not align tensor data; Tensor::CopyOf(view)
// makes an aligned copy of a view for which this is false.
bool IsAlignedFor(const TensorView& view);

// SafetensorsWriter collects tensors and metadata and writes them as one
// safetensors file, atomically.
//
// Errors are sticky: once Add has failed, Finish reports that error and
// writes nothing, so that a caller that ignored it does not get a file that
// is silently missing a tensor.
class SafetensorsWriter {
 public:
  // SafetensorsWriter prepares to write `path`; nothing touches the file
  // system before Finish.
  explicit SafetensorsWriter(std::string path);

  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // path returns the output path.
  const std::string& path() const { return path_; }

  // Add appends `tensor` under `name`, taking ownership. Rejects (with
  // InvalidArgument naming the path and the tensor) a name used before, the
  // reserved name "__metadata__" and a name that is not valid UTF-8;
  // FailedPrecondition after Finish.
  absl::Status Add(std::string name, Tensor tensor);

  // SetMetadata sets `key` in "__metadata__" (a later call for the same key
  // replaces the value). Keys and values must be valid UTF-8; a violation is
  // reported by Finish.
  void SetMetadata(std::string key, std::string value);

  // Finish writes the file: tensors in insertion order with contiguous
  // offsets, metadata keys sorted. It writes "<path>.tmp.<unique>" in the same
  // directory, fsyncs it and renames it over `path`; on any error it removes
  // the temporary file, leaves `path` untouched and returns an error naming
  // the path and the OS error. Finish may be called once.
  absl::Status Finish();

 private:
  std::string path_;
  std::vector<std::pair<std::string, Tensor>> tensors_;
  absl::flat_hash_set<std::string> names_;
  std::map<std::string, std::string> metadata_;
  absl::Status status_;
  bool finished_ = false;
};

// WriteSafetensors writes `tensors` (in order) and `metadata` to `path` with a
// SafetensorsWriter.
absl::Status WriteSafetensors(
    const std::string& path,
    std::vector<std::pair<std::string, Tensor>> tensors,
    const std::map<std::string, std::string>& metadata = {});

}  // namespace qcal

#endif  // QCAL_CORE_SAFETENSORS_H_
