// The pybind11 module apportion._core: thin wrappers that check buffers, allocate outputs,
// release the GIL and call the CPU core (or report what the CUDA build offers). The Python
// layer (python/apportion) validates shapes and dtypes before calling in; these checks are the
// second line of defence.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.hpp"
#include "../cpp/cpu_dispatch.hpp"
#include "../cpp/dp.hpp"
#include "../cpp/frontier.hpp"
#include "../cpp/item_ops.hpp"
#include "../cpp/problem.hpp"
#include "../cpp/solvers.hpp"
#include "../cpp/thread_pool.hpp"

#ifdef APPORTION_WITH_CUDA
#include "../cuda/device.hpp"
#endif

namespace py = pybind11;
using namespace apportion;
using bindings::NativeCall;
using bindings::require;
using bindings::require_items;
using bindings::require_options;
using bindings::is_dtype;
using bindings::same_dtype;

void bind_online(py::module_& m);  // bindings/online.cpp
void bind_retraction(py::module_& m);  // bindings/retraction.cpp
void bind_cuda(py::module_& m);    // bindings/cuda.cpp (empty without a CUDA build)

namespace {


void require_c_contiguous(const py::array& a, const char* name) {
  if ((a.flags() & py::array::c_style) == 0) {  // (the message built only when it is thrown)
    throw std::invalid_argument(std::string(name) + ": expected a C-contiguous array (internal error in the Python layer)");
  }
}

// The arrays a batched solve reads, checked for shape, dtype and layout.
struct BatchArgs {
  py::array values, costs;
  // The budgets and mask arrays, held for their data below (plain objects: a default
  // py::array would allocate an empty numpy array on every one-instance call).
  py::object budgets, mask;
  const double* budget_data = nullptr;        // (B,): budgets' data, or the one instance's budget
  const std::uint8_t* mask_data = nullptr;    // (B,N,K), or none
  std::int64_t b = 0, n = 0, k = 0;
  std::int64_t cost_stride_batch = 0, cost_stride_item = 0, cost_elements = 0;

  BatchArgs(py::array v, py::array c, py::array bud, py::object m) : values(std::move(v)), costs(std::move(c)) {
    require(values.ndim() == 3, "values: expected a 3-d array (B,N,K)");
    require(costs.ndim() == 3, "costs: expected a 3-d array (B|1, N|1, K)");
    set_shapes(values.shape(0), values.shape(1), values.shape(2), costs.shape(0), costs.shape(1),
               costs.shape(2));
    require(bud.ndim() == 1 && bud.shape(0) == b, "budget: expected shape (B,)");
    require(is_dtype<double>(bud.dtype()), "budget: expected float64");
    require_c_contiguous(bud, "budget");
    budget_data = static_cast<const double*>(bud.data());
    budgets = std::move(bud);
    if (!m.is_none()) {
      py::array ma = m.cast<py::array>();
      require(ma.ndim() == 3 && ma.shape(0) == b && ma.shape(1) == n && ma.shape(2) == k,
              "mask: expected the shape of values (B,N,K)");
      require(is_dtype<std::uint8_t>(ma.dtype()) || is_dtype<bool>(ma.dtype()),
              "mask: expected a bool or uint8 array");
      require_c_contiguous(ma, "mask");
      mask_data = static_cast<const std::uint8_t*>(ma.data());
      mask = std::move(ma);
    }
  }

  // One unmasked instance: values (N,K), costs (K,) or (N,K), a budget that `budget` points to
  // (it must outlive the solve).
  BatchArgs(py::array v, py::array c, const double* budget)
      : values(std::move(v)), costs(std::move(c)), budget_data(budget) {
    require(values.ndim() == 2, "values: expected a 2-d array (N,K)");
    require(costs.ndim() == 1 || costs.ndim() == 2, "costs: expected a 1-d (K,) or 2-d (N,K) array");
    const bool per_item = costs.ndim() == 2;
    set_shapes(1, values.shape(0), values.shape(1), 1, per_item ? costs.shape(0) : 1,
               costs.shape(costs.ndim() - 1));
  }

  template <class T>
  BatchView<T> view(double value_sign) const {
    BatchView<T> p;
    p.values = static_cast<const T*>(values.data());
    p.costs = static_cast<const T*>(costs.data());
    p.cost_stride_batch = cost_stride_batch;
    p.cost_stride_item = cost_stride_item;
    p.mask = mask_data;
    p.budgets = budget_data;
    p.b = b;
    p.n = n;
    p.k = k;
    p.value_sign = value_sign;
    return p;
  }

