// calibrate: weight qparams of a safetensors checkpoint (SPEC §11). The logic
// is in calibrate_lib.h; this file defines the flags and reports the result.
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "gflags/gflags.h"
#include "tools/calibrate_lib.h"
#include "tools/cli_common.h"

DEFINE_string(input, "",
              "checkpoint to calibrate (safetensors); empty: the bundled "
              "sample model");
DEFINE_string(output, "qparams.safetensors",
              "qparams file to write (atomically; untouched on any error)");
DEFINE_string(scheme, "",
              "preset scheme (W8A16, W4A16, W4A16_ASYM, W8A8, INT8, W4A8, "
              "FP8, FP8_DYNAMIC, FP8_BLOCK, NVFP4A16, NVFP4); default W4A16 "
              "for the bundled sample only");
DEFINE_string(args, "", "QuantizationArgs as a JSON object (instead of "
                        "--scheme)");
DEFINE_string(observer, "",
              "observer name, overriding the args' (minmax, mse, "
              "memoryless_minmax, memoryless_mse, static_minmax)");
DEFINE_string(observer_kwargs, "",
              "observer kwargs as a JSON object, replacing the args'");
DEFINE_string(targets, qcal::kDefaultTargets,
              "ECMAScript regex searched in tensor names: which tensors to "
              "calibrate (only 2-D F32/F16/BF16 tensors are)");
DEFINE_string(ignore, "",
              "ECMAScript regex searched in tensor names: tensors to leave "
              "out even when --targets selects them");
DEFINE_string(backend, "cpu", "where the observers run: cpu or cuda");
DEFINE_int32(threads, 0, "CPU threads (0: every core)");
DEFINE_int64(memory_budget_mb, 0,
             "cap on the memory of tensors the tool allocates, in MiB (0: "
             "unlimited)");
DEFINE_bool(allow_nonfinite, false,
            "skip NaN/Inf weights instead of failing on them");

namespace {

constexpr char kUsage[] =
    "compute weight qparams of a safetensors checkpoint.\n"
    "\n"
    "  calibrate [--input=IN.safetensors] [--output=OUT.safetensors]\n"
    "            (--scheme=NAME | --args=JSON) [--observer=NAME]\n"
    "            [--observer_kwargs=JSON] [--targets=REGEX] [--ignore=REGEX]\n"
    "            [--backend=cpu|cuda] [--threads=N] [--memory_budget_mb=N] [--allow_nonfinite]\n"
    "\n"
    "Exit codes: 0 ok, 1 runtime error (file, data), 2 usage error (flags).";

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage(kUsage);
  absl::StatusOr<qcal::FlagParse> parse = qcal::ParseFlagsStrictly(argc, argv);
  if (!parse.ok()) {
    std::cerr << "calibrate: usage error: " << parse.status().message()
              << "\n";
    return qcal::kExitUsageError;
  }
  if (parse->help) {
    qcal::PrintToolHelp(argv[0], "tools/calibrate_main");
    return qcal::kExitOk;
  }
  qcal::CalibrateOptions options;
  options.input = FLAGS_input;
  options.output = FLAGS_output;
  options.args = {FLAGS_scheme, FLAGS_args, FLAGS_observer,
                  FLAGS_observer_kwargs};
  options.targets = FLAGS_targets;
  options.ignore = FLAGS_ignore;
  options.backend = FLAGS_backend;
  options.threads = FLAGS_threads;
  options.allow_nonfinite = FLAGS_allow_nonfinite;
  options.memory_budget_mb = FLAGS_memory_budget_mb;
  if (const char* dir = std::getenv("BUILD_WORKING_DIRECTORY")) {
    options.base_dir = dir;
  }
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
  const qcal::ToolResult result =
      qcal::RunCalibrate(options, std::cout, std::cerr);
  std::cout.flush();
  if (!result.status.ok()) {
    std::cerr << "calibrate: "
              << (result.exit_code == qcal::kExitUsageError ? "usage error: "
                                                            : "error: ")
              << result.status.message() << "\n";
  }
  return result.exit_code;
}
