// Private to core/cpu: the plain-data descriptions of one kernel call that the
// dispatching code (compiled once) hands to the per-SIMD-target code
// (compiled once per target by Highway's foreach_target mechanism).
#ifndef QCAL_CORE_CPU_KERNEL_JOBS_H_
#define QCAL_CORE_CPU_KERNEL_JOBS_H_

#include <cstdint>

#include "core/layout.h"
#include "core/quant_math.h"

namespace qcal {
namespace internal_cpu {

// MinMaxJob is one validated min/max request.
struct MinMaxJob {
  const void* data = nullptr;
  TileGrid grid;
  FloatFormat format = FloatFormat::kF32;
  bool skip_nonfinite = false;
  int threads = 1;
  float* out_min = nullptr;
  float* out_max = nullptr;
  int64_t* first_nonfinite = nullptr;  // may be null
};

// CandidateConsts are one (unit, candidate)'s fake-quantization constants
// (from CandidateParams<F>): the scale, the zero point rounded to the
// observed format and as stored, and the effective scale under a global
// scale; and, with pow_mode kOctave, a bound on the unit's error
// magnitudes |fq - x| under them (see MaxErrorBoundV in mse_kernels.cc).
struct CandidateConsts {
  float scale;
  float zero_point_rounded;
  float zero_point;
  float effective_scale;
  float max_error;
};

// OctaveTop is the biased exponent of the top octave of OctavePowV's window
// for errors bounded by max_error (at least 16, so that the window's 16
// octaves are all normal), or -1 when max_error is not below 2^127.
inline int OctaveTop(float max_error) {
  if (!(max_error < 0x1p127f)) return -1;
  const int top = static_cast<int>(FloatToBits(max_error) >> 23);
  return top < 16 ? 16 : top;
}

// PowMode selects PowNorm's computation for float32 tensors; kApprox is
// ApproxPowV and kOctave OctavePowV (core/cpu/simd_math-inl.h), for error
// bounds only.
enum class PowMode : uint8_t {
  kGeneral,
  kSquare,
  kCube,
  kSqrt,
  kApprox,
  kOctave
};

// kApproxFloatRun is the number of 16-column blocks whose approximate error
// terms a lane sums in float32 before adding them into double (relative
// error below kApproxFloatRun 2^-24).
inline constexpr int64_t kApproxFloatRun = 16;

// kShrinkPad is the padding of MseJob::shrink_padded (the widest vector).
inline constexpr int64_t kShrinkPad = 16;

// MseJob is one validated MSE-error request with its per-candidate constants
// precomputed.
struct MseJob {
  const void* data = nullptr;
  TileGrid grid;
  FloatFormat format = FloatFormat::kF32;
  QuantSpec spec;
  bool has_global_scale = false;
  bool skip_nonfinite = false;
  float norm_exponent = 2.4f;
  PowMode pow_mode = PowMode::kGeneral;
  // Symmetric args whose clamp bounds and grid values are all values of the
  // format (see AbsError in mse_kernels.cc).
  bool lean = false;
  // PowNorm<F> of every non-negative F value, indexed by its bit pattern
  // (f16 / bf16 only; 2^15 entries).
  const float* pow_table = nullptr;
  // pow_table widened to double (the AVX2 kernels read it with scalar loads).
  const double* pow_table_wide = nullptr;
  float global_scale = 1.0f;
  const int64_t* units = nullptr;
  const float* unit_min = nullptr;
  const float* unit_max = nullptr;
  int64_t num_units = 0;
  const float* shrink = nullptr;
  // The shrink factors again, padded (repeating the last) to a multiple of
  // kShrinkPad, so that vector code loads them without a tail.
  const float* shrink_padded = nullptr;
  int64_t num_candidates = 0;
  int threads = 1;
  float* errors = nullptr;  // [unit][candidate]
  // Error bounds instead of errors (MseBoundsOutput; all three set or none):
  // each unit's double sum S (approximate when pow_mode is kApprox) becomes
  // [lo, hi] = [(S - n tau)(1 - rho), (S + n tau)(1 + rho)] for a unit of n
  // elements, rho = bound_rho + (n + 16) 2^-51 (with pow_mode kOctave, tau
  // also has each candidate's window floor term; see SimdMseErrorBounds).
  float* lo = nullptr;
  float* hi = nullptr;
  uint64_t* keys = nullptr;
  double bound_rho = 0.0;
  double bound_tau = 0.0;
  // With pow_mode kOctave, rho and tau of the rows OctaveRowSums sums with
  // ApproxPowV terms (no window, errors outside it, or a floor slack too
  // wide for the sum).
  double fallback_rho = 0.0;
  double fallback_tau = 0.0;
  // ApproxPowV's constants (pow_mode kApprox; see simd::ApproxPowArgsV).
  float approx_p_hi = 0.0f;
  float approx_p_lo = 0.0f;
  float approx_log[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  // OctavePowV's constants (pow_mode kOctave; see OctaveConsts).
  const float* octave_tables = nullptr;
  const double* octave_scale = nullptr;
  // Scaled terms (float32 symmetric integer grids of at most 4 bits, error
  // bounds, pow_mode kOctave; see ScaledRowSums in mse_kernels.cc) and their
  // window's table: 2^(p (E - 125)) at [E mod 8] for E in [118, 125],
  // repeated to 16 entries.
  bool scaled = false;
  const float* scaled_table = nullptr;
  double octave_floor_term = 0.0;
  float octave_coef[6] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
};

// OctaveConsts are OctavePowV's constants for an exponent p:
// tables[16 r + (E mod 16)] = float(2^(p (E - top))) for the window of
// 16 octaves E in [top - 15, top] with top mod 16 = r; scale[E] = 2^(p (E -
// 127)) in double (the factor that undoes the window's scaling, and the
// value of a clamped term); coef: P(t), the interpolant of (1 + t)^p at
// the six Chebyshev nodes of [0, 1], its coefficients rounded to float32;
// bound: MseOctavePowBound(p).
struct OctaveConsts {
  float tables[16 * 16];
  double scale[256];
  double floor_term;  // 2 2^(-15 p): a clamped term's slack, windows scaled
  float scaled_table[16];  // MseJob::scaled_table
  float coef[6];
  double bound;
};

// OctaveExponentOk says whether OctavePowV serves exponent p:
// 1.5 <= p < 4.5 (below, a clamped term's slack is too wide; above, the
// degree-5 interpolation's error bound passes 1e-5: 3.8e-4 at p = 5.9).
inline bool OctaveExponentOk(float p) { return p >= 1.5f && p < 4.5f; }

// ScaledTermsOk says whether the error bounds of float32 tensors under
// `spec` use scaled terms (ScaledRowSums in mse_kernels.cc): symmetric
// integer grids of at most 4 bits without a global scale (the candidates'
// |x / s| stay small, which keeps the bound on the quotients tight).
inline bool ScaledTermsOk(const QuantSpec& spec, bool has_global_scale) {
  return spec.kind == QuantKind::kInt && spec.symmetric && !has_global_scale &&
         spec.q_max <= 8.0f && spec.q_min >= -8.0f;
}

// MseScaledRefine says whether units whose scaled-term brackets leave a
// decision of the search open get the windowed terms' brackets instead
// (the default; SetMseScaledRefineForTest turns it off).
bool MseScaledRefine();

// SetOctavePow computes the constants for an exponent with
// OctaveExponentOk.
void SetOctavePow(float p, OctaveConsts* out);

// UseOctavePow points the job at the constants (which must outlive it) and
// selects pow_mode kOctave.
void UseOctavePow(const OctaveConsts& octave, MseJob* job);

// LeanArgs is true when fake quantization of `format` values under `spec`
// may leave out steps that provably change nothing (see AbsError in
// mse_kernels.cc): symmetric args (zero point 0), clamp bounds that are
// values of the format, and grid values that all are (fp8 and fp4 values
// always are; integers up to 2^(mantissa bits + 1): 256 in bf16, 2048 in
// f16, 2^24 in f32). For float32 only the zero point's addition and
// subtraction are left out (its roundings are no-ops anyway).
inline bool LeanArgs(FloatFormat format, const QuantSpec& spec) {
  if (!spec.symmetric) return false;
  const float qmin = spec.q_min, qmax = spec.q_max;
  const bool bounds_exact =
      RoundTo(format, qmin) == qmin && RoundTo(format, qmax) == qmax;
  const float int_limit = format == FloatFormat::kBF16   ? 256.0f
                          : format == FloatFormat::kF16 ? 2048.0f
                                                        : 16777216.0f;
  const bool grid_exact = spec.kind != QuantKind::kInt ||
                          (-qmin <= int_limit && qmax <= int_limit);
  return bounds_exact && grid_exact;
}

// SetApproxPow sets ApproxPowV's constants (MseJob::approx_*) for an
// exponent p > 0.
void SetApproxPow(float p, MseJob* job);

// QuantStatsJob is one validated SimdQuantErrorStats request.
struct QuantStatsJob {
  const void* data = nullptr;
  TileGrid grid;
  FloatFormat format = FloatFormat::kF32;
  QuantSpec spec;
  bool has_global_scale = false;
  float global_scale = 1.0f;
  const void* scale = nullptr;       // one value of `format` per unit
  const void* zero_point = nullptr;  // one stored zero point per unit
  ZeroPointKind zp_kind = ZeroPointKind::kI8;
  int threads = 1;
  // Per row: signal, noise, clipped, finite (QuantErrorRowStats' layout).
  double* signal = nullptr;
  double* noise = nullptr;
  int64_t* clipped = nullptr;
  int64_t* finite = nullptr;
};

// UnitCandidates computes listed unit i's fake-quantization parameters for
// every candidate with the scalar CandidateParams<F> (the kernels' fallback
// for rows with non-finite values; the vector path derives the same values
// with CandidateConstsV).
template <FloatFormat F>
inline void UnitCandidates(const MseJob& job, int64_t i,
                           FakeQuantParams* params) {
  for (int64_t c = 0; c < job.num_candidates; ++c) {
    params[c] = CandidateParams<F>(job.unit_min[i], job.unit_max[i],
                                   job.shrink[c], job.spec,
                                   job.has_global_scale, job.global_scale);
  }
}

}  // namespace internal_cpu
}  // namespace qcal

#endif  // QCAL_CORE_CPU_KERNEL_JOBS_H_
