// Batch entry points of the CPU core. Each solver is written once per instance; run_batch
// launches it over the instances of a batch on the thread pool.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "problem.hpp"
#include "thread_pool.hpp"

namespace apportion {

// Rejects NaN or infinite values among `count` (entries where mask is 0 are ignored; mask may
// be nullptr), naming the first offending flat index (counted from `first_index`).
template <class T>
void check_values(const T* values, const std::uint8_t* mask, std::int64_t count,
                  std::int64_t first_index = 0) {
  for (std::int64_t x = 0; x < count; ++x) {
    if (mask && !mask[x]) continue;
    if (!std::isfinite(static_cast<double>(values[x]))) {
      throw std::invalid_argument("values: entry " + std::to_string(first_index + x) +
                                  " (flat index) is NaN or infinite; values must be finite");
    }
  }
}

// Rejects NaN, infinite or negative costs among `count`, naming the first offending one.
template <class T>
void check_costs(const T* costs, std::int64_t count, std::int64_t first_index = 0) {
  for (std::int64_t x = 0; x < count; ++x) {
    const double w = static_cast<double>(costs[x]);
    if (!std::isfinite(w) || w < 0.0) {
      throw std::invalid_argument("costs: entry " + std::to_string(first_index + x) + " (flat index) is " +
                                  std::to_string(w) + "; costs must be finite and >= 0");
    }
  }
}

// Rejects NaN budgets of a batch.
template <class T>
void check_budgets(const BatchView<T>& p) {
  for (std::int64_t x = 0; x < p.b; ++x) {
    if (std::isnan(p.budgets[x])) {
      throw std::invalid_argument("budget: instance " + std::to_string(x) + " is NaN");
    }
  }
}

// The value and cost checks of check_batch for instance b alone, naming flat indices of the
// batch. Solvers that read every value anyway (lagrangian, exact) run these per instance,
// on all threads, and only where their own pass over the data saw something wrong.
template <class T>
void check_instance(const BatchView<T>& p, std::int64_t b) {
  const std::int64_t nk = p.n * p.k;
  check_values(p.values + b * nk, p.mask ? p.mask + b * nk : nullptr, nk, b * nk);
  check_costs(p.costs + b * p.cost_stride_batch, p.cost_stride_item ? nk : p.k, b * p.cost_stride_batch);
}

// Rejects bad values and costs (see above) and NaN budgets of a batch.
template <class T>
void check_batch(const BatchView<T>& p, std::int64_t cost_elements) {
  check_values(p.values, p.mask, p.b * p.n * p.k);
  check_costs(p.costs, cost_elements);
  check_budgets(p);
}

// Sums of the largest |value| and the largest cost of each item (plain sums: only whether they
// overflow is asked).
template <class T>
void largest_totals(const InstanceView<T>& p, double& value_total, double& cost_total) {
  value_total = cost_total = 0.0;
  for (std::int64_t i = 0; i < p.n; ++i) {
    double largest_value = 0.0, largest_cost = 0.0;
    for (std::int64_t j = 0; j < p.k; ++j) {
      if (!p.allowed(i, j)) continue;
      largest_value = std::max(largest_value, std::fabs(p.value(i, j)));
      largest_cost = std::max(largest_cost, p.cost(i, j));
    }
    value_total += largest_value;
    cost_total += largest_cost;
  }
}

template <class T>
bool value_totals_overflow(const InstanceView<T>& p) {
  double value_total, cost_total;
  largest_totals(p, value_total, cost_total);
  return !std::isfinite(value_total);
}

// Throws std::invalid_argument for an instance whose arithmetic left float64 (a total, a bound
// or a value-per-cost slope overflowed: no status could be trusted), naming what to rescale.
// Called only once a solver saw a non-finite result, so the diagnosis may take its time.
template <class T>
[[noreturn]] void throw_overflow(const InstanceView<T>& p, std::int64_t b) {
  double value_total, cost_total;
  largest_totals(p, value_total, cost_total);
  const std::string where = "instance " + std::to_string(b);
  if (!std::isfinite(value_total)) {
    throw std::invalid_argument("values: the totals of " + where + " overflow float64 (the largest |value| of "
                                "each item sums past 1.8e308); divide the values by a common factor");
  }
  if (!std::isfinite(cost_total) && !(p.budget < 1e300)) {
    throw std::invalid_argument("costs: the totals of " + where + " overflow float64 (the largest cost of each "
                                "item sums past 1.8e308); divide the costs and the budget by a common factor");
  }
  throw std::invalid_argument("costs: the value per unit cost between two options of " + where +
                              " overflows float64 (cost differences too small for the value differences, "
                              "e.g. denormal costs); multiply the costs and the budget by a common factor, "
                              "or divide the values");
}

// Whether every number of a feasible instance's result is finite; the solvers call
// throw_overflow where not.
inline bool finite_result(const InstanceResult& r, double lambda) {
  return std::isfinite(r.value) && std::isfinite(r.cost) && std::isfinite(r.bound) &&
         std::isfinite(r.bound - r.value) && std::isfinite(lambda);
}

// The correctly rounded sum of term(0..count-1), finite terms (math.fsum's algorithm: exact
// partials after Shewchuk, rounded once, ties to even across partials); +-inf when the sum
// overflows. For the few totals that sit within rounding of a budget, where the last rounding
// of a compensated sum could decide feasibility the wrong way.
template <class Term>
double rounded_sum(std::int64_t count, Term&& term) {
  std::vector<double> partials;
  for (std::int64_t t = 0; t < count; ++t) {
    double x = term(t);
    std::size_t used = 0;
    for (double y : partials) {
      if (std::fabs(x) < std::fabs(y)) std::swap(x, y);
      const double hi = x + y, lo = y - (hi - x);
      if (lo != 0.0) partials[used++] = lo;
      x = hi;
    }
    if (!std::isfinite(x)) {  // overflow: the plain sum says which infinity
      double plain = 0.0;
      for (std::int64_t u = 0; u < count; ++u) plain += term(u);
      return plain;
    }
    partials.resize(used);
    partials.push_back(x);
  }
  if (partials.empty()) return 0.0;
  std::size_t n = partials.size() - 1;
  double hi = partials[n], lo = 0.0;
  while (n > 0) {
    const double x = hi, y = partials[--n];
    hi = x + y;
    lo = y - (hi - x);
    if (lo != 0.0) break;
  }
  if (n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0))) {
    const double y = 2.0 * lo, x = hi + y;
    if (y == x - hi) hi = x;
  }
  return hi;
}

