// method="exact": LP-bounded core enumeration, after Pisinger's minimal algorithm for the
// multiple-choice knapsack (1995), written from the paper's ideas.
//
// Let lambda be the LP break slope and b_i each item's LP option (a maximiser of
// v - lambda w). Every allocation x within the budget satisfies
//     value(x) <= L(lambda) - sum_i d_i(x_i),   d_ij = (v_ib - lambda w_ib) - (v_ij - lambda w_ij) >= 0,
// so only options with d_ij < L - z can appear in an allocation better than the incumbent z.
// Items enter a core in turn from two lists: by the steepest hull step up from b_i and by the
// flattest step down to it (ties by their smallest d, how cheaply they leave b_i), which
// tightens the bounds below fastest; the core is enumerated
// by DP over (cost, value) states with the other items at b_i. A state (mu, pi) is dropped when
// dominated (another costs no more and is worth no less) or when its bound cannot beat the
// incumbent. An item whose smallest d exceeds every state's slack pi + lambda (C - mu) - z
// stays at b_i; enumeration stops when that holds for every item left.
// States are pruned with a tighter bound than lambda: the items outside the core sit at their
// LP options, so leftover budget buys value at most at the steepest untaken hull step among
// them, and an overspend costs at least the flattest taken step (the LP of the items outside
// the core is concave in its budget). Moves that can still pay off are those with d below the
// gap, so a state can shed at most the cost those moves of the items still to come can free
// (beyond it, it cannot become feasible) and gain at most lambda times what they can add.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <type_traits>
#include <utility>

// Under AddressSanitizer the large buffers stay on the heap, where it checks every access (it
// does not watch mapped pages).
#if defined(__SANITIZE_ADDRESS__)
#define APPORTION_MAPPED_BUFFERS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define APPORTION_MAPPED_BUFFERS 0
#endif
#endif
#if !defined(APPORTION_MAPPED_BUFFERS)
#if defined(__linux__)
#define APPORTION_MAPPED_BUFFERS 1
#else
#define APPORTION_MAPPED_BUFFERS 0
#endif
#endif
#if APPORTION_MAPPED_BUFFERS
#include <sys/mman.h>
#endif

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

// Large buffers come straight from the kernel, asking for transparent huge pages, and grow by
// mremap (the pages move, the bytes are not copied). Every link of every core layer is kept,
// so the link buffer of a strongly correlated 10^4 x 10 solve reaches 200 MB; on 4 KiB pages
// the kernel's page faults on it (and on the copies of each doubling) took 26% of the CPU
// time (perf), as the workspace gives such memory back after every call; on huge pages, 13-16%
// (clearing them) and that solve ran 8% faster. Elsewhere than Linux, and under
// AddressSanitizer: ordinary heap blocks.
class PageBlock {
 public:
  // Blocks of at least this many bytes are mapped (one huge page on x86-64 and most aarch64).
  static constexpr std::size_t kMapBytes = std::size_t(2) << 20;
  PageBlock() = default;
  PageBlock(const PageBlock&) = delete;
  PageBlock& operator=(const PageBlock&) = delete;
  PageBlock(PageBlock&& other) noexcept { swap(other); }
  PageBlock& operator=(PageBlock&& other) noexcept {
    PageBlock(std::move(other)).swap(*this);
    return *this;
  }
  ~PageBlock() { release(); }
  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  // Makes the block `bytes` long (at least), keeping its first `live` bytes. Throws
  // std::bad_alloc when the memory is not there.
  void resize(std::size_t bytes, std::size_t live) {
#if APPORTION_MAPPED_BUFFERS
    if (bytes >= kMapBytes) {
      bytes = (bytes + kMapBytes - 1) / kMapBytes * kMapBytes;
      void* p;
      if (mapped_) {
        p = mremap(data_, bytes_, bytes, MREMAP_MAYMOVE);
        if (p == MAP_FAILED) throw std::bad_alloc();
      } else {
        p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
        if (live > 0) std::memcpy(p, data_, live);
        release();
      }
#if defined(MADV_HUGEPAGE)
      madvise(p, bytes, MADV_HUGEPAGE);  // advice only: without THP, 4 KiB pages as before
#endif
      data_ = p;
      bytes_ = bytes;
      mapped_ = true;
      return;
    }
#endif
    void* p = ::operator new(bytes);
    if (live > 0) std::memcpy(p, data_, live);
    release();
    data_ = p;
    bytes_ = bytes;
  }
  void swap(PageBlock& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(bytes_, other.bytes_);
    std::swap(mapped_, other.mapped_);
  }

 private:
  void release() noexcept {
    if (data_ == nullptr) return;
#if APPORTION_MAPPED_BUFFERS
    if (mapped_) {
      munmap(data_, bytes_);
    } else {
      ::operator delete(data_);
    }
#else
    ::operator delete(data_);
#endif
    data_ = nullptr;
    bytes_ = 0;
    mapped_ = false;
  }
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  bool mapped_ = false;
};

// A growable array of trivially copyable T that, unlike std::vector, leaves new elements
// uninitialised and copies only the live ones when it grows (large ones not even those, see
// PageBlock): the core writes every state and link before reading it, and their zeroing and the
// copies of whole capacities took a fifth of a strongly correlated 10^4-item solve.
template <class T>
class RawBuffer {
  static_assert(std::is_trivially_copyable<T>::value && std::is_trivially_default_constructible<T>::value,
                "RawBuffer holds plain data");

 public:
  std::size_t size() const { return size_; }
  std::size_t capacity() const { return block_.bytes() / sizeof(T); }
  bool empty() const { return size_ == 0; }
  T* data() { return static_cast<T*>(block_.data()); }
  const T* data() const { return static_cast<const T*>(block_.data()); }
  T& operator[](std::size_t i) { return data()[i]; }
  const T& operator[](std::size_t i) const { return data()[i]; }
  T* begin() { return data(); }
  T* end() { return data() + size_; }
  const T* begin() const { return data(); }
  const T* end() const { return data() + size_; }
  void clear() { size_ = 0; }
  // New elements (past the old size) are uninitialised.
  void resize(std::size_t n) {
    if (n > capacity()) block_.resize(std::max(n, 2 * capacity()) * sizeof(T), size_ * sizeof(T));
    size_ = n;
  }
  void assign(std::size_t n, const T& x) {
    resize(n);
    std::fill_n(data(), n, x);
  }
  void swap(RawBuffer& other) noexcept {
    block_.swap(other.block_);
    std::swap(size_, other.size_);
  }

 private:
  PageBlock block_;
  std::size_t size_ = 0;
};
using CoreStates = RawBuffer<CoreState>;

