// CPU-vs-CUDA parity: every registered observer, every observed dtype and
// every strategy gives the same qparam bytes for a tensor in device memory as
// for the same tensor on the CPU, including non-finite input (error with the
// same index, or skipped), short groups, partial blocks and tensor_group with
// a global scale; and the CUDA backend's kernels (min_max, mse_errors) equal
// CpuBackend()'s bit for bit on random grids, unit lists and specs.
//
// Tests that need a GPU skip with a message where none is usable; the
// argument checks run everywhere.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/backend.h"
#include "core/float_convert.h"
#include "core/layout.h"
#include "core/qparams.h"
#include "core/quant_args.h"
#include "core/quant_math.h"
#include "core/tensor.h"
#include "cuda/backend.h"
#include "cuda/runtime.h"
#include "cuda_runtime_api.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "observers/observer.h"
#include "registry/registry.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/observers/test_tensors.h"

namespace qcal {
namespace {

using ::testing::HasSubstr;
using testing_util::MakeTensor;
using testing_util::RandomTensor;
using testing_util::SameBits;

uint32_t Bits(float f) { return FloatToBits(f); }

// A device copy of a host tensor, optionally `offset` elements past the
// start of its allocation (so that rows are not 16-byte aligned), viewed as a
// Device::kCuda tensor of the same shape.
class DeviceCopy {
 public:
  static absl::StatusOr<DeviceCopy> Of(const TensorView& host,
                                       int64_t offset = 0) {
    const int64_t size = DTypeSize(host.dtype());
    const int64_t bytes = host.nbytes() + offset * size;
    absl::StatusOr<CudaStream> stream = CudaStream::Create();
    if (!stream.ok()) return stream.status();
    DeviceCopy copy;
    absl::StatusOr<DeviceBuffer> buffer = DeviceBuffer::Allocate(bytes);
    if (!buffer.ok()) return buffer.status();
    copy.buffer_ = std::move(*buffer);
    std::vector<uint8_t> staged(static_cast<size_t>(bytes), 0);
    std::memcpy(staged.data() + offset * size, host.data(),
                static_cast<size_t>(host.nbytes()));
    absl::Status s = copy.buffer_.CopyFromHost(staged.data(), bytes,
                                               stream->get());
    if (!s.ok()) return s;
    absl::StatusOr<TensorView> view = TensorView::Contiguous(
        copy.buffer_.data_as<const uint8_t>() + offset * size, host.dtype(),
        host.shape(), Device::kCuda);
    if (!view.ok()) return view.status();
    copy.view_ = *view;
    return copy;
  }

  const TensorView& view() const { return view_; }

 private:
  DeviceBuffer buffer_;
  TensorView view_;
};

QuantizationArgs Args(const std::string& json) {
  absl::StatusOr<QuantizationArgs> args = ParseQuantizationArgs(json);
  EXPECT_TRUE(args.ok()) << json << ": " << args.status();
  return *args;
}

std::unique_ptr<Observer> Make(const std::string& name,
                               const QuantizationArgs& args,
                               NonFinitePolicy nonfinite) {
  absl::StatusOr<std::unique_ptr<Observer>> obs = CreateObserver(name, args);
  EXPECT_TRUE(obs.ok()) << obs.status();
  ObserveOptions options;
  options.tensor_name = "layer.weight";
  options.nonfinite = nonfinite;
  (*obs)->set_options(options);
  return std::move(*obs);
}

// "at index [i, j]" from an observer's non-finite error message.
std::string IndexPart(absl::string_view message) {
  const size_t at = message.find("at index ");
  if (at == absl::string_view::npos) return "<no index>";
  const size_t end = message.find(']', at);
  return std::string(message.substr(at, end - at + 1));
}

// --------------------------------------------------- no device needed

TEST(CudaBackendTest, IsRegisteredForCudaTensors) {
  absl::StatusOr<const BackendOps*> ops = GetBackend(Device::kCuda);
  ASSERT_TRUE(ops.ok()) << ops.status();
  EXPECT_EQ(*ops, &CudaBackend());
  EXPECT_EQ((*ops)->name, "cuda");
}

TEST(CudaBackendTest, RejectsBadRequestsWithoutTouchingTheDevice) {
  const BackendOps& ops = CudaBackend();
  static const float kHost[6] = {1, 2, 3, 4, 5, 6};
  TileGrid grid{2, 3, 1, 3};
  float mn[2], mx[2];
  int64_t bad = 7;

  MinMaxRequest req;
  req.x = *TensorView::Contiguous(kHost, DType::kF32, {2, 3}, Device::kCpu);
  req.grid = grid;
  absl::Status s = ops.min_max(req, {}, {mn, mx, &bad});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("cpu"));

