#include "online.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cpu_dispatch.hpp"
#include "solvers.hpp"

namespace apportion {

void DmdConfig::finalise() {
  if (r < 1) throw std::invalid_argument("budget: expected at least one resource");
  if (horizon < 1) throw std::invalid_argument("horizon: expected an integer >= 1");
  if (!(std::isfinite(eta) && eta > 0.0)) {
    throw std::invalid_argument("step_size: expected a finite number > 0");
  }
  if (static_cast<std::int64_t>(budget.size()) != r || static_cast<std::int64_t>(m0.size()) != r) {
    throw std::invalid_argument("budget: expected one entry per resource");
  }
  inv_rho.assign(r, 0.0);
  for (std::int64_t q = 0; q < r; ++q) {
    if (!(budget[q] > 0.0)) {
      throw std::invalid_argument("budget: resource " + std::to_string(q) + " is " +
                                  std::to_string(budget[q]) + "; budgets must be > 0 (inf: no limit)");
    }
    inv_rho[q] = std::isinf(budget[q]) ? 0.0 : static_cast<double>(horizon) / budget[q];
    // A price mu = m inv_rho must stay finite at the largest m (kMaxPrice): an infinite one
    // made every score of a free option inf * 0 = NaN, and every request was skipped (budget
    // 1e-310 over 10 requests: horizon / budget overflowed).
    if (!(inv_rho[q] <= std::numeric_limits<double>::max() / kMaxPrice)) {
      std::ostringstream why;
      why << "budget: resource " << q << " is " << budget[q] << " for a horizon of " << horizon
          << ": its share per request is below 1e-278, where the prices overflow; scale the costs and "
             "the budget up together";
      throw std::invalid_argument(why.str());
    }
    if (!(std::isfinite(m0[q]) && m0[q] >= 0.0)) {
      throw std::invalid_argument("initial_prices: expected finite numbers >= 0");
    }
  }
}

namespace {

// Whether every one of n entries is finite (and, with `nonnegative`, >= 0; -0 passes): one
// branch-free pass over the bits, which vectorises, so that validating a whole simulation
// costs about one read of its input. Only when it fails do the checks that name the entry run.
template <class T>
APPORTION_INLINE bool all_tame_body(const T* x, std::int64_t n, bool nonnegative) {
  using Bits = std::conditional_t<sizeof(T) == 8, std::uint64_t, std::uint32_t>;
  constexpr Bits kSign = Bits(1) << (8 * sizeof(T) - 1);
  constexpr Bits kExponent = sizeof(T) == 8 ? Bits(0x7ff0000000000000ull) : Bits(0x7f800000u);
  const Bits negative_limit = nonnegative ? kSign : ~Bits(0);  // above it: negative, not -0
  Bits bad = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    Bits b;
    std::memcpy(&b, x + i, sizeof(T));
    bad |= static_cast<Bits>((b & kExponent) == kExponent) | static_cast<Bits>(b > negative_limit);
  }
  return bad == 0;
}

APPORTION_SIMD_CLONES bool all_tame(const double* x, std::int64_t n, bool nonnegative) {
  return all_tame_body(x, n, nonnegative);
}
APPORTION_SIMD_CLONES bool all_tame(const float* x, std::int64_t n, bool nonnegative) {
  return all_tame_body(x, n, nonnegative);
}

// The starting state of a stream (DmdState::reset) in caller-provided arrays (R each).
void reset_stream(const DmdConfig& cfg, double* m, double* mu, double* spent_sum, double* spent_carry,
                  double* floor) {
  for (std::int64_t q = 0; q < cfg.r; ++q) {
    m[q] = cfg.m0[q];
    if (cfg.mirror == kEntropy && m[q] < kMinEntropyPrice) m[q] = kMinEntropyPrice;
    mu[q] = m[q] * cfg.inv_rho[q];
    spent_sum[q] = spent_carry[q] = 0.0;
    floor[q] = HUGE_VAL;
  }
}

}  // namespace

void DmdState::reset(const DmdConfig& cfg) {
  m.resize(cfg.r);
  mu.resize(cfg.r);
  spent_sum.resize(cfg.r);
  spent_carry.resize(cfg.r);
  floor.resize(cfg.r);
  reset_stream(cfg, m.data(), mu.data(), spent_sum.data(), spent_carry.data(), floor.data());
  steps = 0;
}

namespace {

template <class T>
void check_request_data(const T* values, const T* costs, std::int64_t cost_stride_request,
                        const std::uint8_t* mask, std::int64_t m, std::int64_t k, std::int64_t r) {
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < k; ++j) {
      if (mask && !mask[i * k + j]) continue;
      if (!std::isfinite(static_cast<double>(values[i * k + j]))) {
        throw std::invalid_argument("values: request " + std::to_string(i) + ", option " +
                                    std::to_string(j) + " is NaN or infinite; values must be finite");
      }
      const T* w = costs + i * cost_stride_request + j * r;
      for (std::int64_t q = 0; q < r; ++q) {
        const double x = static_cast<double>(w[q]);
        if (!(std::isfinite(x) && x >= 0.0)) {
          throw std::invalid_argument("costs: request " + std::to_string(i) + ", option " +
                                      std::to_string(j) + " has cost " + std::to_string(x) +
                                      "; costs must be finite and >= 0");
        }
      }
    }
  }
}

