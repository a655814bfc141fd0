// The observer registry: observer name -> factory.
//
// Plugins register themselves from a namespace-scope constant in their own
// .cc (each plugin is its own alwayslink cc_library, so the linker keeps the
// constant):
//
//   const bool kRegistered = qcal::RegisterObserver("minmax", &CreateMinMax);
//
// The table is a function-local static that is never destroyed, guarded by a
// mutex, so registration during static initialisation and lookups from many
// threads are safe. A duplicate name aborts the program at start-up. The
// registry never touches Observer objects (core <- registry <- observers):
// CreateObserver in observers/observer.h looks the factory up here.
#ifndef QCAL_REGISTRY_REGISTRY_H_
#define QCAL_REGISTRY_REGISTRY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/quant_args.h"

namespace qcal {

class Observer;

// ObserverFactory builds an observer for validated args; it validates the
// observer's kwargs (args.observer_kwargs) and fails with InvalidArgument on
// an unknown key or an out-of-range value.
using ObserverFactory = absl::StatusOr<std::unique_ptr<Observer>> (*)(
    const QuantizationArgs& args);

// RegisterObserver adds `factory` under `name` (lower-case). Aborts if the
// name is already registered. Returns true (for a registration constant).
bool RegisterObserver(absl::string_view name, ObserverFactory factory);

// FindObserverFactory returns the factory registered under `name`
// (case-insensitive), or NotFound listing the registered names.
absl::StatusOr<ObserverFactory> FindObserverFactory(absl::string_view name);

// RegisteredObserverNames returns the registered names, sorted.
std::vector<std::string> RegisteredObserverNames();

}  // namespace qcal

#endif  // QCAL_REGISTRY_REGISTRY_H_
