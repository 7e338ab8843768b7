#include "frontier.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cpu_dispatch.hpp"
#include "float_pick.hpp"
#include "item_ops.hpp"
#include "solvers.hpp"
#include "thread_pool.hpp"

namespace apportion {

namespace {

// Option indices 0..k-1 of a cost row ordered by cost (ties by index) into `order`; long rows
// by std::sort, which beats the kernels' heap sort (sort_by_cost_any) on the CPU.
template <class T>
void sort_by_cost(std::int64_t k, const T* crow, std::int32_t* order) {
  if (k <= kMaxSmallSort || costs_ascending(k, crow)) {  // the small-row sort shared with the kernels
    sort_small_by_cost(k, crow, order);
    return;
  }
  for (std::int32_t j = 0; j < k; ++j) order[j] = j;
  std::sort(order, order + k, [&](std::int32_t a, std::int32_t b) {
    return cost_before(static_cast<double>(crow[a]), a, static_cast<double>(crow[b]), b);
  });
}

// Whether one option's input is valid: its value finite where it is allowed, its cost finite and
// >= 0. Without && or ||: the row loops that ask it stay branch-free.
APPORTION_INLINE bool option_input_ok(bool allowed, double w, double v) {
  const bool finite_v = std::isfinite(v), finite_w = std::isfinite(w);  // (no call inside the &s)
  return (!allowed | finite_v) & finite_w & (w >= 0.0);
}

[[noreturn]] void throw_no_option(std::int64_t i) {
  throw std::invalid_argument("mask: item " + std::to_string(i) + " has no allowed option; allow at least one per item");
}

// Builds item i's Pareto list and hull into frontier slot `slot`, visiting its options in cost
// order `order`.
template <class T>
void build_item(const InstanceView<T>& p, ItemFrontiers& f, std::int64_t i, std::int64_t slot,
                const std::int32_t* order, bool keep_dominated) {
  const std::int64_t k = p.k, base = i * k, at = slot * k;
  std::int32_t* opt = &f.option[at];
  double* cost = &f.cost[at];
  double* value = &f.value[at];
  // Pareto filter and hull: the arithmetic shared with the kernels (item_ops.hpp).
  const std::int32_t c = pareto_filter(p.values + base, p.costs + i * p.cost_stride_item,
                                       p.mask ? p.mask + base : nullptr, p.value_sign, k, order,
                                       keep_dominated, opt, cost, value);
  if (c == 0) throw_no_option(i);
  f.count[slot] = c;
  f.hull_count[slot] = upper_hull(cost, value, c, &f.hull[at]);
}

// Sizes f for n items of k options.
void size_frontiers(ItemFrontiers& f, std::int64_t n, std::int64_t k) {
  f.n = n;
  f.k = k;
  const std::size_t nk = static_cast<std::size_t>(n * k);
  if (f.option.size() < nk) {
    f.option.resize(nk);
    f.cost.resize(nk);
    f.value.resize(nk);
    f.hull.resize(nk);
  }
  if (f.count.size() < static_cast<std::size_t>(n)) {
    f.count.resize(n);
    f.hull_count.resize(n);
  }
}

// Builds the frontiers of items[0..count) into slots[0..count) (slots 0..count) when slots is
// nullptr) of frontiers already sized, sorting each item's costs (once for all when the items
// share them).
template <class T>
void build_item_list(const InstanceView<T>& p, ItemFrontiers& f, const std::int32_t* items,
                     const std::int32_t* slots, std::int64_t count) {
  std::int32_t order[kMaxSmallSort];
  std::vector<std::int32_t> long_order;
  std::int32_t* row = p.k <= kMaxSmallSort ? order : (long_order.resize(p.k), long_order.data());
  const bool shared_costs = p.cost_stride_item == 0;
  if (shared_costs) sort_by_cost(p.k, p.costs, row);
  for (std::int64_t s = 0; s < count; ++s) {
    const std::int64_t i = items[s];
    if (!shared_costs) sort_by_cost(p.k, p.costs + i * p.cost_stride_item, row);
    build_item(p, f, i, slots ? slots[s] : s, row, false);
  }
}

}  // namespace

template <class T>
void build_frontiers(const InstanceView<T>& p, ItemFrontiers& f, int threads, bool keep_dominated) {
  size_frontiers(f, p.n, p.k);
  // Shared tier costs have one cost order for all items: sort it once.
  const bool shared_costs = p.cost_stride_item == 0;
  std::vector<std::int32_t> shared_order;
  if (shared_costs) {
    shared_order.resize(p.k);
    sort_by_cost(p.k, p.costs, shared_order.data());
  }
  auto range = [&](std::int64_t begin, std::int64_t end) {
    std::vector<std::int32_t> order;
    if (!shared_costs) order.resize(p.k);
    for (std::int64_t i = begin; i < end; ++i) {
      if (!shared_costs) sort_by_cost(p.k, p.costs + i * p.cost_stride_item, order.data());
      build_item(p, f, i, i, shared_costs ? shared_order.data() : order.data(), keep_dominated);
    }
  };
  // Threads pay off only for large instances; each chunk owns its items' slots.
  if (threads > 1 && p.n * p.k >= (1 << 16)) {
    parallel_for(p.n, 1024, threads, range);
  } else {
    range(0, p.n);
  }
}

template void build_frontiers<float>(const InstanceView<float>&, ItemFrontiers&, int, bool);
template void build_frontiers<double>(const InstanceView<double>&, ItemFrontiers&, int, bool);

namespace {

// sample_hull_steps' arithmetic: item i's hull steps written to out[0..), returning their count,
// with the cost of its cheapest hull point in `cheapest` (NaN: no allowed option). With kCheck,
// it also does the sample's input checks in the same pass over the row: valid &= every allowed
// value finite and every cost finite and >= 0; ascending &= the costs ascend in the visiting
// order. (Fused: a separate pass over the sampled rows took 6k instructions of a routing
// 1000 x 8 solve.)
template <bool kCheck, class T>
APPORTION_INLINE std::int32_t hull_steps_into(const InstanceView<T>& p, std::int64_t i, const std::int32_t* order,
                                              double* stack_cost, double* stack_value, HullIncrement* out,
                                              double& cheapest, bool& valid, bool& ascending) {
  const std::int64_t k = p.k;
  const T* vrow = p.values + i * k;
  const T* crow = p.costs + i * p.cost_stride_item;
  const std::uint8_t* mrow = p.mask ? p.mask + i * k : nullptr;
  const double sign = p.value_sign;
  std::int32_t hc = 0;  // hull points on the stack
  auto join_hull = [&](double w, double v) {
    while (hc >= 2 && below_chord(stack_cost[hc - 2], stack_value[hc - 2], stack_cost[hc - 1], stack_value[hc - 1], w, v)) {
      --hc;
    }
    stack_cost[hc] = w;
    stack_value[hc] = v;
    ++hc;
  };
  bool any = false;  // a Pareto entry is pending: (last_cost, last_value), not yet on the hull
  double last_cost = 0.0, last_value = -INFINITY;
  double previous = -INFINITY;  // (kCheck) the cost visited before
  for (std::int64_t a = 0; a < k; ++a) {
    const std::int32_t j = order != nullptr ? order[a] : static_cast<std::int32_t>(a);
    const double w = static_cast<double>(crow[j]), v = sign * static_cast<double>(vrow[j]);
    const bool allowed = mrow == nullptr || mrow[j] != 0;
    if constexpr (kCheck) {
      valid &= option_input_ok(allowed, w, v);
      ascending &= previous <= w;
      previous = w;
    }
    if (!allowed || !(v > last_value)) continue;
    if (any && w != last_cost) join_hull(last_cost, last_value);  // (same cost: replaced)
    any = true;
    last_cost = w;
    last_value = v;
  }
  if (!any) {
    cheapest = kNaN;
    return 0;
  }
  join_hull(last_cost, last_value);
  for (std::int32_t h = 0; h + 1 < hc; ++h) {
    const double dw = stack_cost[h + 1] - stack_cost[h], dv = stack_value[h + 1] - stack_value[h];
    out[h] = HullIncrement{dv / dw, dw, 0, 0};
  }
  cheapest = stack_cost[0];
  return hc - 1;
}

// A sampled item's hull steps, as guess_bracket takes them (sample_hull_steps in frontier.hpp):
// one pass checks the row and takes its steps, in the shared costs' order (p.cost_stride_item
// 0: `order` holds it), or in index order, which is sort_by_cost's where the costs ascend
// (their usual layout); where they do not, the steps are taken again in cost order (`order`:
// scratch of K). `stack`: 2K doubles.
template <class T>
APPORTION_INLINE std::int32_t sample_steps_into(const InstanceView<T>& p, std::int64_t i, std::int32_t* order,
                                                double* stack, HullIncrement* out, double& cheapest, bool& valid) {
  const std::int64_t k = p.k;
  const bool shared_costs = p.cost_stride_item == 0;
  bool ascending = true;
  std::int32_t steps = hull_steps_into<true>(p, i, shared_costs ? order : nullptr, stack, stack + k, out, cheapest,
                                             valid, ascending);
  if (!shared_costs && !ascending && valid) {
    sort_by_cost(k, p.costs + i * p.cost_stride_item, order);
    steps = hull_steps_into<false>(p, i, order, stack, stack + k, out, cheapest, valid, ascending);
  }
  return steps;
}

}  // namespace

template <class T>
double sample_hull_steps(const InstanceView<T>& p, std::int64_t i, std::int32_t* order, double* stack,
                         HullSteps& inc, bool& valid) {
  const std::size_t at = inc.size();
  inc.resize(at + static_cast<std::size_t>(p.k));  // room for K - 1 steps
  double cheapest;
  const std::int32_t steps = sample_steps_into(p, i, order, stack, inc.data() + at, cheapest, valid);
  inc.resize(at + static_cast<std::size_t>(steps));
  return cheapest;
}

template double sample_hull_steps<float>(const InstanceView<float>&, std::int64_t, std::int32_t*, double*,
                                         HullSteps&, bool&);
template double sample_hull_steps<double>(const InstanceView<double>&, std::int64_t, std::int32_t*, double*,
                                          HullSteps&, bool&);

double lagrangian_bound(const ItemFrontiers& f, double lambda, double budget) {
  CompensatedSum total;  // "optimal" is decided against it to a few ulps
  total.add(dual_offset(lambda, budget));
  for (std::int64_t i = 0; i < f.n; ++i) {
    const std::int64_t base = i * f.k;
    total.add(item_dual(&f.cost[base], &f.value[base], &f.hull[base], f.hull_count[i], lambda));
  }
  return total.value();
}

void allocation_totals(const ItemFrontiers& f, const std::vector<std::int32_t>& position,
                       double& total_cost, double& total_value) {
  allocation_totals_flat(f.cost.data(), f.value.data(), f.n, f.k, position.data(), total_cost,
                         total_value);
}

bool restore_budget(const ItemFrontiers& f, std::vector<std::int32_t>& position, double budget,
                    double& total_cost, double& total_value) {
  // A total within rounding of the budget is decided on its correctly rounded sum, as every
  // allocation (costs 2^54 + 4, 0.3 and 1.7: the compensated total rounded to 2^54 + 8, and
  // the best allocation was stepped down, though its exact total rounds to the budget).
  auto over = [&](const std::int32_t* at, double& total) {
    if (!near_budget(total, budget)) return true;
    const double exact = rounded_sum(f.n, [&](std::int64_t i) { return f.cost[i * f.k + at[i]]; });
    if (exact > budget) return true;
    total = exact;
    return false;
  };
  return restore_budget_flat(f.cost.data(), f.value.data(), f.n, f.k, position.data(), budget,
                             total_cost, total_value, over);
}

void write_choice(const ItemFrontiers& f, const std::vector<std::int32_t>& position,
                  std::int64_t* choice) {
  for (std::int64_t i = 0; i < f.n; ++i) choice[i] = f.option[i * f.k + position[i]];
}

namespace {

// Taken steps are a prefix of each item's hull (slopes fall along it), though a group may
// list an item's steps in any order.
inline void take_step(LagrangianWorkspace& ws, const HullIncrement& x) {
  ws.taken[x.item] = std::max(ws.taken[x.item], x.step + 1);
}

// Weighted quickselect of the break over inc[0, m), whose total dcost exceeds rem: takes the
// increments before the break, sets lambda and the break item.
void select_break(HullIncrement* inc, std::size_t m, double rem, LagrangianWorkspace& ws,
                  LpRelaxation& lp) {
  auto take = [&](const HullIncrement& x) { take_step(ws, x); };
  // Invariant: the dcost in [lo, hi) exceeds rem, so the break increment lies in the range;
  // everything before lo is taken.
  std::size_t lo = 0, hi = m;
  while (lo < hi) {
    const double s0 = inc[lo].slope, s1 = inc[lo + (hi - lo) / 2].slope, s2 = inc[hi - 1].slope;
    const double pivot = std::max(std::min(s0, s1), std::min(std::max(s0, s1), s2));
    // Three-way partition: greater [lo, g), equal [g, e), less [e, hi).
    std::size_t g = lo, a = lo, e = hi;
    while (a < e) {
      if (inc[a].slope > pivot) {
        std::swap(inc[a++], inc[g++]);
      } else if (inc[a].slope < pivot) {
        std::swap(inc[a], inc[--e]);
      } else {
        ++a;
      }
    }
    double sum_greater = 0.0, sum_equal = 0.0;
    for (std::size_t x = lo; x < g; ++x) sum_greater += inc[x].dcost;
    if (sum_greater > rem) {
      hi = g;
      continue;
    }
    for (std::size_t x = g; x < e; ++x) sum_equal += inc[x].dcost;
    for (std::size_t x = lo; x < g; ++x) take(inc[x]);
    rem -= sum_greater;
    lp.lambda = pivot;
    if (sum_equal > rem) {
      // The break lies among increments of slope == pivot. Take those that fit, by item,
      // keeping each item's taken steps a prefix of its hull.
      auto by_item = [](const HullIncrement& x, const HullIncrement& y) {
        return x.item != y.item ? x.item < y.item : x.step < y.step;
      };
      // Often in order already: increments are made by item, and partitions keep ties in place.
      if (!std::is_sorted(inc + g, inc + e, by_item)) std::sort(inc + g, inc + e, by_item);
      for (std::size_t x = g; x < e; ++x) {
        if (ws.taken[inc[x].item] != inc[x].step) continue;
        if (inc[x].dcost <= rem) {
          take(inc[x]);
          rem -= inc[x].dcost;
        } else if (lp.break_item < 0) {
          lp.break_item = inc[x].item;
        }
      }
      return;
    }
    for (std::size_t x = g; x < e; ++x) take(inc[x]);
    rem -= sum_equal;
    lo = e;
  }
  // Only rounding in the sums ends here (the range ran out before the break): everything
  // was taken, and the last pivot still gives a valid bound L(lambda).
}

// Increments beyond this count are first narrowed to a slope bracket around the break.
constexpr std::size_t kBracketMin = 512;

// Floyd-Rivest style narrowing: from a sorted sample, guesses slopes just above and below the
// break, takes every increment steeper than the bracket in one pass and keeps those inside it
// in ws.middle. Returns false (taking nothing) when the guess does not contain the break.
bool bracket_break(const HullIncrement* inc, std::size_t m, double total_dcost, double rem,
                   LagrangianWorkspace& ws, double& above_dcost) {
  const std::size_t samples = std::min<std::size_t>(m, 2 * static_cast<std::size_t>(std::sqrt(double(m))) + 16);
  const std::size_t stride = m / samples;
  auto& sample = ws.sample;
  sample.resize(samples);
  double sample_dcost = 0.0;
  for (std::size_t a = 0; a < samples; ++a) {
    sample[a] = inc[a * stride];
    sample_dcost += sample[a].dcost;
  }
  std::sort(sample.begin(), sample.end(),
            [](const HullIncrement& x, const HullIncrement& y) { return x.slope > y.slope; });
  // The sample index where the scaled cumulative dcost reaches rem, widened by a margin.
  const double scale = total_dcost / sample_dcost;
  std::size_t at = 0;
  for (double cum = 0.0; at < samples; ++at) {
    cum += sample[at].dcost * scale;
    if (cum > rem) break;
  }
  const std::size_t margin = static_cast<std::size_t>(std::sqrt(double(samples))) + 2;
  const double hi = at >= margin ? sample[at - margin].slope : INFINITY;
  const double lo = at + margin < samples ? sample[at + margin].slope : -INFINITY;
  double above = 0.0, inside = 0.0;
  if (ws.middle.size() < m) {  // grown once, never shrunk: no refill
    ws.middle.clear();           // (nothing to move: its entries are rewritten before use)
    ws.middle.resize(m);
  }
  std::size_t count = 0;
  for (std::size_t a = 0; a < m; ++a) {
    const HullIncrement& x = inc[a];
    const bool is_above = x.slope > hi, is_inside = !is_above && x.slope >= lo;
    above += is_above ? x.dcost : 0.0;
    inside += is_inside ? x.dcost : 0.0;
    ws.middle[count] = x;
    count += is_inside;
  }
  ws.middle_count = count;
  if (!(above <= rem && above + inside > rem)) return false;
  for (std::size_t a = 0; a < m; ++a) {  // branch-free: about half are taken
    const HullIncrement& x = inc[a];
    std::int32_t& t = ws.taken[x.item];
    t = std::max(t, x.slope > hi ? x.step + 1 : 0);
  }
  above_dcost = above;
  return true;
}

}  // namespace

LpRelaxation solve_lp(const ItemFrontiers& f, double budget, LagrangianWorkspace& ws) {
  LpRelaxation lp;
  const std::int64_t n = f.n, k = f.k;
  ws.position.assign(n, 0);
  ws.taken.assign(n, 0);
  CompensatedSum base_cost;
  double total_dcost = 0.0;
  std::size_t m = 0;
  for (std::int64_t i = 0; i < n; ++i) m += f.hull_count[i] - 1;
  ws.increments.resize(m);
  m = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t base = i * k;
    base_cost.add(f.cost[base]);  // Pareto position 0 is the cheapest hull point
    for (std::int32_t h = 0; h + 1 < f.hull_count[i]; ++h) {
      double dw, dv;
      hull_step(&f.cost[base], &f.value[base], &f.hull[base], h, dw, dv);
      ws.increments[m++] = HullIncrement{dv / dw, dw, static_cast<std::int32_t>(i), h};
      total_dcost += dw;
    }
  }
  // The cheapest allocation fits on its correctly rounded total, as every allocation is
  // decided (the compensated total's carry rounds too: costs 2^53 + 2, 0.7 and 0.3 came to
  // 2^53 + 4 where the exact total rounds to the budget, 2^53 + 2, and the instance was
  // reported infeasible).
  if (!fits_budget(base_cost, budget, lp.min_cost,
                   [&] { return rounded_sum(n, [&](std::int64_t i) { return f.cost[i * k]; }); })) {
    lp.feasible = false;
    lp.bound = kNaN;
    lp.lambda = kNaN;
    return lp;
  }
  double rem = budget - lp.min_cost;
  HullIncrement* inc = ws.increments.data();
  auto take = [&](const HullIncrement& x) { take_step(ws, x); };