  req.x = *TensorView::Contiguous(kHost, DType::kF32, {3, 2}, Device::kCuda);
  s = ops.min_max(req, {}, {mn, mx, &bad});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;

  req.x = *TensorView::Contiguous(kHost, DType::kF32, {2, 3}, Device::kCuda);
  req.format = FloatFormat::kBF16;
  s = ops.min_max(req, {}, {mn, mx, &bad});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;

  // Nothing to reduce: OK, no non-finite value.
  req.x = *TensorView::Contiguous(nullptr, DType::kF32, {0, 3}, Device::kCuda);
  req.grid = TileGrid{0, 3, 1, 3};
  req.format = FloatFormat::kF32;
  EXPECT_TRUE(ops.min_max(req, {}, {mn, mx, &bad}).ok());
  EXPECT_EQ(bad, -1);

  MseRequest mse;
  mse.x = *TensorView::Contiguous(kHost, DType::kF32, {2, 3}, Device::kCuda);
  mse.grid = grid;
  const int64_t units[] = {0, 1};
  const float one[] = {1.0f};
  mse.units = units;
  mse.unit_min = one;
  mse.unit_max = one;
  float errors[4];
  s = ops.mse_errors(mse, {}, errors);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  mse.units = {};
  mse.unit_min = {};
  mse.unit_max = {};
  EXPECT_TRUE(ops.mse_errors(mse, {}, errors).ok());
}

// ------------------------------------------------------ device needed

TEST(CudaBackendTest, HostMemoryMarkedCudaIsAnError) {
  QCAL_SKIP_WITHOUT_CUDA_DEVICE();
  std::vector<float> host(6, 1.0f);
  MinMaxRequest req;
  req.x =
      *TensorView::Contiguous(host.data(), DType::kF32, {2, 3}, Device::kCuda);
  req.grid = TileGrid{2, 3, 1, 3};
  float mn[2], mx[2];
  int64_t bad;
  const absl::Status s = CudaBackend().min_max(req, {}, {mn, mx, &bad});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("not CUDA device memory"));
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// ---------------------------------------------------- observer parity

struct StrategyCase {
  const char* args;
  std::vector<int64_t> shape;
};

const StrategyCase kStrategyCases[] = {
    {R"({"num_bits": 8})", {64, 96}},
    // Large enough for several items per unit (merged on the device).
    {R"({"num_bits": 8, "symmetric": false})", {200, 700}},
    {R"({"type": "float"})", {100, 100}},
    {R"({"num_bits": 8, "strategy": "channel"})", {37, 200}},
    // Rows wider than one item: column chunks.
    {R"({"num_bits": 8, "strategy": "channel"})", {3, 20000}},
    {R"({"num_bits": 16, "symmetric": false, "strategy": "channel"})",
     {3, 4, 5}},
    // Short last group (1000 = 7 x 128 + 104), asymmetric.
    {R"({"num_bits": 4, "group_size": 128, "symmetric": false})", {64, 1000}},
    // Odd row length: rows start at every alignment.
    {R"({"num_bits": 4, "group_size": 16})", {33, 77}},
    {R"({"num_bits": 4, "type": "float", "strategy": "tensor_group",
         "group_size": 16})",
     {64, 256}},
    {R"({"num_bits": 4, "type": "float", "strategy": "tensor_group",
         "group_size": 16})",
     {17, 40}},
    // Partial edge blocks.
    {R"({"type": "float", "strategy": "block", "block_structure": [128, 128]})",
     {300, 260}},
    {R"({"num_bits": 8, "strategy": "block", "block_structure": [4, 3]})",
     {10, 7}},
    {R"({"num_bits": 8, "strategy": "token"})", {50, 300}},
    {R"({"num_bits": 8, "strategy": "token"})", {2, 3, 5}},
};

