// Fuzz target: the safetensors header parser and reader. Any input must give
// either an error or a file whose every view lies inside the image.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qcal::SafetensorsLimits limits;
  limits.max_header_bytes = 1 << 20;
  limits.max_tensors = 4096;
  auto file = qcal::SafetensorsFile::FromBytes(
      "fuzz.safetensors", std::vector<uint8_t>(data, data + size), limits);
  if (!file.ok()) return 0;
  // Touch every byte of every tensor: a view outside the image would be
  // caught by AddressSanitizer.
  uint64_t checksum = 0;
  for (const qcal::SafetensorsEntry& entry : (*file)->entries()) {
    const qcal::TensorView view = (*file)->View(entry);
    const auto* bytes = static_cast<const uint8_t*>(view.data());
    for (int64_t i = 0; i < view.nbytes(); ++i) checksum += bytes[i];
    if (!(*file)->Get(entry.name).ok()) __builtin_trap();
  }
  for (const auto& [key, value] : (*file)->metadata()) {
    checksum += key.size() + value.size();
  }
  volatile uint64_t sink = checksum;
  (void)sink;
  return 0;
}
