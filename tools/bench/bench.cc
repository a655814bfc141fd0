// CPU benchmarks of the observers' hot paths on 4096 x 4096 weights (f32 and
// bf16): min/max per strategy (the kernel alone and through the
// memoryless_minmax observer), the MSE search through the "mse" observer
// (int8 channel, int4 group 128, NVFP4 with its global scale), and a plain
// vectorised read (a max reduction) of the same buffer as the bandwidth
// ceiling. Every case
// reports bytes/s of the observed tensor.
//
// Flags (before Google Benchmark's own --benchmark_* flags):
//   --threads=N        CPU threads for the kernels (default: all cores; also
//                      QCAL_BENCH_THREADS)
//   --weights=FILE     a safetensors file with 2-D tensors "w_f32" (F32) and
//                      "w_bf16" (BF16) to use instead of generated weights
//                      (tools/bench/compare_torch.py writes one); also
//                      QCAL_BENCH_WEIGHTS
//   --rows=R --cols=C  shape of the generated weights (default 4096 x 4096)
//   --target=NAME      restrict the kernels to one SIMD target (AVX3, AVX2,
//                      SSE4, SSSE3, SCALAR)
//   --norm=X           the MSE observers' norm kwarg (default 2.4; 2 makes
//                      the error term a square: the pow's cost is the
//                      difference)
//   --checkpoint=FILE  also run "checkpoint_minmax_w4a16": what calibrate
//                      --scheme=W4A16 --observer=minmax does per run, minus
//                      writing the output: map the safetensors file, and for
//                      every 2-D float tensor a fresh minmax observer's
//                      qparams (reading the data from the page cache)
// Build with -c opt:
//   ./bazelw run -c opt //tools/bench -- --threads=2 --benchmark_repetitions=5
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "core/backend.h"
#include "core/cpu/simd_kernels.h"
#include "core/float_convert.h"
#include "core/parallel.h"
#include "core/quant_args.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "observers/observer.h"
#include "tools/bench/read_bandwidth.h"

namespace qcal {
namespace bench {
namespace {

struct Settings {
  int threads = 0;
  std::string weights;
  int64_t rows = 4096;
  int64_t cols = 4096;
  std::string target;
  std::string checkpoint;
  std::string norm;
};

Settings& GetSettings() {
  static Settings* s = new Settings;
  return *s;
}

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "bench: %s\n", message.c_str());
  std::exit(2);
}

// Weights by dtype name ("f32", "bf16"), generated or read once.
const Tensor& Weights(const std::string& dtype) {
  static auto* cache = new std::vector<std::pair<std::string, Tensor>>();
  for (const auto& [name, t] : *cache) {
    if (name == dtype) return t;
  }
  const Settings& s = GetSettings();
  Tensor t;
  if (!s.weights.empty()) {
    auto file = SafetensorsFile::Open(s.weights);
    if (!file.ok()) Die(std::string(file.status().message()));
    auto view = (*file)->Get("w_" + dtype);
    if (!view.ok()) Die(std::string(view.status().message()));
    if (view->rank() != 2 ||
        view->dtype() != (dtype == "f32" ? DType::kF32 : DType::kBF16)) {
      Die(absl::StrCat(s.weights, ": tensor 'w_", dtype,
                       "' must be a 2-D ", dtype, " tensor, got ",
                       view->DebugString()));
    }
    auto copy = Tensor::CopyOf(*view);  // aligned, resident
    if (!copy.ok()) Die(std::string(copy.status().message()));
    t = std::move(*copy);
  } else {
    // Normal(0, 0.02) weights with a few larger values, fixed seed.
    t = Tensor::Zeros(dtype == "f32" ? DType::kF32 : DType::kBF16,
                      {s.rows, s.cols})
            .value();
    std::mt19937 rng(1234);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    const int64_t n = s.rows * s.cols;
    for (int64_t i = 0; i < n; ++i) {
      float v = normal(rng);
      if (i % 9973 == 0) v *= 8.0f;
      if (dtype == "f32") {
        t.mutable_data_as<float>()[i] = v;
      } else {
        t.mutable_data_as<uint16_t>()[i] = FloatToBf16Bits(v);
      }
    }
  }
  cache->emplace_back(dtype, std::move(t));
  return cache->back().second;
}

ExecOptions Exec() {
  ExecOptions e;
  e.threads = GetSettings().threads;
  return e;
}

void SetBytes(benchmark::State& state, const Tensor& w) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          w.numel() * DTypeSize(w.dtype()));
  state.counters["threads"] = ResolveThreads(GetSettings().threads);
}