class ParityTest
    : public ::testing::TestWithParam<std::tuple<std::string, DType>> {
 protected:
  const std::string& observer_name() const { return std::get<0>(GetParam()); }
  DType dtype() const { return std::get<1>(GetParam()); }

  // Observes `host` (and its device copy) with a CPU and a CUDA observer of
  // `args` and expects equal qparam bytes (and global scale bits). Returns
  // false after a failure.
  bool ExpectSameQParams(Observer& cpu, Observer& gpu, const Tensor& host,
                         int64_t offset = 0) {
    absl::StatusOr<DeviceCopy> dev = DeviceCopy::Of(host.view(), offset);
    EXPECT_TRUE(dev.ok()) << dev.status();
    if (!dev.ok()) return false;
    std::optional<float> g;
    if (cpu.args().strategy_or_tensor() == Strategy::kTensorGroup) {
      absl::StatusOr<float> g_cpu = cpu.GetGParam(host.view());
      absl::StatusOr<float> g_gpu = gpu.GetGParam(dev->view());
      EXPECT_TRUE(g_cpu.ok()) << g_cpu.status();
      EXPECT_TRUE(g_gpu.ok()) << g_gpu.status();
      if (!g_cpu.ok() || !g_gpu.ok()) return false;
      EXPECT_EQ(Bits(*g_cpu), Bits(*g_gpu)) << *g_cpu << " vs " << *g_gpu;
      g = *g_cpu;
    }
    absl::StatusOr<const QParams*> want = cpu.GetQParams(host.view(), nullptr, g);
    absl::StatusOr<const QParams*> got = gpu.GetQParams(dev->view(), nullptr, g);
    EXPECT_TRUE(want.ok()) << want.status();
    EXPECT_TRUE(got.ok()) << got.status();
    if (!want.ok() || !got.ok()) return false;
    const bool same = SameBits((*want)->scale.view(), (*got)->scale.view()) &&
                      SameBits((*want)->zero_point.view(),
                               (*got)->zero_point.view());
    EXPECT_TRUE(same) << "scale or zero point bytes differ";
    return same;
  }
};

TEST_P(ParityTest, EveryStrategyTwoObservations) {
  QCAL_SKIP_WITHOUT_CUDA_DEVICE();
  uint32_t seed = 11;
  for (const StrategyCase& c : kStrategyCases) {
    SCOPED_TRACE(absl::StrCat(c.args, " shape ", ShapeToString(c.shape)));
    const QuantizationArgs args = Args(c.args);
    std::unique_ptr<Observer> cpu =
        Make(observer_name(), args, NonFinitePolicy::kError);
    std::unique_ptr<Observer> gpu =
        Make(observer_name(), args, NonFinitePolicy::kError);
    // Two observations: running statistics must agree too.
    for (int k = 0; k < 2; ++k) {
      const Tensor host = RandomTensor(dtype(), c.shape, seed++, 1.0f + k,
                                       /*outliers=*/true);
      if (!ExpectSameQParams(*cpu, *gpu, host, /*offset=*/k)) return;
    }
  }
}