struct ExactWorkspace {
  LagrangianWorkspace lagrangian;
  std::vector<std::int32_t> lp_option, best_option;  // (N) option indices
  std::vector<std::int32_t> trial_option;            // (N) a state's allocation, checked to fit
  struct CoreCandidate {
    double closeness;   // how near the item's hull slopes around b_i come to lambda
    double smallest_d;  // the cheapest move off b_i
    double shed, add;   // cost the moves that can pay off take off / put on
    double up, down;    // hull slopes around b_i
    std::int32_t item;
  };
  std::vector<CoreCandidate> order, order_scratch;
  std::vector<std::int32_t> by_up, by_down;  // positions in `order`, by slope (interleave_by_slopes)
  std::vector<char> taken;
  // Every item that can leave its LP option, before the core takes it: its hull slopes (up,
  // down) are in `candidate`, checked and with their closeness once `prepared`; `cheaper`
  // whether it has a cheaper option; up/down_outside its slopes should it stay outside (as the
  // first pass over the items found them).
  struct Pending {
    CoreCandidate candidate;
    double up_outside, down_outside;
    bool cheaper, prepared;
  };
  std::vector<Pending> pending;
  std::vector<double> up_after, down_after;  // (|order|+1) outside-core slopes after each layer
  std::vector<double> min_d_from;             // (|order|+1) smallest d over order[t..]
  std::vector<double> shed_after, add_after;  // (|order|+1) cost order[t+1..] can free / add
  // The two-move fill's table of moves by cost change (open addressing; a slot is in use when
  // its stamp is this fill's, so the table is never cleared).
  struct MoveSlot {
    double dw;                         // the key: cost change of the move
    double dv[2];                      // the best two value changes under this key...
    std::int32_t item[2], option[2];   // ...from two different items (item[1] < 0: none)
    std::uint32_t stamp;
  };
  std::vector<MoveSlot> moves;
  std::uint32_t move_stamp = 0;
  CoreStates states, merged, scratch;
  struct LayerMove {
    double d, dw, dv;  // reduced cost, cost and value change of the move off b_i
    std::int32_t option;
  };
  std::vector<LayerMove> moves_in_layer;  // the core item's moves that can pay off
  RawBuffer<CoreLink> links;               // every layer's links, one after the other
  std::vector<std::size_t> layer_begin;     // where each layer's links start
  std::vector<std::int32_t> layer_item;

  // Everything this workspace holds (what run_batch weighs against the thread's keep).
  std::size_t bytes() const {
    return lagrangian.bytes() + (states.capacity() + merged.capacity() + scratch.capacity()) * sizeof(CoreState) +
           links.capacity() * sizeof(CoreLink) +
           (order.capacity() + order_scratch.capacity()) * sizeof(CoreCandidate) +
           pending.capacity() * sizeof(Pending) + moves.capacity() * sizeof(MoveSlot) +
           moves_in_layer.capacity() * sizeof(LayerMove) +
           (lp_option.capacity() + best_option.capacity() + trial_option.capacity() + by_up.capacity() +
            by_down.capacity() + layer_item.capacity()) * sizeof(std::int32_t) +
           taken.capacity() + layer_begin.capacity() * sizeof(std::size_t) +
           (up_after.capacity() + down_after.capacity() + min_d_from.capacity() + shed_after.capacity() +
            add_after.capacity()) * sizeof(double);
  }
  // What this workspace will hold beside `lagrangian` in a solve of n items: what it holds now,
  // and the three option arrays grown to n (lp_option always; best_option and trial_option
  // where the core finds a better allocation).
  std::size_t bytes_beside_lagrangian(std::int64_t n) const {
    const std::size_t items = static_cast<std::size_t>(n);
    auto growth = [&](const std::vector<std::int32_t>& a) {
      return (a.capacity() < items ? items - a.capacity() : 0) * sizeof(std::int32_t);
    };
    return bytes() - lagrangian.bytes() + growth(lp_option) + growth(best_option) + growth(trial_option);
  }
  void shed_copies() { lagrangian.shed_copies(); }  // (trim_workspace)
  // What the core holds for the instance in hand: its links and the live layer buffers (the
  // capacities above may be left over from an earlier, larger instance on this thread).
  std::size_t core_bytes() const {
    return links.size() * sizeof(CoreLink) +
           (states.size() + merged.size() + scratch.size()) * sizeof(CoreState);
  }
};

// Reorders ws.order so that the items with the steepest up-step and with the flattest
// down-step left come in turn (each list in the current order among equal slopes). A state's
// tight bound prices leftover budget at the steepest up-step and an overspend at the flattest
// down-step among the items still to come: while an item with a step at lambda stays out, that
// side is bounded by lambda alone and nothing is pruned. Taking items by promise (smallest d)
// left such items out for many layers (strongly correlated 1000 x 8, R = 10^4, seed 3: 34,000
// states against 4,300 so); taking the best of each side in turn, as Pisinger's two sorted
// stacks do, lowers both bounds from the first layers.
void interleave_by_slopes(ExactWorkspace& ws) {
  const std::size_t m = ws.order.size();
  if (m < 3) return;
  ws.by_up.resize(m);
  ws.by_down.resize(m);
  for (std::size_t a = 0; a < m; ++a) ws.by_up[a] = ws.by_down[a] = static_cast<std::int32_t>(a);
  const auto& order = ws.order;
  std::stable_sort(ws.by_up.begin(), ws.by_up.end(),
                   [&](std::int32_t x, std::int32_t y) { return order[x].up > order[y].up; });
  std::stable_sort(ws.by_down.begin(), ws.by_down.end(),
                   [&](std::int32_t x, std::int32_t y) { return order[x].down < order[y].down; });
  ws.taken.assign(m, 0);
  ws.order_scratch.clear();
  std::size_t next_up = 0, next_down = 0;
  for (bool up_turn = true; ws.order_scratch.size() < m; up_turn = !up_turn) {
    std::vector<std::int32_t>& list = up_turn ? ws.by_up : ws.by_down;
    std::size_t& next = up_turn ? next_up : next_down;
    while (next < m && ws.taken[list[next]]) ++next;
    if (next == m) continue;  // the other list still holds the rest
    ws.taken[list[next]] = 1;
    ws.order_scratch.push_back(order[list[next]]);
  }
  ws.order.swap(ws.order_scratch);
}

// The greatest common divisor of two positive doubles: Euclid's algorithm, exact because fmod
// is.
inline double float_gcd(double a, double b) {
  while (b > 0.0) {
    const double r = std::fmod(a, b);
    a = b;
    b = r;
  }
  return a;
}

// The lowest set bit of a positive finite double, as a double (1 for 3.0, 0.5 for 1.5).
inline double lowest_bit(double x) {
  int exponent;
  const double mantissa = std::frexp(x, &exponent);  // x = mantissa 2^exponent, mantissa in [0.5, 1)
  auto bits = static_cast<std::uint64_t>(std::ldexp(mantissa, 53));  // an integer below 2^53
  int zeros = 0;
  while ((bits & 1u) == 0) {
    bits >>= 1;
    ++zeros;
  }
  return std::ldexp(1.0, exponent - 53 + zeros);
}

// A common step of the allowed costs or values: every one is an integer multiple of `step`,
// and every allocation's total is exact in a double (below `exact_below`, 2^53 times the
// lowest set bit of step), so totals are multiples of step too. step is 0 where there is none.
struct CommonStep {
  double step = 0.0, exact_below = 0.0;
};

