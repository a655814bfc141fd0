// Marks functions that must compile for both the host compiler and nvcc.
//
// The scalar quantization math (float conversions, qparams, fake quantization)
// is written once, in headers that use QCAL_HD, and shared by the CPU code and
// the CUDA kernels. Under nvcc this expands to `__host__ __device__`; under the
// host compiler it expands to nothing.
#ifndef QCAL_CORE_HOST_DEVICE_H_
#define QCAL_CORE_HOST_DEVICE_H_

#if defined(__CUDACC__)
#define QCAL_HD __host__ __device__
#define QCAL_HD_INLINE __host__ __device__ __forceinline__
#else
#define QCAL_HD
#define QCAL_HD_INLINE inline
#endif

#endif  // QCAL_CORE_HOST_DEVICE_H_
