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

}  // namespace bindings
}  // namespace apportion