  // Whether every item's best hull point fits, on the correctly rounded total: the steps'
  // rounded sum can say so where that is over (costs 1e16 and 1 against a budget of 1e16 - 2:
  // lambda came out 0, and the LP's allocation was over the budget).
  auto best_fits = [&] {
    auto best_cost = [&](std::int64_t i) { return f.cost[i * k + f.hull[i * k + f.hull_count[i] - 1]]; };
    CompensatedSum best;
    for (std::int64_t i = 0; i < n; ++i) best.add(best_cost(i));
    double total;
    return fits_budget(best, budget, total, [&] { return rounded_sum(n, best_cost); });
  };
  if (total_dcost <= rem && best_fits()) {  // the budget does not bind: every item at its best option
    for (std::size_t a = 0; a < m; ++a) take(inc[a]);
    lp.lambda = 0.0;
    lp.integral = true;
  } else {
    HullIncrement* range = inc;
    std::size_t count = m;
    if (m >= kBracketMin) {
      double above = 0.0;
      if (bracket_break(inc, m, total_dcost, rem, ws, above)) {
        range = ws.middle.data();
        count = ws.middle_count;
        rem -= above;
      }
    }
    select_break(range, count, rem, ws, lp);
  }
  for (std::int64_t i = 0; i < n; ++i) ws.position[i] = f.hull[i * k + ws.taken[i]];
  lp.bound = lagrangian_bound(f, lp.lambda, budget);
  return lp;
}

bool round_up_break(const ItemFrontiers& f, const LpRelaxation& lp, const LagrangianWorkspace& ws,
                    double budget, std::vector<std::int32_t>& position, double& total_cost,
                    double& total_value) {
  // Bounded work: this is a heuristic beside the other rounding, not a search.
  constexpr int kMaxDowngrades = 64;
  const std::int64_t bi = lp.break_item;
  if (bi < 0) return false;
  auto hull_pos = [&](std::int64_t i, std::int32_t step) { return f.hull[i * f.k + step]; };
  // The hull steps taken, in `position` until they become positions at the end (no allocation
  // per solve; position is undefined when this returns false).
  std::vector<std::int32_t>& steps = position;
  steps.assign(ws.taken.begin(), ws.taken.begin() + f.n);
  if (steps[bi] + 1 >= f.hull_count[bi]) return false;
  ++steps[bi];
  double total = 0.0, value = 0.0;
  for (std::int64_t i = 0; i < f.n; ++i) {
    total += f.pcost(i, hull_pos(i, steps[i]));
    value += f.pvalue(i, hull_pos(i, steps[i]));
  }
  for (int d = 0; total > budget; ++d) {
    if (d == kMaxDowngrades) return false;
    std::int64_t flattest = -1;
    double flattest_slope = INFINITY;
    for (std::int64_t i = 0; i < f.n; ++i) {
      if (i == bi || steps[i] == 0) continue;
      const std::int32_t a = hull_pos(i, steps[i] - 1), b = hull_pos(i, steps[i]);
      const double slope = (f.pvalue(i, b) - f.pvalue(i, a)) / (f.pcost(i, b) - f.pcost(i, a));
      if (slope < flattest_slope) {
        flattest_slope = slope;
        flattest = i;
      }
    }
    if (flattest < 0) return false;
    total -= f.pcost(flattest, hull_pos(flattest, steps[flattest])) -
             f.pcost(flattest, hull_pos(flattest, steps[flattest] - 1));
    value -= f.pvalue(flattest, hull_pos(flattest, steps[flattest])) -
             f.pvalue(flattest, hull_pos(flattest, steps[flattest] - 1));
    --steps[flattest];
  }
  for (std::int64_t i = 0; i < f.n; ++i) position[i] = hull_pos(i, steps[i]);
  total_cost = total;
  total_value = value;
  return true;
}

void repair_upgrades(const ItemFrontiers& f, std::vector<std::int32_t>& position,
                     double& total_cost, double& total_value, double budget, int max_rounds,
                     RepairScratch& scratch) {
  scratch.items.resize(f.n);
  for (std::int64_t i = 0; i < f.n; ++i) scratch.items[i] = static_cast<std::int32_t>(i);
  // Pareto entries rise in cost and value, so the last one within the leftover gains most.
  auto best_upgrade = [&](std::int32_t i, std::int32_t p, double leftover) {
    const double w0 = f.pcost(i, p);
    std::int32_t q = p;
    while (q + 1 < f.count[i] && f.pcost(i, q + 1) - w0 <= leftover) ++q;
    return q;
  };
  repair_rounds(position, total_cost, total_value, budget, max_rounds, scratch, best_upgrade,
                [&](std::int32_t i, std::int32_t q) { return f.pcost(i, q); },
                [&](std::int32_t i, std::int32_t q) { return f.pvalue(i, q); });
}

namespace {

// Instances with fewer items build every frontier: the sample would be most of them.
constexpr std::int64_t kReduceMinItems = 256;

// The bracket around the sample's guess spans this many square roots of its increment count
// each way. Narrower brackets leave fewer items active but miss more often, and a miss costs
// one more pass; 0.7 missed on 3-20% of the instances of 1000 x 8 (30 seeds per class) and
// was at least as fast as 1.0 and 0.5 on the routing and uncorrelated classes.
constexpr double kMarginScale = 0.7;

// All-tied active sets above this size keep only kFewActive items active (see fix_items): the
// frontier work saved then outweighs the primal's loss of Pareto repairs over the others
// (measured on the weakly correlated class, whose tied sets after the first pass are smaller).
constexpr std::size_t kManyTied = 256;

// Narrowing stops at this many active items: their frontiers are cheap, and the roundings of
// the primal need the items around the break to choose from.
constexpr std::size_t kFewActive = 64;

// The running choice of an item's LP option at one slope: the option maximising
// v - lambda w among the allowed ones, ties to the lower index. Any tie rule serves: an option
// optimal at both ends of a slope range is optimal in between, and the cost of any optimal
// choice is a subgradient of L, so W(lo) > budget >= W(hi) puts the break in [lo, hi].
struct OptionPick {
  double score = -INFINITY, second = -INFINITY;  // the best score and the runner-up's
  std::int32_t option = -1;                      // -1: no allowed option
  void offer(double s, std::int32_t j, bool allowed) {
    s = allowed ? s : -INFINITY;
    second = std::max(second, std::min(s, score));
    const bool better = s > score;  // branch-free: random scores mispredict
    score = better ? s : score;
    option = better ? j : option;
  }
};

#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define APPORTION_VECTOR_PICK 1
// These helpers are always inlined into their caller's level (no vector crosses a call), so
// the ABI note GCC makes for wide vectors passed without their instruction set does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

// W items at a time in GCC's generic vector types, one item per lane, W doubles filling one
// register of the level (cpu_dispatch.hpp): each lane runs OptionPick's steps for its item, in
// option order, so every level computes the same numbers as the scalar pick.
template <int W>
struct PickVec;
template <>
struct PickVec<2> {
  using D = double __attribute__((vector_size(16)));
  using I = std::int64_t __attribute__((vector_size(16)));  // shuffle indices
  using I32 = std::int32_t __attribute__((vector_size(8)));  // option indices
  // Rows r[0..W) of W entries each into columns c[m] = (r[0][m], ..., r[W-1][m]).
  APPORTION_INLINE static void transpose(D* r) {
    const D c0 = __builtin_shuffle(r[0], r[1], I{0, 2}), c1 = __builtin_shuffle(r[0], r[1], I{1, 3});
    r[0] = c0;
    r[1] = c1;
  }
};
template <>
struct PickVec<4> {
  using D = double __attribute__((vector_size(32)));
  using I = std::int64_t __attribute__((vector_size(32)));
  using I32 = std::int32_t __attribute__((vector_size(16)));
  using HalfRow = double __attribute__((vector_size(16), aligned(8), may_alias));  // load_half_rows
  APPORTION_INLINE static void transpose(D* r) {
    const D t0 = __builtin_shuffle(r[0], r[1], I{0, 4, 2, 6}), t1 = __builtin_shuffle(r[0], r[1], I{1, 5, 3, 7});
    const D t2 = __builtin_shuffle(r[2], r[3], I{0, 4, 2, 6}), t3 = __builtin_shuffle(r[2], r[3], I{1, 5, 3, 7});
    r[0] = __builtin_shuffle(t0, t2, I{0, 1, 4, 5});
    r[1] = __builtin_shuffle(t1, t3, I{0, 1, 4, 5});
    r[2] = __builtin_shuffle(t0, t2, I{2, 3, 6, 7});
    r[3] = __builtin_shuffle(t1, t3, I{2, 3, 6, 7});
  }
};

template <>
struct PickVec<8> {
  using D = double __attribute__((vector_size(64)));
  using I = std::int64_t __attribute__((vector_size(64)));
  using I32 = std::int32_t __attribute__((vector_size(32)));
  using HalfRow = double __attribute__((vector_size(32), aligned(8), may_alias));
  APPORTION_INLINE static void transpose(D* r) {
    D t[8], u[8];
    for (int a = 0; a < 8; a += 2) {  // pairs of rows interleaved
      t[a] = __builtin_shuffle(r[a], r[a + 1], I{0, 8, 2, 10, 4, 12, 6, 14});
      t[a + 1] = __builtin_shuffle(r[a], r[a + 1], I{1, 9, 3, 11, 5, 13, 7, 15});
    }
    for (int a = 0; a < 8; a += 4) {  // then pairs of pairs
      for (int b = 0; b < 2; ++b) {
        u[a + b] = __builtin_shuffle(t[a + b], t[a + b + 2], I{0, 1, 8, 9, 4, 5, 12, 13});
        u[a + b + 2] = __builtin_shuffle(t[a + b], t[a + b + 2], I{2, 3, 10, 11, 6, 7, 14, 15});
      }
    }
    for (int b = 0; b < 4; ++b) {  // then the halves
      r[b] = __builtin_shuffle(u[b], u[b + 4], I{0, 1, 2, 3, 8, 9, 10, 11});
      r[b + 4] = __builtin_shuffle(u[b], u[b + 4], I{4, 5, 6, 7, 12, 13, 14, 15});
    }
  }
};

// W entries from src as doubles (exact for float and double).
template <int W, class T>
APPORTION_INLINE typename PickVec<W>::D load_lanes(const T* src) {
  using V = PickVec<W>;
  if constexpr (std::is_same_v<T, double>) {
    typename V::D x;
    std::memcpy(&x, src, sizeof x);
    return x;
  } else {
    static_assert(std::is_same_v<T, float>, "values are float or double");
    // Element by element, which GCC folds into one widening load (vcvtps2pd ymm or zmm, mem);
    // __builtin_convertvector on a float vector was lowered to two halves through the stack.
    if constexpr (W == 2) {
      return typename V::D{static_cast<double>(src[0]), static_cast<double>(src[1])};
    } else if constexpr (W == 8) {
      return typename V::D{static_cast<double>(src[0]), static_cast<double>(src[1]), static_cast<double>(src[2]),
                           static_cast<double>(src[3]), static_cast<double>(src[4]), static_cast<double>(src[5]),
                           static_cast<double>(src[6]), static_cast<double>(src[7])};
    } else {
      return typename V::D{static_cast<double>(src[0]), static_cast<double>(src[1]), static_cast<double>(src[2]),
                           static_cast<double>(src[3])};
    }
  }
}

#if __GNUC__ >= 12  // (__builtin_shufflevector; older GCC takes load_columns' loads and transpose)
// W = 4 or 8 doubles a vector: t[l] = (row[l]'s entries j0..j0+W/2, then row[l + W/2]'s) and
// t[l + W/2] = the next W/2 entries of both, for l < W/2, each vector by two loads.
template <int W>
APPORTION_INLINE void load_half_rows(const double* const* row, std::int64_t j0, typename PickVec<W>::D* t) {
  constexpr int kHalf = W / 2;
  using Half = typename PickVec<W>::HalfRow;
  for (int l = 0; l < kHalf; ++l) {
    for (int h = 0; h < 2; ++h) {
      const Half a = *reinterpret_cast<const Half*>(row[l] + j0 + kHalf * h);
      const Half b = *reinterpret_cast<const Half*>(row[l + kHalf] + j0 + kHalf * h);
      if constexpr (W == 4) {
        t[l + kHalf * h] = __builtin_shufflevector(a, b, 0, 1, 2, 3);
      } else {
        t[l + kHalf * h] = __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7);
      }
    }
  }
}
#endif

