#include "observers/mse/mse.h"

#include "core/status_macros.h"
#include "registry/registry.h"

namespace qcal {
namespace {

class MseObserver final : public Observer {
 public:
  MseObserver(const QuantizationArgs& args, const MseOptions& options)
      : Observer("mse", args), options_(options) {}

 protected:
  absl::Status UpdateMinMax(const Observation& obs, absl::Span<float> min_out,
                            absl::Span<float> max_out) override {
    QCAL_RETURN_IF_ERROR(MseSearch(obs, options_.search, min_out, max_out));
    return ApplyMovingAverage(obs, options_.averaging_constant,
                              /*one_disables=*/false, min_out,
                              max_out);
  }

  absl::StatusOr<std::pair<float, float>> GParamMinMax(
      const Observation& whole) override {
    return std::make_pair(whole.min[0], whole.max[0]);
  }

 private:
  MseOptions options_;
};

absl::StatusOr<std::unique_ptr<Observer>> Create(const QuantizationArgs& args) {
  KwargsReader kwargs("mse", args.observer_kwargs);
  MseOptions options;
  QCAL_ASSIGN_OR_RETURN(options.search, ReadMseSearchOptions(kwargs));
  QCAL_ASSIGN_OR_RETURN(
      options.averaging_constant,
      kwargs.GetDouble("averaging_constant", 0.01, 0.0, 1.0, false));
  QCAL_RETURN_IF_ERROR(kwargs.Finish());
  return MakeMseObserver(args, options);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Observer>> MakeMseObserver(
    const QuantizationArgs& args, const MseOptions& options) {
  return std::unique_ptr<Observer>(new MseObserver(args, options));
}

const bool kMseRegistered = RegisterObserver("mse", &Create);

}  // namespace qcal
