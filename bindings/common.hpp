// Helpers shared by the binding files of apportion._core.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

namespace apportion {
namespace bindings {

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
