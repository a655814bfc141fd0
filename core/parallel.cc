#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

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
  int helpers_wanted = 0;  // guarded by the pool's mutex
  int helpers_active = 0;  // guarded by the pool's mutex

  void RunChunks() {
    for (;;) {
      const int64_t begin = next.fetch_add(chunk, std::memory_order_relaxed);
      if (begin >= n) return;
      fn(begin, std::min(n, begin + chunk));
    }
  }
};

// The process-wide pool; never destroyed (its threads block forever on an
// empty queue and end with the process). std::mutex / condition_variable
// rather than absl::Mutex, so that ThreadSanitizer (which intercepts
// pthreads but not the system Abseil build) sees the synchronisation.
class Pool {
 public:
  static Pool& Get() {
    static Pool* pool = new Pool;
    return *pool;
  }

  void Run(Job& job, int helpers) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (workers_ < helpers && workers_ < kMaxWorkers) {
        std::thread(&Pool::WorkerLoop, this).detach();
        ++workers_;
      }
      job.helpers_wanted = helpers;
      queue_.push_back(&job);
    }
    work_cv_.notify_all();
    job.RunChunks();
    std::unique_lock<std::mutex> lock(mu_);
    if (job.helpers_wanted > 0) {
      queue_.erase(std::find(queue_.begin(), queue_.end(), &job));
      job.helpers_wanted = 0;
    }
    done_cv_.wait(lock, [&job] { return job.helpers_active == 0; });
  }

 private:
  static constexpr int kMaxWorkers = 1023;

  void WorkerLoop() {
    tls_in_pool_worker = true;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      work_cv_.wait(lock, [this] { return !queue_.empty(); });
      Job* job = queue_.front();
      ++job->helpers_active;
      if (--job->helpers_wanted == 0) queue_.pop_front();
      lock.unlock();
      job->RunChunks();
      lock.lock();
      if (--job->helpers_active == 0) done_cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable work_cv_;  // a job wants helpers
  std::condition_variable done_cv_;  // a job's last helper left
  std::deque<Job*> queue_;           // guarded by mu_
  int workers_ = 0;                  // guarded by mu_
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
