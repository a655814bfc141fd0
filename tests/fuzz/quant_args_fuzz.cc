// Fuzz target: the QuantizationArgs JSON parser, scheme names and observer
// kwargs. Accepted args must survive a ToJson / parse round trip unchanged.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/quant_args.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto args = qcal::ParseQuantizationArgs(text);
  if (args.ok()) {
    const std::string json = args->ToJson();
    auto again = qcal::ParseQuantizationArgs(json);
    if (!again.ok() || again->ToJson() != json) __builtin_trap();
  }
  (void)qcal::QuantizationArgsFromScheme(text);
  (void)qcal::ParseObserverKwargs(text, "fuzz");
  return 0;
}
