// QuantizationArgs: what to quantize to (bits, int/float, symmetry, strategy,
// group size, block shape) and which observer calibrates it — the C++ form of
// compressed-tensors' QuantizationArgs (SPEC §2).
//
// Args come from compressed-tensors JSON (ParseQuantizationArgs), from a preset
// scheme name (QuantizationArgsFromScheme) or from code; every path ends in
// Validate(), which applies SPEC §2's rules in order and fills in inferred
// fields (strategy, observer). ToJson() writes the validated args back in
// compressed-tensors' key names.
#ifndef QCAL_CORE_QUANT_ARGS_H_
#define QCAL_CORE_QUANT_ARGS_H_

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/dtype.h"

namespace qcal {

// QuantType is the quantized value type: integers or floats (fp8/fp4).
enum class QuantType : uint8_t { kInt, kFloat };

// Strategy says what one quantization unit is (SPEC §1).
enum class Strategy : uint8_t {
  kTensor,
  kChannel,
  kGroup,
  kTensorGroup,
  kBlock,
  kToken,
};

// DynamicMode mirrors compressed-tensors' `dynamic`: false, true or "local".
enum class DynamicMode : uint8_t { kStatic, kDynamic, kLocal };

// ActOrder mirrors compressed-tensors' `actorder`.
enum class ActOrder : uint8_t { kGroup, kWeight, kDynamic, kStatic };

// StrategyName returns the lower-case JSON name ("tensor_group", ...).
absl::string_view StrategyName(Strategy strategy);

// ObserverKwargs holds an observer's keyword arguments. Every known kwarg is
// numeric; non-numeric values are rejected when parsing.
using ObserverKwargs = std::map<std::string, double>;

// QuantizationArgs describes one quantization target (weights or inputs).
struct QuantizationArgs {
  int num_bits = 8;
  QuantType type = QuantType::kInt;
  bool symmetric = true;
  std::optional<int64_t> group_size;
  std::optional<Strategy> strategy;
  // [rows, cols] of a block, for Strategy::kBlock.
  std::optional<std::array<int64_t, 2>> block_structure;
  DynamicMode dynamic = DynamicMode::kStatic;
  std::optional<ActOrder> actorder;
  std::optional<std::string> observer;
  ObserverKwargs observer_kwargs;

  // Validate applies SPEC §2's validation in order, inferring `strategy` and
  // `observer`. Errors are InvalidArgument and name the field and value.
  absl::Status Validate();

  // ToJson writes the args as a compressed-tensors JSON object (compact, keys
  // in compressed-tensors' order).
  std::string ToJson() const;

  // Strategy after validation (tensor if never validated and unset).
  Strategy strategy_or_tensor() const {
    return strategy.value_or(Strategy::kTensor);
  }
  bool is_fp4() const { return type == QuantType::kFloat && num_bits == 4; }
  bool is_fp8() const { return type == QuantType::kFloat && num_bits == 8; }

  // ZeroPointDType is I8 (b <= 8), I16 (b <= 16) or I32 for int types and
  // F8_E4M3 for float types (SPEC §3).
  DType ZeroPointDType() const;
};

// ParseQuantizationArgs parses and validates a compressed-tensors JSON object.
// Unknown keys, wrong value types and invalid combinations are InvalidArgument
// errors that name the key.
absl::StatusOr<QuantizationArgs> ParseQuantizationArgs(absl::string_view json);

// ParseObserverKwargs parses a JSON object of numeric kwargs (e.g.
// `{"averaging_constant": 0.1}`); `what` names the source in errors.
absl::StatusOr<ObserverKwargs> ParseObserverKwargs(absl::string_view json,
                                                   absl::string_view what);

// SchemeNames lists the preset scheme names, sorted.
std::vector<std::string> SchemeNames();

// QuantizationArgsFromScheme returns the validated weight args of a preset
// scheme (SPEC §2: W8A16, W4A16, FP8_BLOCK, NVFP4, ...). Names are
// case-insensitive; an unknown name is an InvalidArgument error listing the
// known ones.
absl::StatusOr<QuantizationArgs> QuantizationArgsFromScheme(
    absl::string_view name);

}  // namespace qcal

#endif  // QCAL_CORE_QUANT_ARGS_H_
