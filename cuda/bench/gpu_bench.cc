// gpu_bench: Google Benchmark cases for the CUDA backend.
//
//   MinMax/<strategy>/<dtype>      the min/max kernels alone (device time,
//                                  cudaEvent-timed over batches of 10 calls
//                                  queued behind a spin kernel, so that host
//                                  launch overhead leaves no gaps) on
//                                  a 4096x4096 tensor; counters: GB/s read,
//                                  the device-to-device cudaMemcpy bandwidth
//                                  of the same buffer measured in the same
//                                  run (bytes read + written per second) and
//                                  frac_of_copy, their ratio.
//   MinMaxCall/<strategy>/<dtype>  the same through CudaBackend().min_max
//                                  (host results: + download + sync), wall
//                                  clock.
//   MseSearch/<observer>/<scheme>/<shape>
//                                  a whole GetQParams of "mse" or
//                                  "memoryless_mse" on a bf16 weight in device
//                                  memory (min/max, every chunk of the
//                                  search, qparams), wall clock.
//   MseErrors/<scheme>/<shape>     one mse_errors kernel run over every unit
//                                  with patience + 1 = 6 candidates (device
//                                  time, cudaEvent-timed).
//
// Schemes: int4 group-128 (W4A16), int8 channel (W8A16), nvfp4 (tensor_group
// group-16 with a global scale). Shapes: 4096x4096 and 14336x4096.
//
// After the run a summary table (one line per case) follows the marker line
// "=== GPU benchmark summary"; tools/gpu_check.sh prints it. Without a GPU
// every case reports an error saying so.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "benchmark/benchmark.h"
#include "core/backend.h"
#include "core/float_convert.h"
#include "core/layout.h"
#include "core/qparams.h"
#include "core/quant_args.h"
#include "core/quant_math.h"
#include "core/tensor.h"
#include "cuda/backend.h"
#include "cuda/bench/spin_kernel.h"
#include "cuda/reduce.h"
#include "cuda/runtime.h"
#include "cuda_runtime_api.h"
#include "observers/observer.h"

