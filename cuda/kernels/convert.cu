// Element-wise conversion kernels. The per-element math is the host/device
// code of core/float_convert.h, so the CPU tests of that header cover it and
// the device results match the host's bit for bit.
#include <cstdint>

#include "core/float_convert.h"
#include "cuda/kernels/convert_kernels.h"
#include "cuda_runtime.h"

namespace qcal {
namespace internal_cuda {
namespace {

constexpr int kThreadsPerBlock = 256;
// Grid-stride loops cover any n; more blocks than this only add scheduling
// overhead (a few waves on an H100's 132 SMs).
constexpr int64_t kMaxBlocks = 4096;

__global__ void Bf16BitsToFloatKernel(const uint16_t* __restrict__ in,
                                      float* __restrict__ out, int64_t n) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    out[i] = Bf16BitsToFloat(in[i]);
  }
}

}  // namespace

cudaError_t LaunchBf16BitsToFloat(const uint16_t* in, float* out, int64_t n,
                                  cudaStream_t stream) {
  if (n <= 0) return n == 0 ? cudaSuccess : cudaErrorInvalidValue;
  int64_t blocks = (n + kThreadsPerBlock - 1) / kThreadsPerBlock;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  Bf16BitsToFloatKernel<<<static_cast<unsigned int>(blocks), kThreadsPerBlock,
                          0, stream>>>(in, out, n);
  return cudaGetLastError();
}

}  // namespace internal_cuda
}  // namespace qcal
