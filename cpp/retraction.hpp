// Retraction onto the budget manifold of the softmax relaxation (docs/architecture.md, "Riemannian
// relaxation").
//
// Item i of instance b has logits z_i (K,), probabilities p_i = softmax(z_i / tau) and option
// costs w_ik = s_i c_ik (s_i a per-item weight, 1 when none is given). The expected cost
// E(z) = sum_ik p_ik w_ik. The retraction finds the shift t with E(z - t d) = C along one of
// two curves and writes z - t d back:
//   kCurveWeighted: d_ik = w_ik = s_i c_ik (each item moves in proportion to its weight);
//   kCurveCosts:    d_ik = c_ik (every item moves by t c_i, the curve of the published RCO code).
// Both have w_ik = o_i d_ik with o_i = 1 or s_i >= 0, so E(z - t d) falls monotonically in t
// (dE/dt = -sum_i o_i Var_{p_i}(d_i) / tau) and a safeguarded Newton iteration on a bracket
// finds t to a relative tolerance of 1e-9 in double.
//
// The per-item arithmetic and the root-finding step are APPORTION_HD inline functions, so
// that the CUDA launcher can share them with this CPU one. Logits of -inf mark options that
// are never taken (probability 0); NaN and +inf are rejected.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "problem.hpp"
#include "vector_exp.hpp"

namespace apportion {

enum RetractionStatus : std::int8_t {
  kRetractConverged = 0,   // |E - C| <= rtol * |C| (or within the precision of double)
  kRetractPrecision = 1,   // the bracket collapsed to adjacent doubles before rtol was met
  kRetractInfeasible = 2,  // C lies outside the range of E: (sum min_k w_ik, sum max_k w_ik)
  kRetractMaxIter = 3,     // max_iter evaluations without convergence
  kRetractOverflow = 4,    // z - t d leaves the range of the logits' type (float32 near 3.4e38):
                           // the instance's logits are left unchanged
  kRetractRounded = 5,     // t met rtol in double, but the logits rounded to their type (float32)
                           // miss it: `expected` is E of the logits as written
};

enum RetractionCurve : std::int8_t {
  kCurveWeighted = 0,  // z_i - t s_i c_i
  kCurveCosts = 1,     // z_i - t c_i
};

template <class T>
struct RetractionView {
  T* logits = nullptr;                  // (B,N,K) row-major, retracted in place
  const double* costs = nullptr;        // c at costs[b*cost_stride_batch + i*cost_stride_item + k]
  std::int64_t cost_stride_batch = 0;   // N*K, K or 0
  std::int64_t cost_stride_item = 0;    // K or 0 (options shared by all items)
  const double* weights = nullptr;      // per-item multipliers s at weights[b*weight_stride_batch + i]
  std::int64_t weight_stride_batch = 0; // N or 0
  const double* budgets = nullptr;      // (B,)
  std::int64_t b = 0, n = 0, k = 0;
  double inv_tau = 1.0;                 // 1 / temperature
  double rtol = 1e-9;
  int max_iter = 200;
  RetractionCurve curve = kCurveWeighted;

