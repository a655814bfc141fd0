#include "registry/registry.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "observers/observer.h"

namespace qcal {
namespace {

QuantizationArgs DefaultArgs() {
  QuantizationArgs args;
  EXPECT_TRUE(args.Validate().ok());
  return args;
}

// Pins the exact set of plugins linked by //observers:all_observers, so a
// plugin dropped by the linker (or a new one left out) is caught.
TEST(RegistryTest, RegisteredNamesArePinned) {
  EXPECT_EQ(RegisteredObserverNames(),
            (std::vector<std::string>{"memoryless_minmax", "memoryless_mse",
                                      "minmax", "mse", "static_minmax"}));
}

TEST(RegistryTest, UnknownNameListsTheKnownOnes) {
  auto factory = FindObserverFactory("histogram");
  ASSERT_FALSE(factory.ok());
  EXPECT_EQ(factory.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(factory.status().message().find("\"histogram\""),
            absl::string_view::npos);
  EXPECT_NE(factory.status().message().find("memoryless_mse, minmax, mse"),
            absl::string_view::npos)
      << factory.status();
  EXPECT_FALSE(CreateObserver("histogram", DefaultArgs()).ok());
}

TEST(RegistryTest, LookupIsCaseInsensitiveAndDefaultsToArgsObserver) {
  auto obs = CreateObserver("MinMax", DefaultArgs());
  ASSERT_TRUE(obs.ok()) << obs.status();
  EXPECT_EQ((*obs)->name(), "minmax");
  QuantizationArgs args = DefaultArgs();
  args.observer = "mse";
  auto from_args = CreateObserver("", args);
  ASSERT_TRUE(from_args.ok());
  EXPECT_EQ((*from_args)->name(), "mse");
  QuantizationArgs dynamic;
  dynamic.strategy = Strategy::kToken;
  dynamic.dynamic = DynamicMode::kDynamic;
  ASSERT_TRUE(dynamic.Validate().ok());
  EXPECT_FALSE(CreateObserver("", dynamic).ok());
}

TEST(RegistryTest, DuplicateNameAbortsAtRegistration) {
  auto factory = FindObserverFactory("minmax");
  ASSERT_TRUE(factory.ok());
  EXPECT_DEATH(RegisterObserver("minmax", *factory), "registered twice");
}

TEST(RegistryTest, KwargsAreValidatedPerObserver) {
  struct Case {
    const char* observer;
    const char* key;
    double value;
    bool ok;
  };
  const Case cases[] = {
      {"minmax", "averaging_constant", 0.5, true},
      {"minmax", "averaging_constant", 1.0, true},
      {"minmax", "averaging_constant", 0.0, false},
      {"minmax", "averaging_constant", 1.5, false},
      {"minmax", "maxshrink", 0.2, false},  // not a minmax kwarg
      {"mse", "maxshrink", 1.0, true},
      {"mse", "maxshrink", 0.0, false},
      {"mse", "maxshrink", 1.01, false},
      {"mse", "patience", 1, true},
      {"mse", "patience", 0, false},
      {"mse", "patience", 2.5, false},
      {"mse", "grid", 0.0, false},
      {"mse", "grid", 10, true},
      {"mse", "norm", -1, false},
      {"mse", "norm", 2, true},
      {"mse", "averaging_constant", 0.1, true},
      {"mse", "bins", 10, false},
      {"memoryless_mse", "averaging_constant", 0.1, false},
      {"memoryless_mse", "norm", 3, true},
      {"memoryless_minmax", "averaging_constant", 0.1, false},
      {"static_minmax", "anything", 1, false},
  };
  for (const Case& c : cases) {
    QuantizationArgs args = DefaultArgs();
    args.observer_kwargs[c.key] = c.value;
    auto obs = CreateObserver(c.observer, args);
    EXPECT_EQ(obs.ok(), c.ok) << c.observer << " " << c.key << "=" << c.value
                              << ": " << obs.status();
    if (!obs.ok()) {
      EXPECT_EQ(obs.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(obs.status().message().find(c.key), absl::string_view::npos);
    }
  }
}

TEST(RegistryTest, AsymmetricFp4IsRejectedAtCreation) {
  QuantizationArgs args;
  args.type = QuantType::kFloat;
  args.num_bits = 4;
  args.symmetric = false;
  ASSERT_TRUE(args.Validate().ok());
  auto obs = CreateObserver("minmax", args);
  ASSERT_FALSE(obs.ok());
  EXPECT_EQ(obs.status().code(), absl::StatusCode::kUnimplemented);
}

TEST(RegistryTest, ConcurrentLookupsAndCreation) {
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const std::vector<std::string> names = RegisteredObserverNames();
        auto obs = CreateObserver(names[(t + i) % names.size()], DefaultArgs());
        if (!obs.ok() || names.size() != 5) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace qcal
