#include "observers/mse_search.h"

#include <algorithm>
#include <atomic>
#include <limits>
#include <mutex>
#include <vector>

#include "absl/numeric/bits.h"
#include "absl/status/status.h"
#include "core/parallel.h"
#include "core/qparams.h"
#include "core/status_macros.h"

namespace qcal {
namespace {

// Units per kernel call: bounds the search's per-candidate buffers (16 bytes
// per unit and candidate with bounds) whatever the tensor's size.
constexpr int64_t kMseSearchBatch = int64_t{1} << 15;

// The most steps one chunk evaluates past the first possible stop (each
// unit's improvements in a chunk are kept in a 32-bit mask).
constexpr int64_t kMaxSpeculativeChunk = 32;

}  // namespace

absl::StatusOr<MseSearchOptions> ReadMseSearchOptions(KwargsReader& kwargs) {
  MseSearchOptions o;
  QCAL_ASSIGN_OR_RETURN(o.maxshrink,
                        kwargs.GetDouble("maxshrink", 0.2, 0.0, 1.0, false));
  QCAL_ASSIGN_OR_RETURN(o.patience, kwargs.GetInt("patience", 5, 1));
  QCAL_ASSIGN_OR_RETURN(o.grid, kwargs.GetDouble("grid", 100.0, 0.0, 1e9,
                                                 false));
  QCAL_ASSIGN_OR_RETURN(o.norm, kwargs.GetDouble("norm", 2.4, 0.0, 1e3, false));
  return o;
}

absl::Status MseSearch(const Observation& obs, const MseSearchOptions& options,
                       absl::Span<float> min_out, absl::Span<float> max_out) {
  // int(maxshrink * grid) in double, truncated as Python's int() does.
  const int64_t steps = static_cast<int64_t>(options.maxshrink * options.grid);
  std::vector<float> shrink(std::max<int64_t>(steps, 0));
  for (int64_t i = 0; i < steps; ++i) {
    shrink[i] = ShrinkFactor(i, options.grid);
  }
  const float best_init = FormatMax(obs.format);
  const int64_t num_units = obs.grid.num_units();
  std::vector<int64_t> best_step(num_units, -1);
  // The raw ranges, read before min_out / max_out (which may be the same
  // arrays as obs.min / obs.max) are written.
  const std::vector<float> raw_min(obs.min.begin(), obs.min.end());
  const std::vector<float> raw_max(obs.max.begin(), obs.max.end());
  for (const ObserverCall& call : obs.calls) {
    for (int64_t u : call.units) {
      min_out[u] = 1.0f;  // torch.ones_like
      max_out[u] = 0.0f;  // torch.zeros_like
    }
  }
  if (steps <= 0) return absl::OkStatus();

  MseRequest request;
  request.x = obs.x;
  request.grid = obs.grid;
  request.format = obs.format;
  request.nonfinite = obs.options.nonfinite;
  request.spec = obs.spec;
  request.has_global_scale = obs.global_scale.has_value();
  request.global_scale = obs.global_scale.value_or(1.0f);
  request.norm_exponent = DispatchFormat(obs.format, [&](auto f) {
    return NormExponent<decltype(f)::value>(options.norm);
  });

  struct CallState {
    int64_t no_improve = 0;
    bool stopped = false;
  };
  const size_t num_calls = obs.calls.size();
  std::vector<CallState> state(num_calls);
  // The call of each unit of the grid (-1: none).
  std::vector<int32_t> call_of(num_units, -1);
  for (size_t k = 0; k < num_calls; ++k) {
    for (int64_t u : obs.calls[k].units) call_of[u] = static_cast<int32_t>(k);
  }

  // With the backend's error bounds (float32, where the exact error term is
  // the expensive part), a decision "error < best" is taken from the
  // brackets when they settle it: [lo, hi] entirely below the best's bracket
  // (improved), entirely at or above it, or a candidate with the same
  // fake-quantization constants as the best (equal errors: not improved).
  // A unit whose decision stays open gets the exact errors of every step,
  // which decide that step and all its later ones, so the result is the
  // step-by-step algorithm's on mse_errors' values. f16/bf16 errors are
  // table lookups already: they use mse_errors directly.
  const bool use_bounds = obs.backend->mse_error_bounds != nullptr &&
                          obs.format == FloatFormat::kF32;
  // Each unit's best error as a bracket [best_lo, best_hi] (one value once
  // exact) and the key of its candidate.
  std::vector<float> best_lo(num_units, best_init);
  std::vector<float> best_hi(num_units, best_init);
  std::vector<uint64_t> best_key(use_bounds ? num_units : 0, 0);
  // Units with exact errors: their slot in `exact` (`steps` values each).
  std::vector<int32_t> exact_slot(use_bounds ? num_units : 0, -1);
  std::vector<float> exact;
  int32_t exact_units = 0;

  // The units of the running calls in grid (= memory) order, so that the
  // kernel and the replay below read the data, the ranges and the errors
  // sequentially (listing group units call by call, i.e. column by column,
  // jumps a row per unit).
  std::vector<int64_t> units;
  std::vector<float> unit_min, unit_max;
  // One batch's errors or bounds, [listed unit][step of the chunk].
  std::vector<float> errors, lo, hi;
  std::vector<uint64_t> keys;
  // Small units evaluate every remaining step (up to kMaxSpeculativeChunk)
  // in one chunk: their per-chunk costs (constants, loads, brackets, the
  // kernel's setup) outweigh the candidates; a call that stops inside such a
  // chunk has its units' choices rolled back to the stop (chunk_improved).
  int64_t min_call_units = std::numeric_limits<int64_t>::max();
  for (const ObserverCall& call : obs.calls) {
    min_call_units =
        std::min(min_call_units, static_cast<int64_t>(call.units.size()));
  }
  const bool speculate =
      std::min(obs.grid.tile_rows, obs.grid.rows) *
              std::min(obs.grid.tile_cols, obs.grid.cols) <=
          kMseSpeculateElements &&
      min_call_units >= options.speculate_min_call_units;
  const int64_t max_count =
      std::max(std::min(options.patience, steps),
               speculate ? std::min(steps, kMaxSpeculativeChunk) : 0);
  // Whether call k improved at step s of the chunk: [k * count + s].
  std::vector<std::atomic<uint8_t>> improved(
      num_calls * static_cast<size_t>(max_count));
  // With speculation: each unit's improvements in the chunk (bit s: step
  // first + s) and its best step before the chunk.
  std::vector<uint32_t> chunk_improved(speculate ? num_units : 0, 0);
  std::vector<int64_t> chunk_best(speculate ? num_units : 0, -1);
  struct Open {
    int64_t j;     // position in the batch
    int64_t step;  // first undecided step of the chunk
  };
  std::vector<Open> open;
  std::mutex open_mu;
  const int threads = obs.options.exec.threads;

  // The current chunk: steps first .. first + count - 1.
  int64_t first = 0, count = 0;
  // Call k stopped at step `stop` of the chunk, before its last
  // (speculation only): its units keep their last improvement up to it.
  auto roll_back = [&](size_t k, int64_t stop) {
    const uint32_t upto = static_cast<uint32_t>((uint64_t{2} << stop) - 1);
    for (int64_t u : obs.calls[k].units) {
      const uint32_t m = chunk_improved[u] & upto;
      if (m == chunk_improved[u]) continue;
      // The highest step of m, or the best before the chunk.
      best_step[u] = m == 0 ? chunk_best[u] : first + absl::bit_width(m) - 1;
    }
  };
  // Replays steps `from` .. count - 1 of the current chunk for unit u
  // (position j of the batch), flagging its call's improvements; returns
  // the first open step, or count. A unit's decision at a step: with exact
  // errors (f16/bf16, or a unit whose bounds left one open), "improved" is
  // error < best; with bounds, a candidate with the best's key (equal
  // errors) did not improve, a bracket entirely below the best's did, one
  // entirely at or above it did not, and anything else is open. The unit's
  // state stays in locals for the steps (branch-free but for the open
  // decisions), and its improvements are flagged afterwards.
  auto replay = [&](int64_t u, int64_t j, int64_t from) {
    const size_t base = static_cast<size_t>(j * count);
    int64_t best = best_step[u];
    float best_l = best_lo[u], best_h = best_hi[u];
    // The improvements, bit s: step s (count <= 64).
    uint64_t mask = 0;
    // Records an improvement at step s (a chunk longer than the masks is
    // never speculative: no call stops inside it).
    auto flag = [&](int64_t s) {
      if (speculate && s < kMaxSpeculativeChunk) {
        chunk_improved[u] |= uint32_t{1} << s;
      }
      // Set once: a load first keeps the flag's cache line shared between
      // the threads instead of bouncing it on every improvement.
      std::atomic<uint8_t>& f = improved[call_of[u] * count + s];
      if (f.load(std::memory_order_relaxed) == 0) {
        f.store(1, std::memory_order_relaxed);
      }
    };
    int64_t step = from;
    if (!use_bounds || exact_slot[u] >= 0) {
      const float* err =
          use_bounds
              ? exact.data() +
                    static_cast<size_t>(exact_slot[u]) * steps + first
              : errors.data() + base;
      for (; step < count; ++step) {
        const float e = err[step];
        const bool better = e < best_h;
        best_h = better ? e : best_h;
        best = better ? first + step : best;
        if (count <= 64) {
          mask |= static_cast<uint64_t>(better) << step;
        } else if (better) {
          flag(step);
        }
      }
      best_l = best_h;
    } else {
      // Branches only on the rare open decision (the outcomes are data,
      // mispredicted as branches).
      uint64_t key = best_key[u];
      for (; step < count; ++step) {
        const size_t o = base + static_cast<size_t>(step);
        const bool same = best >= 0 && keys[o] == key;
        const bool better = !same && hi[o] < best_l;
        if (!same && !better && !(lo[o] >= best_h)) break;  // open
        best_l = better ? lo[o] : best_l;
        best_h = better ? hi[o] : best_h;
        key = better ? keys[o] : key;
        best = better ? first + step : best;
        if (count <= 64) {
          mask |= static_cast<uint64_t>(better) << step;
        } else if (better) {
          flag(step);
        }
      }
      best_key[u] = key;
    }
    best_step[u] = best;
    best_lo[u] = best_l;
    best_hi[u] = best_h;
    for (; mask != 0; mask &= mask - 1) flag(absl::countr_zero(mask));
    return step;
  };

  bool rebuild = true;
  for (first = 0; first < steps; first += count) {
    // Chunk size: the fewest steps after which a running call could stop (a
    // call whose counter is c stops after patience - c steps without
    // improvement). So no candidate is evaluated past a stop, and no call
    // stops before the chunk's last step: within a chunk the units'
    // decisions do not depend on the counters, and the units can be
    // replayed in batches, each over all the chunk's steps.
    count = steps - first;
    for (size_t k = 0; k < num_calls; ++k) {
      if (state[k].stopped) continue;
      count = std::min(count, options.patience - state[k].no_improve);
    }
    count = std::max<int64_t>(count, 1);
    if (speculate) {
      count = std::max(count, std::min(steps - first, kMaxSpeculativeChunk));
    }
    if (rebuild) {  // the set of running calls changed
      units.clear();
      unit_min.clear();
      unit_max.clear();
      for (int64_t u = 0; u < num_units; ++u) {
        if (call_of[u] < 0 || state[call_of[u]].stopped) continue;
        units.push_back(u);
        unit_min.push_back(raw_min[u]);
        unit_max.push_back(raw_max[u]);
      }
      rebuild = false;
    }
    if (units.empty()) break;
    if (speculate) {
      for (int64_t u : units) {
        chunk_improved[u] = 0;
        chunk_best[u] = best_step[u];
      }
    }
    for (size_t f = 0; f < num_calls * count; ++f) {
      improved[f].store(0, std::memory_order_relaxed);
    }
    request.shrink = absl::MakeConstSpan(shrink).subspan(first, count);
    const int64_t n = static_cast<int64_t>(units.size());
    for (int64_t b0 = 0; b0 < n; b0 += kMseSearchBatch) {
      const int64_t m = std::min(kMseSearchBatch, n - b0);
      request.units = absl::MakeConstSpan(units).subspan(b0, m);
      request.unit_min = absl::MakeConstSpan(unit_min).subspan(b0, m);
      request.unit_max = absl::MakeConstSpan(unit_max).subspan(b0, m);
      const size_t total = static_cast<size_t>(m * count);
      if (use_bounds) {
        request.whole_search = first == 0 && count == steps;
        lo.resize(total);
        hi.resize(total);
        keys.resize(total);
        QCAL_RETURN_IF_ERROR(obs.backend->mse_error_bounds(
            request, obs.options.exec,
            MseBoundsOutput{lo.data(), hi.data(), keys.data()}));
      } else {
        errors.resize(total);
        QCAL_RETURN_IF_ERROR(
            obs.backend->mse_errors(request, obs.options.exec, errors.data()));
      }
      // Replay the step-by-step rule on each unit (units are independent),
      // in parallel; a unit's replay pauses at an open decision.
      open.clear();
      ParallelFor(m, threads, 1024, [&](int64_t begin, int64_t end) {
        for (int64_t j = begin; j < end; ++j) {
          const int64_t step = replay(units[b0 + j], j, 0);
          if (step < count) {
            std::lock_guard<std::mutex> lock(open_mu);
            open.push_back({j, step});
          }
        }
      });
      if (open.empty()) continue;
      // The open units' exact errors for every step, then the rest of their
      // replay on those.
      std::sort(open.begin(), open.end(),
                [](const Open& a, const Open& b) { return a.j < b.j; });
      std::vector<int64_t> ou(open.size());
      std::vector<float> omin(open.size()), omax(open.size());
      for (size_t q = 0; q < open.size(); ++q) {
        ou[q] = units[b0 + open[q].j];
        omin[q] = raw_min[ou[q]];
        omax[q] = raw_max[ou[q]];
      }
      MseRequest exact_request = request;
      exact_request.units = ou;
      exact_request.unit_min = omin;
      exact_request.unit_max = omax;
      exact_request.shrink = shrink;
      const size_t base = exact.size();
      exact.resize(base + ou.size() * steps);
      QCAL_RETURN_IF_ERROR(obs.backend->mse_errors(
          exact_request, obs.options.exec, exact.data() + base));
      for (size_t q = 0; q < open.size(); ++q) {
        const int64_t u = ou[q];
        exact_slot[u] = exact_units++;
        const float* e = exact.data() + base + q * steps;
        best_lo[u] = best_hi[u] = best_step[u] >= 0 ? e[best_step[u]] : best_init;
        replay(u, open[q].j, open[q].step);  // exact errors: none is open
      }
    }
    // Each running call's counter, step by step.
    for (int64_t step = 0; step < count; ++step) {
      for (size_t k = 0; k < num_calls; ++k) {
        if (state[k].stopped) continue;
        if (improved[k * count + step].load(std::memory_order_relaxed)) {
          state[k].no_improve = 0;
        } else if (++state[k].no_improve >= options.patience) {
          state[k].stopped = true;
          rebuild = true;
          // (Without speculation no call stops before the last step.)
          if (speculate && step + 1 < count) roll_back(k, step);
        }
      }
    }
  }
  // Each unit's range: its last improving candidate (or [1, 0] if none).
  DispatchFormat(obs.format, [&](auto f) {
    constexpr FloatFormat F = decltype(f)::value;
    for (const ObserverCall& call : obs.calls) {
      for (int64_t u : call.units) {
        if (best_step[u] < 0) continue;
        const float p = shrink[best_step[u]];
        min_out[u] = Round<F>(p * raw_min[u]);
        max_out[u] = Round<F>(p * raw_max[u]);
      }
    }
  });
  return absl::OkStatus();
}

}  // namespace qcal