// Small per-call scratch for R resources without heap traffic in the common case.
struct Scratch {
  static constexpr std::int64_t kInline = 8;
  double inline_buf[kInline];
  std::vector<double> heap;
  double* data;
  explicit Scratch(std::int64_t r) {
    if (r <= kInline) {
      data = inline_buf;
    } else {
      heap.resize(r);
      data = heap.data();
    }
  }
};

}  // namespace

template <class T>
std::int64_t dmd_decide_many(const DmdConfig& cfg, DmdState& st, const T* values, const T* costs,
                             std::int64_t cost_stride_request, const std::uint8_t* mask,
                             std::int64_t m, std::int64_t k, std::int64_t* out) {
  const std::int64_t r = cfg.r;
  check_request_data(values, costs, cost_stride_request, mask, m, k, r);
  const bool atomic = !cfg.skip_allowed && m > 1;
  DmdState saved;
  if (atomic) saved = st;
  Scratch rem(r), floor(r), spendable(r);
  for (std::int64_t i = 0; i < m; ++i) {
    const T* v = values + i * k;
    const T* w = costs + i * cost_stride_request;
    const std::uint8_t* mk = mask ? mask + i * k : nullptr;
    dmd_remaining(cfg.budget.data(), st.spent_sum.data(), st.spent_carry.data(), r, rem.data);
    const bool keep = !cfg.skip_allowed;  // the null action costs nothing: no reserve needed
    if (keep) {
      std::copy(st.floor.begin(), st.floor.end(), floor.data);
      dmd_floor(w, mk, k, r, floor.data);
      dmd_spendable(rem.data, floor.data, r, dmd_requests_left(st.steps, cfg.horizon), spendable.data);
    }
    const DmdChoice c = dmd_decide(v, w, mk, k, r, st.mu.data(), rem.data, cfg.skip_allowed,
                                   keep ? static_cast<const double*>(spendable.data) : nullptr);
    if (c.played == kStalled) {
      if (atomic) st = saved;
      return i;
    }
    if (keep) std::copy(floor.data, floor.data + r, st.floor.begin());
    dmd_commit(c, v, w, r, st.m.data(), st.mu.data(), st.spent_sum.data(), st.spent_carry.data(),
               cfg.inv_rho.data(), cfg.eta, cfg.mirror, static_cast<CompensatedSum*>(nullptr));
    ++st.steps;
    out[i] = c.played;
  }
  return -1;
}

namespace {

// Streams [begin, end) of dmd_simulate. kR > 0 fixes the number of resources at compile time
// (1, the common case: every per-resource loop of the step functions then unrolls to one
// iteration and the state stays in registers); 0 reads it from cfg. kKeep: skipping is not
// allowed, so the reserve is kept. The step is dmd_decide_many's, request by request.
template <class T, int kR, bool kKeep>
void simulate_streams(const DmdConfig& cfg, const T* values, const T* costs, std::int64_t cs,
                      std::int64_t ct, std::int64_t t, std::int64_t k, const SimulationOutput& out,
                      std::int64_t begin, std::int64_t end) {
  const std::int64_t r = kR > 0 ? kR : cfg.r;
  // Per-resource state and scratch: on the stack for up to 8 resources.
  constexpr std::int64_t kInline = kR > 0 ? kR : 8;
  constexpr int kArrays = 10;
  double inline_buf[kArrays * kInline];
  std::vector<double> heap;
  double* buf = inline_buf;
  if (r > kInline) {
    heap.resize(kArrays * r);
    buf = heap.data();
  }
  double* m = buf;
  double* mu = buf + r;
  double* spent_sum = buf + 2 * r;
  double* spent_carry = buf + 3 * r;
  double* floor = buf + 4 * r;
  double* rem = buf + 5 * r;
  double* floor_next = buf + 6 * r;
  double* spendable = buf + 7 * r;
  double* budget = buf + 8 * r;   // copies of the configuration: no aliasing with the outputs
  double* inv_rho = buf + 9 * r;
  std::copy(cfg.budget.begin(), cfg.budget.end(), budget);
  std::copy(cfg.inv_rho.begin(), cfg.inv_rho.end(), inv_rho);
  const double eta = cfg.eta;
  const Mirror mirror = cfg.mirror;
  const std::uint8_t* no_mask = nullptr;
  for (std::int64_t sidx = begin; sidx < end; ++sidx) {
    reset_stream(cfg, m, mu, spent_sum, spent_carry, floor);
    std::int64_t steps = 0, stalled = 0;
    CompensatedSum value;
    const T* vs = values + sidx * t * k;
    const T* ws = costs + sidx * cs;
    std::int64_t* ch = out.choice ? out.choice + sidx * t : nullptr;
    for (std::int64_t i = 0; i < t; ++i) {
      const T* v = vs + i * k;
      const T* w = ws + i * ct;
      dmd_remaining(budget, spent_sum, spent_carry, r, rem);
      if (kKeep) {
        std::copy(floor, floor + r, floor_next);
        dmd_floor(w, no_mask, k, r, floor_next);
        dmd_spendable(rem, floor_next, r, dmd_requests_left(steps, cfg.horizon), spendable);
      }
      const DmdChoice c = dmd_decide(v, w, no_mask, k, r, mu, rem, !kKeep,
                                     kKeep ? static_cast<const double*>(spendable) : nullptr);
      if (c.played == kStalled) {
        // As OnlineAllocator.decide raising: the request is left undecided, the state as it was.
        ++stalled;
        if (ch) ch[i] = kSkip;
        continue;
      }
      if (kKeep) std::copy(floor_next, floor_next + r, floor);
      ++steps;
      dmd_commit(c, v, w, r, m, mu, spent_sum, spent_carry, inv_rho, eta, mirror, &value);
      if (ch) ch[i] = c.played;
    }
    dmd_store_stream(out, sidx, r, value, spent_sum, spent_carry, mu, stalled);
  }
}

}  // namespace

