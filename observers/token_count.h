// Token counting over a tree of modules (SPEC §7): get_observer_token_count.
//
// An ObserverTree maps dotted module names ("model.layers.0.mlp.experts.3")
// to the observers a module owns (input, weight, output). The count of a
// module is its input observer's num_observed_tokens().
#ifndef QCAL_OBSERVERS_TOKEN_COUNT_H_
#define QCAL_OBSERVERS_TOKEN_COUNT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "observers/observer.h"

namespace qcal {

// ModuleObservers are the observers of one module (any may be null).
struct ModuleObservers {
  std::unique_ptr<Observer> input;
  std::unique_ptr<Observer> weight;
  std::unique_ptr<Observer> output;
};

// ObserverTree is a set of modules by dotted name, kept sorted.
using ObserverTree = std::map<std::string, ModuleObservers>;

// GetObserverTokenCount returns, for every module with an input observer,
// its dotted name -> that observer's token count (nullopt if it never counted
// a 2-D batch). Modules without an input observer are left out.
std::map<std::string, std::optional<int64_t>> GetObserverTokenCount(
    const ObserverTree& tree);

}  // namespace qcal

#endif  // QCAL_OBSERVERS_TOKEN_COUNT_H_
