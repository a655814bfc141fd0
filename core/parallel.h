// A minimal parallel-for over index ranges on std::thread.
//
// The work split never affects results: callers give each index its own
// output and combine partial results in index order.
#ifndef QCAL_CORE_PARALLEL_H_
#define QCAL_CORE_PARALLEL_H_

#include <cstdint>

#include "absl/functional/function_ref.h"

namespace qcal {

// ResolveThreads maps a requested thread count to an actual one: values <= 0
// mean "all hardware threads".
int ResolveThreads(int requested);

// ParallelFor calls fn(begin, end) on disjoint contiguous ranges covering
// [0, n), using up to `threads` threads (the calling thread included). Ranges
// are at least `min_chunk` long where n allows. Returns after all calls end.
void ParallelFor(int64_t n, int threads, int64_t min_chunk,
                 absl::FunctionRef<void(int64_t begin, int64_t end)> fn);

}  // namespace qcal

#endif  // QCAL_CORE_PARALLEL_H_
