#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "frontier.hpp"
#include "item_ops.hpp"
#include "solvers.hpp"

namespace apportion {

namespace {
// Rounds of the repair pass: the leftover after dropping the fractional increment is less
// than one hull step, so a few rounds use it up.
constexpr int kRepairRounds = 4;
// The raw-option repair after a reduced LP gets one round: scanning raw options costs more than
// Pareto lists, and the first round takes the largest gains.
constexpr int kRawRepairRounds = 1;

// The largest value among item i's allowed options costing at most `limit`, or `floor` when
// none is larger: the raw repair's scan. A running max waits on the one before it, so
// unmasked rows go two options at a time in vector registers where GCC's vector extensions
// exist (as in frontier.cpp's first pass): half as long a chain.
template <class T>
inline double best_value_within(const InstanceView<T>& p, std::int64_t i, double limit, double floor) {
  std::int32_t j = 0;
  double best = floor;
#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
  if (p.mask == nullptr) {
    using v2d = double __attribute__((vector_size(16)));
    const T* vrow = p.values + i * p.k;
    const T* crow = p.costs + i * p.cost_stride_item;
    const v2d within = {limit, limit}, none = {floor, floor}, sign = {p.value_sign, p.value_sign};
    v2d top = none;
    for (; j + 2 <= p.k; j += 2) {
      const v2d w = {static_cast<double>(crow[j]), static_cast<double>(crow[j + 1])};
      const v2d v = sign * v2d{static_cast<double>(vrow[j]), static_cast<double>(vrow[j + 1])};
      const v2d x = w <= within ? v : none;
      top = x > top ? x : top;
    }
    best = std::max(top[0], top[1]);
  }
#endif
  for (; j < p.k; ++j) {  // the rest (every option where the vector loop did not run)
    const bool ok = p.allowed(i, j) && p.cost(i, j) <= limit;
    best = std::max(best, ok ? p.value(i, j) : floor);
  }
  return best;
}
}  // namespace

void lagrangian_primal(const ItemFrontiers& f, const LpRelaxation& lp, LagrangianWorkspace& ws,
                       double budget, double& total_cost, double& total_value) {
  restore_budget(f, ws.position, budget, total_cost, total_value);
  if (lp.integral) return;
  // Two roundings of the LP, each topped up with leftover upgrades; keep the better. Both
  // track running totals; the winner's are then summed exactly (and checked against the
  // budget) once.
  repair_upgrades(f, ws.position, total_cost, total_value, budget, kRepairRounds, ws.repair);
  double alt_cost, alt_value;
  if (round_up_break(f, lp, ws, budget, ws.alternative, alt_cost, alt_value)) {
    repair_upgrades(f, ws.alternative, alt_cost, alt_value, budget, kRepairRounds, ws.repair);
    if (alt_value > total_value) ws.position.swap(ws.alternative);
  }
  restore_budget(f, ws.position, budget, total_cost, total_value);
}

template <class T>
std::int64_t restore_item_options(const InstanceView<T>& p, LagrangianWorkspace& ws, double& total_cost,
                                  double& total_value) {
  std::vector<std::int32_t>& option = ws.item_option;
  for (std::int64_t steps = 0;; ++steps) {
    if (option_fits(p, option.data(), total_cost, total_value)) return steps;
    // Rounding left it a few ulps over: the cheaper option losing least per unit cost.
    std::int64_t worst = -1;
    std::int32_t to = -1;
    double best_ratio = INFINITY;
    for (std::int64_t i = 0; i < p.n; ++i) {
      const double w0 = p.cost(i, option[i]), v0 = p.value(i, option[i]);
      for_each_option(p, i, [&](std::int32_t j, double w, double v, bool ok) {
        // (The first cheaper option is taken even at an infinite ratio, a value per unit cost
        // that overflowed: compared with `<` alone against INFINITY, none was, and an
        // allocation with room to step down was reported infeasible.)
        const double ratio = (v0 - v) / (w0 - w);
        if (ok && w < w0 && (worst < 0 || ratio < best_ratio)) {
          best_ratio = ratio;
          worst = i;
          to = j;
        }
      });
    }
    if (worst < 0) return -1;
    option[worst] = to;
  }
}

// After a reduced LP: whether ws.item_option fits the budget (fits_budget), with its totals,
// without a second pass over every row: the first pass's fixed items kept their options, so
// their compensated totals stand, and only the items it left active (ws.pass_active, in item
// order) are summed again, from their copied rows where fix_items made them (ws.compact: row a
// holds item pass_active[a]).
template <class T>
bool reduced_allocation_fits(const InstanceView<T>& p, const LagrangianWorkspace& ws, double& total_cost,
                             double& total_value) {
  const std::int32_t* option = ws.item_option.data();
  const std::int32_t* active = ws.pass_active.data();
  const std::size_t count = ws.pass_active.size();
  const bool compact = ws.compact.rows > 0;
  if (compact && static_cast<std::size_t>(ws.compact.rows) != count) {
    throw std::logic_error("reduced_allocation_fits: the copied rows are not the first pass's active items");
  }
  const InstanceView<T> rows = compact ? ws.compact.view(p) : p;
  const std::size_t ahead = compact ? kNoPrefetch : active_prefetch_ahead(p);
  // The cost's and the value's compensated sums side by side in one vector, lane by lane as
  // CompensatedSum::add (the same numbers, half the additions).
  using Sums = double __attribute__((vector_size(16)));
  Sums sum = {ws.pass_fixed_cost.sum, ws.pass_fixed_value.sum};
  Sums carry = {ws.pass_fixed_cost.carry, ws.pass_fixed_value.carry};
  for (std::size_t a = 0; a < count; ++a) {
    if (a + ahead < count) prefetch_row(p, active[a + ahead]);
    const std::int32_t i = active[a], r = compact ? static_cast<std::int32_t>(a) : i;
    two_sum_add(sum, carry, Sums{rows.cost(r, option[i]), rows.value(r, option[i])});
  }
  const CompensatedSum cost = lane_sum(sum, carry, 0), value = lane_sum(sum, carry, 1);
  total_value = value.value();
  return fits_budget(cost, p.budget, total_cost, [&] {
    return rounded_sum(p.n, [&](std::int64_t i) { return p.cost(i, option[i]); });
  });
}

template <class T>
std::int64_t complete_allocation(const InstanceView<T>& p, LagrangianWorkspace& ws, double bound, double frontier_cost,
                         double frontier_value, double& total_cost, double& total_value) {
  const ItemFrontiers& f = ws.frontiers;
  for (std::int64_t s = 0; s < f.n; ++s) ws.item_option[ws.active[s]] = f.option[s * f.k + ws.position[s]];
  if (ws.reduced) {
    // Upgrades within the leftover, on raw options, of the items fixed while the bracket
    // narrowed and of the frontier items (whose two-point frontiers hide their other
    // options): their hulls bend near the break, so theirs are the upgrades worth most per
    // unit cost. (Items fixed at the first bracket would cost a scan of every option.)
    double cost = ws.fixed_cost + frontier_cost, value = ws.fixed_value + frontier_value;
    // Their rows: where the first pass copied them, side by side and in cache (`near` then
    // holds the copies' rows, compact_row the frontier items'), or p's own, scattered over the
    // input (routing 1e6 x 8: 82k to 162k of them). The repair's keys are the rows.
    const bool compact = ws.compact.rows > 0;
    const InstanceView<T> rows = compact ? ws.compact.view(p) : p;
    const IndexScratch& frontier_rows = compact ? ws.compact_row : ws.active;
    ws.repair.items.assign(ws.near.begin(), ws.near.end());
    ws.repair.items.insert(ws.repair.items.end(), frontier_rows.begin(), frontier_rows.end());
    const std::int32_t* const item_of_row = ws.pass_active.data();  // (copied row a holds this item)
    auto best_upgrade = [&](std::int32_t r, std::int32_t q, double leftover) {
      // The most valuable option within reach, then (rarely) which one it is: the first loop
      // is a plain max, without an index carried along.
      const double limit = rows.cost(r, q) + leftover, v0 = rows.value(r, q);
      const double best = best_value_within(rows, r, limit, v0);
      if (best == v0) return q;
      std::int32_t to = q;
      for_each_option(rows, r, [&](std::int32_t j, double w, double v, bool ok) {
        if (ok && w <= limit && v == best && to == q) to = j;
      });
      return to;
    };
    // An allocation within the slack of the bound is optimal: the first upgrade reaching it
    // ends the scan (subset-sum: the one that fills the budget exactly, 27% of the exact time).
    const double enough = bound - optimality_slack(bound, bound);
    // p's rows are in item order but sparse: where they are large, out of cache, they are
    // asked for ahead (routing 3e5 x 8 float32: the scan took 17% of the solve, waiting on
    // loads, and 12% with the prefetches).
    repair_rounds(ws.item_option, cost, value, p.budget, kRawRepairRounds, ws.repair, best_upgrade,
                  [&](std::int32_t r, std::int32_t q) { return rows.cost(r, q); },
                  [&](std::int32_t r, std::int32_t q) { return rows.value(r, q); }, enough,
                  compact ? kNoPrefetch : active_prefetch_ahead(p), RowPrefetch<T>{&p},
                  [&](std::int32_t r) { return compact ? item_of_row[r] : r; });
    if (reduced_allocation_fits(p, ws, total_cost, total_value)) return 0;
  }
  return restore_item_options(p, ws, total_cost, total_value);
}

template <class T>
void solve_lagrangian(const BatchView<T>& p, const BatchOutput& out, int threads) {
  run_batch<LagrangianWorkspace>(p.b, threads, [&](std::int64_t b, LagrangianWorkspace& ws, int inner) {
    const InstanceView<T> inst = p.instance(b);
    const LpRelaxation lp = solve_lp_reduced(inst, ws, inner, false, [&] { check_instance(p, b); });
    const ItemFrontiers& f = ws.frontiers;
    InstanceResult r;
    r.min_budget = lp.min_cost;
    std::int64_t* choice = out.choice + b * p.n;
    if (lp.feasible) {
      double frontier_cost, frontier_value;
      lagrangian_primal(f, lp, ws, ws.frontier_budget, frontier_cost, frontier_value);
      if (complete_allocation(inst, ws, lp.bound, frontier_cost, frontier_value, r.cost, r.value) < 0) {
        out.store(b, infeasible_at_cheapest(ws, r, choice, p.n));
        return;
      }
      r.bound = std::max(lp.bound, r.value);
      r.shadow_price = lp.lambda;
      if (!finite_result(r, lp.lambda) || !std::isfinite(lp.bound)) throw_overflow(inst, b);
      r.status = (r.bound - r.value <= optimality_slack(r.value, r.bound, dual_offset(lp.lambda, inst.budget)))
                     ? kOptimal
                     : kFeasible;
      // Both hoisted, or each store to choice (int64) might change p.n: the copy then did not
      // vectorise (5 instructions an item, 5k of a routing 1000 x 8 solve).
      const std::int32_t* option = ws.item_option.data();
      const std::int64_t n = p.n;
      for (std::int64_t i = 0; i < n; ++i) choice[i] = option[i];
    } else {  // only an instance whose every item has a frontier is found infeasible
      allocation_totals(f, ws.position, r.cost, r.value);
      r.bound = kNaN;
      r.shadow_price = kNaN;
      r.status = kInfeasible;
      write_choice(f, ws.position, choice);
    }
    out.store(b, r);
  }, p.b > 0 ? keep_workspace_bytes(row_bytes(p.instance(0))) : kKeepWorkspaceBytes);
}

#define APPORTION_INSTANTIATE(T)                                                                  \
  template std::int64_t restore_item_options<T>(const InstanceView<T>&, LagrangianWorkspace&, double&, \
                                                double&);                                          \
  template std::int64_t complete_allocation<T>(const InstanceView<T>&, LagrangianWorkspace&, double, double, \
                                       double, double&, double&);                                  \
  template void solve_lagrangian<T>(const BatchView<T>&, const BatchOutput&, int);
APPORTION_INSTANTIATE(float)
APPORTION_INSTANTIATE(double)
#undef APPORTION_INSTANTIATE

}  // namespace apportion
