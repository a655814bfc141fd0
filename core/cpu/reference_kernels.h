// The scalar reference CPU kernels: the definition of what the CPU backend's
// min/max and MSE-error kernels compute (see MinMaxRequest and MseRequest in
// core/backend.h), written as plain loops over the scalar math of
// core/quant_math.h.
//
// The production CPU table (core/backend.cc) runs the vectorised kernels of
// core/cpu/simd_kernels.h; tests compare those to these functions bit for
// bit. Both validate their request with the functions below first.
#ifndef QCAL_CORE_CPU_REFERENCE_KERNELS_H_
#define QCAL_CORE_CPU_REFERENCE_KERNELS_H_

#include <cmath>

#include "absl/status/status.h"
#include "core/backend.h"

namespace qcal {

// ValidateMinMaxRequest checks that the view is a contiguous 2-D tensor of
// the request's format matching its grid, with positive tile sizes.
absl::Status ValidateMinMaxRequest(const MinMaxRequest& request);

// ValidateMseRequest checks the view as above and that the unit lists agree
// and name units of the grid.
absl::Status ValidateMseRequest(const MseRequest& request);

// MinTotal / MaxTotal are the minimum and maximum of two finite values in the
// total order that puts -0 below +0, so that the result of a reduction does
// not depend on the order in which equal zeros are met.
inline float MinTotal(float a, float b) {
  return (a < b || (a == b && std::signbit(a))) ? a : b;
}
inline float MaxTotal(float a, float b) {
  return (a > b || (a == b && !std::signbit(a))) ? a : b;
}

// ReferenceMinMax is the scalar min/max kernel (BackendOps::min_max).
absl::Status ReferenceMinMax(const MinMaxRequest& request,
                             const ExecOptions& exec, const MinMaxOutput& out);

// ReferenceMseErrors is the scalar MSE-error kernel (BackendOps::mse_errors).
absl::Status ReferenceMseErrors(const MseRequest& request,
                                const ExecOptions& exec, float* errors);

}  // namespace qcal

#endif  // QCAL_CORE_CPU_REFERENCE_KERNELS_H_
