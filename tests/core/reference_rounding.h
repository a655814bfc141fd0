// Independent reference rounding for tests: rounds a double to a binary
// floating-point format given by its precision and exponent range, using
// frexp/ldexp and nearbyintl (ties to even) — deliberately unlike the bit
// manipulation in core/float_convert.h, so each checks the other.
#ifndef QCAL_TESTS_CORE_REFERENCE_ROUNDING_H_
#define QCAL_TESTS_CORE_REFERENCE_ROUNDING_H_

#include <cmath>
#include <limits>

namespace qcal {
namespace testing_ref {

// RoundBinary rounds x to the nearest value with `precision` significant
// bits, smallest normal 2^emin (subnormals below it) and largest finite
// value `max_finite`; results above max_finite become infinity unless
// `saturate`, in which case they become +-max_finite.
inline double RoundBinary(double x, int precision, int emin, double max_finite,
                          bool saturate = false) {
  if (std::isnan(x) || x == 0.0) return x;
  if (std::isinf(x)) {
    return saturate ? std::copysign(max_finite, x) : x;
  }
  const double a = std::fabs(x);
  int e;
  std::frexp(a, &e);  // a in [2^(e-1), 2^e)
  int exponent = e - 1;
  if (exponent < emin) exponent = emin;  // subnormal: fixed quantum
  const long double quantum = std::ldexp(1.0L, exponent - (precision - 1));
  const long double units = std::nearbyintl(static_cast<long double>(a) / quantum);
  double result = static_cast<double>(units * quantum);
  if (result > max_finite) {
    result = saturate ? max_finite : std::numeric_limits<double>::infinity();
  }
  return std::copysign(result, x);
}

inline double ToF32(double x) {
  return RoundBinary(x, 24, -126, static_cast<double>(std::numeric_limits<float>::max()));
}
inline double ToBf16(double x) {
  return RoundBinary(x, 8, -126, std::ldexp(255.0, 120));  // (2-2^-7)*2^127
}
inline double ToF16(double x) { return RoundBinary(x, 11, -14, 65504.0); }
// float8_e4m3fn, saturating at 448.
inline double ToE4m3(double x) { return RoundBinary(x, 4, -6, 448.0, true); }

// Format of an observed tensor in reference computations.
enum class Fmt { kF32, kF16, kBF16 };

// Round rounds an exact result first to float32 (the operation's result in
// float32 arithmetic) and then to the format.
inline double Round(double exact, Fmt fmt) {
  const double f = ToF32(exact);
  switch (fmt) {
    case Fmt::kF16:
      return ToF16(f);
    case Fmt::kBF16:
      return ToBf16(f);
    default:
      return f;
  }
}

}  // namespace testing_ref
}  // namespace qcal

#endif  // QCAL_TESTS_CORE_REFERENCE_ROUNDING_H_
