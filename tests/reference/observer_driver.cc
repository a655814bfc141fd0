// observer_driver: a test-only stand-in for the `calibrate` and `token_count`
// tools (SPEC §11), built directly on the Observer API, so that the Python
// reference (tests/reference/qcal_reference.py) can be compared bit for bit
// with the C++ observers before the real tools exist.
//
//   observer_driver calibrate --input=IN --output=OUT (--scheme=S | --args=JSON)
//       [--observer=NAME] [--observer_kwargs=JSON] [--threads=N]
//   observer_driver token_count --inputs=B0,B1,... [--output=QP] [--format=json]
//       (--scheme=S | --args=JSON) [--observer=NAME] [--observer_kwargs=JSON]
//
// Only the flags the comparison harness uses are implemented (default
// targets: names ending in ".weight"; 2-D F32/F16/BF16 tensors). One
// extension over `calibrate`: an I32/I64 tensor "<name>_g_idx" in the input is
// passed as the g_idx of weight <name> (activation ordering). Storage per
// SPEC §10 through the tools' StoredQParams. Exit codes: 0
// success, 2 usage error, 1 runtime error; on error the output is untouched.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/dtype.h"
#include "core/float_convert.h"
#include "core/quant_args.h"
#include "core/safetensors.h"
#include "core/status_macros.h"
#include "core/tensor.h"
#include "observers/observer.h"
#include "tools/cli_common.h"

namespace qcal {
namespace {

struct Flags {
  std::map<std::string, std::string> values;
  bool Has(const std::string& k) const { return values.count(k) > 0; }
  std::string Get(const std::string& k) const {
    auto it = values.find(k);
    return it == values.end() ? "" : it->second;
  }
};

struct UsageError {
  std::string message;
};

// Resolves args, kwargs and the observer name; usage errors come back as
// InvalidArgument with a "usage: " prefix.
absl::StatusOr<QuantizationArgs> ResolveArgs(const Flags& flags) {
  if (flags.Has("scheme") == flags.Has("args")) {
    return absl::InvalidArgumentError("usage: exactly one of --scheme, --args");
  }
  absl::StatusOr<QuantizationArgs> args =
      flags.Has("scheme") ? QuantizationArgsFromScheme(flags.Get("scheme"))
                          : ParseQuantizationArgs(flags.Get("args"));
  if (!args.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("usage: ", args.status().message()));
  }
  if (flags.Has("observer_kwargs")) {
    absl::StatusOr<ObserverKwargs> kw =
        ParseObserverKwargs(flags.Get("observer_kwargs"), "--observer_kwargs");
    if (!kw.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("usage: ", kw.status().message()));
    }
    args->observer_kwargs = *kw;
  }
  return args;
}

absl::StatusOr<std::unique_ptr<Observer>> MakeObserver(
    const Flags& flags, const QuantizationArgs& args,
    const std::string& tensor) {
  absl::StatusOr<std::unique_ptr<Observer>> obs =
      CreateObserver(flags.Get("observer"), args);
  if (!obs.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("usage: ", obs.status().message()));
  }
  ObserveOptions options;
  options.tensor_name = tensor;
  int threads = 1;
  if (flags.Has("threads") && !absl::SimpleAtoi(flags.Get("threads"), &threads)) {
    return absl::InvalidArgumentError("usage: bad --threads");
  }
  options.exec.threads = threads;
  (*obs)->set_options(options);
  return obs;
}

// SPEC §10 storage of one tensor's qparams: the tools' own function.
absl::Status AddQParams(const std::string& prefix, const QParams& qp,
                        const QuantizationArgs& args,
                        std::optional<float> global_scale,
                        std::vector<std::pair<std::string, Tensor>>* out) {
  QCAL_ASSIGN_OR_RETURN(auto stored,
                        StoredQParams(prefix, qp, global_scale, args));
  for (auto& entry : stored) out->push_back(std::move(entry));
  return absl::OkStatus();
}

bool Observable(const SafetensorsEntry& e) {
  return e.dtype == DType::kF32 || e.dtype == DType::kF16 ||
         e.dtype == DType::kBF16;
}

absl::StatusOr<Tensor> Load(const SafetensorsFile& file,
                            const SafetensorsEntry& e) {
  return Tensor::CopyOf(file.View(e));
}

