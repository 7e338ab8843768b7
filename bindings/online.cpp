// Bindings of the online allocator (dual mirror descent), the stream simulator and the
// offline mirror solver. The Python layer (python/apportion/online.py) checks shapes and
// names arguments; these checks are the second line of defence. The GIL is released in every
// native call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <pthread.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.hpp"
#include "../cpp/online.hpp"

namespace py = pybind11;
using namespace apportion;
using bindings::DArray;
using bindings::NativeCall;
using bindings::require;
using bindings::is_dtype;
using bindings::same_dtype;

namespace {


std::vector<double> to_vector(const DArray& a, const char* name) {
  require(a.ndim() == 1, std::string(name) + ": expected a 1-d array");
  return std::vector<double>(a.data(), a.data() + a.size());
}

DArray from_vector(const std::vector<double>& v) {
  DArray out(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

Mirror to_mirror(int mirror) {
  require(mirror == kEuclidean || mirror == kEntropy, "mirror: expected 0 (euclidean) or 1 (entropy)");
  return static_cast<Mirror>(mirror);
}

// The allocator configuration from its Python-side arguments (checked).
DmdConfig make_config(const DArray& budget, std::int64_t horizon, int mirror, double eta,
                      bool skip_allowed, const DArray& initial_prices) {
  DmdConfig cfg;
  cfg.budget = to_vector(budget, "budget");
  cfg.r = static_cast<std::int64_t>(cfg.budget.size());
  cfg.horizon = horizon;
  cfg.mirror = to_mirror(mirror);
  cfg.eta = eta;
  cfg.skip_allowed = skip_allowed;
  cfg.m0 = to_vector(initial_prices, "initial_prices");
  cfg.finalise();
  return cfg;
}

// How many fork()s made this process, counted in the child (its own and its parents'): an
// allocator's lock taken before the count changed belongs to a thread the child does not have.
std::atomic<std::uint64_t> g_fork_generation{0};
std::mutex g_adopt_mutex;  // one allocator adopted at a time (OnlineCore::lock)
const bool g_fork_counted = pthread_atfork(nullptr, nullptr, [] { g_fork_generation.fetch_add(1); }) == 0;

// One allocator: configuration, state, and a lock so that calls from several Python threads
// (the GIL is released while deciding) do not interleave.
class OnlineCore {
 public:
  OnlineCore(const DArray& budget, std::int64_t horizon, int mirror, double eta, bool skip_allowed,
             const DArray& initial_prices)
      : cfg_(make_config(budget, horizon, mirror, eta, skip_allowed, initial_prices)) {
    st_.reset(cfg_);
  }

  // Shapes: values (K,) and costs of K*R entries for one request; values (M,K) and costs of
  // K*R (shared) or M*K*R entries for M requests. Returns the played options and the index of
  // a stalled request (-1: none; the state is then as before the call).
  std::int64_t decide_into(const DArray& values, const DArray& costs, std::int64_t m, std::int64_t k,
                           std::int64_t* out) {
    const std::int64_t r = cfg_.r;
    require(k >= 1, "values: expected at least one option (K >= 1)");
    std::int64_t stride;
    if (costs.size() == k * r) {
      stride = 0;
    } else if (costs.size() == m * k * r) {
      stride = k * r;
    } else {
      throw std::invalid_argument("costs: expected K*R or M*K*R entries for values of shape (M,K)");
    }
    const double* v = values.data();
    const double* w = costs.data();
    NativeCall native;
    const auto held = lock();
    return dmd_decide_many(cfg_, st_, v, w, stride, static_cast<const std::uint8_t*>(nullptr), m, k, out);
  }

  std::int64_t decide_one(const DArray& values, const DArray& costs) {
    require(values.ndim() == 1, "values: expected shape (K,)");
    std::int64_t out = kStalled;
    const std::int64_t stalled = decide_into(values, costs, 1, values.shape(0), &out);
    return stalled >= 0 ? kStalled : out;
  }

  py::tuple decide_batch(const DArray& values, const DArray& costs) {
    require(values.ndim() == 2, "values: expected shape (M,K)");
    const std::int64_t m = values.shape(0), k = values.shape(1);
    py::array_t<std::int64_t> out(m);
    const std::int64_t stalled = decide_into(values, costs, m, k, out.mutable_data());
    return py::make_tuple(out, stalled);
  }

  DArray prices() {
    const auto held = lock();
    return from_vector(st_.mu);
  }
  DArray spent() {
    const auto held = lock();
    std::vector<double> s(cfg_.r);
    for (std::int64_t q = 0; q < cfg_.r; ++q) s[q] = st_.spent_sum[q] + st_.spent_carry[q];
    return from_vector(s);
  }
  DArray remaining() {
    const auto held = lock();
    std::vector<double> s(cfg_.r);
    dmd_remaining(cfg_.budget.data(), st_.spent_sum.data(), st_.spent_carry.data(), cfg_.r, s.data());
    return from_vector(s);
  }
  std::int64_t steps() {
    const auto held = lock();
    return st_.steps;
  }
  void reset() {
    const auto held = lock();
    st_.reset(cfg_);
  }

  // (normalised prices m, spent sums, spent carries, steps, cost floor): exact doubles, so that
  // a restored allocator continues bit for bit.
  py::tuple get_state() {
    const auto held = lock();
    return py::make_tuple(from_vector(st_.m), from_vector(st_.spent_sum), from_vector(st_.spent_carry),
                          st_.steps, from_vector(st_.floor));
  }
  void set_state(const DArray& m, const DArray& spent_sum, const DArray& spent_carry, std::int64_t steps,
                 const DArray& floor) {
    const auto held = lock();
    DmdState s;
    s.m = to_vector(m, "state.m");
    s.spent_sum = to_vector(spent_sum, "state.spent_sum");
    s.spent_carry = to_vector(spent_carry, "state.spent_carry");
    s.floor = to_vector(floor, "state.floor");
    const auto r = static_cast<std::size_t>(cfg_.r);
    require(s.m.size() == r && s.spent_sum.size() == r && s.spent_carry.size() == r && s.floor.size() == r,
            "state: expected one entry per resource");
    for (double f : s.floor) require(f >= 0.0, "state: the cost floor must be >= 0 (inf: unknown)");
    for (std::size_t q = 0; q < r; ++q) {  // (a spent total of -1000 let it spend past the budget)
      require(std::isfinite(s.spent_sum[q]) && std::isfinite(s.spent_carry[q]) &&
                  s.spent_sum[q] + s.spent_carry[q] >= 0.0,
              "state: the spent totals must be finite and >= 0");
    }
    require(steps >= 0, "state: steps must be >= 0");
    s.steps = steps;
    s.mu.assign(r, 0.0);
    for (std::size_t q = 0; q < r; ++q) {
      require(std::isfinite(s.m[q]) && s.m[q] >= 0.0, "state: prices must be finite and >= 0");
      s.mu[q] = cfg_.inv_rho[q] == 0.0 ? 0.0 : s.m[q] * cfg_.inv_rho[q];
    }
    st_ = std::move(s);
  }

 private:
  // The allocator's lock. In a child of fork(), a lock that a thread of the parent held at the
  // fork stays held: no thread of the child releases it, and every call here hung. The child
  // takes a fresh mutex (the held one is left, never destroyed locked); where it was held, that
  // thread may have been writing the state, which is then refused rather than read.
  std::unique_lock<std::mutex> lock() {
    const std::uint64_t now = g_fork_generation.load(std::memory_order_acquire);
    if (now != generation_.load(std::memory_order_acquire)) {
      std::lock_guard<std::mutex> adopting(g_adopt_mutex);
      if (now != generation_.load(std::memory_order_relaxed)) {
        if (mutex_->try_lock()) {
          mutex_->unlock();
        } else {
          (void)mutex_.release();
          mutex_ = std::make_unique<std::mutex>();
          torn_ = true;
        }
        generation_.store(now, std::memory_order_release);
      }
    }
    std::unique_lock<std::mutex> held(*mutex_);
    if (torn_) {
      throw std::runtime_error("OnlineAllocator: this process was forked while another thread was inside "
                               "this allocator, whose state here may be half written; copy or pickle it "
                               "before forking, or build a new one");
    }
    return held;
  }

  DmdConfig cfg_;
  DmdState st_;
  std::unique_ptr<std::mutex> mutex_ = std::make_unique<std::mutex>();
  std::atomic<std::uint64_t> generation_{g_fork_generation.load()};
  bool torn_ = false;
};


template <class T>
py::tuple simulate_typed(const DmdConfig& cfg, const py::array& values, const py::array& costs,
                         bool record_choices, int threads) {
  const std::int64_t s = values.shape(0), t = values.shape(1), k = values.shape(2), r = cfg.r;
  const std::int64_t cs_n = costs.shape(0), ct_n = costs.shape(1);
  require((cs_n == 1 || cs_n == s) && (ct_n == 1 || ct_n == t) && costs.shape(2) == k &&
              costs.shape(3) == r,
          "costs: expected shape (S|1, T|1, K, R) against values (S,T,K)");
  const std::int64_t ct = ct_n == 1 ? 0 : k * r;
  const std::int64_t cs = cs_n == 1 ? 0 : ct_n * k * r;
  py::array_t<std::int64_t> choice = record_choices ? py::array_t<std::int64_t>({s, t})
                                                    : py::array_t<std::int64_t>(std::vector<py::ssize_t>{0, 0});
  py::array_t<double> value(s), spent({s, r}), prices({s, r});
  py::array_t<std::int64_t> stalled(s);
  SimulationOutput o;
  o.choice = record_choices ? choice.mutable_data() : nullptr;
  o.value = value.mutable_data();
  o.spent = spent.mutable_data();
  o.prices = prices.mutable_data();
  o.stalled = stalled.mutable_data();
  const T* v = static_cast<const T*>(values.data());
  const T* w = static_cast<const T*>(costs.data());
  {
    NativeCall native;
    dmd_simulate(cfg, v, w, cs, ct, s, t, k, o, threads);
  }
  return py::make_tuple(record_choices ? py::object(choice) : py::object(py::none()), value, spent,
                        prices, stalled);
}

template <class T>
py::tuple mirror_typed(const py::array& values, const py::array& costs, const DArray& budgets,
                       const py::object& mask_obj, double value_sign, std::int64_t max_iter, double tol,
                       int threads) {
  const std::int64_t b = values.shape(0), n = values.shape(1), k = values.shape(2), r = costs.shape(3);
  const std::int64_t cb_n = costs.shape(0), ci_n = costs.shape(1);
  require((cb_n == 1 || cb_n == b) && (ci_n == 1 || ci_n == n) && costs.shape(2) == k && r >= 1,
          "costs: expected shape (B|1, N|1, K, R) against values (B,N,K)");
  require(budgets.ndim() == 2 && budgets.shape(0) == b && budgets.shape(1) == r,
          "budget: expected shape (B,R)");
  const std::int64_t ci = ci_n == 1 ? 0 : k * r;
  const std::int64_t cb = cb_n == 1 ? 0 : ci_n * k * r;
  const std::uint8_t* mask = nullptr;
  py::array mask_arr;
  if (!mask_obj.is_none()) {
    mask_arr = mask_obj.cast<py::array>();
    require(mask_arr.ndim() == 3 && mask_arr.shape(0) == b && mask_arr.shape(1) == n && mask_arr.shape(2) == k,
            "mask: expected the shape of values (B,N,K)");
    require(mask_arr.itemsize() == 1 && (mask_arr.flags() & py::array::c_style) != 0,
            "mask: expected a C-contiguous bool or uint8 array");
    mask = static_cast<const std::uint8_t*>(mask_arr.data());
  }
  require(max_iter >= 1, "max_iter: expected an integer >= 1");
  py::array_t<std::int64_t> choice({b, n}), iterations(b);
  py::array_t<double> value(b), cost({b, r}), bound(b), prices({b, r}), min_cost({b, r});
  py::array_t<std::int8_t> status(b);
  MirrorOutput o;
  o.choice = choice.mutable_data();
  o.value = value.mutable_data();
  o.cost = cost.mutable_data();
  o.bound = bound.mutable_data();
  o.prices = prices.mutable_data();
  o.min_cost = min_cost.mutable_data();
  o.iterations = iterations.mutable_data();
  o.status = status.mutable_data();
  const T* v = static_cast<const T*>(values.data());
  const T* w = static_cast<const T*>(costs.data());
  const double* bud = budgets.data();
  {
    NativeCall native;
    solve_mirror(v, w, cb, ci, mask, bud, b, n, k, r, value_sign, max_iter, tol, o, threads);
  }
  return py::make_tuple(choice, value, cost, bound, prices, min_cost, status, iterations);
}

void check_same_dtype(const py::array& values, const py::array& costs) {
  require(same_dtype(values.dtype(), costs.dtype()), "values and costs must share one dtype");
  require((values.flags() & py::array::c_style) != 0 && (costs.flags() & py::array::c_style) != 0,
          "values, costs: expected C-contiguous arrays (internal error in the Python layer)");
}

}  // namespace

void bind_online(py::module_& m) {
  py::class_<OnlineCore>(m, "OnlineCore",
                         "State of one dual-mirror-descent allocator (use apportion.OnlineAllocator).")
      .def(py::init<const DArray&, std::int64_t, int, double, bool, const DArray&>(), py::arg("budget"),
           py::arg("horizon"), py::arg("mirror"), py::arg("eta"), py::arg("skip_allowed"),
           py::arg("initial_prices"))
      .def("decide_one", &OnlineCore::decide_one, py::arg("values"), py::arg("costs"),
           "One request: values (K,), costs K*R entries. Returns the option, -1 (skip) or -2 (stalled).")
      .def("decide_batch", &OnlineCore::decide_batch, py::arg("values"), py::arg("costs"),
           "M requests in order: values (M,K), costs K*R or M*K*R entries. Returns (choices, stalled).")
      .def_property_readonly("prices", &OnlineCore::prices)
      .def_property_readonly("spent", &OnlineCore::spent)
      .def_property_readonly("remaining", &OnlineCore::remaining)
      .def_property_readonly("steps", &OnlineCore::steps)
      .def("reset", &OnlineCore::reset)
      .def("get_state", &OnlineCore::get_state)
      .def("set_state", &OnlineCore::set_state, py::arg("m"), py::arg("spent_sum"), py::arg("spent_carry"),
           py::arg("steps"), py::arg("floor"));

  m.def(
      "simulate_online",
      [](py::array values, py::array costs, const DArray& budget, std::int64_t horizon, int mirror,
         double eta, bool skip_allowed, const DArray& initial_prices, bool record_choices, int threads) {
        const DmdConfig cfg = make_config(budget, horizon, mirror, eta, skip_allowed, initial_prices);
        require(values.ndim() == 3, "values: expected a 3-d array (S,T,K)");
        require(costs.ndim() == 4, "costs: expected a 4-d array (S|1, T|1, K, R)");
        require(values.shape(0) > 0 && values.shape(1) > 0 && values.shape(2) > 0,
                "values: S, T and K must all be positive");
        check_same_dtype(values, costs);
        if (is_dtype<double>(values.dtype())) {
          return simulate_typed<double>(cfg, values, costs, record_choices, threads);
        }
        if (is_dtype<float>(values.dtype())) {
          return simulate_typed<float>(cfg, values, costs, record_choices, threads);
        }
        throw py::type_error("values: expected float32 or float64");
      },
      py::arg("values"), py::arg("costs"), py::arg("budget"), py::arg("horizon"), py::arg("mirror"),
      py::arg("eta"), py::arg("skip_allowed"), py::arg("initial_prices"), py::arg("record_choices"),
      py::arg("threads"),
      "S streams of T requests by dual mirror descent. Returns (choice|None, value, spent, prices, stalled).");

  m.def(
      "mirror",
      [](py::array values, py::array costs, const DArray& budgets, py::object mask, double value_sign,
         std::int64_t max_iter, double tol, int threads) {
        require(values.ndim() == 3, "values: expected a 3-d array (B,N,K)");
        require(costs.ndim() == 4, "costs: expected a 4-d array (B|1, N|1, K, R)");
        require(values.shape(0) > 0 && values.shape(1) > 0 && values.shape(2) > 0,
                "values: B, N and K must all be positive");
        check_same_dtype(values, costs);
        if (is_dtype<double>(values.dtype())) {
          return mirror_typed<double>(values, costs, budgets, mask, value_sign, max_iter, tol, threads);
        }
        if (is_dtype<float>(values.dtype())) {
          return mirror_typed<float>(values, costs, budgets, mask, value_sign, max_iter, tol, threads);
        }
        throw py::type_error("values: expected float32 or float64");
      },
      py::arg("values"), py::arg("costs"), py::arg("budgets"), py::arg("mask"), py::arg("value_sign"),
      py::arg("max_iter"), py::arg("tol"), py::arg("threads"),
      "Offline dual-subgradient solve for R resources. Returns (choice, value, cost, bound, prices, "
      "min_cost, status, iterations).");
}
