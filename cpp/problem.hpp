// Problem views and per-instance results shared by every solver.
//
// A batch is values (B,N,K) with row-major layout, costs addressed through strides so that
// shared tier costs (K,) or per-item costs (N,K) need no copy (stride 0 broadcasts), an
// optional mask (B,N,K) of allowed options, and one budget per instance. Inputs are read as
// T (float or double); all arithmetic is in double.
#pragma once

#include <cstdint>
#include <limits>

#if defined(__CUDACC__)
#define APPORTION_HD __host__ __device__
#else
#define APPORTION_HD
#endif

// A rarely taken path kept out of line, so that its caller's common case stays small.
#if defined(__CUDACC__)
#define APPORTION_COLD __noinline__
#elif defined(__GNUC__) || defined(__clang__)
#define APPORTION_COLD __attribute__((noinline, cold))
#else
#define APPORTION_COLD
#endif

namespace apportion {

// kUnknown: no feasible allocation was found and infeasibility was not proven either (only
// for a method that cannot decide feasibility, such as the multi-resource mirror solver).
// kStoppedByTime, kStoppedByStates, kStoppedByBytes: feasible, as kFeasible, where the exact
// core stopped at its time_limit, max_states or max_bytes before a proof (Python reports
// "feasible" and the limit).
enum Status : std::int8_t {
  kOptimal = 0, kFeasible = 1, kInfeasible = 2, kUnknown = 3,
  kStoppedByTime = 4, kStoppedByStates = 5, kStoppedByBytes = 6
};

// The most items (N) and options per item (K) an instance may have. The CPU solvers keep item
// indices in std::int32_t (active items, hull increments, the exact core's candidates), and
// every solver keeps option indices and Pareto positions in std::int32_t: past N they would
// wrap; K stays at the 2^30 the bindings always took, below int32 with room to spare. The
// bindings check both before any solver runs (the Python layer first, naming the argument).
constexpr std::int64_t kMaxItems = std::numeric_limits<std::int32_t>::max();  // 2^31 - 1
constexpr std::int64_t kMaxOptions = std::int64_t(1) << 30;

template <class T>
struct InstanceView {
  const T* values = nullptr;          // (N,K) row-major
  const T* costs = nullptr;           // element (i,k) at costs[i * cost_stride_item + k]
  std::int64_t cost_stride_item = 0;  // K, or 0 when all items share the tier costs
  const std::uint8_t* mask = nullptr; // (N,K) or nullptr: every option allowed
  std::int64_t n = 0, k = 0;
  double budget = 0.0;
  double value_sign = 1.0;            // -1 turns a loss into a value to maximise

  APPORTION_HD double value(std::int64_t i, std::int64_t j) const {
    return value_sign * static_cast<double>(values[i * k + j]);
  }
  APPORTION_HD double cost(std::int64_t i, std::int64_t j) const {
    return static_cast<double>(costs[i * cost_stride_item + j]);
  }
  APPORTION_HD bool allowed(std::int64_t i, std::int64_t j) const {
    return mask == nullptr || mask[i * k + j] != 0;
  }
};

template <class T>
struct BatchView {
  const T* values = nullptr;
  const T* costs = nullptr;
  std::int64_t cost_stride_batch = 0;  // N*K, K or 0
  std::int64_t cost_stride_item = 0;   // K or 0
  const std::uint8_t* mask = nullptr;  // (B,N,K) or nullptr
  const double* budgets = nullptr;     // (B,)
  std::int64_t b = 0, n = 0, k = 0;
  double value_sign = 1.0;

  APPORTION_HD InstanceView<T> instance(std::int64_t idx) const {
    InstanceView<T> v;
    v.values = values + idx * n * k;
    v.costs = costs + idx * cost_stride_batch;
    v.cost_stride_item = cost_stride_item;
    v.mask = mask ? mask + idx * n * k : nullptr;
    v.n = n;
    v.k = k;
    v.budget = budgets[idx];
    v.value_sign = value_sign;
    return v;
  }
};

// What a solver reports for one instance; the allocation is written beside it.
struct InstanceResult {
  double value = 0.0;         // sum of chosen values (in the maximisation sense)
  double cost = 0.0;          // sum of chosen costs
  double bound = 0.0;         // upper bound on the optimum (NaN when infeasible)
  double shadow_price = 0.0;  // lambda*: value of one more unit of budget (NaN when infeasible)
  double min_budget = 0.0;    // cost of the cheapest allocation
  std::int8_t status = kFeasible;
};

// Solver outputs for a batch: arrays the caller owns, each indexed by instance.
struct BatchOutput {
  std::int64_t* choice = nullptr;  // (B,N)
  double* value = nullptr;
  double* cost = nullptr;
  double* bound = nullptr;
  double* shadow_price = nullptr;
  double* min_budget = nullptr;
  std::int8_t* status = nullptr;

  APPORTION_HD void store(std::int64_t idx, const InstanceResult& r) const {
    value[idx] = r.value;
    cost[idx] = r.cost;
    bound[idx] = r.bound;
    shadow_price[idx] = r.shadow_price;
    min_budget[idx] = r.min_budget;
    status[idx] = r.status;
  }
};

// One step of a compensated sum (Knuth's TwoSum): x into the running sum, its rounding error
// into carry. S is double, or a vector of doubles whose lanes are separate sums.
template <class S>
APPORTION_HD inline void two_sum_add(S& sum, S& carry, S x) {
  const S t = sum + x;
  const S x_part = t - sum;
  carry += (sum - (t - x_part)) + (x - x_part);
  sum = t;
}

// Compensated sum (Knuth's TwoSum per addition): totals and feasibility tests are decided on
// (nearly) exactly rounded sums, not on an order-dependent running sum. Branch-free.
struct CompensatedSum {
  double sum = 0.0, carry = 0.0;
  APPORTION_HD void add(double x) { two_sum_add(sum, carry, x); }
  APPORTION_HD void add(const CompensatedSum& other) {  // another sum's total, carry and all
    add(other.sum);
    carry += other.carry;
  }
  // An overflowed sum stays +-inf (its carry is NaN then).
  APPORTION_HD double value() const { return sum - sum == 0.0 ? sum + carry : sum; }
};

// Lane l of sums kept side by side in vectors by two_sum_add, as a CompensatedSum.
template <class S>
inline CompensatedSum lane_sum(const S& sum, const S& carry, int l) {
  CompensatedSum c;
  c.sum = sum[l];
  c.carry = carry[l];
  return c;
}

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// "Optimal" is claimed when the bound exceeds the value by no more than the rounding their
// compensated sums can carry: kOptimalityUlps units in the last place of the largest magnitude
// among the value, the bound and `scale` (a term that cancels inside them, such as
// lambda * budget in L(lambda)). No absolute floor: values of 1e-300 are solved as finely as
// values of 1, and a large common offset widens the slack only by its own rounding.
constexpr double kOptimalityUlps = 64.0;
constexpr double kDoubleEpsilon = 2.220446049250313e-16;  // 2^-52

APPORTION_HD inline double optimality_slack(double value, double bound, double scale = 0.0) {
  double m = value < 0 ? -value : value;
  const double b = bound < 0 ? -bound : bound, s = scale < 0 ? -scale : scale;
  m = b > m ? b : m;
  m = s > m ? s : m;
  return kOptimalityUlps * kDoubleEpsilon * m;
}

}  // namespace apportion
