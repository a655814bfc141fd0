// Helpers for the tools' tests: run a tool binary as a child process and
// capture its exit code and output, read and write files, and build
// safetensors files byte by byte (including malformed ones).
#ifndef QCAL_TESTS_TOOLS_TOOL_TEST_UTIL_H_
#define QCAL_TESTS_TOOLS_TOOL_TEST_UTIL_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace qcal {
namespace testing_util {

// ToolRun is the outcome of one child process.
struct ToolRun {
  // exit_code is the process's exit status, or -signal when it was killed.
  int exit_code = -1;
  std::string out;
  std::string err;
};

// ToolPath returns the path of //tools:<name> in the test's runfiles.
std::string ToolPath(const std::string& name);

// RunTool runs `binary` with `args` in directory `cwd` (the test's current
// directory when empty), with `env` added to the inherited environment (an
// empty value removes the variable). Stdin is /dev/null; stdout and stderr
// are captured through files, so stderr is not a terminal.
ToolRun RunTool(const std::string& binary, const std::vector<std::string>& args,
                const std::string& cwd = "",
                const std::map<std::string, std::string>& env = {});

// NewTempDir returns a fresh directory under TEST_TMPDIR.
std::string NewTempDir();

// ReadBytes returns the content of `path` ("" when it cannot be read).
std::string ReadBytes(const std::string& path);
// WriteBytes replaces `path` with `bytes`.
void WriteBytes(const std::string& path, const std::string& bytes);
// FileExists is true when `path` exists.
bool FileExists(const std::string& path);

// RawSafetensors is the bytes of a safetensors file: the little-endian
// length of `header`, `header` and `data`, verbatim (no validation).
std::string RawSafetensors(const std::string& header, const std::string& data);

// WriteTensors writes `tensors` as a safetensors file (the project's writer).
void WriteTensors(const std::string& path,
                  std::vector<std::pair<std::string, Tensor>> tensors);

}  // namespace testing_util
}  // namespace qcal

#endif  // QCAL_TESTS_TOOLS_TOOL_TEST_UTIL_H_