 private:
  // Shapes and strides from values (B,N,K) and costs (cb,cn,ck), checked.
  void set_shapes(std::int64_t vb, std::int64_t vn, std::int64_t vk, std::int64_t cb, std::int64_t cn,
                  std::int64_t ck) {
    b = vb;
    n = vn;
    k = vk;
    require(b > 0 && n > 0 && k > 0, "values: B, N and K must all be positive");
    require_items(n);
    require_options(k);
    require((cb == 1 || cb == b) && (cn == 1 || cn == n) && ck == k,
            "costs: shape does not broadcast against values (B,N,K)");
    require(same_dtype(values.dtype(), costs.dtype()), "values and costs must share one dtype");
    require_c_contiguous(values, "values");
    require_c_contiguous(costs, "costs");
    cost_stride_item = cn == 1 ? 0 : k;
    cost_stride_batch = cb == 1 ? 0 : cn * k;
    cost_elements = cb * cn * k;
  }
};

// Output arrays of a batched solve, returned to Python as a tuple.
struct BatchResults {
  py::array_t<std::int64_t> choice;
  py::array_t<double> value, cost, bound, shadow_price, min_budget;
  py::array_t<std::int8_t> status;

  BatchResults(std::int64_t b, std::int64_t n)
      : choice({b, n}), value(b), cost(b), bound(b), shadow_price(b), min_budget(b), status(b) {}

  BatchOutput output() {
    BatchOutput o;
    o.choice = choice.mutable_data();
    o.value = value.mutable_data();
    o.cost = cost.mutable_data();
    o.bound = bound.mutable_data();
    o.shadow_price = shadow_price.mutable_data();
    o.min_budget = min_budget.mutable_data();
    o.status = status.mutable_data();
    return o;
  }

