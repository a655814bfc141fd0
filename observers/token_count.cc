#include "observers/token_count.h"

namespace qcal {

std::map<std::string, std::optional<int64_t>> GetObserverTokenCount(
    const ObserverTree& tree) {
  std::map<std::string, std::optional<int64_t>> counts;
  for (const auto& [name, module] : tree) {
    if (module.input != nullptr) {
      counts[name] = module.input->num_observed_tokens();
    }
  }
  return counts;
}

}  // namespace qcal
