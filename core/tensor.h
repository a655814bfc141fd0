// Tensors: a non-owning TensorView (pointer, dtype, device, int64 shape and
// element strides) and an owning, CPU-resident, contiguous Tensor.
//
// Views are the currency of the library: observers read TensorViews over
// memory they do not own (a memory-mapped checkpoint, a CUDA buffer, a caller's
// array). Every constructor checks its shape (rank cap, non-negative dims,
// element and byte counts that fit in int64) and returns a Status instead of
// producing a view whose size arithmetic could overflow.
#ifndef QCAL_CORE_TENSOR_H_
#define QCAL_CORE_TENSOR_H_

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/dtype.h"

namespace qcal {

// Device says where a tensor's memory lives.
enum class Device : uint8_t { kCpu, kCuda };

// DeviceName returns "cpu" or "cuda".
absl::string_view DeviceName(Device device);

// Shape holds dimension sizes (or strides) of a tensor.
using Shape = absl::InlinedVector<int64_t, 4>;

// kMaxRank is the largest rank a tensor may have.
inline constexpr int kMaxRank = 8;

// ShapeToString formats a shape as "[2, 3]".
std::string ShapeToString(absl::Span<const int64_t> shape);

// CheckedNumel returns the product of `shape`, or InvalidArgument if the rank
// exceeds kMaxRank, a dimension is negative, or the product overflows int64.
absl::StatusOr<int64_t> CheckedNumel(absl::Span<const int64_t> shape);

// CheckedByteSize returns numel(shape) * DTypeSize(dtype) with the same checks
// as CheckedNumel plus overflow of the multiplication.
absl::StatusOr<int64_t> CheckedByteSize(DType dtype,
                                        absl::Span<const int64_t> shape);

// ContiguousStrides returns the row-major element strides of `shape`.
Shape ContiguousStrides(absl::Span<const int64_t> shape);

// TensorView is a read-only, non-owning view of an n-d array.
//
// Strides are in elements. A default-constructed view is an empty 1-d CPU
// tensor of f32 with no data.
class TensorView {
 public:
  TensorView() : shape_({0}), strides_({1}) {}

  // Contiguous makes a row-major view of `shape` over `data`.
  static absl::StatusOr<TensorView> Contiguous(
      const void* data, DType dtype, absl::Span<const int64_t> shape,
      Device device = Device::kCpu);

  // FromBuffer makes a row-major CPU view over `buffer`, which must hold
  // exactly numel(shape) * DTypeSize(dtype) bytes.
  static absl::StatusOr<TensorView> FromBuffer(absl::Span<const uint8_t> buffer,
                                               DType dtype,
                                               absl::Span<const int64_t> shape);

  // Strided makes a view with explicit element strides (non-negative; one per
  // dimension). The caller guarantees the addressed elements exist.
  static absl::StatusOr<TensorView> Strided(const void* data, DType dtype,
                                            absl::Span<const int64_t> shape,
                                            absl::Span<const int64_t> strides,
                                            Device device = Device::kCpu);

  // data returns the address of element [0, ..., 0].
  const void* data() const { return data_; }
  // data_as returns data() as a typed pointer (T must have the dtype's size).
  template <typename T>
  const T* data_as() const {
    return static_cast<const T*>(data_);
  }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  absl::Span<const int64_t> shape() const { return shape_; }
  absl::Span<const int64_t> strides() const { return strides_; }
  // dim returns shape()[i]; negative i counts from the end.
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t numel() const { return numel_; }
  // nbytes is numel() * DTypeSize(dtype()), the size of a contiguous copy.
  int64_t nbytes() const { return numel_ * DTypeSize(dtype_); }
  bool empty() const { return numel_ == 0; }

  // is_contiguous is true when the view is row-major without gaps (size-1
  // dimensions may have any stride).
  bool is_contiguous() const;

  // Reshape returns a view of the same (contiguous) data with a new shape of
  // equal element count.
  absl::StatusOr<TensorView> Reshape(absl::Span<const int64_t> shape) const;

  // As2D views a contiguous tensor of rank >= 1 as [prod(leading dims), last]
  // (a 1-d tensor becomes [1, n]).
  absl::StatusOr<TensorView> As2D() const;

  // Narrow returns the sub-view [start, start + length) along `dim`.
  absl::StatusOr<TensorView> Narrow(int dim, int64_t start,
                                    int64_t length) const;

  // DebugString is "BF16[4096, 4096] (cpu)".
  std::string DebugString() const;

 private:
  const void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
  Shape shape_;
  Shape strides_;
  int64_t numel_ = 0;
};

// Tensor owns a contiguous, 64-byte aligned CPU buffer. Move-only.
class Tensor {
 public:
  Tensor() = default;
  Tensor(Tensor&&) = default;
  Tensor& operator=(Tensor&&) = default;

  // Zeros allocates a zero-filled tensor of `shape`, counted against the
  // memory budget (core/memory_budget.h): ResourceExhausted beyond it.
  static absl::StatusOr<Tensor> Zeros(DType dtype,
                                      absl::Span<const int64_t> shape);

  // CopyOf copies a CPU view (any strides) into a new contiguous tensor.
  static absl::StatusOr<Tensor> CopyOf(const TensorView& view);

  TensorView view() const;
  DType dtype() const { return dtype_; }
  absl::Span<const int64_t> shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t numel() const { return numel_; }
  int64_t nbytes() const { return numel_ * DTypeSize(dtype_); }

  const void* data() const { return buffer_.get(); }
  void* mutable_data() { return buffer_.get(); }
  template <typename T>
  const T* data_as() const {
    return reinterpret_cast<const T*>(buffer_.get());
  }
  template <typename T>
  T* mutable_data_as() {
    return reinterpret_cast<T*>(buffer_.get());
  }

 private:
  // Frees the buffer and returns its bytes to the memory budget.
  struct FreeDeleter {
    FreeDeleter() : budget_bytes(0) {}
    explicit FreeDeleter(int64_t bytes) : budget_bytes(bytes) {}
    void operator()(uint8_t* p) const;
    int64_t budget_bytes;
  };
  std::unique_ptr<uint8_t[], FreeDeleter> buffer_;
  DType dtype_ = DType::kF32;
  Shape shape_ = {0};
  int64_t numel_ = 0;
};

}  // namespace qcal

#endif  // QCAL_CORE_TENSOR_H_
