#include "thread_pool.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <exception>

namespace apportion {

namespace {
thread_local bool tl_inside_pool = false;

// The shared pool, created on first use and never destroyed: workers waiting on a condition
// variable are harmless at exit, where joining them could race with interpreter teardown.
std::atomic<ThreadPool*> g_pool{nullptr};
std::mutex g_create_mutex;  // held while creating g_pool, and across fork()

// fork() copies only the calling thread, so a child's pool has no workers and parallel_for
// would wait for them forever. The child drops the pool (its mutexes may have been held by a
// worker at the fork) and builds a fresh one on next use.
void before_fork() { g_create_mutex.lock(); }
void after_fork_in_parent() { g_create_mutex.unlock(); }
void after_fork_in_child() {
  // Leaked on purpose: its std::thread objects are still joinable, so destroying them would
  // call std::terminate, and joining them would wait for threads that do not exist here.
  g_pool.store(nullptr, std::memory_order_relaxed);
  g_create_mutex.unlock();
}
}  // namespace

ThreadPool& ThreadPool::instance() {
  ThreadPool* pool = g_pool.load(std::memory_order_acquire);
  if (pool) return *pool;
  std::lock_guard<std::mutex> lock(g_create_mutex);
  pool = g_pool.load(std::memory_order_relaxed);
  if (!pool) {
    static bool fork_handlers = false;
    if (!fork_handlers) fork_handlers = pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child) == 0;
    pool = new ThreadPool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())) - 1);
    g_pool.store(pool, std::memory_order_release);
  }
  return *pool;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
ThreadPool::FloatControl ThreadPool::FloatControl::current() {
  FloatControl c;
  c.mxcsr = __builtin_ia32_stmxcsr();
  __asm__ volatile("fnstcw %0" : "=m"(c.x87));
  return c;
}

void ThreadPool::FloatControl::apply() const {
  const FloatControl now = current();
  constexpr unsigned kFlags = 0x3f;  // MXCSR's sticky exception flags: not control
  if ((now.mxcsr ^ mxcsr) & ~kFlags) __builtin_ia32_ldmxcsr((now.mxcsr & kFlags) | (mxcsr & ~kFlags));
  if (now.x87 != x87) __asm__ volatile("fldcw %0" : : "m"(x87));
}
#else
ThreadPool::FloatControl ThreadPool::FloatControl::current() {
  FloatControl c;
  std::fegetenv(&c.env);
  return c;
}

void ThreadPool::FloatControl::apply() const { std::fesetenv(&env); }
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// MXCSR: the six sticky flags (bits 0-5) kept, the control bits set to the power-on default
// 0x1F80: every exception masked (7-12), round to nearest (13-14 clear), FTZ (15) and DAZ (6)
// clear.
IeeeFloatMode::IeeeFloatMode() : saved_(__builtin_ia32_stmxcsr()) {
  constexpr unsigned kFlags = 0x3f, kDefault = 0x1f80;
  const unsigned now = static_cast<unsigned>(saved_);
  const unsigned want = (now & kFlags) | kDefault;
  changed_ = want != now;
  if (changed_) __builtin_ia32_ldmxcsr(want);
}
IeeeFloatMode::~IeeeFloatMode() {
  if (changed_) __builtin_ia32_ldmxcsr(static_cast<unsigned>(saved_));
}
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
// FPCR 0: round to nearest, no flush to zero (FZ, FZ16), no default NaN, no trap enabled.
IeeeFloatMode::IeeeFloatMode() {
  __asm__ volatile("mrs %0, fpcr" : "=r"(saved_));
  changed_ = saved_ != 0;
  if (changed_) __asm__ volatile("msr fpcr, %0" : : "r"(0ull));
}
IeeeFloatMode::~IeeeFloatMode() {
  if (changed_) __asm__ volatile("msr fpcr, %0" : : "r"(saved_));
}
#else
IeeeFloatMode::IeeeFloatMode() {
  std::fegetenv(&saved_);
  std::fesetenv(FE_DFL_ENV);
  changed_ = true;
}
IeeeFloatMode::~IeeeFloatMode() { std::fesetenv(&saved_); }
#endif

ThreadPool::ThreadPool(int workers) {
  workers_.reserve(workers);
  for (int w = 0; w < workers; ++w) workers_.emplace_back([this, w] { worker_loop(w); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks() {
  for (;;) {
    std::int64_t begin;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (next_ >= n_ || error_) return;
      begin = next_;
      next_ += chunk_;
    }
    try {
      (*fn_)(begin, std::min(n_, begin + chunk_));
    } catch (...) {
      // Keep the error of the lowest chunk: chunks start in order, so every lower one has
      // started and is finished before the job returns, and the error a caller sees (which
      // instance was bad) does not depend on thread timing.
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_ || begin < error_begin_) {
        error_ = std::current_exception();
        error_begin_ = begin;
      }
    }
  }
}

void ThreadPool::worker_loop(int worker_index) {
  tl_inside_pool = true;
  std::uint64_t seen = 0;
  FloatControl control;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || (generation_ != seen && worker_index < job_workers_); });
      if (stopping_) return;
      seen = generation_;
      control = float_control_;
    }
    // Else a worker keeps the state of the thread that created the pool: after one first call
    // under torch.set_flush_denormal(True), flushed subnormals gave answers that depended on
    // which thread solved which instance.
    control.apply();
    run_chunks();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (--busy_workers_ == 0) done_.notify_all();
    }
  }
}

void ThreadPool::parallel_for(std::int64_t n, std::int64_t grain, int max_threads,
                              const RangeFn& fn, int chunks_per_thread) {
  if (n <= 0) return;
  grain = std::max<std::int64_t>(1, grain);
  int threads = max_threads <= 0 ? size() : std::min(max_threads, size());
  threads = static_cast<int>(std::min<std::int64_t>(threads, (n + grain - 1) / grain));
  std::unique_lock<std::mutex> submit(submit_mutex_, std::defer_lock);
  if (threads <= 1 || tl_inside_pool || !submit.try_lock()) {
    fn(0, n);
    return;
  }
  const FloatControl control = FloatControl::current();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    fn_ = &fn;
    float_control_ = control;
    n_ = n;
    // A few chunks per thread balances uneven work without much locking.
    const std::int64_t chunks = static_cast<std::int64_t>(threads) * std::max(1, chunks_per_thread);
    chunk_ = std::max(grain, (n + chunks - 1) / chunks);
    next_ = 0;
    job_workers_ = threads - 1;
    busy_workers_ = threads - 1;
    error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
  tl_inside_pool = true;
  run_chunks();
  tl_inside_pool = false;
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return busy_workers_ == 0; });
    job_workers_ = 0;
    fn_ = nullptr;
    error = error_;
    error_ = nullptr;
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace apportion