void ReadBandwidth(benchmark::State& state, const std::string& dtype) {
  const Tensor& w = Weights(dtype);
  const int64_t bytes = w.numel() * DTypeSize(w.dtype());
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        MaxWord(w.view().data(), bytes, GetSettings().threads));
  }
  SetBytes(state, w);
}

// The strategies' grids for the kernel benchmarks.
TileGrid GridFor(const std::string& strategy, int64_t rows, int64_t cols) {
  TileGrid g;
  g.rows = rows;
  g.cols = cols;
  if (strategy == "tensor") {
    g.tile_rows = rows;
    g.tile_cols = cols;
  } else if (strategy == "channel") {
    g.tile_rows = 1;
    g.tile_cols = cols;
  } else if (strategy == "group128") {
    g.tile_rows = 1;
    g.tile_cols = 128;
  } else {  // block128
    g.tile_rows = 128;
    g.tile_cols = 128;
  }
  return g;
}

void MinMaxKernel(benchmark::State& state, const std::string& strategy,
                  const std::string& dtype) {
  const Tensor& w = Weights(dtype);
  MinMaxRequest req;
  req.x = w.view();
  req.grid = GridFor(strategy, w.dim(0), w.dim(1));
  req.format = dtype == "f32" ? FloatFormat::kF32 : FloatFormat::kBF16;
  std::vector<float> mn(req.grid.num_units()), mx(req.grid.num_units());
  int64_t bad = 0;
  const MinMaxOutput out{mn.data(), mx.data(), &bad};
  for (auto _ : state) {
    const absl::Status s = CpuBackend().min_max(req, Exec(), out);
    if (!s.ok()) Die(std::string(s.message()));
    benchmark::DoNotOptimize(mn.data());
  }
  SetBytes(state, w);
}

// Weight args of each benchmarked case.
QuantizationArgs ArgsFor(const std::string& what) {
  absl::StatusOr<QuantizationArgs> args;
  if (what == "tensor") {
    args = ParseQuantizationArgs(R"({"num_bits": 8, "strategy": "tensor"})");
  } else if (what == "channel" || what == "int8_channel") {
    args = QuantizationArgsFromScheme("W8A16");
  } else if (what == "group128" || what == "int4_group128") {
    args = QuantizationArgsFromScheme("W4A16");
  } else if (what == "block128") {
    args = QuantizationArgsFromScheme("FP8_BLOCK");
  } else {
    args = QuantizationArgsFromScheme("NVFP4");
  }
  if (!args.ok()) Die(std::string(args.status().message()));
  return *args;
}

std::unique_ptr<Observer> MakeObserver(const std::string& name,
                                       const QuantizationArgs& args) {
  auto obs = CreateObserver(name, args);
  if (!obs.ok()) Die(std::string(obs.status().message()));
  ObserveOptions options;
  options.exec = Exec();
  options.tensor_name = "bench";
  (*obs)->set_options(options);
  return std::move(*obs);
}

void MinMaxObserver(benchmark::State& state, const std::string& strategy,
                    const std::string& dtype) {
  const Tensor& w = Weights(dtype);
  const QuantizationArgs args = ArgsFor(strategy);
  std::unique_ptr<Observer> obs = MakeObserver("memoryless_minmax", args);
  for (auto _ : state) {
    auto qp = obs->GetQParams(w.view());
    if (!qp.ok()) Die(std::string(qp.status().message()));
    benchmark::DoNotOptimize(*qp);
  }
  SetBytes(state, w);
}

// One weight through a fresh "mse" observer, as calibrate does: for NVFP4
// the global scale first, a reset, then the qparams with it.
void MseSearch(benchmark::State& state, const std::string& scheme,
               const std::string& dtype) {
  const Tensor& w = Weights(dtype);
  QuantizationArgs args = ArgsFor(scheme);
  if (!GetSettings().norm.empty()) {
    double norm;
    if (!absl::SimpleAtod(GetSettings().norm, &norm)) {
      Die("--norm=" + GetSettings().norm + " is not a number");
    }
    args.observer_kwargs["norm"] = norm;
  }
  for (auto _ : state) {
    std::unique_ptr<Observer> obs = MakeObserver("mse", args);
    std::optional<float> g;
    if (scheme == "nvfp4") {
      auto gs = obs->GetGParam(w.view());
      if (!gs.ok()) Die(std::string(gs.status().message()));
      g = *gs;
      obs->Reset();
    }
    auto qp = obs->GetQParams(w.view(), nullptr, g);
    if (!qp.ok()) Die(std::string(qp.status().message()));
    benchmark::DoNotOptimize(*qp);
  }
  SetBytes(state, w);
}

