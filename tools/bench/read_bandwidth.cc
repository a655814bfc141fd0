#include "tools/bench/read_bandwidth.h"

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "core/parallel.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "tools/bench/read_bandwidth.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/cache_control.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace qcal {
namespace bench {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// How far ahead of each loaded block its cache lines are prefetched, as the
// min/max kernels do for f32 data, so that the ceiling includes what
// prefetching gains.
constexpr uintptr_t kPrefetchBytes = 4096;

// One unsigned max per loaded vector, eight independent accumulators: the
// fastest plain read loop measured on AMD Zen 4 (a sum with four
// accumulators was ~20% slower, and slower than the min/max kernels).
uint32_t MaxRange(const uint32_t* HWY_RESTRICT p, int64_t n) {
  const hn::ScalableTag<uint32_t> d;
  const int64_t kN = static_cast<int64_t>(hn::Lanes(d));
  auto a0 = hn::Zero(d), a1 = a0, a2 = a0, a3 = a0;
  auto a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  int64_t i = 0;
  for (; i + 8 * kN <= n; i += 8 * kN) {
    // (The address as an integer: it may lie past the buffer.)
    const uintptr_t ahead = reinterpret_cast<uintptr_t>(p + i) + kPrefetchBytes;
    for (int64_t k = 0; k < 8 * kN * 4; k += 64) {
      hwy::Prefetch(reinterpret_cast<const uint8_t*>(ahead + k));
    }
    a0 = hn::Max(a0, hn::LoadU(d, p + i));
    a1 = hn::Max(a1, hn::LoadU(d, p + i + kN));
    a2 = hn::Max(a2, hn::LoadU(d, p + i + 2 * kN));
    a3 = hn::Max(a3, hn::LoadU(d, p + i + 3 * kN));
    a4 = hn::Max(a4, hn::LoadU(d, p + i + 4 * kN));
    a5 = hn::Max(a5, hn::LoadU(d, p + i + 5 * kN));
    a6 = hn::Max(a6, hn::LoadU(d, p + i + 6 * kN));
    a7 = hn::Max(a7, hn::LoadU(d, p + i + 7 * kN));
  }
  a0 = hn::Max(hn::Max(hn::Max(a0, a1), hn::Max(a2, a3)),
               hn::Max(hn::Max(a4, a5), hn::Max(a6, a7)));
  uint32_t m = hn::GetLane(hn::MaxOfLanes(d, a0));
  for (; i < n; ++i) m = std::max(m, p[i]);
  return m;
}

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace bench
}  // namespace qcal
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qcal {
namespace bench {

HWY_EXPORT(MaxRange);

uint32_t MaxWord(const void* data, int64_t bytes, int threads) {
  const uint32_t* p = static_cast<const uint32_t*>(data);
  const int64_t n = bytes / 4;
  std::atomic<uint32_t> result{0};
  // Pieces of 256 KiB, handed out like the kernels' work.
  ParallelFor((n + 65535) / 65536, threads, 1, [&](int64_t b, int64_t e) {
    const int64_t begin = b * 65536, end = std::min(n, e * 65536);
    const uint32_t m = HWY_DYNAMIC_DISPATCH(MaxRange)(p + begin, end - begin);
    uint32_t cur = result.load();
    while (m > cur && !result.compare_exchange_weak(cur, m)) {
    }
  });
  return result.load();
}

}  // namespace bench
}  // namespace qcal
#endif  // HWY_ONCE