// Entries j0..j0+W of the rows row[0..W) as W columns c[m] = (row[0][j0 + m], ...,
// row[W-1][j0 + m]), as doubles: W loads and a transpose. Double rows at 4 and 8 lanes
// (x86-64-v3 and v4) are loaded in halves instead (load_half_rows), so that the transpose's
// first step joins halves as they are loaded rather than exchanging them between whole rows.
// GCC 12 makes as many shuffles of it (it joins the halves in registers: vshuff64x2 at v4,
// vinsertf128 at v3, where the whole-row form took vperm2f128), but fewer register copies: in
// the float64 pass, 302 vmovapd against 347 at v4 (and 80 vpermt2pd, which overwrite their
// table operand, against 96), 288 against 305 at v3. Routing 1000 x 8 float64 took 4% less CPU
// time at v4; 1000 x 4, 1000 x 8, 1e5 x 8 and 1000 x 13 1.5-3% less with the v3 copy forced.
template <int W, class T>
APPORTION_INLINE void load_columns(const T* const* row, std::int64_t j0, typename PickVec<W>::D* c) {
  using V = PickVec<W>;
#if __GNUC__ >= 12
  if constexpr ((W == 4 || W == 8) && std::is_same_v<T, double>) {
    using D = typename V::D;
    using I = typename V::I;
    D t[W];
    load_half_rows<W>(row, j0, t);
    if constexpr (W == 4) {
      for (int h = 0; h < 4; h += 2) {
        c[h] = __builtin_shuffle(t[h], t[h + 1], I{0, 4, 2, 6});
        c[h + 1] = __builtin_shuffle(t[h], t[h + 1], I{1, 5, 3, 7});
      }
    } else {
      for (int h = 0; h < 8; h += 4) {
        // Pairs of rows interleaved: u0 = (r0[0], r1[0], r0[2], r1[2], r4[0], r5[0], r4[2], r5[2]), ...
        const D u0 = __builtin_shuffle(t[h], t[h + 1], I{0, 8, 2, 10, 4, 12, 6, 14});
        const D u1 = __builtin_shuffle(t[h], t[h + 1], I{1, 9, 3, 11, 5, 13, 7, 15});
        const D u2 = __builtin_shuffle(t[h + 2], t[h + 3], I{0, 8, 2, 10, 4, 12, 6, 14});
        const D u3 = __builtin_shuffle(t[h + 2], t[h + 3], I{1, 9, 3, 11, 5, 13, 7, 15});
        c[h] = __builtin_shuffle(u0, u2, I{0, 1, 8, 9, 4, 5, 12, 13});
        c[h + 1] = __builtin_shuffle(u1, u3, I{0, 1, 8, 9, 4, 5, 12, 13});
        c[h + 2] = __builtin_shuffle(u0, u2, I{2, 3, 10, 11, 6, 7, 14, 15});
        c[h + 3] = __builtin_shuffle(u1, u3, I{2, 3, 10, 11, 6, 7, 14, 15});
      }
    }
    return;
  }
#endif
  for (int l = 0; l < W; ++l) c[l] = load_lanes<W>(row[l] + j0);
  V::transpose(c);
}

// The rows the pass reads: values (N,K), costs at cost_stride (0: one row shared by every item).
template <class T>
struct PickRows {
  const T* values;
  const T* costs;
  std::int64_t cost_stride, n, k;
  std::int64_t span;  // entries a block reads from each row: K rounded up to whole vectors
  double sign;

  PickRows(const InstanceView<T>& p, int lanes)
      : values(p.values), costs(p.costs), cost_stride(p.cost_stride_item), n(p.n), k(p.k),
        span((p.k + lanes - 1) / lanes * lanes), sign(p.value_sign) {}
  // Whether a block may read row i: its last vector, which runs on into the next row when K is
  // not a whole number of vectors, stays inside the instance's (N,K) values and costs.
  bool readable(std::int64_t i) const { return i * k + span <= n * k; }
};

// What pick_block leaves per lane: OptionPick's fields at the two slopes, the cheapest cost, and
// (at W = 8, double rows) the cost and value of the option at lo.
template <int W>
struct BlockPicks {
  typename PickVec<W>::D best_lo, best_hi, second_lo, second_hi, option_lo, option_hi, cheap;
  // The cost and the value (times the sign) of the option at lo; at W = 8 for double rows only
  // (else +0.0).
  typename PickVec<W>::D cost_lo, value_lo;
  // The scores' sum at lo less itself: 0 where it is finite, NaN otherwise.
  typename PickVec<W>::D finite;
};

// The LP options of the W items item[0..W) (unmasked rows that rows.readable) at slopes lo and
// hi, with the runner-up scores when `margins`: OptionPick::offer over the options in order, one
// item per lane. The rows are read W entries at a time and transposed into one vector per
// option. Input checks as the scalar pass made them in passing: a NaN or infinite value or cost
// makes a score at lo, and so its sum, non-finite (lo is finite; 0 * inf is NaN); a negative
// cost shows in the cheapest. (A sum past 1e308 of finite scores counts as bad too: the full
// path, which checks the input exactly, then takes the instance.)
// kK: K when known at compile time (the loops then unroll), 0 otherwise.
template <int W, bool margins, int kK, class T>
APPORTION_INLINE BlockPicks<W> pick_block(const PickRows<T>& rows, const std::int64_t* item, double lo, double hi) {
  const std::int64_t k = kK ? kK : rows.k;
  using V = PickVec<W>;
  using D = typename V::D;
  const D none = D{} - INFINITY, vlo = D{} + lo, vhi = D{} + hi;
  BlockPicks<W> out;
  out.best_lo = out.best_hi = out.second_lo = out.second_hi = none;
  out.option_lo = out.option_hi = D{} - 1.0;
  out.cost_lo = out.value_lo = D{};
  out.cheap = -none;
  D sum_lo = {};
  const T* vrow[W];
  const T* crow[W];
  for (int l = 0; l < W; ++l) {
    vrow[l] = rows.values + item[l] * rows.k;
    crow[l] = rows.costs + item[l] * rows.cost_stride;
  }
  for (std::int64_t j0 = 0; j0 < k; j0 += W) {
    D v[W], w[W] = {};  // (w unread where the costs are shared)
    load_columns<W>(vrow, j0, v);
    if (rows.cost_stride != 0) {
      load_columns<W>(crow, j0, w);
    }
    for (int m = 0; m < W && j0 + m < k; ++m) {
      const double j = static_cast<double>(j0 + m);
      const D cost = rows.cost_stride != 0 ? w[m] : D{} + static_cast<double>(rows.costs[j0 + m]);
      const D value = rows.sign * v[m];
      const D s_lo = value - vlo * cost, s_hi = value - vhi * cost;
      sum_lo += s_lo;
      if constexpr (margins) {  // second = std::max(second, std::min(s, score)), lane by lane
        const D floor_lo = out.best_lo < s_lo ? out.best_lo : s_lo, floor_hi = out.best_hi < s_hi ? out.best_hi : s_hi;
        out.second_lo = out.second_lo < floor_lo ? floor_lo : out.second_lo;
        out.second_hi = out.second_hi < floor_hi ? floor_hi : out.second_hi;
      }
      out.option_lo = s_lo > out.best_lo ? D{} + j : out.option_lo;
      // (Not below x86-64-v4, where a variable blend takes three micro-ops; not for float rows,
      // which are kept as read: see ChunkPicks.)
      if constexpr (W == 8 && std::is_same_v<T, double>) {
        out.cost_lo = s_lo > out.best_lo ? cost : out.cost_lo;
        out.value_lo = s_lo > out.best_lo ? value : out.value_lo;
      }
      out.best_lo = s_lo > out.best_lo ? s_lo : out.best_lo;
      out.option_hi = s_hi > out.best_hi ? D{} + j : out.option_hi;
      out.best_hi = s_hi > out.best_hi ? s_hi : out.best_hi;
      out.cheap = cost < out.cheap ? cost : out.cheap;
    }
  }
  out.finite = sum_lo - sum_lo;
  return out;
}

#endif

// Item i's LP options at two slopes (with their runner-up scores when `margins`) and its
// cheapest allowed cost, in one pass over its options, as OptionPick chooses (masked rows, the
// rows pick_block does not take, and every row where it is not compiled). Returns whether the
// allowed values are finite and the costs finite and >= 0.
template <bool margins, class T>
APPORTION_INLINE bool pick_at_two_slopes(const InstanceView<T>& p, std::int64_t i, double lo, double hi,
                                         OptionPick& at_lo, OptionPick& at_hi, double& cheapest_cost) {
  cheapest_cost = INFINITY;
  bool valid = true;
  const T* vrow = p.values + i * p.k;
  const T* crow = p.costs + i * p.cost_stride_item;
  const std::uint8_t* mrow = p.mask ? p.mask + i * p.k : nullptr;
  for (std::int64_t j = 0; j < p.k; ++j) {
    const double w = static_cast<double>(crow[j]), v = p.value_sign * static_cast<double>(vrow[j]);
    const bool allowed = mrow == nullptr || mrow[j] != 0;
    valid &= option_input_ok(allowed, w, v);
    at_lo.offer(v - lo * w, static_cast<std::int32_t>(j), allowed);
    at_hi.offer(v - hi * w, static_cast<std::int32_t>(j), allowed);
    cheapest_cost = (allowed & (w < cheapest_cost)) ? w : cheapest_cost;
  }
  return valid;
}

// The sample's guess of the break slope: its hull increments, steepest first (ws.sample), the
// position where they pass the scaled budget, and a margin of positions around it.
struct SampleGuess {
  std::int64_t at = 0, margin = 0;
  bool tied = false;  // every sampled slope around the break is the same
  // The bracket of positions at +- `widths` margins around `at`, as slopes; past either end of
  // the sample, 0 below and twice the steepest slope above.
  void bracket(const HullSteps& inc, std::int64_t widths, double& lo, double& hi) const {
    const std::int64_t m = static_cast<std::int64_t>(inc.size()), d = widths * margin;
    hi = at - d >= 0 ? inc[at - d].slope : 2.0 * inc[0].slope;
    lo = at + d < m ? inc[at + d].slope : 0.0;
  }
};

// Increments below this count are sorted by std::sort alone in sort_steepest_first, and so are
// more than its packed words can index.
constexpr std::size_t kBucketSortMin = 64, kBucketSortMax = std::size_t(1) << 16;

inline bool steeper_step(const HullIncrement& x, const HullIncrement& y) { return x.slope > y.slope; }

// Whether two increments are the same in every field (the sample's carry no item: those of
// different items can be).
inline bool same_increment(const HullIncrement& x, const HullIncrement& y) {
  return std::memcmp(&x, &y, sizeof x) == 0;
}

// The run of slopes equal to seq[a]'s in a sorted sequence: its first and last positions.
std::pair<std::size_t, std::size_t> equal_slopes_around(const HullSteps& seq, std::size_t a) {
  std::size_t first = a, last = a;
  while (first > 0 && seq[first - 1].slope == seq[a].slope) --first;
  while (last + 1 < seq.size() && seq[last + 1].slope == seq[a].slope) ++last;
  return {first, last};
}

// Where the first run of equal slopes holding differing increments starts in a sorted sequence
// (its size where none does): the run may start before its first differing neighbours. The
// same for every order of the runs' increments.
std::size_t first_unequal_tie(const HullSteps& seq) {
  for (std::size_t a = 1; a < seq.size(); ++a) {
    if (seq[a - 1].slope == seq[a].slope && !same_increment(seq[a - 1], seq[a])) {
      return equal_slopes_around(seq, a).first;
    }
  }
  return seq.size();
}

// Where sort_steepest_first's sequence may part from std::sort's, and whether it parted there.
struct SampleOrder {
  // The first run of equal slopes holding differing increments starts here (the sample's size
  // where none does): their order is std::sort's choice, the sequence before them is unique.
  std::size_t first_tie;
  bool bucket_order;  // the sequence is the bucket sort's: guess_bracket sets ws.sample_ties
  // The bucket sort kept such a run in the sample's order, not std::sort's: the sequence is then
  // in ws.sample_sorted, and inc holds the sample as taken (std::sort's order of ties depends on
  // the order it is given).
  bool own_order(std::size_t m) const { return bucket_order && first_tie < m; }
};

