// "mse": llmcompressor's MovingAverageMSEObserver. The MSE search of
// observers/mse_search.h picks each unit's clipped range, which then goes
// through minmax's moving average for every tensor id (SPEC §7, §9.2). The
// global scale comes from the plain min/max of the whole tensor.
#ifndef QCAL_OBSERVERS_MSE_MSE_H_
#define QCAL_OBSERVERS_MSE_MSE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "observers/mse_search.h"
#include "observers/observer.h"

namespace qcal {

// MseOptions are mse's kwargs.
struct MseOptions {
  MseSearchOptions search;
  double averaging_constant = 0.01;  // in (0, 1]
};

// MakeMseObserver builds an mse observer directly.
absl::StatusOr<std::unique_ptr<Observer>> MakeMseObserver(
    const QuantizationArgs& args, const MseOptions& options);

}  // namespace qcal

#endif  // QCAL_OBSERVERS_MSE_MSE_H_
