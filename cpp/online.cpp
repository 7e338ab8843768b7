#include "online.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

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
    if (!(std::isfinite(m0[q]) && m0[q] >= 0.0)) {
      throw std::invalid_argument("initial_prices: expected finite numbers >= 0");
    }
  }
}

void DmdState::reset(const DmdConfig& cfg) {
  m = cfg.m0;
  mu.assign(cfg.r, 0.0);
  for (std::int64_t q = 0; q < cfg.r; ++q) {
    if (cfg.mirror == kEntropy && m[q] < kMinEntropyPrice) m[q] = kMinEntropyPrice;
    mu[q] = m[q] * cfg.inv_rho[q];
  }
  spent_sum.assign(cfg.r, 0.0);
  spent_carry.assign(cfg.r, 0.0);
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
  Scratch rem(r);
  for (std::int64_t i = 0; i < m; ++i) {
    const T* v = values + i * k;
    const T* w = costs + i * cost_stride_request;
    const std::uint8_t* mk = mask ? mask + i * k : nullptr;
    dmd_remaining(cfg.budget.data(), st.spent_sum.data(), st.spent_carry.data(), r, rem.data);
    const DmdChoice c = dmd_decide(v, w, mk, k, r, st.mu.data(), rem.data, cfg.skip_allowed);
    if (c.played == kStalled) {
      if (atomic) st = saved;
      return i;
    }
    if (c.played >= 0) dmd_spend(w + c.played * r, r, st.spent_sum.data(), st.spent_carry.data());
    dmd_update(st.m.data(), st.mu.data(), c.proposed >= 0 ? w + c.proposed * r : static_cast<const T*>(nullptr),
               r, cfg.inv_rho.data(), cfg.eta, cfg.mirror);
    ++st.steps;
    out[i] = c.played;
  }
  return -1;
}

template <class T>
void dmd_simulate(const DmdConfig& cfg, const T* values, const T* costs, std::int64_t cs,
                  std::int64_t ct, std::int64_t s, std::int64_t t, std::int64_t k,
                  const SimulationOutput& out, int threads) {
  const std::int64_t r = cfg.r;
  // Validate once, before any stream runs (costs only where they are distinct).
  for (std::int64_t x = 0; x < s * t * k; ++x) {
    if (!std::isfinite(static_cast<double>(values[x]))) {
      throw std::invalid_argument("values: entry " + std::to_string(x) +
                                  " (flat index) is NaN or infinite; values must be finite");
    }
  }
  const std::int64_t cost_s = cs == 0 ? 1 : s, cost_t = ct == 0 ? 1 : t;
  for (std::int64_t a = 0; a < cost_s; ++a) {
    for (std::int64_t b = 0; b < cost_t; ++b) {
      const T* w = costs + a * cs + b * ct;
      for (std::int64_t x = 0; x < k * r; ++x) {
        const double c = static_cast<double>(w[x]);
        if (!(std::isfinite(c) && c >= 0.0)) {
          throw std::invalid_argument("costs: an entry is " + std::to_string(c) +
                                      "; costs must be finite and >= 0");
        }
      }
    }
  }
  const int pool = ThreadPool::instance().size();
  const int usable = threads <= 0 ? pool : std::min(threads, pool);
  parallel_for(s, 1, usable, [&](std::int64_t begin, std::int64_t end) {
    DmdState st;
    std::vector<double> rem(r);
    for (std::int64_t sidx = begin; sidx < end; ++sidx) {
      st.reset(cfg);
      CompensatedSum value;
      std::int64_t stalled = 0;
      const T* vs = values + sidx * t * k;
      const T* ws = costs + sidx * cs;
      std::int64_t* ch = out.choice ? out.choice + sidx * t : nullptr;
      for (std::int64_t i = 0; i < t; ++i) {
        const T* v = vs + i * k;
        const T* w = ws + i * ct;
        dmd_remaining(cfg.budget.data(), st.spent_sum.data(), st.spent_carry.data(), r, rem.data());
        DmdChoice c = dmd_decide(v, w, static_cast<const std::uint8_t*>(nullptr), k, r,
                                 st.mu.data(), rem.data(), cfg.skip_allowed);
        if (c.played == kStalled) {
          // As OnlineAllocator.decide raising: the request is left undecided, the state as it was.
          ++stalled;
          if (ch) ch[i] = kSkip;
          continue;
        }
        if (c.played >= 0) {
          dmd_spend(w + c.played * r, r, st.spent_sum.data(), st.spent_carry.data());
          value.add(static_cast<double>(v[c.played]));
        }
        dmd_update(st.m.data(), st.mu.data(),
                   c.proposed >= 0 ? w + c.proposed * r : static_cast<const T*>(nullptr), r,
                   cfg.inv_rho.data(), cfg.eta, cfg.mirror);
        if (ch) ch[i] = c.played;
      }
      out.value[sidx] = value.value();
      for (std::int64_t q = 0; q < r; ++q) {
        out.spent[sidx * r + q] = st.spent_sum[q] + st.spent_carry[q];
        out.prices[sidx * r + q] = st.mu[q];
      }
      out.stalled[sidx] = stalled;
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

template <class T>
bool is_feasible(const MirrorInstance<T>& p, const MirrorWorkspace& ws) {
  for (std::int64_t q = 0; q < p.r; ++q) {
    if (ws.used[q].value() > p.budget[q]) return false;
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
  for (std::int64_t x = 0; x < b * n * k; ++x) {
    if (mask && !mask[x]) continue;
    if (!std::isfinite(static_cast<double>(values[x]))) {
      throw std::invalid_argument("values: entry " + std::to_string(x) +
                                  " (flat index) is NaN or infinite; values must be finite");
    }
  }
  const std::int64_t nb = cb == 0 ? 1 : b, ni = ci == 0 ? 1 : n;
  for (std::int64_t a = 0; a < nb; ++a) {
    for (std::int64_t i = 0; i < ni; ++i) {
      const T* w = costs + a * cb + i * ci;
      for (std::int64_t x = 0; x < k * r; ++x) {
        const double c = static_cast<double>(w[x]);
        if (!(std::isfinite(c) && c >= 0.0)) {
          throw std::invalid_argument("costs: an entry is " + std::to_string(c) +
                                      "; costs must be finite and >= 0");
        }
      }
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
    bool proven_infeasible = false;
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
      out.min_cost[bi * r + q] = least.value();
      if (least.value() > p.budget[q]) proven_infeasible = true;
      // Normalisation: rho = C / N; a zero budget uses the cost scale instead; no limit: no price.
      const double budget = p.budget[q];
      if (std::isinf(budget)) {
        ws.inv_rho[q] = 0.0;
      } else if (budget > 0.0) {
        ws.inv_rho[q] = static_cast<double>(n) / budget;
      } else {
        ws.inv_rho[q] = largest > 0.0 ? 1.0 / largest : 1.0;
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
    if (!proven_infeasible) {
      for (; it < max_iter; ++it) {
        for (std::int64_t q = 0; q < r; ++q) ws.mu[q] = ws.m[q] * ws.inv_rho[q];
        const double L = lagrangian_step(p, ws);
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
    std::int8_t status;
    if (have_primal) {
      ws.x = ws.best_x;
      best_bound = std::max(best_bound, best_value);
      status = (best_bound - best_value <= optimality_slack(best_value, best_bound)) ? kOptimal : kFeasible;
    } else {
      // Infeasible for certain (or no feasible allocation found): the least-normalised-cost one.
      least_cost_allocation(p, ws);
      best_value = primal_value(p, ws.x);
      best_bound = kNaN;
      status = kInfeasible;
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
