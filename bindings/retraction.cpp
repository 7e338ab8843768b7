// Bindings of the budget retraction (cpp/retraction.hpp). The Python layer
// (python/apportion/torch.py) converts tensors to numpy views without copying and checks
// shapes, naming arguments; these checks are the second line of defence. The logits are
// updated in place; the GIL is released while the core runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common.hpp"
#include "../cpp/retraction.hpp"

namespace py = pybind11;
using namespace apportion;
using bindings::DArray;
using bindings::require;
using bindings::is_dtype;

namespace {


template <class T>
void retract_typed(py::array& logits, const DArray& costs, const py::object& weights_obj, const DArray& budgets,
                   double temperature, double rtol, int max_iter, int threads, const RetractionOutput& out) {
  RetractionView<T> v;
  v.b = logits.shape(0);
  v.n = logits.shape(1);
  v.k = logits.shape(2);
  const std::int64_t cb = costs.shape(0), cn = costs.shape(1);
  require((cb == 1 || cb == v.b) && (cn == 1 || cn == v.n) && costs.shape(2) == v.k,
          "costs: shape does not broadcast against logits (B,N,K)");
  v.costs = costs.data();
  v.cost_stride_item = cn == 1 ? 0 : v.k;
  v.cost_stride_batch = cb == 1 ? 0 : cn * v.k;
  DArray weights;
  if (!weights_obj.is_none()) {
    weights = weights_obj.cast<DArray>();
    require(weights.ndim() == 2 && (weights.shape(0) == 1 || weights.shape(0) == v.b) && weights.shape(1) == v.n,
            "weights: expected shape (B|1, N)");
    v.weights = weights.data();
    v.weight_stride_batch = weights.shape(0) == 1 ? 0 : v.n;
  }
  v.budgets = budgets.data();
  v.inv_tau = 1.0 / temperature;
  v.rtol = rtol;
  v.max_iter = max_iter;
  v.logits = static_cast<T*>(logits.mutable_data());
  py::gil_scoped_release release;
  retract_batch(v, out, threads);
}

}  // namespace

void bind_retraction(py::module_& m) {
  m.def(
      "retract",
      [](py::array logits, const DArray& costs, py::object weights, const DArray& budgets, double temperature,
         double rtol, int max_iter, int threads) {
        require(logits.ndim() == 3, "logits: expected a 3-d array (B,N,K)");
        require(logits.shape(0) > 0 && logits.shape(1) > 0 && logits.shape(2) > 0,
                "logits: B, N and K must all be positive");
        require((logits.flags() & py::array::c_style) != 0, "logits: expected a C-contiguous array");
        require(logits.writeable(), "logits: expected a writable array (it is retracted in place)");
        require(costs.ndim() == 3, "costs: expected a 3-d array (B|1, N|1, K)");
        require(budgets.ndim() == 1 && budgets.shape(0) == logits.shape(0), "budget: expected shape (B,)");
        require(std::isfinite(temperature) && temperature > 0, "temperature: must be finite and positive");
        require(rtol > 0, "rtol: must be positive");
        require(max_iter > 0, "max_iter: must be positive");
        const std::int64_t b = logits.shape(0);
        py::array_t<double> shift(b), expected(b);
        py::array_t<std::int32_t> iterations(b);
        py::array_t<std::int8_t> status(b);
        RetractionOutput out{shift.mutable_data(), expected.mutable_data(), iterations.mutable_data(),
                             status.mutable_data()};
        if (is_dtype<double>(logits.dtype())) {
          retract_typed<double>(logits, costs, weights, budgets, temperature, rtol, max_iter, threads, out);
        } else if (is_dtype<float>(logits.dtype())) {
          retract_typed<float>(logits, costs, weights, budgets, temperature, rtol, max_iter, threads, out);
        } else {
          throw py::type_error("logits: expected float32 or float64");
        }
        return py::make_tuple(shift, expected, iterations, status);
      },
      py::arg("logits"), py::arg("costs"), py::arg("weights"), py::arg("budgets"), py::arg("temperature"),
      py::arg("rtol"), py::arg("max_iter"), py::arg("threads"),
      "Retracts logits (B,N,K) in place onto E = budget. Returns (shift, expected, iterations, status).");
}
