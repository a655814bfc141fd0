#include "tools/token_count_lib.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/safetensors.h"
#include "core/status_macros.h"
#include "nlohmann/json.hpp"
#include "observers/observer.h"
#include "observers/token_count.h"
#include "tools/device_upload.h"

namespace qcal {
namespace {

constexpr absl::string_view kInputSuffix = ".input";

// Per-module state besides its observer.
struct ModuleState {
  int64_t batches_observed = 0;
  // Whether any observed batch was 2-D (a batch of another rank is observed
  // but not counted, SPEC §7).
  bool saw_2d = false;
  // The global scale that went with the last qparams (tensor_group).
  std::optional<float> global_scale;
};

std::string CountText(const std::optional<int64_t>& count) {
  return count.has_value() ? absl::StrCat(*count) : "none";
}

// Observes one activation of one batch with the module's observer.
absl::Status ObserveBatch(const SafetensorsFile& file,
                          const SafetensorsEntry& entry, Observer& observer,
                          Device device, ModuleState& state) {
  if (!IsObservableDType(entry.dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported dtype ", DTypeName(entry.dtype),
                     " for an activation (expected F32, F16 or BF16)"));
  }
  if (entry.shape.empty()) {
    return absl::InvalidArgumentError(
        "a 0-d activation has no hidden dimension (expected [tokens, hidden] "
        "or [batch, seq, hidden])");
  }
  TensorView host = file.View(entry);
  // SPEC §9.6: an empty batch is not observed.
  if (host.empty()) return absl::OkStatus();
  Tensor aligned;
  if (!IsAlignedFor(host)) {
    QCAL_ASSIGN_OR_RETURN(aligned, Tensor::CopyOf(host));
    host = aligned.view();
  }
  // Tokens are counted on the activation as recorded (2-D only); the qparams
  // see the leading dimensions flattened.
  observer.RecordObservedTokens(host);
  TensorView flat = host;
  if (host.rank() > 2) {
    QCAL_ASSIGN_OR_RETURN(flat, host.As2D());
  }
  DeviceCopy device_copy;
  QCAL_ASSIGN_OR_RETURN(flat, ToDevice(flat, device, &device_copy));
  std::optional<float> global_scale;
  if (observer.args().strategy_or_tensor() == Strategy::kTensorGroup) {
    // SPEC §11: the global scale from the (running) observer, then the
    // qparams with it; no reset, the statistics live across batches.
    QCAL_ASSIGN_OR_RETURN(global_scale, observer.GetGParam(flat));
  }
  QCAL_RETURN_IF_ERROR(
      observer.GetQParams(flat, nullptr, global_scale).status());
  state.global_scale = global_scale;
  ++state.batches_observed;
  if (host.rank() == 2) state.saw_2d = true;
  return absl::OkStatus();
}

}  // namespace

