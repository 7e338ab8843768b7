// Online allocation by dual mirror descent (docs/architecture.md, "Online: dual mirror descent"), and the
// same dual update run over a whole batch as an offline solver for R >= 1 resources.
//
// A request offers K options with values v[k] and costs w[k, r] (row-major (K,R)). The state
// keeps one price mu[r] >= 0 per resource (value per unit of cost r), the budget C[r], what was
// spent (a compensated sum) and the per-period target rho[r] = C[r] / T. A step:
//   proposal  x~ = argmax_k v[k] - mu . w[k]   (the null action, value 0 cost 0, competes
//                                               when skipping is allowed)
//   play      x~ when the remaining budget pays for it; otherwise the null action. Where
//             skipping is not allowed, the budget must also keep a reserve for the requests
//             still to come in the horizon (their least cost each): x~ when it keeps it, else
//             the best-priced option that does, else the cheapest that fits (none: "stalled")
//   price     in units normalised by rho (m[r] = mu[r] rho[r], g[r] = 1 - w[x~, r] / rho[r]):
//             euclidean  m <- max(0, m - eta g);   entropy  m <- m exp(-eta g)
// The per-step arithmetic is written once as APPORTION_HD inline functions so that a CUDA
// kernel can run it per stream.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "problem.hpp"

