// token_count: tokens seen per module over calibration batches, and their
// input qparams (SPEC §11). The logic is in token_count_lib.h; this file
// defines the flags and reports the result.
#include <cstdlib>
#include <iostream>

#include "gflags/gflags.h"
#include "tools/cli_common.h"
#include "tools/token_count_lib.h"
#include "tools/tool_main.h"

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
  return qcal::ToolMain(argc, argv, "token_count", kUsage, [&] {
    qcal::TokenCountOptions options;
    static_cast<qcal::ToolCommonOptions&>(options) =
        qcal::CommonOptionsFromFlags();
    options.inputs = FLAGS_inputs;
    options.output = FLAGS_output;
    options.format = FLAGS_format;
    options.min_tokens = FLAGS_min_tokens;
    if (options.inputs.empty()) {
      for (const char* runfile : qcal::kSampleBatchRunfiles) {
        absl::StatusOr<std::string> sample =
            qcal::FindRunfile(argv[0], runfile);
        if (!sample.ok()) {
          options.sample_inputs.clear();
          options.sample_error = sample.status();
          break;
        }
        options.sample_inputs.push_back(*sample);
      }
    }
    return qcal::RunTokenCount(options, std::cout, std::cerr);
  });
}