namespace qcal {
namespace {

// ------------------------------------------------------------ resources

// Why there is no usable device, or empty when there is one.
const std::string& NoDeviceReason() {
  static const std::string* reason = [] {
    absl::StatusOr<CudaDeviceProbe> probe = ProbeCudaDevices();
    if (!probe.ok()) return new std::string(probe.status().ToString());
    if (probe->device_count == 0) {
      return new std::string("no CUDA device: " + probe->no_device_reason);
    }
    return new std::string();
  }();
  return *reason;
}

// A random tensor (normal, scale 0.02 like a weight, a few outliers) on the
// host and its device copy, cached by shape and dtype.
struct BenchTensor {
  Tensor host;
  DeviceBuffer device;
  TensorView view;  // the device copy, Device::kCuda
};

absl::StatusOr<const BenchTensor*> GetTensor(DType dtype, int64_t rows,
                                             int64_t cols) {
  static auto* cache =
      new std::map<std::tuple<DType, int64_t, int64_t>,
                   std::unique_ptr<BenchTensor>>();
  auto key = std::make_tuple(dtype, rows, cols);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second.get();
  auto t = std::make_unique<BenchTensor>();
  absl::StatusOr<Tensor> host = Tensor::Zeros(dtype, {rows, cols});
  if (!host.ok()) return host.status();
  t->host = std::move(*host);
  std::mt19937 rng(static_cast<uint32_t>(rows * 31 + cols));
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const int64_t n = rows * cols;
  for (int64_t i = 0; i < n; ++i) {
    float v = normal(rng);
    if (i % 9973 == 0) v *= 20.0f;  // outliers
    switch (dtype) {
      case DType::kF32:
        t->host.mutable_data_as<float>()[i] = v;
        break;
      case DType::kF16:
        t->host.mutable_data_as<uint16_t>()[i] = FloatToF16Bits(v);
        break;
      default:
        t->host.mutable_data_as<uint16_t>()[i] = FloatToBf16Bits(v);
        break;
    }
  }
  absl::StatusOr<DeviceBuffer> dev = DeviceBuffer::Allocate(t->host.nbytes());
  if (!dev.ok()) return dev.status();
  t->device = std::move(*dev);
  absl::StatusOr<CudaStream> stream = CudaStream::Create();
  if (!stream.ok()) return stream.status();
  absl::Status s = t->device.CopyFromHost(t->host.data(), t->host.nbytes(),
                                          stream->get());
  if (!s.ok()) return s;
  absl::StatusOr<TensorView> view = TensorView::Contiguous(
      t->device.data(), dtype, {rows, cols}, Device::kCuda);
  if (!view.ok()) return view.status();
  t->view = *view;
  const BenchTensor* out = t.get();
  (*cache)[key] = std::move(t);
  return out;
}

// One reducer and stream for the kernel-only cases.
struct Gpu {
  std::unique_ptr<CudaReducer> reducer;
  std::optional<CudaStream> stream;
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  int64_t cycles_per_ms = 0;  // SM clock
};

absl::StatusOr<Gpu*> GetGpu() {
  static Gpu* gpu = nullptr;
  if (gpu != nullptr) return gpu;
  auto g = std::make_unique<Gpu>();
  absl::StatusOr<std::unique_ptr<CudaReducer>> reducer = CudaReducer::Create();
  if (!reducer.ok()) return reducer.status();
  g->reducer = std::move(*reducer);
  absl::StatusOr<CudaStream> stream = CudaStream::Create();
  if (!stream.ok()) return stream.status();
  g->stream.emplace(std::move(*stream));
  absl::Status s = CudaStatus(cudaEventCreate(&g->start), "cudaEventCreate");
  if (s.ok()) s = CudaStatus(cudaEventCreate(&g->stop), "cudaEventCreate");
  int khz = 0;
  if (s.ok()) {
    s = CudaStatus(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate,
                                          g->reducer->device()),
                   "cudaDeviceGetAttribute(clock rate)");
  }
  if (!s.ok()) return s;
  g->cycles_per_ms = khz;
  gpu = g.release();
  return gpu;
}

// Device milliseconds of `enqueue` run `reps` times back to back on the
// GPU's stream (the average per run). A spin kernel holds the stream for 2 ms
// while the runs are enqueued, so the host's launch overhead leaves no gaps
// between them.
absl::StatusOr<double> TimeOnDevice(Gpu& gpu, int reps,
                                    const std::function<absl::Status()>& enqueue) {
  cudaStream_t stream = gpu.stream->get();
  absl::Status s = CudaStatus(
      internal_cuda::LaunchSpin(2 * gpu.cycles_per_ms, stream), "spin kernel");
  if (s.ok()) s = CudaStatus(cudaEventRecord(gpu.start, stream), "cudaEventRecord");
  for (int r = 0; s.ok() && r < reps; ++r) s = enqueue();
  if (s.ok()) s = CudaStatus(cudaEventRecord(gpu.stop, stream), "cudaEventRecord");
  if (s.ok()) s = CudaStatus(cudaEventSynchronize(gpu.stop), "cudaEventSynchronize");
  float ms = 0.0f;
  if (s.ok()) {
    s = CudaStatus(cudaEventElapsedTime(&ms, gpu.start, gpu.stop),
                   "cudaEventElapsedTime");
  }
  if (!s.ok()) return s;
  return static_cast<double>(ms) / reps;
}

// Device-to-device copy bandwidth for a buffer of `bytes` (read + written
// bytes per second), measured now.
absl::StatusOr<double> CopyBandwidth(Gpu& gpu, const void* src, int64_t bytes) {
  static auto* scratch = new DeviceBuffer();
  if (scratch->size_bytes() < bytes) {
    absl::StatusOr<DeviceBuffer> b = DeviceBuffer::Allocate(bytes);
    if (!b.ok()) return b.status();
    *scratch = std::move(*b);
  }
  auto copy = [&] {
    return CudaStatus(cudaMemcpyAsync(scratch->data(), src,
                                      static_cast<size_t>(bytes),
                                      cudaMemcpyDeviceToDevice,
                                      gpu.stream->get()),
                      "cudaMemcpyAsync(device to device)");
  };
  absl::StatusOr<double> warm = TimeOnDevice(gpu, 3, copy);
  if (!warm.ok()) return warm.status();
  absl::StatusOr<double> ms = TimeOnDevice(gpu, 20, copy);
  if (!ms.ok()) return ms.status();
  return 2.0 * static_cast<double>(bytes) / (*ms * 1e-3);
}

bool SkipWithoutDevice(benchmark::State& state) {
  if (NoDeviceReason().empty()) return false;
  state.SkipWithError(NoDeviceReason().c_str());
  return true;
}

void Fail(benchmark::State& state, const absl::Status& s) {
  state.SkipWithError(s.ToString().c_str());
}

// --------------------------------------------------------------- min/max

struct MinMaxCase {
  const char* name;
  int64_t tile_rows;  // 0: all rows
  int64_t tile_cols;  // 0: all columns
};

const MinMaxCase kMinMaxCases[] = {{"tensor", 0, 0},
                                   {"channel", 1, 0},
                                   {"group128", 1, 128},
                                   {"block128x128", 128, 128}};

MinMaxRequest MakeMinMaxRequest(const BenchTensor& t, const MinMaxCase& c) {
  MinMaxRequest req;
  req.x = t.view;
  const int64_t rows = t.view.dim(0), cols = t.view.dim(1);
  req.grid = TileGrid{rows, cols, c.tile_rows > 0 ? c.tile_rows : rows,
                      c.tile_cols > 0 ? c.tile_cols : cols};
  req.format = *FloatFormatOf(t.view.dtype());
  return req;
}

void BM_MinMax(benchmark::State& state, MinMaxCase c, DType dtype) {
  if (SkipWithoutDevice(state)) return;
  absl::StatusOr<Gpu*> gpu = GetGpu();
  if (!gpu.ok()) return Fail(state, gpu.status());
  absl::StatusOr<const BenchTensor*> t = GetTensor(dtype, 4096, 4096);
  if (!t.ok()) return Fail(state, t.status());
  const MinMaxRequest req = MakeMinMaxRequest(**t, c);
  const int64_t bytes = (*t)->view.nbytes();
  absl::StatusOr<double> copy_bw = CopyBandwidth(**gpu, (*t)->view.data(), bytes);
  if (!copy_bw.ok()) return Fail(state, copy_bw.status());
  auto enqueue = [&] {
    return (*gpu)->reducer->EnqueueMinMax(req, (*gpu)->stream->get());
  };
  // Warm-up (scratch allocation) and a check that the results come back.
  absl::Status s = enqueue();
  std::vector<float> mn(req.grid.num_units()), mx(req.grid.num_units());
  if (s.ok()) {
    s = (*gpu)->reducer->FetchMinMax({mn.data(), mx.data(), nullptr},
                                     (*gpu)->stream->get());
  }
  if (!s.ok()) return Fail(state, s);
  double total_ms = 0.0;
  for (auto _ : state) {
    absl::StatusOr<double> ms = TimeOnDevice(**gpu, 10, enqueue);
    if (!ms.ok()) return Fail(state, ms.status());
    state.SetIterationTime(*ms * 1e-3);
    total_ms += *ms;
  }
  const double avg_s = total_ms * 1e-3 / static_cast<double>(state.iterations());
  const double bw = static_cast<double>(bytes) / avg_s;
  state.counters["GBps"] = bw * 1e-9;
  state.counters["copy_GBps"] = *copy_bw * 1e-9;
  state.counters["frac_of_copy"] = bw / *copy_bw;
}

void BM_MinMaxCall(benchmark::State& state, MinMaxCase c, DType dtype) {
  if (SkipWithoutDevice(state)) return;
  absl::StatusOr<const BenchTensor*> t = GetTensor(dtype, 4096, 4096);
  if (!t.ok()) return Fail(state, t.status());
  const MinMaxRequest req = MakeMinMaxRequest(**t, c);
  std::vector<float> mn(req.grid.num_units()), mx(req.grid.num_units());
  int64_t bad;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    absl::Status s = CudaBackend().min_max(req, {}, {mn.data(), mx.data(), &bad});
    const auto t1 = std::chrono::steady_clock::now();
    if (!s.ok()) return Fail(state, s);
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
  }
}

