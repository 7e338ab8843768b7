// The CUDA entry points of apportion._core: device arrays in (DLPack or
// __cuda_array_interface__, see dlpack.hpp), kernels launched on the caller's stream, outputs
// written into device arrays the caller allocated on the same device. The Python layer
// (python/apportion/_device.py) normalises shapes and dtypes and allocates the outputs.
// Without a CUDA build these functions are absent and bind_cuda() adds nothing.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

#ifdef APPORTION_WITH_CUDA

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.hpp"
#include "../cpp/online.hpp"
#include "../cpp/problem.hpp"
#include "../cuda/device.hpp"
#include "dlpack.hpp"

using namespace apportion;
using bindings::DArray;
using bindings::NativeCall;
using bindings::require;
using bindings::require_options;
using dlpack::ArrayRef;

namespace {


void require_device(const ArrayRef& a, int device) {
  if (a.device() >= 0 && a.device() != device) {
    a.fail("is on CUDA device " + std::to_string(a.device()) + ", the solve runs on device " +
           std::to_string(device) + "; put every array on one device");
  }
}

// Inputs of a batched device solve, checked as BatchArgs (module.cpp) checks host arrays.
struct DeviceBatch {
  std::unique_ptr<ArrayRef> values, costs, budgets, mask;
  std::int64_t b = 0, n = 0, k = 0, cost_stride_batch = 0, cost_stride_item = 0;
  bool dbl = true;

  DeviceBatch(py::handle v, py::handle c, py::handle bud, py::handle m, std::uintptr_t stream, int device) {
    values = std::make_unique<ArrayRef>(v, "values", stream, false);
    costs = std::make_unique<ArrayRef>(c, "costs", stream, false);
    budgets = std::make_unique<ArrayRef>(bud, "budget", stream, false);
    for (const ArrayRef* a : {values.get(), costs.get(), budgets.get()}) require_device(*a, device);
    values->require(values->ndim() == 3, "expected a 3-d array (B,N,K)");
    b = values->dim(0);
    n = values->dim(1);
    k = values->dim(2);
    require(b > 0 && n > 0 && k > 0, "values: B, N and K must all be positive");
    require_options(k);
    dbl = values->is('f', 8);
    values->require(dbl || values->is('f', 4), "expected float32 or float64");
    costs->require(costs->ndim() == 3, "expected a 3-d array (B|1, N|1, K)");
    const std::int64_t cb = costs->dim(0), cn = costs->dim(1);
    costs->require((cb == 1 || cb == b) && (cn == 1 || cn == n) && costs->dim(2) == k,
                   "shape does not broadcast against values (B,N,K)");
    costs->require(costs->is('f', dbl ? 8 : 4), "values and costs must share one dtype");
    cost_stride_item = cn == 1 ? 0 : k;
    cost_stride_batch = cb == 1 ? 0 : cn * k;
    budgets->require_shape({b});
    budgets->require(budgets->is('f', 8), "expected float64");
    if (!m.is_none()) {
      mask = std::make_unique<ArrayRef>(m, "mask", stream, false);
      require_device(*mask, device);
      mask->require_shape({b, n, k});
      mask->require(mask->is('u', 1) || mask->is('b', 1), "expected a bool or uint8 array");
    }
  }

  template <class T>
  BatchView<T> view(double value_sign) const {
    BatchView<T> p;
    p.values = static_cast<const T*>(values->data());
    p.costs = static_cast<const T*>(costs->data());
    p.cost_stride_batch = cost_stride_batch;
    p.cost_stride_item = cost_stride_item;
    p.mask = mask ? static_cast<const std::uint8_t*>(mask->data()) : nullptr;
    p.budgets = static_cast<const double*>(budgets->data());
    p.b = b;
    p.n = n;
    p.k = k;
    p.value_sign = value_sign;
    return p;
  }
};

// Outputs (choice, value, cost, bound, shadow_price, min_budget, status) on the device.
struct DeviceOutputs {
  std::vector<std::unique_ptr<ArrayRef>> refs;
  BatchOutput out;

