// Helpers shared by the binding files of apportion._core.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#ifdef __GLIBCXX__
#include <cxxabi.h>  // abi::__forced_unwind
#endif

#include "../cpp/problem.hpp"
#include "../cpp/thread_pool.hpp"

namespace apportion {
namespace bindings {

// A native call's computing section: the GIL released, and IEEE's default floating-point mode
// whatever the calling thread's (IeeeFloatMode), both undone at the end of the scope. (The GIL
// by Python's own calls, as pybind11::gil_scoped_release makes them: a field of pybind11's
// type, whose visibility is hidden, made GCC warn about this struct's.)
class NativeCall {
 public:
  NativeCall() : thread_state_(PyEval_SaveThread()) {}
  // A daemon thread that asks for the GIL back while the interpreter exits is ended by
  // pthread_exit, whose forced unwind starts in PyEval_RestoreThread. Through this noexcept
  // destructor it called std::terminate and aborted the process; let through, it would destroy
  // the call's Python handles without the GIL. So the thread waits here for the process to end,
  // as Python 3.14 itself leaves such threads (a forced unwind may be caught if never left).
  ~NativeCall() {
#ifdef __GLIBCXX__
    try {
      PyEval_RestoreThread(thread_state_);
    } catch (abi::__forced_unwind&) {
      for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
    }
#else
    PyEval_RestoreThread(thread_state_);
#endif
  }
  NativeCall(const NativeCall&) = delete;
  NativeCall& operator=(const NativeCall&) = delete;

 private:
  PyThreadState* thread_state_;  // (first: the GIL goes before the mode changes)
  IeeeFloatMode float_mode_;
};

// A float64 C-contiguous array, converted on the way in where needed.
using DArray = pybind11::array_t<double, pybind11::array::c_style | pybind11::array::forcecast>;

// Raises a ValueError (std::invalid_argument) with `message` unless `ok`.
inline void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}
// The same for a literal, which then becomes a std::string only when it is thrown (a message
// past 15 characters cost a malloc and a free on every call: most of a solve's allocations).
inline void require(bool ok, const char* message) {
  if (!ok) throw std::invalid_argument(message);
}

// The core's limits on K and N (kMaxOptions, kMaxItems in problem.hpp), as ValueErrors naming
// values: the core keeps option and item indices in 32-bit integers.
inline void require_options(std::int64_t k) {
  require(k <= kMaxOptions, "values: K (the number of options) must be at most 1073741824 (2^30)");
}
inline void require_items(std::int64_t n) {
  require(n <= kMaxItems, "values: N (the number of items) must be at most 2147483647 (2^31 - 1)");
}

// Whether an array's dtype is T. Compared by equivalence, not identity: an unpickled array
// (multiprocessing, Ray's object store) carries its own dtype object, equal to numpy's float64
// but not the same object, and must be accepted as float64.
template <typename T>
inline bool is_dtype(const pybind11::dtype& dt) {
  const pybind11::dtype want = pybind11::dtype::of<T>();
  return dt.is(want) || pybind11::detail::npy_api::get().PyArray_EquivTypes_(dt.ptr(), want.ptr());
}

// Whether two dtypes are equivalent (see is_dtype).
inline bool same_dtype(const pybind11::dtype& a, const pybind11::dtype& b) {
  return a.is(b) || pybind11::detail::npy_api::get().PyArray_EquivTypes_(a.ptr(), b.ptr());
}

}  // namespace bindings
}  // namespace apportion
