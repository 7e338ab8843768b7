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

#include "solvers.hpp"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

namespace apportion {

namespace {

// Instances with at least this many logits split their items over kChunks chunks.
constexpr std::int64_t kParallelLogits = 1 << 15;
constexpr std::int64_t kChunks = 16;
// Items per block of the factorised layout: a[block][option][item in block], so that the
// evaluation loops run across items without dependency chains (and vectorise).
constexpr std::int64_t kBlock = 32;

// The two hot loops of the shared-cost path, compiled for the baseline and for AVX2/FMA
// (x86-64-v3) and chosen at load time where the toolchain supports it.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define APPORTION_SIMD_CLONES __attribute__((target_clones("default", "arch=x86-64-v3")))
#else
#define APPORTION_SIMD_CLONES
#endif

#if defined(__GNUC__) && defined(__x86_64__)
// exp_nonpositive, four lanes at a time (AVX2 + FMA); the same arithmetic as the scalar form.
__attribute__((target("avx2,fma"))) void exp_in_place_avx2(double* x, std::int64_t count) {
  const __m256d floor = _mm256_set1_pd(-708.0), magic = _mm256_set1_pd(6755399441055744.0);
  const __m256d log2e = _mm256_set1_pd(1.4426950408889634), ln2_hi = _mm256_set1_pd(0.6931471803691238),
                ln2_lo = _mm256_set1_pd(1.9082149292705877e-10);
  const double coef[13] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0, 1.0 / 40320.0,
                           1.0 / 5040.0,      1.0 / 720.0,       1.0 / 120.0,     1.0 / 24.0,     1.0 / 6.0,
                           0.5,               1.0,               1.0};
  const __m256i bias = _mm256_set1_epi64x(1023 - (std::int64_t(1) << 51));
  std::int64_t i = 0;
  for (; i + 4 <= count; i += 4) {
    __m256d v = _mm256_loadu_pd(x + i);
    const __m256d live = _mm256_cmp_pd(v, floor, _CMP_GT_OQ);
    v = _mm256_max_pd(v, floor);
    const __m256d shifted = _mm256_fmadd_pd(v, log2e, magic);
    const __m256d n = _mm256_sub_pd(shifted, magic);
    __m256d r = _mm256_fnmadd_pd(n, ln2_hi, v);
    r = _mm256_fnmadd_pd(n, ln2_lo, r);
    __m256d p = _mm256_set1_pd(coef[0]);
    for (int c = 1; c < 13; ++c) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(coef[c]));
    const __m256i bits = _mm256_slli_epi64(_mm256_add_epi64(_mm256_castpd_si256(shifted), bias), 52);
    p = _mm256_mul_pd(p, _mm256_castsi256_pd(bits));
    _mm256_storeu_pd(x + i, _mm256_and_pd(p, live));
  }
  for (; i < count; ++i) x[i] = exp_nonpositive(x[i]);
}

bool have_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#endif

// x[i] <- exp(x[i]) for exponents x <= 0.
void exp_in_place(double* x, std::int64_t count) {
#if defined(__GNUC__) && defined(__x86_64__)
  if (have_avx2()) {
    exp_in_place_avx2(x, count);
    return;
  }
#endif
  for (std::int64_t i = 0; i < count; ++i) x[i] = exp_nonpositive(x[i]);
}

// One block of the factorised layout: adds each item's expected cost (c_min + mean of d),
// variance and third central moment to el/vl/ml, and leaves s0 for the underflow test.
APPORTION_SIMD_CLONES void block_moments(const double* a, const double* e, const double* d, std::int64_t k,
                                         double c_min, double* el, double* vl, double* ml, double* s0) {
  double s1[kBlock], s2[kBlock], s3[kBlock];
  for (std::int64_t ii = 0; ii < kBlock; ++ii) s0[ii] = s1[ii] = s2[ii] = s3[ii] = 0.0;
  for (std::int64_t j = 0; j < k; ++j) {
    const double ej = e[j], dj = d[j], d2j = d[j] * d[j], d3j = d2j * d[j];
    const double* aj = a + j * kBlock;
    for (std::int64_t ii = 0; ii < kBlock; ++ii) {
      const double ae = aj[ii] * ej;
      s0[ii] += ae;
      s1[ii] += ae * dj;
      s2[ii] += ae * d2j;
      s3[ii] += ae * d3j;
    }
  }
  for (std::int64_t ii = 0; ii < kBlock; ++ii) {
    const bool ok = s0[ii] > kFactorUnderflow;
    const double inv = 1.0 / (ok ? s0[ii] : 1.0);
    const double mu = s1[ii] * inv, m2 = s2[ii] * inv, m3 = s3[ii] * inv;
    const double v = m2 - mu * mu;
    el[ii] += ok ? c_min + mu : 0.0;
    vl[ii] += ok && v > 0.0 ? v : 0.0;
    ml[ii] += ok ? m3 - 3.0 * mu * m2 + 2.0 * mu * mu * mu : 0.0;
  }
}

