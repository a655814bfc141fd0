// The MSE observers' search (SPEC §7), shared by "mse" and "memoryless_mse".
//
// For every unit with absolute range [a, b] of the current observation, the
// candidates are [Round(p a), Round(p b)] for p = 1 - i / grid,
// i = 0 .. int(maxshrink * grid) - 1. A unit takes a candidate whose error is
// strictly lower than its best so far (best starts at the format's largest
// finite value; the chosen range starts as [1, 0], as the seed's ones/zeros).
// Within one call (tensor id), if no unit improved at a step a shared counter
// grows, otherwise it resets; at `patience` the call stops.
//
// The backend evaluates candidates for all still-running calls in chunks,
// reading each unit's data once per chunk; the stopping rule is then
// replayed on the computed errors, so the result is exactly that of the
// step-by-step algorithm. A chunk is as long as the shortest distance to a
// possible stop among the running calls (patience - counter steps), so no
// candidate is evaluated past a stop and no call stops inside a chunk; see
// docs/PERFORMANCE.md for the measured trade-off against fixed chunks.
// Units of at most kMseSpeculateElements elements (NVFP4's groups of 16,
// W4A16's of 128) take every remaining step (up to 32) in one chunk
// instead, since per-chunk costs weigh most there: candidates past a stop
// are then evaluated and ignored (a unit of a call that stopped inside the
// chunk keeps its last improvement up to the stop). Only calls of many
// units (MseSearchOptions::speculate_min_call_units) speculate: they hardly
// ever stop early; one that does wastes at most the chunk.
//
// For float32 tensors, when the backend brackets errors
// (BackendOps::mse_error_bounds, several times cheaper than the exact
// float32 error terms), decisions are taken on the brackets where they
// settle them, and on exact errors (mse_errors, every step of that unit)
// where they do not.
#ifndef QCAL_OBSERVERS_MSE_SEARCH_H_
#define QCAL_OBSERVERS_MSE_SEARCH_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "observers/observer.h"

namespace qcal {

// Units of at most this many elements are searched in speculative chunks:
// every remaining step at once, in calls of enough units (see MseSearch and
// MseSearchOptions::speculate_min_call_units). 128: NVFP4 -27% and W4A16
// -5% on 4096 x 4096 weights; int8 channel units (4096 elements) stop after
// ~10 of 20 steps and keep exact chunks.
constexpr int64_t kMseSpeculateElements = 128;

// MseSearchOptions are the search's kwargs.
struct MseSearchOptions {
  double maxshrink = 0.2;
  int64_t patience = 5;
  double grid = 100.0;
  double norm = 2.4;
  // Speculative chunks (kMseSpeculateElements) only when every call has at
  // least this many units: a call of few units may stop after a few steps,
  // and a chunk of every step would then be mostly wasted (up to 32 steps
  // evaluated for 6). Not a kwarg; tests set it to 0.
  int64_t speculate_min_call_units = 512;
};

// ReadMseSearchOptions reads maxshrink, patience, grid and norm from `kwargs`
// with SPEC §7's ranges.
absl::StatusOr<MseSearchOptions> ReadMseSearchOptions(KwargsReader& kwargs);

// MseSearch writes each unit's chosen [min, max] into min_out / max_out
// (grid order) for every unit of every call of `obs`. min_out / max_out may
// be obs.min / obs.max themselves (the raw ranges are read first).
absl::Status MseSearch(const Observation& obs, const MseSearchOptions& options,
                       absl::Span<float> min_out, absl::Span<float> max_out);

}  // namespace qcal

#endif  // QCAL_OBSERVERS_MSE_SEARCH_H_
