// CPU launcher of the budget retraction: instances across threads (run_batch), or the items
// of one large instance across threads, each evaluation of E reduced over a fixed number of
// chunks so that the result does not depend on the thread count.
#include "retraction.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_dispatch.hpp"
#include "solvers.hpp"

namespace apportion {

namespace {

// Instances with at least this many logits split their items over kChunks chunks.
constexpr std::int64_t kParallelLogits = 1 << 15;
constexpr std::int64_t kChunks = 16;
// Items per block of the factorised layout: a[block][option][item in block], so that the
// evaluation loops run across items without dependency chains (and vectorise).
constexpr std::int64_t kBlock = 32;

// One block of the factorised layout. Item ii has the weights a[j][ii] = exp(z_j / tau - m)
// and the direction d_j - d_min (kPerItem: d per item, [j][ii]; otherwise one row [j] for all
// items); at shift t its option j weighs a[j][ii] e_j with the factor
// e_j = exp(-t (d_j - ref) / tau). Shared direction: `e` holds the K factors. Per item: they
// are computed here, rate = -t / tau, and ref is 0 for t >= 0 and the item's direction range
// d_range[ii] (use_range = 1) for t < 0, so that every exponent is <= 0; computing them in
// this loop keeps them in registers (kUnitFactors: t = 0, every factor is 1). Adds each item's
// expected cost scale * (d_min + mean of d), variance and third central moment (both times
// scale) to el/vl/ml, and leaves s0 for the underflow test.
template <bool kPerItem, bool kUnitFactors = false>
APPORTION_INLINE void block_moments_body(const double* a, const double* e, const double* d, const double* d_range,
                                         double rate, double use_range, const double* d_min, const double* scale,
                                         std::int64_t k, double* el, double* vl, double* ml, double* s0) {
  double s1[kBlock], s2[kBlock], s3[kBlock], ref[kBlock];
  for (std::int64_t ii = 0; ii < kBlock; ++ii) {
    s0[ii] = s1[ii] = s2[ii] = s3[ii] = 0.0;
    ref[ii] = kPerItem ? use_range * d_range[ii] : 0.0;
  }
  for (std::int64_t j = 0; j < k; ++j) {
    const double* aj = a + j * kBlock;
    for (std::int64_t ii = 0; ii < kBlock; ++ii) {
      const double dj = kPerItem ? d[j * kBlock + ii] : d[j];
      const double ej = kUnitFactors ? 1.0 : kPerItem ? exp_nonpositive(rate * (dj - ref[ii])) : e[j];
      const double ae = aj[ii] * ej, aed = ae * dj, aed2 = aed * dj;
      s0[ii] += ae;
      s1[ii] += aed;
      s2[ii] += aed2;
      s3[ii] += aed2 * dj;
    }
  }
  for (std::int64_t ii = 0; ii < kBlock; ++ii) {
    const bool ok = s0[ii] > kFactorUnderflow;
    const double inv = 1.0 / (ok ? s0[ii] : 1.0);
    const double mu = s1[ii] * inv, m2 = s2[ii] * inv, m3 = s3[ii] * inv;
    const double v = m2 - mu * mu;
    el[ii] += ok ? scale[ii] * (d_min[ii] + mu) : 0.0;
    vl[ii] += ok && v > 0.0 ? scale[ii] * v : 0.0;
    ml[ii] += ok ? scale[ii] * (m3 - 3.0 * mu * m2 + 2.0 * mu * mu * mu) : 0.0;
  }
}

APPORTION_SIMD_CLONES void block_moments_shared(const double* a, const double* e, const double* d,
                                                const double* d_min, const double* scale, std::int64_t k,
                                                double* el, double* vl, double* ml, double* s0) {
  block_moments_body<false>(a, e, d, nullptr, 0.0, 0.0, d_min, scale, k, el, vl, ml, s0);
}

APPORTION_SIMD_CLONES void block_moments_per_item(const double* a, const double* d, const double* d_range,
                                                  double t, double inv_tau, const double* d_min,
                                                  const double* scale, std::int64_t k, double* el, double* vl,
                                                  double* ml, double* s0) {
  if (t == 0.0) {
    block_moments_body<true, true>(a, nullptr, d, d_range, 0.0, 0.0, d_min, scale, k, el, vl, ml, s0);
  } else {
    block_moments_body<true>(a, nullptr, d, d_range, -t * inv_tau, t >= 0.0 ? 0.0 : 1.0, d_min, scale, k, el, vl,
                             ml, s0);
  }
}

struct ChunkSums {
  double e = 0.0, v = 0.0, m3 = 0.0;        // sums of item means, variances, third moments at t
  double lo = 0.0, hi = 0.0;                // sums of the least / greatest option costs
  double spread = 0.0;                      // greatest per-item range of the direction
  double logit_abs = 0.0, direction_abs = 0.0;  // greatest |z| (finite) and |d|: bound the write
  std::int64_t bad = -1;                    // first item with invalid logits
  std::int64_t bad_cost = -1;               // first item with a cost that is NaN, infinite or < 0
  std::int64_t bad_weight = -1;             // first item with a weight that is NaN, infinite or < 0
};

// The factorised layout, blocks of kBlock items: a[block][option][item in block]. With a
// direction per item, d (same layout) holds d_ik - d_min_i, and d_min / d_range each item's
// least direction and its range; scale holds each item's output scale (0 for padding).
struct RetractionWorkspace {
  std::vector<double> a, d, d_min, d_range, scale;
  std::vector<ChunkSums> sums;  // per chunk
  std::size_t bytes() const {
    return (a.capacity() + d.capacity() + d_min.capacity() + d_range.capacity() + scale.capacity()) *
               sizeof(double) +
           sums.capacity() * sizeof(ChunkSums);
  }
};

// Items [i0, i1) of chunk c; boundaries are multiples of `unit` (the block of the factorised
// layout) except the last, n.
template <class Fn>
void over_chunks(std::int64_t chunks, std::int64_t n, std::int64_t unit, int threads, Fn&& fn) {
  const std::int64_t units = (n + unit - 1) / unit;
  auto body = [&](std::int64_t c0, std::int64_t c1) {
    for (std::int64_t c = c0; c < c1; ++c) {
      fn(c, std::min(n, c * units / chunks * unit), std::min(n, (c + 1) * units / chunks * unit));
    }
  };
  if (chunks > 1 && threads > 1) {
    parallel_for(chunks, 1, threads, body);
  } else {
    body(0, chunks);
  }
}

template <class T>
void retract_instance(const RetractionView<T>& p, std::int64_t b, RetractionWorkspace& ws, int threads,
                      const RetractionOutput& out) {
  const std::int64_t n = p.n, k = p.k;
  const double inv_tau = p.inv_tau;
  const double budget = p.budgets[b];
  const bool shared = p.shared_direction();
  const std::int64_t padded = (n + kBlock - 1) / kBlock * kBlock;
  // The chunking depends on the size alone, so that sums (and results) do not depend on threads.
  const std::int64_t chunks = n * k >= kParallelLogits ? std::min(kChunks, padded / kBlock) : 1;
  ws.sums.assign(static_cast<std::size_t>(chunks), ChunkSums{});
  ws.a.resize(static_cast<std::size_t>(padded * k));
  ws.scale.resize(static_cast<std::size_t>(padded));
  ws.d_min.resize(static_cast<std::size_t>(padded));
  if (!shared) {
    ws.d.resize(static_cast<std::size_t>(padded * k));
    ws.d_range.resize(static_cast<std::size_t>(padded));
  }

  // Shared direction: the cost row, its offsets and the per-evaluation factors e_j.
  const double* c_row = p.item_costs(b, 0);
  double c_min = INFINITY, c_max = -INFINITY;
  for (std::int64_t j = 0; j < k; ++j) {
    c_min = std::min(c_min, c_row[j]);
    c_max = std::max(c_max, c_row[j]);
  }
  std::vector<double> e(static_cast<std::size_t>(k)), d(static_cast<std::size_t>(k));
  for (std::int64_t j = 0; j < k; ++j) d[j] = c_row[j] - c_min;

  // Moments over items [i0, i1) at shift t (the factors e current for t), added to the chunk's
  // sums. Items whose factorised weights underflow are evaluated directly.
  auto moments = [&](ChunkSums& cs, double t, std::int64_t i0, std::int64_t i1) {
    double el[kBlock], vl[kBlock], ml[kBlock], s0[kBlock];
    for (std::int64_t ii = 0; ii < kBlock; ++ii) el[ii] = vl[ii] = ml[ii] = 0.0;
    double es = 0.0, vs = 0.0, ms = 0.0;
    for (std::int64_t blk = i0; blk < i1; blk += kBlock) {
      const double* a = ws.a.data() + blk * k;
      if (shared) {
        block_moments_shared(a, e.data(), d.data(), ws.d_min.data() + blk, ws.scale.data() + blk, k, el, vl, ml,
                             s0);
      } else {
        block_moments_per_item(a, ws.d.data() + blk * k, ws.d_range.data() + blk, t, inv_tau,
                               ws.d_min.data() + blk, ws.scale.data() + blk, k, el, vl, ml, s0);
      }
      const std::int64_t len = std::min(kBlock, i1 - blk);
      for (std::int64_t ii = 0; ii < len; ++ii) {
        if (s0[ii] > kFactorUnderflow) continue;
        const std::int64_t i = blk + ii;
        const double sd = p.direction_scale(b, i), so = p.output_scale(b, i);
        const double* ci = p.item_costs(b, i);
        const ItemMoments m = item_moments(p.item_logits(b, i), ci, sd, k, inv_tau, t, sd * ci[0]);
        es += so * m.mean;
        vs += so * m.var;
        ms += so * m.skew;
      }
    }
    for (std::int64_t ii = 0; ii < kBlock; ++ii) {
      es += el[ii];
      vs += vl[ii];
      ms += ml[ii];
    }
    cs.e = es;
    cs.v = vs;
    cs.m3 = ms;
  };

  // f = E(t) - C and its first two derivatives in t, from the chunk sums.
  double f = 0.0, df = 0.0, d2f = 0.0;
  auto reduce = [&]() {
    CompensatedSum es, vs, ms;
    for (const ChunkSums& s : ws.sums) {
      es.add(s.e);
      vs.add(s.v);
      ms.add(s.m3);
    }
    f = es.value() - budget;
    df = -inv_tau * vs.value();
    d2f = inv_tau * inv_tau * ms.value();
  };

  // Pass 1: validation, the range of E, the factorised layout, and the moments at t = 0, block
  // by block while the logits are in cache.
  auto prepare = [&]() {
    for (std::int64_t j = 0; j < k; ++j) e[j] = 1.0;
    over_chunks(chunks, n, kBlock, threads, [&](std::int64_t c, std::int64_t i0, std::int64_t i1) {
      ChunkSums& s = ws.sums[c];
      s = ChunkSums{};
      CompensatedSum lo, hi;
      for (std::int64_t blk = i0; blk < i1; blk += kBlock) {
        const std::int64_t len = std::min(kBlock, i1 - blk);
        double m[kBlock];
        for (std::int64_t ii = 0; ii < len; ++ii) {
          const std::int64_t i = blk + ii;
          const T* z = p.item_logits(b, i);
          const double* ci = p.item_costs(b, i);
          const double sd = p.direction_scale(b, i), so = p.output_scale(b, i);
          // The least and greatest direction among the options the item can take (dl, dh) and
          // among all its options (the references of the factors), and its greatest logit.
          double mx = -INFINITY, dl = INFINITY, dh = -INFINITY, da = INFINITY, db = -INFINITY, za = 0.0;
          bool ok = true, cost_ok = true;
          for (std::int64_t j = 0; j < k; ++j) {
            const double zj = static_cast<double>(z[j]);
            const double dj = sd * ci[j];
            ok &= (zj == zj) & (zj != INFINITY);
            cost_ok &= (ci[j] >= 0.0) & (ci[j] <= std::numeric_limits<double>::max());
            const bool live = zj != -INFINITY;
            dl = live && dj < dl ? dj : dl;
            dh = live && dj > dh ? dj : dh;
            da = dj < da ? dj : da;
            db = dj > db ? dj : db;
            mx = zj > mx ? zj : mx;
            za = live && std::fabs(zj) > za ? std::fabs(zj) : za;
          }
          const double weight = p.item_weight(b, i);
          if (!(weight >= 0.0 && weight <= std::numeric_limits<double>::max())) {
            s.bad_weight = i;
            return;
          }
          if (!cost_ok) {
            s.bad_cost = i;
            return;
          }
          if (!ok || !(dl <= dh)) {
            s.bad = i;
            return;
          }
          lo.add(so * dl);
          hi.add(so * dh);
          s.spread = std::max(s.spread, dh - dl);
          s.logit_abs = std::max(s.logit_abs, za);
          s.direction_abs = std::max(s.direction_abs, std::max(std::fabs(da), std::fabs(db)));
          m[ii] = mx * inv_tau;
          ws.scale[i] = so;
          if (shared) {
            ws.d_min[i] = c_min;
          } else {
            ws.d_min[i] = da;
            ws.d_range[i] = db - da;
            double* dblk = ws.d.data() + blk * k;
            for (std::int64_t j = 0; j < k; ++j) dblk[j * kBlock + ii] = sd * ci[j] - da;
          }
        }
        for (std::int64_t ii = len; ii < kBlock; ++ii) {  // padding of the last block: weight 0
          ws.scale[blk + ii] = 0.0;
          ws.d_min[blk + ii] = 0.0;
          if (!shared) {
            ws.d_range[blk + ii] = 0.0;
            for (std::int64_t j = 0; j < k; ++j) ws.d[blk * k + j * kBlock + ii] = 0.0;
          }
        }
        const T* zb = p.item_logits(b, blk);
        double* a = ws.a.data() + blk * k;
        for (std::int64_t j = 0; j < k; ++j) {
          double* aj = a + j * kBlock;
          for (std::int64_t ii = 0; ii < len; ++ii) aj[ii] = static_cast<double>(zb[ii * k + j]) * inv_tau - m[ii];
          for (std::int64_t ii = len; ii < kBlock; ++ii) aj[ii] = -INFINITY;
        }
        exp_in_place(a, k * kBlock);
      }
      s.lo = lo.value();
      s.hi = hi.value();
      moments(s, 0.0, i0, i1);
    });
  };

  prepare();
  CompensatedSum lo_sum, hi_sum;
  double spread = 0.0, logit_abs = 0.0, direction_abs = 0.0;
  for (const ChunkSums& s : ws.sums) {
    if (s.bad_weight >= 0) {
      throw std::invalid_argument("weights: instance " + std::to_string(b) + ", item " + std::to_string(s.bad_weight) +
                                  " is NaN, infinite or negative; weights must be finite and >= 0");
    }
    if (s.bad_cost >= 0) {
      throw std::invalid_argument("costs: instance " + std::to_string(b) + ", item " + std::to_string(s.bad_cost) +
                                  " has a cost that is NaN, infinite or negative; costs must be finite and >= 0");
    }
    if (s.bad >= 0) {
      throw std::invalid_argument("logits: instance " + std::to_string(b) + ", item " + std::to_string(s.bad) +
                                  " holds NaN or +inf, or no finite logit; logits must be finite "
                                  "(-inf marks an option that is never taken)");
    }
    lo_sum.add(s.lo);
    hi_sum.add(s.hi);
    spread = std::max(spread, s.spread);
    logit_abs = std::max(logit_abs, s.logit_abs);
    direction_abs = std::max(direction_abs, s.direction_abs);
  }
  reduce();
  const double f0 = f;  // E(0) - C: reported when the logits cannot be written
  const double e_min = lo_sum.value(), e_max = hi_sum.value();
  // The tolerance's scale where the budget is near 0 (no absolute term: costs of 1e-310 met
  // any rtol at once against a floor of 1e-300).
  const double floor = 1e-6 * std::max(std::fabs(e_min), std::fabs(e_max));

  // E at shift t.
  auto evaluate = [&](double t) {
    if (shared) {
      const double ref = t >= 0.0 ? c_min : c_max;
      for (std::int64_t j = 0; j < k; ++j) e[j] = std::exp(-t * inv_tau * (c_row[j] - ref));
    }
    over_chunks(chunks, n, kBlock, threads, [&](std::int64_t c, std::int64_t i0, std::int64_t i1) {
      moments(ws.sums[c], t, i0, i1);
    });
    reduce();
  };

  double t = 0.0;
  std::int32_t iterations = 1;
  std::int8_t status = kRetractConverged;
  const double tol_slack = p.rtol * std::max(std::fabs(budget), floor);
  if (!(budget >= e_min - tol_slack && budget <= e_max + tol_slack)) {
    status = kRetractInfeasible;
    f = (budget < e_min ? e_min : e_max) - budget;
  } else if (e_max - e_min <= 0.0) {
    f = e_min - budget;  // E is constant; within the tolerance by the test above
  } else {
    ShiftSearch search(1.0 / (inv_tau * spread));
    while (!shift_converged(f, budget, p.rtol, floor)) {
      if (search.collapsed()) {
        status = kRetractPrecision;
        break;
      }
      if (iterations >= p.max_iter) {
        status = kRetractMaxIter;
        break;
      }
      t = search.next(t, f, df, d2f);
      evaluate(t);
      ++iterations;
    }
    if (t != 0.0) {
      // The shifted logits must fit T: written as inf they would leave the manifold (E NaN).
      // Checked for the whole instance before any write, so that it is left unchanged then.
      // |z - t d| <= max|z| + |t| max|d| (with a margin for rounding) settles it for the whole
      // instance without a pass over the logits, unless the logits come near the type's range.
      const double largest = static_cast<double>(std::numeric_limits<T>::max());
      std::vector<char> overflow(static_cast<std::size_t>(chunks), 0);
      const bool surely_fits = (logit_abs + std::fabs(t) * direction_abs) * (1.0 + 1e-12) <= largest * (1.0 - 1e-12);
      if (!surely_fits) {
        over_chunks(chunks, n, kBlock, threads, [&](std::int64_t c, std::int64_t i0, std::int64_t i1) {
          bool bad = false;
          for (std::int64_t i = i0; i < i1; ++i) {
            const T* z = p.item_logits(b, i);
            const double* ci = p.item_costs(b, i);
            const double ts = t * p.direction_scale(b, i);
            for (std::int64_t j = 0; j < k; ++j) {
              const double zj = static_cast<double>(z[j]);
              bad |= zj != -INFINITY && !(std::fabs(zj - ts * ci[j]) <= largest);
            }
          }
          overflow[c] = bad;
        });
      }
      if (std::find(overflow.begin(), overflow.end(), 1) != overflow.end()) {
        status = kRetractOverflow;
        t = 0.0;
        f = f0;
      } else {
        // Rounding the logits to their type moves E: float32 by about 1e-8 relative and more,
        // float64 where the logits are large (a common offset of 1e12 moved E by 1e-5
        // relative). E of the logits as written is summed in the same pass, and reported, as
        // "rounded" where it misses rtol: always for a type narrower than double, and for
        // double where the write's rounding could (each logit moves by at most half an ulp of
        // max |z - t d|, delta, so each p_ij by a factor within exp(+-2 delta / tau), and E by
        // at most (e_max - e_min) expm1(2 delta / tau)).
        const double delta = 0x1p-53 * (logit_abs + std::fabs(t) * direction_abs) * (1.0 + 1e-12);
        const double write_error = (e_max - e_min) * std::expm1(2.0 * delta * inv_tau) * (1.0 + 1e-12);
        const bool measure = sizeof(T) < sizeof(double) || !shift_converged(std::fabs(f) + write_error, budget, p.rtol, floor);
        over_chunks(chunks, n, kBlock, threads, [&](std::int64_t c, std::int64_t i0, std::int64_t i1) {
          std::vector<double> x(measure ? static_cast<std::size_t>(k * kBlock) : 0);
          double es = 0.0;
          for (std::int64_t blk = i0; blk < i1; blk += kBlock) {
            const std::int64_t len = std::min(kBlock, i1 - blk);
            double m[kBlock];
            for (std::int64_t ii = 0; ii < len; ++ii) {
              T* z = p.item_logits(b, blk + ii);
              const double* ci = p.item_costs(b, blk + ii);
              const double ts = t * p.direction_scale(b, blk + ii);
              double mx = -INFINITY;
              for (std::int64_t j = 0; j < k; ++j) {
                z[j] = static_cast<T>(static_cast<double>(z[j]) - ts * ci[j]);
                if (measure) {
                  const double zj = static_cast<double>(z[j]) * inv_tau;
                  x[j * kBlock + ii] = zj;
                  mx = zj > mx ? zj : mx;
                }
              }
              m[ii] = mx;
            }
            if (!measure) continue;
            for (std::int64_t j = 0; j < k; ++j) {
              for (std::int64_t ii = 0; ii < len; ++ii) x[j * kBlock + ii] -= m[ii];
              for (std::int64_t ii = len; ii < kBlock; ++ii) x[j * kBlock + ii] = -INFINITY;
            }
            exp_in_place(x.data(), k * kBlock);
            for (std::int64_t ii = 0; ii < len; ++ii) {
              const double* ci = p.item_costs(b, blk + ii);
              const double s = p.item_weight(b, blk + ii);
              double s0 = 0.0, s1 = 0.0;
              for (std::int64_t j = 0; j < k; ++j) {
                s0 += x[j * kBlock + ii];
                s1 += x[j * kBlock + ii] * (s * ci[j]);
              }
              es += s1 / s0;
            }
          }
          ws.sums[c].e = es;
        });
        if (measure) {
          reduce();
          if (status == kRetractConverged && !shift_converged(f, budget, p.rtol, floor)) status = kRetractRounded;
        }
      }
    }
  }
  out.shift[b] = t;
  out.expected[b] = f + budget;
  out.iterations[b] = iterations;
  out.status[b] = status;
}

}  // namespace

template <class T>
void retract_batch(const RetractionView<T>& p, const RetractionOutput& out, int threads) {
  run_batch<RetractionWorkspace>(p.b, threads, [&](std::int64_t b, RetractionWorkspace& ws, int inner) {
    retract_instance(p, b, ws, inner, out);
  });
}

template void retract_batch<float>(const RetractionView<float>&, const RetractionOutput&, int);
template void retract_batch<double>(const RetractionView<double>&, const RetractionOutput&, int);

}  // namespace apportion