// Sorts inc steepest first, into the sequence std::sort(slope >) gives up to the first run of
// equal slopes that hold differing increments, with few data-dependent branches; or, where it
// keeps such a run in the order sampled, leaves inc as sampled and puts the sequence in
// ws.sample_sorted (SampleOrder::own_order).
// std::sort's comparisons mispredicted about 1100 times a solve of routing 1000 x 8 (the
// sample's ~300 increments: 45% of the solve's mispredicted branches, callgrind --branch-sim),
// which costs most where the predictor cannot learn the data: a batch of distinct instances.
// Here each increment is a word: the high 48 bits of an order-preserving key of its slope, then
// its position. One stable bucket pass spreads the words over at least m buckets of equal width
// between the smallest and the largest word (a bucket's index only grows with the word), then an
// insertion sort of the whole words moves what shares a bucket. (A radix sort on the top 24 key
// bits, 3 passes of 8 bits, took 38k instructions of a 330k routing 1000 x 8 solve at
// x86-64-v3; this one 26k.) Why the sequence is std::sort's: a sorted sequence is unique except
// for the order among equal slopes. Words with distinct keys, in ascending order, are strictly
// falling slopes; where two share their 48 key bits, or NaN shows at an end, the output is
// checked to be sorted (else, as with NaN, inc goes to std::sort itself).
//
// A run of equal slopes holding differing increments stays in the order they were sampled,
// which need not be the one std::sort would choose: guess_bracket sorts the sample again with
// std::sort only where such a run could move the budget's crossing (crossing_ignores_ties).
// Float input ties slopes by chance, a float holding 24 bits: routing 1e5 x 8 float32 seed 1
// ties two items' slopes at position 399 of 2334, the crossing at 1627, and its every solve went
// to std::sort, whose comparisons mispredicted 10.5k more branches than this sort's (callgrind
// --branch-sim: 22.7k against 12.2k a solve), for the same answer.
//
// Integer data (every class of workloads.CLASSES but routing) ties slopes with different
// dcosts, often at the break, and then paid for both sorts: after a sample whose ties could move
// its crossing, the thread's next sample goes to std::sort directly, and back to this sort once a
// sample has no such ties at all (either way the sequence is std::sort's as far as it counts, so
// this changes no answer). (Back once a sample's ties could not move its crossing, integer data
// went back and forth: weakly correlated 1000 x 8 took 2% more instructions.) Strongly correlated
// samples tie slopes, but not around the crossing, and keep to this sort: 8 seeds in turn took
// 381k instructions a solve against 367k with std::sort, and mispredicted 1015 branches against
// 2517 (callgrind --branch-sim).
SampleOrder sort_steepest_first(HullSteps& inc, LagrangianWorkspace& ws) {
  const std::size_t m = inc.size();
  const SampleOrder std_sorted{m, false};
  if (m < kBucketSortMin || m > kBucketSortMax) {
    std::sort(inc.begin(), inc.end(), steeper_step);
    return std_sorted;
  }
  if (ws.sample_ties) {
    std::sort(inc.begin(), inc.end(), steeper_step);
    const std::size_t first_tie = first_unequal_tie(inc);
    ws.sample_ties = first_tie < m;
    return SampleOrder{first_tie, false};
  }
  ws.sort_word.resize(m);
  ws.sort_word2.resize(m);
  std::uint64_t* word = ws.sort_word.data();
  std::uint64_t* word2 = ws.sort_word2.data();
  constexpr std::uint64_t kSign = std::uint64_t(1) << 63, kPosition = 0xffff;
  std::uint64_t lowest = ~std::uint64_t(0), highest = 0;
  for (std::size_t a = 0; a < m; ++a) {
    std::uint64_t u;
    std::memcpy(&u, &inc[a].slope, sizeof u);
    // Ascending in the slope: negative slopes with every bit flipped, the others with the
    // sign bit set; the complement, so that ascending keys are descending slopes.
    const std::uint64_t up = (u & kSign) ? ~u : (u | kSign);
    const std::uint64_t w = (~up & ~kPosition) | a;
    word[a] = w;
    lowest = std::min(lowest, w);
    highest = std::max(highest, w);
  }
  // Buckets: a power of two, at least m; the shift maps highest - lowest below their count.
  int bucket_bits = 6;
  while ((std::size_t(1) << bucket_bits) < m) ++bucket_bits;
  int shift = 0;
  for (std::uint64_t span = (highest - lowest) >> bucket_bits; span != 0; span >>= 1) ++shift;
  std::vector<std::uint32_t>& start = ws.sort_count;
  start.assign(std::size_t(1) << bucket_bits, 0);  // each bucket's count, then where it starts
  for (std::size_t a = 0; a < m; ++a) ++start[(word[a] - lowest) >> shift];
  std::uint32_t at = 0;
  for (std::uint32_t& first : start) {
    const std::uint32_t count = first;
    first = at;
    at += count;
  }
  for (std::size_t a = 0; a < m; ++a) word2[start[(word[a] - lowest) >> shift]++] = word[a];
  std::swap(word, word2);
  // Within a bucket: nearly sorted already, unless many slopes share one (a few slopes far from
  // the rest widen every bucket): past 16 moves a word so far, std::sort takes over, so the sort
  // stays O(m log m) on any data and gives up early where it would not pay.
  std::size_t moves = 0;
  for (std::size_t a = 1; a < m; ++a) {
    const std::uint64_t x = word[a];
    std::size_t b = a;
    for (; b > 0 && word[b - 1] > x; --b) word[b] = word[b - 1];
    word[b] = x;
    moves += a - b;
    if (moves > 16 * a) {
      std::sort(inc.begin(), inc.end(), steeper_step);
      return std_sorted;
    }
  }
  HullSteps& out = ws.sample_sorted;
  out.resize(m);
  bool key_ties = false;  // two words share their 48 key bits
  out[0] = inc[word[0] & kPosition];
  for (std::size_t a = 1; a < m; ++a) {
    out[a] = inc[word[a] & kPosition];
    key_ties |= ((word[a] ^ word[a - 1]) >> 16) == 0;
  }
  // Distinct keys in ascending order are strictly falling slopes, except for NaN, whose keys
  // sort past every number's (first with the sign bit clear, last with it set): where neither
  // shows, the sequence is the unique sorted one without comparing slopes.
  const bool ends_numbers = !std::isnan(out[0].slope) && !std::isnan(out[m - 1].slope);
  if (ends_numbers && !key_ties) {
    inc.swap(out);
    return SampleOrder{m, true};
  }
  bool sorted = true;  // (a NaN slope fails `>=` against a neighbour)
  for (std::size_t a = 1; a < m; ++a) sorted &= out[a - 1].slope >= out[a].slope;
  if (!sorted) {
    std::sort(inc.begin(), inc.end(), steeper_step);
    ws.sample_ties = true;
    return SampleOrder{0, false};
  }
  const std::size_t first_tie = first_unequal_tie(out);
  if (first_tie == m) inc.swap(out);  // else the sample as taken stays in inc, for std::sort
  return SampleOrder{first_tie, true};
}

// Where sorted increments' running sum of dcost first passes a target: at (their count where it
// never does), the sum before inc[at] and the sum with it.
struct SampleCrossing {
  std::size_t at;
  double before, with;
};

SampleCrossing sample_crossing(const HullSteps& inc, double target) {
  SampleCrossing c{0, 0.0, 0.0};
  for (; c.at < inc.size(); ++c.at) {
    c.with = c.before + inc[c.at].dcost;
    if (c.with > target) break;
    c.before = c.with;
  }
  return c;
}

// Whether every order of the runs of equal slopes that hold differing increments puts the
// crossing where it is: where none holds inc[at] and the running sums are further from the
// target than their rounding can move them. (A run before the crossing changes only the order
// of the sum's positive terms: of j terms, each order's sum is within (j - 1) u of their exact
// total's multiple; the slopes at every position are the same for every order.)
bool crossing_ignores_ties(const HullSteps& inc, const SampleCrossing& c, double target) {
  const std::size_t m = inc.size();
  if (c.at < m) {
    const auto [first, last] = equal_slopes_around(inc, c.at);
    for (std::size_t a = first; a < last; ++a) {
      if (!same_increment(inc[a], inc[a + 1])) return false;
    }
  }
  const double total = c.at < m ? c.with : c.before;
  const double rounding = 2.0 * static_cast<double>(c.at + 1) * std::numeric_limits<double>::epsilon() * total;
  return target - c.before > rounding && (c.at == m || c.with - target > rounding);
}

// Guesses a bracket (lo, hi) of the break slope from the hulls of evenly spaced items: the
// slope where their increments, scaled to all items, would use up the budget, widened by a
// few standard errors of that sample quantile. Returns false when the sample cannot tell.
template <class T>
bool guess_bracket(const InstanceView<T>& p, LagrangianWorkspace& ws, SampleGuess& guess, double& lo,
                   double& hi) {
  const std::int64_t n = p.n, k = p.k;
  const std::int64_t s = std::min<std::int64_t>(n, 16 + static_cast<std::int64_t>(1.5 * std::sqrt(double(n))));
  // The sampled rows are spread over the instance, each a miss where it is not in cache (a
  // batch streams from memory): asked for all at once, their misses overlap (routing
  // B=1000 x (1000x8) f64: 48-49 -> 44 ms CPU).
  for (std::int64_t a = 0; a < s; ++a) prefetch_row(p, a * n / s);
  std::int32_t small_order[kMaxSmallSort];
  std::vector<std::int32_t> long_order;
  std::int32_t* order = k <= kMaxSmallSort ? small_order : (long_order.resize(k), long_order.data());
  const bool shared_costs = p.cost_stride_item == 0;
  if (shared_costs) sort_by_cost(k, p.costs, order);
  std::vector<double>& stack = ws.sample_stack;
  stack.resize(2 * k);
  HullSteps& inc = ws.sample;
  // Room for every sampled item's K - 1 steps, written in place (without push_back's checks),
  // then cut to those taken.
  inc.resize(static_cast<std::size_t>(s) * static_cast<std::size_t>(k));
  std::size_t count = 0;
  bool valid = true;  // checked before sorting: NaN breaks the comparisons of std::sort
  std::int64_t no_option = -1;  // the first sampled item with no allowed option
  double cheapest = 0.0;
  for (std::int64_t a = 0; a < s; ++a) {
    const std::int64_t i = a * n / s;
    double cheapest_cost;
    const std::int32_t steps = sample_steps_into(p, i, order, stack.data(), inc.data() + count, cheapest_cost, valid);
    count += static_cast<std::size_t>(steps);
    if (std::isnan(cheapest_cost) && no_option < 0) no_option = i;
    cheapest += cheapest_cost;
  }
  inc.resize(count);
  if (!valid) return false;
  if (no_option >= 0) {
    // Name the first item with no allowed option, as the full path does, not the first sampled
    // one (only a mask leaves an item none).
    auto allows_some = [&](std::int64_t i) {
      return p.mask != nullptr && std::any_of(p.mask + i * k, p.mask + (i + 1) * k, [](std::uint8_t x) { return x != 0; });
    };
    std::int64_t first = 0;
    while (first < no_option && allows_some(first)) ++first;
    throw_no_option(first);
  }
  if (inc.size() < 8) return false;
  const SampleOrder sorted = sort_steepest_first(inc, ws);
  const double target = p.budget * static_cast<double>(s) / static_cast<double>(n) - cheapest;
  const std::int64_t m = static_cast<std::int64_t>(inc.size());
  const bool own_order = sorted.own_order(inc.size());
  const HullSteps& steps = own_order ? ws.sample_sorted : inc;
  SampleCrossing crossing = sample_crossing(steps, target);
  // Whether std::sort's order could put the crossing elsewhere (see SampleOrder).
  const bool ties_count = sorted.first_tie < inc.size() && sorted.first_tie <= crossing.at &&
                          !crossing_ignores_ties(steps, crossing, target);
  if (own_order) {
    if (ties_count) {
      std::sort(inc.begin(), inc.end(), steeper_step);
      crossing = sample_crossing(inc, target);
    } else {
      inc.swap(ws.sample_sorted);
    }
  }
  if (sorted.bucket_order) ws.sample_ties = ties_count;
  const std::int64_t at = static_cast<std::int64_t>(crossing.at);
  guess.at = at;
  guess.margin = static_cast<std::int64_t>(kMarginScale * std::sqrt(double(m))) + 2;
  guess.bracket(inc, 1, lo, hi);
  if (lo == hi) {
    // Every slope around the break is the same (integer data often ties, as p = w does): a
    // bracket just around it; the items tied there are all active, and two-point.
    lo = hi * (1.0 - 1e-9);
    hi = hi * (1.0 + 1e-9);
    guess.tied = true;
  }
  return lo < hi && std::isfinite(hi);
}

// Where the break slope lies against a bracket [lo, hi]: W(lo) > budget >= W(hi) (inside),
// W(lo) <= budget (at or below lo), W(hi) > budget (above hi); W the total cost of the options
// OptionPick picks at a slope. kUnusable: bad input, an item with no allowed option, or a
// budget below the cheapest allocation (the full path reports each).
enum class BracketFit { kInside, kBelow, kAbove, kUnusable };

// Instances whose rows (values and costs) take more than this many bytes have the rows of the
// items the first pass leaves active copied side by side as it finds them, while they are in L1
// (fix_items): scattered over the whole input, they missed cache again on every later pass over
// them (the chords' histogram, pick_active and the fix loop of every round, then
// reduced_allocation_fits). Twice the L2 of the machine measured (2 MB a core): routing x 8
// native solves, copies against none, alternating (us CPU): 20000 float64 (2.6 MB) 360-375
// against 351-355, 30000 float64 (3.8 MB) 1109-1117 against 1038-1131, 40000 float64 (5.1 MB)
// 539-541 against 551-563, 70000 float32 (4.5 MB) 967-999 against 1067-1085.
constexpr std::size_t kCompactMinBytes = std::size_t(4) << 20;

// The room for the copied rows is for this share of the items (1/5: at 100000 x K, K = 4, 8,
// 13, every class but subset_sum, whose break ties every item, leaves 7-18% active, strongly
// and weakly at K = 13 23% and 28%, which then read p). Room for every item (64 MB at routing
// 1e6 x 8 float32) was a new mapping on every solve, whose page faults made it take 19-22 ms
// CPU instead of 15-16.
constexpr std::int64_t kCompactShare = 5;

// How many active items' rows fix_items has room to copy (0: none): a share of the items
// (kCompactShare) of a large unmasked instance (a mask would need its rows copied too), or as
// many as fit where the workspace, with the copies and the arrays that grow with the active
// items after the pass, would pass what a thread keeps of it (keep_workspace_bytes, solvers.hpp,
// for this input: 32 MiB, or half the rows where more). A workspace past its keep is dropped
// after the call, and the next solve faults the pages of a new one in again: with room for up
// to 1/4 of the items, routing 1e6 x 8 float64 took 26.5-27 ms CPU instead of 21-22; with the
// room counted alone (not the arrays below), routing 780000 x 8 float64 took 28.5-28.9 ms
// instead of 19.4-20.3 (review). With active_arrays_grow, fix_items' active, option_lo and
// option_hi grow with the active items (one thread takes the pass), else they are sized for p; the
// copies of either dtype are left out of what is held, as fix_items frees the other dtype's,
// and what the workspace's owner holds beside it (held_beside) is counted in, against the
// owner's keep where it sets one (keep_bytes).
template <class T>
std::int64_t compact_room(const InstanceView<T>& p, const LagrangianWorkspace& ws, bool active_arrays_grow) {
  if (p.mask != nullptr || row_bytes(p) <= kCompactMinBytes) return 0;
  const std::size_t held = ws.bytes() - ws.compact.bytes() + ws.held_beside;
  // Per copied row: its values and costs, an int32 in each array that grows with the active
  // items after the pass (pass_active, compact_row, option_mid, option_mid2, near, repair.items,
  // and during it active, option_lo and option_hi where they grow) and the repair's candidate
  // upgrade.
  const std::size_t active_arrays = active_arrays_grow ? 9 : 6;
  const std::size_t per_row = static_cast<std::size_t>(p.k) * (p.cost_stride_item != 0 ? 2 : 1) * sizeof(T) +
                              active_arrays * sizeof(std::int32_t) + sizeof(Upgrade);
  // What else the reduced path allocates (the few frontier items' arrays, the sample): small.
  constexpr std::size_t kRest = std::size_t(1) << 20;
  const std::size_t keep = ws.keep_bytes != 0 ? ws.keep_bytes : keep_workspace_bytes(row_bytes(p));
  if (held + kRest >= keep) return 0;
  const std::size_t fits = (keep - held - kRest) / per_row;
  return static_cast<std::int64_t>(std::min(static_cast<std::size_t>(p.n / kCompactShare), fits));
}

