#include "observers/mse_search.h"

#include <algorithm>
#include <vector>

#include "absl/status/status.h"
#include "core/qparams.h"
#include "core/status_macros.h"

namespace qcal {
namespace {

// torch.finfo(dtype).max of the observed format.
float FormatMax(FloatFormat f) {
  switch (f) {
    case FloatFormat::kF16:
      return 65504.0f;
    case FloatFormat::kBF16:
      return Bf16BitsToFloat(0x7F7F);
    default:
      return 3.4028234663852886e+38f;
  }
}

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
  std::vector<float> best(obs.grid.num_units(), best_init);
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
  std::vector<int64_t> units;
  std::vector<float> unit_min, unit_max, errors;
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
    units.clear();
    unit_min.clear();
    unit_max.clear();
    for (size_t k = 0; k < obs.calls.size(); ++k) {
      if (state[k].stopped) continue;
      for (int64_t u : obs.calls[k].units) {
        units.push_back(u);
        unit_min.push_back(obs.min[u]);
        unit_max.push_back(obs.max[u]);
      }
    }
    if (units.empty()) break;
    request.units = units;
    request.unit_min = unit_min;
    request.unit_max = unit_max;
    request.shrink = absl::MakeConstSpan(shrink).subspan(first, count);
    errors.assign(units.size() * count, 0.0f);
    QCAL_RETURN_IF_ERROR(
        obs.backend->mse_errors(request, obs.options.exec, errors.data()));
    // Replay the step-by-step rule on the errors, call by call.
    size_t offset = 0;  // position of the call's first unit in `units`
    for (size_t k = 0; k < obs.calls.size(); ++k) {
      if (state[k].stopped) continue;
      const ObserverCall& call = obs.calls[k];
      for (int64_t step = 0; step < count && !state[k].stopped; ++step) {
        const float p = shrink[first + step];
        bool improved = false;
        for (size_t j = 0; j < call.units.size(); ++j) {
          const int64_t u = call.units[j];
          const float err = errors[(offset + j) * count + step];
          if (err < best[u]) {
            best[u] = err;
            DispatchFormat(obs.format, [&](auto f) {
              constexpr FloatFormat F = decltype(f)::value;
              min_out[u] = Round<F>(p * obs.min[u]);
              max_out[u] = Round<F>(p * obs.max[u]);
            });
            improved = true;
          }
        }
        if (improved) {
          state[k].no_improve = 0;
        } else if (++state[k].no_improve >= options.patience) {
          state[k].stopped = true;
        }
      }
      offset += call.units.size();
    }
  }
  return absl::OkStatus();
}

}  // namespace qcal
