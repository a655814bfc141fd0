// See spin_kernel.h.
#include <cstdint>

#include "cuda/bench/spin_kernel.h"
#include "cuda_runtime.h"

namespace qcal {
namespace internal_cuda {
namespace {

__global__ void SpinKernel(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

}  // namespace

cudaError_t LaunchSpin(int64_t cycles, cudaStream_t stream) {
  SpinKernel<<<1, 1, 0, stream>>>(static_cast<long long>(cycles));
  return cudaGetLastError();
}

}  // namespace internal_cuda
}  // namespace qcal