// Where the first pass over a run copies the rows of the items it leaves active (values nullptr:
// nowhere): arrays of values and costs (costs nullptr where they are shared) of rows of K, the
// run's first active item's at row `row`, the next ones after it, up to row `end` (those past
// it are not copied).
template <class T>
struct RowSink {
  T* values = nullptr;
  T* costs = nullptr;
  std::int64_t row = 0, end = 0;
};

// Copies one row of k entries; k = 4 and 8 (the common tier counts) as fixed-size copies, a few
// moves instead of a call of memcpy per row.
template <class T>
APPORTION_INLINE void copy_row(T* to, const T* from, std::int64_t k) {
  if (k == 8) {
    std::memcpy(to, from, 8 * sizeof(T));
  } else if (k == 4) {
    std::memcpy(to, from, 4 * sizeof(T));
  } else {
    std::memcpy(to, from, static_cast<std::size_t>(k) * sizeof(T));
  }
}

// Totals of the first pass over a run of items [begin, end), whose active items it wrote to
// ws.active / option_lo / option_hi from index `out` on.
struct FirstPass {
  // The fixed totals set the frontier items' budget and add to the bound. The bracket and the
  // budget left to the frontier items take the cost's plain running sum (fixed_cost.sum, which
  // is what a plain `+=` in item order gives); with its carry it starts the allocation's exact
  // total (reduced_allocation_fits). The value's is compensated, as the bound it joins decides
  // "optimal" to a few ulps.
  CompensatedSum fixed_cost;
  CompensatedSum fixed_value;
  double cost_lo = 0.0, cost_hi = 0.0;  // of the active items, at the bracket ends
  CompensatedSum cheapest;
  std::size_t active_count = 0;
  bool usable = true;  // false: bad input, or an item with no allowed option
};

// Items per chunk of the first pass. A chunk's options are picked first, all at once (the
// vector code, which wants most registers), then added to the totals in item order (a short
// loop whose sums stay in registers). In one loop the sums' carries were spilled to the stack,
// and each item waited on a store and a reload.
constexpr std::int64_t kPassChunk = 256;

// What the pick phase leaves per item of a chunk: its options at the two ends of the bracket
// (-1: none there) and its cheapest cost; at x86-64-v4 also, where the item is fixed (the same
// option at both ends), that option's cost and value times the sign, +0.0 where it stays active.
// Those two are input numbers or their negations, kept in the input's type T as read or negated,
// never rounded: a narrowing conversion would flush a subnormal float to zero on a thread that
// flushes results (FTZ). At v4 the pick keeps them in its vectors as it picks: read again by the
// fix loop, each item took two loads at its option, two conversions for float, and an
// item-by-item mask (routing 1e5 x 8, 1 thread, native CPU time: float64 1.11-1.14 ms, 1.08-1.09
// kept; float32 0.84-0.87, 0.78-0.79).
template <class T>
struct ChunkPicks {
  std::int32_t option_lo[kPassChunk], option_hi[kPassChunk];
  double cheapest[kPassChunk];
  T fixed_cost[kPassChunk], fixed_value[kPassChunk];  // (x86-64-v4 only)
};

// Item i's cost and value (times the sign) at option a where it is fixed (b == a), +0.0 where it
// stays active, for ChunkPicks: the x86-64-v4 pass's items that its vector picks do not keep
// (masked rows, the last few, float rows picked in double). A float value is negated, not
// multiplied: the other paths multiply it widened to double, exactly, and a product in float of
// a subnormal would flush to zero under FTZ. By a mask, not a select: GCC made `fixed ? x : 0` a
// branch around the loads, mispredicted as often as the active items come.
template <class T>
APPORTION_INLINE void fixed_terms(const InstanceView<T>& p, std::int64_t i, std::int32_t a, std::int32_t b, T& cost,
                                  T& value) {
  using Bits = std::conditional_t<std::is_same_v<T, float>, std::uint32_t, std::uint64_t>;
  const Bits keep = Bits{0} - static_cast<Bits>(a == b);  // every bit set where fixed
  const T c = p.costs[i * p.cost_stride_item + a], raw = p.values[i * p.k + a];
  T v;
  if constexpr (std::is_same_v<T, float>) {
    v = p.value_sign < 0.0 ? -raw : raw;  // (the sign is +-1)
  } else {
    v = p.value_sign * raw;  // as every double path takes it (under FTZ too)
  }
  Bits cost_bits, value_bits;
  std::memcpy(&cost_bits, &c, sizeof cost_bits);
  std::memcpy(&value_bits, &v, sizeof value_bits);
  cost_bits &= keep;
  value_bits &= keep;
  std::memcpy(&cost, &cost_bits, sizeof cost);
  std::memcpy(&value, &value_bits, sizeof value);
}

#if APPORTION_VECTOR_PICK
// How far ahead of its block the first pass prefetches rows: the first cache line of the block's
// value and cost rows kPrefetchItems items ahead, or, where the rows take more than
// kPassPrefetchAllBytes, every line of them kPrefetchAheadBytes ahead in each array. The
// hardware prefetcher alone left the pass waiting on loads: routing 1e6 x 8 float32 took 38-42
// ms CPU without it, 25-27 ms with the first lines; 64 and 512 items ahead measured alike.
constexpr std::int64_t kPrefetchItems = 64;
constexpr std::int64_t kCacheLineBytes = 64;
// Every line (routing, 1 thread, native CPU time, alternating runs): 1e6 x 8 took 11.4-12.4 ms
// instead of 14.5-15.7 (float64) and 8.4-8.7 instead of 8.9-9.9 (float32); 1e5 x 8 float64
// (12.8 MB) and 3e5 x 8 float64 (38 MB) took the same time either way; 1000 to 40000 x 8
// float64 (0.13-5.1 MB) took 2-7% longer, their rows in cache and the prefetches instructions
// only. 16 MiB lies between the sizes that lost and those that gained; it is not tuned finer.
constexpr std::size_t kPassPrefetchAllBytes = std::size_t(16) << 20;
// 64 items of 8 doubles. In items (64 ahead whatever K), 20000 x 200 float64 and 40000 x 100
// float32 took 7% longer than with the first lines: 100 KB ahead, the lines left L1 before use.
constexpr std::int64_t kPrefetchAheadBytes = 4096;

// Calls blocks(std::integral_constant<int, K>{}) with K = k for the common tier counts 4 and 8,
// so that their loops over the options unroll, and K = 0 (k known at run time) otherwise.
template <class Blocks>
APPORTION_INLINE void with_unrolled_k(std::int64_t k, Blocks&& blocks) {
  if (k == 4) {
    blocks(std::integral_constant<int, 4>{});
  } else if (k == 8) {
    blocks(std::integral_constant<int, 8>{});
  } else {
    blocks(std::integral_constant<int, 0>{});
  }
}

// Stores W lanes of option indices (held as doubles) as int32.
template <int W>
APPORTION_INLINE void store_options(typename PickVec<W>::D option, std::int32_t* to) {
  const typename PickVec<W>::I32 narrow = __builtin_convertvector(option, typename PickVec<W>::I32);
  std::memcpy(to, &narrow, sizeof narrow);
}
#endif

// The pick phase of the first pass over items [c0, c1) (at most kPassChunk): each item's LP
// options at lo and hi and its cheapest cost into `picks` (at W = 8, x86-64-v4, its fixed cost
// and value too: see ChunkPicks), its option at lo into item_option and, with `margins`, its
// margin. W items at a time by pick_block where the rows are unmasked, each item alone by
// pick_at_two_slopes otherwise. Returns false on bad input or where an item has no option at an
// end (the full path decides those).
template <int W, bool margins, class T>
APPORTION_INLINE bool pick_chunk(const InstanceView<T>& p, double lo, double hi, std::int64_t c0, std::int64_t c1,
                                 ChunkPicks<T>& picks, std::int32_t* item_option, double* margin) {
  std::int64_t i = c0;
#if APPORTION_VECTOR_PICK
  if (p.mask == nullptr) {
    const PickRows<T> rows(p, W);
    using D = typename PickVec<W>::D;
    // The blocks' checks, folded as they come and tested once a chunk: the sum of their `finite`
    // lanes (NaN where one was) and the least of their cheapest costs and options (< 0 where one
    // was). Not a comparison per block: GCC 12 lowers one whose lanes are integers (a mask
    // made into a vector) lane by lane at x86-64-v4.
    D finite = {}, least = D{} + INFINITY;
    // The double pick of items first..first+W.
    auto double_block = [&](std::int64_t first, auto k_known) APPORTION_INLINE_LAMBDA {
      std::int64_t item[W];
      for (int l = 0; l < W; ++l) item[l] = first + l;
      const BlockPicks<W> b = pick_block<W, margins, decltype(k_known)::value>(rows, item, lo, hi);
      // No option at an end (every score -inf there, from an overflow of lambda * cost): the
      // full path decides.
      finite += b.finite;
      least = b.cheap < least ? b.cheap : least;
      least = b.option_lo < least ? b.option_lo : least;
      least = b.option_hi < least ? b.option_hi : least;
      const std::int64_t at = first - c0;
      store_options<W>(b.option_lo, picks.option_lo + at);
      store_options<W>(b.option_hi, picks.option_hi + at);
      store_options<W>(b.option_lo, item_option + first);
      std::memcpy(picks.cheapest + at, &b.cheap, sizeof b.cheap);
      if constexpr (W == 8 && std::is_same_v<T, double>) {  // (below v4, the fix loop reads them)
        const D fixed_cost = b.option_lo == b.option_hi ? b.cost_lo : D{};
        const D fixed_value = b.option_lo == b.option_hi ? b.value_lo : D{};
        std::memcpy(picks.fixed_cost + at, &fixed_cost, sizeof fixed_cost);
        std::memcpy(picks.fixed_value + at, &fixed_value, sizeof fixed_value);
      } else if constexpr (W == 8) {  // float rows the float pick did not prove: as read
        for (std::int64_t item = first; item < first + W; ++item) {
          fixed_terms(p, item, picks.option_lo[item - c0], picks.option_hi[item - c0], picks.fixed_cost[item - c0],
                      picks.fixed_value[item - c0]);
        }
      }
      if constexpr (margins) {  // as pick_at_two_slopes' caller: std::min of the ends' margins
        const D m_lo = b.best_lo - b.second_lo, m_hi = b.best_hi - b.second_hi;
        const D m = b.option_lo == b.option_hi ? (m_hi < m_lo ? m_hi : m_lo) : D{};
        std::memcpy(margin + first, &m, sizeof m);
      }
    };
    // The rows of the `items` items `distance` past `first` (at least the block's own count;
    // the last `items` rows near the end: pointers inside the rows), their first line or all.
    const bool every_line = row_bytes(p) > kPassPrefetchAllBytes;
    const std::int64_t item_bytes = rows.k * static_cast<std::int64_t>(sizeof(T));
    const std::int64_t distance = every_line ? kPrefetchAheadBytes / std::max<std::int64_t>(item_bytes, 1) : kPrefetchItems;
    auto prefetch_ahead = [&](std::int64_t first, int items) APPORTION_INLINE_LAMBDA {
      const std::int64_t ahead = std::min(first + std::max<std::int64_t>(distance, items), rows.n - items);
      if (ahead < 0) return;
      const char* value_rows = reinterpret_cast<const char*>(rows.values + ahead * rows.k);
      const char* cost_rows = reinterpret_cast<const char*>(rows.costs + ahead * rows.cost_stride);
      const std::int64_t bytes = every_line ? items * item_bytes : 1;
      for (std::int64_t b = 0; b < bytes; b += kCacheLineBytes) {
        __builtin_prefetch(value_rows + b);
        if (rows.cost_stride != 0) __builtin_prefetch(cost_rows + b);
      }
    };
    // (Every lambda here always inlined: GCC cloned `blocks` for K = 4 out of line, compiled
    // for the baseline, and the x86-64-v3 pass called it: routing 1e5 x 4 float32 took 3.2 ms,
    // float64 0.85 ms.)
    auto blocks = [&](auto k_known) APPORTION_INLINE_LAMBDA {
#if APPORTION_FLOAT_PICK
      // Float rows at x86-64-v3 and v4 (W = 4 or 8 doubles a register, L = 8 or 16 floats): the
      // float pick, L items at a time, where it proves the double pick's options (float_pick.hpp);
      // the double pick redoes a block with an unproven item (at L = 16, only the 8-item half
      // that holds it). Not for the margins, which are double scores.
      if constexpr (std::is_same_v<T, float> && W >= 4 && !margins) {
        constexpr int L = 2 * W;
        const FloatSlopes slopes(lo, hi, p.value_sign);
        const PickRows<T> rows8(p, 8);
        // (per-item cost rows have the values' stride K)
        const bool float_rows = rows.cost_stride == 0 || rows.cost_stride == rows.k;
        for (; slopes.usable && float_rows && i + L <= c1 && rows8.readable(i + L - 1); i += L) {
          prefetch_ahead(i, L);
          std::int64_t item[L];
          for (int l = 0; l < L; ++l) item[l] = i + l;
          const FloatBlockPicks<L> f = float_pick_items<L, decltype(k_known)::value>(
              rows.values, rows.costs, rows.cost_stride, rows.k, item, slopes);
          // The float picks of lanes [from, from + count) of the block.
          auto keep = [&](int from, int count) APPORTION_INLINE_LAMBDA {
            const std::int64_t at = i - c0 + from;
            const std::size_t bytes = static_cast<std::size_t>(count) * sizeof(std::int32_t);
            std::memcpy(picks.option_lo + at, reinterpret_cast<const std::int32_t*>(&f.option_lo) + from, bytes);
            std::memcpy(picks.option_hi + at, reinterpret_cast<const std::int32_t*>(&f.option_hi) + from, bytes);
            std::memcpy(item_option + i + from, reinterpret_cast<const std::int32_t*>(&f.option_lo) + from, bytes);
            for (int l = from; l < from + count; l += 4) {  // widened 4 at a time (see widen_quad)
              const DoubleQuad wide = widen_quad<L>(f.cheapest, l);
              std::memcpy(picks.cheapest + i - c0 + l, &wide, sizeof wide);
            }
            if constexpr (L == 16) {  // (at L = 8, the fix loop reads them)
              const std::size_t floats = static_cast<std::size_t>(count) * sizeof(float);
              std::memcpy(picks.fixed_cost + at, reinterpret_cast<const float*>(&f.fixed_cost) + from, floats);
              std::memcpy(picks.fixed_value + at, reinterpret_cast<const float*>(&f.fixed_value) + from, floats);
            }
          };
          if (f.sure) {
            keep(0, L);
            continue;
          }
          for (int h = 0; h < 2; ++h) {  // each half of W items alone (at L = 8, neither is sure)
            if (f.half_sure[h]) {
              keep(h * W, W);
            } else {
              double_block(i + h * W, k_known);
            }
          }
        }
      }
#endif
      for (; i + W <= c1 && rows.readable(i + W - 1); i += W) {
        prefetch_ahead(i, W);
        double_block(i, k_known);
      }
    };
    with_unrolled_k(p.k, blocks);
    for (int l = 0; l < W; ++l) {
      if (!(finite[l] == 0.0) || least[l] < 0.0) return false;
    }
  }
#endif
  for (; i < c1; ++i) {
    OptionPick at_lo, at_hi;
    const std::int64_t at = i - c0;
    if (!pick_at_two_slopes<margins>(p, i, lo, hi, at_lo, at_hi, picks.cheapest[at]) || at_lo.option < 0 ||
        at_hi.option < 0) {
      return false;
    }
    picks.option_lo[at] = item_option[i] = at_lo.option;
    picks.option_hi[at] = at_hi.option;
    if constexpr (W == 8) {  // (below v4, the fix loop reads them)
      fixed_terms(p, i, at_lo.option, at_hi.option, picks.fixed_cost[at], picks.fixed_value[at]);
    }
    if constexpr (margins) {
      // a is optimal over the whole bracket, so no other option's score falls short of its by
      // less than the smaller of the margins at the ends (the shortfall is linear in lambda).
      margin[i] = at_lo.option == at_hi.option
                      ? std::min(at_lo.score - at_lo.second, at_hi.score - at_hi.second)
                      : 0.0;
    }
  }
  return true;
}