// ------------------------------------------------------------------- MSE

struct Scheme {
  const char* name;
  const char* args;
};

const Scheme kSchemes[] = {
    {"int4_g128", R"({"num_bits": 4, "group_size": 128})"},
    {"int8_channel", R"({"num_bits": 8, "strategy": "channel"})"},
    {"nvfp4", R"({"num_bits": 4, "type": "float", "strategy": "tensor_group",
                  "group_size": 16})"},
};

const int64_t kShapes[][2] = {{4096, 4096}, {14336, 4096}};

void BM_MseSearch(benchmark::State& state, std::string observer, Scheme scheme,
                  int64_t rows, int64_t cols) {
  if (SkipWithoutDevice(state)) return;
  absl::StatusOr<const BenchTensor*> t = GetTensor(DType::kBF16, rows, cols);
  if (!t.ok()) return Fail(state, t.status());
  absl::StatusOr<QuantizationArgs> args = ParseQuantizationArgs(scheme.args);
  if (!args.ok()) return Fail(state, args.status());
  absl::StatusOr<std::unique_ptr<Observer>> obs =
      CreateObserver(observer, *args);
  if (!obs.ok()) return Fail(state, obs.status());
  std::optional<float> g;
  if (args->strategy_or_tensor() == Strategy::kTensorGroup) {
    absl::StatusOr<float> gs = (*obs)->GetGParam((*t)->view);
    if (!gs.ok()) return Fail(state, gs.status());
    g = *gs;
  }
  // Warm-up: device scratch, pinned staging.
  absl::StatusOr<const QParams*> qp = (*obs)->GetQParams((*t)->view, nullptr, g);
  if (!qp.ok()) return Fail(state, qp.status());
  for (auto _ : state) {
    (*obs)->Reset();
    const auto t0 = std::chrono::steady_clock::now();
    qp = (*obs)->GetQParams((*t)->view, nullptr, g);
    const auto t1 = std::chrono::steady_clock::now();
    if (!qp.ok()) return Fail(state, qp.status());
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
  }
}