struct ChunkSums {
  double e = 0.0, v = 0.0, m3 = 0.0;        // sums of item means, variances, third moments at t
  double lo = 0.0, hi = 0.0;                // sums of the least / greatest option costs
  double spread = 0.0;                      // greatest per-item cost range
  std::int64_t bad = -1;                    // first item with invalid logits
};

struct RetractionWorkspace {
  std::vector<double> a;       // factorised exp(z/tau - m), blocks of (K, kBlock), shared-cost path
  std::vector<ChunkSums> sums; // per chunk
  std::size_t bytes() const { return a.capacity() * sizeof(double) + sums.capacity() * sizeof(ChunkSums); }
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
  const bool factor = p.shared_costs();
  const std::int64_t unit = factor ? kBlock : 1;
  // The chunking depends on the size alone, so that sums (and results) do not depend on threads.
  const std::int64_t chunks = n * k >= kParallelLogits ? std::min(kChunks, (n + unit - 1) / unit) : 1;
  ws.sums.assign(static_cast<std::size_t>(chunks), ChunkSums{});
  if (factor) ws.a.resize(static_cast<std::size_t>((n + kBlock - 1) / kBlock * kBlock * k));

  // Shared-cost path: the cost row, its offsets and the per-evaluation factors e_j.
  const double* c_row = p.item_costs(b, 0);
  double c_min = INFINITY, c_max = -INFINITY;
  for (std::int64_t j = 0; j < k; ++j) {
    c_min = std::min(c_min, c_row[j]);
    c_max = std::max(c_max, c_row[j]);
  }
  std::vector<double> e(static_cast<std::size_t>(k)), d(static_cast<std::size_t>(k));
  for (std::int64_t j = 0; j < k; ++j) d[j] = c_row[j] - c_min;

