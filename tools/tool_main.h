// The shared skeleton of the tools' main(): the flags every tool takes
// (defined once here with gflags), strict parsing, --help, running the tool
// and reporting its result with the SPEC §11 exit code.
#ifndef QCAL_TOOLS_TOOL_MAIN_H_
#define QCAL_TOOLS_TOOL_MAIN_H_

#include "absl/functional/function_ref.h"
#include "tools/cli_common.h"

namespace qcal {

// CommonOptionsFromFlags returns the common flags' values (--scheme, --args,
// --observer, --observer_kwargs, --backend, --threads, --allow_nonfinite,
// --memory_budget_mb) and the bazel run working directory.
ToolCommonOptions CommonOptionsFromFlags();

// ToolMain parses argv strictly (exit 2 on a bad flag), prints help for
// --help (exit 0), or calls `run` and reports its result on stderr as
// "<tool>: usage error: ..." / "<tool>: error: ..." (plain for exit 3),
// returning the exit code.
int ToolMain(int argc, char** argv, const char* tool, const char* usage,
             absl::FunctionRef<ToolResult()> run);

}  // namespace qcal

#endif  // QCAL_TOOLS_TOOL_MAIN_H_
