#include "core/quant_args.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/json_util.h"
#include "core/status_macros.h"
#include "nlohmann/json.hpp"

namespace qcal {
namespace {

using Json = nlohmann::json;

absl::Status FieldError(absl::string_view field, absl::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat("QuantizationArgs.", field, ": ", message));
}

// JSON text of a value for error messages.
std::string Quote(const Json& value) { return value.dump(); }

absl::StatusOr<std::string> LowerString(const Json& value,
                                        absl::string_view field) {
  if (!value.is_string()) {
    return FieldError(field,
                      absl::StrCat("expected a string, got ", Quote(value)));
  }
  return absl::AsciiStrToLower(value.get_ref<const std::string&>());
}

absl::StatusOr<int64_t> Integer(const Json& value, absl::string_view field) {
  if (value.is_number_integer()) {
    if (value.is_number_unsigned() &&
        value.get<uint64_t>() >
            static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return FieldError(field, absl::StrCat(Quote(value), " is too large"));
    }
    return value.get<int64_t>();
  }
  return FieldError(field,
                    absl::StrCat("expected an integer, got ", Quote(value)));
}

absl::StatusOr<Strategy> ParseStrategy(const Json& value) {
  QCAL_ASSIGN_OR_RETURN(std::string name, LowerString(value, "strategy"));
  for (Strategy s : {Strategy::kTensor, Strategy::kChannel, Strategy::kGroup,
                     Strategy::kTensorGroup, Strategy::kBlock,
                     Strategy::kToken}) {
    if (StrategyName(s) == name) return s;
  }
  return FieldError(
      "strategy",
      absl::StrCat("unknown strategy ", Quote(value),
                   " (expected tensor, channel, group, tensor_group, block "
                   "or token)"));
}

absl::StatusOr<std::array<int64_t, 2>> ParseBlockStructure(const Json& value) {
  std::vector<int64_t> dims;
  if (value.is_string()) {
    // "128x128"
    const std::string& text = value.get_ref<const std::string&>();
    std::vector<absl::string_view> parts =
        absl::StrSplit(absl::AsciiStrToLower(text), 'x');
    for (absl::string_view part : parts) {
      int64_t d;
      if (!absl::SimpleAtoi(part, &d)) {
        return FieldError("block_structure",
                          absl::StrCat(Quote(value),
                                       " is not of the form \"RxC\""));
      }
      dims.push_back(d);
    }
  } else if (value.is_array()) {
    for (const Json& item : value) {
      QCAL_ASSIGN_OR_RETURN(int64_t d, Integer(item, "block_structure"));
      dims.push_back(d);
    }
  } else {
    return FieldError("block_structure",
                      absl::StrCat("expected [rows, cols] or \"RxC\", got ",
                                   Quote(value)));
  }
  if (dims.size() != 2) {
    return FieldError("block_structure",
                      absl::StrCat(Quote(value), " must have two dimensions"));
  }
  return std::array<int64_t, 2>{dims[0], dims[1]};
}

absl::StatusOr<ActOrder> ParseActOrderName(const std::string& name,
                                           const Json& value) {
  if (name == "group") return ActOrder::kGroup;
  if (name == "weight") return ActOrder::kWeight;
  if (name == "dynamic") return ActOrder::kDynamic;
  if (name == "static") return ActOrder::kStatic;
  return FieldError("actorder",
                    absl::StrCat("unknown value ", Quote(value),
                                 " (expected group, weight, dynamic, static "
                                 "or a bool)"));
}

absl::string_view ActOrderName(ActOrder a) {
  switch (a) {
    case ActOrder::kGroup:
      return "group";
    case ActOrder::kWeight:
      return "weight";
    case ActOrder::kDynamic:
      return "dynamic";
    case ActOrder::kStatic:
      return "static";
  }
  return "?";
}

absl::StatusOr<ObserverKwargs> KwargsFromJson(const Json& value,
                                              absl::string_view what) {
  if (!value.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": expected a JSON object of numbers, got ", Quote(value)));
  }
  ObserverKwargs kwargs;
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (!it.value().is_number() || it.value().is_boolean()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": value of \"", it.key(),
                       "\" must be a number, got ", Quote(it.value())));
    }
    const double v = it.value().get<double>();
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": value of \"", it.key(), "\" must be finite"));
    }
    kwargs[it.key()] = v;
  }
  return kwargs;
}

}  // namespace

