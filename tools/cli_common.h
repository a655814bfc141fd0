// What the command-line tools (`calibrate`, `token_count`) share (SPEC §11):
// exit codes, strict gflags parsing, resolving the quantization args from the
// args flags, the backend flag, path and regex handling, the SPEC §10 storage
// form of qparams, and the terminal progress bar.
//
// The tools' logic lives in libraries (calibrate_lib.h, token_count_lib.h)
// that return a ToolResult; their main()s only parse flags and print.
#ifndef QCAL_TOOLS_CLI_COMMON_H_
#define QCAL_TOOLS_CLI_COMMON_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/qparams.h"
#include "core/quant_args.h"
#include "core/tensor.h"
#include "observers/observer.h"

namespace qcal {

// kExitOk .. kExitCoverage are the tools' exit codes (SPEC §11).
inline constexpr int kExitOk = 0;
// kExitRuntimeError: unreadable or malformed file, unsupported dtype,
// non-finite data, shape error, failed write.
inline constexpr int kExitRuntimeError = 1;
// kExitUsageError: bad flag or flag value, bad args JSON, unknown observer or
// scheme, invalid args combination, unknown kwarg.
inline constexpr int kExitUsageError = 2;
// kExitCoverage: token_count --min_tokens found modules with too few tokens.
inline constexpr int kExitCoverage = 3;

// ToolResult is what a tool run ends with: the exit code and, for codes 1
// and 2, the error (its message names the file and tensor, or the flag).
struct ToolResult {
  int exit_code = kExitOk;
  absl::Status status;

  // Ok is exit code 0.
  static ToolResult Ok() { return {}; }
  // Usage is exit code 2 with `status`.
  static ToolResult Usage(absl::Status status) {
    return {kExitUsageError, std::move(status)};
  }
  // Runtime is exit code 1 with `status`.
  static ToolResult Runtime(absl::Status status) {
    return {kExitRuntimeError, std::move(status)};
  }
};

// FlagParse is what ParseFlagsStrictly found besides the flag values.
struct FlagParse {
  // help is true when --help (or --helpfull, --helpshort) was given.
  bool help = false;
};

// ParseFlagsStrictly sets the gflags flags from argv[1..] and returns a
// usage error (to be reported with exit code 2; gflags' own parser exits 1)
// for an unknown flag, a value the flag's type rejects, a bool flag given a
// value in the "--flag value" form, a missing value, or a positional
// argument. Accepted forms: --name=value, -name=value, --name value (non-bool
// flags), --name and --noname (bool flags), and "--" (after which anything
// is a positional argument, hence an error).
absl::StatusOr<FlagParse> ParseFlagsStrictly(int argc, char** argv);

// PrintToolHelp writes the usage message (gflags::SetUsageMessage) and the
// descriptions of the flags defined in source files whose path contains
// `flags_file` to stdout.
void PrintToolHelp(const char* argv0, const char* flags_file);

// ArgsFlags are the flags that choose the quantization args (SPEC §11).
struct ArgsFlags {
  // scheme is --scheme (a preset name, SPEC §2), or empty.
  std::string scheme;
  // args_json is --args (a QuantizationArgs JSON object), or empty.
  std::string args_json;
  // observer is --observer (overrides args.observer), or empty.
  std::string observer;
  // observer_kwargs is --observer_kwargs (a JSON object that replaces
  // args.observer_kwargs), or empty.
  std::string observer_kwargs;
};

// ToolCommonOptions are the options every tool takes.
struct ToolCommonOptions {
  // base_dir resolves relative paths (bazel run's BUILD_WORKING_DIRECTORY);
  // empty: the current directory.
  std::string base_dir;
  // args are --scheme, --args, --observer, --observer_kwargs.
  ArgsFlags args;
  // backend, threads, allow_nonfinite are the flags of the same names.
  std::string backend = "cpu";
  int threads = 0;
  bool allow_nonfinite = false;
  // memory_budget_mb caps the memory of tensors the tool allocates (0:
  // unlimited): beyond it, a clear error instead of exhausting the machine.
  int64_t memory_budget_mb = 0;
};

// ResolvedArgs are validated args with the observer they name.
struct ResolvedArgs {
  // args are the validated args after the --observer / --observer_kwargs
  // overrides; args.observer is the observer's registry name.
  QuantizationArgs args;
  // source says where the args came from: "scheme W4A16" or "--args".
  std::string source;
};

// ResolveArgs builds the args from the flags. Exactly one of --scheme and
// --args must be given, except that `default_scheme` (when not empty) is
// used when neither is. --observer is lower-cased and replaces args.observer;
// --observer_kwargs replaces args.observer_kwargs. The result is checked by
// creating its observer once. Every error is a usage error naming the flag:
// both or neither of --scheme/--args, an unknown scheme, malformed args JSON
// or an invalid combination, dynamic args (nothing to calibrate), an unknown
// observer, an unknown or out-of-range kwarg, args the math cannot compute.
absl::StatusOr<ResolvedArgs> ResolveArgs(const ArgsFlags& flags,
                                         absl::string_view default_scheme);

// ResolveBackend maps --backend to a device: "cpu", or "cuda" when the CUDA
// backend (GetBackend) and a device upload (tools/device_upload.h) are linked
// into the program. Anything else is a usage error naming the flag and
// saying why the backend is unusable.
absl::StatusOr<Device> ResolveBackend(absl::string_view name);

// CheckThreads validates --threads (>= 0; 0 means every core).
absl::Status CheckThreads(int threads);

// ApplyMemoryBudget validates --memory_budget_mb and sets the process's
// tensor memory budget (core/memory_budget.h; 0: unlimited). The memory
// mapping of an input file does not count against it.
absl::Status ApplyMemoryBudget(int64_t megabytes);

// ResolveUserPath makes a relative `path` relative to `base_dir` (when not
// empty; `bazel run` passes the invoking directory as BUILD_WORKING_DIRECTORY)
// and returns absolute or empty paths unchanged.
std::string ResolveUserPath(const std::string& path,
                            const std::string& base_dir);

// FindRunfile returns the path of runfile `rlocation` ("qcal/tools/...") of
// the program started as `argv0`, or NotFound.
absl::StatusOr<std::string> FindRunfile(const std::string& argv0,
                                        const std::string& rlocation);

// NameFilter selects tensor names: a name is selected when the `targets`
// regex matches somewhere in it (std::regex ECMAScript grammar,
// std::regex_search semantics: anchor with ^ and $ to match whole names)
// and the `ignore` regex (when not empty) does not.
class NameFilter {
 public:
  // Create compiles the patterns; an invalid one is a usage error naming
  // its flag.
  static absl::StatusOr<NameFilter> Create(const std::string& targets,
                                           const std::string& ignore);
  // Selects reports whether `name` is selected.
  bool Selects(const std::string& name) const;

