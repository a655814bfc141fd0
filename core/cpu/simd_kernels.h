// The vectorised CPU kernels behind the CPU backend table (core/backend.cc):
// min/max reductions for every TileGrid and the fused MSE-error evaluation.
//
// They are written once with Highway and compiled for every x86-64 SIMD
// target Highway knows (AVX-512, AVX2, SSE4, SSSE3 and portable 128-bit
// emulation); the best target the CPU supports is chosen at run time, so one
// binary runs fast on any x86-64 machine. Results are bit-identical to the
// scalar reference kernels (core/cpu/reference_kernels.h) on every target and
// for every thread count:
//   - min/max are computed on integer keys that order floats totally (-0
//     below +0), so any split of the work and any lane order give the same
//     answer;
//   - the MSE error of an element is computed with the same IEEE-754
//     operations, in the same order, as the scalar FakeQuantize / ErrorTerm /
//     PowNorm (no FMA contraction; f16/bf16 rounding after each step
//     emulated with integer operations; the libm-free PowPositive ported
//     operation for operation in double precision), and summed into the
//     canonical 16 double lanes of MseRequest.
#ifndef QCAL_CORE_CPU_SIMD_KERNELS_H_
#define QCAL_CORE_CPU_SIMD_KERNELS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "core/backend.h"

