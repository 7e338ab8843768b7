// CPU launcher of the budget normal and the tangent projection (cpp/tangent.hpp): instances
// across threads (run_batch), the items of an instance in blocks of kBlock, option-major
// inside a block so that the exp and the sums run across items.
#include "tangent.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "solvers.hpp"
#include "vector_exp.hpp"

namespace apportion {

namespace {

constexpr std::int64_t kBlock = 32;

struct TangentWorkspace {
  std::vector<double> normal;  // one instance's normal, (N,K), for the projection
  std::vector<double> x, w;    // one block, [option][item]
  std::size_t bytes() const { return (normal.capacity() + x.capacity() + w.capacity()) * sizeof(double); }
};

// Calls emit(i, j, n_ij) for every logit of instance b, item by item. Throws
// std::invalid_argument for a cost or weight that is NaN, infinite or negative, and for an item
// whose logits hold NaN or +inf or no finite one (the Python layer leaves these checks to this
// pass).
template <class T, class Emit>
void instance_normal(const RetractionView<T>& p, std::int64_t b, TangentWorkspace& ws, Emit&& emit) {
  const std::int64_t n = p.n, k = p.k;
  const double inv_tau = p.inv_tau;
  ws.x.resize(static_cast<std::size_t>(k * kBlock));
  ws.w.resize(static_cast<std::size_t>(k * kBlock));
  double* x = ws.x.data();
  double* w = ws.w.data();
  for (std::int64_t blk = 0; blk < n; blk += kBlock) {
    const std::int64_t len = std::min(kBlock, n - blk);
    double m[kBlock], s0[kBlock], s1[kBlock];
    for (std::int64_t ii = 0; ii < len; ++ii) {
      const T* z = p.item_logits(b, blk + ii);
      const double* c = p.item_costs(b, blk + ii);
      const double s = p.item_weight(b, blk + ii);
      constexpr double kLargest = std::numeric_limits<double>::max();
      if (!(s >= 0.0 && s <= kLargest)) {
        throw std::invalid_argument("weights: instance " + std::to_string(b) + ", item " + std::to_string(blk + ii) +
                                    " is NaN, infinite or negative; weights must be finite and >= 0");
      }
      bool costs_ok = true, logits_ok = true;
      double mx = -INFINITY, least = INFINITY;
      for (std::int64_t j = 0; j < k; ++j) {
        costs_ok &= (c[j] >= 0.0) & (c[j] <= kLargest);
        logits_ok &= static_cast<double>(z[j]) < INFINITY;  // false for NaN and +inf
        const double zj = static_cast<double>(z[j]) * inv_tau;
        mx = zj > mx ? zj : mx;
        x[j * kBlock + ii] = zj;
        w[j * kBlock + ii] = s * c[j];
        least = std::min(least, s * c[j]);
      }
      // The costs less the item's least (w - wbar is the same): an item of constant cost then
      // has w = wbar = 0 exactly and a normal of exact zeros, where wbar's rounding left noise
      // of 1e-17 that the projection divided by itself (costs 0.1: 0.6 off the gradient).
      for (std::int64_t j = 0; j < k; ++j) w[j * kBlock + ii] -= least;
      if (!costs_ok) {
        throw std::invalid_argument("costs: instance " + std::to_string(b) + ", item " + std::to_string(blk + ii) +
                                    " has a cost that is NaN, infinite or negative; costs must be finite and >= 0");
      }
      // As retract refuses them: a NaN logit was read as an option never taken (the max skips
      // it, and the vector exp gives 0), and the normal came out finite.
      if (!logits_ok || !(mx > -INFINITY)) {
        throw std::invalid_argument("logits: instance " + std::to_string(b) + ", item " + std::to_string(blk + ii) +
                                    " holds NaN or +inf, or no finite logit; logits must be finite "
                                    "(-inf marks an option that is never taken)");
      }
      m[ii] = mx;
    }
    for (std::int64_t j = 0; j < k; ++j) {
      for (std::int64_t ii = 0; ii < len; ++ii) x[j * kBlock + ii] -= m[ii];
    }
    if (len < kBlock) {
      for (std::int64_t j = 0; j < k; ++j) {
        for (std::int64_t ii = len; ii < kBlock; ++ii) x[j * kBlock + ii] = -INFINITY;
      }
    }
    exp_in_place(x, k * kBlock);
    for (std::int64_t ii = 0; ii < kBlock; ++ii) s0[ii] = s1[ii] = 0.0;
    for (std::int64_t j = 0; j < k; ++j) {
      for (std::int64_t ii = 0; ii < kBlock; ++ii) {
        s0[ii] += x[j * kBlock + ii];
        s1[ii] += x[j * kBlock + ii] * w[j * kBlock + ii];
      }
    }
    for (std::int64_t ii = 0; ii < len; ++ii) {
      const double inv = 1.0 / s0[ii], wbar = s1[ii] * inv;
      for (std::int64_t j = 0; j < k; ++j) {
        emit(blk + ii, j, x[j * kBlock + ii] * inv * (w[j * kBlock + ii] - wbar) * inv_tau);
      }
    }
  }
}

}  // namespace

template <class T>
void budget_normal_batch(const RetractionView<T>& p, T* normal, int threads) {
  run_batch<TangentWorkspace>(p.b, threads, [&](std::int64_t b, TangentWorkspace& ws, int) {
    T* out = normal + b * p.n * p.k;
    instance_normal(p, b, ws, [&](std::int64_t i, std::int64_t j, double v) { out[i * p.k + j] = static_cast<T>(v); });
  });
}

template <class T, class G>
void project_tangent_batch(const RetractionView<T>& p, const G* grad, G* out, int threads) {
  run_batch<TangentWorkspace>(p.b, threads, [&](std::int64_t b, TangentWorkspace& ws, int) {
    const std::int64_t size = p.n * p.k;
    const G* g = grad + b * size;
    G* o = out + b * size;
    ws.normal.resize(static_cast<std::size_t>(size));
    double* nv = ws.normal.data();
    double gn = 0.0, nn = 0.0;
    instance_normal(p, b, ws, [&](std::int64_t i, std::int64_t j, double v) {
      nv[i * p.k + j] = v;
      gn += static_cast<double>(g[i * p.k + j]) * v;
      nn += v * v;
    });
    const double coef = nn > 0.0 ? gn / nn : 0.0;
    for (std::int64_t q = 0; q < size; ++q) o[q] = static_cast<G>(static_cast<double>(g[q]) - coef * nv[q]);
  });
}

template void budget_normal_batch<float>(const RetractionView<float>&, float*, int);
template void budget_normal_batch<double>(const RetractionView<double>&, double*, int);
template void project_tangent_batch<float, float>(const RetractionView<float>&, const float*, float*, int);
template void project_tangent_batch<float, double>(const RetractionView<float>&, const double*, double*, int);
template void project_tangent_batch<double, float>(const RetractionView<double>&, const float*, float*, int);
template void project_tangent_batch<double, double>(const RetractionView<double>&, const double*, double*, int);

}  // namespace apportion