TEST_P(ParityTest, CalculateQParamsAlongLeadingDims) {
  QCAL_SKIP_WITHOUT_CUDA_DEVICE();
  const QuantizationArgs args = Args(R"({"num_bits": 8, "symmetric": false})");
  std::unique_ptr<Observer> cpu =
      Make(observer_name(), args, NonFinitePolicy::kError);
  std::unique_ptr<Observer> gpu =
      Make(observer_name(), args, NonFinitePolicy::kError);
  const Tensor host = RandomTensor(dtype(), {6, 5, 40}, 3);
  absl::StatusOr<DeviceCopy> dev = DeviceCopy::Of(host.view());
  ASSERT_TRUE(dev.ok()) << dev.status();
  for (const std::vector<int>& reduce :
       {std::vector<int>{}, std::vector<int>{2}, std::vector<int>{1, 2}}) {
    absl::StatusOr<QParams> want =
        cpu->CalculateQParams(host.view(), reduce, "t");
    absl::StatusOr<QParams> got = gpu->CalculateQParams(dev->view(), reduce, "t");
    ASSERT_TRUE(want.ok()) << want.status();
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(SameBits(want->scale.view(), got->scale.view()));
    EXPECT_TRUE(SameBits(want->zero_point.view(), got->zero_point.view()));
  }
}

TEST_P(ParityTest, NonFiniteIsTheSameErrorOrSkippedAlike) {
  QCAL_SKIP_WITHOUT_CUDA_DEVICE();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const StrategyCase& c : kStrategyCases) {
    SCOPED_TRACE(absl::StrCat(c.args, " shape ", ShapeToString(c.shape)));
    const QuantizationArgs args = Args(c.args);
    Tensor host = RandomTensor(dtype(), c.shape, 77);
    std::vector<float> values = testing_util::ToFloats(host.view());
    const int64_t n = static_cast<int64_t>(values.size());
    // A NaN and an infinity, the first non-finite in flat order somewhere
    // in the middle; and, in the skip case, a whole first row of NaN.
    values[n / 2] = nan;
    values[n / 2 + n / 5] = INFINITY;
    values[n - 1] = -INFINITY;
    host = MakeTensor(dtype(), c.shape, values);
    {
      std::unique_ptr<Observer> cpu =
          Make(observer_name(), args, NonFinitePolicy::kError);
      std::unique_ptr<Observer> gpu =
          Make(observer_name(), args, NonFinitePolicy::kError);
      absl::StatusOr<DeviceCopy> dev = DeviceCopy::Of(host.view());
      ASSERT_TRUE(dev.ok()) << dev.status();
      std::optional<float> g;
      if (args.strategy_or_tensor() == Strategy::kTensorGroup) g = 100.0f;
      absl::StatusOr<const QParams*> want = cpu->GetQParams(host.view(),
                                                            nullptr, g);
      absl::StatusOr<const QParams*> got = gpu->GetQParams(dev->view(),
                                                           nullptr, g);
      ASSERT_FALSE(want.ok());
      ASSERT_FALSE(got.ok());
      EXPECT_EQ(got.status().code(), want.status().code());
      EXPECT_EQ(IndexPart(got.status().message()),
                IndexPart(want.status().message()))
          << got.status();
    }
    const int64_t cols = c.shape.back();
    for (int64_t k = 0; k < std::min<int64_t>(cols, n); ++k) values[k] = nan;
    host = MakeTensor(dtype(), c.shape, values);
    std::unique_ptr<Observer> cpu =
        Make(observer_name(), args, NonFinitePolicy::kSkip);
    std::unique_ptr<Observer> gpu =
        Make(observer_name(), args, NonFinitePolicy::kSkip);
    if (!ExpectSameQParams(*cpu, *gpu, host)) return;
  }
}