void BM_MseErrors(benchmark::State& state, Scheme scheme, int64_t rows,
                  int64_t cols) {
  if (SkipWithoutDevice(state)) return;
  absl::StatusOr<Gpu*> gpu = GetGpu();
  if (!gpu.ok()) return Fail(state, gpu.status());
  absl::StatusOr<const BenchTensor*> t = GetTensor(DType::kBF16, rows, cols);
  if (!t.ok()) return Fail(state, t.status());
  absl::StatusOr<QuantizationArgs> args = ParseQuantizationArgs(scheme.args);
  if (!args.ok()) return Fail(state, args.status());
  absl::StatusOr<TileGrid> grid = TileGridForStrategy((*t)->view, *args);
  if (!grid.ok()) return Fail(state, grid.status());
  const FloatFormat f = FloatFormat::kBF16;
  // Unit ranges from the min/max kernels, as the observer gets them.
  MinMaxRequest mm;
  mm.x = (*t)->view;
  mm.grid = *grid;
  mm.format = f;
  const int64_t units = grid->num_units();
  std::vector<float> mins(units), maxs(units);
  absl::Status s = (*gpu)->reducer->MinMax(
      mm, {mins.data(), maxs.data(), nullptr}, (*gpu)->stream->get());
  if (!s.ok()) return Fail(state, s);
  std::vector<int64_t> unit_list(units);
  for (int64_t u = 0; u < units; ++u) unit_list[u] = u;
  std::vector<float> shrink;
  for (int i = 0; i < 6; ++i) shrink.push_back(ShrinkFactor(i, 100.0));
  MseRequest req;
  req.x = (*t)->view;
  req.grid = *grid;
  req.format = f;
  req.spec = MakeQuantSpec(*args);
  if (args->strategy_or_tensor() == Strategy::kTensorGroup) {
    float gmin = mins[0], gmax = maxs[0];
    for (int64_t u = 0; u < units; ++u) {
      gmin = std::min(gmin, mins[u]);
      gmax = std::max(gmax, maxs[u]);
    }
    req.has_global_scale = true;
    req.global_scale = GlobalScale(gmin, gmax);
  }
  req.norm_exponent = NormExponent<FloatFormat::kBF16>(2.4);
  req.units = unit_list;
  req.unit_min = mins;
  req.unit_max = maxs;
  req.shrink = shrink;
  s = (*gpu)->reducer->StageMse(req, (*gpu)->stream->get());
  if (!s.ok()) return Fail(state, s);
  auto enqueue = [&] {
    return (*gpu)->reducer->EnqueueMseErrors((*gpu)->stream->get());
  };
  double total_ms = 0.0;
  for (auto _ : state) {
    absl::StatusOr<double> ms = TimeOnDevice(**gpu, 3, enqueue);
    if (!ms.ok()) return Fail(state, ms.status());
    state.SetIterationTime(*ms * 1e-3);
    total_ms += *ms;
  }
  std::vector<float> errors(units * shrink.size());
  s = (*gpu)->reducer->FetchMseErrors(errors.data(), (*gpu)->stream->get());
  if (!s.ok()) return Fail(state, s);
  const double avg_s = total_ms * 1e-3 / static_cast<double>(state.iterations());
  state.counters["Gevals_per_s"] =
      static_cast<double>(rows * cols) * shrink.size() / avg_s * 1e-9;
}