// The largest common step of the allowed costs (of_costs) or values, by Euclid's algorithm
// over them: integers give 1 (or their gcd), multiples of 0.5 give 0.5. Stops with none as soon
// as the sum of each item's largest magnitude reaches exact_below: real-valued data (where the
// step falls to the last bits) stop within a few items.
// Only the items for which `counts(i)` holds take part.
template <class T, class Counts>
CommonStep common_step(const InstanceView<T>& inst, bool of_costs, Counts&& counts) {
  CommonStep found;
  double largest_total = 0.0, inverse = 0.0;
  bool power_of_two = false;
  for (std::int64_t i = 0; i < inst.n; ++i) {
    if (!counts(i)) continue;
    double largest = 0.0;
    // Whether every option of the item is a multiple already: x / step is then an integer k,
    // and k * step is exact while x is below exact_below (beyond it the check after this item
    // gives up anyway). A step that is a power of two (1 for integers) divides exactly as a
    // product by its inverse; k = 0 for x > 0 is a quotient that underflowed. Branch-free:
    // this pass is most of the time on integer data.
    bool multiples = found.step > 0.0;
    if (multiples && power_of_two && !of_costs && inst.mask == nullptr) {
      // The common case (integer values, no mask) on the raw row, without a branch or a
      // floor: q = x / step is an integer below 2^52 exactly when (q + 2^52) - 2^52 == q (an
      // integer past 2^52 may read as not one: the one-by-one pass below decides it).
      // The misses are or-ed as integers: summed as doubles, their additions made a chain
      // (this line held 11% of a weakly correlated 1000 x 100 solve's samples; or-ed, the
      // solve takes 2-5% less CPU).
      const T* row = inst.values + i * inst.k;
      unsigned misses = 0;
      for (std::int64_t j = 0; j < inst.k; ++j) {
        const double x = std::fabs(static_cast<double>(row[j]));
        largest = largest > x ? largest : x;
        const double q = x * inverse;
        misses |= static_cast<unsigned>((q + 4503599627370496.0) - 4503599627370496.0 != q) |
                  static_cast<unsigned>((q == 0.0) & (x != 0.0));
      }
      multiples = misses == 0;
    } else if (multiples) {
      for_each_option(inst, i, [&](std::int32_t, double w, double v, bool ok) {
        const double x = ok ? std::fabs(of_costs ? w : v) : 0.0;
        largest = std::max(largest, x);
        const double k = power_of_two ? x * inverse : x / found.step;
        multiples &= (k == std::floor(k)) & ((k != 0.0) | (x == 0.0)) & (power_of_two | (k * found.step == x));
      });
    }
    if (!multiples) {  // the item's options into the step, one by one
      largest = 0.0;
      bool finite = true;
      for_each_option(inst, i, [&](std::int32_t, double w, double v, bool ok) {
        const double x = ok ? std::fabs(of_costs ? w : v) : 0.0;
        // Runs before the input is checked (the costs' step is taken before the LP): NaN and
        // infinities end the search here, and the check rejects them later.
        finite &= x <= std::numeric_limits<double>::max();
        if (!finite) return;
        largest = std::max(largest, x);
        if (x == 0.0) return;
        if (found.step > 0.0) {
          const double k = power_of_two ? x * inverse : x / found.step;
          if (k != 0.0 && k == std::floor(k) && (power_of_two || k * found.step == x)) return;
        }
        found.step = found.step == 0.0 ? x : float_gcd(found.step, x);
        const double low = lowest_bit(found.step);
        found.exact_below = 9007199254740992.0 * low;  // 2^53
        inverse = 1.0 / found.step;
        // (Not for a step below 2^-1024, whose inverse overflows: every x * inf passed as a
        // multiple, and costs of 8 and 10 subnormal units took a step of 8, which rounded a
        // budget of 19 units down to 16, under the cheapest total: "infeasible".)
        power_of_two = low == found.step && std::isfinite(inverse);
      });
      if (!finite) return CommonStep{};
    }
    largest_total += largest;
    if (found.step > 0.0 && !(largest_total < found.exact_below)) return CommonStep{};  // (step 0: zeros so far)
  }
  return found;
}

// The two-move fill: looks for two items, both at their LP options in the primal `option`,
// whose moves together add exactly `leftover` of cost (every move's cost change is checked
// against the other's complement in a hash table, as the moves are read) and at least
// `value_needed` of value. Only moves with reduced cost d up to `d_budget` can be part of such
// a pair, and only items whose margin (a lower bound on their smallest d) is below
// `movable_gap` are read (the others are not in the value step's count). Where values and
// costs are integers and the bound is proven by a fill of the budget (subset-sum), a primal
// one unit short has thousands of such pairs among 1000 items with a range of 10^4, and the
// first turns up within a few hundred moves; the core instead
// enumerated every combination of its first four items (3,750 states) to find one. Reads at
// most kMaxFillMoves moves. On success, writes the two moves into `option`, their value change
// into `gained`, and returns true.
template <class T>
bool fill_with_two_moves(const InstanceView<T>& inst, ExactWorkspace& ws, std::vector<std::int32_t>& option,
                         const std::vector<double>& item_margin, double movable_gap, double lambda, double leftover,
                         double value_needed, double d_budget, double& gained) {
  constexpr std::size_t kMaxFillMoves = 8192;
  const std::size_t capacity = 2 * kMaxFillMoves;  // a power of two
  if (ws.moves.size() != capacity) {
    ws.moves.assign(capacity, ExactWorkspace::MoveSlot{});
    ws.move_stamp = 0;
  }
  if (++ws.move_stamp == 0) {  // wrapped: clear once
    for (auto& slot : ws.moves) slot.stamp = 0;
    ws.move_stamp = 1;
  }
  const std::uint32_t stamp = ws.move_stamp;
  auto slot_of = [&](double dw) -> ExactWorkspace::MoveSlot& {
    std::uint64_t bits;
    const double key = dw + 0.0;  // -0 as +0
    std::memcpy(&bits, &key, sizeof bits);
    std::size_t at = static_cast<std::size_t>((bits * 0x9E3779B97F4A7C15ull) >> 40) & (capacity - 1);
    while (ws.moves[at].stamp == stamp && ws.moves[at].dw != key) at = (at + 1) & (capacity - 1);
    return ws.moves[at];
  };
  std::size_t read = 0;
  // Items from both ends in turn: the LP takes tied steps in item order, so the items before
  // the break tend to sit at their dearer options (moves that free cost) and those after it at
  // cheaper ones (moves that add cost); a fill needs one of each (item order read 3,500 moves
  // on subset-sum 1000 x 8 before the first pair).
  for (std::int64_t t = 0; t < inst.n; ++t) {
    const auto i = static_cast<std::int32_t>(t % 2 == 0 ? t / 2 : inst.n - 1 - t / 2);
    const std::int32_t bi = ws.lp_option[i];
    if (option[i] != bi || !(item_margin[i] < movable_gap)) continue;  // moved already, or cannot move
    const double wb = inst.cost(i, bi), vb = inst.value(i, bi);
    for (std::int32_t q = 0; q < inst.k; ++q) {
      if (q == bi || !inst.allowed(i, q)) continue;
      const double dw = inst.cost(i, q) - wb, dv = inst.value(i, q) - vb;
      if (!(lambda * dw - dv <= d_budget)) continue;
      ExactWorkspace::MoveSlot& other = slot_of(leftover - dw);
      if (other.stamp == stamp) {
        const int pick = other.item[0] != i ? 0 : 1;  // the best partner from another item
        if (other.item[pick] >= 0 && dv + other.dv[pick] >= value_needed) {
          const std::int32_t j = other.item[pick], qj = other.option[pick];
          const std::int32_t old_i = option[i], old_j = option[j];
          option[i] = q;
          option[j] = qj;
          double total_cost, total_value;
          if (option_fits(inst, option.data(), total_cost, total_value)) {
            gained = dv + other.dv[pick];
            return true;
          }
          option[i] = old_i;  // over by rounding: not this pair
          option[j] = old_j;
        }
      }
      ExactWorkspace::MoveSlot& mine = slot_of(dw);
      if (mine.stamp != stamp) {
        mine = ExactWorkspace::MoveSlot{dw + 0.0, {dv, 0.0}, {i, -1}, {q, -1}, stamp};
      } else if (mine.item[0] == i) {  // the same item: keep its better move first
        if (dv > mine.dv[0]) {
          mine.dv[0] = dv;
          mine.option[0] = q;
        }
      } else if (dv > mine.dv[0]) {  // a new best from another item; the old best second
        mine.dv[1] = mine.dv[0];
        mine.item[1] = mine.item[0];
        mine.option[1] = mine.option[0];
        mine.dv[0] = dv;
        mine.item[0] = i;
        mine.option[0] = q;
      } else if (mine.item[1] < 0 || dv > mine.dv[1]) {
        mine.dv[1] = dv;
        mine.item[1] = i;
        mine.option[1] = q;
      }
      if (++read >= kMaxFillMoves) return false;
    }
  }
  return false;
}

