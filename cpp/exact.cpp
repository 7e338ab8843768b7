// method="exact": LP-bounded core enumeration, after Pisinger's minimal algorithm for the
// multiple-choice knapsack (1995), written from the paper's ideas.
//
// Let lambda be the LP break slope and b_i each item's LP option (a maximiser of
// v - lambda w). Every allocation x within the budget satisfies
//     value(x) <= L(lambda) - sum_i d_i(x_i),   d_ij = (v_ib - lambda w_ib) - (v_ij - lambda w_ij) >= 0,
// so only options with d_ij < L - z can appear in an allocation better than the incumbent z.
// Items enter a core in order of their smallest d (how cheaply they leave their LP option);
// the core is enumerated by DP over (cost, value) states with the other items at b_i. A state
// (mu, pi) is dropped when dominated (another costs no more and is worth no less) or when its
// bound pi + lambda (C - mu) cannot beat the incumbent. Enumeration stops when the next item's
// smallest d exceeds every state's slack: no state can afford to move it, nor any later item.
#include <algorithm>
#include <chrono>
#include <cmath>

#include "frontier.hpp"
#include "solvers.hpp"

namespace apportion {

namespace {

struct CoreState {
  double cost, value;
  std::int32_t parent;  // index in the previous layer
  std::int32_t pos;     // Pareto position of this layer's item
};

struct CoreLink {
  std::int32_t parent, pos;
};

struct ExactWorkspace {
  LagrangianWorkspace lagrangian;
  std::vector<std::int32_t> lp_position, best_position;
  std::vector<std::pair<double, std::int32_t>> order;  // (smallest d, item)
  std::vector<CoreState> states, shifted, merged, scratch;
  std::vector<std::vector<CoreLink>> layers;
  std::vector<std::int32_t> layer_item;

