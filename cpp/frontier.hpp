// Per-item efficient frontiers and the LP relaxation by break slope.
//
// For every item: the Pareto list of its allowed options (cost strictly increasing, value
// strictly increasing; dominated options dropped) and, inside it, the upper convex hull.
// The LP relaxation of one instance is solved exactly from the hulls: every item starts at
// its cheapest hull point and hull increments are taken in order of decreasing slope until
// one does not fit; its slope is lambda*. A weighted quickselect finds that break without
// sorting all increments.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "problem.hpp"

namespace apportion {

// Visits item i's options as f(option, cost, value, allowed).
template <class T, class F>
inline void for_each_option(const InstanceView<T>& p, std::int64_t i, F&& f) {
  const T* vrow = p.values + i * p.k;
  const T* crow = p.costs + i * p.cost_stride_item;
  const double sign = p.value_sign;
  const std::int32_t k = static_cast<std::int32_t>(p.k);  // a local: f's stores cannot alias it
  if (p.mask == nullptr) {  // a separate loop, so that `allowed` folds away
    for (std::int32_t j = 0; j < k; ++j) {
      f(j, static_cast<double>(crow[j]), sign * static_cast<double>(vrow[j]), true);
    }
    return;
  }
  const std::uint8_t* mrow = p.mask + i * p.k;
  for (std::int32_t j = 0; j < k; ++j) {
    f(j, static_cast<double>(crow[j]), sign * static_cast<double>(vrow[j]), mrow[j] != 0);
  }
}

// Loops over the active items of a reduced LP visit them in item order, but sparsely: their
// rows are not in cache and the hardware prefetcher cannot guess them. Each such loop asks for
// the rows of the item this many places ahead (prefetch_row). At routing 1e6 x 8 the bracket
// narrowing took about as long as the first pass without it. With it, in alternating runs on a
// loaded 2-core machine: float64 32-37 -> 29-30 ms CPU and 27-28 -> 24-26 ms, float32
// 29-31 -> 23-24 ms and 23-25 -> 22-24 ms.
constexpr std::size_t kPrefetchActive = 16;

// Rows of an instance up to this many bytes (values and costs) stay in L2 from the first pass
// to the loops over its active items, where the prefetches would be instructions only (about
// 3% of a routing 1000 x 8 solve).
constexpr std::size_t kPrefetchMinBytes = std::size_t(256) << 10;

// The bytes of p's value and cost rows (the shared cost row not counted).
template <class T>
inline std::size_t row_bytes(const InstanceView<T>& p) {
  return static_cast<std::size_t>(p.n) * static_cast<std::size_t>(p.k + (p.cost_stride_item != 0 ? p.k : 0)) *
         sizeof(T);
}

// A prefetch distance past every count: no prefetches.
constexpr std::size_t kNoPrefetch = std::numeric_limits<std::size_t>::max() / 2;

// How far ahead the loops over the active items of p prefetch rows (prefetch_row): past any
// count where the rows fit in L2.
template <class T>
inline std::size_t active_prefetch_ahead(const InstanceView<T>& p) {
  return row_bytes(p) > kPrefetchMinBytes ? kPrefetchActive : kNoPrefetch;
}

// Asks for item i's value and cost rows (first and last entry) ahead of their use. Always
// inlined: GCC counts a prefetch as no effect, so it found a called prefetch_row to have none
// and dropped the calls it had not inlined first (those of the float32 pick_active at
// x86-64-v3 and v4 were never emitted: the build's prefetch instructions went from 608 to 1056).
#if defined(__GNUC__)
#define APPORTION_PREFETCH_INLINE inline __attribute__((always_inline))
#else
#define APPORTION_PREFETCH_INLINE inline
#endif
template <class T>
APPORTION_PREFETCH_INLINE void prefetch_row(const InstanceView<T>& p, std::int64_t i) {
#if defined(__GNUC__)
  const T* vrow = p.values + i * p.k;
  const T* crow = p.costs + i * p.cost_stride_item;
  __builtin_prefetch(vrow);
  __builtin_prefetch(vrow + p.k - 1);
  __builtin_prefetch(crow);
  __builtin_prefetch(crow + p.k - 1);
#else
  (void)p;
  (void)i;
#endif
}

// prefetch_row as a function object, for a loop that takes one (repair_rounds): its call always
// inlined too, or GCC drops it as above.
template <class T>
struct RowPrefetch {
  const InstanceView<T>* p;
  APPORTION_PREFETCH_INLINE void operator()(std::int64_t i) const { prefetch_row(*p, i); }
};

// An allocator whose resize leaves new elements uninitialised (construct() without arguments
// default-initialises): the reduced LP's index arrays shrink to the active items and grow back
// to N on every solve, and each element is written before it is read, so zero-filling them
// would cost a pass over N (12 MB a solve at N = 1e6).
template <class T>
struct UninitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = UninitAllocator<U>;
  };
  UninitAllocator() = default;
  template <class U>
  UninitAllocator(const UninitAllocator<U>&) {}
  template <class U>
  void construct(U* at) noexcept {
    ::new (static_cast<void*>(at)) U;
  }
  template <class U, class... Args>
  void construct(U* at, Args&&... args) {
    ::new (static_cast<void*>(at)) U(std::forward<Args>(args)...);
  }
};
using IndexScratch = std::vector<std::int32_t, UninitAllocator<std::int32_t>>;