// One pass of calibrate's work over a checkpoint (see --checkpoint).
void CheckpointMinMax(benchmark::State& state) {
  const QuantizationArgs args = ArgsFor("group128");
  int64_t bytes = 0;
  for (auto _ : state) {
    auto file = SafetensorsFile::Open(GetSettings().checkpoint);
    if (!file.ok()) Die(std::string(file.status().message()));
    bytes = 0;
    for (const SafetensorsEntry& e : (*file)->entries()) {
      if (e.shape.size() != 2 ||
          (e.dtype != DType::kF32 && e.dtype != DType::kF16 &&
           e.dtype != DType::kBF16)) {
        continue;
      }
      auto view = (*file)->Get(e.name);
      if (!view.ok()) Die(std::string(view.status().message()));
      std::unique_ptr<Observer> obs = MakeObserver("minmax", args);
      auto qp = obs->GetQParams(*view);
      if (!qp.ok()) Die(std::string(qp.status().message()));
      benchmark::DoNotOptimize(*qp);
      bytes += e.end - e.begin;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * bytes);
  state.counters["threads"] = ResolveThreads(GetSettings().threads);
}

void RegisterAll() {
  if (!GetSettings().checkpoint.empty()) {
    benchmark::RegisterBenchmark("checkpoint_minmax_w4a16", CheckpointMinMax)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  for (const std::string dtype : {"f32", "bf16"}) {
    benchmark::RegisterBenchmark(("read_bw/" + dtype).c_str(), ReadBandwidth,
                                 dtype)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    for (const std::string strategy :
         {"tensor", "channel", "group128", "block128"}) {
      benchmark::RegisterBenchmark(
          ("minmax_kernel/" + strategy + "/" + dtype).c_str(), MinMaxKernel,
          strategy, dtype)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(
          ("minmax_observer/" + strategy + "/" + dtype).c_str(),
          MinMaxObserver, strategy, dtype)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
    for (const std::string scheme : {"int8_channel", "int4_group128", "nvfp4"}) {
      benchmark::RegisterBenchmark(("mse/" + scheme + "/" + dtype).c_str(),
                                   MseSearch, scheme, dtype)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
}

// Consumes this program's flags from argv; leaves the rest to benchmark.
void ParseFlags(int* argc, char** argv) {
  Settings& s = GetSettings();
  if (const char* env = std::getenv("QCAL_BENCH_THREADS")) {
    if (!absl::SimpleAtoi(env, &s.threads)) {
      Die(absl::StrCat("QCAL_BENCH_THREADS=", env, " is not an integer"));
    }
  }
  if (const char* env = std::getenv("QCAL_BENCH_WEIGHTS")) s.weights = env;
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    absl::string_view a = argv[i];
    auto value = [&](absl::string_view prefix, auto* dst) {
      if (!absl::StartsWith(a, prefix)) return false;
      const absl::string_view v = a.substr(prefix.size());
      if constexpr (std::is_same_v<std::remove_pointer_t<decltype(dst)>,
                                   std::string>) {
        *dst = std::string(v);
      } else {
        if (!absl::SimpleAtoi(v, dst) || *dst < 0) {
          Die(absl::StrCat("bad value in ", a));
        }
      }
      return true;
    };
    if (value("--threads=", &s.threads) || value("--weights=", &s.weights) ||
        value("--rows=", &s.rows) || value("--cols=", &s.cols) ||
        value("--target=", &s.target) ||
        value("--checkpoint=", &s.checkpoint) || value("--norm=", &s.norm)) {
      continue;
    }
    argv[out++] = argv[i];
  }
  *argc = out;
  if (s.rows <= 0 || s.cols <= 0) Die("--rows and --cols must be positive");
}

}  // namespace
}  // namespace bench
}  // namespace qcal

int main(int argc, char** argv) {
  using qcal::bench::GetSettings;
  qcal::bench::ParseFlags(&argc, argv);
  std::optional<qcal::ScopedSimdTarget> target;
  if (!GetSettings().target.empty()) {
    for (int64_t t : qcal::SimdTargets()) {
      if (qcal::SimdTargetName(t) == GetSettings().target) target.emplace(t);
    }
    if (!target.has_value()) {
      qcal::bench::Die("--target=" + GetSettings().target +
                       " is not a SIMD target of this CPU");
    }
  }
  benchmark::AddCustomContext(
      "qcal_threads",
      std::to_string(qcal::ResolveThreads(GetSettings().threads)));
  benchmark::AddCustomContext(
      "qcal_simd_target", qcal::SimdTargetName(qcal::ActiveSimdTarget()));
  benchmark::AddCustomContext(
      "qcal_weights", GetSettings().weights.empty() ? std::string("generated")
                                                    : GetSettings().weights);
  qcal::bench::RegisterAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
