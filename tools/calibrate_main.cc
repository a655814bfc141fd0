// calibrate: weight qparams of a safetensors checkpoint (SPEC §11). The logic
// is in calibrate_lib.h; this file defines the flags and reports the result.
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "gflags/gflags.h"
#include "tools/calibrate_lib.h"
#include "tools/cli_common.h"
#include "tools/tool_main.h"

DEFINE_string(input, "",
              "checkpoint to calibrate (safetensors); empty: the bundled "
              "sample model");
DEFINE_string(output, "qparams.safetensors",
              "qparams file to write (atomically; untouched on any error)");
DEFINE_string(targets, qcal::kDefaultTargets,
              "ECMAScript regex searched in tensor names: which tensors to "
              "calibrate (only 2-D F32/F16/BF16 tensors are)");
DEFINE_string(ignore, "",
              "ECMAScript regex searched in tensor names: tensors to leave "
              "out even when --targets selects them");
DEFINE_bool(full_summary, false,
            "compute each tensor's SQNR and clipped fraction over every "
            "element (default: an estimate from a sample of rows)");

namespace {

constexpr char kUsage[] =
    "compute weight qparams of a safetensors checkpoint.\n"
    "\n"
    "  calibrate [--input=IN.safetensors] [--output=OUT.safetensors]\n"
    "            (--scheme=NAME | --args=JSON) [--observer=NAME]\n"
    "            [--observer_kwargs=JSON] [--targets=REGEX] [--ignore=REGEX]\n"
    "            [--backend=cpu|cuda] [--threads=N] [--memory_budget_mb=N] [--allow_nonfinite] [--full_summary]\n"
    "\n"
    "Exit codes: 0 ok, 1 runtime error (file, data), 2 usage error (flags).";

}  // namespace

int main(int argc, char** argv) {
  return qcal::ToolMain(argc, argv, "calibrate", kUsage, [&] {
    qcal::CalibrateOptions options;
    static_cast<qcal::ToolCommonOptions&>(options) =
        qcal::CommonOptionsFromFlags();
    options.input = FLAGS_input;
    options.output = FLAGS_output;
    options.targets = FLAGS_targets;
    options.ignore = FLAGS_ignore;
    options.full_summary = FLAGS_full_summary;
    if (options.input.empty()) {
      absl::StatusOr<std::string> sample =
          qcal::FindRunfile(argv[0], qcal::kSampleModelRunfile);
      if (sample.ok()) {
        options.sample_path = *sample;
      } else {
        options.sample_error = sample.status();
      }
    }
    options.progress = isatty(STDERR_FILENO) == 1;
    return qcal::RunCalibrate(options, std::cout, std::cerr);
  });
}