// Copies of some items' value rows and cost rows, in the input's type (every number read from
// them is the input's own), each array a row of K entries per item.
template <class T>
struct RowCopies {
  std::vector<T, UninitAllocator<T>> values, costs;  // costs: unused where they are shared
  std::size_t bytes() const { return (values.capacity() + costs.capacity()) * sizeof(T); }
};

// The rows of the items the first pass left active, side by side (fix_items; not for masked
// instances), of the input's type.
struct CompactRows {
  RowCopies<float> f32;
  RowCopies<double> f64;
  std::int64_t rows = 0;  // 0: not in use

  template <class T>
  RowCopies<T>& of() {
    if constexpr (std::is_same_v<T, float>) {
      return f32;
    } else {
      return f64;
    }
  }
  template <class T>
  const RowCopies<T>& of() const {
    return const_cast<CompactRows*>(this)->of<T>();
  }
  // The copies of T, the other dtype's freed (compact_room leaves them out of what is held).
  template <class T>
  RowCopies<T>& only() {
    if constexpr (std::is_same_v<T, float>) {
      f64 = RowCopies<double>();
    } else {
      f32 = RowCopies<float>();
    }
    return of<T>();
  }
  // The copied rows as an instance of `rows` items: p's sign and budget, p's costs where they
  // are shared, no mask.
  template <class T>
  InstanceView<T> view(const InstanceView<T>& p) const {
    const RowCopies<T>& c = of<T>();
    InstanceView<T> v = p;
    v.values = c.values.data();
    if (p.cost_stride_item != 0) v.costs = c.costs.data();
    v.mask = nullptr;
    v.n = rows;
    return v;
  }
  std::size_t bytes() const { return f32.bytes() + f64.bytes(); }
};

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
// Hull increments whose resize leaves new entries unwritten: the sample's buffers are sized to
// their room (s x K) on every solve and then written in place (zero-filling them cost 279k
// instructions of a 256 x 1000 solve).
using HullSteps = std::vector<HullIncrement, UninitAllocator<HullIncrement>>;

// A candidate move of the repair pass: item `item` up to Pareto position `to`.
struct Upgrade {
  double gain;
  std::int32_t item;  // its key in repair_rounds
  std::int32_t to;
};

// Scratch of the repair pass.
struct RepairScratch {
  std::vector<Upgrade> candidates;
  std::vector<std::int32_t> items;  // the items the next round scans, as repair_rounds' keys
};

// Per-thread scratch reused across the instances of a batch.
struct LagrangianWorkspace {
  ItemFrontiers frontiers;
  std::vector<HullIncrement> increments;
  HullSteps sample, middle;  // break-slope bracketing
  std::size_t middle_count = 0;               // increments of `middle` in use
  std::vector<std::int32_t> position;  // (N) current Pareto position of each item
  std::vector<std::int32_t> taken;     // (N) hull steps taken by the LP
  RepairScratch repair;
  std::vector<std::int32_t> alternative;  // (N) Pareto positions of the other rounding