#if APPORTION_X86_DISPATCH
using PassSums = double __attribute__((vector_size(32)));  // first_pass_at's three sums side by side

// Lanes 4q..4q+4 of a chunk's x86-64-v4 terms as doubles (widened exactly where T is float).
template <class T>
APPORTION_INLINE PassSums pass_quad(const T* terms, std::int64_t q) {
  if constexpr (std::is_same_v<T, float>) {
    // Element by element, which GCC folds into one widening load (vcvtps2pd ymm, mem); a
    // __builtin_convertvector of the 4 floats was made two halves and an insert.
    const float* x = terms + 4 * q;
    return PassSums{static_cast<double>(x[0]), static_cast<double>(x[1]), static_cast<double>(x[2]),
                    static_cast<double>(x[3])};
  } else {
    using Quad = double __attribute__((vector_size(32), aligned(8), may_alias));
    return *reinterpret_cast<const Quad*>(terms + 4 * q);
  }
}

// The x86-64-v4 fix loop's sums over the first 4 floor(count / 4) items of a chunk, in item
// order, each item's (cheapest, fixed cost, fixed value, 0) added as the scalar loop adds it:
// the same TwoSums in the same order, so the same bits. Four items' terms are read as three
// vectors and transposed into four (8 shuffles), where one item's took three scalar loads,
// two conversions and two inserts. Returns the items summed.
template <class T>
APPORTION_INLINE std::int64_t add_fixed_quads(const ChunkPicks<T>& picks, std::int64_t count, PassSums& sum,
                                              PassSums& carry) {
  using Lanes = std::int64_t __attribute__((vector_size(32)));
  std::int64_t q = 0;
  for (; 4 * q + 4 <= count; ++q) {
    const PassSums cheapest = pass_quad(picks.cheapest, q), cost = pass_quad(picks.fixed_cost, q),
                   value = pass_quad(picks.fixed_value, q), zero = {};
    const PassSums t0 = __builtin_shuffle(cheapest, cost, Lanes{0, 4, 2, 6});  // (c0, f0, c2, f2)
    const PassSums t1 = __builtin_shuffle(cheapest, cost, Lanes{1, 5, 3, 7});  // (c1, f1, c3, f3)
    const PassSums t2 = __builtin_shuffle(value, zero, Lanes{0, 4, 2, 6});     // (v0, 0, v2, 0)
    const PassSums t3 = __builtin_shuffle(value, zero, Lanes{1, 5, 3, 7});     // (v1, 0, v3, 0)
    two_sum_add(sum, carry, __builtin_shuffle(t0, t2, Lanes{0, 1, 4, 5}));
    two_sum_add(sum, carry, __builtin_shuffle(t1, t3, Lanes{0, 1, 4, 5}));
    two_sum_add(sum, carry, __builtin_shuffle(t0, t2, Lanes{2, 3, 6, 7}));
    two_sum_add(sum, carry, __builtin_shuffle(t1, t3, Lanes{2, 3, 6, 7}));
  }
  return 4 * q;
}

// Appends items c0 + [0, count) of a chunk whose options at the two ends differ to active,
// option_lo and option_hi from entry `at` on, 16 at a time by compressing (x86-64-v4), and
// returns the new count. Each store writes 16 entries, from `at`: the first pass's arrays have
// room for one entry per item of its range, and `at` counts only items before the 16.
template <class T>
APPORTION_INLINE std::size_t append_active(const ChunkPicks<T>& picks, std::int64_t c0, std::int64_t count,
                                           std::int32_t* active, std::int32_t* option_lo, std::int32_t* option_hi,
                                           std::size_t at) {
  using Ints = std::int32_t __attribute__((vector_size(64)));
  using Row = std::int32_t __attribute__((vector_size(64), aligned(4), may_alias));
  const Ints lanes = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  std::int64_t a = 0;
  for (; a + 16 <= count; a += 16) {
    const Ints lo = *reinterpret_cast<const Row*>(picks.option_lo + a);
    const Ints hi = *reinterpret_cast<const Row*>(picks.option_hi + a);
    const unsigned short differ = __builtin_ia32_cmpd512_mask(lo, hi, 4 /* _MM_CMPINT_NE */, 0xffff);
    const Ints item = lanes + static_cast<std::int32_t>(c0 + a);
    // Compressed in registers and stored whole: a compressing store to memory is slow on some CPUs.
    *reinterpret_cast<Row*>(active + at) = __builtin_ia32_compresssi512_mask(item, Ints{}, differ);
    *reinterpret_cast<Row*>(option_lo + at) = __builtin_ia32_compresssi512_mask(lo, Ints{}, differ);
    *reinterpret_cast<Row*>(option_hi + at) = __builtin_ia32_compresssi512_mask(hi, Ints{}, differ);
    at += static_cast<std::size_t>(__builtin_popcount(differ));
  }
  for (; a < count; ++a) {
    const std::int32_t lo = picks.option_lo[a], hi = picks.option_hi[a];
    active[at] = static_cast<std::int32_t>(c0 + a);
    option_lo[at] = lo;
    option_hi[at] = hi;
    at += lo != hi;
  }
  return at;
}
#endif

// The first pass over items [begin, end), a chunk at a time: the pick phase (pick_chunk), then
// each item fixed or made active, in item order. The active items go to ws.active, option_lo
// and option_hi from entry `out` on, which need room for end - begin entries there. Bad input,
// or an item with no allowed option at an end, makes the run unusable.
template <int W, bool margins, class T>
APPORTION_INLINE FirstPass first_pass_at(const InstanceView<T>& p, LagrangianWorkspace& ws, double lo, double hi,
                                         std::int64_t begin, std::int64_t end, std::int64_t out, RowSink<T> sink) {
  FirstPass r;
  std::int32_t* active = ws.active.data() + out;
  std::int32_t* option_lo = ws.option_lo.data() + out;
  std::int32_t* option_hi = ws.option_hi.data() + out;
  ChunkPicks<T> picks;
  // The three compensated sums side by side, lane by lane as CompensatedSum::add: the cheapest
  // costs, and the fixed items' costs and values (a lane adds 0.0 for an active item, which
  // leaves its sum and carry as they were: a sum that starts at +0.0 never holds -0.0).
  using Sums = double __attribute__((vector_size(32)));
  using SumBits = std::int64_t __attribute__((vector_size(32)));
  Sums sum = {}, carry = {};
  std::size_t active_count = 0, active_summed = 0;
  double cost_lo = 0.0, cost_hi = 0.0;
  // p's fields as locals: the loop's stores could otherwise alias them (InstanceView::cost and
  // ::value, read in place).
  const T* const values = p.values;
  const T* const costs = p.costs;
  const std::int64_t k = p.k, cost_stride = p.cost_stride_item;
  const double sign = p.value_sign;
  for (std::int64_t c0 = begin; c0 < end; c0 += kPassChunk) {
    const std::int64_t c1 = std::min(end, c0 + kPassChunk);
    if (!pick_chunk<W, margins>(p, lo, hi, c0, c1, picks, ws.item_option.data(), ws.margin.data())) {
      r.usable = false;  // bad input: the full path checks the input and reports it
      return r;
    }
    std::int64_t i = c0;
#if APPORTION_X86_DISPATCH
    if constexpr (W == 8) {  // (x86-64-v4: the pick's terms, 4 items a time; see add_fixed_quads)
      i = add_fixed_quads(picks, c1 - c0, sum, carry) + c0;
      active_count = append_active(picks, c0, i - c0, active, option_lo, option_hi, active_count);
    }
#endif
    for (; i < c1; ++i) {
      const std::int32_t a = picks.option_lo[i - c0], b = picks.option_hi[i - c0];  // both >= 0
      Sums x;
      if constexpr (W == 8) {  // (x86-64-v4: the pick's)
        x = Sums{picks.cheapest[i - c0], static_cast<double>(picks.fixed_cost[i - c0]),
                 static_cast<double>(picks.fixed_value[i - c0]), 0.0};
      } else {
        // Read at the option: an active item's cost and value as +0.0 by a mask, not a select
        // (GCC made `a == b ? x : 0.0` a branch around the loads, mispredicted as often as the
        // active items come). The mask is one broadcast: built lane by lane, it took four
        // shuffles; masked as scalars (fixed_terms), the lanes went through the stack.
        const T* crow = costs + i * cost_stride;
        x = Sums{picks.cheapest[i - c0], static_cast<double>(crow[a]), sign * static_cast<double>(values[i * k + a]),
                 0.0};
        SumBits bits;
        std::memcpy(&bits, &x, sizeof bits);
        const std::int64_t keep = -static_cast<std::int64_t>(a == b);  // every bit set where fixed
        bits &= (SumBits{} + keep) | SumBits{-1, 0, 0, 0};
        std::memcpy(&x, &bits, sizeof x);
      }
      two_sum_add(sum, carry, x);
      // Active (a != b) without a branch: about 40% of the items stay active, in no pattern the
      // predictor learns across instances (490 mispredictions a solve of 1000 x 8, a third of
      // the rest). The entry is always written; the count advances only for an active item.
      active[active_count] = static_cast<std::int32_t>(i);
      option_lo[active_count] = a;
      option_hi[active_count] = b;
      active_count += a != b;
    }
    // The chunk's active items' costs at the two ends, in item order, then their copies, while
    // their rows are in L1.
    const std::size_t chunk_active = active_summed;
    for (; active_summed < active_count; ++active_summed) {
      const std::int64_t i = active[active_summed];
      const T* crow = costs + i * cost_stride;
      cost_lo += static_cast<double>(crow[option_lo[active_summed]]);
      cost_hi += static_cast<double>(crow[option_hi[active_summed]]);
    }
    if (sink.values != nullptr) {
      const std::size_t room = sink.end > sink.row ? static_cast<std::size_t>(sink.end - sink.row) : 0;
      for (std::size_t a = chunk_active; a < std::min(active_count, room); ++a) {
        const std::int64_t i = active[a], at = (sink.row + static_cast<std::int64_t>(a)) * k;
        copy_row(sink.values + at, values + i * k, k);
        if (sink.costs != nullptr) copy_row(sink.costs + at, costs + i * cost_stride, k);
      }
    }
  }
  r.cheapest = lane_sum(sum, carry, 0);
  r.fixed_cost = lane_sum(sum, carry, 1);
  r.fixed_value = lane_sum(sum, carry, 2);
  r.cost_lo = cost_lo;
  r.cost_hi = cost_hi;
  r.active_count = active_count;
  return r;
}

// The first pass at the CPU's SIMD level (cpu_dispatch.hpp).
template <class T>
FirstPass first_pass(const InstanceView<T>& p, LagrangianWorkspace& ws, double lo, double hi, bool margins,
                     std::int64_t begin, std::int64_t end, std::int64_t out, RowSink<T> sink) {
  return simd_dispatch([&](auto target) {
    constexpr int W = decltype(target)::kLanes;
    return margins ? first_pass_at<W, true>(p, ws, lo, hi, begin, end, out, sink)
                   : first_pass_at<W, false>(p, ws, lo, hi, begin, end, out, sink);
  });
}

// The LP options of the active items at slopes t1 and t2 (the bracket's narrowing), and their
// total costs (summed in item order), at the CPU's SIMD level. The items passed the first
// pass, so their input is valid. Their rows are prefetched `ahead` items ahead (kNoPrefetch:
// none, for rows read in order).
template <class T>
void pick_active(const InstanceView<T>& p, const std::int32_t* items, std::size_t count, std::size_t ahead, double t1,
                 double t2, std::int32_t* option1, std::int32_t* option2, double& cost1, double& cost2) {
  simd_dispatch([&](auto target) {
    [[maybe_unused]] constexpr int W = decltype(target)::kLanes;  // (no vector pick: unused)
    // Local sums, stored once at the end: added through the references, they were loaded and
    // stored for every item, each addition waiting on the last one's store.
    double sum1 = 0.0, sum2 = 0.0;
    auto add = [&](std::size_t a, std::int32_t at1, std::int32_t at2) APPORTION_INLINE_LAMBDA {
      const std::int32_t i = items[a];
      option1[a] = at1;
      option2[a] = at2;
      sum1 += p.cost(i, at1);
      sum2 += p.cost(i, at2);
    };
    std::size_t a = 0;
#if APPORTION_VECTOR_PICK
    if (p.mask == nullptr) {
      const PickRows<T> rows(p, W);
      // items[from..from+lanes) into item (prefetching rows ahead); false where a block may
      // not read one of their rows.
      auto gather = [&](std::size_t from, int lanes, const PickRows<T>& block_rows,
                        std::int64_t* item) APPORTION_INLINE_LAMBDA {
        for (int l = 0; l < lanes; ++l) {
          if (from + l + ahead < count) prefetch_row(p, items[from + l + ahead]);
        }
        bool readable = true;
        for (int l = 0; l < lanes; ++l) {
          item[l] = items[from + l];
          readable &= block_rows.readable(item[l]);
        }
        return readable;
      };
      // The double pick of items[from..from+W) (their rows: item[0..W)).
      auto double_block = [&](std::size_t from, const std::int64_t* item, auto k_known) APPORTION_INLINE_LAMBDA {
        const BlockPicks<W> picks = pick_block<W, false, decltype(k_known)::value>(rows, item, t1, t2);
        for (int l = 0; l < W; ++l) {
          add(from + l, static_cast<std::int32_t>(picks.option_lo[l]), static_cast<std::int32_t>(picks.option_hi[l]));
        }
      };
      auto blocks = [&](auto k_known) APPORTION_INLINE_LAMBDA {
#if APPORTION_FLOAT_PICK
        // Float rows at x86-64-v3 and v4: the float pick of L items, as in the first pass
        // (pick_chunk), where it proves the double pick's options at t1 and t2; otherwise the
        // double pick.
        if constexpr (std::is_same_v<T, float> && W >= 4) {
          constexpr int L = 2 * W;
          const FloatSlopes slopes(t1, t2, p.value_sign);
          const PickRows<T> rows8(p, 8);
          const bool float_rows = rows.cost_stride == 0 || rows.cost_stride == rows.k;
          std::int64_t item[L];
          for (; slopes.usable && float_rows && a + L <= count && gather(a, L, rows8, item); a += L) {
            const FloatBlockPicks<L> f = float_pick_items<L, decltype(k_known)::value>(
                rows.values, rows.costs, rows.cost_stride, rows.k, item, slopes);
            // Each half of W items alone where the block is not sure (at L = 8, neither half is),
            // in item order.
            for (int h = 0; h < L; h += W) {
              if (f.half_sure[h / W]) {
                for (int l = h; l < h + W; ++l) add(a + l, f.option_lo[l], f.option_hi[l]);
              } else {
                double_block(a + h, item + h, k_known);
              }
            }
          }
        }
#endif
        for (; a + W <= count; a += W) {
          std::int64_t item[W];
          if (!gather(a, W, rows, item)) break;
          double_block(a, item, k_known);
        }
      };
      // (Unrolled as in the first pass: a loop over K / W vectors also mispredicted its exit.)
      with_unrolled_k(p.k, blocks);
    }
#endif
    for (; a < count; ++a) {
      if (a + ahead < count) prefetch_row(p, items[a + ahead]);
      OptionPick at1, at2;
      double cheapest_cost;
      pick_at_two_slopes<false>(p, items[a], t1, t2, at1, at2, cheapest_cost);
      add(a, at1.option, at2.option);
    }
    cost1 = sum1;
    cost2 = sum2;
  });
}

