// A small persistent thread pool: parallel_for over an index range, the caller taking part.
//
// Workers are started once and reused, so a call costs a wake-up, not a thread start: a
// solve of a few microseconds can still be dispatched. Nested calls, and calls made while
// another caller holds the pool, run serially on the calling thread instead of waiting.
// The child of a fork() gets a fresh pool on first use (the parent's workers are not copied).
// Workers run each job in the caller's floating-point environment (rounding mode, and on x86
// whether subnormals are flushed: FTZ/DAZ), so a job gives the answers of a serial run.
#pragma once

#include <cfenv>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace apportion {

class ThreadPool {
 public:
  using RangeFn = std::function<void(std::int64_t begin, std::int64_t end)>;

  // The shared pool, created on first use.
  static ThreadPool& instance();

  // Threads available, the caller included.
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn over [0, n) in chunks of at least `grain`, about `chunks_per_thread` per thread,
  // on at most `max_threads` threads (<= 0: all). Returns when every chunk is done; the
  // exception of the lowest chunk that threw is rethrown (the same one a serial run raises).
  void parallel_for(std::int64_t n, std::int64_t grain, int max_threads, const RangeFn& fn,
                    int chunks_per_thread = 4);

  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

 private:
  explicit ThreadPool(int workers);
  void worker_loop(int worker_index);
  void run_chunks();

  std::vector<std::thread> workers_;
  std::mutex submit_mutex_;  // one job at a time; a second caller runs serially
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::uint64_t generation_ = 0;
  bool stopping_ = false;

  // The floating-point control state a job runs under: on x86-64 the SSE control word (MXCSR:
  // rounding, FTZ/DAZ) and the x87 one, each about 2 ns to read and written only where a
  // worker's differs (fegetenv + fesetenv took about 120 ns a job); elsewhere the whole fenv_t.
  struct FloatControl {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    unsigned mxcsr = 0;
    unsigned short x87 = 0;
#else
    std::fenv_t env{};
#endif
    static FloatControl current();
    void apply() const;  // to the calling thread
  };

  // The job in flight.
  const RangeFn* fn_ = nullptr;
  FloatControl float_control_;  // the caller's
  std::int64_t n_ = 0, chunk_ = 1;
  int job_workers_ = 0;    // workers asked to take part
  int busy_workers_ = 0;   // of those, still running
  std::int64_t next_ = 0;  // next chunk start, guarded by mutex_
  std::exception_ptr error_;
  std::int64_t error_begin_ = 0;  // the chunk error_ came from
};

// For its lifetime, the calling thread computes in IEEE's default floating-point mode, whatever
// mode its caller left: rounding to nearest, subnormal results kept and subnormal operands read
// as they are, exceptions masked (x86-64: the SSE control word MXCSR; aarch64: FPCR; elsewhere
// the C default environment). Every native entry point takes one (bindings/common.hpp,
// NativeCall): under torch.set_flush_denormal(True), code built with -ffast-math, or
// fesetround, flushed subnormals and directed rounding made allocations over the budget pass
// as "optimal". The pool's workers take the caller's mode for each job, so they compute in
// this one too. The caller's mode (and its sticky exception flags) comes back on destruction.
// A few ns: the mode is written only where it differs.
class IeeeFloatMode {
 public:
  IeeeFloatMode();
  ~IeeeFloatMode();
  IeeeFloatMode(const IeeeFloatMode&) = delete;
  IeeeFloatMode& operator=(const IeeeFloatMode&) = delete;

 private:
#if (defined(__x86_64__) || defined(__aarch64__)) && (defined(__GNUC__) || defined(__clang__))
  unsigned long long saved_ = 0;  // MXCSR or FPCR as the caller left it
#else
  std::fenv_t saved_{};
#endif
  bool changed_ = false;
};

// Convenience: parallel_for on the shared pool.
inline void parallel_for(std::int64_t n, std::int64_t grain, int max_threads,
                         const ThreadPool::RangeFn& fn, int chunks_per_thread = 4) {
  ThreadPool::instance().parallel_for(n, grain, max_threads, fn, chunks_per_thread);
}

}  // namespace apportion
