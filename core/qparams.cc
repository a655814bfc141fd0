#include "core/qparams.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/element_access.h"
#include "core/layout.h"
#include "core/status_macros.h"

namespace qcal {

QuantSpec MakeQuantSpec(const QuantizationArgs& args) {
  return QuantSpecFor(args.type == QuantType::kFloat, args.num_bits,
                      args.symmetric);
}

absl::StatusOr<FloatFormat> FloatFormatOf(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return FloatFormat::kF32;
    case DType::kF16:
      return FloatFormat::kF16;
    case DType::kBF16:
      return FloatFormat::kBF16;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("dtype ", DTypeName(dtype),
                       " cannot be observed (expected F32, F16 or BF16)"));
  }
}

DType DTypeOf(FloatFormat format) {
  switch (format) {
    case FloatFormat::kF16:
      return DType::kF16;
    case FloatFormat::kBF16:
      return DType::kBF16;
    default:
      return DType::kF32;
  }
}

absl::StatusOr<ZeroPointKind> ZeroPointKindOf(DType dtype) {
  switch (dtype) {
    case DType::kI8:
      return ZeroPointKind::kI8;
    case DType::kI16:
      return ZeroPointKind::kI16;
    case DType::kI32:
      return ZeroPointKind::kI32;
    case DType::kF8E4M3FN:
      return ZeroPointKind::kF8;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "dtype ", DTypeName(dtype),
          " is not a zero-point dtype (expected I8, I16, I32 or F8_E4M3)"));
  }
}

absl::Status CheckArgsComputable(const QuantizationArgs& args) {
  if (args.is_fp4() && !args.symmetric) {
    return absl::UnimplementedError(
        "asymmetric quantization is not supported for float 4-bit "
        "(compressed-tensors raises NotImplementedError; SPEC §4)");
  }
  return absl::OkStatus();
}

namespace {

absl::Status CheckContiguousCpu(const TensorView& v, absl::string_view what) {
  if (v.device() != Device::kCpu || !v.is_contiguous()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be a contiguous CPU tensor, got ",
                     v.DebugString()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<QParams> CalculateQParams(const TensorView& min_vals,
                                         const TensorView& max_vals,
                                         const QuantizationArgs& args,
                                         std::optional<float> global_scale) {
  QCAL_RETURN_IF_ERROR(CheckArgsComputable(args));
  QCAL_RETURN_IF_ERROR(CheckContiguousCpu(min_vals, "min_vals"));
  QCAL_RETURN_IF_ERROR(CheckContiguousCpu(max_vals, "max_vals"));
  if (min_vals.dtype() != max_vals.dtype() ||
      min_vals.shape() != max_vals.shape()) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_vals ", min_vals.DebugString(), " and max_vals ",
                     max_vals.DebugString(), " differ in dtype or shape"));
  }
  QCAL_ASSIGN_OR_RETURN(FloatFormat format, FloatFormatOf(min_vals.dtype()));
  Shape shape(min_vals.shape().begin(), min_vals.shape().end());
  if (shape.empty()) shape = {1};
  QParams out;
  QCAL_ASSIGN_OR_RETURN(out.scale, Tensor::Zeros(min_vals.dtype(), shape));
  QCAL_ASSIGN_OR_RETURN(out.zero_point,
                        Tensor::Zeros(args.ZeroPointDType(), shape));
  const QuantSpec spec = MakeQuantSpec(args);
  const bool has_g = global_scale.has_value();
  const float g = global_scale.value_or(1.0f);
  DispatchFormat(format, [&](auto f) {
    constexpr FloatFormat F = decltype(f)::value;
    for (int64_t i = 0; i < min_vals.numel(); ++i) {
      const ScalarQParams qp =
          ComputeQParams<F>(LoadAs<F>(min_vals.data(), i),
                            LoadAs<F>(max_vals.data(), i), spec, has_g, g);
      StoreAs<F>(out.scale.mutable_data(), i, qp.scale);
      StoreZeroPoint(out.zero_point.mutable_data(), i, qp.zero_point,
                     spec.zp_kind);
    }
  });
  return out;
}