// -------------------------------------------------------------- summary

// Prints the usual console output and keeps one line per case for the
// summary table.
class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Iteration) continue;
      std::string metric;
      if (run.error_occurred) {
        lines_.push_back(absl::StrFormat("%-44s %12s  %s", Name(run), "-",
                                         "ERROR: " + run.error_message));
        continue;
      }
      const double seconds =
          run.GetAdjustedRealTime() /
          benchmark::GetTimeUnitMultiplier(run.time_unit);
      auto counter = [&](const char* key) -> std::optional<double> {
        auto it = run.counters.find(key);
        if (it == run.counters.end()) return std::nullopt;
        return it->second.value;
      };
      if (auto frac = counter("frac_of_copy")) {
        metric = absl::StrFormat("%.0f GB/s = %.2f x copy bandwidth (%.0f GB/s)",
                                 *counter("GBps"), *frac, *counter("copy_GBps"));
      } else if (auto ev = counter("Gevals_per_s")) {
        metric = absl::StrFormat("%.1f G candidate-evaluations/s", *ev);
      }
      lines_.push_back(absl::StrFormat("%-44s %9.3f ms  %s", Name(run),
                                       seconds * 1e3, metric));
    }
  }

  void PrintSummary() const {
    std::printf("\n=== GPU benchmark summary\n%-44s %12s  %s\n", "CASE",
                "TIME", "METRIC");
    for (const std::string& line : lines_) std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }

 private:
  // The case name without Google Benchmark's "/manual_time" suffix.
  static std::string Name(const Run& run) {
    std::string name = run.benchmark_name();
    const std::string suffix = "/manual_time";
    if (name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      name.resize(name.size() - suffix.size());
    }
    return name;
  }

  std::vector<std::string> lines_;
};

void RegisterAll() {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (const MinMaxCase& c : kMinMaxCases) {
      const std::string suffix =
          absl::StrCat(c.name, "/", DTypeName(dtype));
      benchmark::RegisterBenchmark(("MinMax/" + suffix).c_str(), BM_MinMax, c,
                                   dtype)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark(("MinMaxCall/" + suffix).c_str(),
                                   BM_MinMaxCall, c, dtype)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
  for (const auto& shape : kShapes) {
    const std::string shape_name = absl::StrCat(shape[0], "x", shape[1]);
    for (const Scheme& scheme : kSchemes) {
      for (const char* observer : {"mse", "memoryless_mse"}) {
        benchmark::RegisterBenchmark(
            absl::StrCat("MseSearch/", observer, "/", scheme.name, "/",
                         shape_name)
                .c_str(),
            BM_MseSearch, std::string(observer), scheme, shape[0], shape[1])
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
      }
      benchmark::RegisterBenchmark(
          absl::StrCat("MseErrors/", scheme.name, "/", shape_name).c_str(),
          BM_MseErrors, scheme, shape[0], shape[1])
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
}

}  // namespace
}  // namespace qcal

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  qcal::RegisterAll();
  qcal::SummaryReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintSummary();
  benchmark::Shutdown();
  return 0;
}
