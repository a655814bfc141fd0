// `calibrate` (SPEC §11): computes the weight qparams of a safetensors
// checkpoint and writes them as a compressed-tensors style qparams file
// (SPEC §10), printing a per-tensor summary.
//
// The checkpoint is memory-mapped and walked one tensor at a time: each
// target is observed by a fresh observer, its qparams are kept (they are
// small), its summary statistics are computed, and its pages are released
// before the next one, so the resident set stays near one weight's working
// set: the mapped weight (plus an aligned copy when the mapping is
// misaligned for its dtype), the observer's per-unit statistics, and one
// fake-quantized row chunk (about 1M elements) per thread for the summary
// statistics. The qparams of all tensors are held until the output is
// written (they are a small fraction of the weights).
#ifndef QCAL_TOOLS_CALIBRATE_LIB_H_
#define QCAL_TOOLS_CALIBRATE_LIB_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/qparams.h"
#include "core/quant_args.h"
#include "core/tensor.h"
#include "tools/cli_common.h"

namespace qcal {

// kCalibrateDefaultScheme is the scheme used for the bundled sample when
// neither --scheme nor --args is given (and --input is empty).
inline constexpr char kCalibrateDefaultScheme[] = "W4A16";

// kSampleModelRunfile is the runfiles path of the bundled sample checkpoint.
inline constexpr char kSampleModelRunfile[] =
    "qcal/tools/samples/sample_model.safetensors";

// CalibrateOptions are calibrate's flags, already parsed.
struct CalibrateOptions : ToolCommonOptions {
  // input is --input; empty means the bundled sample (`sample_path`).
  std::string input;
  // sample_path is the bundled sample checkpoint (found by main through the
  // runfiles); `sample_error` says why it was not found.
  std::string sample_path;
  absl::Status sample_error;
  // output is --output.
  std::string output = "qparams.safetensors";
  // targets and ignore are --targets and --ignore (see NameFilter).
  std::string targets = kDefaultTargets;
  std::string ignore;
  // full_summary computes the summary over every element instead of a row
  // sample of about kSummarySampleElements elements.
  bool full_summary = false;
  // progress draws a progress bar on the error stream (main: isatty(2)).
  bool progress = false;
};

// TensorStats are the summary statistics of one calibrated tensor, over its
// finite elements (all of them unless --allow_nonfinite let NaN/Inf in).
struct TensorStats {
  // scale_min and scale_max are the extremes of the scale tensor's values.
  float scale_min = 0.0f;
  float scale_max = 0.0f;
  // sqnr_db is 10 log10(sum x^2 / sum (x - fq(x))^2), fq being
  // FakeQuantizeTensor with the computed qparams and global scale (sums in
  // double): +inf when the error is zero.
  double sqnr_db = 0.0;
  // clipped counts the elements whose quantized value
  // q = round(clamp(x / s' + zp, q_min, q_max)) (SPEC §6, QuantizeToGrid)
  // is q_min or q_max: they sit on, or were clamped to, an edge of the
  // quantized range. `finite` counts the elements the statistics cover.
  int64_t clipped = 0;
  int64_t finite = 0;
  // rows_used of rows_total rows of the 2-D view were evaluated (fewer when
  // the statistics were sampled).
  int64_t rows_used = 0;
  int64_t rows_total = 0;
  // signal_sum and noise_sum are the sums of x^2 and (x - fq)^2 over them.
  double signal_sum = 0.0;
  double noise_sum = 0.0;

  // sampled is true when only some rows were evaluated.
  bool sampled() const { return rows_used < rows_total; }

  // clipped_fraction is clipped / finite (0 for no finite element).
  double clipped_fraction() const {
    return finite > 0 ? static_cast<double>(clipped) / finite : 0.0;
  }
};

// kSummarySampleElements bounds the elements calibrate fake-quantizes for a
// tensor's summary unless --full_summary: the statistics are an estimate
// from evenly spaced rows (about 0.1 dB for SQNR), which keeps the summary's
// cost negligible next to reading the checkpoint.
inline constexpr int64_t kSummarySampleElements = int64_t{1} << 16;

// ComputeTensorStats computes the statistics of `x` (contiguous, CPU, of an
// observable dtype) quantized with `qparams` (as an observer returns them,
// scales in x's dtype) and `global_scale` under `args`, vectorised
// (core/cpu/simd_kernels.h SimdQuantErrorStats) on `threads` threads (as
// --threads; the results do not depend on it). With
// max_elements > 0 and a larger tensor, only every k-th band of rows is
// evaluated (bands of a unit's height; k as small as keeps the count at or
// under max_elements, at least one band): rows_used says how many.
absl::StatusOr<TensorStats> ComputeTensorStats(
    const TensorView& x, const QParams& qparams,
    std::optional<float> global_scale, const QuantizationArgs& args,
    int threads, int64_t max_elements = 0);

// RunCalibrate runs calibrate: validates the options (usage errors, exit 2),
// reads the checkpoint and computes every target's qparams (runtime errors,
// exit 1), writes the output atomically (nothing is written on any error) and
// prints the summary on `out`; the progress bar goes to `err`.
ToolResult RunCalibrate(const CalibrateOptions& options, std::ostream& out,
                        std::ostream& err);

}  // namespace qcal

#endif  // QCAL_TOOLS_CALIBRATE_LIB_H_