absl::string_view StrategyName(Strategy strategy) {
  switch (strategy) {
    case Strategy::kTensor:
      return "tensor";
    case Strategy::kChannel:
      return "channel";
    case Strategy::kGroup:
      return "group";
    case Strategy::kTensorGroup:
      return "tensor_group";
    case Strategy::kBlock:
      return "block";
    case Strategy::kToken:
      return "token";
  }
  return "?";
}

DType QuantizationArgs::ZeroPointDType() const {
  if (type == QuantType::kFloat) return DType::kF8E4M3FN;
  if (num_bits <= 8) return DType::kI8;
  if (num_bits <= 16) return DType::kI16;
  return DType::kI32;
}

absl::Status QuantizationArgs::Validate() {
  // 1. group_size range.
  if (group_size.has_value() && *group_size < -1) {
    return FieldError("group_size",
                      absl::StrCat("must be -1 or positive, got ", *group_size));
  }
  // 2. Strategy inference.
  if (!strategy.has_value()) {
    if (!group_size.has_value()) {
      strategy = Strategy::kTensor;
    } else if (*group_size > 0) {
      strategy = Strategy::kGroup;
    } else if (*group_size == -1) {
      strategy = Strategy::kChannel;
    } else {
      return FieldError(
          "group_size",
          absl::StrCat("cannot infer a strategy from group_size ",
                       *group_size, " (use a positive size or -1)"));
    }
  }
  // 3. Group sizes and strategies must agree.
  if ((*strategy == Strategy::kGroup || *strategy == Strategy::kTensorGroup) &&
      (!group_size.has_value() || *group_size <= 0)) {
    return FieldError(
        "group_size",
        absl::StrCat("strategy \"", StrategyName(*strategy),
                     "\" needs a positive group_size, got ",
                     group_size.has_value() ? absl::StrCat(*group_size)
                                            : std::string("null")));
  }
  if (group_size.has_value() && *group_size > 0 &&
      *strategy != Strategy::kGroup && *strategy != Strategy::kTensorGroup) {
    return FieldError("group_size",
                      absl::StrCat("group_size ", *group_size,
                                   " needs strategy \"group\" or "
                                   "\"tensor_group\", got \"",
                                   StrategyName(*strategy), "\""));
  }
  // 4. Activation ordering only applies to groups.
  if (actorder.has_value() && *strategy != Strategy::kGroup) {
    return FieldError("actorder",
                      absl::StrCat("actorder \"", ActOrderName(*actorder),
                                   "\" needs strategy \"group\", got \"",
                                   StrategyName(*strategy), "\""));
  }
  // 5. Dynamic quantization.
  if (dynamic != DynamicMode::kStatic) {
    const Strategy s = *strategy;
    if (s != Strategy::kToken && s != Strategy::kTensor &&
        s != Strategy::kTensorGroup && s != Strategy::kGroup) {
      return FieldError(
          "dynamic",
          absl::StrCat("dynamic quantization needs strategy token, tensor, "
                       "tensor_group or group, got \"",
                       StrategyName(s), "\""));
    }
    if (dynamic == DynamicMode::kLocal && s != Strategy::kTensorGroup) {
      return FieldError("dynamic",
                        absl::StrCat("dynamic \"local\" needs strategy "
                                     "\"tensor_group\", got \"",
                                     StrategyName(s), "\""));
    }
    if (dynamic == DynamicMode::kDynamic) {
      observer.reset();
    } else if (!observer.has_value()) {
      observer = "minmax";
    }
  }
  // 6. Default observer.
  if (dynamic == DynamicMode::kStatic && !observer.has_value()) {
    observer = "minmax";
  }
  // 7. Bit widths.
  if (type == QuantType::kFloat && num_bits != 4 && num_bits != 8) {
    return FieldError("num_bits",
                      absl::StrCat("type \"float\" needs num_bits 4 or 8, got ",
                                   num_bits));
  }
  if (type == QuantType::kInt && (num_bits < 1 || num_bits > 32)) {
    return FieldError(
        "num_bits",
        absl::StrCat("type \"int\" needs 1 <= num_bits <= 32, got ", num_bits));
  }
  // 8. Blocks.
  if (*strategy == Strategy::kBlock) {
    if (!block_structure.has_value()) {
      return FieldError("block_structure",
                        "strategy \"block\" needs a block_structure [rows, "
                        "cols]");
    }
    if ((*block_structure)[0] <= 0 || (*block_structure)[1] <= 0) {
      return FieldError(
          "block_structure",
          absl::StrCat("block dimensions must be positive, got [",
                       (*block_structure)[0], ", ", (*block_structure)[1],
                       "]"));
    }
  }
  return absl::OkStatus();
}

