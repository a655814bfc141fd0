// A parallel-for over index ranges on a persistent pool of worker threads.
//
// The work split never affects results: callers give each index its own
// output and combine partial results in index order. Worker threads are
// started on first use (as many as the largest request needs, minus the
// calling thread, which always takes part) and then reused, so a call costs a
// wake-up (microseconds) rather than a thread start (~50 us each).
#ifndef QCAL_CORE_PARALLEL_H_
#define QCAL_CORE_PARALLEL_H_

#include <cstdint>

#include "absl/functional/function_ref.h"

namespace qcal {

// ResolveThreads maps a requested thread count to an actual one: values <= 0
// mean "all hardware threads".
int ResolveThreads(int requested);

// ParallelFor calls fn(begin, end) on disjoint contiguous ranges covering
// [0, n), using up to `threads` threads (the calling thread included; <= 0:
// all hardware threads). Ranges are at least `min_chunk` long where n allows;
// the ranges are handed out dynamically, so which thread runs which range
// varies from call to call. Returns after all calls end. Safe to call from
// several threads at once; a call made from inside `fn` on a pool thread
// runs serially on that thread.
void ParallelFor(int64_t n, int threads, int64_t min_chunk,
                 absl::FunctionRef<void(int64_t begin, int64_t end)> fn);

}  // namespace qcal

#endif  // QCAL_CORE_PARALLEL_H_
