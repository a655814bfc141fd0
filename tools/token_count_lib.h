// `token_count` (SPEC §11): observes recorded input activations batch by
// batch, counts the tokens every module saw (SPEC §7's
// get_observer_token_count) and optionally writes each module's last input
// qparams (SPEC §10) and checks coverage.
//
// Each --inputs file is one calibration batch; a tensor named "M.input" in it
// is the input activation of module M. Every module gets one input observer
// that lives across the batches (an ObserverTree, observers/token_count.h).
#ifndef QCAL_TOOLS_TOKEN_COUNT_LIB_H_
#define QCAL_TOOLS_TOKEN_COUNT_LIB_H_

#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tools/cli_common.h"

namespace qcal {

// kTokenCountDefaultScheme is the scheme used for the bundled sample batches
// when neither --scheme nor --args is given (and --inputs is empty).
inline constexpr char kTokenCountDefaultScheme[] = "FP8";

// kSampleBatchRunfiles are the runfiles paths of the bundled sample batches.
inline constexpr const char* kSampleBatchRunfiles[] = {
    "qcal/tools/samples/sample_batch0.safetensors",
    "qcal/tools/samples/sample_batch1.safetensors",
    "qcal/tools/samples/sample_batch2.safetensors",
};

// TokenCountOptions are token_count's flags, already parsed.
struct TokenCountOptions : ToolCommonOptions {
  // inputs is --inputs, comma-separated; empty means the bundled sample
  // batches (`sample_inputs`, found by main through the runfiles;
  // `sample_error` says why they were not found).
  std::string inputs;
  std::vector<std::string> sample_inputs;
  absl::Status sample_error;
  // output is --output (empty: no qparams file).
  std::string output;
  // format is --format: "table" or "json".
  std::string format = "table";
  // min_tokens is --min_tokens (0: no coverage report).
  int64_t min_tokens = 0;
};

// ModuleSummary is what token_count learnt about one module.
struct ModuleSummary {
  // tokens is the module's count (nullopt: none, never counted).
  std::optional<int64_t> tokens;
  // batches_observed counts the batches in which its activation was
  // non-empty (and hence observed).
  int64_t batches_observed = 0;
};

// RunTokenCount runs token_count: validates the options (usage errors, exit
// 2), observes every batch in order (runtime errors, exit 1), writes
// --output atomically when given (nothing is written on any error), prints
// the counts on `out` (with --format=json, `out` receives only the JSON
// object; notes and the coverage report go to `err`), and returns exit code 3
// when --min_tokens finds modules with fewer tokens (the output file is still
// written: the qparams are valid, the coverage is what failed).
// `summary`, when not null, receives the modules by name.
ToolResult RunTokenCount(const TokenCountOptions& options, std::ostream& out,
                         std::ostream& err,
                         std::map<std::string, ModuleSummary>* summary =
                             nullptr);

}  // namespace qcal

#endif  // QCAL_TOOLS_TOKEN_COUNT_LIB_H_