TEST_P(ParityTest, SignedZerosAndConstantUnits) {
  QCAL_SKIP_WITHOUT_CUDA_DEVICE();
  // Units whose extremes are zeros of either sign, all-zero units, and
  // constant units.
  const std::vector<int64_t> shape = {40, 300};
  std::vector<float> values(40 * 300);
  for (int64_t r = 0; r < 40; ++r) {
    for (int64_t c = 0; c < 300; ++c) {
      float v = static_cast<float>((r * 7 + c * 13) % 11) * 0.25f;
      if (r % 4 == 1) v = -v;
      if (r % 4 == 2) v = ((r + c) % 3 == 0) ? -0.0f : 0.0f;
      if (r % 4 == 3) v = 1.5f;
      values[r * 300 + c] = v;
    }
  }
  values[5] = -0.0f;
  const Tensor host = MakeTensor(dtype(), shape, values);
  for (const char* json :
       {R"({"num_bits": 8})", R"({"num_bits": 8, "strategy": "channel"})",
        R"({"num_bits": 4, "group_size": 16, "symmetric": false})",
        R"({"num_bits": 8, "strategy": "block", "block_structure": [8, 64]})"}) {
    SCOPED_TRACE(json);
    const QuantizationArgs args = Args(json);
    std::unique_ptr<Observer> cpu =
        Make(observer_name(), args, NonFinitePolicy::kError);
    std::unique_ptr<Observer> gpu =
        Make(observer_name(), args, NonFinitePolicy::kError);
    if (!ExpectSameQParams(*cpu, *gpu, host)) return;
  }
}

INSTANTIATE_TEST_SUITE_P(AllObservers, ParityTest,
                         ::testing::ValuesIn(testing_util::ObserverDTypeCases()),
                         testing_util::ObserverDTypeCaseName);

// ------------------------------------------------------ kernel parity

// Random values with zeros of both signs, repeated values and, optionally,
// NaN and infinities.
std::vector<float> RandomValues(int64_t n, std::mt19937& rng, bool nonfinite) {
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_int_distribution<int> pick(0, 99);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) {
    const int k = pick(rng);
    if (k < 6) {
      x = (k & 1) ? -0.0f : 0.0f;
    } else if (nonfinite && k == 6) {
      x = std::numeric_limits<float>::quiet_NaN();
    } else if (nonfinite && k == 7) {
      x = (pick(rng) & 1) ? INFINITY : -INFINITY;
    } else {
      x = normal(rng);
      if (k < 25) x = std::round(x);
    }
  }
  return v;
}

FloatFormat FormatOf(DType d) { return *FloatFormatOf(d); }

struct GridCase {
  int64_t rows, cols, tile_rows, tile_cols;
};

std::vector<GridCase> GridCases(std::mt19937& rng) {
  std::vector<GridCase> cases = {
      {1, 1, 1, 1},          {5, 9, 5, 9},          {5, 9, 1, 9},
      {17, 300, 1, 128},     {17, 301, 1, 16},      {33, 77, 4, 3},
      {300, 260, 128, 128},  {10, 7, 128, 128},     {3, 20000, 1, 20000},
      {2, 40000, 2, 40000},  {600, 100, 600, 100},  {1024, 1024, 1, 128},
      {1024, 1024, 1024, 1024}, {512, 768, 128, 128}, {4096, 16, 1, 16}};
  std::uniform_int_distribution<int64_t> dim(1, 200);
  for (int i = 0; i < 20; ++i) {
    const int64_t r = dim(rng), c = dim(rng);
    cases.push_back({r, c, 1 + dim(rng) % r, 1 + dim(rng) % (c + 3)});
  }
  return cases;
}

