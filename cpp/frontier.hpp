// Per-item efficient frontiers and the LP relaxation by break slope.
//
// For every item: the Pareto list of its allowed options (cost strictly increasing, value
// strictly increasing; dominated options dropped) and, inside it, the upper convex hull.
// The LP relaxation of one instance is solved exactly from the hulls: every item starts at
// its cheapest hull point and hull increments are taken in order of decreasing slope until
// one does not fit; its slope is lambda*. A weighted quickselect finds that break without
// sorting all increments.
#pragma once

#include <cstdint>
#include <vector>

#include "problem.hpp"

namespace apportion {

// Frontiers of all items of one instance, in flat arrays with a fixed stride K per item.
struct ItemFrontiers {
  std::int64_t n = 0, k = 0;
  std::vector<std::int32_t> option;    // (N,K) option index of each Pareto entry
  std::vector<double> cost, value;     // (N,K) cost and value of each Pareto entry
  std::vector<std::int32_t> count;     // (N) Pareto entries per item
  std::vector<std::int32_t> hull;      // (N,K) Pareto positions of the hull points
  std::vector<std::int32_t> hull_count;  // (N)

  double pcost(std::int64_t i, std::int64_t p) const { return cost[i * k + p]; }
  double pvalue(std::int64_t i, std::int64_t p) const { return value[i * k + p]; }
};

// One step along an item's hull: from hull point `step` to `step + 1`.
struct HullIncrement {
  double slope;  // value gained per unit of cost
  double dcost;
  std::int32_t item;
  std::int32_t step;
};

// A candidate move of the repair pass: item `item` up to Pareto position `to`.
struct Upgrade {
  double gain;
  std::int32_t item;
  std::int32_t to;
};

// Scratch of the repair pass.
struct RepairScratch {
  std::vector<Upgrade> candidates;
  std::vector<std::int32_t> items;  // the items the next round scans
};

// Per-thread scratch reused across the instances of a batch.
struct LagrangianWorkspace {
  ItemFrontiers frontiers;
  std::vector<HullIncrement> increments;
  std::vector<HullIncrement> sample, middle;  // break-slope bracketing
  std::size_t middle_count = 0;               // increments of `middle` in use
  std::vector<std::int32_t> position;  // (N) current Pareto position of each item
  std::vector<std::int32_t> taken;     // (N) hull steps taken by the LP
  RepairScratch repair;
  std::vector<std::int32_t> alternative;  // (N) Pareto positions of the other rounding

  std::size_t bytes() const {
    const ItemFrontiers& f = frontiers;
    return f.option.capacity() * (2 * sizeof(std::int32_t) + 2 * sizeof(double)) +
           f.count.capacity() * 2 * sizeof(std::int32_t) +
           (increments.capacity() + sample.capacity() + middle.capacity()) * sizeof(HullIncrement) +
           (position.capacity() + taken.capacity() + alternative.capacity()) * sizeof(std::int32_t) +
           repair.candidates.capacity() * sizeof(Upgrade) + repair.items.capacity() * sizeof(std::int32_t);
  }
};

// The LP relaxation of one instance, as found by the break slope.
struct LpRelaxation {
  double lambda = 0.0;      // break slope (0 when the budget does not bind)
  double bound = 0.0;       // L(lambda) = LP optimum, an upper bound on the integer optimum
  double min_cost = 0.0;    // cheapest allocation's cost
  bool feasible = true;     // min_cost <= budget
  bool integral = false;    // the LP optimum is attained by the integer primal it yields
  std::int64_t break_item = -1;  // item whose hull step did not fit (-1: none)
};

// Builds the Pareto lists and hulls of every item; threads over items when `threads` > 1.
// With keep_dominated the lists keep every distinct cost (the most valuable option at each),
// as spending an exact budget may need a dominated option; the hulls are then meaningless.
// Throws std::invalid_argument when an item has no allowed option.
template <class T>
void build_frontiers(const InstanceView<T>& p, ItemFrontiers& f, int threads,
                     bool keep_dominated = false);

// Solves the LP from built frontiers; on return ws.position holds, per item, the Pareto
// position of the integer primal that drops the fractional increment (and the cheapest
// allocation when infeasible).
LpRelaxation solve_lp(const ItemFrontiers& f, double budget, LagrangianWorkspace& ws);

// The other rounding of the LP: take the break item's step and make room by stepping other
// items down their hulls, flattest step (least value lost per unit cost) first. On success
// writes the Pareto positions into `position`, their totals (running sums) into total_cost
// and total_value, and returns true.
bool round_up_break(const ItemFrontiers& f, const LpRelaxation& lp, const LagrangianWorkspace& ws,
                    double budget, std::vector<std::int32_t>& position, double& total_cost,
                    double& total_value);

// The integer primal of the Lagrangian path: from the LP's positions in ws.position (which it
// overwrites), the better of the two roundings, each topped up by repair_upgrades. Leaves the
// totals in total_cost and total_value.
void lagrangian_primal(const ItemFrontiers& f, const LpRelaxation& lp, LagrangianWorkspace& ws,
                       double budget, double& total_cost, double& total_value);

// L(lambda) = sum_i max_k (v_ik - lambda w_ik) + lambda C over the built frontiers.
double lagrangian_bound(const ItemFrontiers& f, double lambda, double budget);

// Spends leftover budget: in each of up to `max_rounds` rounds, finds every item's best
// upgrade within the leftover and applies them largest gain first while they fit. Updates the
// running totals total_cost and total_value.
void repair_upgrades(const ItemFrontiers& f, std::vector<std::int32_t>& position,
                     double& total_cost, double& total_value, double budget, int max_rounds,
                     RepairScratch& scratch);

// Rounding in running sums can leave a real-valued allocation a few ulps over the budget:
// steps items down their Pareto lists, cheapest value loss per unit cost first, until the
// allocation summed in item order fits. Returns false when even the cheapest does not.
// Leaves the allocation's totals in total_cost and total_value.
bool restore_budget(const ItemFrontiers& f, std::vector<std::int32_t>& position, double budget,
                    double& total_cost, double& total_value);

// Total cost and value of the allocation given by Pareto positions, summed in item order.
void allocation_totals(const ItemFrontiers& f, const std::vector<std::int32_t>& position,
                       double& total_cost, double& total_value);

// Writes option indices of the allocation given by Pareto positions.
void write_choice(const ItemFrontiers& f, const std::vector<std::int32_t>& position,
                  std::int64_t* choice);

}  // namespace apportion