absl::StatusOr<Tensor> GenerateGlobalScale(const TensorView& min_val,
                                           const TensorView& max_val) {
  QCAL_RETURN_IF_ERROR(CheckContiguousCpu(min_val, "min_val"));
  QCAL_RETURN_IF_ERROR(CheckContiguousCpu(max_val, "max_val"));
  if (min_val.numel() != 1 || max_val.numel() != 1 ||
      min_val.dtype() != max_val.dtype()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the global scale needs one minimum and one maximum of the same "
        "dtype, got ",
        min_val.DebugString(), " and ", max_val.DebugString()));
  }
  QCAL_ASSIGN_OR_RETURN(FloatFormat format, FloatFormatOf(min_val.dtype()));
  QCAL_ASSIGN_OR_RETURN(Tensor out, Tensor::Zeros(DType::kF32, {1}));
  DispatchFormat(format, [&](auto f) {
    constexpr FloatFormat F = decltype(f)::value;
    out.mutable_data_as<float>()[0] = GlobalScale(LoadAs<F>(min_val.data(), 0),
                                                  LoadAs<F>(max_val.data(), 0));
  });
  return out;
}

absl::StatusOr<Tensor> FakeQuantizeTensor(const TensorView& x,
                                          const TensorView& scale,
                                          const TensorView& zero_point,
                                          const QuantizationArgs& args,
                                          std::optional<float> global_scale) {
  QCAL_RETURN_IF_ERROR(CheckContiguousCpu(x, "x"));
  QCAL_RETURN_IF_ERROR(CheckContiguousCpu(scale, "scale"));
  QCAL_RETURN_IF_ERROR(CheckContiguousCpu(zero_point, "zero_point"));
  QCAL_ASSIGN_OR_RETURN(FloatFormat format, FloatFormatOf(x.dtype()));
  QCAL_ASSIGN_OR_RETURN(TensorView x2d, View2DForStrategy(x, args));
  QCAL_ASSIGN_OR_RETURN(TileGrid grid, TileGridForStrategy(x2d, args));
  const int64_t units = grid.num_units();
  if (scale.numel() != units || zero_point.numel() != units) {
    return absl::InvalidArgumentError(absl::StrCat(
        "strategy \"", StrategyName(args.strategy_or_tensor()), "\" over ",
        x.DebugString(), " needs ", units, " qparams, got scale ",
        scale.DebugString(), " and zero point ", zero_point.DebugString()));
  }
  // Scales are either of x's dtype or fp8 values (fp4 scales as written to
  // a checkpoint); zero points of the args' zero-point dtype or fp8.
  QCAL_ASSIGN_OR_RETURN(ZeroPointKind zp_kind,
                        ZeroPointKindOf(zero_point.dtype()));
  if (scale.dtype() != x.dtype() && scale.dtype() != DType::kF8E4M3FN) {
    return absl::InvalidArgumentError(
        absl::StrCat("scale dtype ", DTypeName(scale.dtype()),
                     " does not match x dtype ", DTypeName(x.dtype())));
  }
  QCAL_ASSIGN_OR_RETURN(Tensor out, Tensor::Zeros(x.dtype(), x.shape()));
  const QuantSpec spec = MakeQuantSpec(args);
  const bool has_g = global_scale.has_value();
  const float g = global_scale.value_or(1.0f);
  const bool fp8_scale = scale.dtype() == DType::kF8E4M3FN;
  DispatchFormat(format, [&](auto f) {
    constexpr FloatFormat F = decltype(f)::value;
    for (int64_t ti = 0; ti < grid.grid_rows(); ++ti) {
      for (int64_t tj = 0; tj < grid.grid_cols(); ++tj) {
        const int64_t u = ti * grid.grid_cols() + tj;
        ScalarQParams qp;
        qp.scale = fp8_scale ? LoadZeroPoint(scale.data(), u,
                                             ZeroPointKind::kF8)
                             : LoadAs<F>(scale.data(), u);
        qp.zero_point = LoadZeroPoint(zero_point.data(), u, zp_kind);
        const FakeQuantParams p = MakeFakeQuantParams(qp, has_g, g);
        for (int64_t r = grid.row_begin(ti); r < grid.row_end(ti); ++r) {
          for (int64_t c = grid.col_begin(tj); c < grid.col_end(tj); ++c) {
            const int64_t i = r * grid.cols + c;
            StoreAs<F>(out.mutable_data(), i,
                       FakeQuantize<F>(LoadAs<F>(x2d.data(), i), p, spec));
          }
        }
      }
    }
  });
  return out;
}

}  // namespace qcal
