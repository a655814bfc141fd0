#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace qcal {
namespace {

// True on the pool's worker threads.
thread_local bool tls_in_pool_worker = false;

// One ParallelFor call: chunks are claimed through `next`.
struct Job {
  Job(absl::FunctionRef<void(int64_t, int64_t)> f, int64_t n_in,
      int64_t chunk_in)
      : fn(f), n(n_in), chunk(chunk_in) {}
  absl::FunctionRef<void(int64_t, int64_t)> fn;
  const int64_t n;
  const int64_t chunk;
  std::atomic<int64_t> next{0};
  int helpers_wanted = 0;  // guarded by the pool mutex
  int helpers_active = 0;  // guarded by the pool mutex

  void RunChunks() {
    for (;;) {
      const int64_t begin = next.fetch_add(chunk, std::memory_order_relaxed);
      if (begin >= n) return;
      fn(begin, std::min(n, begin + chunk));
    }
  }
};

// The process-wide pool; never destroyed (its threads block forever on an
// empty queue and end with the process).
class Pool {
 public:
  static Pool& Get() {
    static Pool* pool = new Pool;
    return *pool;
  }

  void Run(Job& job, int helpers) {
    {
      absl::MutexLock lock(&mu_);
      while (workers_ < helpers && workers_ < kMaxWorkers) {
        std::thread(&Pool::WorkerLoop, this).detach();
        ++workers_;
      }
      job.helpers_wanted = helpers;
      queue_.push_back(&job);
    }
    job.RunChunks();
    absl::MutexLock lock(&mu_);
    if (job.helpers_wanted > 0) {
      queue_.erase(std::find(queue_.begin(), queue_.end(), &job));
      job.helpers_wanted = 0;
    }
    auto helpers_done = [&job]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return job.helpers_active == 0;
    };
    mu_.Await(absl::Condition(&helpers_done));
  }

 private:
  static constexpr int kMaxWorkers = 1023;

  void WorkerLoop() {
    tls_in_pool_worker = true;
    auto has_job = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !queue_.empty();
    };
    for (;;) {
      Job* job;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(&has_job));
        job = queue_.front();
        ++job->helpers_active;
        if (--job->helpers_wanted == 0) queue_.pop_front();
      }
      job->RunChunks();
      absl::MutexLock lock(&mu_);
      --job->helpers_active;
    }
  }

  absl::Mutex mu_;
  std::deque<Job*> queue_ ABSL_GUARDED_BY(mu_);
  int workers_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

int ResolveThreads(int requested) {
  if (requested > 0) return requested;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

void ParallelFor(int64_t n, int threads, int64_t min_chunk,
                 absl::FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  if (min_chunk < 1) min_chunk = 1;
  const int64_t t = tls_in_pool_worker ? 1 : ResolveThreads(threads);
  // A few chunks per thread balance uneven work and other load on the
  // machine; each chunk is at least min_chunk long.
  const int64_t chunk =
      std::max(min_chunk, (n + 4 * t - 1) / (4 * t));
  const int64_t chunks = (n + chunk - 1) / chunk;
  const int64_t helpers = std::min<int64_t>(t, chunks) - 1;
  if (helpers <= 0) {
    fn(0, n);
    return;
  }
  Job job(fn, n, chunk);
  Pool::Get().Run(job, static_cast<int>(helpers));
}

}  // namespace qcal
