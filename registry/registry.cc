#include "registry/registry.h"

#include <cstdio>
#include <cstdlib>
#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"

namespace qcal {
namespace {

struct Registry {
  absl::Mutex mu;
  std::map<std::string, ObserverFactory> factories ABSL_GUARDED_BY(mu);
};

Registry& GetRegistry() {
  static Registry* registry = new Registry;  // never destroyed
  return *registry;
}

}  // namespace

bool RegisterObserver(absl::string_view name, ObserverFactory factory) {
  Registry& registry = GetRegistry();
  absl::MutexLock lock(&registry.mu);
  const std::string key = absl::AsciiStrToLower(name);
  if (!registry.factories.emplace(key, factory).second) {
    std::fprintf(stderr,
                 "qcal: observer \"%s\" is registered twice (two plugins use "
                 "the same name)\n",
                 key.c_str());
    std::abort();
  }
  return true;
}

absl::StatusOr<ObserverFactory> FindObserverFactory(absl::string_view name) {
  Registry& registry = GetRegistry();
  absl::MutexLock lock(&registry.mu);
  auto it = registry.factories.find(absl::AsciiStrToLower(name));
  if (it != registry.factories.end()) return it->second;
  std::vector<std::string> names;
  for (const auto& [key, unused] : registry.factories) names.push_back(key);
  return absl::NotFoundError(absl::StrCat(
      "unknown observer \"", name, "\" (registered: ",
      names.empty() ? std::string("none") : absl::StrJoin(names, ", "), ")"));
}

std::vector<std::string> RegisteredObserverNames() {
  Registry& registry = GetRegistry();
  absl::MutexLock lock(&registry.mu);
  std::vector<std::string> names;
  for (const auto& [key, unused] : registry.factories) names.push_back(key);
  return names;
}

}  // namespace qcal
