// Bindings of the budget retraction (cpp/retraction.hpp) and of the normal and tangent
// projection (cpp/tangent.hpp). The Python layer (python/apportion/torch.py) converts tensors
// to numpy views without copying and checks shapes, naming arguments; these checks are the
// second line of defence. The logits are retracted in place; the normal and the projection
// are written into arrays the caller allocates. The GIL is released while the core runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common.hpp"
#include "../cpp/retraction.hpp"
#include "../cpp/tangent.hpp"

namespace py = pybind11;
using namespace apportion;
using bindings::DArray;
using bindings::NativeCall;
using bindings::require;
using bindings::is_dtype;

namespace {

void check_logits(const py::array& logits, const char* name) {
  require(logits.ndim() == 3, std::string(name) + ": expected a 3-d array (B,N,K)");
  require(logits.shape(0) > 0 && logits.shape(1) > 0 && logits.shape(2) > 0,
          std::string(name) + ": B, N and K must all be positive");
  require((logits.flags() & py::array::c_style) != 0, std::string(name) + ": expected a C-contiguous array");
}

// The geometry of logits (B,N,K) with costs (B|1,N|1,K) and weights None or (B|1,N). `weights`
// must outlive the view.
template <class T>
RetractionView<T> make_view(py::array& logits, const DArray& costs, const py::object& weights_obj, DArray& weights,
                            double temperature) {
  require(costs.ndim() == 3, "costs: expected a 3-d array (B|1, N|1, K)");
  require(std::isfinite(temperature) && temperature > 0, "temperature: must be finite and positive");
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
  if (!weights_obj.is_none()) {
    weights = weights_obj.cast<DArray>();
    require(weights.ndim() == 2 && (weights.shape(0) == 1 || weights.shape(0) == v.b) && weights.shape(1) == v.n,
            "weights: expected shape (B|1, N)");
    v.weights = weights.data();
    v.weight_stride_batch = weights.shape(0) == 1 ? 0 : v.n;
  }
  v.inv_tau = 1.0 / temperature;
  v.logits = static_cast<T*>(const_cast<void*>(logits.data()));
  return v;
}

template <class T>
void retract_typed(py::array& logits, const DArray& costs, const py::object& weights_obj, const DArray& budgets,
                   double temperature, double rtol, int max_iter, int curve, int threads,
                   const RetractionOutput& out) {
  DArray weights;
  RetractionView<T> v = make_view<T>(logits, costs, weights_obj, weights, temperature);
  v.budgets = budgets.data();
  v.rtol = rtol;
  v.max_iter = max_iter;
  v.curve = static_cast<RetractionCurve>(curve);
  v.logits = static_cast<T*>(logits.mutable_data());
  NativeCall native;
  retract_batch(v, out, threads);
}

template <class T>
void normal_typed(py::array& logits, const DArray& costs, const py::object& weights_obj, double temperature,
                  py::array& out, int threads) {
  DArray weights;
  const RetractionView<T> v = make_view<T>(logits, costs, weights_obj, weights, temperature);
  T* dst = static_cast<T*>(out.mutable_data());
  NativeCall native;
  budget_normal_batch(v, dst, threads);
}

template <class T, class G>
void project_typed(py::array& grad, py::array& logits, const DArray& costs, const py::object& weights_obj,
                   double temperature, py::array& out, int threads) {
  DArray weights;
  const RetractionView<T> v = make_view<T>(logits, costs, weights_obj, weights, temperature);
  const G* src = static_cast<const G*>(grad.data());
  G* dst = static_cast<G*>(out.mutable_data());
  NativeCall native;
  project_tangent_batch(v, src, dst, threads);
}

bool is_double(const py::array& a, const char* name) {
  if (is_dtype<double>(a.dtype())) return true;
  if (is_dtype<float>(a.dtype())) return false;
  throw py::type_error(std::string(name) + ": expected float32 or float64");
}

void check_out(const py::array& out, const py::array& like, const char* like_name) {
  check_logits(out, "out");
  require(out.writeable(), "out: expected a writable array");
  require(bindings::same_dtype(out.dtype(), like.dtype()), std::string("out: expected the dtype of ") + like_name);
  for (int d = 0; d < 3; ++d) require(out.shape(d) == like.shape(d), std::string("out: expected the shape of ") + like_name);
}

}  // namespace