namespace qcal {

// SimdMinMax is the vectorised min/max kernel (BackendOps::min_max).
absl::Status SimdMinMax(const MinMaxRequest& request, const ExecOptions& exec,
                        const MinMaxOutput& out);

// SimdMseErrors is the vectorised MSE-error kernel (BackendOps::mse_errors).
// All candidates of a row segment are evaluated while the segment is in
// cache, so each unit's data is read from memory once per call.
absl::Status SimdMseErrors(const MseRequest& request, const ExecOptions& exec,
                           float* errors);

// SimdMseErrorBounds is the CPU backend's BackendOps::mse_error_bounds. For
// float32 tensors with a general exponent the error terms are approximated
// in float32 (several times cheaper than the exact double-precision
// PowPositive): with OctavePowV for exponents 1.5 <= p < 4.5 (the default
// 2.4 included), else ApproxPowV. Each unit's sum S becomes
// [(S - n tau)(1 - rho), (S + n tau)(1 + rho)] for its n elements, with
// rho = the approximation's bound (MseOctavePowBound or MseApproxPowBound)
// + 2^-20 (float32 partial sums of up to 16 terms) + (n + 16) 2^-51 (the
// double sums' rounding); tau = 2^-125 plus, with OctavePowV, twice the
// power of the candidate's window floor (for the errors clamped to it), or
// MseApproxPowTinyBound(exponent); rows that OctavePowV leaves to
// ApproxPowV (no window: errors that may reach 2^127; errors outside the
// window; a floor slack above 2^-16 of the sum) add ApproxPowV's rho and
// tau. A NaN or infinite sum gets [-inf, +inf]. In every other case
// lo = hi = the exact error. Keys are the candidate's
// scale and zero-point bits.
absl::Status SimdMseErrorBounds(const MseRequest& request,
                                const ExecOptions& exec,
                                const MseBoundsOutput& out);

// MseApproxPowBound is a bound on ApproxPowV's relative error against
// PowNorm<kF32> for exponent p (for results above 2^-126).
double MseApproxPowBound(float exponent);

// MseApproxPowTinyBound bounds the absolute error of ApproxPowV below that.
double MseApproxPowTinyBound(float exponent);

// MseOctavePowServes says whether the bounds use OctavePowV for an
// exponent (1.5 <= p < 4.5).
bool MseOctavePowServes(float exponent);

// MseOctavePowBound bounds OctavePowV's relative error (scaled back)
// against PowNorm<kF32> for an exponent p with 1.5 <= p < 4.5, for inputs
// inside its window whose result is above 2^-126 (see SetOctavePow in
// core/cpu/mse_kernels.cc for its parts).
double MseOctavePowBound(float exponent);

// SimdOctavePowForTest writes OctavePowV(a[i]) scaled back to a[i]^p (in
// double) on the active target, with the window below the largest a[i]
// (values below the window's floor give the floor's power), for tests.
void SimdOctavePowForTest(const float* a, int64_t n, float exponent,
                          double* out);

// SimdApproxPowForTest writes ApproxPowV(a[i]) for the exponent on the
// active target, for tests.
void SimdApproxPowForTest(const float* a, int64_t n, float exponent,
                          float* out);

// QuantErrorRowStats are one row's quantization-error statistics (see
// SimdQuantErrorStats).
struct QuantErrorRowStats {
  double signal = 0.0;  // sum of x^2
  double noise = 0.0;   // sum of (x - fake_quant(x))^2
  int64_t clipped = 0;  // elements whose grid value is q_min or q_max
  int64_t finite = 0;   // elements counted (the finite ones)
};

// SimdQuantErrorStats computes, for every row of the contiguous 2-D CPU view
// `x` (cut into units by `grid`) and over its finite elements: the sum of
// x^2, the sum of (x - fq)^2 with fq = FakeQuantize<F>(x) (double
// differences of the float values), and the number of elements whose grid
// value QuantizeToGrid<F>(x) is q_min or q_max. Unit u uses element u of
// `scale` (x's dtype) and of `zero_point` (I8, I16, I32 or F8_E4M3, the
// stored zero points), both contiguous CPU tensors with one element per
// unit, and `global_scale` when given. The sums are kept in the MSE
// kernels' lane order (element k of a unit's row segment in double lane
// k % 16, segments in column order, lanes added in order), so they do not
// depend on the threads or the SIMD target.
absl::Status SimdQuantErrorStats(const TensorView& x, const TileGrid& grid,
                                 const QuantSpec& spec,
                                 const TensorView& scale,
                                 const TensorView& zero_point,
                                 std::optional<float> global_scale,
                                 const ExecOptions& exec,
                                 absl::Span<QuantErrorRowStats> rows);

// SimdPowNormForTest writes PowNorm<F>(a[i], exponent) for n non-negative
// values a[i] of `format` (NaN allowed), computed as the MSE kernel computes
// error terms on the active target (float32: the vectorised PowPositive;
// f16/bf16: the lookup table), for tests.
void SimdPowNormForTest(FloatFormat format, const float* a, int64_t n,
                        float exponent, float* out);

// SetMseScaledRefineForTest(false) makes SimdMseErrorBounds return the
// scaled terms' brackets (float32, symmetric integer grids of at most 4
// bits) even where they leave a decision of the step-by-step search open,
// so that tests see them; true restores the default, which recomputes such
// units with the tighter windowed terms. Process-wide: call it only while
// no kernel runs.
void SetMseScaledRefineForTest(bool enabled);

// SimdGridForTest writes the MSE kernel's RoundToQuantGrid(in[i], kind) on
// the active target, for tests.
void SimdGridForTest(QuantKind kind, const float* in, int64_t n, float* out);

// SimdCandidateParamsForTest writes the fake-quantization parameters the MSE
// kernel derives (vectorised) for a unit with range [a, b] and each shrink
// factor, as CandidateParams<F> would return them, for tests.
void SimdCandidateParamsForTest(FloatFormat format, const QuantSpec& spec,
                                bool has_global_scale, float global_scale,
                                float a, float b,
                                const std::vector<float>& shrink,
                                std::vector<FakeQuantParams>* out);

// SimdTargets returns the Highway target bits (HWY_AVX3, HWY_AVX2, ...) that
// the kernels were compiled for and this CPU supports, best first.
std::vector<int64_t> SimdTargets();

// SimdTargetName returns Highway's name of a target bit ("AVX3", "AVX2",
// "SSE4", "SSSE3", "EMU128", ...).
std::string SimdTargetName(int64_t target);

// ActiveSimdTarget returns the target the kernels dispatch to right now.
int64_t ActiveSimdTarget();

// ScopedSimdTarget restricts the kernels to one target (which must be in
// SimdTargets()) for its lifetime, for tests and benchmarks. It changes
// process-wide state: create it only while no kernel runs on another thread.
class ScopedSimdTarget {
 public:
  explicit ScopedSimdTarget(int64_t target);
  ~ScopedSimdTarget();
  ScopedSimdTarget(const ScopedSimdTarget&) = delete;
  ScopedSimdTarget& operator=(const ScopedSimdTarget&) = delete;
};

}  // namespace qcal

#endif  // QCAL_CORE_CPU_SIMD_KERNELS_H_