  py::tuple to_tuple() const {
    return py::make_tuple(choice, value, cost, bound, shadow_price, min_budget, status);
  }
};

// Calls solver<T> with T matching the dtype of values; the GIL is released while it runs.
// Solvers with Solver<T>::kChecksInput check values and costs per instance themselves (in their
// own pass over the data, on all threads); the others get check_batch here first.
template <template <class> class Solver, class... Extra>
void run_solver(const BatchArgs& a, const BatchOutput& o, double value_sign, Extra&&... extra) {
  auto run = [&](auto typed) {
    using T = decltype(typed);
    BatchView<T> p = a.view<T>(value_sign);
    NativeCall native;
    if (Solver<T>::kChecksInput) {
      check_budgets(p);
    } else {
      check_batch(p, a.cost_elements);
    }
    Solver<T>::run(p, o, extra...);
  };
  if (is_dtype<double>(a.values.dtype())) {
    run(double{});
  } else if (is_dtype<float>(a.values.dtype())) {
    run(float{});
  } else {
    throw py::type_error("values: expected float32 or float64");
  }
}

template <template <class> class Solver, class... Extra>
py::tuple dispatch_batch(const BatchArgs& a, double value_sign, Extra&&... extra) {
  BatchResults r(a.b, a.n);
  run_solver<Solver>(a, r.output(), value_sign, std::forward<Extra>(extra)...);
  return r.to_tuple();
}

// A new int64 array (n,) from numpy's constructor as it is: pybind11's array_t(n) first builds
// the shape and strides in two std::vectors (about 30 ns of a 1 x 8 solve_one's 0.5 us).
py::array_t<std::int64_t> new_int64_array(py::ssize_t n) {
  const auto& api = py::detail::npy_api::get();
  const Py_intptr_t shape[1] = {n};
  PyObject* made = api.PyArray_NewFromDescr_(api.PyArray_Type_, py::dtype::of<std::int64_t>().release().ptr(), 1,
                                             shape, nullptr, nullptr, 0, nullptr);  // (steals the dtype)
  if (made == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::array_t<std::int64_t>>(made);
}

// One instance (values (N,K)): the tuple of dispatch_batch with Python scalars in place of
// arrays of one element and choice (N,); the per-call cost of the common unbatched solve.
template <template <class> class Solver, class... Extra>
py::tuple dispatch_one(py::array values, py::array costs, double budget, double value_sign, Extra&&... extra) {
  const BatchArgs a(std::move(values), std::move(costs), &budget);
  py::array_t<std::int64_t> choice = new_int64_array(a.n);
  double value, cost, bound, shadow_price, min_budget;
  std::int8_t status;
  const BatchOutput o{choice.mutable_data(), &value, &cost, &bound, &shadow_price, &min_budget, &status};
  run_solver<Solver>(a, o, value_sign, std::forward<Extra>(extra)...);
  return py::make_tuple(choice, value, cost, bound, shadow_price, min_budget, static_cast<int>(status));
}

// The budget as a float when solve() is the common call that solve_one takes as it is; None for
// any other (see fast_budget in the module below). Native: in Python these checks took about
// 0.45 us of a 1 x 8 solve()'s 2.2 us, here about 0.06 us.
py::object fast_budget(py::handle values, py::handle costs, py::handle budget) {
  const auto& api = py::detail::npy_api::get();
  // Exact types: an ndarray subclass (np.matrix, a masked array) may not index as numpy does.
  if (Py_TYPE(values.ptr()) != api.PyArray_Type_ || Py_TYPE(costs.ptr()) != api.PyArray_Type_) {
    return py::none();
  }
  const auto v = py::reinterpret_borrow<py::array>(values);
  const auto c = py::reinterpret_borrow<py::array>(costs);
  if (v.ndim() != 2) return py::none();
  const py::dtype dtype = v.dtype();
  if (!(is_dtype<double>(dtype) || is_dtype<float>(dtype)) || !same_dtype(c.dtype(), dtype) || v.size() == 0) {
    return py::none();
  }
  if ((v.flags() & c.flags() & py::array::c_style) == 0) return py::none();
  const py::ssize_t n = v.shape(0), k = v.shape(1);
  if (n > kMaxItems || k > kMaxOptions) return py::none();  // the general path names the limit
  if (!(c.ndim() == 1 ? c.shape(0) == k : c.ndim() == 2 && c.shape(0) == n && c.shape(1) == k)) {
    return py::none();
  }
  // A Python float or int, np.float64 (not np.float32: solve converts that on the general path)
  // or a 0-d integer or float array.
  const PyTypeObject* kind = Py_TYPE(budget.ptr());
  const auto float64 = reinterpret_cast<const PyTypeObject*>(
      py::detail::array_descriptor_proxy(py::dtype::of<double>().ptr())->typeobj);
  bool integer = kind == &PyLong_Type;
  if (!(kind == &PyFloat_Type || kind == &PyLong_Type || kind == float64)) {
    if (kind != api.PyArray_Type_) return py::none();
    const auto b = py::reinterpret_borrow<py::array>(budget);
    const char dtype_kind = b.dtype().kind();
    if (b.ndim() != 0 || !(dtype_kind == 'f' || dtype_kind == 'i' || dtype_kind == 'u')) return py::none();
    integer = dtype_kind != 'f';
  }
  // float(budget): PyNumber_Float is what the builtin calls.
  auto real = py::reinterpret_steal<py::object>(PyNumber_Float(budget.ptr()));
  if (!real) {
    if (!PyErr_ExceptionMatches(PyExc_OverflowError)) throw py::error_already_set();
    PyErr_Clear();  // an int past the float range: the general path names it
    return py::none();
  }
  const double b = PyFloat_AS_DOUBLE(real.ptr());
  if (b != b) throw py::value_error("budget: is NaN; pass a number (use inf for no limit)");
  // An integer past 2^53 may round up to the float: the general path rounds it down instead.
  if (integer && std::fabs(b) >= 9007199254740992.0) return py::none();
  return real;
}

ExactLimits exact_limits(double time_limit, std::size_t max_states, std::size_t max_bytes) {
  require(time_limit > 0, "time_limit: must be positive");
  require(max_states > 0, "max_states: must be positive");
  return ExactLimits{time_limit, max_states, max_bytes};
}

template <class T>
struct LagrangianSolver {
  static constexpr bool kChecksInput = true;
  static void run(const BatchView<T>& p, const BatchOutput& o, int threads) {
    solve_lagrangian(p, o, threads);
  }
};

template <class T>
struct DpSolver {
  static constexpr bool kChecksInput = false;
  static void run(const BatchView<T>& p, const BatchOutput& o, bool exact_spend, int threads) {
    solve_dp(p, o, exact_spend, threads);
  }
};

template <class T>
struct ExactSolver {
  static constexpr bool kChecksInput = true;
  static void run(const BatchView<T>& p, const BatchOutput& o, const ExactLimits& limits, int threads) {
    solve_exact(p, o, limits, threads);
  }
};

template <class T>
py::tuple frontier_typed(const BatchArgs& a, double value_sign, bool exact_spend,
                         const py::array_t<double>& at, int threads) {
  const std::int64_t m = at.shape(0);
  py::array_t<std::int64_t> choices({m, a.n});
  FrontierOutput out;
  {
    const BatchView<T> batch = a.view<T>(value_sign);
    NativeCall native;
    check_batch(batch, a.cost_elements);
    dp_frontier(batch.instance(0), exact_spend, at.data(), m, choices.mutable_data(), out, threads);
  }
  py::array_t<double> best(static_cast<py::ssize_t>(out.best.size()));
  std::copy(out.best.begin(), out.best.end(), best.mutable_data());
  return py::make_tuple(best, out.base_cost, choices);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "apportion native core (CPU; CUDA where built). Use the Python API in apportion.";

  m.def(
      "lagrangian",
      [](py::array values, py::array costs, py::array budgets, py::object mask, double value_sign,
         int threads) {
        BatchArgs a(std::move(values), std::move(costs), std::move(budgets), std::move(mask));
        return dispatch_batch<LagrangianSolver>(a, value_sign, threads);
      },
      py::arg("values"), py::arg("costs"), py::arg("budgets"), py::arg("mask"),
      py::arg("value_sign"), py::arg("threads"),
      "Batched Lagrangian solve. Returns (choice, value, cost, bound, shadow_price, min_budget, "
      "status).");

  m.def(
      "dp",
      [](py::array values, py::array costs, py::array budgets, py::object mask, double value_sign,
         bool exact_spend, int threads) {
        BatchArgs a(std::move(values), std::move(costs), std::move(budgets), std::move(mask));
        return dispatch_batch<DpSolver>(a, value_sign, exact_spend, threads);
      },
      py::arg("values"), py::arg("costs"), py::arg("budgets"), py::arg("mask"),
      py::arg("value_sign"), py::arg("exact_spend"), py::arg("threads"),
      "Batched dense DP over integer costs. Returns the tuple of lagrangian().");

  m.def(
      "exact",
      [](py::array values, py::array costs, py::array budgets, py::object mask, double value_sign,
         double time_limit, std::size_t max_states, int threads, std::size_t max_bytes) {
        BatchArgs a(std::move(values), std::move(costs), std::move(budgets), std::move(mask));
        return dispatch_batch<ExactSolver>(a, value_sign, exact_limits(time_limit, max_states, max_bytes),
                                           threads);
      },
      py::arg("values"), py::arg("costs"), py::arg("budgets"), py::arg("mask"),
      py::arg("value_sign"), py::arg("time_limit"), py::arg("max_states"), py::arg("threads"),
      py::arg("max_bytes") = 0,
      "Batched exact core solve. Returns the tuple of lagrangian(). max_bytes: memory each "
      "instance's workspace may hold (0: no limit), checked before each merge of core states.");

  m.def(
      "solve_one",
      [](const std::string& method, py::array values, py::array costs, double budget, double value_sign,
         double time_limit, std::size_t max_states, int threads, std::size_t max_bytes) {
        if (method == "lagrangian") {
          return dispatch_one<LagrangianSolver>(std::move(values), std::move(costs), budget, value_sign, threads);
        }
        require(method == "exact", "method: expected 'lagrangian' or 'exact'");
        return dispatch_one<ExactSolver>(std::move(values), std::move(costs), budget, value_sign,
                                         exact_limits(time_limit, max_states, max_bytes), threads);
      },
      py::arg("method"), py::arg("values"), py::arg("costs"), py::arg("budget"), py::arg("value_sign"),
      py::arg("time_limit"), py::arg("max_states"), py::arg("threads"), py::arg("max_bytes") = 0,
      "One unmasked instance, values (N,K) and costs (K,) or (N,K), by 'lagrangian' or 'exact' "
      "(the limits apply to 'exact'). Returns (choice (N,), value, cost, bound, shadow_price, "
      "min_budget, status) with Python scalars.");

  m.def("fast_budget", &fast_budget, py::arg("values"), py::arg("costs"), py::arg("budget"),
        "The budget as a float when the call is the common one the native core takes as it is: "
        "one instance as C-contiguous float64 (or float32) numpy arrays (not subclasses), values "
        "(N,K) with 0 < N <= 2^31 - 1 and 0 < K <= 2^30 (the core's limits), costs (K,) or (N,K) "
        "of the same dtype, and a budget that is a Python float or int, an np.float64 or a 0-d "
        "integer or float array (no mask is checked here). "
        "None for anything else, and for an int past the float range: the general path then "
        "checks and converts it. A ValueError naming the budget where it is NaN.");

  m.def(
      "frontier",
      [](py::array values, py::array costs, py::array budgets, py::object mask, double value_sign,
         bool exact_spend, py::array_t<double, py::array::c_style | py::array::forcecast> at,
         int threads) {
        BatchArgs a(std::move(values), std::move(costs), std::move(budgets), std::move(mask));
        require(a.b == 1, "frontier: expected one instance");
        require(at.ndim() == 1, "at: expected a 1-d array of budgets");
        if (is_dtype<float>(a.values.dtype())) {
          return frontier_typed<float>(a, value_sign, exact_spend, at, threads);
        }
        return frontier_typed<double>(a, value_sign, exact_spend, at, threads);
      },
      py::arg("values"), py::arg("costs"), py::arg("budgets"), py::arg("mask"),
      py::arg("value_sign"), py::arg("exact_spend"), py::arg("at"), py::arg("threads"),
      "One DP pass: (best value per budget cell, cheapest cost, choices at the budgets `at`).");

  // The per-item arithmetic the CUDA kernels share (item_ops.hpp), on the host, for tests: the
  // kernels reach it with unchecked costs (NaN, negative), which the CPU solvers never pass.
  m.def(
      "_item_frontier",
      [](py::array_t<double, py::array::c_style | py::array::forcecast> values,
         py::array_t<double, py::array::c_style | py::array::forcecast> costs, bool keep_dominated) {
        require(values.ndim() == 1 && costs.ndim() == 1 && values.size() == costs.size() && values.size() > 0,
                "values, costs: expected two 1-d arrays of the same positive length");
        require_options(costs.size());
        const std::int64_t k = costs.size();
        // Exactly k entries each, so that a write out of bounds is one a sanitizer sees.
        std::vector<std::int32_t> option(k);
        std::vector<double> cost(k), value(k);
        sort_by_cost_any(k, costs.data(), option.data());
        const std::int32_t c = pareto_filter(values.data(), costs.data(), static_cast<const std::uint8_t*>(nullptr),
                                             1.0, k, option.data(), keep_dominated, option.data(), cost.data(),
                                             value.data());
        py::list out;
        for (std::int32_t q = 0; q < c; ++q) out.append(py::make_tuple(option[q], cost[q], value[q]));
        return out;
      },
      py::arg("values"), py::arg("costs"), py::arg("keep_dominated") = false,
      "Test hook: one item's Pareto list [(option, cost, value)] by the kernels' shared functions.");

  m.def(
      "_hull_steps",
      [](py::array_t<double, py::array::c_style | py::array::forcecast> values,
         py::array_t<double, py::array::c_style | py::array::forcecast> costs, py::object mask, double value_sign,
         bool shared_costs) {
        require(values.ndim() == 1 && costs.ndim() == 1 && values.size() == costs.size() && values.size() > 0,
                "values, costs: expected two 1-d arrays of the same positive length");
        require_options(costs.size());
        const std::int64_t k = costs.size();
        py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast> allowed;
        InstanceView<double> p;
        p.values = values.data();
        p.costs = costs.data();
        p.n = 1;
        p.k = k;
        p.cost_stride_item = shared_costs ? 0 : k;
        p.value_sign = value_sign;
        if (!mask.is_none()) {
          allowed = mask.cast<py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast>>();
          require(allowed.ndim() == 1 && allowed.size() == k, "mask: expected the shape of values (K,)");
          p.mask = allowed.data();
        }
        std::vector<std::int32_t> order(k);  // shared costs: their cost order, as guess_bracket sorts it
        if (shared_costs) sort_by_cost_any(k, costs.data(), order.data());
        std::vector<double> stack(2 * k);  // exactly what the function may use
        HullSteps steps;
        bool valid = true;
        const double cheapest = sample_hull_steps(p, 0, order.data(), stack.data(), steps, valid);
        py::list out;
        for (const HullIncrement& x : steps) out.append(py::make_tuple(x.slope, x.dcost));
        return py::make_tuple(out, cheapest, valid);
      },
      py::arg("values"), py::arg("costs"), py::arg("mask"), py::arg("value_sign"), py::arg("shared_costs") = false,
      "Test hook: one item's hull steps [(slope, dcost)], its cheapest hull cost (NaN: no allowed "
      "option) and whether its input is valid, as the reduced LP's sample takes them.");

  bind_online(m);
  bind_retraction(m);
  bind_cuda(m);

  m.def("num_threads", [] { return ThreadPool::instance().size(); },
        "Threads of the native pool, the calling thread included.");

  m.def(
      "build_info",
      [] {
        py::list compiled;
        for (int l = 0; l <= static_cast<int>(kTopSimdLevel); ++l) {
          compiled.append(simd_level_name(static_cast<SimdLevel>(l)));
        }
        py::dict info;
        info["simd_compiled"] = compiled;
        info["simd_cpu"] = simd_level_name(cpu_simd_level());
        info["simd_running"] = simd_level_name(simd_level());
#if defined(__clang__)
        info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
        info["compiler"] = std::string("gcc ") + __VERSION__;
#else
        info["compiler"] = "unknown";
#endif
#ifdef APPORTION_WITH_CUDA
        info["cuda_built"] = true;
#else
        info["cuda_built"] = false;
#endif
        return info;
      },
      "The build: SIMD levels compiled, the CPU's highest, the level the dispatched kernels run, "
      "the compiler, whether CUDA was compiled.");
  m.def(
      "_set_simd_level",
      [](const std::string& name) {
        for (int l = 0; l <= static_cast<int>(kTopSimdLevel); ++l) {
          if (name == simd_level_name(static_cast<SimdLevel>(l))) {
            return std::string(simd_level_name(set_simd_level(static_cast<SimdLevel>(l))));
          }
        }
        throw py::value_error("level: expected a compiled SIMD level, got '" + name + "'");
      },
      py::arg("level"),
      "Test hook: run the dispatched kernels at `level` (capped at the CPU's); returns the level run.");
  m.def(
      "_lagrangian_workspace",
      [] {
        const LagrangianWorkspace& ws = thread_workspace<LagrangianWorkspace>();
        py::dict state;
        state["bytes"] = ws.bytes();
        state["copied_rows"] = ws.compact.rows;
        state["keep_bytes"] = kKeepWorkspaceBytes;
        state["reduced"] = ws.reduced;
        state["near_items"] = ws.near.size();      // fixed while the bracket narrowed
        state["frontier_items"] = ws.active.size();  // left to the LP of frontiers
        return state;
      },
      "Test hook: the calling thread's Lagrangian workspace as the last solve in it left it: "
      "bytes held (0 after a solve that grew it past what it keeps: keep_bytes, or half the "
      "instance's values and costs where more), how many active items' rows its first pass "
      "copied (0: none), whether the LP was reduced, and how many items were fixed while the "
      "bracket narrowed (near_items, which the repair scans) and left to the frontiers' LP.");
  m.def(
      "_exact_workspace",
      [] {
        const ExactWorkspaceState held = exact_workspace_state();
        py::dict state;
        state["bytes"] = held.total;
        state["lagrangian_bytes"] = held.lagrangian;
        state["copied_rows"] = held.copied_rows;
        state["keep_bytes"] = kKeepWorkspaceBytes;
        return state;
      },
      "Test hook: bytes the calling thread's exact-solver workspace holds, as the last solve in "
      "it left it, in all and in its Lagrangian part (0 after a solve that grew it past what it "
      "keeps: keep_bytes, or the instance's values and costs where more; its copies given back "
      "first), and how many active items' rows that part holds copies of.");

#ifdef APPORTION_WITH_CUDA
  m.def("built_with_cuda", [] { return true; });
  m.def("cuda_device_count", [] { return cuda_device_count(); },
        "CUDA devices visible; 0 when no driver or device is present.");
#else
  m.def("built_with_cuda", [] { return false; });
  m.def("cuda_device_count", [] { return 0; });
#endif
}
