#include "tools/tool_main.h"

#include <cstdlib>
#include <iostream>

#include "gflags/gflags.h"

DEFINE_string(scheme, "",
              "preset scheme (W8A16, W4A16, W4A16_ASYM, W8A8, INT8, W4A8, "
              "FP8, FP8_DYNAMIC, FP8_BLOCK, NVFP4A16, NVFP4); without it and "
              "--args, only the bundled sample has a default");
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
            "skip NaN/Inf values instead of failing on them");

namespace qcal {

ToolCommonOptions CommonOptionsFromFlags() {
  ToolCommonOptions options;
  options.args = {FLAGS_scheme, FLAGS_args, FLAGS_observer,
                  FLAGS_observer_kwargs};
  options.backend = FLAGS_backend;
  options.threads = FLAGS_threads;
  options.allow_nonfinite = FLAGS_allow_nonfinite;
  options.memory_budget_mb = FLAGS_memory_budget_mb;
  if (const char* dir = std::getenv("BUILD_WORKING_DIRECTORY")) {
    options.base_dir = dir;
  }
  return options;
}

int ToolMain(int argc, char** argv, const char* tool, const char* usage,
             absl::FunctionRef<ToolResult()> run) {
  gflags::SetUsageMessage(usage);
  absl::StatusOr<FlagParse> parse = ParseFlagsStrictly(argc, argv);
  if (!parse.ok()) {
    std::cerr << tool << ": usage error: " << parse.status().message() << "\n";
    return kExitUsageError;
  }
  if (parse->help) {
    // The tool's own flags and the common ones, all defined under tools/.
    PrintToolHelp(argv[0], "tools/");
    return kExitOk;
  }
  const ToolResult result = run();
  std::cout.flush();
  if (!result.status.ok()) {
    std::cerr << tool << ": "
              << (result.exit_code == kExitUsageError ? "usage error: "
                  : result.exit_code == kExitCoverage ? ""
                                                      : "error: ")
              << result.status.message() << "\n";
  }
  return result.exit_code;
}

}  // namespace qcal