  DeviceOutputs(const py::tuple& outs, std::int64_t b, std::int64_t n, std::uintptr_t stream, int device) {
    static const char* names[] = {"choice", "value", "cost", "bound", "shadow_price", "min_budget", "status"};
    require(outs.size() == 7, "outputs: expected 7 arrays (internal error in the Python layer)");
    for (int i = 0; i < 7; ++i) {
      refs.push_back(std::make_unique<ArrayRef>(outs[i], std::string("outputs.") + names[i], stream, true));
      require_device(*refs.back(), device);
    }
    refs[0]->require_shape({b, n});
    refs[0]->require(refs[0]->is('i', 8), "expected int64");
    for (int i = 1; i < 6; ++i) {
      refs[i]->require_shape({b});
      refs[i]->require(refs[i]->is('f', 8), "expected float64");
    }
    refs[6]->require_shape({b});
    refs[6]->require(refs[6]->is('i', 1), "expected int8");
    out.choice = static_cast<std::int64_t*>(refs[0]->data());
    out.value = static_cast<double*>(refs[1]->data());
    out.cost = static_cast<double*>(refs[2]->data());
    out.bound = static_cast<double*>(refs[3]->data());
    out.shadow_price = static_cast<double*>(refs[4]->data());
    out.min_budget = static_cast<double*>(refs[5]->data());
    out.status = static_cast<std::int8_t*>(refs[6]->data());
  }
};

std::vector<double> to_vector(const DArray& a) { return std::vector<double>(a.data(), a.data() + a.size()); }

}  // namespace