  APPORTION_HD T* item_logits(std::int64_t bb, std::int64_t i) const { return logits + (bb * n + i) * k; }
  APPORTION_HD const double* item_costs(std::int64_t bb, std::int64_t i) const {
    return costs + bb * cost_stride_batch + i * cost_stride_item;
  }
  APPORTION_HD double item_weight(std::int64_t bb, std::int64_t i) const {
    return weights ? weights[bb * weight_stride_batch + i] : 1.0;
  }
  // The direction d_i = direction_scale * c_i of item i, and its cost w_i = output_scale * d_i.
  APPORTION_HD double direction_scale(std::int64_t bb, std::int64_t i) const {
    return curve == kCurveWeighted ? item_weight(bb, i) : 1.0;
  }
  APPORTION_HD double output_scale(std::int64_t bb, std::int64_t i) const {
    return curve == kCurveWeighted ? 1.0 : item_weight(bb, i);
  }
  // Whether every item of an instance moves along one direction row (d_i = c, shared).
  APPORTION_HD bool shared_direction() const {
    return cost_stride_item == 0 && (weights == nullptr || curve == kCurveCosts);
  }
};

struct RetractionOutput {
  double* shift = nullptr;          // (B,) t
  double* expected = nullptr;       // (B,) E at the shift found
  std::int32_t* iterations = nullptr;  // (B,) evaluations of E
  std::int8_t* status = nullptr;    // (B,) RetractionStatus
};

// Mean, variance and third central moment of the direction d_j = s c_j of one item under
// softmax((z - t d) / tau). Options with logit -inf have probability 0. The direction is
// centred on `ref` for accuracy. (Its cost moments are these times the output scale.)
struct ItemMoments {
  double mean = 0.0, var = 0.0, skew = 0.0;  // skew: the third central moment
};

template <class T>
APPORTION_HD inline ItemMoments item_moments(const T* z, const double* c, double s, std::int64_t k,
                                             double inv_tau, double t, double ref) {
  double m = -INFINITY;
  for (std::int64_t j = 0; j < k; ++j) {
    const double x = (static_cast<double>(z[j]) - t * s * c[j]) * inv_tau;
    if (x > m) m = x;
  }
  double s0 = 0.0, s1 = 0.0;
  for (std::int64_t j = 0; j < k; ++j) {
    const double zj = static_cast<double>(z[j]);
    if (zj == -INFINITY) continue;
    const double e = exp((zj - t * s * c[j]) * inv_tau - m);
    s0 += e;
    s1 += e * (s * c[j] - ref);
  }
  const double mu = ref + s1 / s0;
  double s2 = 0.0, s3 = 0.0;  // central moments in a second pass, for accuracy
  for (std::int64_t j = 0; j < k; ++j) {
    const double zj = static_cast<double>(z[j]);
    if (zj == -INFINITY) continue;
    const double e = exp((zj - t * s * c[j]) * inv_tau - m);
    const double d = s * c[j] - mu;
    s2 += e * d * d;
    s3 += e * d * d * d;
  }
  ItemMoments r;
  r.mean = mu;
  r.var = s2 / s0;
  r.skew = s3 / s0;
  return r;
}

// Below this, the factorised item weights are too close to underflow to be trusted; the item
// is evaluated directly instead.
constexpr double kFactorUnderflow = 1e-250;

// Safeguarded Newton on f(t) = E(z - t w) - C, a decreasing function of t. Keeps a bracket
// lo < t* < hi (f(lo) > 0 > f(hi); infinite until found), takes the Newton step when it
// falls inside the bracket and shrinks it fast enough, expands geometrically while one side
// is still open, and bisects otherwise.
struct ShiftSearch {
  double lo = -INFINITY, hi = INFINITY;
  double span = 1.0;        // expansion step while the bracket is open
  double last_step = INFINITY;

  APPORTION_HD explicit ShiftSearch(double initial_span) : span(initial_span) {}

  // True when the bracket has collapsed to adjacent doubles.
  APPORTION_HD bool collapsed() const {
    if (!(lo > -INFINITY && hi < INFINITY)) return false;
    const double scale = fabs(lo) > fabs(hi) ? fabs(lo) : fabs(hi);
    return hi - lo <= 4.0 * 2.220446049250313e-16 * scale || !(lo < hi);
  }

  // The next shift to evaluate, given f and its first two derivatives at t (df <= 0). The
  // Newton step is Halley's (cubic convergence) where the curvature term is moderate.
  APPORTION_HD double next(double t, double f, double df, double d2f) {
    if (f > 0.0) {
      lo = t;
    } else {
      hi = t;
    }
    double newton = NAN;
    if (df < 0.0) {
      const double h = f / df;
      const double denom = 1.0 - 0.5 * h * d2f / df;
      newton = (denom > 0.5 && denom < 2.0) ? t - h / denom : t - h;
    }
    const bool open = !(lo > -INFINITY) || !(hi < INFINITY);
    if (open) {
      // Newton towards the open side, capped so that a flat f cannot throw t far away.
      double cap = span;
      span *= 4.0;
      double cand;
      if (!(lo > -INFINITY)) {  // f < 0 everywhere seen: move left
        cand = (newton == newton && newton < t) ? newton : t - cap;
        if (t - cand > cap) cand = t - cap;
      } else {
        cand = (newton == newton && newton > t) ? newton : t + cap;
        if (cand - t > cap) cand = t + cap;
      }
      last_step = fabs(cand - t);
      return cand;
    }
    const double step = newton - t;
    if (newton > lo && newton < hi && fabs(step) <= 0.5 * last_step) {
      last_step = fabs(step);
      return newton;
    }
    const double mid = lo + 0.5 * (hi - lo);
    last_step = 0.5 * (hi - lo);
    return mid;
  }
};

// Whether |f| meets the tolerance rtol relative to the budget (absolute `floor` near zero).
APPORTION_HD inline bool shift_converged(double f, double budget, double rtol, double floor) {
  const double scale = fabs(budget) > floor ? fabs(budget) : floor;
  return fabs(f) <= rtol * scale;
}

// Retracts every instance of `p` in place; results per instance in `out`. `threads`: as in
// run_batch. Throws std::invalid_argument for NaN or +inf logits, an item with no finite one, or
// a cost or weight that is NaN, infinite or negative (the Python layer leaves that check to
// this pass).
template <class T>
void retract_batch(const RetractionView<T>& p, const RetractionOutput& out, int threads);

}  // namespace apportion
