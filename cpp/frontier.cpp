#include "frontier.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "item_ops.hpp"
#include "thread_pool.hpp"

namespace apportion {

namespace {

// Option indices 0..k-1 of a cost row ordered by cost (ties by index) into `order`.
template <class T>
void sort_by_cost(std::int64_t k, const T* crow, std::int32_t* order) {
  if (k <= 16 || costs_ascending(k, crow)) {  // the small-row sort shared with the kernels
    sort_small_by_cost(k, crow, order);
    return;
  }
  for (std::int32_t j = 0; j < k; ++j) order[j] = j;
  std::sort(order, order + k, [&](std::int32_t a, std::int32_t b) {
    const double ca = static_cast<double>(crow[a]), cb = static_cast<double>(crow[b]);
    return ca < cb || (ca == cb && a < b);
  });
}

// Builds item i's Pareto list and hull, visiting its options in cost order `order`.
template <class T>
void build_item(const InstanceView<T>& p, ItemFrontiers& f, std::int64_t i, const std::int32_t* order,
                bool keep_dominated) {
  const std::int64_t k = p.k, base = i * k;
  std::int32_t* opt = &f.option[base];
  double* cost = &f.cost[base];
  double* value = &f.value[base];
  // Pareto filter and hull: the arithmetic shared with the kernels (item_ops.hpp).
  const std::int32_t c = pareto_filter(p.values + base, p.costs + i * p.cost_stride_item,
                                       p.mask ? p.mask + base : nullptr, p.value_sign, k, order,
                                       keep_dominated, opt, cost, value);
  if (c == 0) {
    throw std::invalid_argument("mask: item " + std::to_string(i) +
                                " has no allowed option; allow at least one per item");
  }
  f.count[i] = c;
  f.hull_count[i] = upper_hull(cost, value, c, &f.hull[base]);
}

}  // namespace

template <class T>
void build_frontiers(const InstanceView<T>& p, ItemFrontiers& f, int threads, bool keep_dominated) {
  f.n = p.n;
  f.k = p.k;
  const std::size_t nk = static_cast<std::size_t>(p.n * p.k);
  if (f.option.size() < nk) {
    f.option.resize(nk);
    f.cost.resize(nk);
    f.value.resize(nk);
    f.hull.resize(nk);
  }
  if (f.count.size() < static_cast<std::size_t>(p.n)) {
    f.count.resize(p.n);
    f.hull_count.resize(p.n);
  }
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
      build_item(p, f, i, shared_costs ? shared_order.data() : order.data(), keep_dominated);
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

double lagrangian_bound(const ItemFrontiers& f, double lambda, double budget) {
  double total = dual_offset(lambda, budget);
  for (std::int64_t i = 0; i < f.n; ++i) {
    const std::int64_t base = i * f.k;
    total += item_dual(&f.cost[base], &f.value[base], &f.hull[base], f.hull_count[i], lambda);
  }
  return total;
}

void allocation_totals(const ItemFrontiers& f, const std::vector<std::int32_t>& position,
                       double& total_cost, double& total_value) {
  allocation_totals_flat(f.cost.data(), f.value.data(), f.n, f.k, position.data(), total_cost,
                         total_value);
}

bool restore_budget(const ItemFrontiers& f, std::vector<std::int32_t>& position, double budget,
                    double& total_cost, double& total_value) {
  return restore_budget_flat(f.cost.data(), f.value.data(), f.n, f.k, position.data(), budget,
                             total_cost, total_value);
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
      std::sort(inc + g, inc + e, [](const HullIncrement& x, const HullIncrement& y) {
        return x.item != y.item ? x.item < y.item : x.step < y.step;
      });
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
  if (ws.middle.size() < m) ws.middle.resize(m);  // grown once, never shrunk: no refill
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
  lp.min_cost = base_cost.value();
  if (!(lp.min_cost <= budget)) {
    lp.feasible = false;
    lp.bound = kNaN;
    lp.lambda = kNaN;
    return lp;
  }
  double rem = budget - lp.min_cost;
  HullIncrement* inc = ws.increments.data();
  auto take = [&](const HullIncrement& x) { take_step(ws, x); };

  if (total_dcost <= rem) {  // the budget does not bind: every item at its best option
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
  std::vector<std::int32_t> steps(ws.taken.begin(), ws.taken.begin() + f.n);
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
  position.resize(f.n);
  for (std::int64_t i = 0; i < f.n; ++i) position[i] = hull_pos(i, steps[i]);
  total_cost = total;
  total_value = value;
  return true;
}

void repair_upgrades(const ItemFrontiers& f, std::vector<std::int32_t>& position,
                     double& total_cost, double& total_value, double budget, int max_rounds,
                     RepairScratch& scratch) {
  std::vector<Upgrade>& candidates = scratch.candidates;
  std::vector<std::int32_t>& items = scratch.items;
  items.resize(f.n);
  for (std::int64_t i = 0; i < f.n; ++i) items[i] = static_cast<std::int32_t>(i);
  for (int round = 0; round < max_rounds; ++round) {
    double leftover = budget - total_cost;
    if (!(leftover > 0.0)) break;
    // Each item's best upgrade within the leftover: Pareto entries rise in cost and value,
    // so the last one that fits gains most.
    candidates.clear();
    for (const std::int32_t i : items) {
      const std::int32_t p = position[i];
      const double w0 = f.pcost(i, p);
      std::int32_t q = p;
      while (q + 1 < f.count[i] && f.pcost(i, q + 1) - w0 <= leftover) ++q;
      if (q != p) candidates.push_back(Upgrade{f.pvalue(i, q) - f.pvalue(i, p), i, q});
    }
    if (candidates.empty()) break;
    // The leftover only shrinks: an item with no upgrade within it now never gets one, unless
    // this round moves it. The next round scans this round's candidates alone.
    items.resize(candidates.size());
    for (std::size_t c = 0; c < candidates.size(); ++c) items[c] = candidates[c].item;
    // Only the largest gains can fit in a leftover smaller than one hull step: order the top
    // few; the next round sees the rest again.
    auto larger = [](const Upgrade& a, const Upgrade& b) {
      return a.gain != b.gain ? a.gain > b.gain : a.item < b.item;
    };
    constexpr std::size_t kTop = 64;
    if (candidates.size() > kTop) {
      std::nth_element(candidates.begin(), candidates.begin() + kTop, candidates.end(), larger);
      candidates.resize(kTop);
    }
    std::sort(candidates.begin(), candidates.end(), larger);
    // Apply the largest gains that still fit; the next round revisits what did not.
    bool applied = false;
    for (const Upgrade& u : candidates) {
      const double dw = f.pcost(u.item, u.to) - f.pcost(u.item, position[u.item]);
      if (dw > leftover) continue;
      total_value += f.pvalue(u.item, u.to) - f.pvalue(u.item, position[u.item]);
      position[u.item] = u.to;
      leftover -= dw;
      total_cost += dw;
      applied = true;
    }
    if (!applied) break;
  }
}

}  // namespace apportion
