// Interposes hwy::platform::TimerResolution for the command-line tools.
//
// Loading Debian's libhwy.so runs a static initializer of its benchmarking
// code (nanobenchmark.cc) that measures the timer's resolution with 256 x 256
// fenced back-to-back timer readings: 4.6 ms on every process start on the
// development VM (an empty program linked with -lhwy: 5.7 ms against 1.1
// ms; EPYC Zen 3 under KVM, where each fenced reading costs ~70 ns). The
// tools never use that benchmarking code, and a `calibrate` run takes 70-90
// ms for a 4096 x 4096 weight, so that was 5% of it. The initializer calls
// the function through libhwy's procedure linkage table, so the definition
// below, exported from the executable (see the linkopts in BUILD.bazel),
// replaces libhwy's: it measures the same quantity (ticks between two
// back-to-back fenced time-stamp readings) with 63 readings instead of
// 65536 and returns their median. Only the tools link it, never the
// libraries a user embeds.

#include <algorithm>
#include <cstdint>

#include "hwy/nanobenchmark.h"

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>

namespace hwy {
namespace platform {

uint64_t TimerResolution() {
  constexpr int kSamples = 63;
  uint64_t ticks[kSamples];
  for (uint64_t& t : ticks) {
    _mm_lfence();
    const uint64_t t0 = __rdtsc();
    _mm_lfence();
    unsigned aux;
    const uint64_t t1 = __rdtscp(&aux);
    _mm_lfence();
    t = t1 - t0;
  }
  std::nth_element(ticks, ticks + kSamples / 2, ticks + kSamples);
  return ticks[kSamples / 2];
}

}  // namespace platform
}  // namespace hwy

#endif  // x86
