// Reading and writing tensor elements as float32 values, by dtype.
//
// Observed tensors (F32, F16, BF16) widen exactly to float; qparams are
// written back in their storage dtypes (the observed float format for scales,
// I8/I16/I32/F8_E4M3 for zero points). Host and device callable.
#ifndef QCAL_CORE_ELEMENT_ACCESS_H_
#define QCAL_CORE_ELEMENT_ACCESS_H_

#include <cstdint>
#include <cstring>

#include "core/float_convert.h"
#include "core/host_device.h"
#include "core/quant_math.h"

namespace qcal {

// LoadAs<F> reads element `i` of a contiguous array of format F.
template <FloatFormat F>
QCAL_HD_INLINE float LoadAs(const void* data, int64_t i) {
  if constexpr (F == FloatFormat::kF32) {
    return static_cast<const float*>(data)[i];
  } else if constexpr (F == FloatFormat::kF16) {
    return F16BitsToFloat(static_cast<const uint16_t*>(data)[i]);
  } else {
    return Bf16BitsToFloat(static_cast<const uint16_t*>(data)[i]);
  }
}

// StoreAs<F> writes `value` (already a value of F) as element `i`.
template <FloatFormat F>
QCAL_HD_INLINE void StoreAs(void* data, int64_t i, float value) {
  if constexpr (F == FloatFormat::kF32) {
    static_cast<float*>(data)[i] = value;
  } else if constexpr (F == FloatFormat::kF16) {
    static_cast<uint16_t*>(data)[i] = FloatToF16Bits(value);
  } else {
    static_cast<uint16_t*>(data)[i] = FloatToBf16Bits(value);
  }
}

// StoreZeroPoint writes a zero-point value (an integer or an fp8 value held
// in a float) as element `i` of an array of the given kind.
QCAL_HD_INLINE void StoreZeroPoint(void* data, int64_t i, float value,
                                   ZeroPointKind kind) {
  switch (kind) {
    case ZeroPointKind::kI8:
      static_cast<int8_t*>(data)[i] = static_cast<int8_t>(value);
      break;
    case ZeroPointKind::kI16:
      static_cast<int16_t*>(data)[i] = static_cast<int16_t>(value);
      break;
    case ZeroPointKind::kI32:
      static_cast<int32_t*>(data)[i] = static_cast<int32_t>(value);
      break;
    case ZeroPointKind::kF8:
      static_cast<uint8_t*>(data)[i] = FloatToE4m3fnBits(value);
      break;
  }
}

// LoadZeroPoint reads element `i` of a zero-point array as a float.
QCAL_HD_INLINE float LoadZeroPoint(const void* data, int64_t i,
                                   ZeroPointKind kind) {
  switch (kind) {
    case ZeroPointKind::kI8:
      return static_cast<const int8_t*>(data)[i];
    case ZeroPointKind::kI16:
      return static_cast<const int16_t*>(data)[i];
    case ZeroPointKind::kI32:
      return static_cast<float>(static_cast<const int32_t*>(data)[i]);
    case ZeroPointKind::kF8:
      return E4m3fnBitsToFloat(static_cast<const uint8_t*>(data)[i]);
  }
  return 0.0f;
}

}  // namespace qcal

#endif  // QCAL_CORE_ELEMENT_ACCESS_H_
