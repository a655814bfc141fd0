// A kernel that keeps a stream busy for a while, so that a benchmark can
// enqueue a batch of short kernels behind it and time them back to back on
// the device, without gaps from the host's launch overhead. Plain C++ launcher
// (no Abseil) for the .cu that defines it.
#ifndef QCAL_CUDA_BENCH_SPIN_KERNEL_H_
#define QCAL_CUDA_BENCH_SPIN_KERNEL_H_

#include <cstdint>

#include "cuda_runtime_api.h"

namespace qcal {
namespace internal_cuda {

// LaunchSpin enqueues one thread that spins for `cycles` SM clock cycles on
// `stream` and returns the launch's error.
cudaError_t LaunchSpin(int64_t cycles, cudaStream_t stream);

}  // namespace internal_cuda
}  // namespace qcal

#endif  // QCAL_CUDA_BENCH_SPIN_KERNEL_H_
