// cuda_devices: prints the CUDA devices this process can use, one per line,
// or "no CUDA device: <reason>". Exits 0 in both cases and 1 when probing
// fails (a broken driver installation). tools/gpu_check.sh runs it first.
#include <cstdio>
#include <string>

#include "absl/status/statusor.h"
#include "cuda/runtime.h"

int main() {
  const absl::StatusOr<qcal::CudaDeviceProbe> probe = qcal::ProbeCudaDevices();
  if (!probe.ok()) {
    std::fprintf(stderr, "cuda_devices: %s\n",
                 std::string(probe.status().message()).c_str());
    return 1;
  }
  if (probe->device_count == 0) {
    std::printf("no CUDA device: %s\n", probe->no_device_reason.c_str());
    return 0;
  }
  std::printf("%d CUDA device%s\n", probe->device_count,
              probe->device_count == 1 ? "" : "s");
  for (int device = 0; device < probe->device_count; ++device) {
    const absl::StatusOr<std::string> name = qcal::CudaDeviceName(device);
    std::printf("  %d: %s\n", device,
                name.ok() ? name->c_str()
                          : std::string(name.status().message()).c_str());
  }
  return 0;
}
