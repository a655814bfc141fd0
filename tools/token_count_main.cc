// token_count: tokens seen per module over calibration batches, and their
// input qparams (SPEC §11). The logic is in token_count_lib.h; this file
// defines the flags and reports the result.
#include <cstdlib>
#include <iostream>

#include "gflags/gflags.h"
#include "tools/cli_common.h"
#include "tools/token_count_lib.h"

DEFINE_string(inputs, "",
              "comma-separated batch files (safetensors), observed in this "
              "order; a tensor 'M.input' is the input activation of module "
              "M; empty: the bundled sample batches");
DEFINE_string(output, "",
              "qparams file to write with each module's last input qparams "
              "(M.input_scale, M.input_zero_point[, M.input_global_scale])");
DEFINE_string(format, "table", "output format: table or json");
DEFINE_int64(min_tokens, 0,
             "report the modules that saw fewer tokens (none counts as 0) "
             "and exit 3 if there are any; 0: no report");
DEFINE_string(scheme, "",
              "preset scheme (W8A16, W4A16, W4A16_ASYM, W8A8, INT8, W4A8, "
              "FP8, FP8_DYNAMIC, FP8_BLOCK, NVFP4A16, NVFP4); default FP8 "
              "for the bundled sample only");
DEFINE_string(args, "", "QuantizationArgs as a JSON object (instead of "
                        "--scheme)");
DEFINE_string(observer, "",
              "observer name, overriding the args' (minmax, mse, "
              "memoryless_minmax, memoryless_mse, static_minmax)");
DEFINE_string(observer_kwargs, "",
              "observer kwargs as a JSON object, replacing the args'");
DEFINE_string(backend, "cpu", "where the observers run: cpu or cuda");
DEFINE_int32(threads, 0, "CPU threads (0: every core)");
DEFINE_int64(memory_budget_mb, 0,
             "cap on the memory of tensors the tool allocates, in MiB (0: "
             "unlimited)");
DEFINE_bool(allow_nonfinite, false,
            "skip NaN/Inf activations instead of failing on them");

namespace {

constexpr char kUsage[] =
    "tokens seen per module over calibration batches.\n"
    "\n"
    "  token_count --inputs=B0.safetensors[,B1.safetensors...]\n"
    "              (--scheme=NAME | --args=JSON) [--observer=NAME]\n"
    "              [--observer_kwargs=JSON] [--output=QP.safetensors]\n"
    "              [--format=table|json] [--min_tokens=N]\n"
    "              [--backend=cpu|cuda] [--threads=N] [--memory_budget_mb=N] [--allow_nonfinite]\n"
    "\n"
    "Exit codes: 0 ok, 1 runtime error (file, data), 2 usage error (flags),\n"
    "3 some module saw fewer than --min_tokens tokens.";

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage(kUsage);
  absl::StatusOr<qcal::FlagParse> parse = qcal::ParseFlagsStrictly(argc, argv);
  if (!parse.ok()) {
    std::cerr << "token_count: usage error: " << parse.status().message()
              << "\n";
    return qcal::kExitUsageError;
  }
  if (parse->help) {
    qcal::PrintToolHelp(argv[0], "tools/token_count_main");
    return qcal::kExitOk;
  }
  qcal::TokenCountOptions options;
  options.inputs = FLAGS_inputs;
  options.output = FLAGS_output;
  options.format = FLAGS_format;
  options.min_tokens = FLAGS_min_tokens;
  options.args = {FLAGS_scheme, FLAGS_args, FLAGS_observer,
                  FLAGS_observer_kwargs};
  options.backend = FLAGS_backend;
  options.threads = FLAGS_threads;
  options.allow_nonfinite = FLAGS_allow_nonfinite;
  options.memory_budget_mb = FLAGS_memory_budget_mb;
  if (const char* dir = std::getenv("BUILD_WORKING_DIRECTORY")) {
    options.base_dir = dir;
  }
  if (options.inputs.empty()) {
    for (const char* runfile : qcal::kSampleBatchRunfiles) {
      absl::StatusOr<std::string> sample = qcal::FindRunfile(argv[0], runfile);
      if (!sample.ok()) {
        options.sample_inputs.clear();
        options.sample_error = sample.status();
        break;
      }
      options.sample_inputs.push_back(*sample);
    }
  }
  const qcal::ToolResult result =
      qcal::RunTokenCount(options, std::cout, std::cerr);
  std::cout.flush();
  if (!result.status.ok()) {
    std::cerr << "token_count: "
              << (result.exit_code == qcal::kExitUsageError ? "usage error: "
                  : result.exit_code == qcal::kExitCoverage ? ""
                                                            : "error: ")
              << result.status.message() << "\n";
  }
  return result.exit_code;
}