 private:
  std::shared_ptr<const std::regex> targets_;
  std::shared_ptr<const std::regex> ignore_;
};

// kDefaultTargets is the default --targets: names ending in ".weight".
inline constexpr char kDefaultTargets[] = R"(\.weight$)";

// StoredQParams converts an observer's qparams into the tensors of a qparams
// file (SPEC §10), named `prefix` + "_scale", "_zero_point" and, when
// `global_scale` is set, "_global_scale". Dtypes: for float 4-bit args the
// scale and zero point are F8_E4M3 (each scale rounded to nearest-even e4m3;
// the observers' fp4 scales are fp8 values already); otherwise the scale
// keeps its dtype (the observed one) and the zero point args.ZeroPointDType();
// the global scale is F32 [1].
absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> StoredQParams(
    absl::string_view prefix, const QParams& qparams,
    std::optional<float> global_scale, const QuantizationArgs& args);

// QParamsMetadata is the "__metadata__" of a qparams file: the args JSON
// ("quantization_args", args.ToJson()), the observer name ("observer") and
// the tool that wrote it ("qcal_tool").
std::map<std::string, std::string> QParamsMetadata(
    const QuantizationArgs& args, absl::string_view tool);

// WithTensorContext prefixes an error about tensor `tensor` of `file` so that
// the message names both: "FILE: tensor 'NAME': ..." (the tensor part is
// left out when the message already quotes the tensor name).
absl::Status WithTensorContext(const absl::Status& status,
                               absl::string_view file,
                               absl::string_view tensor);

// WithNonFiniteHint makes an error about non-finite data name the flag that
// skips such values ("pass --allow_nonfinite to skip them"); other errors are
// returned unchanged.
absl::Status WithNonFiniteHint(const absl::Status& status);

// ProgressBar draws "[#####-----]  42%  1.2/3.0 GiB  ETA 0:05  NAME" on a
// terminal, rewriting one line with '\r'. Nothing is drawn when disabled, nor
// before `delay` has passed since construction (short runs stay quiet).
class ProgressBar {
 public:
  // ProgressBar tracks `total` units (bytes) and writes to `out` when
  // `enabled`.
  ProgressBar(std::ostream& out, bool enabled, int64_t total,
              std::chrono::milliseconds delay = std::chrono::milliseconds(500));
  ~ProgressBar();

  // Update reports `done` units and the item in progress; redraws at most
  // every 100 ms.
  void Update(int64_t done, absl::string_view item);
  // Clear erases the bar's line (call before writing other lines to the same
  // terminal); the next Update draws it again.
  void Clear();

  // FormatLine is the bar's text for `done` of `total` units after
  // `elapsed` seconds, at most `width` columns (ETA "?" until some progress).
  static std::string FormatLine(int64_t done, int64_t total,
                                double elapsed_seconds,
                                absl::string_view item, int width);

 private:
  std::ostream& out_;
  bool enabled_;
  int64_t total_;
  std::chrono::milliseconds delay_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
  bool drawn_ = false;
};

// FormatBytes formats a byte count as "512 B", "1.5 KiB", "3.0 GiB".
std::string FormatBytes(int64_t bytes);

// PeakRssBytes returns the process's peak resident set size (getrusage).
int64_t PeakRssBytes();

}  // namespace qcal

#endif  // QCAL_TOOLS_CLI_COMMON_H_
