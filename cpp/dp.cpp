#include "dp.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "cpu_dispatch.hpp"
#include "item_ops.hpp"
#include "solvers.hpp"

namespace apportion {

namespace {

// Cells per block of the row update: every Pareto entry of the item relaxes one block before
// the next block starts, so that the block of `next` and `back` stays in the L1 cache across the
// entries (16 KB of doubles and 2 KB of one-byte back-pointers) instead of streaming a whole
// row (64 KB at 8000 cells) from L2 once per entry.
constexpr std::int64_t kDpBlock = 2048;

// One item's update of the DP row: next[c] = max_p best[c - r_p] + v_p, recording p. The same
// arithmetic in every clone (additions and comparisons only: nothing to contract into an FMA).
template <class Back>
APPORTION_INLINE void dp_item_body(const double* cost, const double* value, std::int32_t count,
                                   std::int64_t grid, const double* best, double* next, Back* back) {
  const double v0 = value[0];
  // The first two entries in one pass: the row starts at entry 0 and entry 1 relaxes each cell
  // before it is stored (the arithmetic of two passes, one store of `next` and `back` fewer).
  const bool two = count > 1 && cost[1] - cost[0] < static_cast<double>(grid);
  const std::int64_t r1 = two ? dp_shift(cost, 1) : grid;
  const double v1 = two ? value[1] : 0.0;
  for (std::int64_t lo = 0; lo < grid; lo += kDpBlock) {
    const std::int64_t hi = std::min(grid, lo + kDpBlock);
    const std::int64_t split = std::max(lo, std::min(hi, r1));
    for (std::int64_t c = lo; c < split; ++c) {
      next[c] = best[c] + v0;
      back[c] = 0;
    }
    for (std::int64_t c = split; c < hi; ++c) {
      double cell = best[c] + v0;
      Back tag = 0;
      dp_relax(best[c - r1], v1, Back(1), cell, tag);
      next[c] = cell;
      back[c] = tag;
    }
    for (std::int32_t p = 2; p < count; ++p) {
      const double r_exact = cost[p] - cost[0];
      if (r_exact >= static_cast<double>(hi)) break;  // Pareto entries rise in cost
      const std::int64_t r = dp_shift(cost, p);
      const double v = value[p];
      const Back tag = static_cast<Back>(p);
      // The cell update shared with the kernel (item_ops.hpp); branch-free, so the row vectorises.
      for (std::int64_t c = std::max(lo, r); c < hi; ++c) dp_relax(best[c - r], v, tag, next[c], back[c]);
    }
  }
}

// The row update once per back-pointer width, each compiled for the baseline, AVX2 and AVX-512
// (cpu_dispatch.hpp).
APPORTION_SIMD_CLONES void dp_item_row(const double* cost, const double* value, std::int32_t count,
                                       std::int64_t grid, const double* best, double* next,
                                       std::uint8_t* back) {
  dp_item_body(cost, value, count, grid, best, next, back);
}
APPORTION_SIMD_CLONES void dp_item_row(const double* cost, const double* value, std::int32_t count,
                                       std::int64_t grid, const double* best, double* next,
                                       std::uint16_t* back) {
  dp_item_body(cost, value, count, grid, best, next, back);
}
APPORTION_SIMD_CLONES void dp_item_row(const double* cost, const double* value, std::int32_t count,
                                       std::int64_t grid, const double* best, double* next,
                                       std::uint32_t* back) {
  dp_item_body(cost, value, count, grid, best, next, back);
}

template <class Back>
void dp_item(const ItemFrontiers& f, std::int64_t i, std::int64_t grid, const double* best,
             double* next, Back* back) {
  const std::int64_t base = i * f.k;
  dp_item_row(&f.cost[base], &f.value[base], f.count[i], grid, best, next, back);
}

template <class Back>
void backtrack_rows(const ItemFrontiers& f, const Back* back, std::int64_t grid, std::int64_t c,
                    std::vector<std::int32_t>& position) {
  position.resize(f.n);
  dp_backtrack_flat(f.cost.data(), f.n, f.k, back, grid, c, position.data());
}

}  // namespace

void dp_run(const ItemFrontiers& f, std::int64_t grid, bool exact_spend, DpTables& t) {
  if (grid < 1 || grid > kMaxDpGrid) throw std::invalid_argument("dp: budget grid out of range");
  // N * grid back-pointers: past 2^64 (N >= 2^30 at the largest grid) the count would wrap and
  // the table be allocated too small.
  if (static_cast<std::size_t>(f.n) > std::numeric_limits<std::size_t>::max() / static_cast<std::size_t>(grid)) {
    throw std::invalid_argument("budget: the dp tables would have more cells than memory can address; quantise "
                                "costs more coarsely (cost_resolution)");
  }
  t.n = f.n;
  t.grid = grid;
  t.back_bytes = dp_back_bytes(f.k);
  t.best.assign(grid, exact_spend ? -INFINITY : 0.0);
  t.best[0] = 0.0;
  t.next.resize(grid);
  const std::size_t cells = static_cast<std::size_t>(f.n) * static_cast<std::size_t>(grid);
  auto run = [&](auto& back) {
    back.resize(cells);
    for (std::int64_t i = 0; i < f.n; ++i) {
      dp_item(f, i, grid, t.best.data(), t.next.data(), back.data() + i * grid);
      t.best.swap(t.next);
    }
  };
  if (t.back_bytes == 1) {
    run(t.back8);
  } else if (t.back_bytes == 2) {
    run(t.back16);
  } else {
    run(t.back32);
  }
}

void dp_backtrack(const ItemFrontiers& f, const DpTables& t, std::int64_t c,
                  std::vector<std::int32_t>& position) {
  if (c < 0 || c >= t.grid) throw std::out_of_range("dp: back-tracking cell out of range");
  if (t.back_bytes == 1) {
    backtrack_rows(f, t.back8.data(), t.grid, c, position);
  } else if (t.back_bytes == 2) {
    backtrack_rows(f, t.back16.data(), t.grid, c, position);
  } else {
    backtrack_rows(f, t.back32.data(), t.grid, c, position);
  }
}

std::int64_t dp_grid(const ItemFrontiers& f, double budget, bool exact_spend, double& base_cost) {
  CompensatedSum base, reach;
  for (std::int64_t i = 0; i < f.n; ++i) {
    for (std::int32_t p = 0; p < f.count[i]; ++p) {
      const double w = f.pcost(i, p);
      if (w != std::floor(w)) {
        throw std::invalid_argument("costs: method='dp' needs integer costs (item " +
                                    std::to_string(i) + " has " + std::to_string(w) +
                                    "); pass cost_resolution to quantise them");
      }
    }
    base.add(f.pcost(i, 0));
    reach.add(f.pcost(i, f.count[i] - 1) - f.pcost(i, 0));
  }
  base_cost = base.value();
  if (!(base_cost <= budget)) return 0;
  const double span = std::floor(budget - base_cost);
  const double cap = reach.value();
  if (exact_spend && (span != budget - base_cost || span > cap)) return 0;
  const double cells = std::min(span, cap) + 1.0;
  if (!(cells <= static_cast<double>(kMaxDpGrid))) {  // NaN too: never cast to int64 unchecked
    throw std::invalid_argument("budget: the dp grid would have " + std::to_string(cells) +
                                " cells; quantise costs more coarsely (cost_resolution)");
  }
  return static_cast<std::int64_t>(cells);
}

template <class T>
void solve_dp(const BatchView<T>& p, const BatchOutput& out, bool exact_spend, int threads) {
  run_batch<DpWorkspace>(p.b, threads, [&](std::int64_t b, DpWorkspace& ws, int inner) {
    const InstanceView<T> inst = p.instance(b);
    ItemFrontiers& f = ws.lagrangian.frontiers;
    build_frontiers(inst, f, inner, exact_spend);
    InstanceResult r;
    const std::int64_t grid = dp_grid(f, inst.budget, exact_spend, r.min_budget);
    ws.position.assign(f.n, 0);
    if (grid == 0) {
      r.status = kInfeasible;
      r.bound = kNaN;
      r.shadow_price = kNaN;
    } else {
      dp_run(f, grid, exact_spend, ws.tables);
      const double best = ws.tables.best[grid - 1];
      // -inf is exact spending out of reach, unless the values' totals overflow (as a NaN or
      // +inf always means).
      if (!std::isfinite(best) && (best != -INFINITY || !exact_spend || value_totals_overflow(inst))) {
        throw_overflow(inst, b);
      }
      if (best == -INFINITY) {  // exact spending unreachable
        r.status = kInfeasible;
        r.bound = kNaN;
        r.shadow_price = kNaN;
      } else {
        dp_backtrack(f, ws.tables, grid - 1, ws.position);
        r.status = kOptimal;
        // The LP's break slope is the budget's shadow price (the DP itself has none).
        r.shadow_price = exact_spend ? kNaN : solve_lp(f, inst.budget, ws.lagrangian).lambda;
      }
    }
    allocation_totals(f, ws.position, r.cost, r.value);
    if (r.status == kOptimal) {
      r.bound = r.value;
      if (!finite_result(r, 0.0)) throw_overflow(inst, b);
    }
    write_choice(f, ws.position, out.choice + b * p.n);
    out.store(b, r);
  });
}

template <class T>
void dp_frontier(const InstanceView<T>& p, bool exact_spend, const double* at, std::int64_t m,
                 std::int64_t* choices, FrontierOutput& out, int threads) {
  DpWorkspace& ws = thread_workspace<DpWorkspace>();
  ItemFrontiers& f = ws.lagrangian.frontiers;
  build_frontiers(p, f, threads, exact_spend);
  // One pass up to the largest budget asked for (the instance's own budget included).
  double top = p.budget;
  for (std::int64_t x = 0; x < m; ++x) top = std::max(top, at[x]);
  const std::int64_t grid = dp_grid(f, top, false, out.base_cost);
  out.best.clear();
  std::fill(choices, choices + m * p.n, -1);
  if (grid > 0) {
    dp_run(f, grid, exact_spend, ws.tables);
    out.best = ws.tables.best;
    for (std::int64_t x = 0; x < m; ++x) {
      const double span = std::floor(at[x] - out.base_cost);
      if (!(span >= 0.0)) continue;
      if (exact_spend && span != at[x] - out.base_cost) continue;
      if (exact_spend && span >= static_cast<double>(grid)) continue;
      // Capped in double first: a span of inf or past 2^63 has no int64 value.
      const std::int64_t c = static_cast<std::int64_t>(std::min(span, static_cast<double>(grid - 1)));
      if (out.best[c] == -INFINITY) continue;
      dp_backtrack(f, ws.tables, c, ws.position);
      write_choice(f, ws.position, choices + x * p.n);
    }
  }
  trim_workspace(ws);
}

template void dp_frontier<float>(const InstanceView<float>&, bool, const double*, std::int64_t,
                                 std::int64_t*, FrontierOutput&, int);
template void dp_frontier<double>(const InstanceView<double>&, bool, const double*, std::int64_t,
                                  std::int64_t*, FrontierOutput&, int);

template void solve_dp<float>(const BatchView<float>&, const BatchOutput&, bool, int);
template void solve_dp<double>(const BatchView<double>&, const BatchOutput&, bool, int);

}  // namespace apportion