template <class T>
void dmd_simulate(const DmdConfig& cfg, const T* values, const T* costs, std::int64_t cs,
                  std::int64_t ct, std::int64_t s, std::int64_t t, std::int64_t k,
                  const SimulationOutput& out, int threads) {
  const std::int64_t r = cfg.r;
  // Validated once, before any stream runs: every value, and the costs as stored (shared
  // costs once; the (S|1, T|1, K, R) array is contiguous).
  const std::int64_t cost_count = (cs == 0 ? 1 : s) * (ct == 0 ? 1 : t) * k * r;
  if (!all_tame(values, s * t * k, false)) {
    check_values(values, static_cast<const std::uint8_t*>(nullptr), s * t * k);
  }
  if (!all_tame(costs, cost_count, true)) check_costs(costs, cost_count);
  const int pool = ThreadPool::instance().size();
  const int usable = threads <= 0 ? pool : std::min(threads, pool);
  const bool keep = !cfg.skip_allowed;
  parallel_for(s, 1, usable, [&](std::int64_t begin, std::int64_t end) {
    if (r == 1) {
      if (keep) {
        simulate_streams<T, 1, true>(cfg, values, costs, cs, ct, t, k, out, begin, end);
      } else {
        simulate_streams<T, 1, false>(cfg, values, costs, cs, ct, t, k, out, begin, end);
      }
    } else if (keep) {
      simulate_streams<T, 0, true>(cfg, values, costs, cs, ct, t, k, out, begin, end);
    } else {
      simulate_streams<T, 0, false>(cfg, values, costs, cs, ct, t, k, out, begin, end);
    }
  });
}

// ------------------------------------------------------------------------------------------
// Offline solver for R resources.

namespace {

struct MirrorWorkspace {
  std::vector<std::int64_t> x, best_x;
  std::vector<double> m, mu, best_m, grad, inv_rho, slack;
  std::vector<CompensatedSum> used;
  struct Move {
    double score;
    std::int64_t item, option;
  };
  std::vector<Move> moves;
  std::size_t bytes() const {
    return (x.capacity() + best_x.capacity()) * sizeof(std::int64_t) +
           moves.capacity() * sizeof(Move) + used.capacity() * sizeof(CompensatedSum) +
           (m.capacity() + mu.capacity() + best_m.capacity() + grad.capacity() +
            inv_rho.capacity() + slack.capacity()) * sizeof(double);
  }
};

template <class T>
struct MirrorInstance {
  const T* values;   // (N,K)
  const T* costs;    // item i at costs + i * ci, (K,R)
  std::int64_t ci;
  const std::uint8_t* mask;  // (N,K) or nullptr
  const double* budget;      // (R,)
  std::int64_t n, k, r;
  double sign;

