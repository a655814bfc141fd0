#include "core/tensor.h"

#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/memory_budget.h"
#include "core/status_macros.h"

namespace qcal {

absl::string_view DeviceName(Device device) {
  return device == Device::kCuda ? "cuda" : "cpu";
}

std::string ShapeToString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<int64_t> CheckedNumel(absl::Span<const int64_t> shape) {
  if (shape.size() > static_cast<size_t>(kMaxRank)) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape ", ShapeToString(shape), " has rank ",
                     shape.size(), ", more than the limit of ", kMaxRank));
  }
  int64_t numel = 1;
  bool zero = false;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "shape ", ShapeToString(shape), " has a negative dimension"));
    }
    if (d == 0) zero = true;
  }
  // Check overflow over the non-zero dimensions even when one is zero: a shape
  // such as [0, 2^62, 2^62] describes no data but is still nonsense.
  for (int64_t d : shape) {
    if (d == 0) continue;
    if (numel > std::numeric_limits<int64_t>::max() / d) {
      return absl::InvalidArgumentError(absl::StrCat(
          "shape ", ShapeToString(shape), " has too many elements"));
    }
    numel *= d;
  }
  return zero ? 0 : numel;
}

absl::StatusOr<int64_t> CheckedByteSize(DType dtype,
                                        absl::Span<const int64_t> shape) {
  QCAL_ASSIGN_OR_RETURN(int64_t numel, CheckedNumel(shape));
  const int64_t size = DTypeSize(dtype);
  if (numel > std::numeric_limits<int64_t>::max() / size) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape ", ShapeToString(shape), " of ", DTypeName(dtype),
                     " is too large to address"));
  }
  return numel * size;
}

Shape ContiguousStrides(absl::Span<const int64_t> shape) {
  Shape strides(shape.size());
  int64_t stride = 1;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    strides[i] = stride;
    stride *= shape[i] > 0 ? shape[i] : 1;
  }
  return strides;
}

absl::StatusOr<TensorView> TensorView::Contiguous(
    const void* data, DType dtype, absl::Span<const int64_t> shape,
    Device device) {
  QCAL_ASSIGN_OR_RETURN(int64_t bytes, CheckedByteSize(dtype, shape));
  if (data == nullptr && bytes > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "null data for a non-empty tensor of shape ", ShapeToString(shape)));
  }
  TensorView view;
  view.data_ = data;
  view.dtype_ = dtype;
  view.device_ = device;
  view.shape_.assign(shape.begin(), shape.end());
  view.strides_ = ContiguousStrides(shape);
  view.numel_ = bytes / DTypeSize(dtype);
  return view;
}

absl::StatusOr<TensorView> TensorView::FromBuffer(
    absl::Span<const uint8_t> buffer, DType dtype,
    absl::Span<const int64_t> shape) {
  QCAL_ASSIGN_OR_RETURN(int64_t bytes, CheckedByteSize(dtype, shape));
  if (static_cast<uint64_t>(bytes) != buffer.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shape ", ShapeToString(shape), " of ", DTypeName(dtype), " needs ",
        bytes, " bytes but the buffer holds ", buffer.size()));
  }
  return Contiguous(buffer.data(), dtype, shape, Device::kCpu);
}

absl::StatusOr<TensorView> TensorView::Strided(
    const void* data, DType dtype, absl::Span<const int64_t> shape,
    absl::Span<const int64_t> strides, Device device) {
  if (strides.size() != shape.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("strides ", ShapeToString(strides), " do not match shape ",
                     ShapeToString(shape)));
  }
  QCAL_ASSIGN_OR_RETURN(TensorView view,
                        Contiguous(data, dtype, shape, device));
  // The largest element offset must be addressable too.
  int64_t max_offset = 0;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (strides[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "negative stride in ", ShapeToString(strides)));
    }
    if (shape[i] == 0) continue;
    const int64_t extent = shape[i] - 1;
    if (strides[i] != 0 &&
        extent > (std::numeric_limits<int64_t>::max() - max_offset) /
                     strides[i]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "strides ", ShapeToString(strides), " overflow for shape ",
          ShapeToString(shape)));
    }
    max_offset += extent * strides[i];
  }
  if (max_offset > std::numeric_limits<int64_t>::max() / DTypeSize(dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "strides ", ShapeToString(strides), " address beyond int64 bytes"));
  }
  view.strides_.assign(strides.begin(), strides.end());
  return view;
}

bool TensorView::is_contiguous() const {
  int64_t expected = 1;
  for (int i = rank() - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

absl::StatusOr<TensorView> TensorView::Reshape(
    absl::Span<const int64_t> shape) const {
  if (!is_contiguous()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot reshape non-contiguous ", DebugString()));
  }
  QCAL_ASSIGN_OR_RETURN(int64_t numel, CheckedNumel(shape));
  if (numel != numel_) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot reshape ", DebugString(), " to ",
                     ShapeToString(shape), ": element counts differ"));
  }
  return Contiguous(data_, dtype_, shape, device_);
}