// Whether a rounded total lies within two ulps of the budget, where the last rounding could
// decide feasibility the wrong way (false past the range: the ulp is then inf or NaN).
inline bool near_budget(double total, double budget) {
  const double ulp = std::nextafter(budget, HUGE_VAL) - budget;
  return std::fabs(total - budget) <= 2.0 * ulp;
}

// Whether an allocation fits `budget` on its correctly rounded cost total, given its
// compensated sum: its total decides, unless some addition rounded (a carry) and the total lies
// near the budget; then the costs are summed again exactly (exact_total()). `total` receives
// the total decided on.
template <class ExactTotal>
bool fits_budget(const CompensatedSum& sum, double budget, double& total, ExactTotal&& exact_total) {
  total = sum.value();
  if (sum.carry == 0.0 || !near_budget(total, budget)) return total <= budget;
  total = exact_total();
  return total <= budget;
}

// Per-thread scratch of a solver, kept between calls so that small solves do not pay for
// allocation; trimmed after a call that grew it past `kKeepWorkspaceBytes`, or past the keep a
// solver sets for its input (keep_workspace_bytes for the Lagrangian; the exact solver keeps up
// to its whole input, see solve_exact).
constexpr std::size_t kKeepWorkspaceBytes = std::size_t(32) << 20;

// What a thread keeps of a workspace after solving instances of `input_bytes` each (values and
// costs): kKeepWorkspaceBytes, or half an instance's input where that is more. A workspace past
// 32 MiB was dropped after every call and faulted in again by the next: routing 2e6 x 8
// float32 (128 MB of input, a 36.7 MB workspace) took 4328 page faults and 50-56 ms CPU a
// solve; with it kept, 0 faults and 42-44.5 ms (float64, seed 3: 118-123 ms against 111-114).
// What stays is proportionate to what the caller already holds, and the next call's own keep
// trims it (a smaller instance: back to 32 MiB).
inline std::size_t keep_workspace_bytes(std::size_t input_bytes) {
  return std::max(kKeepWorkspaceBytes, input_bytes / 2);
}

