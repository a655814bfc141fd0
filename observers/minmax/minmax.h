// "minmax": llmcompressor's MinMaxObserver. Each unit's min/max, smoothed by a
// moving average across observations (SPEC §7):
//   new = running + averaging_constant * (current - running),
// with averaging_constant == 1 disabling the running state.
#ifndef QCAL_OBSERVERS_MINMAX_MINMAX_H_
#define QCAL_OBSERVERS_MINMAX_MINMAX_H_

#include <memory>

#include "absl/status/statusor.h"
#include "observers/observer.h"

namespace qcal {

// MinMaxOptions are minmax's kwargs.
struct MinMaxOptions {
  double averaging_constant = 0.01;  // in (0, 1]
};

// MakeMinMaxObserver builds a minmax observer directly (the registry's
// factory reads the options from args.observer_kwargs).
absl::StatusOr<std::unique_ptr<Observer>> MakeMinMaxObserver(
    const QuantizationArgs& args, const MinMaxOptions& options);

}  // namespace qcal

#endif  // QCAL_OBSERVERS_MINMAX_MINMAX_H_
