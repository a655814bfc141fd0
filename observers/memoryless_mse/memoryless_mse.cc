// "memoryless_mse": the MSE search of observers/mse_search.h on the current
// observation only, without a moving average (SPEC §7). Kwargs: maxshrink,
// patience, grid, norm.
#include "core/status_macros.h"
#include "observers/mse_search.h"
#include "observers/observer.h"
#include "registry/registry.h"

namespace qcal {
namespace {

class MemorylessMseObserver final : public Observer {
 public:
  MemorylessMseObserver(const QuantizationArgs& args,
                        const MseSearchOptions& options)
      : Observer("memoryless_mse", args), options_(options) {}

 protected:
  absl::Status UpdateMinMax(const Observation& obs, absl::Span<float> min_out,
                            absl::Span<float> max_out) override {
    return MseSearch(obs, options_, min_out, max_out);
  }

  absl::StatusOr<std::pair<float, float>> GParamMinMax(
      const Observation& whole) override {
    return std::make_pair(whole.min[0], whole.max[0]);
  }

 private:
  MseSearchOptions options_;
};

absl::StatusOr<std::unique_ptr<Observer>> Create(const QuantizationArgs& args) {
  KwargsReader kwargs("memoryless_mse", args.observer_kwargs);
  QCAL_ASSIGN_OR_RETURN(MseSearchOptions options, ReadMseSearchOptions(kwargs));
  QCAL_RETURN_IF_ERROR(kwargs.Finish());
  return std::unique_ptr<Observer>(new MemorylessMseObserver(args, options));
}

const bool kRegistered = RegisterObserver("memoryless_mse", &Create);

}  // namespace
}  // namespace qcal