ToolResult RunTokenCount(const TokenCountOptions& options, std::ostream& out,
                         std::ostream& err,
                         std::map<std::string, ModuleSummary>* summary) {
  // ---- Usage checks.
  const bool use_sample = options.inputs.empty();
  absl::StatusOr<ResolvedArgs> resolved = ResolveArgs(
      options.args, use_sample ? kTokenCountDefaultScheme : "");
  if (!resolved.ok()) return ToolResult::Usage(resolved.status());
  const QuantizationArgs& args = resolved->args;
  absl::StatusOr<Device> device = ResolveBackend(options.backend);
  if (!device.ok()) return ToolResult::Usage(device.status());
  if (absl::Status s = CheckThreads(options.threads); !s.ok()) {
    return ToolResult::Usage(s);
  }
  if (absl::Status s = ApplyMemoryBudget(options.memory_budget_mb); !s.ok()) {
    return ToolResult::Usage(s);
  }
  const bool json = options.format == "json";
  if (!json && options.format != "table") {
    return ToolResult::Usage(absl::InvalidArgumentError(absl::StrCat(
        "--format: unknown format '", options.format,
        "' (expected table or json)")));
  }
  if (options.min_tokens < 0) {
    return ToolResult::Usage(absl::InvalidArgumentError(absl::StrCat(
        "--min_tokens=", options.min_tokens, " is negative")));
  }
  std::vector<std::string> inputs;
  if (use_sample) {
    if (options.sample_inputs.empty()) {
      return ToolResult::Runtime(absl::NotFoundError(absl::StrCat(
          "no --inputs given and the bundled sample batches are missing: ",
          options.sample_error.message())));
    }
    inputs = options.sample_inputs;
  } else {
    for (absl::string_view part : absl::StrSplit(options.inputs, ',')) {
      if (part.empty()) {
        return ToolResult::Usage(absl::InvalidArgumentError(absl::StrCat(
            "--inputs='", options.inputs, "' has an empty file name")));
      }
      inputs.push_back(ResolveUserPath(std::string(part), options.base_dir));
    }
  }
  const std::string output =
      options.output.empty() ? ""
                             : ResolveUserPath(options.output, options.base_dir);

  // ---- The batches, in order; one input observer per module.
  ObserverTree tree;
  std::map<std::string, ModuleState> states;
  ObserveOptions observe;
  observe.nonfinite = options.allow_nonfinite ? NonFinitePolicy::kSkip
                                              : NonFinitePolicy::kError;
  observe.exec.threads = options.threads;
  for (const std::string& path : inputs) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> opened =
        SafetensorsFile::Open(path);
    if (!opened.ok()) return ToolResult::Runtime(opened.status());
    const SafetensorsFile& file = **opened;
    std::vector<const SafetensorsEntry*> activations;
    std::vector<std::string> ignored;
    for (const SafetensorsEntry& entry : file.entries()) {
      if (absl::EndsWith(entry.name, kInputSuffix) &&
          entry.name.size() > kInputSuffix.size()) {
        activations.push_back(&entry);
      } else {
        ignored.push_back(entry.name);
      }
    }
    if (!ignored.empty()) {
      err << "token_count: " << path << ": ignoring " << ignored.size()
          << " tensors not named MODULE.input: "
          << absl::StrJoin(ignored, ", ") << "\n";
    }
    std::sort(activations.begin(), activations.end(),
              [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
                return a->name < b->name;
              });
    for (const SafetensorsEntry* entry : activations) {
      const std::string module =
          entry->name.substr(0, entry->name.size() - kInputSuffix.size());
      ModuleObservers& observers = tree[module];
      if (observers.input == nullptr) {
        absl::StatusOr<std::unique_ptr<Observer>> created =
            CreateObserver("", args);
        if (!created.ok()) {
          return ToolResult::Runtime(
              WithTensorContext(created.status(), path, entry->name));
        }
        observers.input = *std::move(created);
        ObserveOptions named = observe;
        named.tensor_name = entry->name;
        observers.input->set_options(named);
      }
      absl::Status status = ObserveBatch(file, *entry, *observers.input,
                                         *device, states[module]);
      (void)file.ReleasePages(entry->name);
      if (!status.ok()) {
        return ToolResult::Runtime(WithNonFiniteHint(
            WithTensorContext(status, path, entry->name)));
      }
    }
  }
  const std::map<std::string, std::optional<int64_t>> counts =
      GetObserverTokenCount(tree);

  // ---- --output: every module's last qparams, atomically.
  if (!output.empty()) {
    SafetensorsWriter writer(output);
    for (const auto& [key, value] : QParamsMetadata(args, "token_count")) {
      writer.SetMetadata(key, value);
    }
    std::vector<std::string> without;
    for (const auto& [module, observers] : tree) {
      const QParams* qparams = observers.input->qparams();
      if (qparams == nullptr) {
        without.push_back(module);
        continue;
      }
      absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> stored =
          StoredQParams(absl::StrCat(module, kInputSuffix), *qparams,
                        states[module].global_scale, args);
      if (!stored.ok()) return ToolResult::Runtime(stored.status());
      for (auto& [name, tensor] : *stored) {
        if (absl::Status s = writer.Add(name, std::move(tensor)); !s.ok()) {
          return ToolResult::Runtime(s);
        }
      }
    }
    if (absl::Status s = writer.Finish(); !s.ok()) {
      return ToolResult::Runtime(s);
    }
    err << "token_count: wrote the input qparams of "
        << tree.size() - without.size() << " modules to " << output << "\n";
    if (!without.empty()) {
      err << "token_count: no qparams for modules never observed: "
          << absl::StrJoin(without, ", ") << "\n";
    }
  }

  // ---- The counts.
  if (json) {
    nlohmann::json object = nlohmann::json::object();
    for (const auto& [module, count] : counts) {
      object[module] = count.has_value() ? nlohmann::json(*count)
                                         : nlohmann::json(nullptr);
    }
    out << object.dump() << "\n";
  } else {
    size_t width = 6;
    for (const auto& [module, count] : counts) {
      width = std::max(width, module.size());
    }
    const int64_t batches = static_cast<int64_t>(inputs.size());
    out << absl::StrFormat("%d batches, args %s: %s, observer %s\n\n",
                           batches, resolved->source, args.ToJson(),
                           *args.observer);
    out << absl::StrFormat("%-*s  %8s  %7s  %s\n", width, "module", "tokens",
                           "batches", "note");
    for (const auto& [module, count] : counts) {
      const ModuleState& state = states[module];
      std::string note;
      if (!count.has_value()) {
        note = state.batches_observed == 0
                   ? "* never saw a token: empty or absent in every batch"
                   : "* no token counted: its activations are not 2-D";
      }
      std::string row = absl::StrFormat(
          "%-*s  %8s  %7s  %s", width, module, CountText(count),
          absl::StrCat(state.batches_observed, "/", batches), note);
      out << absl::StripTrailingAsciiWhitespace(row) << "\n";
    }
  }
  if (summary != nullptr) {
    summary->clear();
    for (const auto& [module, count] : counts) {
      (*summary)[module] = {count, states[module].batches_observed};
    }
  }

  // ---- Coverage.
  if (options.min_tokens > 0) {
    std::ostream& report = json ? err : out;
    std::vector<std::string> below;
    size_t width = 0;
    for (const auto& [module, count] : counts) {
      if (count.value_or(0) < options.min_tokens) {
        below.push_back(module);
        width = std::max(width, module.size());
      }
    }
    report << "\ncoverage (--min_tokens=" << options.min_tokens << "): ";
    if (below.empty()) {
      report << "every module saw at least " << options.min_tokens
             << " tokens\n";
    } else {
      report << below.size() << " of " << counts.size()
             << " modules saw fewer than " << options.min_tokens
             << " tokens:\n";
      for (const std::string& module : below) {
        report << absl::StrFormat("  %-*s  %s\n", width, module,
                                  CountText(counts.at(module)));
      }
      return {kExitCoverage,
              absl::FailedPreconditionError(absl::StrCat(
                  below.size(), " modules saw fewer than --min_tokens=",
                  options.min_tokens, " tokens"))};
    }
  }
  return ToolResult::Ok();
}

}  // namespace qcal
