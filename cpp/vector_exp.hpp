// exp of non-positive exponents, scalar (shared with CUDA) and over arrays (vectorised on the
// CPU), for the softmax sums of the retraction and the budget normal (cpp/retraction.cpp,
// cpp/tangent.cpp).
#pragma once

#include <cstdint>
#include <cstring>

#include "problem.hpp"

namespace apportion {

// exp(x) for x <= 0 by range reduction and a degree-12 Taylor polynomial (relative error
// below 1e-15; 0 below -708), written without branches or calls so that a compiler can
// vectorise loops over it.
APPORTION_HD inline double exp_nonpositive(double x) {
  // live: all ones, or 0 for x <= -708, NaN and -inf, whose lanes compute exp(0) and return 0.
  // Integer masks rather than a clamp or a factor 0.0: GCC turns those into branches (it will
  // not speculate floating point under -ftrapping-math), which stops the vectorisation of
  // loops over this function.
  const std::uint64_t live = std::uint64_t(0) - std::uint64_t(x > -708.0);
  std::uint64_t x_bits;
  memcpy(&x_bits, &x, sizeof x_bits);
  x_bits &= live;
  memcpy(&x, &x_bits, sizeof x);
  const double magic = 6755399441055744.0;    // 1.5 * 2^52: adding it rounds to an integer
  const double shifted = x * 1.4426950408889634 + magic;
  const double n = shifted - magic;
  const double r = (x - n * 0.6931471803691238) - n * 1.9082149292705877e-10;
  double p = 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  std::uint64_t bits;
  memcpy(&bits, &shifted, sizeof bits);
  bits = ((bits + 1023 - (std::uint64_t(1) << 51)) << 52) & live;  // 2^n, or 0
  double scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// x[i] <- exp(x[i]) for exponents x <= 0 (or -inf), as exp_nonpositive, vectorised for the
// CPU it runs on (the clones of cpp/cpu_dispatch.hpp, no -march flag needed).
void exp_in_place(double* x, std::int64_t count);

}  // namespace apportion
