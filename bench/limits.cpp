// Yardsticks for bench/bench_limits.py: what this machine does at best, as plain loops.
//
// The bench compiles this file at run time with the system C++ compiler, -O3 -march=native
// -ffp-contract=off (a yardstick may use every instruction of the CPU it runs on; no fused
// multiply-add so that the online loop rounds as the package does and makes the same
// decisions), and calls it through ctypes. Nothing here is part of the package.
//
//   read_words         the read limit: sums the 64-bit words of a buffer (one thread)
//   read_words_threads the same over `threads` threads, one contiguous part each
//   dp_loop            the dense DP's recurrence f_i(c) = max_k f_{i-1}(c - w_ik) + v_ik over
//                      c = 0..budget, with one-byte back-pointers and the back-tracking
//   online_loop        one stream of dual mirror descent for one resource with skipping
//                      allowed: the decisions of apportion.simulate_online, nothing more
#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

namespace {

std::uint64_t sum_words(const unsigned char* p, std::int64_t bytes) {
  const std::int64_t words = bytes / 8;
  std::uint64_t s = 0;
  // Integer adds are associative: the compiler vectorises this without -ffast-math.
  for (std::int64_t i = 0; i < words; ++i) {
    std::uint64_t w;
    std::memcpy(&w, p + 8 * i, 8);
    s += w;
  }
  for (std::int64_t i = words * 8; i < bytes; ++i) s += p[i];
  return s;
}

}  // namespace

extern "C" {

// `reps` reads of the buffer (a barrier between them keeps each one), so that a caller times
// many reads in one call; returns the last sum.
std::uint64_t read_words(const void* data, std::int64_t bytes, std::int64_t reps) {
  std::uint64_t s = 0;
  for (std::int64_t r = 0; r < reps; ++r) {
    asm volatile("" : : "r"(data) : "memory");
    s = sum_words(static_cast<const unsigned char*>(data), bytes);
  }
  return s;
}

std::uint64_t read_words_threads(const void* data, std::int64_t bytes, int threads) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::vector<std::uint64_t> part(threads, 0);
  std::vector<std::thread> pool;
  const std::int64_t chunk = (bytes / threads + 63) / 64 * 64;
  for (int t = 1; t < threads; ++t) {
    pool.emplace_back([&, t] {
      const std::int64_t lo = std::min(bytes, t * chunk), hi = std::min(bytes, lo + chunk);
      part[t] = sum_words(p + lo, hi - lo);
    });
  }
  part[0] = sum_words(p, std::min(bytes, chunk));
  for (auto& th : pool) th.join();
  std::uint64_t s = 0;
  for (std::uint64_t x : part) s += x;
  return s;
}

// values (n,k), costs (n,k) integers >= 0 (as int64), budget >= 0. Writes the optimum's
// option per item to choice (n) and returns its value; -inf when no allocation fits.
// As the package's DP, an option that another of the item's options dominates (no dearer and
// worth at least as much; of equal ones the first) never enters the loop: it cannot win a cell.
double dp_loop(const double* values, const std::int64_t* costs, std::int64_t n, std::int64_t k,
               std::int64_t budget, std::int64_t* choice) {
  const std::int64_t grid = budget + 1;
  std::vector<double> best(grid, 0.0), next(grid);
  std::vector<std::uint8_t> back(static_cast<std::size_t>(n * grid));
  for (std::int64_t i = 0; i < n; ++i) {
    const double* v = values + i * k;
    const std::int64_t* w = costs + i * k;
    std::uint8_t* b = back.data() + i * grid;
    bool first = true;
    for (std::int64_t j = 0; j < k; ++j) {
      bool dominated = false;
      for (std::int64_t a = 0; a < k && !dominated; ++a) {
        dominated = a != j && w[a] <= w[j] && v[a] >= v[j] &&
                    (w[a] < w[j] || v[a] > v[j] || a < j);
      }
      if (dominated) continue;
      const std::int64_t r = std::min(w[j], grid);
      const double vj = v[j];
      const std::uint8_t tag = static_cast<std::uint8_t>(j);
      if (first) {  // the first option kept sets the row (cells below its cost: unreachable)
        for (std::int64_t c = 0; c < r; ++c) {
          next[c] = -INFINITY;
          b[c] = 0;
        }
        for (std::int64_t c = r; c < grid; ++c) {
          next[c] = best[c - r] + vj;
          b[c] = tag;
        }
        first = false;
        continue;
      }
      for (std::int64_t c = r; c < grid; ++c) {
        const double cand = best[c - r] + vj;
        const bool better = cand > next[c];
        next[c] = better ? cand : next[c];
        b[c] = better ? tag : b[c];
      }
    }
    best.swap(next);
  }
  std::int64_t c = grid - 1;
  const double value = best[c];
  if (value == -INFINITY) return value;
  for (std::int64_t i = n - 1; i >= 0; --i) {
    const std::int64_t j = back[i * grid + c];
    choice[i] = j;
    c -= costs[i * k + j];
  }
  return value;
}

// One stream of t requests, values (t,k), costs of request i at costs + i * cost_stride (k),
// one resource, budget > 0 finite, horizon T, step eta, mirror 0 (euclidean) or 1 (entropy),
// skipping allowed. Writes the played options (-1: skip) to choice (t), the spent budget and
// the final price to out[0], out[1]; returns the value collected.
double online_loop(const double* values, const double* costs, std::int64_t cost_stride,
                   std::int64_t t, std::int64_t k, double budget, std::int64_t horizon, double eta,
                   int mirror, std::int64_t* choice, double* out) {
  const double inv_rho = static_cast<double>(horizon) / budget;
  double m = mirror == 1 ? 1.0 : 0.0, mu = m * inv_rho;
  double spent = 0.0, carry = 0.0, value = 0.0;
  for (std::int64_t i = 0; i < t; ++i) {
    const double* v = values + i * k;
    const double* w = costs + i * cost_stride;
    // The remaining budget rounded down, so that w <= rem exactly when spent + w <= budget.
    double hl, ml, xl;
    double h = budget - spent, bb = h - budget;
    hl = (budget - (h - bb)) + (-spent - bb);
    double mm = hl - carry;
    bb = mm - hl;
    ml = (hl - (mm - bb)) + (-carry - bb);
    double rem = h + mm;
    bb = rem - h;
    xl = (h - (rem - bb)) + (mm - bb);
    if (xl + ml < 0.0) rem = std::nextafter(rem, -HUGE_VAL);
    if (!(rem > 0.0)) rem = 0.0;
    // The proposal: the best priced option, the null action (0) competing.
    double best = 0.0;
    std::int64_t proposed = -1;
    for (std::int64_t j = 0; j < k; ++j) {
      const double priced = v[j] - mu * w[j];
      if (priced > best) {
        best = priced;
        proposed = j;
      }
    }
    std::int64_t played = -1;
    double g = 1.0;
    if (proposed >= 0) {
      const double wp = w[proposed];
      if (wp <= rem) {
        played = proposed;
        const double s = spent + wp, part = s - spent;
        carry += (spent - (s - part)) + (wp - part);
        spent = s;
        value += v[proposed];
      }
      g = 1.0 - wp * inv_rho;
    }
    if (mirror == 0) {
      m -= eta * g;
      if (!(m > 0.0)) m = 0.0;
    } else {
      m *= std::exp(-eta * g);
      if (!(m > 1e-30)) m = 1e-30;
    }
    if (m > 1e30) m = 1e30;
    mu = m * inv_rho;
    choice[i] = played;
  }
  out[0] = spent + carry;
  out[1] = mu;
  return value;
}

}  // extern "C"
