// Array-level quantization math (SPEC §3-§6, §8): qparams from arrays of unit
// minima and maxima, the global scale, and fake quantization of a tensor with
// its qparams. These are thin loops over the scalar functions of
// quant_math.h, dispatched on the observed dtype.
#ifndef QCAL_CORE_QPARAMS_H_
#define QCAL_CORE_QPARAMS_H_

#include <optional>
#include <type_traits>
#include <utility>

#include "absl/status/statusor.h"
#include "core/dtype.h"
#include "core/quant_args.h"
#include "core/quant_math.h"
#include "core/tensor.h"

namespace qcal {

// MakeQuantSpec derives the math's QuantSpec from validated args.
QuantSpec MakeQuantSpec(const QuantizationArgs& args);

// FloatFormatOf maps F32/F16/BF16 to a FloatFormat; other dtypes are an
// InvalidArgument error.
absl::StatusOr<FloatFormat> FloatFormatOf(DType dtype);

// DTypeOf maps a FloatFormat back to its DType.
DType DTypeOf(FloatFormat format);

// ZeroPointKindOf maps a zero-point DType (I8, I16, I32, F8_E4M3) to its kind.
absl::StatusOr<ZeroPointKind> ZeroPointKindOf(DType dtype);

// CheckArgsComputable returns an error for args whose qparams the math cannot
// compute: asymmetric float 4-bit (Unimplemented, as compressed-tensors).
absl::Status CheckArgsComputable(const QuantizationArgs& args);

// DispatchFormat calls fn(std::integral_constant<FloatFormat, F>{}) for the
// run-time format `f`.
template <typename Fn>
decltype(auto) DispatchFormat(FloatFormat f, Fn&& fn) {
  switch (f) {
    case FloatFormat::kF16:
      return fn(std::integral_constant<FloatFormat, FloatFormat::kF16>{});
    case FloatFormat::kBF16:
      return fn(std::integral_constant<FloatFormat, FloatFormat::kBF16>{});
    default:
      return fn(std::integral_constant<FloatFormat, FloatFormat::kF32>{});
  }
}

// QParams is a scale tensor (observed dtype) and a zero-point tensor
// (args.ZeroPointDType()) of the same shape.
struct QParams {
  Tensor scale;
  Tensor zero_point;
};

// CalculateQParams is calculate_qparams (SPEC §4) over arrays of unit minima
// and maxima of an observed dtype (same shape). A 0-d input gives shape [1].
// `global_scale` applies to symmetric float 4-bit args.
absl::StatusOr<QParams> CalculateQParams(
    const TensorView& min_vals, const TensorView& max_vals,
    const QuantizationArgs& args,
    std::optional<float> global_scale = std::nullopt);

// GenerateGlobalScale is generate_gparam (SPEC §5) from a tensor's minimum and
// maximum (one element each): an F32 tensor of shape [1].
absl::StatusOr<Tensor> GenerateGlobalScale(const TensorView& min_val,
                                           const TensorView& max_val);

// FakeQuantizeTensor quantizes and dequantizes `x` with qparams laid out as
// the strategy of `args` produces them (see layout.h), with an optional global
// scale (SPEC §6). The result has x's dtype and shape.
absl::StatusOr<Tensor> FakeQuantizeTensor(
    const TensorView& x, const TensorView& scale, const TensorView& zero_point,
    const QuantizationArgs& args,
    std::optional<float> global_scale = std::nullopt);

}  // namespace qcal

#endif  // QCAL_CORE_QPARAMS_H_
