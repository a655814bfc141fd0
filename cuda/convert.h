// Element-wise conversions of narrow floating-point formats on a CUDA device.
// The kernels use core/float_convert.h, so they give the same bits as the host
// functions of the same name.
//
// Launchers take device pointers and an explicit stream, check the launch and
// return absl::Status; they do not wait for the kernel (errors the kernel
// raises while running show up at the next synchronization).
#ifndef QCAL_CUDA_CONVERT_H_
#define QCAL_CUDA_CONVERT_H_

#include <cstdint>

#include "absl/status/status.h"
#include "cuda_runtime_api.h"

namespace qcal {

// Bf16BitsToFloatCuda enqueues on `stream` the conversion of `n` bfloat16 bit
// patterns at device address `in` to float32 at device address `out`
// (out[i] = Bf16BitsToFloat(in[i]), exact). InvalidArgument when n < 0 or,
// with n > 0, a pointer is null; n == 0 does nothing. Other errors are those
// of the launch (e.g. FailedPrecondition without a device).
absl::Status Bf16BitsToFloatCuda(const uint16_t* in, float* out, int64_t n,
                                 cudaStream_t stream);

}  // namespace qcal

#endif  // QCAL_CUDA_CONVERT_H_
