// The per-device table of reduction kernels the observers use (PyTorch's
// DECLARE_DISPATCH / REGISTER_DISPATCH pattern).
//
// core owns the table and always provides the CPU entry. The CUDA backend
// target registers its entry from a namespace-scope constant when it is linked
// into a program; asking for a device whose backend is not linked is an
// Unimplemented error, never a crash.
//
// Both kernels work on a contiguous 2-D view cut into units by a TileGrid
// (core/layout.h) and return per-unit results in host memory.
#ifndef QCAL_CORE_BACKEND_H_
#define QCAL_CORE_BACKEND_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/layout.h"
#include "core/quant_math.h"
#include "core/tensor.h"

namespace qcal {

// NonFinitePolicy says what a kernel does with NaN and +-Inf inputs.
enum class NonFinitePolicy : uint8_t {
  kError,  // report the first one (smallest flat index)
  kSkip,   // leave them out of every statistic
};

// ExecOptions carries execution settings: CPU threads (<= 0: all cores).
struct ExecOptions {
  int threads = 0;
};

// MinMaxRequest asks for every unit's minimum and maximum.
struct MinMaxRequest {
  TensorView x;  // contiguous 2-D, dtype F32/F16/BF16
  TileGrid grid;
  FloatFormat format = FloatFormat::kF32;
  NonFinitePolicy nonfinite = NonFinitePolicy::kError;
};

// MinMaxOutput receives per-unit results (grid.num_units() each). With
// kError, *first_nonfinite is the smallest flat index of a non-finite
// element, or -1 (then the minima and maxima are meaningless). With kSkip a
// unit without finite elements gets min = max = 0.
struct MinMaxOutput {
  float* min = nullptr;
  float* max = nullptr;
  int64_t* first_nonfinite = nullptr;
};

// MseRequest asks for the MSE observer's error of candidate ranges
// (SPEC §7): for listed unit u with absolute range [a_u, b_u] and shrink
// factor p, the candidate is [Round(p a_u), Round(p b_u)], its qparams by
// SPEC §4, and the error the sum over the unit of |fake_quant(x) - x|^norm.
//
// Summation order (the same on every backend, SIMD target and thread count):
// within a row of a unit, the term of column offset k goes to accumulator
// k % 16 (double, in column order); a row's sum adds accumulators 0..15 in
// order; a unit's sum adds its rows' sums in row order. The result is
// rounded to float32 and then to the observed format.
struct MseRequest {
  TensorView x;  // contiguous 2-D
  TileGrid grid;
  FloatFormat format = FloatFormat::kF32;
  NonFinitePolicy nonfinite = NonFinitePolicy::kError;
  QuantSpec spec;
  bool has_global_scale = false;
  float global_scale = 1.0f;
  float norm_exponent = 2.4f;  // already converted as NormExponent<F> does
  absl::Span<const int64_t> units;    // unit indices (row-major in the grid)
  absl::Span<const float> unit_min;   // absolute minimum of each listed unit
  absl::Span<const float> unit_max;   // absolute maximum of each listed unit
  absl::Span<const float> shrink;     // factors p of the candidates
  // A hint for mse_error_bounds: the candidates are every step the search
  // will evaluate for these units, from its first (no best before them).
  // The CPU backend then may return wider brackets (scaled terms for
  // float32 int4), recomputing with tighter ones any unit whose brackets
  // leave a decision of its own replay from the first step open; across
  // chunks it could not tell.
  bool whole_search = false;
};

// kMseSumLanes is the number of interleaved accumulators per row.
inline constexpr int kMseSumLanes = 16;

// MseBoundsOutput receives BackendOps::mse_error_bounds' results, each
// indexed i * shrink.size() + c for listed unit i and candidate c.
struct MseBoundsOutput {
  // lo <= e <= hi for the error e that mse_errors writes for the same
  // request (lo = -inf, hi = +inf when no bound is known, e.g. e is NaN).
  float* lo = nullptr;
  float* hi = nullptr;
  // Candidates of one unit with equal keys have equal errors (the key is
  // the candidate's fake-quantization constants).
  uint64_t* keys = nullptr;
};

// BackendOps is one device's kernels.
struct BackendOps {
  absl::string_view name;
  // MinMax fills `out` for every unit of the grid.
  absl::Status (*min_max)(const MinMaxRequest& request,
                          const ExecOptions& exec, const MinMaxOutput& out);
  // MseErrors writes errors[i * shrink.size() + c] for listed unit i and
  // candidate c, each a value of the observed format.
  absl::Status (*mse_errors)(const MseRequest& request,
                             const ExecOptions& exec, float* errors);
  // MseErrorBounds (null when the backend has none) brackets the errors
  // mse_errors would write, cheaper than computing them: the MSE search
  // decides from the brackets and computes exact errors only for the units
  // whose decision they leave open.
  absl::Status (*mse_error_bounds)(const MseRequest& request,
                                   const ExecOptions& exec,
                                   const MseBoundsOutput& out) = nullptr;
};

// RegisterBackend installs `ops` for `device`; a second registration for the
// same device aborts at start-up. Returns true, for use as the initialiser of
// a namespace-scope constant.
bool RegisterBackend(Device device, const BackendOps* ops);

// GetBackend returns the kernels for `device`: the CPU table always, others
// when their backend target is linked (Unimplemented otherwise).
absl::StatusOr<const BackendOps*> GetBackend(Device device);

// CpuBackend returns the CPU table.
const BackendOps& CpuBackend();

}  // namespace qcal

#endif  // QCAL_CORE_BACKEND_H_
