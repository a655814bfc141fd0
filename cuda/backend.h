// The CUDA entry of the backend table (core/backend.h). Linking //cuda:backend
// registers it for Device::kCuda from a namespace-scope constant, so that an
// observer given a TensorView on Device::kCuda (pointing at device memory)
// computes its reductions on the GPU, with results bit-identical to the CPU
// backend's. Without a CUDA toolkit the target is empty and GetBackend(kCuda)
// stays Unimplemented.
//
// Each device gets, on first use, a CudaReducer (cuda/reduce.h) and its own
// non-blocking stream; calls for one device are serialized by a mutex. The
// data of a request must be ready (written, and the writes finished) before
// the call. Registration itself makes no CUDA call, so programs that link the
// backend start fine on machines without a GPU.
#ifndef QCAL_CUDA_BACKEND_H_
#define QCAL_CUDA_BACKEND_H_

#include "core/backend.h"

namespace qcal {

// CudaBackend returns the CUDA table (the one registered for Device::kCuda).
const BackendOps& CudaBackend();

}  // namespace qcal

#endif  // QCAL_CUDA_BACKEND_H_