// Whether the allocation given by option indices (N) fits p.budget on its correctly rounded
// cost total (fits_budget), with its totals (compensated sums in item order): every finished
// allocation is decided so.
template <class T>
bool option_fits(const InstanceView<T>& p, const std::int32_t* option, double& total_cost, double& total_value) {
  CompensatedSum cost, value;
  for (std::int64_t i = 0; i < p.n; ++i) {
    cost.add(p.cost(i, option[i]));
    value.add(p.value(i, option[i]));
  }
  total_value = value.value();
  return fits_budget(cost, p.budget, total_cost, [&] {
    return rounded_sum(p.n, [&](std::int64_t i) { return p.cost(i, option[i]); });
  });
}

// Not inlined: where a caller's reference to the workspace is known to be the thread_local
// itself, GCC re-derives its address (a __tls_get_addr call in a shared library) at every use
// rather than keep it; in the exact core that was 5,000 calls an instance.
template <class Workspace>
#if defined(__GNUC__)
__attribute__((noinline))
#endif
Workspace& thread_workspace() {
  thread_local Workspace ws;
  return ws;
}

// Whether a workspace has copies it can give back alone (shed_copies): the Lagrangian's and the
// exact solver's copied rows of active items.
template <class Workspace, class = void>
struct ShedsCopies : std::false_type {};
template <class Workspace>
struct ShedsCopies<Workspace, std::void_t<decltype(std::declval<Workspace&>().shed_copies())>> : std::true_type {};

// A workspace past `keep_bytes` gives back its copied rows first, and all of it only where it is
// still past: the copies are sized to fit beside what was held before the solve, and what a
// solve adds after them (the exact solver's core) can pass the keep; dropped whole, the next
// solve on the thread would size its copies the same way and pass it again.
template <class Workspace>
void trim_workspace(Workspace& ws, std::size_t keep_bytes = kKeepWorkspaceBytes) {
  if (ws.bytes() <= keep_bytes) return;
  if constexpr (ShedsCopies<Workspace>::value) ws.shed_copies();
  if (ws.bytes() > keep_bytes) ws = Workspace();
}

// Runs `solve_instance(instance_index, workspace)` over a batch: instances across threads
// when the batch is large enough to share, otherwise one at a time with `threads` offered to
// the instance itself (for its item-parallel phases). Each thread's workspace is trimmed to
// `keep_bytes` after its instances.
template <class Workspace, class Fn>
void run_batch(std::int64_t batch, int threads, Fn&& solve_instance, std::size_t keep_bytes = kKeepWorkspaceBytes) {
  const int pool = ThreadPool::instance().size();
  const int usable = threads <= 0 ? pool : std::min(threads, pool);
  if (batch >= 2 && usable >= 2) {
    // Instance times spread widely (exact: 0.1 to 5 ms on instances of one class and size),
    // so batches go out in small chunks: up to 64 per thread, each a lock and a trim check.
    constexpr int kChunksPerThread = 64;
    parallel_for(batch, 1, usable, [&](std::int64_t begin, std::int64_t end) {
      Workspace& ws = thread_workspace<Workspace>();
      for (std::int64_t b = begin; b < end; ++b) solve_instance(b, ws, 1);
      trim_workspace(ws, keep_bytes);
    }, kChunksPerThread);
  } else {
    Workspace& ws = thread_workspace<Workspace>();
    for (std::int64_t b = 0; b < batch; ++b) solve_instance(b, ws, usable);
    trim_workspace(ws, keep_bytes);
  }
}

// method="lagrangian": LP by break slope, integer primal dropping the fractional increment,
// repair of leftover budget; bound L(lambda*). Checks values and costs itself (check_instance);
// the caller checks the budgets.
template <class T>
void solve_lagrangian(const BatchView<T>& p, const BatchOutput& out, int threads);

// Work limits of method="exact"; past either, the best allocation found is returned with
// status "feasible" and a valid bound.
struct ExactLimits {
  double time_limit = INFINITY;   // seconds per instance
  std::size_t max_states = 0;     // core states kept for back-tracking, over all layers
  std::size_t max_bytes = 0;      // bytes one instance's core states and links may take
                                  // (0: no limit), checked between core layers
};

// method="exact": core enumeration bounded by the LP (see exact.cpp). Checks values and costs
// itself, as solve_lagrangian.
template <class T>
void solve_exact(const BatchView<T>& p, const BatchOutput& out, const ExactLimits& limits, int threads);

// What the calling thread's exact-solver workspace holds between calls (a test hook): bytes in
// all and in its Lagrangian workspace, and how many active rows that one holds copies of.
struct ExactWorkspaceState {
  std::size_t total, lagrangian;
  std::int64_t copied_rows;
};
ExactWorkspaceState exact_workspace_state();

}  // namespace apportion
