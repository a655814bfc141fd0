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

#include "absl/status/status.h"
#include "core/backend.h"

namespace qcal {

// ValidateMinMaxRequest checks that the view is a contiguous 2-D tensor of
// the request's format matching its grid, with positive tile sizes.
absl::Status ValidateMinMaxRequest(const MinMaxRequest& request);

// ValidateMseRequest checks the view as above and that the unit lists agree
// and name units of the grid.
absl::Status ValidateMseRequest(const MseRequest& request);

// ReferenceMinMax is the scalar min/max kernel (BackendOps::min_max). Of
// equal extremes the first in the unit's flat order is reported, which only
// matters for +0 / -0: a zero minimum or maximum has the sign of the unit's
// first zero.
absl::Status ReferenceMinMax(const MinMaxRequest& request,
                             const ExecOptions& exec, const MinMaxOutput& out);

// ReferenceMseErrors is the scalar MSE-error kernel (BackendOps::mse_errors).
absl::Status ReferenceMseErrors(const MseRequest& request,
                                const ExecOptions& exec, float* errors);

}  // namespace qcal

#endif  // QCAL_CORE_CPU_REFERENCE_KERNELS_H_