namespace apportion {

enum Mirror : std::int8_t { kEuclidean = 0, kEntropy = 1 };

// Option codes of a played action.
constexpr std::int64_t kSkip = -1;     // the null action (value 0, cost 0)
constexpr std::int64_t kStalled = -2;  // no option fits and skipping is not allowed

// Normalised prices under the entropy mirror stay in [kMinEntropyPrice, kMaxPrice]: an
// underflow to 0 could never recover, and an overflow would turn 0 * inf into NaN.
constexpr double kMinEntropyPrice = 1e-30;
constexpr double kMaxPrice = 1e30;

struct DmdChoice {
  std::int64_t played = kSkip;    // option index, kSkip or kStalled
  std::int64_t proposed = kSkip;  // x~, the unconstrained choice that drives the price
};

// Knuth's TwoSum: a + b = s + err exactly (s the rounded sum), in round-to-nearest doubles.
APPORTION_HD inline double dmd_two_sum(double a, double b, double* err) {
  const double s = a + b;
  const double bb = s - a;
  *err = (a - (s - bb)) + (b - bb);
  return s;
}

// The largest double below a finite x.
APPORTION_HD inline double dmd_next_down(double x) {
#if defined(__CUDA_ARCH__)
  return ::nextafter(x, -HUGE_VAL);
#else
  return std::nextafter(x, -HUGE_VAL);
#endif
}

// Remaining budget of each resource: C - (s + carry) for the compensated spent sum (s, carry),
// rounded DOWN (and never below 0). Rounding down makes the affordability test exact: for a
// double cost w, w <= remaining holds if and only if s + carry + w <= C holds exactly, so an
// option that would overspend the compensated total by even an ulp is refused (a rounded-to-
// nearest remaining could round up past the exact one and let it through). The allocator, the
// simulator and any kernel decide with this one function.
APPORTION_HD inline void dmd_remaining(const double* budget, const double* spent_sum,
                                       const double* spent_carry, std::int64_t r, double* out) {
  for (std::int64_t j = 0; j < r; ++j) {
    const double c = budget[j];
    if (!(c < HUGE_VAL)) {  // no limit on this resource
      out[j] = c;
      continue;
    }
    // C - s - carry = h + hl - carry = h + m + ml = x + xl + ml, each step exact.
    double hl, ml, xl;
    const double h = dmd_two_sum(c, -spent_sum[j], &hl);
    const double m = dmd_two_sum(hl, -spent_carry[j], &ml);
    double x = dmd_two_sum(h, m, &xl);
    // x is the nearest double to the exact remainder; the tail (its sign is exact) says whether
    // the remainder lies below x, in which case the next double down is the one below it.
    if (xl + ml < 0.0) x = dmd_next_down(x);
    out[j] = x > 0.0 ? x : 0.0;
  }
}

// Requests of the horizon still to come after the current one, given the requests decided so
// far: what the reserve must cover. 0 from the last request of the horizon on.
APPORTION_HD inline std::int64_t dmd_requests_left(std::int64_t steps, std::int64_t horizon) {
  return steps + 1 < horizon ? horizon - steps - 1 : 0;
}

// Lowers floor (R) to the least cost of each resource among this request's allowed options:
// the running minimum over the requests seen, the reserve's estimate of the least a future
// request can cost (exact when every request offers the same tier costs).
template <class T>
APPORTION_HD inline void dmd_floor(const T* w, const std::uint8_t* mask, std::int64_t k, std::int64_t r,
                                   double* floor) {
  for (std::int64_t j = 0; j < k; ++j) {
    if (mask && !mask[j]) continue;
    for (std::int64_t q = 0; q < r; ++q) {
      const double wq = static_cast<double>(w[j * r + q]);
      if (wq < floor[q]) floor[q] = wq;
    }
  }
}

// The smallest double above a finite x.
APPORTION_HD inline double dmd_next_up(double x) {
#if defined(__CUDA_ARCH__)
  return ::nextafter(x, HUGE_VAL);
#else
  return std::nextafter(x, HUGE_VAL);
#endif
}

// What this request may spend so that the remaining budget still covers the requests left
// after it at the floor cost each: spendable[r] = rem[r] - left * floor[r], with the product
// rounded up and the difference rounded down, so that w <= spendable implies
// w + left * floor <= rem exactly (an exactly tight reserve still admits its option). -inf or
// negative when the reserve cannot be kept; rem itself when no request is left or rem is
// unlimited.
APPORTION_HD inline void dmd_spendable(const double* rem, const double* floor, std::int64_t r, std::int64_t left,
                                       double* spendable) {
  for (std::int64_t q = 0; q < r; ++q) {
    if (left <= 0 || !(rem[q] < HUGE_VAL)) {
      spendable[q] = rem[q];
      continue;
    }
    const double n = static_cast<double>(left);  // exact: horizons are at most 2^53
    double reserve = n * floor[q];
    if (!(reserve < HUGE_VAL)) {  // unknown floor or overflow: the reserve cannot be kept
      spendable[q] = -HUGE_VAL;
      continue;
    }
#if defined(__CUDA_ARCH__)
    if (::fma(n, floor[q], -reserve) > 0.0) reserve = dmd_next_up(reserve);
#else
    if (std::fma(n, floor[q], -reserve) > 0.0) reserve = dmd_next_up(reserve);
#endif
    double err;
    double x = dmd_two_sum(rem[q], -reserve, &err);
    if (err < 0.0) x = dmd_next_down(x);
    spendable[q] = x;
  }
}

// The priced value v[j] - mu . w[j] of option j: what the proposal maximises.
template <class T>
APPORTION_HD inline double dmd_priced(const T* v, const T* w, std::int64_t j, std::int64_t r,
                                      const double* mu) {
  double priced = static_cast<double>(v[j]);
  for (std::int64_t q = 0; q < r; ++q) priced -= mu[q] * static_cast<double>(w[j * r + q]);
  return priced;
}

// The decision where skipping is allowed and no reserve is kept (dmd_decide without
// `spendable`): the proposal, played if it fits, else the null action. Nothing else about the
// other options matters then, so this scans them for the proposal alone.
template <class T>
APPORTION_HD inline DmdChoice dmd_propose(const T* v, const T* w, const std::uint8_t* mask,
                                          std::int64_t k, std::int64_t r, const double* mu,
                                          const double* rem) {
  DmdChoice c;
  double best = 0.0;  // the null action's priced value: an option must beat it
  for (std::int64_t j = 0; j < k; ++j) {
    if (mask && !mask[j]) continue;
    const double priced = dmd_priced(v, w, j, r, mu);
    if (priced > best) {
      best = priced;
      c.proposed = j;
    }
  }
  if (c.proposed >= 0) {
    bool fits = true;
    for (std::int64_t q = 0; q < r; ++q) {
      fits = fits && (static_cast<double>(w[c.proposed * r + q]) <= rem[q]);
    }
    c.played = fits ? c.proposed : kSkip;
  }
  return c;
}

// The decision for one request: values v (K), costs w ((K,R) row-major), prices mu (R),
// remaining budget rem (R) from dmd_remaining (an option fits when w[k, r] <= rem[r] for every
// r, exactly when the compensated spent sum plus its costs stays within each budget). mask (K)
// may be nullptr (every option allowed).
//
// spendable (R), or nullptr: what may be spent while keeping the reserve for the requests
// still to come (dmd_spendable; used when skipping is not allowed). An option keeps the reserve
// when w[r] <= spendable[r] for every r. The proposal is played when it keeps the reserve; else
// the best-priced option that keeps it; when none does (the budget cannot cover the rest at
// their least cost), the fitting option that uses the least share of the remaining budget,
// sum_r w[r] / rem[r] (for one resource: the cheapest), so that as many requests as possible
// are served. Where skipping is allowed and no reserve is kept, dmd_propose decides.
template <class T>
APPORTION_HD inline DmdChoice dmd_decide(const T* v, const T* w, const std::uint8_t* mask,
                                         std::int64_t k, std::int64_t r, const double* mu,
                                         const double* rem, bool skip_allowed,
                                         const double* spendable = nullptr) {
  if (skip_allowed && spendable == nullptr) return dmd_propose(v, w, mask, k, r, mu, rem);
  DmdChoice c;
  double best = 0.0, best_fit = 0.0, best_keep = 0.0, least_share = 0.0, least_share_priced = 0.0;
  bool have_best = skip_allowed, have_fit = false, have_keep = false;
  c.proposed = kSkip;
  std::int64_t fit = kStalled, keep = kStalled, least = kStalled;
  bool proposed_fits = false, proposed_keeps = false;
  for (std::int64_t j = 0; j < k; ++j) {
    if (mask && !mask[j]) continue;
    const T* wj = w + j * r;
    const double priced = dmd_priced(v, w, j, r, mu);
    bool fits = true, keeps = true;
    double share = 0.0;
    for (std::int64_t q = 0; q < r; ++q) {
      const double wq = static_cast<double>(wj[q]);
      fits = fits && (wq <= rem[q]);
      if (spendable) {
        keeps = keeps && (wq <= spendable[q]);
        if (wq > 0.0 && rem[q] < HUGE_VAL) share += wq / rem[q];  // rem > 0 whenever a w > 0 fits
      }
    }
    keeps = keeps && fits;
    if (!have_best || priced > best) {
      best = priced;
      have_best = true;
      c.proposed = j;
      proposed_fits = fits;
      proposed_keeps = keeps;
    }
    if (fits && (!have_fit || priced > best_fit)) {
      best_fit = priced;
      have_fit = true;
      fit = j;
    }
    if (keeps && (!have_keep || priced > best_keep)) {
      best_keep = priced;
      have_keep = true;
      keep = j;
    }
    if (fits && (least == kStalled || share < least_share || (share == least_share && priced > least_share_priced))) {
      least_share = share;
      least_share_priced = priced;
      least = j;
    }
  }
  if (c.proposed < 0) {
    c.played = kSkip;  // the null action was the best-priced choice
  } else if (spendable == nullptr) {
    c.played = proposed_fits ? c.proposed : (skip_allowed ? kSkip : fit);
  } else if (proposed_keeps) {
    c.played = c.proposed;
  } else if (skip_allowed) {
    c.played = kSkip;
  } else {
    c.played = have_keep ? keep : least;  // least is kStalled when nothing fits
  }
  return c;
}

// The price update from the proposal's costs wp (R), or nullptr for the null action. The state
// keeps normalised prices m[r] = mu[r] rho[r] (value per period's share of budget r) and the
// prices mu[r] = m[r] inv_rho[r] that decisions use; inv_rho[r] = T / C[r] (0: no limit, the
// price stays 0).
template <class T>
APPORTION_HD inline void dmd_update(double* m, double* mu, const T* wp, std::int64_t r,
                                    const double* inv_rho, double eta, Mirror mirror) {
  for (std::int64_t q = 0; q < r; ++q) {
    if (inv_rho[q] == 0.0) {
      mu[q] = 0.0;
      continue;
    }
    const double g = 1.0 - (wp ? static_cast<double>(wp[q]) * inv_rho[q] : 0.0);
    double x = m[q];
    if (mirror == kEuclidean) {
      x -= eta * g;
      if (!(x > 0.0)) x = 0.0;
    } else {
      x *= std::exp(-eta * g);
      if (!(x > kMinEntropyPrice)) x = kMinEntropyPrice;
    }
    if (x > kMaxPrice) x = kMaxPrice;
    m[q] = x;
    mu[q] = x * inv_rho[q];
  }
}

// Adds the played option's costs to the compensated spent sums.
template <class T>
APPORTION_HD inline void dmd_spend(const T* wp, std::int64_t r, double* spent_sum, double* spent_carry) {
  for (std::int64_t q = 0; q < r; ++q) {
    CompensatedSum s{spent_sum[q], spent_carry[q]};
    s.add(static_cast<double>(wp[q]));
    spent_sum[q] = s.sum;
    spent_carry[q] = s.carry;
  }
}

// A decided step (c.played not kStalled): the played option's costs into the spent sums and
// its value into `value` (when given), then the price update on the proposal.
template <class T>
APPORTION_HD inline void dmd_commit(const DmdChoice& c, const T* v, const T* w, std::int64_t r, double* m,
                                    double* mu, double* spent_sum, double* spent_carry, const double* inv_rho,
                                    double eta, Mirror mirror, CompensatedSum* value) {
  if (c.played >= 0) {
    dmd_spend(w + c.played * r, r, spent_sum, spent_carry);
    if (value) value->add(static_cast<double>(v[c.played]));
  }
  dmd_update(m, mu, c.proposed >= 0 ? w + c.proposed * r : static_cast<const T*>(nullptr), r, inv_rho, eta,
             mirror);
}

// Configuration shared by the allocator and the simulator.
struct DmdConfig {
  std::int64_t r = 1;         // resources
  std::int64_t horizon = 1;   // T
  Mirror mirror = kEuclidean;
  double eta = 0.0;           // step size, in normalised units (see above)
  bool skip_allowed = true;
  std::vector<double> budget;     // (R,) > 0, may be +inf
  std::vector<double> inv_rho;    // (R,) T / C (0 for an infinite budget)
  std::vector<double> m0;         // (R,) initial normalised prices m = mu * rho