// Merges a cost-sorted, dominance-free list `a` with `states` shifted by (dw, dv) into `out`,
// keeping the result dominance-free. Shifted states failing `keep` are left out. The shifted
// states are made as the merge reaches them, and `keep` (the bound, most of the merge's
// arithmetic) is asked only of those the list so far does not dominate: on strongly
// correlated instances about nine in ten of the shifted states that pass it are dominated.
// The merge's choices come in long runs (GCC compiles them to branches, well predicted; the
// same merge made branch-free, a choice by pointer arithmetic, ran 2.2x slower on strongly
// correlated instances: its dependency chain is the loop). Returns false, leaving `out` alone,
// when no shifted state passes `keep` and beats `a`.
template <class Keep>
bool merge_shifted(const CoreStates& a, const CoreStates& states, double dw, double dv, std::int32_t pos,
                   Keep&& keep, CoreStates& out) {
  const std::size_t na = a.size(), ns = states.size();
  auto shift = [&](std::size_t y) {
    return CoreState{states[y].cost + dw, states[y].value + dv, static_cast<std::int32_t>(y), pos};
  };
  // Whether the state p of `a` comes before the shifted state s (of equal costs, the worthier
  // first, so that the other is then dominated).
  auto before = [](const CoreState& p, const CoreState& s) {
    return p.cost < s.cost || (p.cost == s.cost && p.value >= s.value);
  };
  // Up to the first shifted state that is kept, the merge would keep `a` as it is: found by
  // reading alone, and the states of `a` before it then copied as a block. Most merges end
  // there with nothing to write (strongly correlated 1000 x 100 seed 4: 60% of them, with the
  // moves in option order).
  // Here the states of `a` that cost no more than s are passed with one compare a step (with a
  // second one for ties, as below, this loop took 10-25% more of a strongly correlated solve);
  // the dominance test then holds whichever of equal costs comes first.
  std::size_t x = 0, y = 0;
  for (; y < ns; ++y) {
    const CoreState s = shift(y);
    while (x < na && a[x].cost <= s.cost) ++x;
    if ((x == 0 || s.value > a[x - 1].value) && keep(s.cost, s.value)) break;
  }
  if (y == ns) return false;
  // Of equal costs, s goes before the state of `a` it beats (the costs in `a` are distinct).
  if (x > 0 && a[x - 1].cost == shift(y).cost) --x;
  out.resize(na + (ns - y));  // the most it can hold; trimmed at the end
  CoreState* o = out.data();
  // (a may be empty, its data() null: memcpy from null is undefined even for 0 bytes)
  if (x > 0) std::memcpy(o, a.data(), x * sizeof(CoreState));
  std::size_t count = x;
  double last = x > 0 ? a[x - 1].value : -INFINITY;  // the value of the last state kept
  for (; y < ns; ++y) {
    const CoreState s = shift(y);
    // (Here the one-compare form, with the shifted state replacing a kept one of its cost, ran
    // 15-30% slower.)
    for (; x < na && before(a[x], s); ++x) {  // kept only when worth more than every cheaper state
      o[count] = a[x];
      count += a[x].value > last;
      last = std::max(last, a[x].value);
    }
    if (s.value > last && keep(s.cost, s.value)) {
      o[count++] = s;
      last = s.value;
    }
  }
  // The rest of `a`: past those the last kept state dominates, all kept.
  while (x < na && !(a[x].value > last)) ++x;
  if (na > x) std::memcpy(o + count, a.data() + x, (na - x) * sizeof(CoreState));
  count += na - x;
  out.resize(count);
  return true;
}

// merge_shifted for the core's careful run: a state is dropped only for one that costs at least
// `separation` less (more than the states' costs can be off by rounding) and is worth no less.
// merge_shifted compares rounded costs, so of two states within rounding of each other it may
// keep one whose exact total is the higher, and drop the one of the two that later fits the
// budget. Here the list need not rise in value with cost. Writes `out` (always: returns true).
template <class Keep>
bool merge_separated(const CoreStates& a, const CoreStates& states, double dw, double dv, std::int32_t pos,
                     Keep&& keep, double separation, CoreStates& out) {
  const std::size_t na = a.size(), ns = states.size();
  out.resize(na + ns);
  CoreState* o = out.data();
  std::size_t count = 0, x = 0;
  for (std::size_t y = 0; y < ns; ++y) {
    const CoreState s{states[y].cost + dw, states[y].value + dv, static_cast<std::int32_t>(y), pos};
    if (!keep(s.cost, s.value)) continue;
    for (; x < na && a[x].cost <= s.cost; ++x) o[count++] = a[x];
    o[count++] = s;
  }
  for (; x < na; ++x) o[count++] = a[x];
  // In cost order; `settled` states (all kept) cost `separation` less than the one at hand,
  // and the best of them is worth `best_settled`.
  std::size_t kept = 0, settled = 0;
  double best_settled = -INFINITY;
  for (std::size_t at = 0; at < count; ++at) {
    const CoreState st = o[at];
    for (; settled < kept && o[settled].cost < st.cost - separation; ++settled) {
      best_settled = std::max(best_settled, o[settled].value);
    }
    if (st.value > best_settled) o[kept++] = st;
  }
  out.resize(kept);
  return true;
}

}  // namespace

