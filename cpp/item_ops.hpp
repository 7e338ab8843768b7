// Per-item and per-instance arithmetic shared by the CPU core and the CUDA kernels.
//
// "One algorithm, two launchers": these APPORTION_HD functions work on caller-provided flat
// buffers (no std::vector, no std::sort, no exceptions), so the CPU code in frontier.cpp and
// dp.cpp calls them for every instance it solves and the kernels in cuda/ call the very same
// functions per thread or per block. The CPU tests therefore exercise the arithmetic the GPU
// runs. (From 256 items up the CPU first reduces the LP (solve_lp_reduced) and builds frontiers
// for the items left near the break only; the kernels build every item's, as the CPU does below
// 256 items and whenever the reduction falls back. Both give the same LP.) Layouts follow
// ItemFrontiers: an item's Pareto entries at stride K (option, cost, value), its hull as Pareto
// positions.
#pragma once

#include <cmath>
#include <cstdint>

#include "problem.hpp"

namespace apportion {

// Whether a cost row is already in ascending order.
template <class T>
APPORTION_HD inline bool costs_ascending(std::int64_t k, const T* crow) {
  bool sorted = true;
  for (std::int32_t j = 1; j < k; ++j) sorted &= crow[j - 1] <= crow[j];
  return sorted;
}

// Option indices 0..k-1 of one item ordered by cost, ties by index, for small k (up to
// kMaxSmallSort; longer rows take a comparison sort). Each option's place is its rank: the number of
// options that come before it. That is k^2 comparisons, but branch-free: random costs make an
// insertion sort mispredict on nearly every step.
template <class T>
APPORTION_HD inline void sort_small_by_cost(std::int64_t k, const T* crow, std::int32_t* order) {
  // Tier costs usually come in ascending order already: one predictable pass instead.
  if (costs_ascending(k, crow)) {
    for (std::int32_t j = 0; j < k; ++j) order[j] = j;
    return;
  }
  // A NaN compares false with everything, so two options would share a rank and an entry of
  // `order` stay unwritten: NaN costs (bad input, reported by the caller) rank last instead.
  bool has_nan = false;
  for (std::int32_t j = 0; j < k; ++j) has_nan |= !(crow[j] == crow[j]);
  for (std::int32_t j = 0; j < k; ++j) {
    const double cj = static_cast<double>(crow[j]);
    std::int32_t rank = 0;
    if (!has_nan) {
      for (std::int32_t l = 0; l < k; ++l) {
        const double cl = static_cast<double>(crow[l]);
        rank += static_cast<std::int32_t>((cl < cj) | ((cl == cj) & (l < j)));
      }
    } else {
      const double kj = cj == cj ? cj : INFINITY;
      const bool nan_j = !(cj == cj);
      for (std::int32_t l = 0; l < k; ++l) {
        const double cl = static_cast<double>(crow[l]);
        const double kl = cl == cl ? cl : INFINITY;
        const bool nan_l = !(cl == cl);
        rank += static_cast<std::int32_t>((kl < kj) | ((kl == kj) & ((nan_l < nan_j) | ((nan_l == nan_j) & (l < j)))));
      }
    }
    order[rank] = j;
  }
}

// Rows up to this many options are sorted by rank (sort_small_by_cost); longer ones by a
// comparison sort (std::sort on the CPU, sort_long_by_cost in the kernels).
constexpr std::int64_t kMaxSmallSort = 16;

// Whether option a (cost ca) comes before option b (cost cb): by cost, ties by index, NaN
// costs (bad input the caller reports) last. A strict total order, so any correct sort gives
// the one order sort_small_by_cost gives.
APPORTION_HD inline bool cost_before(double ca, std::int32_t a, double cb, std::int32_t b) {
  const bool nan_a = !(ca == ca), nan_b = !(cb == cb);
  if (nan_a || nan_b) return nan_a == nan_b ? a < b : nan_b;
  return ca < cb || (ca == cb && a < b);
}

// Option indices 0..k-1 ordered as sort_small_by_cost orders them, in O(k log k) and no extra
// memory (a heap sort: the kernels have no std::sort, and k^2 rank comparisons per item would
// dominate a long row).
template <class T>
APPORTION_HD inline void sort_long_by_cost(std::int64_t k, const T* crow, std::int32_t* order) {
  for (std::int32_t j = 0; j < k; ++j) order[j] = j;
  auto before = [crow](std::int32_t a, std::int32_t b) {
    return cost_before(static_cast<double>(crow[a]), a, static_cast<double>(crow[b]), b);
  };
  // Sift order[root] down a max-heap (by `before`) of the first `size` entries.
  auto sift = [&](std::int64_t root, std::int64_t size) {
    const std::int32_t x = order[root];
    for (std::int64_t child = 2 * root + 1; child < size; child = 2 * root + 1) {
      if (child + 1 < size && before(order[child], order[child + 1])) ++child;
      if (!before(x, order[child])) break;
      order[root] = order[child];
      root = child;
    }
    order[root] = x;
  };
  for (std::int64_t root = k / 2 - 1; root >= 0; --root) sift(root, k);
  for (std::int64_t end = k - 1; end > 0; --end) {
    const std::int32_t top = order[0];
    order[0] = order[end];
    order[end] = top;
    sift(0, end);
  }
}

// Option indices of one cost row in cost order (ties by index) for the kernels, whatever k.
template <class T>
APPORTION_HD inline void sort_by_cost_any(std::int64_t k, const T* crow, std::int32_t* order) {
  if (k <= kMaxSmallSort || costs_ascending(k, crow)) {
    sort_small_by_cost(k, crow, order);
  } else {
    sort_long_by_cost(k, crow, order);
  }
}

// One item's Pareto list from its options visited in cost order `order`: keeps an option only
// if it is worth strictly more than every cheaper one (with keep_dominated: every distinct
// cost); at equal cost the most valuable (first by index on ties) stands for the group.
// Writes option index, cost and value of each entry and returns the count (0: no allowed
// option). `order` may alias `opt`: entry c is written only after order[a >= c] was read.
// Branch-free: random values make these comparisons unpredictable.
template <class T>
APPORTION_HD inline std::int32_t pareto_filter(const T* vrow, const T* crow, const std::uint8_t* mrow,
                                               double sign, std::int64_t k, const std::int32_t* order,
                                               bool keep_dominated, std::int32_t* opt, double* cost,
                                               double* value) {
  std::int32_t c = 0;
  double last_cost = 0.0, last_value = -INFINITY;
  for (std::int64_t a = 0; a < k; ++a) {
    const std::int32_t j = order[a];
    const double w = static_cast<double>(crow[j]), v = sign * static_cast<double>(vrow[j]);
    // Only against a kept entry: a sentinel cost (once -1.0) would match a cost equal to it
    // and step c below 0, writing before the item's slot.
    const bool same_cost = (c > 0) & (w == last_cost);
    const bool keep = (mrow == nullptr || mrow[j] != 0) &&
                      (v > last_value || (keep_dominated && !same_cost));
    c -= static_cast<std::int32_t>(keep && same_cost);  // same cost, more value: replace
    opt[c] = j;
    cost[c] = w;
    value[c] = v;
    c += static_cast<std::int32_t>(keep);
    last_cost = keep ? w : last_cost;
    last_value = keep ? v : last_value;
  }
  return c;
}

// below_chord's test where a cross product leaves double's range: the six numbers scaled by
// powers of two first, values and costs each to magnitudes near 1 (exact), then the same
// test. Out of line and cold: the common case stays a few instructions (inlined with this, the
// sample's hulls made routing 1000 x 8 take 5% more time).
APPORTION_HD inline APPORTION_COLD bool below_chord_scaled(double w0, double v0, double w1, double v1,
                                                            double wa, double va) {
  const double v_top = std::fmax(std::fabs(v0), std::fmax(std::fabs(v1), std::fabs(va)));
  const double w_top = std::fmax(std::fabs(w0), std::fmax(std::fabs(w1), std::fabs(wa)));
  // (ilogb of 0 or of a non-finite number is not an exponent: no scaling there)
  const int v_shift = v_top > 0.0 && v_top <= 1.7976931348623157e308 ? -std::ilogb(v_top) : 0;
  const int w_shift = w_top > 0.0 && w_top <= 1.7976931348623157e308 ? -std::ilogb(w_top) : 0;
  const double dv_before = std::ldexp(v1, v_shift) - std::ldexp(v0, v_shift);
  const double dv_after = std::ldexp(va, v_shift) - std::ldexp(v1, v_shift);
  const double dw_before = std::ldexp(w1, w_shift) - std::ldexp(w0, w_shift);
  const double dw_after = std::ldexp(wa, w_shift) - std::ldexp(w1, w_shift);
  return dv_before * dw_after <= dv_after * dw_before;
}

// Whether hull point (w1, v1), after (w0, v0), falls on or below the segment from (w0, v0) to
// the next Pareto entry (wa, va) (costs increasing), and so leaves the upper hull: the one test
// of upper_hull and of the sample's hull steps in frontier.cpp. The slopes are compared by
// cross products. A product past 1.8e308 (values times costs, as 1e300 against 1e10) is inf,
// and one below 2.2e-308 loses bits or becomes 0: inf or 0 on both sides took every such point
// off the hull, and the bound fell far below a feasible value. Only "below" can be wrong, and
// only where rhs is out of [2.2e-308, 1.8e308]: with rhs in it, lhs <= rhs holds of the exact
// products too (a lhs that left the range is inf, never below, or under 2.2e-308). There
// below_chord_scaled decides, which is the same test wherever the products were in range.
// (Four range tests on every call took 1.5% of routing 1000 x 8's instructions.)
APPORTION_HD inline bool below_chord(double w0, double v0, double w1, double v1, double wa, double va) {
  const double lhs = (v1 - v0) * (wa - w1), rhs = (va - v1) * (w1 - w0);
  if (!(lhs <= rhs)) return false;
  if (rhs >= 2.2250738585072014e-308 && rhs <= 1.7976931348623157e308) return true;
  return below_chord_scaled(w0, v0, w1, v1, wa, va);
}

// Upper concave hull over a Pareto list of `c` entries (monotone chain); collinear points are
// dropped so that hull slopes strictly decrease. Writes Pareto positions to h, returns the
// number of hull points.
APPORTION_HD inline std::int32_t upper_hull(const double* cost, const double* value, std::int32_t c,
                                            std::int32_t* h) {
  std::int32_t hc = 0;
  for (std::int32_t a = 0; a < c; ++a) {
    while (hc >= 2 && below_chord(cost[h[hc - 2]], value[h[hc - 2]], cost[h[hc - 1]], value[h[hc - 1]], cost[a],
                                  value[a])) {
      --hc;
    }
    h[hc++] = a;
  }
  return hc;
}

// The hull step of one item from hull point `step` to `step + 1`: cost and value increments
// (slope = dv / dw, strictly positive and strictly falling along the hull).
APPORTION_HD inline void hull_step(const double* cost, const double* value, const std::int32_t* hull,
                                   std::int32_t step, double& dw, double& dv) {
  const std::int32_t a = hull[step], b = hull[step + 1];
  dw = cost[b] - cost[a];
  dv = value[b] - value[a];
}

// One item's term of L(lambda): max over its hull points of value - lambda * cost.
APPORTION_HD inline double item_dual(const double* cost, const double* value, const std::int32_t* hull,
                                     std::int32_t hull_count, double lambda) {
  double best = -INFINITY;
  for (std::int32_t h = 0; h < hull_count; ++h) {
    const std::int32_t q = hull[h];
    const double x = value[q] - lambda * cost[q];
    best = x > best ? x : best;
  }
  return best;
}

// The constant term of L(lambda): lambda * budget, with lambda = 0 and an unbounded budget
// giving 0 rather than 0 * inf.
APPORTION_HD inline double dual_offset(double lambda, double budget) {
  return lambda > 0.0 ? lambda * budget : 0.0;
}

// Whether a shadow price lies below the normal range, where the LP's bound is taken on the raw
// options as well (RawItemDual).
APPORTION_HD inline bool lambda_below_normal(double lambda) { return lambda > 0.0 && lambda < 0x1p-1022; }

// One item's term of L(lambda) taken over options offered one at a time (every allowed option,
// or its Pareto entries: a dominated option's rounded term is never the larger), with what its
// rounding may hide. For a shadow price below the normal range, where the rounded terms of the
// hull's points need not be the largest (raw_dual_bound in frontier.cpp, the CUDA Lagrangian).
struct RawItemDual {
  double best = -INFINITY, reach = 0.0;
  APPORTION_HD void offer(double w, double v, double lambda) {
    const double product = lambda * w, term = v - product;
    best = term > best ? term : best;
    const double size = std::fabs(product) + std::fabs(term);
    reach = size > reach ? size : reach;
  }
  // A term errs by half an ulp of the product and of the difference, and by 2^-1075 where the
  // product is subnormal; the best term by at most the largest error of its item's.
  APPORTION_HD double rounding() const { return kDoubleEpsilon * reach + 0x1p-1074; }
};

// L(lambda) from its items' terms (their sum, rounded once, and their roundings' sum), plus
// what rounding may hide: a bound on the optimum at this lambda >= 0.
APPORTION_HD inline double raw_dual_total(double items, double items_rounding, double lambda, double budget) {
  const double offset = dual_offset(lambda, budget), total = items + offset;
  const double rounding = items_rounding + kDoubleEpsilon * (std::fabs(items) + std::fabs(offset) + std::fabs(total)) + 0x1p-1074;
  return total + 2.0 * rounding;  // (twice: the sums' own rounding, loosely)
}

// Totals of the allocation given by Pareto positions, summed (compensated) in item order.
APPORTION_HD inline void allocation_totals_flat(const double* cost, const double* value, std::int64_t n,
                                                std::int64_t k, const std::int32_t* position,
                                                double& total_cost, double& total_value) {
  CompensatedSum tc, tv;
  for (std::int64_t i = 0; i < n; ++i) {
    tc.add(cost[i * k + position[i]]);
    tv.add(value[i * k + position[i]]);
  }
  total_cost = tc.value();
  total_value = tv.value();
}

// restore_budget_flat's default check of a total over the budget: it is over.
struct TrustTotal {
  APPORTION_HD bool operator()(const std::int32_t*, double&) const { return true; }
};

// Steps items down their Pareto lists, cheapest value loss per unit cost first, until the
// allocation summed in item order fits the budget (rounding in running sums can leave it a
// few ulps over). Returns false when even the cheapest allocation does not fit.
// `over(position, total_cost)` confirms a compensated total over the budget, and may instead
// find the allocation within it (the CPU sums it again exactly where the total lies within
// rounding of the budget, and puts that total in total_cost).
template <class Over = TrustTotal>
APPORTION_HD inline bool restore_budget_flat(const double* cost, const double* value, std::int64_t n,
                                             std::int64_t k, std::int32_t* position, double budget,
                                             double& total_cost, double& total_value, Over over = Over{}) {
  allocation_totals_flat(cost, value, n, k, position, total_cost, total_value);
  while (total_cost > budget && over(position, total_cost)) {
    std::int64_t worst = -1;
    double best_ratio = INFINITY;
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int32_t p = position[i];
      if (p == 0) continue;
      const std::int64_t at = i * k + p;
      const double ratio = (value[at] - value[at - 1]) / (cost[at] - cost[at - 1]);
      if (worst < 0 || ratio < best_ratio) {  // (an infinite ratio too: see restore_item_options)
        best_ratio = ratio;
        worst = i;
      }
    }
    if (worst < 0) return false;
    --position[worst];
    allocation_totals_flat(cost, value, n, k, position, total_cost, total_value);
  }
  return true;
}

// The DP cell update for one Pareto option: a candidate `prev + v` replaces the cell when it
// is strictly better (so the first option wins ties, whatever the loop order), recording the
// option's tag. Branch-free so that the CPU row loop vectorises.
template <class Back>
APPORTION_HD inline void dp_relax(double prev, double v, Back tag, double& next, Back& back) {
  const double cand = prev + v;
  const bool better = cand > next;
  next = better ? cand : next;
  back = better ? tag : back;
}

// The reduced cost (grid cells above the item's cheapest entry) of Pareto entry p.
APPORTION_HD inline std::int64_t dp_shift(const double* cost, std::int32_t p) {
  return static_cast<std::int64_t>(cost[p] - cost[0]);
}

// Recovers Pareto positions of the DP optimum at cell c from back-pointer rows (N, grid).
template <class Back>
APPORTION_HD inline void dp_backtrack_flat(const double* cost, std::int64_t n, std::int64_t k,
                                           const Back* back, std::int64_t grid, std::int64_t c,
                                           std::int32_t* position) {
  for (std::int64_t i = n - 1; i >= 0; --i) {
    const std::int32_t p = back[i * grid + c];
    position[i] = p;
    c -= dp_shift(cost + i * k, p);
  }
}

}  // namespace apportion