  // Moments over items [i0, i1) at shift t, added to the chunk's sums. In the shared-cost path
  // the factorised weights a must be current for those items.
  auto moments = [&](ChunkSums& cs, double t, std::int64_t i0, std::int64_t i1) {
    double es = 0.0, vs = 0.0, ms = 0.0;
    auto direct = [&](std::int64_t i) {
      const double s = p.item_weight(b, i);
      const double* ci = p.item_costs(b, i);
      const ItemMoments m = item_moments(p.item_logits(b, i), ci, s, k, inv_tau, t, s * ci[0]);
      es += m.mean;
      vs += m.var;
      ms += m.skew;
    };
    if (!factor) {
      for (std::int64_t i = i0; i < i1; ++i) direct(i);
    } else {
      double el[kBlock], vl[kBlock], ml[kBlock];
      for (std::int64_t ii = 0; ii < kBlock; ++ii) el[ii] = vl[ii] = ml[ii] = 0.0;
      for (std::int64_t blk = i0; blk < i1; blk += kBlock) {
        double s0[kBlock];
        block_moments(ws.a.data() + blk * k, e.data(), d.data(), k, c_min, el, vl, ml, s0);
        bool fallback = false;
        for (std::int64_t ii = 0; ii < kBlock; ++ii) fallback |= !(s0[ii] > kFactorUnderflow);
        if (fallback) {  // items near underflow (and the padding of the last block)
          const std::int64_t len = std::min(kBlock, i1 - blk);
          for (std::int64_t ii = 0; ii < len; ++ii) {
            if (!(s0[ii] > kFactorUnderflow)) direct(blk + ii);
          }
        }
      }
      for (std::int64_t ii = 0; ii < kBlock; ++ii) {
        es += el[ii];
        vs += vl[ii];
        ms += ml[ii];
      }
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

  // Pass 1: validation, the range of E, (shared costs) the factorised weights, and the moments
  // at t = 0, block by block while the logits are in cache.
  for (std::int64_t j = 0; j < k; ++j) e[j] = 1.0;
  over_chunks(chunks, n, unit, threads, [&](std::int64_t c, std::int64_t i0, std::int64_t i1) {
    ChunkSums& s = ws.sums[c];
    CompensatedSum lo, hi;
    const std::int64_t step = factor ? kBlock : i1 - i0;
    for (std::int64_t blk = i0; blk < i1; blk += step) {
      const std::int64_t len = std::min(step, i1 - blk);
      if (!factor) {
        for (std::int64_t i = blk; i < blk + len; ++i) {
          double wl, wh;
          if (!item_cost_range(p.item_logits(b, i), p.item_costs(b, i), p.item_weight(b, i), k, wl, wh)) {
            s.bad = i;
            return;
          }
          lo.add(wl);
          hi.add(wh);
          s.spread = std::max(s.spread, wh - wl);
        }
        continue;
      }
      // Shared costs: the cost range and the greatest logit of each item in one sweep.
      double m[kBlock];
      const T* zb = p.item_logits(b, blk);
      for (std::int64_t ii = 0; ii < len; ++ii) {
        const T* z = zb + ii * k;
        double mx = -INFINITY, wl = INFINITY, wh = -INFINITY;
        bool ok = true;
        for (std::int64_t j = 0; j < k; ++j) {
          const double zj = static_cast<double>(z[j]);
          ok &= (zj == zj) & (zj != INFINITY);
          const bool live = zj != -INFINITY;
          wl = live && c_row[j] < wl ? c_row[j] : wl;
          wh = live && c_row[j] > wh ? c_row[j] : wh;
          mx = zj > mx ? zj : mx;
        }
        if (!ok || !(wl <= wh)) {
          s.bad = blk + ii;
          return;
        }
        lo.add(wl);
        hi.add(wh);
        s.spread = std::max(s.spread, wh - wl);
        m[ii] = mx * inv_tau;
      }
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
  CompensatedSum lo_sum, hi_sum;
  double spread = 0.0;
  for (const ChunkSums& s : ws.sums) {
    if (s.bad >= 0) {
      throw std::invalid_argument("logits: instance " + std::to_string(b) + ", item " + std::to_string(s.bad) +
                                  " holds NaN or +inf, or no finite logit; logits must be finite "
                                  "(-inf marks an option that is never taken)");
    }
    lo_sum.add(s.lo);
    hi_sum.add(s.hi);
    spread = std::max(spread, s.spread);
  }
  reduce();
  const double f0 = f;  // E(0) - C: reported when the logits cannot be written
  const double e_min = lo_sum.value(), e_max = hi_sum.value();
  const double floor = 1e-6 * std::max(std::fabs(e_min), std::fabs(e_max)) + 1e-300;

  // E at shift t.
  auto evaluate = [&](double t) {
    if (factor) {
      const double ref = t >= 0.0 ? c_min : c_max;
      for (std::int64_t j = 0; j < k; ++j) e[j] = std::exp(-t * inv_tau * (c_row[j] - ref));
    }
    over_chunks(chunks, n, unit, threads, [&](std::int64_t c, std::int64_t i0, std::int64_t i1) {
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
      const double largest = static_cast<double>(std::numeric_limits<T>::max());
      std::vector<char> overflow(static_cast<std::size_t>(chunks), 0);
      over_chunks(chunks, n, unit, threads, [&](std::int64_t c, std::int64_t i0, std::int64_t i1) {
        bool bad = false;
        for (std::int64_t i = i0; i < i1; ++i) {
          const T* z = p.item_logits(b, i);
          const double* ci = p.item_costs(b, i);
          const double ts = t * p.item_weight(b, i);
          for (std::int64_t j = 0; j < k; ++j) {
            const double zj = static_cast<double>(z[j]);
            bad |= zj != -INFINITY && !(std::fabs(zj - ts * ci[j]) <= largest);
          }
        }
        overflow[c] = bad;
      });
      if (std::find(overflow.begin(), overflow.end(), 1) != overflow.end()) {
        status = kRetractOverflow;
        t = 0.0;
        f = f0;
      } else {
        over_chunks(chunks, n, unit, threads, [&](std::int64_t, std::int64_t i0, std::int64_t i1) {
          for (std::int64_t i = i0; i < i1; ++i) {
            T* z = p.item_logits(b, i);
            const double* ci = p.item_costs(b, i);
            const double ts = t * p.item_weight(b, i);
            for (std::int64_t j = 0; j < k; ++j) z[j] = static_cast<T>(static_cast<double>(z[j]) - ts * ci[j]);
          }
        });
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