std::string QuantizationArgs::ToJson() const {
  nlohmann::ordered_json j;
  j["num_bits"] = num_bits;
  j["type"] = type == QuantType::kInt ? "int" : "float";
  j["symmetric"] = symmetric;
  j["group_size"] = group_size.has_value() ? Json(*group_size) : Json(nullptr);
  j["strategy"] = strategy.has_value() ? Json(std::string(StrategyName(*strategy)))
                                       : Json(nullptr);
  j["block_structure"] =
      block_structure.has_value()
          ? Json::array({(*block_structure)[0], (*block_structure)[1]})
          : Json(nullptr);
  switch (dynamic) {
    case DynamicMode::kStatic:
      j["dynamic"] = false;
      break;
    case DynamicMode::kDynamic:
      j["dynamic"] = true;
      break;
    case DynamicMode::kLocal:
      j["dynamic"] = "local";
      break;
  }
  j["actorder"] = actorder.has_value()
                      ? Json(std::string(ActOrderName(*actorder)))
                      : Json(nullptr);
  j["observer"] = observer.has_value() ? Json(*observer) : Json(nullptr);
  nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();
  for (const auto& [key, value] : observer_kwargs) kwargs[key] = value;
  j["observer_kwargs"] = kwargs;
  return j.dump();
}

absl::StatusOr<QuantizationArgs> ParseQuantizationArgs(absl::string_view text) {
  QCAL_ASSIGN_OR_RETURN(Json j, ParseJsonStrict(text, "QuantizationArgs"));
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "QuantizationArgs: expected a JSON object, got ", Quote(j)));
  }
  QuantizationArgs args;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const Json& value = it.value();
    if (key == "num_bits") {
      QCAL_ASSIGN_OR_RETURN(int64_t bits, Integer(value, key));
      if (bits < std::numeric_limits<int>::min() ||
          bits > std::numeric_limits<int>::max()) {
        return FieldError(key, absl::StrCat(bits, " is out of range"));
      }
      args.num_bits = static_cast<int>(bits);
    } else if (key == "type") {
      QCAL_ASSIGN_OR_RETURN(std::string type, LowerString(value, key));
      if (type == "int") {
        args.type = QuantType::kInt;
      } else if (type == "float") {
        args.type = QuantType::kFloat;
      } else {
        return FieldError(key, absl::StrCat("unknown type ", Quote(value),
                                            " (expected \"int\" or "
                                            "\"float\")"));
      }
    } else if (key == "symmetric") {
      if (!value.is_boolean()) {
        return FieldError(key,
                          absl::StrCat("expected true or false, got ",
                                       Quote(value)));
      }
      args.symmetric = value.get<bool>();
    } else if (key == "group_size") {
      if (value.is_null()) {
        args.group_size.reset();
      } else {
        QCAL_ASSIGN_OR_RETURN(args.group_size, Integer(value, key));
      }
    } else if (key == "strategy") {
      if (value.is_null()) {
        args.strategy.reset();
      } else {
        QCAL_ASSIGN_OR_RETURN(args.strategy, ParseStrategy(value));
      }
    } else if (key == "block_structure") {
      if (value.is_null()) {
        args.block_structure.reset();
      } else {
        QCAL_ASSIGN_OR_RETURN(args.block_structure,
                              ParseBlockStructure(value));
      }
    } else if (key == "dynamic") {
      if (value.is_boolean()) {
        args.dynamic =
            value.get<bool>() ? DynamicMode::kDynamic : DynamicMode::kStatic;
      } else if (value.is_string() &&
                 absl::AsciiStrToLower(value.get_ref<const std::string&>()) ==
                     "local") {
        args.dynamic = DynamicMode::kLocal;
      } else {
        return FieldError(key, absl::StrCat("expected true, false or "
                                            "\"local\", got ",
                                            Quote(value)));
      }
    } else if (key == "actorder") {
      if (value.is_null()) {
        args.actorder.reset();
      } else if (value.is_boolean()) {
        if (value.get<bool>()) {
          args.actorder = ActOrder::kGroup;
        } else {
          args.actorder.reset();
        }
      } else {
        QCAL_ASSIGN_OR_RETURN(std::string name, LowerString(value, key));
        QCAL_ASSIGN_OR_RETURN(args.actorder, ParseActOrderName(name, value));
      }
    } else if (key == "observer") {
      if (value.is_null()) {
        args.observer.reset();
      } else {
        QCAL_ASSIGN_OR_RETURN(args.observer, LowerString(value, key));
      }
    } else if (key == "observer_kwargs") {
      if (!value.is_null()) {
        QCAL_ASSIGN_OR_RETURN(
            args.observer_kwargs,
            KwargsFromJson(value, "QuantizationArgs.observer_kwargs"));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "QuantizationArgs: unknown key \"", key,
          "\" (known: num_bits, type, symmetric, group_size, strategy, "
          "block_structure, dynamic, actorder, observer, observer_kwargs)"));
    }
  }
  QCAL_RETURN_IF_ERROR(args.Validate());
  return args;
}

