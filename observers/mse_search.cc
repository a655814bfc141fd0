#include "observers/mse_search.h"

#include <algorithm>
#include <atomic>
#include <vector>

#include "absl/status/status.h"
#include "core/parallel.h"
#include "core/qparams.h"
#include "core/status_macros.h"

namespace qcal {
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
  std::vector<float> best(obs.grid.num_units(), best_init);
  std::vector<int64_t> best_step(obs.grid.num_units(), -1);
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
  std::vector<CallState> state(obs.calls.size());
  // The call of each unit of the grid (-1: none).
  const int64_t num_units = obs.grid.num_units();
  std::vector<int32_t> call_of(num_units, -1);
  for (size_t k = 0; k < obs.calls.size(); ++k) {
    for (int64_t u : obs.calls[k].units) call_of[u] = static_cast<int32_t>(k);
  }
  // The units of the running calls in grid (= memory) order, so that the
  // kernel and the replay below read the data, the ranges and the errors
  // sequentially (listing group units call by call, i.e. column by column,
  // jumps a row per unit).
  std::vector<int64_t> units;
  std::vector<float> unit_min, unit_max, errors;
  std::vector<std::atomic<uint8_t>> improved(obs.calls.size());
  const int threads = obs.options.exec.threads;
  bool rebuild = true;
  int64_t count = 0;
  for (int64_t first = 0; first < steps; first += count) {
    // Chunk size: the fewest steps after which a running call could stop,
    // so that no candidate is evaluated past a stop. A call whose counter
    // is c stops after patience - c steps without improvement; the first
    // step always improves on the starting "best" (the format's maximum) for
    // finite errors, so the first chunk is patience + 1 steps.
    count = steps - first;
    if (first == 0) {
      count = std::min<int64_t>(count, options.patience + 1);
    } else {
      for (size_t k = 0; k < obs.calls.size(); ++k) {
        if (state[k].stopped) continue;
        count = std::min(count, options.patience - state[k].no_improve);
      }
    }
    count = std::max<int64_t>(count, 1);
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
    request.units = units;
    request.unit_min = unit_min;
    request.unit_max = unit_max;
    request.shrink = absl::MakeConstSpan(shrink).subspan(first, count);
    errors.resize(units.size() * count);
    QCAL_RETURN_IF_ERROR(
        obs.backend->mse_errors(request, obs.options.exec, errors.data()));
    // Replay the step-by-step rule on the errors: at each step every unit of
    // a running call takes a strictly better error; then each call's counter
    // moves. Units are independent within a step, so they are scanned in
    // parallel; each unit remembers the step of its last improvement.
    const int64_t n = static_cast<int64_t>(units.size());
    for (int64_t step = 0; step < count; ++step) {
      for (auto& flag : improved) flag.store(0, std::memory_order_relaxed);
      ParallelFor(n, threads, 4096, [&](int64_t begin, int64_t end) {
        for (int64_t j = begin; j < end; ++j) {
          const int64_t u = units[j];
          const int32_t k = call_of[u];
          if (state[k].stopped) continue;
          const float err = errors[j * count + step];
          if (err < best[u]) {
            best[u] = err;
            best_step[u] = first + step;
            improved[k].store(1, std::memory_order_relaxed);
          }
        }
      });
      for (size_t k = 0; k < obs.calls.size(); ++k) {
        if (state[k].stopped) continue;
        if (improved[k].load(std::memory_order_relaxed)) {
          state[k].no_improve = 0;
        } else if (++state[k].no_improve >= options.patience) {
          state[k].stopped = true;
          rebuild = true;
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
