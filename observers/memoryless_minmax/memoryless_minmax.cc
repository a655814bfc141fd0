// "memoryless_minmax": each unit's min/max of the current observation only;
// no running state and no kwargs (SPEC §7).
#include <algorithm>

#include "core/status_macros.h"
#include "observers/observer.h"
#include "registry/registry.h"

namespace qcal {
namespace {

class MemorylessMinMaxObserver final : public Observer {
 public:
  explicit MemorylessMinMaxObserver(const QuantizationArgs& args)
      : Observer("memoryless_minmax", args) {}

 protected:
  // The current observation's raw min/max (already in min_io / max_io) are
  // the result.
  absl::Status UpdateMinMax(const Observation& /*obs*/,
                            absl::Span<float> /*min_io*/,
                            absl::Span<float> /*max_io*/) override {
    return absl::OkStatus();
  }
};

absl::StatusOr<std::unique_ptr<Observer>> Create(const QuantizationArgs& args) {
  KwargsReader kwargs("memoryless_minmax", args.observer_kwargs);
  QCAL_RETURN_IF_ERROR(kwargs.Finish());
  return std::unique_ptr<Observer>(new MemorylessMinMaxObserver(args));
}

const bool kRegistered = RegisterObserver("memoryless_minmax", &Create);

}  // namespace
}  // namespace qcal