  double v(std::int64_t i, std::int64_t j) const { return sign * static_cast<double>(values[i * k + j]); }
  const T* w(std::int64_t i, std::int64_t j) const { return costs + i * ci + j * r; }
  bool allowed(std::int64_t i, std::int64_t j) const { return mask == nullptr || mask[i * k + j] != 0; }
};


// x(mu) and L(mu); grad receives dL/dm per resource (m = mu * rho).
template <class T>
double lagrangian_step(const MirrorInstance<T>& p, MirrorWorkspace& ws) {
  const std::int64_t r = p.r;
  CompensatedSum total;
  std::fill(ws.grad.begin(), ws.grad.end(), 0.0);
  std::vector<double>& used = ws.slack;  // reused as plain usage sums here
  std::fill(used.begin(), used.end(), 0.0);
  for (std::int64_t i = 0; i < p.n; ++i) {
    double best = 0.0;
    std::int64_t arg = -1;
    for (std::int64_t j = 0; j < p.k; ++j) {
      if (!p.allowed(i, j)) continue;
      const T* w = p.w(i, j);
      double priced = p.v(i, j);
      for (std::int64_t q = 0; q < r; ++q) priced -= ws.mu[q] * static_cast<double>(w[q]);
      if (arg < 0 || priced > best) {
        best = priced;
        arg = j;
      }
    }
    ws.x[i] = arg;
    total.add(best);
    const T* w = p.w(i, arg);
    for (std::int64_t q = 0; q < r; ++q) used[q] += static_cast<double>(w[q]);
  }
  for (std::int64_t q = 0; q < r; ++q) {
    if (ws.inv_rho[q] == 0.0) continue;
    total.add(ws.mu[q] * p.budget[q]);
    ws.grad[q] = ws.inv_rho[q] * (p.budget[q] - used[q]);
  }
  return total.value();
}

template <class T>
void recompute_usage(const MirrorInstance<T>& p, MirrorWorkspace& ws) {
  ws.used.assign(p.r, CompensatedSum{});
  for (std::int64_t i = 0; i < p.n; ++i) {
    const T* w = p.w(i, ws.x[i]);
    for (std::int64_t q = 0; q < p.r; ++q) ws.used[q].add(static_cast<double>(w[q]));
  }
}

template <class T>
void apply_move(const MirrorInstance<T>& p, MirrorWorkspace& ws, std::int64_t i, std::int64_t j) {
  const T* wo = p.w(i, ws.x[i]);
  const T* wn = p.w(i, j);
  for (std::int64_t q = 0; q < p.r; ++q) {
    ws.used[q].add(static_cast<double>(wn[q]));
    ws.used[q].add(-static_cast<double>(wo[q]));
  }
  ws.x[i] = j;
}

// Decided on the correctly rounded totals: one within rounding of its budget is summed again
// exactly, and the usage takes that total, so that the repair's moves see the same overspend.
template <class T>
bool is_feasible(const MirrorInstance<T>& p, MirrorWorkspace& ws) {
  for (std::int64_t q = 0; q < p.r; ++q) {
    double total;
    bool summed = false;
    const bool fits = fits_budget(ws.used[q], p.budget[q], total, [&] {
      summed = true;
      return rounded_sum(p.n, [&](std::int64_t i) { return static_cast<double>(p.w(i, ws.x[i])[q]); });
    });
    if (summed) ws.used[q] = CompensatedSum{total, 0.0};
    if (!fits) return false;  // NaN-safe
  }
  return true;
}

// Each item's option of least normalised cost (sum_r w_r / rho_r): the last resort of repair.
template <class T>
void least_cost_allocation(const MirrorInstance<T>& p, MirrorWorkspace& ws) {
  for (std::int64_t i = 0; i < p.n; ++i) {
    double best = 0.0;
    std::int64_t arg = -1;
    for (std::int64_t j = 0; j < p.k; ++j) {
      if (!p.allowed(i, j)) continue;
      const T* w = p.w(i, j);
      double c = 0.0;
      for (std::int64_t q = 0; q < p.r; ++q) c += static_cast<double>(w[q]) * ws.inv_rho[q];
      if (arg < 0 || c < best) {
        best = c;
        arg = j;
      }
    }
    ws.x[i] = arg;
  }
  recompute_usage(p, ws);
}

// Makes ws.x feasible (downgrades ranked by value lost per unit of normalised overspend
// removed), then spends the leftover (upgrades ranked by value gained per unit of normalised
// cost). Returns false when no feasible allocation was found.
template <class T>
bool repair(const MirrorInstance<T>& p, MirrorWorkspace& ws) {
  const std::int64_t r = p.r;
  recompute_usage(p, ws);
  for (int round = 0; round < 16 && !is_feasible(p, ws); ++round) {
    if (round > 0) recompute_usage(p, ws);  // an overflowed total does not come back down by moves
    ws.moves.clear();
    for (std::int64_t i = 0; i < p.n; ++i) {
      const std::int64_t cur = ws.x[i];
      const T* wc = p.w(i, cur);
      double best_score = 0.0;
      std::int64_t best_j = -1;
      for (std::int64_t j = 0; j < p.k; ++j) {
        if (j == cur || !p.allowed(i, j)) continue;
        const T* wj = p.w(i, j);
        double reduction = 0.0;
        bool ok = true;
        for (std::int64_t q = 0; q < r; ++q) {
          const double d = static_cast<double>(wc[q]) - static_cast<double>(wj[q]);
          const double over = ws.used[q].value() - p.budget[q];
          if (over > 0.0) {
            reduction += std::min(d, over) * ws.inv_rho[q];
          } else if (d < 0.0 && -d > -over) {
            ok = false;  // would push a resource within budget over it
          }
        }
        if (!ok || !(reduction > 0.0)) continue;
        const double score = (p.v(i, cur) - p.v(i, j)) / reduction;
        if (best_j < 0 || score < best_score) {
          best_score = score;
          best_j = j;
        }
      }
      if (best_j >= 0) ws.moves.push_back({best_score, i, best_j});
    }
    if (ws.moves.empty()) break;
    std::sort(ws.moves.begin(), ws.moves.end(), [](const auto& a, const auto& b) {
      return a.score < b.score || (a.score == b.score && a.item < b.item);
    });
    for (const auto& mv : ws.moves) {
      if (is_feasible(p, ws)) break;
      // Still useful and still safe against the current usage?
      const T* wc = p.w(mv.item, ws.x[mv.item]);
      const T* wj = p.w(mv.item, mv.option);
      bool useful = false, ok = true;
      for (std::int64_t q = 0; q < r; ++q) {
        const double d = static_cast<double>(wc[q]) - static_cast<double>(wj[q]);
        const double over = ws.used[q].value() - p.budget[q];
        if (over > 0.0 && d > 0.0) useful = true;
        if (over <= 0.0 && d < 0.0 && -d > -over) ok = false;
      }
      if (useful && ok) apply_move(p, ws, mv.item, mv.option);
    }
  }
  if (!is_feasible(p, ws)) {
    least_cost_allocation(p, ws);
    if (!is_feasible(p, ws)) return false;
  }
  // Spend the leftover.
  for (int round = 0; round < 8; ++round) {
    ws.moves.clear();
    for (std::int64_t q = 0; q < r; ++q) ws.slack[q] = p.budget[q] - ws.used[q].value();
    for (std::int64_t i = 0; i < p.n; ++i) {
      const std::int64_t cur = ws.x[i];
      const T* wc = p.w(i, cur);
      double best_score = 0.0;
      std::int64_t best_j = -1;
      for (std::int64_t j = 0; j < p.k; ++j) {
        if (j == cur || !p.allowed(i, j)) continue;
        const double gain = p.v(i, j) - p.v(i, cur);
        if (!(gain > 0.0)) continue;
        const T* wj = p.w(i, j);
        double need = 0.0;
        bool fits = true;
        for (std::int64_t q = 0; q < r; ++q) {
          const double d = static_cast<double>(wj[q]) - static_cast<double>(wc[q]);
          if (d > ws.slack[q]) fits = false;
          if (d > 0.0) need += d * ws.inv_rho[q];
        }
        if (!fits) continue;
        const double score = gain / (need + 1e-300);
        if (best_j < 0 || score > best_score) {
          best_score = score;
          best_j = j;
        }
      }
      if (best_j >= 0) ws.moves.push_back({best_score, i, best_j});
    }
    if (ws.moves.empty()) break;
    std::sort(ws.moves.begin(), ws.moves.end(), [](const auto& a, const auto& b) {
      return a.score > b.score || (a.score == b.score && a.item < b.item);
    });
    std::int64_t applied = 0;
    for (const auto& mv : ws.moves) {
      const T* wc = p.w(mv.item, ws.x[mv.item]);
      const T* wj = p.w(mv.item, mv.option);
      bool fits = true;
      for (std::int64_t q = 0; q < r; ++q) {
        const double d = static_cast<double>(wj[q]) - static_cast<double>(wc[q]);
        if (d > 0.0 && ws.used[q].value() + d > p.budget[q]) fits = false;
      }
      if (!fits) continue;
      apply_move(p, ws, mv.item, mv.option);
      ++applied;
    }
    if (applied == 0) break;
  }
  // Floating-point safety: decide on the compensated totals once more.
  recompute_usage(p, ws);
  return is_feasible(p, ws);
}

// Total normalised excess sum_r max(0, used_r - C_r) inv_rho_r of the usage u (R): > 0 exactly
// when some resource is over budget (inv_rho_r > 0 for every finite budget).
inline double normalised_excess(const double* u, const double* budget, const double* inv_rho,
                                std::int64_t r) {
  double e = 0.0;
  for (std::int64_t q = 0; q < r; ++q) {
    const double over = u[q] - budget[q];
    if (over > 0.0) e += over * inv_rho[q];
  }
  return e;
}

// Work (item-option-resource evaluations) the feasibility search may spend beyond its first
// 64 moves: a safety net, not the main path, so it stays within about a tenth of a second.
constexpr std::int64_t kSearchWork = 100'000'000;

// Feasibility search from ws.x: steepest descent on the total normalised excess. Each move is
// the single (item, option) change whose result has the least excess (ties: least value lost,
// then the lowest item and option), taken only when it strictly lowers the excess; at a local
// minimum of single changes it also tries the best change of two items at once (while the
// pair scans stay within kSearchWork evaluations in all: small instances). Stops when the allocation is feasible or no move
// improves it. Leaves ws.x at the least excess found
// and returns whether it is feasible.
template <class T>
bool feasibility_search(const MirrorInstance<T>& p, MirrorWorkspace& ws) {
  const std::int64_t r = p.r;
  recompute_usage(p, ws);
  if (is_feasible(p, ws)) return true;
  std::vector<double> u(r), trial(r), half(r);
  const std::int64_t per_move = std::max<std::int64_t>(1, p.n * p.k * r);
  // A pair scan costs about (N K)^2 R / 2 evaluations; pair scans stop once their total
  // would pass kSearchWork.
  const double pair_cost = 0.5 * static_cast<double>(p.n * p.k) * static_cast<double>(per_move);
  double pair_work = 0.0;
  const std::int64_t max_moves =
      std::max<std::int64_t>(64, std::min<std::int64_t>(4 * p.n + 64, kSearchWork / per_move));
  for (std::int64_t move = 0; move < max_moves; ++move) {
    for (std::int64_t q = 0; q < r; ++q) u[q] = ws.used[q].value();
    const double excess = normalised_excess(u.data(), p.budget, ws.inv_rho.data(), r);
    if (!(excess > 0.0)) break;
    double best_excess = excess, best_loss = 0.0;
    std::int64_t best_i = -1, best_j = -1;
    for (std::int64_t i = 0; i < p.n; ++i) {
      const std::int64_t cur = ws.x[i];
      const T* wc = p.w(i, cur);
      for (std::int64_t j = 0; j < p.k; ++j) {
        if (j == cur || !p.allowed(i, j)) continue;
        const T* wj = p.w(i, j);
        for (std::int64_t q = 0; q < r; ++q) {
          trial[q] = (u[q] - static_cast<double>(wc[q])) + static_cast<double>(wj[q]);
        }
        const double e = normalised_excess(trial.data(), p.budget, ws.inv_rho.data(), r);
        const double loss = p.v(i, cur) - p.v(i, j);
        if (e < best_excess || (best_i >= 0 && e == best_excess && loss < best_loss)) {
          best_excess = e;
          best_loss = loss;
          best_i = i;
          best_j = j;
        }
      }
    }
    if (best_i >= 0) {
      apply_move(p, ws, best_i, best_j);
      continue;
    }
    // A local minimum for single changes: try the best change of two items at once, where
    // that scan is affordable (small instances, where one change is too coarse a step).
    pair_work += pair_cost;
    if (pair_work > static_cast<double>(kSearchWork)) break;
    std::int64_t best_i2 = -1, best_j2 = -1;
    for (std::int64_t i = 0; i < p.n; ++i) {
      const std::int64_t ci = ws.x[i];
      const T* wci = p.w(i, ci);
      for (std::int64_t j = 0; j < p.k; ++j) {
        if (j == ci || !p.allowed(i, j)) continue;
        const T* wj = p.w(i, j);
        for (std::int64_t q = 0; q < r; ++q) {
          half[q] = (u[q] - static_cast<double>(wci[q])) + static_cast<double>(wj[q]);
        }
        const double loss_i = p.v(i, ci) - p.v(i, j);
        for (std::int64_t i2 = i + 1; i2 < p.n; ++i2) {
          const std::int64_t c2 = ws.x[i2];
          const T* wc2 = p.w(i2, c2);
          for (std::int64_t j2 = 0; j2 < p.k; ++j2) {
            if (j2 == c2 || !p.allowed(i2, j2)) continue;
            const T* wj2 = p.w(i2, j2);
            for (std::int64_t q = 0; q < r; ++q) {
              trial[q] = (half[q] - static_cast<double>(wc2[q])) + static_cast<double>(wj2[q]);
            }
            const double e = normalised_excess(trial.data(), p.budget, ws.inv_rho.data(), r);
            const double loss = loss_i + (p.v(i2, c2) - p.v(i2, j2));
            if (e < best_excess || (best_i >= 0 && e == best_excess && loss < best_loss)) {
              best_excess = e;
              best_loss = loss;
              best_i = i;
              best_j = j;
              best_i2 = i2;
              best_j2 = j2;
            }
          }
        }
      }
    }
    if (best_i < 0) break;  // a local minimum of the excess for one and two changes
    apply_move(p, ws, best_i, best_j);
    apply_move(p, ws, best_i2, best_j2);
  }
  recompute_usage(p, ws);
  return is_feasible(p, ws);
}

// Nodes the exhaustive feasibility search may visit (each costs O(R)): a few milliseconds.
constexpr std::int64_t kFeasibilityNodes = 2'000'000;

enum class Feasibility { kFound, kNone, kUndecided };

// Depth-first search for an allocation within every budget: items in order, each item's
// allowed options by increasing normalised cost, a branch cut when the usage so far plus the
// least usage of the remaining items passes a budget by more than the rounding of those sums
// (so a cut never loses a feasible allocation; leaves are decided on compensated sums). kFound
// leaves the allocation in ws.x; kNone proves that no allocation fits; kUndecided: the node
// limit was reached first.
template <class T>
Feasibility feasibility_dfs(const MirrorInstance<T>& p, MirrorWorkspace& ws, std::int64_t max_nodes) {
  const std::int64_t n = p.n, k = p.k, r = p.r;
  std::vector<std::int64_t> order(n * k), count(n, 0), pos(n, -1);
  std::vector<double> norm(k);
  std::vector<double> rest((n + 1) * r, 0.0), used((n + 1) * r, 0.0), scale(r, 0.0), tol(r);
  for (std::int64_t i = n - 1; i >= 0; --i) {
    std::int64_t* oi = order.data() + i * k;
    for (std::int64_t q = 0; q < r; ++q) rest[i * r + q] = std::numeric_limits<double>::infinity();
    double largest_total = 0.0;
    for (std::int64_t j = 0; j < k; ++j) {
      if (!p.allowed(i, j)) continue;
      const T* w = p.w(i, j);
      double c = 0.0;
      for (std::int64_t q = 0; q < r; ++q) {
        const double wq = static_cast<double>(w[q]);
        c += wq * ws.inv_rho[q];
        rest[i * r + q] = std::min(rest[i * r + q], wq);
        scale[q] = std::max(scale[q], wq);
      }
      largest_total = std::max(largest_total, c);
      norm[j] = c;
      oi[count[i]++] = j;
    }
    std::sort(oi, oi + count[i], [&](std::int64_t a, std::int64_t b) {
      return norm[a] < norm[b] || (norm[a] == norm[b] && a < b);
    });
    for (std::int64_t q = 0; q < r; ++q) rest[i * r + q] += rest[(i + 1) * r + q];
  }
  // Each running sum has at most 2 N + 2 roundings of terms up to scale * N in size.
  for (std::int64_t q = 0; q < r; ++q) {
    tol[q] = 4.0 * static_cast<double>(n + 2) * std::numeric_limits<double>::epsilon() *
             (std::fabs(p.budget[q]) + static_cast<double>(n) * scale[q]);
  }
  std::int64_t nodes = 0, i = 0;
  while (true) {
    if (i == n) {
      for (std::int64_t t = 0; t < n; ++t) ws.x[t] = order[t * k + pos[t]];
      recompute_usage(p, ws);
      if (is_feasible(p, ws)) return Feasibility::kFound;
      i = n - 1;  // within the rounding margin but over: try the next option
    }
    if (++pos[i] >= count[i]) {
      pos[i] = -1;
      if (--i < 0) return Feasibility::kNone;
      continue;
    }
    if (++nodes > max_nodes) return Feasibility::kUndecided;
    const T* w = p.w(i, order[i * k + pos[i]]);
    bool cut = false;
    for (std::int64_t q = 0; q < r; ++q) {
      const double u = used[i * r + q] + static_cast<double>(w[q]);
      used[(i + 1) * r + q] = u;
      if ((u + rest[(i + 1) * r + q]) - p.budget[q] > tol[q]) cut = true;
    }
    if (!cut) ++i;
  }
}

template <class T>
double primal_value(const MirrorInstance<T>& p, const std::vector<std::int64_t>& x) {
  CompensatedSum s;
  for (std::int64_t i = 0; i < p.n; ++i) s.add(p.v(i, x[i]));
  return s.value();
}

constexpr std::int64_t kRepairEvery = 10;
constexpr int kPatience = 10;  // iterations without a better bound before the step halves

}  // namespace