// The narrowing's histogram of the active items' chords (the rows of slot a at row[a], their
// options option_lo[a] and option_hi[a]): each chord's weight (its cost drop, at least 0) into
// the bucket of its slope among kChordBuckets over [lo, hi] (bucket 0 the steepest; scale =
// kChordBuckets / (hi - lo)), added in slot order; the least and the largest slope; whether
// every chord costs more at lo than at hi. At the CPU's SIMD level: at x86-64-v3 and v4, four
// chords at a time, the same arithmetic lane by lane and no branch (the scalar loop's bucket
// bounds and max were branches).
constexpr int kChordBuckets = 64;
template <class T>
void chord_histogram(const InstanceView<T>& rows, const std::int32_t* row, const std::int32_t* option_lo,
                     const std::int32_t* option_hi, std::size_t count, std::size_t ahead, double lo, double hi,
                     double scale, double* bucket, double& flattest, double& steepest, bool& rising) {
  simd_dispatch([&](auto target) {
    constexpr int W = decltype(target)::kLanes;
    double least = INFINITY, most = -INFINITY;
    bool all_rising = true;
    const double middle = 0.5 * (lo + hi);
    // One chord: its bucket and weight (the slots' arrays), and the extremes.
    auto chord = [&](std::size_t a, std::int32_t& bucket_of, double& weight) APPORTION_INLINE_LAMBDA {
      if (a + ahead < count) prefetch_row(rows, row[a + ahead]);
      const std::int32_t r = row[a];
      const double dw = rows.cost(r, option_lo[a]) - rows.cost(r, option_hi[a]);
      const double dv = rows.value(r, option_lo[a]) - rows.value(r, option_hi[a]);
      const double slope = dw > 0.0 ? dv / dw : middle;
      all_rising &= dw > 0.0;
      least = std::min(least, slope);
      most = std::max(most, slope);
      const double at = (hi - slope) * scale;
      // Capped in double before the cast: `at` is inf when hi - lo is subnormal.
      bucket_of = at > 0.0 ? static_cast<std::int32_t>(std::min(static_cast<double>(kChordBuckets - 1), at)) : 0;
      weight = std::max(dw, 0.0);
    };
    using Quad = double __attribute__((vector_size(32)));
    using QuadMask = std::int64_t __attribute__((vector_size(32)));
    using Quad32 = std::int32_t __attribute__((vector_size(16)));
    Quad least4 = Quad{} + INFINITY, most4 = Quad{} - INFINITY;
    QuadMask rising4 = QuadMask{} - 1;
    // A block's buckets and weights first, then added to the buckets in slot order (the same
    // sums): added as each was found, a bucket's address waited on the chord's division, and the
    // bucket's store took a sixth of fix_items' time in a profile of routing 1000 x 8.
    constexpr std::size_t kBlock = 64;
    std::int32_t block_bucket[kBlock];
    double block_weight[kBlock];
    for (std::size_t a0 = 0; a0 < count; a0 += kBlock) {
      const std::size_t a1 = std::min(count, a0 + kBlock);
      std::size_t a = a0;
      if constexpr (W >= 4) {
        for (; a + 4 <= a1; a += 4) {
          Quad w_lo, w_hi, v_lo, v_hi;
          for (int l = 0; l < 4; ++l) {
            if (a + l + ahead < count) prefetch_row(rows, row[a + l + ahead]);
            const std::int32_t r = row[a + l];
            w_lo[l] = rows.cost(r, option_lo[a + l]);
            w_hi[l] = rows.cost(r, option_hi[a + l]);
            v_lo[l] = rows.value(r, option_lo[a + l]);
            v_hi[l] = rows.value(r, option_hi[a + l]);
          }
          const Quad dw = w_lo - w_hi, dv = v_lo - v_hi;
          const QuadMask up = dw > 0.0;
          // (divided by 1 where the chord does not rise: no division by zero)
          const Quad slope = up ? dv / (up ? dw : Quad{} + 1.0) : Quad{} + middle;
          rising4 &= up;
          least4 = slope < least4 ? slope : least4;  // std::min, lane by lane
          most4 = most4 < slope ? slope : most4;     // std::max
          const Quad at = (hi - slope) * scale;
          const Quad top = Quad{} + static_cast<double>(kChordBuckets - 1);
          const Quad capped = at > 0.0 ? (at < top ? at : top) : Quad{};  // in [0, 63]
          const Quad32 bucket_of = __builtin_convertvector(capped, Quad32);
          const Quad weight = dw < 0.0 ? Quad{} : dw;  // std::max(dw, 0.0)
          std::memcpy(block_bucket + (a - a0), &bucket_of, sizeof bucket_of);
          std::memcpy(block_weight + (a - a0), &weight, sizeof weight);
        }
      }
      for (; a < a1; ++a) chord(a, block_bucket[a - a0], block_weight[a - a0]);
      for (std::size_t b = a0; b < a1; ++b) bucket[block_bucket[b - a0]] += block_weight[b - a0];
    }
    for (int l = 0; l < 4; ++l) {  // (the lanes' extremes: untouched at the baseline level)
      all_rising &= rising4[l] != 0;
      least = std::min(least, least4[l]);
      most = std::max(most, most4[l]);
    }
    flattest = least;
    steepest = most;
    rising = all_rising;
  });
}

// Items per run of the first pass over a large instance: the runs go to threads, and their
// totals are added in run order whatever the thread count, so that it does not change answers.
constexpr std::int64_t kPassRun = 8192;

// Fixes the items whose LP option is the same over [lo, hi] and narrows the bracket over the
// others (option_lo / option_hi: their options at the ends) until few are left in ws.active.
// Only kInside leaves a usable reduction. With copy_rows, the active items' rows may be copied
// side by side (ws.compact) for the narrowing and reduced_allocation_fits to read.
template <class T>
BracketFit fix_items(const InstanceView<T>& p, LagrangianWorkspace& ws, double lo, double hi, bool margins,
                     bool copy_rows, int threads, double& min_cost) {
  const std::int64_t n = p.n;
  const double budget = p.budget;
  ws.item_option.resize(n);
  if (margins) ws.margin.resize(n);  // (the caller zeroes it where margins are asked for but not kept)
  ws.first_lo = lo;
  ws.first_hi = hi;
  ws.near.clear();
  ws.compact.rows = 0;
  // One thread takes the runs of the pass in order, each writing its active items right after
  // the last run's, so the arrays of the active items grow with them (routing 1e6 x 8 leaves 8%
  // active): sized for every item, they held 12 MB at 1e6 items, which left no room under the
  // workspace's keep for the copied rows below. Threads write each run at its own offset (the
  // run's first item) and the runs' active items are moved together after.
  const bool in_order = threads <= 1 || n <= kPassRun;
  const std::size_t first_room = static_cast<std::size_t>(in_order ? std::min(n, kPassRun) : n);
  auto size_active_arrays = [&](std::size_t entries) {
    for (IndexScratch* a : {&ws.active, &ws.option_lo, &ws.option_hi}) {
      // Grown by doubling as a vector grows, but never past room for every item.
      if (a->capacity() < entries) {
        a->reserve(std::min(static_cast<std::size_t>(n), std::max(entries, 2 * a->capacity())));
      }
      a->resize(entries);
    }
  };
  size_active_arrays(first_room);  // cut to the active ones after the pass
  // The active items' rows are copied as the first pass finds them, into room for some
  // (compact_room); where more are active, they are read from p.
  const std::int64_t copy_room = copy_rows ? compact_room(p, ws, in_order) : 0;
  bool compact = copy_room > static_cast<std::int64_t>(kFewActive);
  if (compact && in_order) {  // room for as many active items as the copies, as compact_room counted
    const std::size_t entries = std::min(static_cast<std::size_t>(n), static_cast<std::size_t>(copy_room) + first_room);
    for (IndexScratch* a : {&ws.active, &ws.option_lo, &ws.option_hi}) a->reserve(entries);
  }
  RowSink<T> sink;
  if (compact) {
    RowCopies<T>& copies = ws.compact.only<T>();
    const std::size_t entries = static_cast<std::size_t>(copy_room) * static_cast<std::size_t>(p.k);
    copies.values.clear();  // (so that growing them moves no old rows)
    copies.values.resize(entries);
    sink.values = copies.values.data();
    if (p.cost_stride_item != 0) {
      copies.costs.clear();
      copies.costs.resize(entries);
      sink.costs = copies.costs.data();
    }
    sink.end = copy_room;
  }
  const std::size_t row_size = static_cast<std::size_t>(p.k);  // entries a row
  FirstPass pass;
  // A later run's totals added to the earlier runs', in run order whatever the thread count.
  auto add_totals = [&](const FirstPass& part) {
    pass.fixed_cost.add(part.fixed_cost);
    pass.fixed_value.add(part.fixed_value);
    pass.cost_lo += part.cost_lo;
    pass.cost_hi += part.cost_hi;
    pass.cheapest.add(part.cheapest);
  };
  if (n <= kPassRun) {
    pass = first_pass(p, ws, lo, hi, margins, 0, n, 0, sink);
    if (!pass.usable) return BracketFit::kUnusable;
    compact = compact && static_cast<std::int64_t>(pass.active_count) <= copy_room;
  } else if (in_order) {
    RowSink<T> run_sink = sink;
    for (std::int64_t begin = 0; begin < n; begin += kPassRun) {
      const std::int64_t end = std::min(n, begin + kPassRun);
      const std::size_t entries = pass.active_count + static_cast<std::size_t>(end - begin);
      if (ws.active.size() < entries) size_active_arrays(entries);
      const FirstPass part =
          first_pass(p, ws, lo, hi, margins, begin, end, static_cast<std::int64_t>(pass.active_count), run_sink);
      if (!part.usable) return BracketFit::kUnusable;
      add_totals(part);
      run_sink.row += static_cast<std::int64_t>(part.active_count);
      pass.active_count += part.active_count;
    }
    compact = compact && static_cast<std::int64_t>(pass.active_count) <= copy_room;
  } else {
    const std::int64_t runs = (n + kPassRun - 1) / kPassRun;
    std::vector<FirstPass> parts(runs);
    // The copies of a range of runs (one thread's share) go one run after the other into the
    // range's share of the room: in place where one thread takes every run, and a later range's
    // moved after the earlier ones' on threads.
    std::vector<std::int64_t> part_row(runs);
    std::vector<char> part_copied(runs);  // whether all of the run's active rows fit its room
    auto range = [&](std::int64_t first, std::int64_t last) {
      RowSink<T> run_sink = sink;
      run_sink.row = first * kPassRun * copy_room / n;  // (< 2^62: n < 2^31)
      run_sink.end = std::min(n, last * kPassRun) * copy_room / n;
      for (std::int64_t r = first; r < last; ++r) {
        parts[r] = first_pass(p, ws, lo, hi, margins, r * kPassRun, std::min(n, (r + 1) * kPassRun), r * kPassRun,
                              run_sink);
        part_row[r] = run_sink.row;
        run_sink.row += static_cast<std::int64_t>(parts[r].active_count);
        part_copied[r] = run_sink.row <= run_sink.end;
      }
    };
    parallel_for(runs, 1, threads, range);
    for (std::int64_t r = 0; r < runs; ++r) {
      const FirstPass& part = parts[r];
      if (!part.usable) return BracketFit::kUnusable;
      add_totals(part);
      // This run's active items, after the earlier runs' (in place for the first).
      const std::size_t from = static_cast<std::size_t>(r * kPassRun), to = pass.active_count;
      for (std::size_t a = 0; a < part.active_count; ++a) {
        ws.active[to + a] = ws.active[from + a];
        ws.option_lo[to + a] = ws.option_lo[from + a];
        ws.option_hi[to + a] = ws.option_hi[from + a];
      }
      // Their copied rows likewise (the ranges may overlap).
      compact = compact && part_copied[r];
      const std::size_t from_row = static_cast<std::size_t>(part_row[r]);
      if (compact && to != from_row) {
        const std::size_t bytes = part.active_count * row_size * sizeof(T);
        std::memmove(sink.values + to * row_size, sink.values + from_row * row_size, bytes);
        if (sink.costs != nullptr) {
          std::memmove(sink.costs + to * row_size, sink.costs + from_row * row_size, bytes);
        }
      }
      pass.active_count += part.active_count;
    }
  }
  ws.active.resize(pass.active_count);
  ws.option_lo.resize(pass.active_count);
  ws.option_hi.resize(pass.active_count);
  ws.pass_active.assign(ws.active.begin(), ws.active.end());
  if (compact) {
    ws.compact.rows = static_cast<std::int64_t>(pass.active_count);
    ws.compact_row.resize(pass.active_count);
    for (std::size_t a = 0; a < pass.active_count; ++a) ws.compact_row[a] = static_cast<std::int32_t>(a);
  }
  // (Where more items stayed active than the copies had room for, as on a missed bracket's
  // retry, the unused copies are kept for the next solve: given back, strongly 1e6 x 8 float32
  // seed 1 faulted 17 huge pages in again on every solve.)
  ws.pass_fixed_cost = pass.fixed_cost;
  ws.pass_fixed_value = pass.fixed_value;
  min_cost = pass.cheapest.value();
  // The fixed items' totals side by side, lane by lane as CompensatedSum::add (one two-lane
  // TwoSum an item): lane 0 the costs, whose sum is their plain running sum (it decides the
  // bracket, as FirstPass says) and whose carry makes it their exact total, for the bound
  // (solve_lp_reduced); lane 1 the values. (Two scalar sums took 1.3% more instructions of a
  // routing 1000 x 8 solve.)
  using Totals = double __attribute__((vector_size(16)));
  Totals fixed_sum = {pass.fixed_cost.sum, pass.fixed_value.sum};
  Totals fixed_carry = {pass.fixed_cost.carry, pass.fixed_value.carry};
  double cost_lo = pass.cost_lo, cost_hi = pass.cost_hi;
  if (!(min_cost <= budget)) return BracketFit::kUnusable;
  if (!(fixed_sum[0] + cost_lo > budget)) return BracketFit::kBelow;
  if (!(fixed_sum[0] + cost_hi <= budget)) return BracketFit::kAbove;
  // Narrowing: the LP of the active items' chords (their option at lo against their option at
  // hi) guesses the break; two trial slopes just around the guess split the bracket in up to
  // three, and the part where W crosses the budget becomes the new bracket. Items whose
  // options agree at its ends are fixed.
  // The chords' LP by a weighted histogram over [lo, hi] (every chord's slope lies there: its
  // ends are LP options at the two ends), interpolated inside the bucket where the chords,
  // steepest first, pass the budget: a guess needs no exact selection (chord_histogram, of
  // kChordBuckets buckets).

  // The active items' rows: in `rows` at row[a] for active slot a, their copies side by side
  // (read in order, no prefetches needed) or p's own (row[a] is the item).
  const InstanceView<T> rows = compact ? ws.compact.view(p) : p;
  const std::size_t ahead = compact ? kNoPrefetch : active_prefetch_ahead(p);
  // An active item i (in `rows` at r) fixed at option q while the bracket narrows: its totals
  // join the fixed ones, and it joins `near`, whose raw options the primal's repair still scans.
  // The totals are the caller's (the fix loop's locals: GCC kept the captured ones in memory,
  // each item's addition waiting on the last one's store). `near` has room for every active
  // item (each is fixed once at most): no call in the loop.
  ws.near.resize(ws.active.size());
  std::int32_t* const near = ws.near.data();
  std::size_t near_count = 0;
  auto fix_near = [&](std::int32_t i, std::int32_t r, std::int32_t q, Totals& total_sum, Totals& total_carry) {
    ws.item_option[i] = q;
    two_sum_add(total_sum, total_carry, Totals{rows.cost(r, q), rows.value(r, q)});
    near[near_count++] = r;  // (its copied row, or the item itself: see LagrangianWorkspace::near)
    if (margins) ws.margin[i] = 0.0;  // its margins were of other options
  };
  // The rounds, over copied rows or p's own (kCopied a constant, so that p's own keep their
  // loops as they were). Inlined: called, the lambda kept the bracket and the totals in memory
  // (routing 1000 x 8 float64: 1.063M instructions in fix_items for 21 solves, against 0.936M).
  auto narrow = [&](auto copied) APPORTION_INLINE_LAMBDA {
    constexpr bool kCopied = decltype(copied)::value;
    for (int round = 0; round < 16 && ws.active.size() > kFewActive; ++round) {
      const std::size_t count = ws.active.size();
      std::int32_t* const row = kCopied ? ws.compact_row.data() : ws.active.data();
      double bucket[kChordBuckets] = {};
      const double scale = kChordBuckets / (hi - lo);
      double flattest, steepest;
      bool rising;  // every chord costs more at lo than at hi
      chord_histogram(rows, row, ws.option_lo.data(), ws.option_hi.data(), count, ahead, lo, hi, scale, bucket,
                      flattest, steepest, rising);
      if (flattest == steepest) {
        // All tied (as p = w makes every item): no slope between splits them, and at the break
        // any split of the items between their two ends is optimal. The LP takes tied steps in
        // item order, so the items before the break are fixed at their costlier end and those
        // after it at their cheaper end, all but kFewActive around it. As `near` items, the raw
        // repair still sees their other options (subset-sum needs them to fill the budget).
        if (rising && count > kManyTied) {
          const double room = budget - fixed_sum[0] - cost_hi;
          std::size_t brk = 0;
          for (double taken = 0.0; brk < count; ++brk) {
            const std::int32_t r = row[brk];
            taken += rows.cost(r, ws.option_lo[brk]) - rows.cost(r, ws.option_hi[brk]);
            if (taken > room) break;
          }
          if (brk < count) {  // (no break in the sum only by rounding: then all stay active)
            const std::size_t first = brk > kFewActive / 2 ? brk - kFewActive / 2 : 0;
            const std::size_t last = std::min(count, first + kFewActive);
            // Those at their cheaper end first: the repair scans `near` in order, and only they
            // have upgrades (their costlier end is their costliest option on the line).
            for (std::size_t a = last; a < count; ++a) {
              fix_near(ws.active[a], row[a], ws.option_hi[a], fixed_sum, fixed_carry);
            }
            for (std::size_t a = 0; a < first; ++a) {
              fix_near(ws.active[a], row[a], ws.option_lo[a], fixed_sum, fixed_carry);
            }
            auto keep_window = [&](IndexScratch& v) {
              v.erase(v.begin() + last, v.end());
              v.erase(v.begin(), v.begin() + first);
            };
            keep_window(ws.active);
            keep_window(ws.option_lo);
            keep_window(ws.option_hi);
            if constexpr (kCopied) keep_window(ws.compact_row);
          }
        }
        break;
      }
      double guess = lo, rem = budget - fixed_sum[0] - cost_hi;
      for (int x = 0; x < kChordBuckets; ++x) {
        if (bucket[x] > rem) {
          guess = hi - (x + rem / bucket[x]) / scale;
          break;
        }
        rem -= bucket[x];
      }
      if (!(guess > lo && guess < hi)) guess = 0.5 * (lo + hi);
      const double spread = 0.05 * (hi - lo);
      const double t1 = std::max(guess - spread, lo + 0.5 * spread), t2 = std::min(guess + spread, hi - 0.5 * spread);
      if (!(t1 > lo && t1 < t2 && t2 < hi)) break;
      ws.option_mid.resize(count);
      ws.option_mid2.resize(count);
      double cost1, cost2;
      pick_active(rows, row, count, ahead, t1, t2, ws.option_mid.data(), ws.option_mid2.data(), cost1, cost2);
      if (fixed_sum[0] + cost1 <= budget) {  // the break is in [lo, t1]
        hi = t1;
        ws.option_hi.swap(ws.option_mid);
      } else if (fixed_sum[0] + cost2 > budget) {  // in [t2, hi]
        lo = t2;
        ws.option_lo.swap(ws.option_mid2);
      } else {  // in [t1, t2]
        lo = t1;
        hi = t2;
        ws.option_lo.swap(ws.option_mid);
        ws.option_hi.swap(ws.option_mid2);
      }
      std::size_t kept = 0;
      // The totals in locals through the loop (see fix_near), the same additions in the same order.
      Totals sum_fixed = fixed_sum, carry_fixed = fixed_carry;
      double cost_at_lo = 0.0, cost_at_hi = 0.0;
      for (std::size_t a = 0; a < count; ++a) {
        if (a + ahead < count) prefetch_row(rows, row[a + ahead]);
        const std::int32_t i = ws.active[a], r = kCopied ? row[a] : i, qa = ws.option_lo[a], qb = ws.option_hi[a];
        if (qa == qb) {
          fix_near(i, r, qa, sum_fixed, carry_fixed);
          continue;
        }
        ws.active[kept] = i;
        if constexpr (kCopied) row[kept] = r;
        ws.option_lo[kept] = qa;
        ws.option_hi[kept] = qb;
        cost_at_lo += rows.cost(r, qa);
        cost_at_hi += rows.cost(r, qb);
        ++kept;
      }
      fixed_sum = sum_fixed;
      fixed_carry = carry_fixed;
      cost_lo = cost_at_lo;
      cost_hi = cost_at_hi;
      const bool slow = kept * 10 > count * 9;  // less than a tenth fixed: not worth another pass
      if constexpr (kCopied) ws.compact_row.resize(kept);
      ws.active.resize(kept);
      ws.option_lo.resize(kept);
      ws.option_hi.resize(kept);
      if (slow) break;
    }
  };
  if (compact) {
    narrow(std::true_type{});
  } else {
    narrow(std::false_type{});
  }
  ws.near.resize(near_count);
  ws.fixed_cost = fixed_sum[0];
  ws.fixed_cost_carry = fixed_carry[0];
  ws.fixed_value = lane_sum(fixed_sum, fixed_carry, 1).value();
  return BracketFit::kInside;
}

