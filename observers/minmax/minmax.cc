#include "observers/minmax/minmax.h"

#include <algorithm>

#include "core/status_macros.h"
#include "registry/registry.h"

namespace qcal {
namespace {

class MinMaxObserver final : public Observer {
 public:
  MinMaxObserver(const QuantizationArgs& args, const MinMaxOptions& options)
      : Observer("minmax", args), options_(options) {}

 protected:
  absl::Status UpdateMinMax(const Observation& obs, absl::Span<float> min_io,
                            absl::Span<float> max_io) override {
    return ApplyMovingAverage(obs, options_.averaging_constant,
                              /*one_disables=*/true, min_io,
                              max_io);
  }

 private:
  MinMaxOptions options_;
};

absl::StatusOr<std::unique_ptr<Observer>> Create(const QuantizationArgs& args) {
  KwargsReader kwargs("minmax", args.observer_kwargs);
  MinMaxOptions options;
  QCAL_ASSIGN_OR_RETURN(
      options.averaging_constant,
      kwargs.GetDouble("averaging_constant", 0.01, 0.0, 1.0, false));
  QCAL_RETURN_IF_ERROR(kwargs.Finish());
  return MakeMinMaxObserver(args, options);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Observer>> MakeMinMaxObserver(
    const QuantizationArgs& args, const MinMaxOptions& options) {
  if (!(options.averaging_constant > 0.0 && options.averaging_constant <= 1.0)) {
    return absl::InvalidArgumentError(
        "observer 'minmax': averaging_constant must be in (0, 1]");
  }
  return std::unique_ptr<Observer>(new MinMaxObserver(args, options));
}

const bool kMinMaxRegistered = RegisterObserver("minmax", &Create);

}  // namespace qcal
