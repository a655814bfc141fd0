// "static_minmax": running min of minima and max of maxima over every
// observation; no kwargs (SPEC §7).
#include <algorithm>

#include "core/status_macros.h"
#include "observers/observer.h"
#include "registry/registry.h"

namespace qcal {
namespace {

class StaticMinMaxObserver final : public Observer {
 public:
  explicit StaticMinMaxObserver(const QuantizationArgs& args)
      : Observer("static_minmax", args) {}

 protected:
  absl::Status UpdateMinMax(const Observation& obs, absl::Span<float> min_io,
                            absl::Span<float> max_io) override {
    return ApplyRunningExtremes(obs, min_io, max_io);
  }
};

absl::StatusOr<std::unique_ptr<Observer>> Create(const QuantizationArgs& args) {
  KwargsReader kwargs("static_minmax", args.observer_kwargs);
  QCAL_RETURN_IF_ERROR(kwargs.Finish());
  return std::unique_ptr<Observer>(new StaticMinMaxObserver(args));
}

const bool kRegistered = RegisterObserver("static_minmax", &Create);

}  // namespace
}  // namespace qcal
