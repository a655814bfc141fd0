// The read-bandwidth probe of the benchmarks: a vectorised reduction (the
// unsigned maximum of 32-bit words) over a buffer,
// split across threads exactly as the kernels split their work, so that every
// benchmark run carries its own memory-bandwidth ceiling.
#ifndef QCAL_TOOLS_BENCH_READ_BANDWIDTH_H_
#define QCAL_TOOLS_BENCH_READ_BANDWIDTH_H_

#include <cstdint>

namespace qcal {
namespace bench {

// MaxWord returns the largest 32-bit word of `bytes` bytes at `data` (bytes
// a multiple of 4), read with the best SIMD target of this CPU on `threads`
// threads.
uint32_t MaxWord(const void* data, int64_t bytes, int threads);

}  // namespace bench
}  // namespace qcal

#endif  // QCAL_TOOLS_BENCH_READ_BANDWIDTH_H_