void bind_cuda(py::module_& m) {
  m.def(
      "cuda_lagrangian",
      [](py::handle values, py::handle costs, py::handle budgets, py::handle mask, double value_sign,
         py::tuple outputs, std::uintptr_t stream, int device, std::uint64_t chunk_scratch_bytes) {
        gpu::DeviceGuard guard(device);
        DeviceBatch a(values, costs, budgets, mask, stream, device);
        DeviceOutputs o(outputs, a.b, a.n, stream, device);
        if (a.dbl) {
          const BatchView<double> p = a.view<double>(value_sign);
          NativeCall native;
          gpu::lagrangian(p, o.out, stream, chunk_scratch_bytes);
        } else {
          const BatchView<float> p = a.view<float>(value_sign);
          NativeCall native;
          gpu::lagrangian(p, o.out, stream, chunk_scratch_bytes);
        }
      },
      py::arg("values"), py::arg("costs"), py::arg("budgets"), py::arg("mask"), py::arg("value_sign"),
      py::arg("outputs"), py::arg("stream"), py::arg("device"), py::arg("chunk_scratch_bytes") = 0,
      "Batched Lagrangian solve on a CUDA device, writing into `outputs` (the 7 arrays of "
      "lagrangian()). Launches on `stream`; instances too large for shared memory run in "
      "launches of at most `chunk_scratch_bytes` of scratch (0: 1 GiB).");

  m.def(
      "cuda_dp",
      [](py::handle values, py::handle costs, py::handle budgets, py::handle mask, double value_sign,
         bool exact_spend, std::uint64_t max_table_bytes, py::tuple outputs, std::uintptr_t stream, int device) {
        gpu::DeviceGuard guard(device);
        DeviceBatch a(values, costs, budgets, mask, stream, device);
        DeviceOutputs o(outputs, a.b, a.n, stream, device);
        if (a.dbl) {
          const BatchView<double> p = a.view<double>(value_sign);
          NativeCall native;
          gpu::dp(p, o.out, exact_spend, max_table_bytes, stream);
        } else {
          const BatchView<float> p = a.view<float>(value_sign);
          NativeCall native;
          gpu::dp(p, o.out, exact_spend, max_table_bytes, stream);
        }
      },
      py::arg("values"), py::arg("costs"), py::arg("budgets"), py::arg("mask"), py::arg("value_sign"),
      py::arg("exact_spend"), py::arg("max_table_bytes"), py::arg("outputs"), py::arg("stream"),
      py::arg("device"),
      "Batched dense DP on a CUDA device into `outputs`; everything it allocates counts against "
      "max_table_bytes (0: half the free device memory), the batch chunked to fit.");

  m.def("cuda_pointer_device", [](std::uintptr_t ptr) { return gpu::pointer_device(ptr); }, py::arg("ptr"),
        "The CUDA device owning a device pointer (as __cuda_array_interface__ gives it); -1 if none.");

  m.def(
      "cuda_simulate_online",
      [](py::handle values, py::handle costs, const DArray& budget, std::int64_t horizon, int mirror, double eta,
         bool skip_allowed, const DArray& initial_prices, py::tuple outputs, std::uintptr_t stream, int device) {
        gpu::DeviceGuard guard(device);
        DmdConfig cfg;
        cfg.r = budget.size();
        cfg.horizon = horizon;
        require(mirror == 0 || mirror == 1, "mirror: expected 'euclidean' or 'entropy'");
        cfg.mirror = mirror == 0 ? kEuclidean : kEntropy;
        cfg.eta = eta;
        cfg.skip_allowed = skip_allowed;
        cfg.budget = to_vector(budget);
        cfg.m0 = to_vector(initial_prices);
        cfg.finalise();
        ArrayRef v(values, "values", stream, false), c(costs, "costs", stream, false);
        require_device(v, device);
        require_device(c, device);
        v.require(v.ndim() == 3, "expected a 3-d array (S,T,K)");
        const std::int64_t s = v.dim(0), t = v.dim(1), k = v.dim(2), r = cfg.r;
        require(s > 0 && t > 0 && k > 0, "values: S, T and K must all be positive");
        const bool dbl = v.is('f', 8);
        v.require(dbl || v.is('f', 4), "expected float32 or float64");
        c.require(c.ndim() == 4 && (c.dim(0) == 1 || c.dim(0) == s) && (c.dim(1) == 1 || c.dim(1) == t) &&
                      c.dim(2) == k && c.dim(3) == r,
                  "expected shape (S|1, T|1, K, R) against values (S,T,K)");
        c.require(c.is('f', dbl ? 8 : 4), "values and costs must share one dtype");
        const std::int64_t ct = c.dim(1) == 1 ? 0 : k * r;
        const std::int64_t cs = c.dim(0) == 1 ? 0 : c.dim(1) * k * r;
        require(outputs.size() == 5, "outputs: expected 5 entries (internal error in the Python layer)");
        std::unique_ptr<ArrayRef> choice;
        if (!outputs[0].is_none()) {
          choice = std::make_unique<ArrayRef>(outputs[0], "outputs.choice", stream, true);
          choice->require_shape({s, t});
          choice->require(choice->is('i', 8), "expected int64");
        }
        ArrayRef value(outputs[1], "outputs.value", stream, true), spent(outputs[2], "outputs.spent", stream, true),
            prices(outputs[3], "outputs.prices", stream, true), stalled(outputs[4], "outputs.stalled", stream, true);
        value.require_shape({s});
        spent.require_shape({s, r});
        prices.require_shape({s, r});
        stalled.require_shape({s});
        value.require(value.is('f', 8), "expected float64");
        spent.require(spent.is('f', 8), "expected float64");
        prices.require(prices.is('f', 8), "expected float64");
        stalled.require(stalled.is('i', 8), "expected int64");
        SimulationOutput o;
        o.choice = choice ? static_cast<std::int64_t*>(choice->data()) : nullptr;
        o.value = static_cast<double*>(value.data());
        o.spent = static_cast<double*>(spent.data());
        o.prices = static_cast<double*>(prices.data());
        o.stalled = static_cast<std::int64_t*>(stalled.data());
        NativeCall native;
        if (dbl) {
          gpu::simulate(cfg, static_cast<const double*>(v.data()), static_cast<const double*>(c.data()), cs, ct, s,
                        t, k, o, stream);
        } else {
          gpu::simulate(cfg, static_cast<const float*>(v.data()), static_cast<const float*>(c.data()), cs, ct, s,
                        t, k, o, stream);
        }
      },
      py::arg("values"), py::arg("costs"), py::arg("budget"), py::arg("horizon"), py::arg("mirror"),
      py::arg("eta"), py::arg("skip_allowed"), py::arg("initial_prices"), py::arg("outputs"), py::arg("stream"),
      py::arg("device"),
      "S streams of T requests by dual mirror descent on a CUDA device, one thread per stream, "
      "into `outputs` (choice|None, value, spent, prices, stalled).");
}

#else  // no CUDA build: nothing to add

void bind_cuda(py::module_&) {}

#endif