  std::size_t bytes() const {
    std::size_t links = 0;
    for (const auto& l : layers) links += l.capacity();
    return lagrangian.bytes() + (states.capacity() + shifted.capacity() + merged.capacity() + scratch.capacity()) * sizeof(CoreState) +
           links * sizeof(CoreLink) + order.capacity() * 16;
  }
};

// Merges two cost-sorted, dominance-free lists into `out`, keeping the result dominance-free.
void merge_dominance(const std::vector<CoreState>& a, const std::vector<CoreState>& b,
                     std::vector<CoreState>& out) {
  out.clear();
  std::size_t x = 0, y = 0;
  double last = -INFINITY;
  while (x < a.size() || y < b.size()) {
    const bool take_a = y == b.size() ||
                        (x < a.size() && (a[x].cost < b[y].cost ||
                                          (a[x].cost == b[y].cost && a[x].value >= b[y].value)));
    const CoreState& s = take_a ? a[x++] : b[y++];
    if (s.value > last) {
      out.push_back(s);
      last = s.value;
    }
  }
}

}  // namespace

template <class T>
void solve_exact(const BatchView<T>& p, const BatchOutput& out, const ExactLimits& limits, int threads) {
  using clock = std::chrono::steady_clock;
  run_batch<ExactWorkspace>(p.b, threads, [&](std::int64_t b, ExactWorkspace& ws, int inner) {
    const auto started = clock::now();
    const InstanceView<T> inst = p.instance(b);
    LagrangianWorkspace& lw = ws.lagrangian;
    ItemFrontiers& f = lw.frontiers;
    build_frontiers(inst, f, inner);
    const LpRelaxation lp = solve_lp(f, inst.budget, lw);
    InstanceResult r;
    r.min_budget = lp.min_cost;
    if (!lp.feasible) {
      allocation_totals(f, lw.position, r.cost, r.value);
      r.bound = r.shadow_price = kNaN;
      r.status = kInfeasible;
      write_choice(f, lw.position, out.choice + b * p.n);
      out.store(b, r);
      return;
    }
    const double C = inst.budget, lambda = lp.lambda, L = lp.bound;
    ws.lp_position.assign(lw.position.begin(), lw.position.begin() + f.n);
    double z_cost, z;
    lagrangian_primal(f, lp, lw, C, z_cost, z);
    ws.best_position.assign(lw.position.begin(), lw.position.begin() + f.n);
    const double tol = optimality_slack(z, L);
    double upper = L;
    bool proven = lp.integral || L - z <= tol;

    if (!proven) {
      // Items that can leave their LP option, cheapest move first.
      ws.order.clear();
      double base_cost = 0.0, base_value = 0.0;
      for (std::int64_t i = 0; i < f.n; ++i) {
        const std::int32_t bi = ws.lp_position[i];
        base_cost += f.pcost(i, bi);
        base_value += f.pvalue(i, bi);
        const double key = f.pvalue(i, bi) - lambda * f.pcost(i, bi);
        double smallest = INFINITY;
        for (std::int32_t q = 0; q < f.count[i]; ++q) {
          if (q != bi) smallest = std::min(smallest, std::max(0.0, key - (f.pvalue(i, q) - lambda * f.pcost(i, q))));
        }
        if (smallest < L - z - tol) ws.order.emplace_back(smallest, static_cast<std::int32_t>(i));
      }
      std::sort(ws.order.begin(), ws.order.end());
      ws.states.assign(1, CoreState{base_cost, base_value, -1, -1});
      ws.layers.clear();
      ws.layer_item.clear();
      std::size_t links = 0;
      double best_bound = base_value + lambda * (C - base_cost);
      bool complete = true;
      for (const auto& entry : ws.order) {
        const double slack = best_bound - z;
        if (entry.first >= slack - tol) break;  // no state can afford this item or later ones
        if (links >= limits.max_states ||
            std::chrono::duration<double>(clock::now() - started).count() > limits.time_limit) {
          complete = false;
          break;
        }
        const std::int32_t i = entry.second, bi = ws.lp_position[i];
        const double key = f.pvalue(i, bi) - lambda * f.pcost(i, bi);
        const double wb = f.pcost(i, bi), vb = f.pvalue(i, bi);
        ws.merged.clear();
        bool first = true;
        for (std::int32_t q = 0; q < f.count[i]; ++q) {
          const double d = q == bi ? 0.0 : key - (f.pvalue(i, q) - lambda * f.pcost(i, q));
          if (d >= slack - tol) continue;
          const double dw = f.pcost(i, q) - wb, dv = f.pvalue(i, q) - vb;
          ws.shifted.clear();
          for (std::size_t s = 0; s < ws.states.size(); ++s) {
            const CoreState& st = ws.states[s];
            const double cost = st.cost + dw, value = st.value + dv;
            if (value + lambda * (C - cost) <= z + tol) continue;  // cannot beat the incumbent
            ws.shifted.push_back(CoreState{cost, value, static_cast<std::int32_t>(s), q});
          }
          if (first) {
            // A shifted, pruned copy of a dominance-free list is still dominance-free.
            ws.merged.swap(ws.shifted);
            first = false;
          } else {
            merge_dominance(ws.merged, ws.shifted, ws.scratch);
            ws.merged.swap(ws.scratch);
          }
        }
        // New incumbent from the feasible states of this layer.
        std::int64_t improved = -1;
        for (std::size_t s = 0; s < ws.merged.size(); ++s) {
          if (ws.merged[s].cost <= C && ws.merged[s].value > z) {
            z = ws.merged[s].value;
            improved = static_cast<std::int64_t>(s);
          }
        }
        if (improved >= 0) {
          // Walk the links back through the layers to the allocation of the new incumbent.
          ws.best_position.assign(ws.lp_position.begin(), ws.lp_position.end());
          ws.best_position[i] = ws.merged[improved].pos;
          std::int32_t s = ws.merged[improved].parent;
          for (std::int64_t l = static_cast<std::int64_t>(ws.layers.size()) - 1; l >= 0; --l) {
            const CoreLink link = ws.layers[l][s];
            ws.best_position[ws.layer_item[l]] = link.pos;
            s = link.parent;
          }
        }
        // Keep what can still beat the (possibly improved) incumbent; note the best bound.
        ws.layers.emplace_back();
        std::vector<CoreLink>& layer = ws.layers.back();
        ws.layer_item.push_back(i);
        ws.states.clear();
        best_bound = -INFINITY;
        for (const CoreState& st : ws.merged) {
          const double bound = st.value + lambda * (C - st.cost);
          if (bound <= z + tol) continue;
          ws.states.push_back(CoreState{st.cost, st.value, -1, -1});
          layer.push_back(CoreLink{st.parent, st.pos});
          best_bound = std::max(best_bound, bound);
        }
        links += layer.size();
        if (ws.states.empty()) break;
      }
      if (complete) {
        proven = true;
      } else {
        upper = std::min(L, std::max(z, best_bound));
      }
    }
    double total_cost, total_value;
    restore_budget(f, ws.best_position, C, total_cost, total_value);
    r.value = total_value;
    r.cost = total_cost;
    r.bound = proven ? total_value : std::max(upper, total_value);
    r.shadow_price = lambda;
    r.status = proven ? kOptimal : kFeasible;
    write_choice(f, ws.best_position, out.choice + b * p.n);
    out.store(b, r);
  });
}

template void solve_exact<float>(const BatchView<float>&, const BatchOutput&, const ExactLimits&, int);
template void solve_exact<double>(const BatchView<double>&, const BatchOutput&, const ExactLimits&, int);

}  // namespace apportion
