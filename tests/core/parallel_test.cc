// ParallelFor on the persistent pool: every index exactly once in contiguous
// ranges of at least min_chunk, real concurrency, nested and concurrent
// calls.
#include "core/parallel.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace qcal {
namespace {

TEST(ParallelForTest, CoversEveryIndexOnceInLongEnoughRanges) {
  for (int64_t n : {0, 1, 7, 1000, 12345}) {
    for (int threads : {1, 2, 3, 8, 64}) {
      for (int64_t min_chunk : {1, 10, 5000}) {
        std::vector<std::atomic<int>> hits(n);
        std::mutex mu;
        std::vector<std::pair<int64_t, int64_t>> ranges;
        ParallelFor(n, threads, min_chunk, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
          std::lock_guard<std::mutex> lock(mu);
          ranges.emplace_back(b, e);
        });
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(hits[i].load(), 1) << n << " " << threads << " " << i;
        }
        for (const auto& [b, e] : ranges) {
          EXPECT_LT(b, e);
          if (e != n) {
            EXPECT_GE(e - b, min_chunk);
          }
        }
      }
    }
  }
}

TEST(ParallelForTest, RunsChunksConcurrently) {
  // Chunk 0 waits until chunk 1 has started: only possible when a second
  // thread takes part.
  std::atomic<bool> second_started{false};
  std::atomic<bool> saw_second{false};
  ParallelFor(2, 2, 1, [&](int64_t b, int64_t) {
    if (b == 1) {
      second_started = true;
      return;
    }
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!second_started && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    saw_second = second_started.load();
  });
  EXPECT_TRUE(saw_second);
}

TEST(ParallelForTest, NestedAndConcurrentCalls) {
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c) {
    callers.emplace_back([&total] {
      for (int rep = 0; rep < 50; ++rep) {
        ParallelFor(16, 3, 1, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) {
            ParallelFor(10, 2, 1, [&](int64_t bb, int64_t ee) {
              total.fetch_add(ee - bb);
            });
          }
        });
      }
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(total.load(), 4 * 50 * 16 * 10);
}

TEST(ParallelForTest, ResolveThreads) {
  EXPECT_EQ(ResolveThreads(3), 3);
  EXPECT_GE(ResolveThreads(0), 1);
  EXPECT_GE(ResolveThreads(-1), 1);
}

}  // namespace
}  // namespace qcal