template <class T>
void solve_mirror(const T* values, const T* costs, std::int64_t cb, std::int64_t ci,
                  const std::uint8_t* mask, const double* budgets, std::int64_t b, std::int64_t n,
                  std::int64_t k, std::int64_t r, double value_sign, std::int64_t max_iter,
                  double tol, const MirrorOutput& out, int threads) {
  // Validation first, for the whole batch.
  check_values(values, mask, b * n * k);
  const std::int64_t nb = cb == 0 ? 1 : b, ni = ci == 0 ? 1 : n;
  for (std::int64_t a = 0; a < nb; ++a) {
    for (std::int64_t i = 0; i < ni; ++i) {
      check_costs(costs + a * cb + i * ci, k * r, a * cb + i * ci);  // (the flat index in the whole array)
    }
  }
  for (std::int64_t x = 0; x < b * r; ++x) {
    if (std::isnan(budgets[x])) throw std::invalid_argument("budget: an entry is NaN");
  }

  run_batch<MirrorWorkspace>(b, threads, [&](std::int64_t bi, MirrorWorkspace& ws, int) {
    MirrorInstance<T> p{values + bi * n * k, costs + bi * cb, ci, mask ? mask + bi * n * k : nullptr,
                        budgets + bi * r, n, k, r, value_sign};
    ws.x.assign(n, 0);
    ws.best_x.assign(n, 0);
    ws.m.assign(r, 0.0);
    ws.mu.assign(r, 0.0);
    ws.best_m.assign(r, 0.0);
    ws.grad.assign(r, 0.0);
    ws.inv_rho.assign(r, 0.0);
    ws.slack.assign(r, 0.0);

    // Least usage of each resource: a budget below it is infeasible for certain.
    bool proven_infeasible = false, dual_ok = true;
    for (std::int64_t q = 0; q < r; ++q) {
      CompensatedSum least;
      double largest = 0.0;
      for (std::int64_t i = 0; i < n; ++i) {
        double lo = 0.0;
        bool first = true;
        for (std::int64_t j = 0; j < k; ++j) {
          if (!p.allowed(i, j)) continue;
          const double c = static_cast<double>(p.w(i, j)[q]);
          if (first || c < lo) lo = c;
          first = false;
          largest = std::max(largest, c);
        }
        least.add(lo);
      }
      // A least use that overflows float64 exceeds every finite budget.
      out.min_cost[bi * r + q] = least.value();
      if (!(least.value() <= p.budget[q])) proven_infeasible = true;
      // Normalisation: rho = C / N; a zero budget uses the cost scale instead; no limit: no price.
      const double budget = p.budget[q];
      if (std::isinf(budget)) {
        ws.inv_rho[q] = 0.0;
      } else {
        double x = budget > 0.0 ? static_cast<double>(n) / budget : (largest > 0.0 ? 1.0 / largest : 1.0);
        if (!(x * kMaxPrice < HUGE_VAL)) {
          // Prices of this scale (denormal or tiny costs and budgets) overflow float64: no dual
          // iterations; a finite scale still ranks the repair's moves.
          dual_ok = false;
          x = 1.0 / std::max(std::max(budget, largest), std::numeric_limits<double>::min());
        }
        ws.inv_rho[q] = x;
      }
    }

    // Least value of any allocation: a bound L(mu) below it proves that none fits.
    CompensatedSum least_value_sum;
    for (std::int64_t i = 0; i < n; ++i) {
      double lo = 0.0;
      bool first = true;
      for (std::int64_t j = 0; j < k; ++j) {
        if (!p.allowed(i, j)) continue;
        if (first || p.v(i, j) < lo) lo = p.v(i, j);
        first = false;
      }
      least_value_sum.add(lo);
    }
    const double least_value = least_value_sum.value();

    double best_bound = std::numeric_limits<double>::infinity();
    double best_value = -std::numeric_limits<double>::infinity();
    bool have_primal = false;
    std::int64_t it = 0;
    double gamma = 1.0;
    int since_improved = 0;
    if (!proven_infeasible && !dual_ok) {
      // The bound at mu = 0 (sum_i max_k v_ik), always representable; the primal comes from
      // the final repair below.
      const double L = lagrangian_step(p, ws);
      if (L == L) best_bound = L;
      it = 1;
    }
    if (!proven_infeasible && dual_ok) {
      for (; it < max_iter; ++it) {
        for (std::int64_t q = 0; q < r; ++q) ws.mu[q] = ws.m[q] * ws.inv_rho[q];
        const double L = lagrangian_step(p, ws);
        if (!(L == L)) break;  // not expected (prices are bounded); never a NaN bound
        if (!have_primal && L < least_value - optimality_slack(least_value, L)) {
          proven_infeasible = true;  // the dual is unbounded below: no allocation fits
          ++it;
          break;
        }
        if (L < best_bound) {
          best_bound = L;
          ws.best_m = ws.m;
          since_improved = 0;
        } else if (++since_improved >= kPatience) {
          gamma *= 0.5;
          since_improved = 0;
        }
        // Projected gradient: a free price at 0 with slack stays at 0.
        double norm2 = 0.0;
        for (std::int64_t q = 0; q < r; ++q) {
          if (ws.m[q] <= 0.0 && ws.grad[q] > 0.0) ws.grad[q] = 0.0;
          norm2 += ws.grad[q] * ws.grad[q];
        }
        if (it % kRepairEvery == 0 || norm2 == 0.0) {
          if (repair(p, ws)) {
            const double val = primal_value(p, ws.x);
            if (!have_primal || val > best_value) {
              best_value = val;
              ws.best_x = ws.x;
              have_primal = true;
            }
          }
        }
        if (norm2 == 0.0) break;  // x(mu) is complementary: nothing left to move
        if (have_primal && best_bound - best_value <= std::max(tol * std::max(1.0, std::fabs(best_bound)),
                                                               optimality_slack(best_value, best_bound))) {
          ++it;
          break;
        }
        if (gamma < 1e-7) {
          ++it;
          break;
        }
        const double target = have_primal ? best_value : best_bound - 0.05 * std::max(1.0, std::fabs(best_bound));
        double step = gamma * std::max(L - target, 1e-12 * std::max(1.0, std::fabs(L))) / norm2;
        for (std::int64_t q = 0; q < r; ++q) {
          const double x = ws.m[q] - step * ws.grad[q];
          ws.m[q] = x > 0.0 ? std::min(x, kMaxPrice) : 0.0;
        }
      }
    }
    if (!proven_infeasible) {
      // A final repair from the prices of the best bound.
      ws.m = ws.best_m;
      for (std::int64_t q = 0; q < r; ++q) ws.mu[q] = ws.m[q] * ws.inv_rho[q];
      lagrangian_step(p, ws);
      if (repair(p, ws)) {
        const double val = primal_value(p, ws.x);
        if (!have_primal || val > best_value) {
          best_value = val;
          ws.best_x = ws.x;
          have_primal = true;
        }
      }
    }
    // Neither a feasible allocation nor a proof that none exists: search for feasibility by
    // steepest descent on the normalised excess from the least-normalised-cost allocation, then
    // from x(mu) at the prices of the best bound, then exhaustively (within a node limit); a
    // feasible result spends its leftover.
    std::vector<std::int64_t> least_excess;
    if (!proven_infeasible && !have_primal) {
      double least = std::numeric_limits<double>::infinity();
      for (int start = 0; start < 2 && !have_primal; ++start) {
        if (start == 0) {
          least_cost_allocation(p, ws);
        } else {
          for (std::int64_t q = 0; q < r; ++q) ws.mu[q] = ws.best_m[q] * ws.inv_rho[q];
          lagrangian_step(p, ws);
        }
        if (feasibility_search(p, ws) && repair(p, ws)) {
          best_value = primal_value(p, ws.x);
          ws.best_x = ws.x;
          have_primal = true;
          break;
        }
        std::vector<double> u(r);
        for (std::int64_t q = 0; q < r; ++q) u[q] = ws.used[q].value();
        const double e = normalised_excess(u.data(), p.budget, ws.inv_rho.data(), r);
        if (e < least) {
          least = e;
          least_excess = ws.x;
        }
      }
      // Last, an exhaustive search with a node limit: it finds an allocation or proves that
      // none exists on small instances.
      if (!have_primal) {
        const Feasibility f = feasibility_dfs(p, ws, kFeasibilityNodes);
        if (f == Feasibility::kFound && repair(p, ws)) {
          best_value = primal_value(p, ws.x);
          ws.best_x = ws.x;
          have_primal = true;
        } else if (f == Feasibility::kNone) {
          proven_infeasible = true;
        }
      }
    }
    std::int8_t status;
    if (have_primal) {
      ws.x = ws.best_x;
      best_bound = std::max(best_bound, best_value);
      // "optimal" only where a finite bound proves a finite value.
      const bool proven = std::isfinite(best_value) && std::isfinite(best_bound) &&
                          best_bound - best_value <= optimality_slack(best_value, best_bound);
      status = proven ? kOptimal : kFeasible;
    } else if (proven_infeasible) {
      // Infeasible for certain (a budget below the least use of its resource, a dual bound
      // below the least value of any allocation, or an exhausted feasibility search): the
      // least-normalised-cost allocation.
      least_cost_allocation(p, ws);
      best_value = primal_value(p, ws.x);
      best_bound = kNaN;
      status = kInfeasible;
    } else {
      // Undecided: no feasible allocation found, none proven impossible. Report the allocation
      // of least normalised excess found, without a bound.
      ws.x = least_excess;
      best_value = primal_value(p, ws.x);
      best_bound = kNaN;
      status = kUnknown;
    }
    recompute_usage(p, ws);
    out.value[bi] = best_value;
    out.bound[bi] = best_bound;
    out.status[bi] = status;
    out.iterations[bi] = it;
    for (std::int64_t q = 0; q < r; ++q) {
      out.cost[bi * r + q] = ws.used[q].value();
      out.prices[bi * r + q] = have_primal ? ws.best_m[q] * ws.inv_rho[q] : kNaN;
    }
    std::copy(ws.x.begin(), ws.x.end(), out.choice + bi * n);
  });
}

#define APPORTION_INSTANTIATE_ONLINE(T)                                                              \
  template std::int64_t dmd_decide_many<T>(const DmdConfig&, DmdState&, const T*, const T*,         \
                                           std::int64_t, const std::uint8_t*, std::int64_t,         \
                                           std::int64_t, std::int64_t*);                            \
  template void dmd_simulate<T>(const DmdConfig&, const T*, const T*, std::int64_t, std::int64_t,   \
                                std::int64_t, std::int64_t, std::int64_t, const SimulationOutput&,  \
                                int);                                                               \
  template void solve_mirror<T>(const T*, const T*, std::int64_t, std::int64_t, const std::uint8_t*, \
                                const double*, std::int64_t, std::int64_t, std::int64_t,            \
                                std::int64_t, double, std::int64_t, double, const MirrorOutput&, int);

APPORTION_INSTANTIATE_ONLINE(float)
APPORTION_INSTANTIATE_ONLINE(double)

}  // namespace apportion
