#include <algorithm>
#include <cmath>

#include "frontier.hpp"
#include "solvers.hpp"

namespace apportion {

namespace {
// Rounds of the repair pass: the leftover after dropping the fractional increment is less
// than one hull step, so a few rounds use it up.
constexpr int kRepairRounds = 4;
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
void solve_lagrangian(const BatchView<T>& p, const BatchOutput& out, int threads) {
  run_batch<LagrangianWorkspace>(p.b, threads, [&](std::int64_t b, LagrangianWorkspace& ws, int inner) {
    const InstanceView<T> inst = p.instance(b);
    ItemFrontiers& f = ws.frontiers;
    build_frontiers(inst, f, inner);
    const LpRelaxation lp = solve_lp(f, inst.budget, ws);
    InstanceResult r;
    r.min_budget = lp.min_cost;
    if (lp.feasible) {
      double total_cost, total_value;
      lagrangian_primal(f, lp, ws, inst.budget, total_cost, total_value);
      r.value = total_value;
      r.cost = total_cost;
      r.bound = std::max(lp.bound, total_value);
      r.shadow_price = lp.lambda;
      r.status = (r.bound - r.value <= optimality_slack(r.value, r.bound)) ? kOptimal : kFeasible;
    } else {
      allocation_totals(f, ws.position, r.cost, r.value);
      r.bound = kNaN;
      r.shadow_price = kNaN;
      r.status = kInfeasible;
    }
    write_choice(f, ws.position, out.choice + b * p.n);
    out.store(b, r);
  });
}

template void solve_lagrangian<float>(const BatchView<float>&, const BatchOutput&, int);
template void solve_lagrangian<double>(const BatchView<double>&, const BatchOutput&, int);

}  // namespace apportion