TEST(CudaKernelParityTest, MinMaxMatchesCpu) {
  QCAL_SKIP_WITHOUT_CUDA_DEVICE();
  std::mt19937 rng(31);
  int checked = 0;
  for (const GridCase& c : GridCases(rng)) {
    for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
      for (NonFinitePolicy policy :
           {NonFinitePolicy::kError, NonFinitePolicy::kSkip}) {
        const int64_t offset = static_cast<int64_t>(rng() % 4);
        const Tensor host = MakeTensor(
            dtype, {c.rows, c.cols},
            RandomValues(c.rows * c.cols, rng, (rng() % 3) == 0));
        absl::StatusOr<DeviceCopy> dev = DeviceCopy::Of(host.view(), offset);
        ASSERT_TRUE(dev.ok()) << dev.status();
        MinMaxRequest req;
        req.grid = TileGrid{c.rows, c.cols, c.tile_rows, c.tile_cols};
        req.format = FormatOf(dtype);
        req.nonfinite = policy;
        const int64_t units = req.grid.num_units();
        std::vector<float> want_min(units), want_max(units);
        std::vector<float> got_min(units, 7.0f), got_max(units, 7.0f);
        int64_t want_bad = -5, got_bad = -5;
        req.x = host.view();
        ASSERT_TRUE(CpuBackend()
                        .min_max(req, {}, {want_min.data(), want_max.data(),
                                           &want_bad})
                        .ok());
        req.x = dev->view();
        const absl::Status s = CudaBackend().min_max(
            req, {}, {got_min.data(), got_max.data(), &got_bad});
        ASSERT_TRUE(s.ok()) << s;
        SCOPED_TRACE(absl::StrCat(c.rows, "x", c.cols, " tiles ", c.tile_rows,
                                  "x", c.tile_cols, " ", DTypeName(dtype),
                                  " offset ", offset));
        ASSERT_EQ(got_bad, want_bad);
        for (int64_t u = 0; u < units; ++u) {
          ASSERT_EQ(Bits(got_min[u]), Bits(want_min[u])) << "unit " << u;
          ASSERT_EQ(Bits(got_max[u]), Bits(want_max[u])) << "unit " << u;
        }
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 100);
}

TEST(CudaKernelParityTest, MinMaxFromManyThreads) {
  QCAL_SKIP_WITHOUT_CUDA_DEVICE();
  // Calls from several threads share the device's reducer under its lock.
  std::vector<Tensor> hosts;
  std::vector<DeviceCopy> devs;
  for (uint32_t k = 0; k < 4; ++k) {
    hosts.push_back(RandomTensor(DType::kBF16, {256, 1000}, 100 + k));
    absl::StatusOr<DeviceCopy> dev = DeviceCopy::Of(hosts.back().view());
    ASSERT_TRUE(dev.ok()) << dev.status();
    devs.push_back(std::move(*dev));
  }
  std::vector<std::thread> threads;
  std::vector<int> ok(hosts.size(), 0);
  for (size_t k = 0; k < hosts.size(); ++k) {
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 20; ++rep) {
        MinMaxRequest req;
        req.grid = TileGrid{256, 1000, (rep % 2) ? 256 : 1, 1000};
        req.format = FloatFormat::kBF16;
        const int64_t units = req.grid.num_units();
        std::vector<float> a(units), b(units), c(units), d(units);
        int64_t bad1, bad2;
        req.x = hosts[k].view();
        if (!CpuBackend().min_max(req, {}, {a.data(), b.data(), &bad1}).ok()) {
          return;
        }
        req.x = devs[k].view();
        if (!CudaBackend().min_max(req, {}, {c.data(), d.data(), &bad2}).ok()) {
          return;
        }
        if (std::memcmp(a.data(), c.data(), 4 * units) != 0 ||
            std::memcmp(b.data(), d.data(), 4 * units) != 0 || bad1 != bad2) {
          return;
        }
      }
      ok[k] = 1;
    });
  }
  for (std::thread& t : threads) t.join();
  for (size_t k = 0; k < ok.size(); ++k) EXPECT_EQ(ok[k], 1) << "thread " << k;
}