// Frontiers of the active items into slots 0..: an item whose hull inside the bracket is the
// single segment between its options at the two ends (no option rises above that segment at
// its kink; typical once the bracket is narrow, and for items tied at the break) gets that
// two-entry frontier without a sort; the others are built in full.
template <class T>
void build_active_frontiers(const InstanceView<T>& p, LagrangianWorkspace& ws) {
  const std::int64_t count = static_cast<std::int64_t>(ws.active.size());
  ItemFrontiers& f = ws.frontiers;
  size_frontiers(f, count, p.k);
  IndexScratch& full = ws.option_mid;  // free after the narrowing
  full.clear();
  IndexScratch& full_slots = ws.option_mid2;
  full_slots.clear();
  for (std::int64_t s = 0; s < count; ++s) {
    const std::int32_t i = ws.active[s], qa = ws.option_lo[s], qb = ws.option_hi[s];
    const double wa = p.cost(i, qa), va = p.value(i, qa), wb = p.cost(i, qb), vb = p.value(i, qb);
    bool two_point = wa > wb && va > vb;
    if (two_point) {
      const double kink = (va - vb) / (wa - wb);
      const double top = std::max(va - kink * wa, vb - kink * wb);
      for_each_option(p, i, [&](std::int32_t, double w, double v, bool ok) {
        two_point &= !ok || v - kink * w <= top;
      });
    }
    if (!two_point) {
      full.push_back(i);
      full_slots.push_back(static_cast<std::int32_t>(s));
      continue;
    }
    const std::int64_t at = s * f.k;
    f.option[at] = qb;
    f.cost[at] = wb;
    f.value[at] = vb;
    f.option[at + 1] = qa;
    f.cost[at + 1] = wa;
    f.value[at + 1] = va;
    f.count[s] = f.hull_count[s] = 2;
    f.hull[at] = 0;
    f.hull[at + 1] = 1;
  }
  build_item_list(p, f, full.data(), full_slots.data(), static_cast<std::int64_t>(full.size()));
}

}  // namespace

// L(lambda) of the raw instance, item by item over every allowed option, plus what its
// rounding may add: a bound on the optimum at any lambda >= 0. For a shadow price below the
// normal range (values far smaller than the costs: units of 2^-1074 against costs near 1),
// whose own rounding is a large part of it: the LP options then need not maximise
// v - lambda w there, and the bound taken from them fell up to 6% under a feasible value
// (found by a fuzzing helper).
template <class T>
double raw_dual_bound(const InstanceView<T>& p, double lambda) {
  CompensatedSum total;
  double rounding = 0.0;
  for (std::int64_t i = 0; i < p.n; ++i) {
    RawItemDual item;
    for_each_option(p, i, [&](std::int32_t, double w, double v, bool ok) {
      if (ok) item.offer(w, v, lambda);
    });
    total.add(item.best);
    rounding += item.rounding();
  }
  return raw_dual_total(total.value(), rounding, lambda, p.budget);
}

// The LP's bound, where its shadow price lies below the normal range, taken on the raw
// instance as well (raw_dual_bound): the larger holds.
template <class T>
LpRelaxation with_sound_bound(const InstanceView<T>& p, LpRelaxation lp) {
  if (lp.feasible && lambda_below_normal(lp.lambda)) {
    lp.bound = std::max(lp.bound, raw_dual_bound(p, lp.lambda));
  }
  return lp;
}

template <class T>
LpRelaxation solve_lp_reduced(const InstanceView<T>& p, LagrangianWorkspace& ws, int threads,
                              bool margins, const std::function<void()>& check_input) {
  double lo = 0.0, hi = 0.0, min_cost = 0.0;
  SampleGuess guess;
  BracketFit fit = BracketFit::kUnusable;
  const bool margins_asked = margins;  // without, ws.margin is neither read nor written
  if (p.n >= kReduceMinItems && guess_bracket(p, ws, guess, lo, hi)) {
    // Around a tied break (p = w ties every item) nearly every item stays active, and an
    // active item's margin is 0 anyway: the runner-up scores would cost the pass 6% for nothing.
    margins = margins && !guess.tied;
    if (margins_asked && !margins) ws.margin.assign(p.n, 0.0);  // unknown
    fit = fix_items(p, ws, lo, hi, margins, !guess.tied, threads, min_cost);
  }
  if (fit == BracketFit::kBelow || fit == BracketFit::kAbove) {
    // The sample missed (3-20% of the instances of 1000 x 8): the side the pass found, out to
    // four more margins, costs one more pass instead of every item's frontier.
    double far_lo, far_hi;
    guess.bracket(ws.sample, 5, far_lo, far_hi);
    if (fit == BracketFit::kBelow) {
      hi = lo;
      lo = std::min(far_lo, lo);
    } else {
      lo = hi;
      hi = std::max(far_hi, hi);
    }
    fit = lo < hi ? fix_items(p, ws, lo, hi, margins, !guess.tied, threads, min_cost) : BracketFit::kUnusable;
  }
  if (fit == BracketFit::kInside) {
    build_active_frontiers(p, ws);
    ws.frontier_budget = p.budget - ws.fixed_cost;
    LpRelaxation lp = solve_lp(ws.frontiers, ws.frontier_budget, ws);
    if (lp.feasible) {  // it is unless rounding in the totals says otherwise
      ws.reduced = true;
      lp.min_cost = min_cost;
      lp.bound += ws.fixed_value;
      // The frontier's budget is the budget less the fixed costs' plain sum, rounded twice: in
      // the sum (by ws.fixed_cost_carry) and in the difference (by `err`, TwoSum's). L(lambda)
      // takes the exact budget left, less by excess = carry - err; the frontier LP is concave in
      // its budget with lambda a slope there, so the bound drops by lambda * excess. (Left as
      // it was, the bound of 8192 items with shared real costs lay 30-364 ulps from L(lambda)
      // over 6 seeds, below it as often as above, past the slack that "optimal" allows.)
      if (lp.lambda > 0.0) {
        double left = p.budget, err = 0.0;
        two_sum_add(left, err, -ws.fixed_cost);  // left: ws.frontier_budget; budget - fixed = left + err
        const double drop = lp.lambda * (ws.fixed_cost_carry - err);
        if (std::isfinite(drop)) lp.bound -= drop;
      }
      return with_sound_bound(p, lp);
    }
  }
  // Every item gets a frontier slot, after the input checks the reduced path did in passing.
  check_input();
  ws.reduced = false;
  ws.compact.rows = 0;
  build_frontiers(p, ws.frontiers, threads);
  ws.active.resize(p.n);
  for (std::int64_t i = 0; i < p.n; ++i) ws.active[i] = static_cast<std::int32_t>(i);
  ws.near.clear();
  if (margins_asked) ws.margin.assign(p.n, 0.0);
  ws.item_option.resize(p.n);
  ws.fixed_cost = ws.fixed_value = ws.fixed_cost_carry = 0.0;
  ws.frontier_budget = p.budget;
  return with_sound_bound(p, solve_lp(ws.frontiers, p.budget, ws));
}

template LpRelaxation solve_lp_reduced<float>(const InstanceView<float>&, LagrangianWorkspace&, int, bool,
                                              const std::function<void()>&);
template LpRelaxation solve_lp_reduced<double>(const InstanceView<double>&, LagrangianWorkspace&, int, bool,
                                               const std::function<void()>&);

}  // namespace apportion