void bind_retraction(py::module_& m) {
  m.def(
      "retract",
      [](py::array logits, const DArray& costs, py::object weights, const DArray& budgets, double temperature,
         double rtol, int max_iter, int curve, int threads) {
        check_logits(logits, "logits");
        require(logits.writeable(), "logits: expected a writable array (it is retracted in place)");
        require(budgets.ndim() == 1 && budgets.shape(0) == logits.shape(0), "budget: expected shape (B,)");
        require(rtol > 0, "rtol: must be positive");
        require(max_iter > 0, "max_iter: must be positive");
        require(curve == kCurveWeighted || curve == kCurveCosts, "curve: expected 0 (weighted) or 1 (costs)");
        const std::int64_t b = logits.shape(0);
        py::array_t<double> shift(b), expected(b);
        py::array_t<std::int32_t> iterations(b);
        py::array_t<std::int8_t> status(b);
        RetractionOutput out{shift.mutable_data(), expected.mutable_data(), iterations.mutable_data(),
                             status.mutable_data()};
        if (is_double(logits, "logits")) {
          retract_typed<double>(logits, costs, weights, budgets, temperature, rtol, max_iter, curve, threads, out);
        } else {
          retract_typed<float>(logits, costs, weights, budgets, temperature, rtol, max_iter, curve, threads, out);
        }
        return py::make_tuple(shift, expected, iterations, status);
      },
      py::arg("logits"), py::arg("costs"), py::arg("weights"), py::arg("budgets"), py::arg("temperature"),
      py::arg("rtol"), py::arg("max_iter"), py::arg("curve"), py::arg("threads"),
      "Retracts logits (B,N,K) in place onto E = budget along curve 0 (z - t w) or 1 (z - t c). "
      "Returns (shift, expected, iterations, status).");
  m.def(
      "budget_normal",
      [](py::array logits, const DArray& costs, py::object weights, double temperature, py::array out, int threads) {
        check_logits(logits, "logits");
        check_out(out, logits, "logits");
        if (is_double(logits, "logits")) {
          normal_typed<double>(logits, costs, weights, temperature, out, threads);
        } else {
          normal_typed<float>(logits, costs, weights, temperature, out, threads);
        }
      },
      py::arg("logits"), py::arg("costs"), py::arg("weights"), py::arg("temperature"), py::arg("out"),
      py::arg("threads"), "Writes the budget normal of logits (B,N,K) into out (same shape and dtype).");
  m.def(
      "project_tangent",
      [](py::array grad, py::array logits, const DArray& costs, py::object weights, double temperature,
         py::array out, int threads) {
        check_logits(logits, "logits");
        check_logits(grad, "grad");
        for (int d = 0; d < 3; ++d) require(grad.shape(d) == logits.shape(d), "grad: expected the shape of logits");
        check_out(out, grad, "grad");
        const bool t64 = is_double(logits, "logits"), g64 = is_double(grad, "grad");
        if (t64 && g64) project_typed<double, double>(grad, logits, costs, weights, temperature, out, threads);
        if (t64 && !g64) project_typed<double, float>(grad, logits, costs, weights, temperature, out, threads);
        if (!t64 && g64) project_typed<float, double>(grad, logits, costs, weights, temperature, out, threads);
        if (!t64 && !g64) project_typed<float, float>(grad, logits, costs, weights, temperature, out, threads);
      },
      py::arg("grad"), py::arg("logits"), py::arg("costs"), py::arg("weights"), py::arg("temperature"),
      py::arg("out"), py::arg("threads"),
      "Writes grad - (<grad,n>/<n,n>) n per instance into out (the shape and dtype of grad).");
}