absl::StatusOr<TensorView> TensorView::As2D() const {
  if (rank() == 0) return Reshape({1, 1});
  const int64_t last = shape_.back();
  const int64_t rows = last == 0 ? 0 : numel_ / last;
  if (last == 0) {
    int64_t leading = 1;
    for (int i = 0; i + 1 < rank(); ++i) leading *= shape_[i];
    return Reshape({leading, 0});
  }
  return Reshape({rows, last});
}

absl::StatusOr<TensorView> TensorView::Narrow(int dim, int64_t start,
                                              int64_t length) const {
  if (dim < 0) dim += rank();
  if (dim < 0 || dim >= rank()) {
    return absl::InvalidArgumentError(
        absl::StrCat("dimension ", dim, " out of range for ", DebugString()));
  }
  if (start < 0 || length < 0 || start > shape_[dim] ||
      length > shape_[dim] - start) {
    return absl::InvalidArgumentError(
        absl::StrCat("range [", start, ", ", start, "+", length,
                     ") out of bounds for dimension ", dim, " of ",
                     DebugString()));
  }
  TensorView view = *this;
  view.shape_[dim] = length;
  if (length > 0) {
    view.data_ = static_cast<const uint8_t*>(data_) +
                 start * strides_[dim] * DTypeSize(dtype_);
  }
  view.numel_ = 1;
  for (int64_t d : view.shape_) view.numel_ *= d;
  return view;
}

std::string TensorView::DebugString() const {
  return absl::StrCat(DTypeName(dtype_), ShapeToString(shape_), " (",
                      DeviceName(device_), ")");
}

absl::StatusOr<Tensor> Tensor::Zeros(DType dtype,
                                     absl::Span<const int64_t> shape) {
  QCAL_ASSIGN_OR_RETURN(int64_t bytes, CheckedByteSize(dtype, shape));
  Tensor t;
  // aligned_alloc wants a size that is a multiple of the alignment.
  const int64_t rounded = (bytes + 63) / 64 * 64 > 0 ? (bytes + 63) / 64 * 64 : 64;
  QCAL_RETURN_IF_ERROR(ReserveTensorMemory(
      rounded, absl::StrCat("a ", DTypeName(dtype), ShapeToString(shape),
                            " tensor")));
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) {
    ReleaseTensorMemory(rounded);
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", bytes, " bytes for a ",
                     DTypeName(dtype), ShapeToString(shape), " tensor"));
  }
  std::memset(p, 0, rounded);
  t.buffer_ = std::unique_ptr<uint8_t[], FreeDeleter>(
      static_cast<uint8_t*>(p), FreeDeleter(rounded));
  t.dtype_ = dtype;
  t.shape_.assign(shape.begin(), shape.end());
  t.numel_ = bytes / DTypeSize(dtype);
  return t;
}

absl::StatusOr<Tensor> Tensor::CopyOf(const TensorView& view) {
  if (view.device() != Device::kCpu) {
    return absl::InvalidArgumentError(
        absl::StrCat("Tensor::CopyOf needs a CPU view, got ",
                     view.DebugString()));
  }
  QCAL_ASSIGN_OR_RETURN(Tensor t, Zeros(view.dtype(), view.shape()));
  const int64_t size = DTypeSize(view.dtype());
  if (view.numel() == 0) return t;
  if (view.is_contiguous()) {
    std::memcpy(t.mutable_data(), view.data(), view.nbytes());
    return t;
  }
  // General strides: walk the multi-index in row-major order.
  const int rank = view.rank();
  Shape index(rank, 0);
  const uint8_t* base = static_cast<const uint8_t*>(view.data());
  uint8_t* out = static_cast<uint8_t*>(t.mutable_data());
  for (int64_t n = 0; n < view.numel(); ++n) {
    int64_t offset = 0;
    for (int d = 0; d < rank; ++d) offset += index[d] * view.strides()[d];
    std::memcpy(out + n * size, base + offset * size, size);
    for (int d = rank - 1; d >= 0; --d) {
      if (++index[d] < view.shape()[d]) break;
      index[d] = 0;
    }
  }
  return t;
}

void Tensor::FreeDeleter::operator()(uint8_t* p) const {
  std::free(p);
  ReleaseTensorMemory(budget_bytes);
}

TensorView Tensor::view() const {
  // The shape was validated when the tensor was made.
  return TensorView::Contiguous(buffer_.get(), dtype_, shape_, Device::kCpu)
      .value();
}

}  // namespace qcal