  // Checks the fields and derives inv_rho; throws std::invalid_argument naming the argument.
  void finalise();
};

// The mutable state of one allocator; plain arrays so that it pickles as numbers.
struct DmdState {
  std::vector<double> m, mu, spent_sum, spent_carry;  // (R,) each
  std::vector<double> floor;  // (R,) least cost per resource seen (dmd_floor); +inf before any
  std::int64_t steps = 0;
  void reset(const DmdConfig& cfg);
};

// Decides m requests in order (values (m,K); costs of request i at w + i * cost_stride_request,
// (K,R) row-major; mask (m,K) or nullptr), updating the state after each, and writes the played
// options to out (m). All-or-nothing: when a request stalls (no option fits, skipping not
// allowed) the state is restored as before the call and the index of that request is
// returned; otherwise -1. Values must be finite and costs finite and >= 0 (checked; throws
// std::invalid_argument).
template <class T>
std::int64_t dmd_decide_many(const DmdConfig& cfg, DmdState& st, const T* values, const T* costs,
                             std::int64_t cost_stride_request, const std::uint8_t* mask,
                             std::int64_t m, std::int64_t k, std::int64_t* out);

// S independent streams of T requests (values (S,T,K); the costs of request (s,t) start at
// costs + s * cs + t * ct, (K,R) row-major; 0 strides broadcast). Each stream starts from the
// initial state of cfg. Outputs: choice (S,T) or nullptr (played option, kSkip, or kSkip for a
// stalled request, counted in stalled, which leaves the state untouched as an allocator's
// failed decide does), value (S,), spent (S,R), prices (S,R), stalled (S,).
struct SimulationOutput {
  std::int64_t* choice = nullptr;
  double* value = nullptr;
  double* spent = nullptr;
  double* prices = nullptr;
  std::int64_t* stalled = nullptr;
};

// A finished stream sidx's value, spent (R), prices (R) and stalled count into `out`.
APPORTION_HD inline void dmd_store_stream(const SimulationOutput& out, std::int64_t sidx, std::int64_t r,
                                          const CompensatedSum& value, const double* spent_sum,
                                          const double* spent_carry, const double* mu, std::int64_t stalled) {
  out.value[sidx] = value.value();
  for (std::int64_t q = 0; q < r; ++q) {
    out.spent[sidx * r + q] = spent_sum[q] + spent_carry[q];
    out.prices[sidx * r + q] = mu[q];
  }
  out.stalled[sidx] = stalled;
}

template <class T>
void dmd_simulate(const DmdConfig& cfg, const T* values, const T* costs, std::int64_t cs,
                  std::int64_t ct, std::int64_t s, std::int64_t t, std::int64_t k,
                  const SimulationOutput& out, int threads);

// Offline: the dual update over a batch of B instances (values (B,N,K); costs of (b,i) at
// costs + b * cb + i * ci, (K,R) row-major; budgets (B,R); mask (B,N,K) or nullptr). Subgradient
// steps on L(mu) = sum_i max_k (v_ik - mu . w_ik) + mu . C in rho-normalised prices, with a
// Polyak step towards the best feasible value; every L(mu) is an upper bound (the least is
// kept); the primal is x(mu) repaired to feasibility and topped up with leftover budget.
struct MirrorOutput {
  std::int64_t* choice = nullptr;  // (B,N)
  double* value = nullptr;         // (B,)
  double* cost = nullptr;          // (B,R)
  double* bound = nullptr;         // (B,)
  double* prices = nullptr;        // (B,R) the prices of the best bound
  double* min_cost = nullptr;      // (B,R) sum_i min_k w_ikr: below it, surely infeasible
  std::int64_t* iterations = nullptr;  // (B,)
  std::int8_t* status = nullptr;   // (B,) kOptimal, kFeasible, kInfeasible (proven) or kUnknown
};

template <class T>
void solve_mirror(const T* values, const T* costs, std::int64_t cb, std::int64_t ci,
                  const std::uint8_t* mask, const double* budgets, std::int64_t b, std::int64_t n,
                  std::int64_t k, std::int64_t r, double value_sign, std::int64_t max_iter,
                  double tol, const MirrorOutput& out, int threads);

}  // namespace apportion
