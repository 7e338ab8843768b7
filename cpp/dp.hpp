// Dense dynamic programming over an integer budget grid (method="dp" and the frontier).
//
// Costs must hold integers (the Python layer quantises real costs first). Each item's
// cheapest cost is subtracted so the grid spans only the budget above the cheapest
// allocation: f_i(c) = max_j f_{i-1}(c - r_ij) + v_ij with r_ij = w_ij - min_j w_ij, over the
// item's Pareto options. The last row is the optimum at every budget; back-pointers (one
// small integer per item and grid cell) recover the allocation at any of them.
#pragma once

#include <cstdint>
#include <vector>

#include "frontier.hpp"
#include "problem.hpp"

namespace apportion {

// Largest grid the DP accepts (cells per row), independent of memory: keeps int64 index
// arithmetic far from overflow and rejects budgets that are clearly not integer grids.
constexpr std::int64_t kMaxDpGrid = std::int64_t(1) << 34;

// A DP's tables for one instance. Back-pointers are Pareto positions, stored in the smallest
// unsigned type that holds K (one byte up to 256 options, two up to 65536, four beyond).
struct DpTables {
  std::int64_t n = 0;
  std::int64_t grid = 0;       // budget grid cells: 0..grid-1 above the cheapest cost
  double base_cost = 0.0;      // cost of the cheapest allocation (the grid's origin)
  std::vector<double> best;    // (grid) optimum at each reduced budget; -inf = unreachable
  std::vector<double> next;    // scratch row
  std::vector<std::uint8_t> back8;   // (N, grid) when K <= 256
  std::vector<std::uint16_t> back16; // (N, grid) when 256 < K <= 65536
  std::vector<std::uint32_t> back32; // (N, grid) otherwise
  int back_bytes = 1;                // 1, 2 or 4: which of the three is in use
};

struct DpWorkspace {
  LagrangianWorkspace lagrangian;  // frontiers (Pareto lists) of the instance
  DpTables tables;
  std::vector<std::int32_t> position;

  std::size_t bytes() const {
    return lagrangian.bytes() + tables.best.capacity() * 16 + tables.back8.capacity() +
           tables.back16.capacity() * 2 + tables.back32.capacity() * 4 + position.capacity() * 4;
  }
};

// Bytes of one back-pointer cell for K options: the smallest unsigned type that holds K - 1.
inline int dp_back_bytes(std::int64_t k) { return k <= 256 ? 1 : (k <= 65536 ? 2 : 4); }

// Runs the DP of one instance over `grid` cells above the cheapest allocation (`grid` =
// floor(budget) - cheapest + 1, at least 1). With `exact_spend`, only allocations whose cost
// is exactly base_cost + c count at cell c. Frontiers must be built.
void dp_run(const ItemFrontiers& f, std::int64_t grid, bool exact_spend, DpTables& t);

// Checks that costs are integers and returns the grid a budget needs: cells 0..span above the
// cheapest allocation, capped where every item is at its most expensive useful option. Returns
// 0 when the budget is infeasible (below the cheapest, or exact spending out of reach); the
// cheapest allocation's cost goes to base_cost.
std::int64_t dp_grid(const ItemFrontiers& f, double budget, bool exact_spend, double& base_cost);

// Recovers the Pareto positions of the optimum at cell c (c < grid) from the tables.
void dp_backtrack(const ItemFrontiers& f, const DpTables& t, std::int64_t c,
                  std::vector<std::int32_t>& position);

// method="dp" over a batch: costs must be integers (checked). Writes the optimum within
// (or, with exact_spend, exactly at) each budget.
template <class T>
void solve_dp(const BatchView<T>& p, const BatchOutput& out, bool exact_spend, int threads);

// The value-vs-budget frontier of one instance from one DP pass: best[c] is the optimum at
// budget base_cost + c for c in 0..grid-1 (-inf where exact spending is unreachable), and
// choices (M,N) the allocations at the requested budgets `at` (a row of -1 where infeasible).
struct FrontierOutput {
  std::vector<double> best;
  double base_cost = 0.0;
};

template <class T>
void dp_frontier(const InstanceView<T>& p, bool exact_spend, const double* at, std::int64_t m,
                 std::int64_t* choices, FrontierOutput& out, int threads);

}  // namespace apportion
