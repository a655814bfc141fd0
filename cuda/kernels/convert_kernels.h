// Launchers of the element-wise conversion kernels (kernels/convert.cu), as
// seen from host code. Plain C++ over the CUDA runtime API: no Abseil, so that
// nvcc compiles the .cu that defines them without host-only libraries. Host
// code calls the absl::Status wrappers in cuda/convert.h instead.
#ifndef QCAL_CUDA_KERNELS_CONVERT_KERNELS_H_
#define QCAL_CUDA_KERNELS_CONVERT_KERNELS_H_

#include <cstdint>

#include "cuda_runtime_api.h"

namespace qcal {
namespace internal_cuda {

// LaunchBf16BitsToFloat enqueues on `stream` a kernel writing
// Bf16BitsToFloat(in[i]) to out[i] for 0 <= i < n, and returns the launch's
// error (cudaGetLastError) without waiting for the kernel. `in` and `out` are
// device pointers; n must be >= 0 (n == 0 launches nothing).
cudaError_t LaunchBf16BitsToFloat(const uint16_t* in, float* out, int64_t n,
                                  cudaStream_t stream);

}  // namespace internal_cuda
}  // namespace qcal

#endif  // QCAL_CUDA_KERNELS_CONVERT_KERNELS_H_