template <class T>
void solve_exact(const BatchView<T>& p, const BatchOutput& out, const ExactLimits& limits, int threads) {
  using clock = std::chrono::steady_clock;
  // A thread keeps up to 32 MiB of its workspace, or an instance's whole input (values and
  // costs) where that is more (the Lagrangian keeps half), as the exact solver holds per-item
  // arrays beside its Lagrangian workspace (each item's LP and best options, the core's
  // candidates): routing 1e6 x 8 seed 1 holds 74 MB in float64, and with half its input kept,
  // every solve faulted 16,561 pages in again (141-148 ms CPU against 107-131 kept); float32,
  // 11,890 pages (125-141 ms against 88-97). The reduced LP sizes its copied rows to fit that
  // keep beside those arrays (compact_room).
  const std::size_t keep = p.b > 0 ? std::max(kKeepWorkspaceBytes, row_bytes(p.instance(0))) : kKeepWorkspaceBytes;
  run_batch<ExactWorkspace>(p.b, threads, [&](std::int64_t b, ExactWorkspace& ws, int inner) {
    const auto started = clock::now();
    auto past_time_limit = [&] {
      return std::chrono::duration<double>(clock::now() - started).count() > limits.time_limit;
    };
    InstanceView<T> inst = p.instance(b);
    // The costs' common step, found once where it is asked for (it costs a pass over the
    // costs): the budget's rounding below and the room over the budget (fit_value) both ask.
    std::optional<CommonStep> cost_step;
    auto costs_step = [&]() -> const CommonStep& {
      if (!cost_step) cost_step = common_step(inst, /*of_costs=*/true, [](std::int64_t) { return true; });
      return *cost_step;
    };
    // With costs on a common step (integers, or multiples of 0.5, ..., totals exact in a
    // double) an allocation fits C exactly when it fits C rounded down to the step: the LP and
    // its bound are taken there, which they would otherwise pass by up to the fraction (a real
    // budget over integer costs left a gap that only enumeration could close). Checked only
    // for a budget with a fraction: the step costs a pass over the costs.
    if (std::isfinite(inst.budget) && inst.budget != std::floor(inst.budget)) {
      const CommonStep& cost = costs_step();
      // A budget past exact_below is past every total: nothing to round there.
      if (cost.step > 0.0 && std::fabs(inst.budget) < cost.exact_below) {
        double units = std::floor(inst.budget / cost.step);
        if (units * cost.step > inst.budget) units -= 1.0;  // the division rounded up
        inst.budget = units * cost.step;                    // exact below exact_below
      }
    }
    LagrangianWorkspace& lw = ws.lagrangian;
    lw.keep_bytes = keep;
    lw.held_beside = ws.bytes_beside_lagrangian(inst.n);
    const LpRelaxation lp = solve_lp_reduced(inst, lw, inner, /*margins=*/true, [&] { check_instance(p, b); });
    const ItemFrontiers& f = lw.frontiers;
    InstanceResult r;
    r.min_budget = lp.min_cost;
    std::int64_t* choice = out.choice + b * p.n;
    if (!lp.feasible) {
      allocation_totals(f, lw.position, r.cost, r.value);
      r.bound = r.shadow_price = kNaN;
      r.status = kInfeasible;
      write_choice(f, lw.position, choice);
      out.store(b, r);
      return;
    }
    const double C = inst.budget, lambda = lp.lambda, L = lp.bound;
    const std::int64_t n = inst.n;
    // Every item's LP option: the fixed items', then the frontier items' LP positions.
    ws.lp_option.assign(lw.item_option.begin(), lw.item_option.begin() + n);
    for (std::int64_t s = 0; s < f.n; ++s) ws.lp_option[lw.active[s]] = f.option[s * f.k + lw.position[s]];
    double z_cost, z, frontier_cost, frontier_value;
    bool core_improved = false;  // whether the core found a better allocation than the primal
    lagrangian_primal(f, lp, lw, lw.frontier_budget, frontier_cost, frontier_value);
    if (complete_allocation(inst, lw, L, frontier_cost, frontier_value, z_cost, z) < 0) {
      r.cost = z_cost;
      r.value = z;
      out.store(b, infeasible_at_cheapest(lw, r, choice, n));
      return;
    }
    // A NaN gap would neither prove nor fail the core below: overflowed input stops here.
    if (!std::isfinite(L) || !std::isfinite(lambda) || !std::isfinite(z) || !std::isfinite(z_cost) ||
        !std::isfinite(L - z)) {
      throw_overflow(inst, b);
    }
    // The core works in differences from the LP options b_i, so that a common offset in the
    // values (1e12 + small differences) costs no precision: totals, the primal z, the budget
    // and the bound are all taken relative to the LP allocation (base), which the compensated
    // sums below fix once. Relative to it, L = lambda * C_rel (every b_i maximises
    // v - lambda w), the primal is z_rel, and "optimal" is decided to the rounding of those.
    // Even an integral LP is checked so: its steps fit on a running sum, and the primal may
    // have been stepped down since, where the compensated total said it did not fit.
    CompensatedSum base_cost_sum, base_value_sum, z_rel_sum, z_cost_rel_sum;
    double z_reduced_cost = 0.0;  // sum of the primal's d_i(x_i)
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int32_t bi = ws.lp_option[i], xi = lw.item_option[i];
      base_cost_sum.add(inst.cost(i, bi));
      base_value_sum.add(inst.value(i, bi));
      if (xi != bi) {
        const double dw = inst.cost(i, xi) - inst.cost(i, bi), dv = inst.value(i, xi) - inst.value(i, bi);
        z_rel_sum.add(dv);
        z_cost_rel_sum.add(dw);
        z_reduced_cost += lambda * dw - dv;
      }
    }
    // C - base, with the compensated base's carry: C_rel to about an ulp of C.
    const double C_rel = (C - base_cost_sum.sum) - base_cost_sum.carry;
    double z_rel = z_rel_sum.value();
    // An allocation fits when its rounded total does, so its exact cost may pass C by half an
    // ulp of C: the bound allows for that room at the shadow price, and so does the slack.
    // Not where every allocation's total is exact (costs on a common step, every total below
    // 2^53 steps): a rounded total is then the total. Checked only where the room passes the
    // slack, as where the costs carry a large offset (C far above C_rel): the step costs a pass
    // over the costs. (Integer costs offset by 1e15 at a slope near 1: a room of 2 took 18 for
    // optimal where 19 fit; found by a fuzzing helper.)
    double fit_value = lambda > 0.0 ? lambda * kDoubleEpsilon * std::fabs(C) : 0.0;
    if (fit_value > optimality_slack(z_rel, lambda * C_rel, lambda * C_rel)) {
      const CommonStep& cost = costs_step();
      if (cost.step > 0.0 && std::fabs(C) < cost.exact_below) fit_value = 0.0;
    }
    double L_rel = lambda > 0.0 ? lambda * C_rel + fit_value : 0.0;
    double tol = optimality_slack(z_rel, L_rel, lambda > 0.0 ? lambda * C_rel : 0.0) + 2.0 * fit_value;
    // A shadow price of 0 or below the normal range may be a slope that underflowed (values of
    // 1e-300 against costs of 1e300): the LP options then need not maximise v - lambda w, and
    // lambda * C_rel bounds nothing. The absolute bound L does, to the rounding of its own
    // magnitude; the core runs only where the options turn out to maximise (below).
    const bool slopes_underflow = !(lambda >= std::numeric_limits<double>::min());
    if (slopes_underflow) {
      L_rel = std::max(L_rel, (L - base_value_sum.sum) - base_value_sum.carry);
      tol = std::max(tol, optimality_slack(z, L));
    }
    double upper_rel = L_rel;
    bool proven = L_rel - z_rel <= tol;
    // What a bound must pass z by to matter: tol, or with values on a common step (integers:
    // 1; multiples of 0.5: 0.5; totals exact in a double) almost the step, since an allocation
    // that beats z then beats it by at least the step. Without it, subset-sum with a budget
    // that is not an integer enumerated the whole core (7.5 s) to end "feasible" at a gap of 0.5.
    // Only the items that can move matter: every allocation worth more than z keeps the others
    // at b_i (an item whose margin, a lower bound on its smallest d, reaches L - z cannot
    // move), so its value differs from z's by moves of the items counted here, and from the
    // base's likewise. With the LP's margins most items of a large instance are not read.
    const double movable_gap = L_rel - z_rel;
    const double value_step =
        proven ? 0.0 : common_step(inst, /*of_costs=*/false, [&](std::int64_t i) {
          return slopes_underflow || lw.margin[i] < movable_gap || lw.item_option[i] != ws.lp_option[i];
        }).step;
    // Not for a subnormal step: tol (ulps of the totals) then rounds to 0 while the totals'
    // roundings do not, and an allocation one step above z could fail the margin's test. A
    // step of at least DBL_MIN / eps keeps every nonzero total normal.
    const bool stepped =
        value_step > 4.0 * tol && value_step >= std::numeric_limits<double>::min() / kDoubleEpsilon;
    const double margin = stepped ? value_step - 2.0 * tol : tol;
    proven = L_rel - z_rel <= margin;
    Status stopped_by = kFeasible;  // kStoppedBy* once a work limit ends the core
    // Values on a step: two moves that fill the budget may reach the bound (subset-sum). An
    // allocation made from the primal x by moving two items that sit at b_i is worth
    // L - d_a - d_b - D(x) - lambda * (its leftover), so only moves with d up to
    // margin - D(x) can take part. Where the slopes underflowed, d means nothing: not tried.
    if (!proven && stepped && !slopes_underflow && z_reduced_cost < margin) {
      double gained = 0.0;
      ws.best_option.assign(lw.item_option.begin(), lw.item_option.end());
      const double leftover = C_rel - z_cost_rel_sum.value();
      if (fill_with_two_moves(inst, ws, ws.best_option, lw.margin, movable_gap, lambda, leftover, L_rel - z_rel - margin,
                              margin - z_reduced_cost + tol, gained)) {
        z_rel += gained;
        core_improved = true;
        proven = L_rel - z_rel <= margin;
      }
    }

    if (!proven) {
      // Items that can leave their LP option; the others never move, and bound from outside.
      // Items fixed at the first bracket whose margin already rules out every move are not
      // visited: their hull slopes around the break are bounded by that bracket's ends.
      ws.pending.clear();
      double up_fixed = 0.0, down_fixed = static_cast<double>(INFINITY);
      bool skipped = false;
      // Where rounding left some b_i short of its item's best score, the bound grows by that.
      CompensatedSum shortfall;
      const double gap = L_rel - z_rel - margin;
      for (std::int64_t i = 0; i < n; ++i) {
        if (lw.margin[i] >= gap) {
          skipped = true;
          continue;
        }
        const std::int32_t bi = ws.lp_option[i];
        const double wb = inst.cost(i, bi), vb = inst.value(i, bi);
        double best_other = -INFINITY;  // max of (v - vb) - lambda (w - wb) over the other options
        // Hull slopes around b_i: the next step up (0 if none: leftover budget may simply go
        // unused) and the step down to it (inf if none: it cannot get cheaper). As b_i is a
        // hull point, these are the steepest chord from b_i to a costlier option and the
        // flattest from a cheaper one. Without a division per option: only a chord steeper
        // (flatter) than the running one is worked out.
        double up = 0.0, down = static_cast<double>(INFINITY);
        bool cheaper = false;
        for_each_option(inst, i, [&](std::int32_t j, double w, double v, bool ok) {
          const double score = (ok & (j != bi)) ? (v - vb) - lambda * (w - wb) : -INFINITY;
          best_other = std::max(best_other, score);
          if (ok & (w > wb) & (v - vb > up * (w - wb))) up = (v - vb) / (w - wb);
          if (ok & (w < wb) & (vb - v < down * (wb - w))) down = (vb - v) / (wb - w);
          cheaper |= ok & (w < wb);
        });
        if (best_other > 0.0) shortfall.add(best_other);
        const double smallest = std::max(0.0, -best_other);
        // The outside-core slopes, should the item stay outside.
        const double up_outside = std::max(up_fixed, up), down_outside = std::min(down_fixed, down);
        if (!(smallest < gap)) {
          up_fixed = up_outside;
          down_fixed = down_outside;
        } else {
          ExactWorkspace::CoreCandidate c{};
          c.smallest_d = smallest;
          c.item = static_cast<std::int32_t>(i);
          c.up = up;
          c.down = down;
          ws.pending.push_back({c, up_outside, down_outside, cheaper, false});
        }
      }
      if (skipped) {
        up_fixed = std::max(up_fixed, lw.first_lo);
        down_fixed = std::min(down_fixed, lw.first_hi);
      }
      const double short_by = shortfall.value();
      L_rel += short_by;
      upper_rel = L_rel;
      // Where the LP options fall short of an item's best score by more than rounding (slopes
      // that underflowed), a move can gain (d < 0) and the core's bounds do not hold: it does
      // not run, and the absolute bound stands.
      const bool core_sound = !(slopes_underflow && short_by > tol);

      // How far a candidate's moves that cost less than `move_limit` (of L) take its cost
      // down and up.
      auto cost_range = [&](ExactWorkspace::CoreCandidate& c, double move_limit) {
        const std::int64_t i = c.item;
        const std::int32_t bi = ws.lp_option[i];
        const double wb = inst.cost(i, bi), vb = inst.value(i, bi);
        double lo = wb, hi = wb;
        for_each_option(inst, i, [&](std::int32_t, double w, double v, bool ok) {
          if (ok && (vb - v) - lambda * (wb - w) < move_limit) {
            lo = std::min(lo, w);
            hi = std::max(hi, w);
          }
        });
        c.shed = wb - lo;
        c.add = hi - wb;
      };
      // Widening: with many candidates, the core first takes only the moves that cost under a
      // quarter of the gap (of L, as d). Every allocation making a costlier move is worth at
      // most L - limit, so if this first core ends at z >= L - limit (typical: the optimum is
      // usually much nearer L than the primal), z is optimal. Otherwise (or when it stops
      // early) the core runs again over every candidate under the gap, as it would have at
      // once; the hull slopes found for the first core are kept. It is skipped when it would
      // leave out no candidate: on strongly correlated instances with many options it then
      // did nearly the whole core's work, failed, and the core ran twice.
      constexpr std::size_t kWideningMinCandidates = 64;
      double limit = gap;
      if (ws.pending.size() > kWideningMinCandidates) {
        const bool leaves_one_out = std::any_of(ws.pending.begin(), ws.pending.end(), [&](const auto& c) {
          return !(c.candidate.smallest_d < 0.25 * gap);
        });
        if (leaves_one_out) limit = 0.25 * gap;
      }
      // Whether the core runs carefully (merge_separated), and then the most links it may make
      // and the bound that the first run proved.
      bool careful = false;
      std::size_t careful_links = 0;
      double displaced_upper = static_cast<double>(INFINITY);
      for (bool run_core = core_sound; run_core;) {
        const bool widened = limit >= gap;  // every candidate and move takes part
        const double move_limit = widened ? static_cast<double>(INFINITY) : limit;
        double up_outside = up_fixed, down_outside = down_fixed;
        ws.order.clear();
        for (ExactWorkspace::Pending& c : ws.pending) {
          if (c.candidate.smallest_d < limit) {
            if (!c.prepared) {  // how near its hull slopes come to lambda
              // A slope past the float range (4e300 of value over 1e-12 of cost) would read as
              // "no step" (down = inf) and prune states that can still shed cost: a core item
              // with one is refused, as a total that overflows is.
              if (!(c.candidate.up < INFINITY) || (c.cheaper && !(c.candidate.down < INFINITY))) {
                throw_overflow(inst, b);
              }
              c.candidate.closeness =
                  std::max(0.0, std::min(lambda - c.candidate.up, c.candidate.down - lambda));
              c.prepared = true;
            }
            cost_range(c.candidate, limit);
            ws.order.push_back(c.candidate);
          } else {
            up_outside = std::max(up_outside, c.up_outside);
            down_outside = std::min(down_outside, c.down_outside);
          }
        }
        auto by_promise = [](const auto& a, const auto& b) {
          if (a.smallest_d != b.smallest_d) return a.smallest_d < b.smallest_d;
          if (a.closeness != b.closeness) return a.closeness < b.closeness;
          return a.item < b.item;
        };
        // interleave_by_slopes below takes the items by their slopes; this order (by promise,
        // then the alternation) decides among equal slopes.
        std::sort(ws.order.begin(), ws.order.end(), by_promise);
        // Among equally promising items, alternate those that free budget with those that use
        // it: the LP fills ties in item order, so otherwise all of one kind come first and the
        // states spread far from the budget before any can return to it. Each run of equal
        // promise becomes shedder, adder, shedder, ... (each kind in item order, the longer
        // kind's rest at the end), in one pass.
        for (std::size_t begin = 0, end; begin < ws.order.size(); begin = end) {
          const auto& first = ws.order[begin];
          for (end = begin + 1; end < ws.order.size() && ws.order[end].smallest_d == first.smallest_d &&
                                ws.order[end].closeness == first.closeness;
               ++end) {
          }
          if (end - begin < 2) continue;
          // The run's shedders, then its adders, each in order; then dealt out alternately.
          std::vector<ExactWorkspace::CoreCandidate>& run = ws.order_scratch;
          run.clear();
          for (std::size_t a = begin; a < end; ++a) {
            if (ws.order[a].shed >= ws.order[a].add) run.push_back(ws.order[a]);
          }
          const std::size_t shedders = run.size();
          for (std::size_t a = begin; a < end; ++a) {
            if (ws.order[a].shed < ws.order[a].add) run.push_back(ws.order[a]);
          }
          std::size_t shedder = 0, adder = shedders;
          for (std::size_t at = begin; at < end; ++at) {
            const bool shedder_turn = adder == run.size() || (shedder < shedders && (at - begin) % 2 == 0);
            ws.order[at] = run[shedder_turn ? shedder++ : adder++];
          }
        }
        interleave_by_slopes(ws);
        // Outside-core slopes after layer t: over the items never in the core and order[t+1..].
        const std::size_t m = ws.order.size();
        ws.up_after.assign(m + 1, up_outside);
        ws.down_after.assign(m + 1, down_outside);
        ws.min_d_from.assign(m + 1, static_cast<double>(INFINITY));
        ws.shed_after.assign(m + 1, 0.0);
        ws.add_after.assign(m + 1, 0.0);
        for (std::size_t t = m; t-- > 0;) {
          ws.min_d_from[t] = std::min(ws.min_d_from[t + 1], ws.order[t].smallest_d);
          if (t == 0) break;
          ws.shed_after[t - 1] = ws.shed_after[t] + ws.order[t].shed;
          ws.add_after[t - 1] = ws.add_after[t] + ws.order[t].add;
          ws.up_after[t - 1] = std::max(ws.up_after[t], ws.order[t].up);
          ws.down_after[t - 1] = std::min(ws.down_after[t], ws.order[t].down);
        }
        // States hold cost and value relative to the base; a state's running cost carries the
        // rounding of its sum, so one within `cost_band` of C_rel is checked on the exact
        // (compensated) total of its allocation before it may become the incumbent.
        double moves = 0.0;
        for (const auto& c : ws.order) moves += c.shed + c.add;
        const double cost_band =
            8.0 * kDoubleEpsilon * (std::fabs(C) + std::fabs(C_rel) + static_cast<double>(m + 1) * moves);
        ws.states.assign(1, CoreState{0.0, 0.0, -1, -1});
        ws.links.clear();
        ws.layer_begin.clear();
        ws.layer_item.clear();
        // The bounds take a state's leftover budget as the most that it can be: against C_band,
        // C_rel with the band added. Its rounding multiplies by the slopes: values [[0.5, 0],
        // [1, 0], [2, 2], [0.5, 2], [14.5, 2], [1, 2]], costs [[0.5, 2e-7], [7e-7, 2e-7],
        // [2e-7, 7e-7], [2e-7, 0.5], [1.4e-6, 0.5], [2e-7, 2e-7]], budget 0.5000022: a state
        // 5e-7 over C_rel (0.4999993 - 0.4999998, to an ulp of 0.5) sheds it at a slope of 2e6,
        // and its bound came out 3e-11 under the value of the optimum, 20.5, which was pruned
        // ("optimal" 20).
        const double C_band = C_rel + cost_band;
        double best_bound = lambda * C_band;  // lambda-bound: drives the stop
        // The best value among states that lay within rounding of the budget and failed the
        // exact check. Dominance compares the states' rounded costs, so such a state may have
        // displaced one of equal rounded cost whose exact total is lower and fits: values
        // [[0, 1], [14.5, 0]], costs [[2e-7, 1.4e-6], [1.9e-6, 7e-7]], budget 2.1e-6, where
        // options (1, 1) fit (their total rounds to the budget), worth 1, and (0, 0), worth 14.5,
        // do not; both cost 0 relative to the LP options, and the core had claimed 0 optimal.
        // Every allocation such a displacement lost is worth no more than the state that
        // displaced it, so the core proves the incumbent only up to this value.
        double rejected_best = -INFINITY;
        bool complete = true;
        std::int64_t last_layer = -1;  // the order index whose layer made ws.states
        // The tight bound of a state made at layer t, with order[t+1..] and the items never in
        // the core outside it.
        auto tight_at = [&](std::size_t t) {
          const double up = ws.up_after[t], down = ws.down_after[t];
          const double add = ws.add_after[t];
          const double shed = ws.shed_after[t] * (1.0 + 1e-12) + 1e-9 + cost_band;  // rounding in the sums
          return [=](double cost, double value) {
            const double leftover = C_band - cost;  // may fit if not below 0: checked when it comes
            if (leftover >= 0.0) return value + std::min(up * leftover, lambda * std::min(leftover, add));
            if (-leftover > shed) return -static_cast<double>(INFINITY);  // cannot get back within C
            return value + down * leftover;
          };
        };
        for (std::size_t t = 0; t < m; ++t) {
          const auto& entry = ws.order[t];
          const auto tight_bound = tight_at(t);
          const double slack = best_bound - z_rel;
          if (ws.min_d_from[t] >= slack - margin) break;  // no state can afford any item left
          // Slack only shrinks: an item no state can afford now stays at b_i for good.
          if (entry.smallest_d >= slack - margin) continue;
          // A shifted state keeps its parent's index among ws.states as an int32
          // (CoreState::parent): more states than that holds stop the core as max_states does
          // (reached only with a max_memory of tens of GiB).
          constexpr auto kMaxParents = static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max());
          const bool out_of_states = ws.links.size() >= limits.max_states || ws.states.size() > kMaxParents;
          const bool out_of_bytes = limits.max_bytes > 0 && ws.core_bytes() > limits.max_bytes;
          if (out_of_states || out_of_bytes || past_time_limit()) {
            complete = false;
            stopped_by = out_of_states ? kStoppedByStates : out_of_bytes ? kStoppedByBytes : kStoppedByTime;
            break;
          }
          if (careful && ws.links.size() >= careful_links) {  // not a limit of the caller's
            complete = false;
            break;
          }
          const std::int32_t i = entry.item, bi = ws.lp_option[i];
          const double wb = inst.cost(i, bi), vb = inst.value(i, bi);
          // The item's moves that can pay off, merged in by rising d: shifted by a move of
          // reduced cost d, the states lie about d below the list so far (the states' values
          // rise with cost at about lambda), so the cheapest moves make most of the layer and the
          // later ones mostly fall under it, which merge_shifted finds by reading alone.
          ws.moves_in_layer.clear();
          for (std::int32_t q = 0; q < inst.k; ++q) {
            if (!inst.allowed(i, q)) continue;
            const double dw = inst.cost(i, q) - wb, dv = inst.value(i, q) - vb;
            const double d = q == bi ? 0.0 : lambda * dw - dv;
            if (d >= slack - margin || d >= move_limit) continue;
            ws.moves_in_layer.push_back({d, dw, dv, q});
          }
          std::sort(ws.moves_in_layer.begin(), ws.moves_in_layer.end(),
                    [](const auto& x, const auto& y) { return x.d != y.d ? x.d < y.d : x.option < y.option; });
          ws.merged.clear();
          Status stopped_in_layer = kFeasible;
          for (const auto& move : ws.moves_in_layer) {
            // The limits before each merge too, not only between layers: one layer can multiply
            // the states by K (values = costs, real costs, 5 x 100: a layer ran 13 s past a
            // time_limit of 0.5 s, and 3 GB past a max_memory of 100 MB; 3 x 100000 ran to its
            // time_limit past max_states=1). A merge may write the states so far and every
            // shifted state into the scratch list. max_states counts the layers' links and this
            // layer's states so far: a count, so the stop is where it was on every run.
            const std::size_t merge_bytes = (ws.merged.size() + ws.states.size()) * sizeof(CoreState);
            if (ws.links.size() + ws.merged.size() >= limits.max_states) {
              stopped_in_layer = kStoppedByStates;
            } else if (limits.max_bytes > 0 && ws.core_bytes() + merge_bytes > limits.max_bytes) {
              stopped_in_layer = kStoppedByBytes;
            } else if (past_time_limit()) {
              stopped_in_layer = kStoppedByTime;
            }
            if (stopped_in_layer != kFeasible) break;
            auto keep = [&](double cost, double value) { return tight_bound(cost, value) > z_rel + margin; };
            if (careful ? merge_separated(ws.merged, ws.states, move.dw, move.dv, move.option, keep, 2.0 * cost_band,
                                          ws.scratch)
                        : merge_shifted(ws.merged, ws.states, move.dw, move.dv, move.option, keep, ws.scratch)) {
              ws.merged.swap(ws.scratch);
            }
          }
          if (stopped_in_layer != kFeasible) {  // as if stopped before the layer: ws.states is the last one's
            ws.merged.clear();
            complete = false;
            stopped_by = stopped_in_layer;
            break;
          }
          // Walks the links back through the layers to the allocation of merged state `s`.
          auto trace = [&](std::size_t s, std::vector<std::int32_t>& option) {
            option.assign(ws.lp_option.begin(), ws.lp_option.end());
            option[i] = ws.merged[s].pos;
            std::int32_t parent = ws.merged[s].parent;
            for (std::int64_t l = static_cast<std::int64_t>(ws.layer_item.size()) - 1; l >= 0; --l) {
              const CoreLink link = ws.links[ws.layer_begin[l] + parent];
              option[ws.layer_item[l]] = link.pos;
              parent = link.parent;
            }
          };
          // New incumbent from the feasible states of this layer (cost-sorted, so the last that
          // fits is the best; in the careful run, whose values need not rise with cost, the
          // best of all that fit).
          std::int64_t improved = -1;
          for (std::size_t s = ws.merged.size(); s-- > 0;) {
            const CoreState& st = ws.merged[s];
            if (!(st.value > z_rel)) {
              if (careful) continue;
              break;  // values fall with cost: none further down beats z
            }
            if (st.cost > C_band) continue;
            if (st.cost >= C_rel - cost_band) {  // within rounding of the budget: sum it exactly
              trace(s, ws.trial_option);
              double total_cost, total_value;
              if (!option_fits(inst, ws.trial_option.data(), total_cost, total_value)) {
                rejected_best = std::max(rejected_best, st.value);
                continue;
              }
            }
            z_rel = st.value;
            improved = static_cast<std::int64_t>(s);
            if (!careful) break;
          }
          if (improved >= 0) {
            core_improved = true;
            trace(static_cast<std::size_t>(improved), ws.best_option);
          }
          // Keep what can still beat the (possibly improved) incumbent; note the best bound.
          // The survivors become the next layer's states, compacted in place; their links are
          // this layer's.
          const std::size_t first_link = ws.links.size();
          ws.layer_begin.push_back(first_link);
          ws.layer_item.push_back(i);
          ws.links.resize(first_link + ws.merged.size());
          CoreLink* link = ws.links.data() + first_link;
          CoreState* kept = ws.merged.data();
          std::size_t survivors = 0;
          best_bound = -INFINITY;
          // Every merged state passed `keep` against this z: unless z rose, all survive.
          const bool z_rose = improved >= 0;
          for (const CoreState& st : ws.merged) {
            if (z_rose && tight_bound(st.cost, st.value) <= z_rel + margin) continue;
            best_bound = std::max(best_bound, st.value + lambda * (C_band - st.cost));
            link[survivors] = CoreLink{st.parent, st.pos};
            kept[survivors++] = st;
          }
          ws.links.resize(first_link + survivors);
          ws.merged.resize(survivors);
          ws.states.swap(ws.merged);
          last_layer = static_cast<std::int64_t>(t);
          if (ws.states.empty()) break;
        }
        // Values within the margin of z are proven anyway. The careful run keeps every state
        // that another could have displaced.
        const bool displaced = !careful && rejected_best > z_rel + margin;
        if (complete && (widened || L_rel - z_rel - margin <= limit)) {
          if (!displaced) {
            proven = true;
            break;
          }
          // Run again, carefully, with the incumbent found so far and at most about eight times
          // the links (the careful run can keep many more states where many allocations cost
          // the same to the last bits: shared decimal costs). Should that not finish, the
          // better of the two runs' bounds stands.
          displaced_upper = std::min(L_rel, std::max(z_rel + margin, rejected_best));
          careful = true;
          careful_links = 8 * ws.links.size() + (std::size_t(1) << 16);
          continue;
        }
        if (!complete) {
          // Stopped early: no completion of a surviving state beats their best tight bound,
          // and before widening, no allocation making a costlier move beats L - limit.
          double best_tight = L_rel;
          if (last_layer >= 0) {
            const auto tight_bound = tight_at(static_cast<std::size_t>(last_layer));
            best_tight = -INFINITY;
            for (const CoreState& st : ws.states) best_tight = std::max(best_tight, tight_bound(st.cost, st.value));
          }
          upper_rel = std::min(L_rel, std::max({z_rel, best_tight, widened ? z_rel : L_rel - limit,
                                                careful ? z_rel : rejected_best}));
          upper_rel = std::min(upper_rel, displaced_upper);
          break;
        }
        limit = gap;  // every candidate (z may have risen: the core skips what it no longer needs)
      }
    }
    if (core_improved) {
      lw.item_option.swap(ws.best_option);
      // The incumbent was checked to fit; should its total still need a step down, the proof
      // was of an allocation not returned.
      if (restore_item_options(inst, lw, r.cost, r.value) != 0) proven = false;
    } else {  // still the primal of complete_allocation, with its exact totals
      r.cost = z_cost;
      r.value = z;
    }
    // An optimum on the value step is at most the bound rounded down to the step (to the
    // rounding of the bound).
    if (stepped) upper_rel = value_step * std::floor((upper_rel + tol) / value_step);
    const double upper = base_value_sum.value() + upper_rel;
    // L is the Lagrangian at C itself; an allocation whose total rounds to C may pass it by
    // the room fit_value allows for.
    r.bound = proven ? r.value : std::max(std::min(upper, L + fit_value), r.value);
    // A bound the value reaches proves it, however the core stopped: a time limit that came
    // after the bound fell to the value (rounded down to the value step) had reported
    // "feasible" with a gap of 0 (found by a fuzzing helper).
    proven = proven || r.bound <= r.value;
    r.shadow_price = lambda;
    r.status = proven ? kOptimal : stopped_by;
    for (std::int64_t i = 0; i < n; ++i) choice[i] = lw.item_option[i];
    out.store(b, r);
  }, keep);
}

template void solve_exact<float>(const BatchView<float>&, const BatchOutput&, const ExactLimits&, int);
template void solve_exact<double>(const BatchView<double>&, const BatchOutput&, const ExactLimits&, int);

ExactWorkspaceState exact_workspace_state() {
  const ExactWorkspace& ws = thread_workspace<ExactWorkspace>();
  return {ws.bytes(), ws.lagrangian.bytes(), ws.lagrangian.compact.rows};
}

}  // namespace apportion