absl::Status Calibrate(const Flags& flags) {
  QCAL_ASSIGN_OR_RETURN(QuantizationArgs args, ResolveArgs(flags));
  // Validate the observer name and kwargs before reading anything.
  QCAL_RETURN_IF_ERROR(MakeObserver(flags, args, "").status());
  QCAL_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                        SafetensorsFile::Open(flags.Get("input")));
  std::vector<const SafetensorsEntry*> entries;
  for (const SafetensorsEntry& e : file->entries()) entries.push_back(&e);
  std::sort(entries.begin(), entries.end(),
            [](auto* a, auto* b) { return a->name < b->name; });
  std::vector<std::pair<std::string, Tensor>> out;
  for (const SafetensorsEntry* e : entries) {
    if (!absl::EndsWith(e->name, ".weight") || !Observable(*e) ||
        e->shape.size() != 2) {
      continue;
    }
    QCAL_ASSIGN_OR_RETURN(Tensor x, Load(*file, *e));
    if (x.numel() == 0) continue;
    QCAL_ASSIGN_OR_RETURN(std::unique_ptr<Observer> obs,
                          MakeObserver(flags, args, e->name));
    std::optional<float> g;
    if (args.strategy_or_tensor() == Strategy::kTensorGroup) {
      QCAL_ASSIGN_OR_RETURN(float gs, obs->GetGParam(x.view()));
      g = gs;
      obs->Reset();
    }
    Tensor g_idx;
    const SafetensorsEntry* gi = file->Find(e->name + "_g_idx");
    if (gi != nullptr) {
      QCAL_ASSIGN_OR_RETURN(g_idx, Load(*file, *gi));
    }
    TensorView g_idx_view = g_idx.view();
    QCAL_ASSIGN_OR_RETURN(
        const QParams* qp,
        obs->GetQParams(x.view(), gi != nullptr ? &g_idx_view : nullptr, g));
    QCAL_RETURN_IF_ERROR(AddQParams(e->name, *qp, args, g, &out));
  }
  std::map<std::string, std::string> meta = {
      {"quantization_args", args.ToJson()},
      {"observer", flags.Has("observer") ? flags.Get("observer")
                                         : args.observer.value_or("")}};
  return WriteSafetensors(flags.Get("output"), std::move(out), meta);
}

absl::Status TokenCount(const Flags& flags) {
  QCAL_ASSIGN_OR_RETURN(QuantizationArgs args, ResolveArgs(flags));
  QCAL_RETURN_IF_ERROR(MakeObserver(flags, args, "").status());
  std::map<std::string, std::unique_ptr<Observer>> observers;
  struct Last {
    QParams qp;
    std::optional<float> g;
  };
  std::map<std::string, Last> last;
  for (absl::string_view path : absl::StrSplit(flags.Get("inputs"), ',')) {
    QCAL_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                          SafetensorsFile::Open(std::string(path)));
    std::vector<const SafetensorsEntry*> entries;
    for (const SafetensorsEntry& e : file->entries()) entries.push_back(&e);
    std::sort(entries.begin(), entries.end(),
              [](auto* a, auto* b) { return a->name < b->name; });
    for (const SafetensorsEntry* e : entries) {
      if (!absl::EndsWith(e->name, ".input") || !Observable(*e)) continue;
      std::string module = e->name.substr(0, e->name.size() - 6);
      auto& obs = observers[module];
      if (obs == nullptr) {
        QCAL_ASSIGN_OR_RETURN(obs, MakeObserver(flags, args, e->name));
      }
      QCAL_ASSIGN_OR_RETURN(Tensor x, Load(*file, *e));
      if (x.numel() == 0) continue;
      obs->RecordObservedTokens(x.view());
      QCAL_ASSIGN_OR_RETURN(TensorView x2, x.view().As2D());
      std::optional<float> g;
      if (args.strategy_or_tensor() == Strategy::kTensorGroup) {
        QCAL_ASSIGN_OR_RETURN(float gs, obs->GetGParam(x2));
        g = gs;
      }
      QCAL_ASSIGN_OR_RETURN(const QParams* qp, obs->GetQParams(x2, nullptr, g));
      QCAL_ASSIGN_OR_RETURN(Tensor s, Tensor::CopyOf(qp->scale.view()));
      QCAL_ASSIGN_OR_RETURN(Tensor z, Tensor::CopyOf(qp->zero_point.view()));
      last[module] = Last{QParams{std::move(s), std::move(z)}, g};
    }
  }
  std::string json = "{";
  bool first = true;
  for (const auto& [module, obs] : observers) {
    std::optional<int64_t> n = obs->num_observed_tokens();
    absl::StrAppend(&json, first ? "" : ", ", "\"", module, "\": ",
                    n.has_value() ? absl::StrCat(*n) : "null");
    first = false;
  }
  json += "}";
  if (flags.Has("output")) {
    std::vector<std::pair<std::string, Tensor>> out;
    for (const auto& [module, l] : last) {
      QCAL_RETURN_IF_ERROR(
          AddQParams(module + ".input", l.qp, args, l.g, &out));
    }
    QCAL_RETURN_IF_ERROR(WriteSafetensors(
        flags.Get("output"), std::move(out),
        {{"quantization_args", args.ToJson()}}));
  }
  std::printf("%s\n", json.c_str());
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: observer_driver calibrate|token_count FLAGS\n");
    return 2;
  }
  std::string mode = argv[1];
  Flags flags;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    size_t eq = a.find('=');
    if (a.rfind("--", 0) != 0 || eq == std::string::npos) {
      std::fprintf(stderr, "observer_driver: bad flag '%s'\n", a.c_str());
      return 2;
    }
    flags.values[a.substr(2, eq - 2)] = a.substr(eq + 1);
  }
  absl::Status status;
  if (mode == "calibrate") {
    status = Calibrate(flags);
  } else if (mode == "token_count") {
    status = TokenCount(flags);
  } else {
    std::fprintf(stderr, "observer_driver: unknown mode '%s'\n", mode.c_str());
    return 2;
  }
  if (status.ok()) return 0;
  std::string message(status.message());
  std::fprintf(stderr, "observer_driver %s: %s\n", mode.c_str(),
               message.c_str());
  return absl::StartsWith(message, "usage: ") ? 2 : 1;
}

}  // namespace
}  // namespace qcal

int main(int argc, char** argv) { return qcal::Main(argc, argv); }
