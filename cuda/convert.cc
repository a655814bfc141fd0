#include "cuda/convert.h"

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cuda/kernels/convert_kernels.h"
#include "cuda/runtime.h"
#include "cuda_runtime_api.h"

namespace qcal {

absl::Status Bf16BitsToFloatCuda(const uint16_t* in, float* out, int64_t n,
                                 cudaStream_t stream) {
  if (n < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Bf16BitsToFloatCuda: negative element count ", n));
  }
  if (n == 0) return absl::OkStatus();
  if (in == nullptr || out == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Bf16BitsToFloatCuda: null device pointer for ", n, " elements"));
  }
  return CudaStatus(internal_cuda::LaunchBf16BitsToFloat(in, out, n, stream),
                    absl::StrCat("launching Bf16BitsToFloat on ", n,
                                 " elements"));
}

}  // namespace qcal