  // The reduced LP (solve_lp_reduced): `frontiers` holds only the items whose LP option can
  // change inside a bracket of the break slope, `active` maps its slots to items; every other
  // item is fixed at its LP option in `item_option`, with totals fixed_cost / fixed_value.
  std::vector<std::int32_t> item_option;   // (N) option index of each item
  IndexScratch active;                     // item of each frontier slot
  // The items fixed while the bracket narrowed, as their rows in `compact` while compact.rows
  // > 0 (row a holds item pass_active[a]), else the items themselves.
  IndexScratch near;
  // (N) a lower bound on how far any other option's v - lambda w falls short of the item's LP
  // option at the break slope (0 when unknown: frontier items and `near`)
  std::vector<double> margin;
  double first_lo = 0.0, first_hi = 0.0;   // the first bracket: items fixed there keep their
                                           // option over it, so their hull slopes around it
                                           // are <= first_lo above and >= first_hi below
  IndexScratch option_lo, option_hi, option_mid, option_mid2;  // per active item
  std::vector<double> sample_stack;        // (2K) a sampled item's hull (sample_hull_steps)
  HullSteps sample_sorted;  // sort_steepest_first's output
  std::vector<std::uint64_t> sort_word, sort_word2;  // its words (key bits, position)
  std::vector<std::uint32_t> sort_count;   // its buckets' counts and starts
  // The last sample tied unequal increments where they could move its crossing (or, sorted by
  // std::sort directly, anywhere): the next goes to std::sort directly (sort_steepest_first).
  bool sample_ties = false;
  double fixed_cost = 0.0, fixed_value = 0.0;
  double fixed_cost_carry = 0.0;  // fixed_cost's exact total less it (its compensated sum's carry)
  // The first pass's own split (before the narrowing): the items it fixed, with the compensated
  // totals of their options in item order, and the items it left active, in item order. Only
  // these can end on another option, so the allocation's totals need no second pass over N
  // (allocation_fits_reduced).
  CompensatedSum pass_fixed_cost, pass_fixed_value;
  IndexScratch pass_active;
  double frontier_budget = 0.0;            // budget left to the frontier items
  bool reduced = false;                    // false: every item has its full frontier
  // The first pass's active items' rows, copied side by side as it finds them (fix_items) where
  // the instance is large: row a holds item pass_active[a]; compact_row maps an active
  // slot (active / option_lo / option_hi) to its row. The narrowing and the allocation's totals
  // read them there instead of scattered over the whole input.
  CompactRows compact;
  IndexScratch compact_row;                // per active item, while compact.rows > 0
  // What the thread keeps of this workspace and of what its owner holds beside it between calls
  // (0: keep_workspace_bytes of the input, the Lagrangian's keep), and what that owner holds
  // beside it (the exact solver's per-item arrays): compact_room fits the copies within the one
  // and leaves room for the other.
  std::size_t keep_bytes = 0, held_beside = 0;

  // Gives back the copied rows (trim_workspace, past the thread's keep).
  void shed_copies() {
    compact = CompactRows();
    compact_row = IndexScratch();
  }

