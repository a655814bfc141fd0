#include "tools/cli_common.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/backend.h"
#include "core/memory_budget.h"
#include "core/float_convert.h"
#include "core/element_access.h"
#include "core/status_macros.h"
#include "gflags/gflags.h"
#include "tools/cpp/runfiles/runfiles.h"
#include "tools/device_upload.h"

namespace qcal {

// ------------------------------------------------------------ flag parsing

absl::StatusOr<FlagParse> ParseFlagsStrictly(int argc, char** argv) {
  FlagParse parse;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") {
      if (i + 1 < argc) {
        return absl::InvalidArgumentError(absl::StrCat(
            "unexpected positional argument '", argv[i + 1],
            "': every input is given by a flag (see --help)"));
      }
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected positional argument '", arg,
                       "': every input is given by a flag (see --help)"));
    }
    const size_t dashes = arg[1] == '-' ? 2 : 1;
    const std::string body = arg.substr(dashes);
    const size_t eq = body.find('=');
    const std::string name = body.substr(0, eq);
    const bool has_value = eq != std::string::npos;
    std::string value = has_value ? body.substr(eq + 1) : "";
    if (name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("malformed flag '", arg, "'"));
    }
    if (name == "help" || name == "helpfull" || name == "helpshort") {
      parse.help = true;
      continue;
    }
    gflags::CommandLineFlagInfo info;
    std::string flag_name = name;
    if (!gflags::GetCommandLineFlagInfo(name.c_str(), &info)) {
      // --noNAME for a bool flag NAME.
      gflags::CommandLineFlagInfo negated;
      if (absl::StartsWith(name, "no") && !has_value &&
          gflags::GetCommandLineFlagInfo(name.c_str() + 2, &negated) &&
          negated.type == "bool") {
        flag_name = name.substr(2);
        info = negated;
        value = "false";
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown flag --", name, " (see --help)"));
      }
    } else if (!has_value) {
      if (info.type == "bool") {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("flag --", name, " needs a value"));
      }
    }
    if (gflags::SetCommandLineOption(flag_name.c_str(), value.c_str())
            .empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid value '", value, "' for flag --", flag_name,
                       " (of type ", info.type, ")"));
    }
  }
  return parse;
}

void PrintToolHelp(const char* argv0, const char* flags_file) {
  gflags::ShowUsageWithFlagsRestrict(argv0, flags_file);
}

// ------------------------------------------------------------------- args

absl::StatusOr<ResolvedArgs> ResolveArgs(const ArgsFlags& flags,
                                         absl::string_view default_scheme) {
  const bool has_scheme = !flags.scheme.empty();
  const bool has_args = !flags.args_json.empty();
  if (has_scheme && has_args) {
    return absl::InvalidArgumentError(
        "give either --scheme or --args, not both");
  }
  ResolvedArgs resolved;
  if (has_args) {
    absl::StatusOr<QuantizationArgs> args =
        ParseQuantizationArgs(flags.args_json);
    if (!args.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--args: ", args.status().message()));
    }
    resolved.args = *std::move(args);
    resolved.source = "--args";
  } else {
    std::string scheme = flags.scheme;
    if (!has_scheme) {
      if (default_scheme.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "give one of --scheme (", absl::StrJoin(SchemeNames(), ", "),
            ") or --args (a QuantizationArgs JSON object)"));
      }
      scheme = std::string(default_scheme);
    }
    absl::StatusOr<QuantizationArgs> args = QuantizationArgsFromScheme(scheme);
    if (!args.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--scheme: ", args.status().message()));
    }
    resolved.args = *std::move(args);
    resolved.source = absl::StrCat("scheme ", absl::AsciiStrToUpper(scheme));
  }
  QuantizationArgs& args = resolved.args;
  if (args.dynamic == DynamicMode::kDynamic) {
    return absl::InvalidArgumentError(absl::StrCat(
        resolved.source == "--args" ? "--args" : "--scheme",
        ": the args are dynamic (\"dynamic\": true): their qparams are "
        "computed at inference time, there is nothing to calibrate"));
  }
  if (!flags.observer.empty()) {
    args.observer = absl::AsciiStrToLower(flags.observer);
  }
  if (!flags.observer_kwargs.empty()) {
    absl::StatusOr<ObserverKwargs> kwargs =
        ParseObserverKwargs(flags.observer_kwargs, "--observer_kwargs");
    if (!kwargs.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--observer_kwargs: ", kwargs.status().message()));
    }
    args.observer_kwargs = *std::move(kwargs);
  }
  // Creating the observer once checks its name, its kwargs and that the math
  // can compute these args (asymmetric fp4 cannot).
  absl::StatusOr<std::unique_ptr<Observer>> observer = CreateObserver("", args);
  if (!observer.ok()) {
    // Blame the flag that most likely caused it.
    const absl::StatusCode code = observer.status().code();
    std::string flag = has_args ? "--args" : "--scheme";
    if (code == absl::StatusCode::kNotFound && !flags.observer.empty()) {
      flag = "--observer";
    } else if (code == absl::StatusCode::kInvalidArgument &&
               !flags.observer_kwargs.empty()) {
      flag = "--observer_kwargs";
    }
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", observer.status().message()));
  }
  args.observer = (*observer)->name();
  return resolved;
}