TEST(CudaKernelParityTest, MinMaxBeyondTwoBillionElements) {
  QCAL_SKIP_WITHOUT_CUDA_DEVICE();
  // 2^31 + 2^16 + ... bf16 elements (4.3 GB): flat indices past 2^31 and
  // 64-bit index arithmetic in every kernel.
  const int64_t rows = 65539, cols = 32769;
  const int64_t n = rows * cols;
  size_t free_bytes = 0, total_bytes = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total_bytes), cudaSuccess);
  if (free_bytes < static_cast<size_t>(3 * n)) {
    GTEST_SKIP() << "needs " << 3 * n << " bytes of device memory, "
                 << free_bytes << " free";
  }
  std::vector<uint16_t> bits(static_cast<size_t>(n));
  uint64_t state = 12345;
  for (int64_t i = 0; i < n; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    // Values in [-2, 2): exponent and sign from the state's high bits.
    bits[i] = FloatToBf16Bits(
        static_cast<float>(static_cast<int32_t>(state >> 32)) * 9.3e-10f);
  }
  const int64_t first_bad = n - 70000;  // past 2^31
  bits[first_bad] = 0x7FC0;             // NaN
  bits[n - 3] = 0x7F80;                 // +inf
  bits[(int64_t{1} << 31) + 5] = FloatToBf16Bits(-7.5f);  // the minimum
  absl::StatusOr<TensorView> host =
      TensorView::Contiguous(bits.data(), DType::kBF16, {rows, cols});
  ASSERT_TRUE(host.ok());
  absl::StatusOr<DeviceCopy> dev = DeviceCopy::Of(*host);
  ASSERT_TRUE(dev.ok()) << dev.status();
  for (const GridCase& c : {GridCase{rows, cols, rows, cols},
                            GridCase{rows, cols, 1, cols},
                            GridCase{rows, cols, 1, 128},
                            GridCase{rows, cols, 128, 128}}) {
    for (NonFinitePolicy policy :
         {NonFinitePolicy::kError, NonFinitePolicy::kSkip}) {
      MinMaxRequest req;
      req.grid = TileGrid{c.rows, c.cols, c.tile_rows, c.tile_cols};
      req.format = FloatFormat::kBF16;
      req.nonfinite = policy;
      const int64_t units = req.grid.num_units();
      std::vector<float> want_min(units), want_max(units);
      std::vector<float> got_min(units), got_max(units);
      int64_t want_bad, got_bad;
      req.x = *host;
      ASSERT_TRUE(CpuBackend()
                      .min_max(req, {}, {want_min.data(), want_max.data(),
                                         &want_bad})
                      .ok());
      req.x = dev->view();
      ASSERT_TRUE(CudaBackend()
                      .min_max(req, {}, {got_min.data(), got_max.data(),
                                         &got_bad})
                      .ok());
      EXPECT_EQ(got_bad, want_bad);
      if (policy == NonFinitePolicy::kError) EXPECT_EQ(want_bad, first_bad);
      EXPECT_EQ(std::memcmp(got_min.data(), want_min.data(), 4 * units), 0)
          << "tile " << c.tile_rows << "x" << c.tile_cols;
      EXPECT_EQ(std::memcmp(got_max.data(), want_max.data(), 4 * units), 0)
          << "tile " << c.tile_rows << "x" << c.tile_cols;
    }
  }
}

struct SpecCase {
  const char* name;
  QuantSpec spec;
  bool has_global_scale;
  float global_scale;
};