  std::size_t bytes() const {
    const ItemFrontiers& f = frontiers;
    return f.option.capacity() * (2 * sizeof(std::int32_t) + 2 * sizeof(double)) +
           f.count.capacity() * 2 * sizeof(std::int32_t) +
           (increments.capacity() + sample.capacity() + middle.capacity()) * sizeof(HullIncrement) +
           (position.capacity() + taken.capacity() + alternative.capacity()) * sizeof(std::int32_t) +
           repair.candidates.capacity() * sizeof(Upgrade) + repair.items.capacity() * sizeof(std::int32_t) +
           (item_option.capacity() + active.capacity() + near.capacity() + option_lo.capacity() + option_hi.capacity() +
            option_mid.capacity() + option_mid2.capacity() + pass_active.capacity() + compact_row.capacity()) *
               sizeof(std::int32_t) +
           compact.bytes() +
           margin.capacity() * sizeof(double) +
           sample_stack.capacity() * sizeof(double) +
           sample_sorted.capacity() * sizeof(HullIncrement) +
           (sort_word.capacity() + sort_word2.capacity()) * sizeof(std::uint64_t) +
           sort_count.capacity() * sizeof(std::uint32_t);
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

// Appends item i's hull steps (slope, dcost), in hull order, to inc and returns the cost of its
// cheapest hull point, as the reduced LP's sample (guess_bracket) takes them: the steps of
// build_item's frontier, without the frontier. Pareto entries are kept by pareto_filter's rule
// (worth more than every cheaper one; at equal cost the most valuable, first on ties), and each
// joins the hull by upper_hull's test (below_chord) once the next kept option's cost differs, so
// the hull points, and the differences between them, are the same numbers. No Pareto arrays and
// no second pass: the sample's hull steps of a routing 1000 x 8 solve took 44k instructions of
// 330k (x86-64-v3) through build_item, 32k here. Returns NaN for an item with no allowed option.
// The options are visited in index order where the costs ascend, else in cost order: with
// shared costs (p.cost_stride_item 0) `order` holds it (K entries); otherwise `order` is scratch
// of K entries. `stack` holds 2K doubles. valid &= every allowed value finite and every cost
// finite and >= 0. (Test hook: apportion._core._hull_steps.)
template <class T>
double sample_hull_steps(const InstanceView<T>& p, std::int64_t i, std::int32_t* order, double* stack,
                         HullSteps& inc, bool& valid);

// Solves the LP of instance p without building every item's frontier: guesses a bracket of
// the break slope from a sample of items, fixes every item whose LP option is the same at both
// ends (so at every slope between), and narrows the bracket over the rest until few are left;
// only those get frontiers (ws.frontiers, slots mapped by ws.active) and the exact break slope.
// Falls back to every item's frontier when the bracket guess fails or the instance is small.
// `threads` share the pass over every item (in runs of 8192 items) and the full path's frontiers.
// Returns the LP of the whole instance (bound and min_cost include the fixed items;
// break_item is a frontier slot); ws.position holds the frontier items' LP positions and
// ws.frontier_budget the budget left to them. ws.margin gets a lower bound on each item's
// smallest reduced cost at the break (for the exact solver): with `margins`, unless the sample
// ties at the break, where it gets 0 (unknown); without `margins` it is left as it was.
// The input is checked in passing (allowed values finite, costs finite and >= 0);
// `check_input` runs where that saw a problem, or on the full path, and must throw on bad input.
template <class T>
LpRelaxation solve_lp_reduced(const InstanceView<T>& p, LagrangianWorkspace& ws, int threads,
                              bool margins, const std::function<void()>& check_input);

// Solves the LP from built frontiers; on return ws.position holds, per item, the Pareto
// position of the integer primal that drops the fractional increment (and the cheapest
// allocation when infeasible).
LpRelaxation solve_lp(const ItemFrontiers& f, double budget, LagrangianWorkspace& ws);

// The other rounding of the LP: take the break item's step and make room by stepping other
// items down their hulls, flattest step (least value lost per unit cost) first. On success
// writes the Pareto positions into `position`, their totals (running sums) into total_cost
// and total_value, and returns true; otherwise `position` is left undefined. `position` must
// not be ws.taken.
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

// No prefetches in repair_rounds.
struct NoRepairPrefetch {
  void operator()(std::int32_t) const {}
};

// The default key of repair_rounds: the item itself.
struct KeyIsItem {
  std::int32_t operator()(std::int32_t key) const { return key; }
};

// The rounds of repair_upgrades over the items in scratch.items, whatever positions index, each
// given by a key: item_of(key) is the item (whose position `position` holds), and the callbacks
// take the key, as where the item's numbers lie (the item itself by default).
// best_upgrade(key, p, leftover) gives the position the item at position p moves to (p: none);
// cost(key, p) and value(key, p) what a position holds. An upgrade that brings total_value to
// `enough` is applied at once and ends the repair: nothing better is needed. The scan calls
// prefetch(key) for the item `ahead` places after the one it takes (NoRepairPrefetch: no call,
// and no test in the loop). Ties of gain go to the lower item, whatever the keys.
template <class BestUpgrade, class Cost, class Value, class Prefetch = NoRepairPrefetch, class ItemOf = KeyIsItem>
void repair_rounds(std::vector<std::int32_t>& position, double& total_cost, double& total_value,
                   double budget, int max_rounds, RepairScratch& scratch, BestUpgrade&& best_upgrade,
                   Cost&& cost, Value&& value, double enough = INFINITY, std::size_t ahead = kNoPrefetch,
                   Prefetch&& prefetch = Prefetch{}, ItemOf&& item_of = ItemOf{}) {
  std::vector<Upgrade>& candidates = scratch.candidates;
  std::vector<std::int32_t>& keys = scratch.items;
  for (int round = 0; round < max_rounds; ++round) {
    double leftover = budget - total_cost;
    if (!(leftover > 0.0)) break;
    candidates.clear();
    const std::size_t count = keys.size();
    for (std::size_t a = 0; a < count; ++a) {
      if constexpr (!std::is_same_v<std::decay_t<Prefetch>, NoRepairPrefetch>) {
        if (a + ahead < count) prefetch(keys[a + ahead]);
      }
      const std::int32_t key = keys[a], i = item_of(key);
      const std::int32_t p = position[i], q = best_upgrade(key, p, leftover);
      if (q == p) continue;
      const double gain = value(key, q) - value(key, p);
      if (total_value + gain >= enough) {  // this upgrade alone closes the gap
        total_value += gain;
        total_cost += cost(key, q) - cost(key, p);
        position[i] = q;
        return;
      }
      candidates.push_back(Upgrade{gain, key, q});
    }
    if (candidates.empty()) break;
    // The leftover only shrinks: an item with no upgrade within it now never gets one, unless
    // this round moves it. The next round scans this round's candidates alone.
    keys.resize(candidates.size());
    for (std::size_t c = 0; c < candidates.size(); ++c) keys[c] = candidates[c].item;
    // Only the largest gains can fit in a leftover smaller than one hull step: order the top
    // few; the next round sees the rest again.
    auto larger = [&](const Upgrade& a, const Upgrade& b) {
      return a.gain != b.gain ? a.gain > b.gain : item_of(a.item) < item_of(b.item);
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
      std::int32_t& at = position[item_of(u.item)];
      const double dw = cost(u.item, u.to) - cost(u.item, at);
      if (dw > leftover) continue;
      total_value += value(u.item, u.to) - value(u.item, at);
      at = u.to;
      leftover -= dw;
      total_cost += dw;
      applied = true;
    }
    if (!applied) break;
  }
}

// After lagrangian_primal on the frontier items (their Pareto positions in ws.position, running
// totals frontier_cost / frontier_value): writes every item's option to ws.item_option; after a
// reduced LP, spends leftover budget on upgrades of the items near the break (ws.near and the
// frontier items) among their raw options, stopping at the first that proves the allocation
// optimal against the LP bound `bound`; leaves the allocation's totals (compensated sums: in item
// order on the full path; after a reduced LP, the first pass's fixed items, then the items it
// left active), within the budget, in total_cost and total_value. Returns restore_item_options' answer: -1
// when even the cheapest allocation's correctly rounded total is over the budget (the LP,
// deciding on a compensated total, took it for feasible), which is then ws.item_option.
template <class T>
std::int64_t complete_allocation(const InstanceView<T>& p, LagrangianWorkspace& ws, double bound, double frontier_cost,
                         double frontier_value, double& total_cost, double& total_value);

// The result of an instance whose cheapest allocation (ws.item_option, totals in r) is over the
// budget on its correctly rounded total: "infeasible", min_budget that total. Writes the choice.
inline InstanceResult infeasible_at_cheapest(const LagrangianWorkspace& ws, InstanceResult r,
                                             std::int64_t* choice, std::int64_t n) {
  r.min_budget = r.cost;
  r.bound = r.shadow_price = kNaN;
  r.status = kInfeasible;
  for (std::int64_t i = 0; i < n; ++i) choice[i] = ws.item_option[i];
  return r;
}

// Totals of the allocation ws.item_option, summed in item order; steps items to cheaper options
// (least value lost per unit cost first) while it exceeds the budget. Returns how many steps it
// took (0: the allocation fit as given), or -1 when no cheaper option was left.
template <class T>
std::int64_t restore_item_options(const InstanceView<T>& p, LagrangianWorkspace& ws, double& total_cost,
                          double& total_value);

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