absl::StatusOr<Device> ResolveBackend(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "cpu") return Device::kCpu;
  if (lower != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--backend: unknown backend '", name, "' (expected cpu or cuda)"));
  }
  absl::StatusOr<const BackendOps*> backend = GetBackend(Device::kCuda);
  if (!backend.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--backend=cuda is not usable in this program: ",
        backend.status().message(), "; use --backend=cpu"));
  }
  if (FindDeviceUpload(Device::kCuda) == nullptr) {
    return absl::InvalidArgumentError(
        "--backend=cuda is not usable in this program: it was built without "
        "a CUDA toolkit, so it cannot copy tensors to a GPU (use "
        "--backend=cpu)");
  }
  if (absl::Status probe = ProbeDevice(Device::kCuda); !probe.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--backend=cuda is not usable on this machine: ", probe.message(),
        "; use --backend=cpu"));
  }
  return Device::kCuda;
}

absl::Status CheckThreads(int threads) {
  if (threads < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--threads=", threads, " is negative (0 means every core)"));
  }
  return absl::OkStatus();
}

absl::Status ApplyMemoryBudget(int64_t megabytes) {
  if (megabytes < 0 || megabytes > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--memory_budget_mb=", megabytes,
        " is out of range (0 means unlimited)"));
  }
  SetTensorMemoryBudget(megabytes << 20);
  return absl::OkStatus();
}

// ------------------------------------------------------------ paths, names

std::string ResolveUserPath(const std::string& path,
                            const std::string& base_dir) {
  if (path.empty() || path[0] == '/' || base_dir.empty()) return path;
  if (base_dir.back() == '/') return base_dir + path;
  return base_dir + "/" + path;
}

absl::StatusOr<std::string> FindRunfile(const std::string& argv0,
                                        const std::string& rlocation) {
  using bazel::tools::cpp::runfiles::Runfiles;
  std::string error;
  std::unique_ptr<Runfiles> runfiles(Runfiles::Create(argv0, &error));
  if (runfiles == nullptr) {
    return absl::NotFoundError(absl::StrCat(
        "cannot find the runfiles of ", argv0, ": ", error));
  }
  std::string path = runfiles->Rlocation(rlocation);
  if (path.empty() || access(path.c_str(), R_OK) != 0) {
    return absl::NotFoundError(
        absl::StrCat("runfile ", rlocation, " not found (run the program "
                     "with bazel run, or from bazel-bin/)"));
  }
  return path;
}

namespace {

absl::StatusOr<std::shared_ptr<const std::regex>> CompileRegex(
    absl::string_view flag, const std::string& pattern) {
  // std::regex reports a bad pattern only by throwing; this is the one place
  // that turns the exception into a Status.
  try {
    return std::make_shared<const std::regex>(pattern,
                                              std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": invalid regular expression '", pattern, "': ", e.what()));
  }
}

bool SafeSearch(const std::string& name, const std::regex& re) {
  try {
    return std::regex_search(name, re);
  } catch (const std::regex_error&) {
    // Only error_complexity / error_stack can reach here, on pathological
    // patterns; such a name is not selected.
    return false;
  }
}

}  // namespace

absl::StatusOr<NameFilter> NameFilter::Create(const std::string& targets,
                                              const std::string& ignore) {
  NameFilter filter;
  QCAL_ASSIGN_OR_RETURN(filter.targets_, CompileRegex("--targets", targets));
  if (!ignore.empty()) {
    QCAL_ASSIGN_OR_RETURN(filter.ignore_, CompileRegex("--ignore", ignore));
  }
  return filter;
}

bool NameFilter::Selects(const std::string& name) const {
  if (!SafeSearch(name, *targets_)) return false;
  return ignore_ == nullptr || !SafeSearch(name, *ignore_);
}

// ---------------------------------------------------------------- storage

absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> StoredQParams(
    absl::string_view prefix, const QParams& qparams,
    std::optional<float> global_scale, const QuantizationArgs& args) {
  std::vector<std::pair<std::string, Tensor>> out;
  Tensor scale;
  if (args.is_fp4() && qparams.scale.dtype() != DType::kF8E4M3FN) {
    QCAL_ASSIGN_OR_RETURN(FloatFormat format,
                          FloatFormatOf(qparams.scale.dtype()));
    QCAL_ASSIGN_OR_RETURN(scale, Tensor::Zeros(DType::kF8E4M3FN,
                                               qparams.scale.shape()));
    uint8_t* dst = scale.mutable_data_as<uint8_t>();
    for (int64_t i = 0; i < scale.numel(); ++i) {
      const float v = DispatchFormat(format, [&](auto f) {
        return LoadAs<decltype(f)::value>(qparams.scale.data(), i);
      });
      // As compressed-tensors stores it: PyTorch's cast, where a scale beyond
      // the fp8 range (only reachable without a global scale) becomes NaN.
      dst[i] = FloatToE4m3fnBitsLikeTorch(v);
    }
  } else {
    QCAL_ASSIGN_OR_RETURN(scale, Tensor::CopyOf(qparams.scale.view()));
  }
  const DType zp_dtype = args.ZeroPointDType();
  if (qparams.zero_point.dtype() != zp_dtype) {
    return absl::InternalError(absl::StrCat(
        prefix, ": zero point of dtype ", DTypeName(qparams.zero_point.dtype()),
        ", expected ", DTypeName(zp_dtype)));
  }
  QCAL_ASSIGN_OR_RETURN(Tensor zero_point,
                        Tensor::CopyOf(qparams.zero_point.view()));
  out.emplace_back(absl::StrCat(prefix, "_scale"), std::move(scale));
  out.emplace_back(absl::StrCat(prefix, "_zero_point"), std::move(zero_point));
  if (global_scale.has_value()) {
    QCAL_ASSIGN_OR_RETURN(Tensor g, Tensor::Zeros(DType::kF32, {1}));
    g.mutable_data_as<float>()[0] = *global_scale;
    out.emplace_back(absl::StrCat(prefix, "_global_scale"), std::move(g));
  }
  return out;
}

std::map<std::string, std::string> QParamsMetadata(
    const QuantizationArgs& args, absl::string_view tool) {
  return {
      {"quantization_args", args.ToJson()},
      {"observer", args.observer.value_or("")},
      {"qcal_tool", std::string(tool)},
  };
}

absl::Status WithTensorContext(const absl::Status& status,
                               absl::string_view file,
                               absl::string_view tensor) {
  if (status.ok()) return status;
  const std::string quoted = absl::StrCat("'", tensor, "'");
  std::string message =
      absl::StrContains(status.message(), quoted)
          ? absl::StrCat(file, ": ", status.message())
          : absl::StrCat(file, ": tensor ", quoted, ": ", status.message());
  return absl::Status(status.code(), message);
}

absl::Status WithNonFiniteHint(const absl::Status& status) {
  if (status.ok() || !absl::StrContains(status.message(), "non-finite")) {
    return status;
  }
  // The observers word the hint for library callers; name the flag instead.
  const std::string kLibraryHint = "allow non-finite values to skip them";
  const std::string kFlagHint = "pass --allow_nonfinite to skip them";
  std::string message(status.message());
  const size_t at = message.find(kLibraryHint);
  if (at != std::string::npos) {
    message.replace(at, kLibraryHint.size(), kFlagHint);
  } else {
    absl::StrAppend(&message, "; ", kFlagHint);
  }
  return absl::Status(status.code(), message);
}

// --------------------------------------------------------------- progress

ProgressBar::ProgressBar(std::ostream& out, bool enabled, int64_t total,
                         std::chrono::milliseconds delay)
    : out_(out),
      enabled_(enabled),
      total_(total),
      delay_(delay),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() { Clear(); }

void ProgressBar::Update(int64_t done, absl::string_view item) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - start_ < delay_) return;
  if (drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  const double elapsed =
      std::chrono::duration<double>(now - start_).count();
  out_ << "\r" << FormatLine(done, total_, elapsed, item, 100) << "\033[K";
  out_.flush();
  drawn_ = true;
  last_draw_ = now;
}

void ProgressBar::Clear() {
  if (!drawn_) return;
  out_ << "\r\033[K";
  out_.flush();
  drawn_ = false;
}

namespace {

std::string FormatDuration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) {
    return absl::StrFormat("%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
  }
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

}  // namespace

std::string ProgressBar::FormatLine(int64_t done, int64_t total,
                                    double elapsed_seconds,
                                    absl::string_view item, int width) {
  constexpr int kBarWidth = 24;
  const double fraction =
      total > 0 ? std::clamp(static_cast<double>(done) / total, 0.0, 1.0)
                : 1.0;
  const int filled = static_cast<int>(fraction * kBarWidth);
  std::string eta = "?";
  if (done > 0 && total > 0) {
    eta = FormatDuration(elapsed_seconds * (1.0 - fraction) / fraction);
  }
  std::string line = absl::StrFormat(
      "[%s%s] %3d%%  %s/%s  ETA %s  ", std::string(filled, '#'),
      std::string(kBarWidth - filled, '-'),
      static_cast<int>(fraction * 100.0), FormatBytes(done),
      FormatBytes(total), eta);
  if (static_cast<int>(line.size()) + 8 < width) {
    const size_t room = width - line.size();
    if (item.size() > room) {
      // Keep the end of the name, where the layer and projection are.
      line += absl::StrCat("...", item.substr(item.size() - (room - 3)));
    } else {
      absl::StrAppend(&line, item);
    }
  }
  return line.substr(0, width);
}

std::string FormatBytes(int64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = -1;
  while (v >= 1024.0 && u < 3) {
    v /= 1024.0;
    ++u;
  }
  return absl::StrFormat("%.1f %s", v, units[u]);
}

int64_t PeakRssBytes() {
  struct rusage usage;
  if (getrusage(RUSAGE_SELF, &usage) != 0) return 0;
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux: KiB
}

}  // namespace qcal