absl::StatusOr<ObserverKwargs> ParseObserverKwargs(absl::string_view text,
                                                   absl::string_view what) {
  QCAL_ASSIGN_OR_RETURN(Json j, ParseJsonStrict(text, what));
  return KwargsFromJson(j, what);
}

namespace {

struct Scheme {
  const char* name;
  int num_bits;
  QuantType type;
  bool symmetric;
  Strategy strategy;
  int64_t group_size;  // 0: none
  int64_t block;       // 0: none
};

constexpr Scheme kSchemes[] = {
    {"W8A16", 8, QuantType::kInt, true, Strategy::kChannel, 0, 0},
    {"W4A16", 4, QuantType::kInt, true, Strategy::kGroup, 128, 0},
    {"W4A16_ASYM", 4, QuantType::kInt, false, Strategy::kGroup, 128, 0},
    {"W8A8", 8, QuantType::kInt, true, Strategy::kChannel, 0, 0},
    {"INT8", 8, QuantType::kInt, true, Strategy::kChannel, 0, 0},
    {"W4A8", 4, QuantType::kInt, true, Strategy::kGroup, 128, 0},
    {"FP8", 8, QuantType::kFloat, true, Strategy::kTensor, 0, 0},
    {"FP8_DYNAMIC", 8, QuantType::kFloat, true, Strategy::kChannel, 0, 0},
    {"FP8_BLOCK", 8, QuantType::kFloat, true, Strategy::kBlock, 0, 128},
    {"NVFP4A16", 4, QuantType::kFloat, true, Strategy::kTensorGroup, 16, 0},
    {"NVFP4", 4, QuantType::kFloat, true, Strategy::kTensorGroup, 16, 0},
};

}  // namespace

std::vector<std::string> SchemeNames() {
  std::vector<std::string> names;
  for (const Scheme& s : kSchemes) names.emplace_back(s.name);
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<QuantizationArgs> QuantizationArgsFromScheme(
    absl::string_view name) {
  const std::string upper = absl::AsciiStrToUpper(name);
  for (const Scheme& s : kSchemes) {
    if (upper != s.name) continue;
    QuantizationArgs args;
    args.num_bits = s.num_bits;
    args.type = s.type;
    args.symmetric = s.symmetric;
    args.strategy = s.strategy;
    if (s.group_size > 0) args.group_size = s.group_size;
    if (s.block > 0) args.block_structure = std::array<int64_t, 2>{s.block, s.block};
    QCAL_RETURN_IF_ERROR(args.Validate());
    return args;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown scheme \"", name,
                   "\" (known: ", absl::StrJoin(SchemeNames(), ", "), ")"));
}

}  // namespace qcal
