// Element types qcal understands, with their names and sizes.
//
// The names are safetensors' dtype strings (F32, BF16, F8_E4M3, ...); the same
// set covers observed tensors (F32, F16, BF16) and the qparams written out.
#ifndef QCAL_CORE_DTYPE_H_
#define QCAL_CORE_DTYPE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace qcal {

// DType enumerates the element types of tensors.
enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kF8E4M3FN,
  kI8,
  kI16,
  kI32,
  kI64,
  kU8,
  kBool,
};

// kAllDTypes lists every DType, for tests and tables.
inline constexpr DType kAllDTypes[] = {
    DType::kF32, DType::kF16, DType::kBF16, DType::kF8E4M3FN, DType::kI8,
    DType::kI16, DType::kI32, DType::kI64,  DType::kU8,       DType::kBool,
};

// DTypeSize returns the number of bytes one element occupies.
int64_t DTypeSize(DType dtype);

// DTypeName returns the safetensors name of `dtype` ("F32", "BF16", ...).
absl::string_view DTypeName(DType dtype);

// DTypeFromName parses a safetensors dtype name (exact, case-sensitive, as the
// format requires). Unknown names are an InvalidArgument error quoting `name`.
absl::StatusOr<DType> DTypeFromName(absl::string_view name);

// IsFloatingDType is true for F32, F16, BF16 and F8_E4M3.
bool IsFloatingDType(DType dtype);

// IsObservableDType is true for the dtypes an observer accepts: F32, F16, BF16.
bool IsObservableDType(DType dtype);

}  // namespace qcal

#endif  // QCAL_CORE_DTYPE_H_
