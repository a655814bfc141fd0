// Observers are not thread-safe per instance, but everything shared is: the
// registry, the backend table, the memory budget. Many threads create and run
// observers at once (each its own instance, over shared read-only inputs)
// and must get exactly the single-threaded results. Run it under
// --config=tsan to check for races.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "observers/observer.h"
#include "registry/registry.h"
#include "tests/observers/test_tensors.h"

namespace qcal {
namespace {

using testing_util::RandomTensor;
using testing_util::SameBits;

TEST(ConcurrencyTest, ManyThreadsCreateAndRunObservers) {
  const char* configs[] = {
      R"({"num_bits": 4, "group_size": 16})",
      R"({"num_bits": 8, "strategy": "channel", "symmetric": false})",
      R"({"type": "float", "num_bits": 4, "strategy": "tensor_group",
          "group_size": 16})",
  };
  const Tensor x = RandomTensor(DType::kBF16, {24, 64}, 3, 1.0f, true);
  const std::vector<std::string> names = RegisteredObserverNames();

  // Single-threaded reference results: [config][name] -> (scale, zp).
  struct Result {
    Tensor scale, zero_point;
  };
  auto run = [&](const QuantizationArgs& args, const std::string& name,
                 int threads) -> absl::StatusOr<Result> {
    auto obs = CreateObserver(name, args);
    if (!obs.ok()) return obs.status();
    ObserveOptions options;
    options.exec.threads = threads;
    (*obs)->set_options(options);
    std::optional<float> g;
    if (args.strategy_or_tensor() == Strategy::kTensorGroup) {
      auto gs = (*obs)->GetGParam(x.view());
      if (!gs.ok()) return gs.status();
      (*obs)->Reset();
      g = *gs;
    }
    auto qp = (*obs)->GetQParams(x.view(), nullptr, g);
    if (!qp.ok()) return qp.status();
    auto s = Tensor::CopyOf((*qp)->scale.view());
    auto z = Tensor::CopyOf((*qp)->zero_point.view());
    if (!s.ok() || !z.ok()) return absl::InternalError("copy failed");
    return Result{std::move(*s), std::move(*z)};
  };
  std::vector<std::vector<Result>> want(3);
  std::vector<QuantizationArgs> args;
  for (int c = 0; c < 3; ++c) {
    args.push_back(*ParseQuantizationArgs(configs[c]));
    for (const std::string& name : names) {
      auto r = run(args[c], name, 1);
      ASSERT_TRUE(r.ok()) << r.status();
      want[c].push_back(std::move(*r));
    }
  }

  std::atomic<int> mismatches{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 6; ++i) {
        const int c = (t + i) % 3;
        const size_t n = (t * 7 + i) % names.size();
        auto r = run(args[c], names[n], 1 + (t % 2));  // nested threads too
        if (!r.ok()) {
          ++errors;
          continue;
        }
        if (!SameBits(r->scale.view(), want[c][n].scale.view()) ||
            !SameBits(r->zero_point.view(), want[c][n].zero_point.view())) {
          ++mismatches;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace qcal