TEST(CudaKernelParityTest, MseErrorsMatchCpu) {
  QCAL_SKIP_WITHOUT_CUDA_DEVICE();
  const SpecCase specs[] = {
      {"int8 sym", QuantSpecFor(false, 8, true), false, 1.0f},
      {"int4 asym", QuantSpecFor(false, 4, false), false, 1.0f},
      {"fp8 sym", QuantSpecFor(true, 8, true), false, 1.0f},
      {"fp4 global", QuantSpecFor(true, 4, true), true, 448.0f * 6.0f / 9.5f},
      {"fp4 no global", QuantSpecFor(true, 4, true), false, 1.0f},
  };
  std::mt19937 rng(8);
  std::vector<GridCase> grids = {{6, 10, 1, 4},     {5, 40, 1, 16},
                                 {10, 9, 4, 3},     {13, 33, 13, 33},
                                 {7, 300, 1, 128},  {9, 20, 1, 20},
                                 {300, 260, 128, 128}, {64, 1000, 1, 128}};
  int checked = 0;
  for (const GridCase& c : grids) {
    for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
      const FloatFormat f = FormatOf(dtype);
      for (const SpecCase& sc : specs) {
        for (double norm : {2.4, 2.0}) {
          const bool skip = (rng() & 1) != 0;
          const Tensor host = MakeTensor(
              dtype, {c.rows, c.cols}, RandomValues(c.rows * c.cols, rng, skip));
          absl::StatusOr<DeviceCopy> dev =
              DeviceCopy::Of(host.view(), static_cast<int64_t>(rng() % 3));
          ASSERT_TRUE(dev.ok()) << dev.status();
          MseRequest req;
          req.grid = TileGrid{c.rows, c.cols, c.tile_rows, c.tile_cols};
          req.format = f;
          req.nonfinite =
              skip ? NonFinitePolicy::kSkip : NonFinitePolicy::kError;
          req.spec = sc.spec;
          req.has_global_scale = sc.has_global_scale;
          req.global_scale = sc.global_scale;
          req.norm_exponent = DispatchFormat(f, [&](auto ff) {
            return NormExponent<decltype(ff)::value>(norm);
          });
          // Unit ranges from the data; a shuffled subset of the units.
          const int64_t num_units = req.grid.num_units();
          std::vector<float> mins(num_units), maxs(num_units);
          MinMaxRequest mm;
          mm.x = host.view();
          mm.grid = req.grid;
          mm.format = f;
          mm.nonfinite = NonFinitePolicy::kSkip;
          int64_t unused;
          ASSERT_TRUE(CpuBackend()
                          .min_max(mm, {}, {mins.data(), maxs.data(), &unused})
                          .ok());
          std::vector<int64_t> units;
          for (int64_t u = 0; u < num_units; ++u) {
            if (rng() % 4 != 0) units.push_back(u);
          }
          std::shuffle(units.begin(), units.end(), rng);
          std::vector<float> unit_min, unit_max;
          for (int64_t u : units) {
            unit_min.push_back(mins[u]);
            unit_max.push_back(maxs[u]);
          }
          const int ncand = 1 + static_cast<int>(rng() % 13);
          std::vector<float> shrink;
          for (int i = 0; i < ncand; ++i) {
            shrink.push_back(ShrinkFactor(i, 100.0));
          }
          req.units = units;
          req.unit_min = unit_min;
          req.unit_max = unit_max;
          req.shrink = shrink;
          std::vector<float> want(units.size() * ncand);
          std::vector<float> got(units.size() * ncand, -3.0f);
          req.x = host.view();
          ASSERT_TRUE(CpuBackend().mse_errors(req, {}, want.data()).ok());
          req.x = dev->view();
          const absl::Status s = CudaBackend().mse_errors(req, {}, got.data());
          ASSERT_TRUE(s.ok()) << s;
          SCOPED_TRACE(absl::StrCat(sc.name, " ", c.rows, "x", c.cols,
                                    " tiles ", c.tile_rows, "x", c.tile_cols,
                                    " ", DTypeName(dtype), " norm ", norm));
          for (size_t k = 0; k < want.size(); ++k) {
            if (std::isnan(want[k])) {
              // Non-finite data not skipped: NaN payloads may differ.
              ASSERT_TRUE(std::isnan(got[k])) << "entry " << k;
            } else {
              ASSERT_EQ(Bits(got[k]), Bits(want[k])) << "entry " << k;
            }
          }
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 100);
}

}  // namespace
}  // namespace qcal
