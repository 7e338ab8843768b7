// The first pass's option pick for float input, computed in float: 8 or 16 items per 256- or
// 512-bit vector instead of 4 or 8 doubles, and a test that proves, item by item, that the double pick (OptionPick
// in frontier.cpp: argmax of v - lambda w in double, ties to the lower index) chooses the same
// option at both slopes. Items it cannot prove go to the double pick, so every number the pass
// reports is the double path's.
//
// The proof. For option j with value v and cost w (floats, exact; 0 <= w), slope lambda >= 0
// rounded to float lf = fl(lambda) with dl = |lambda - lf|, the exact score s = v - lambda w
// and u = 2^-24:
//   float   S = fl(v - fl(lf w)):  |S - s| <= u |v| + u (2 + u) lf w + dl w + a,
//   double  D = fl(v - fl(lambda w)) (u' = 2^-53): |D - s| <= u' (|v| + 2.01 lambda w) + a',
// where a and a' are the absolute errors of a result in the subnormal range (float: 2^-150
// per operation; double: 2^-1075), all for rounding to nearest. The float score is computed
// fused, S = fl(v - lf w) rounded once (minus_product), whose error u |v - lf w| + dl w + a
// is within the first bound: the bounds and the test below hold for it unchanged. A thread
// whose CPU flushes subnormals (FTZ or DAZ), or rounds in a directed mode, does not take the
// float pick at all (FloatSlopes::proof_mode; the bindings' native calls set IEEE's default
// mode, IeeeFloatMode, so this guards callers of the C++ core alone). With V = max |v|,
// C = max w over the item's options and P = lf C, the two bounds added give, for every
// option, the float score's distance from the double one:
// |S - D| <= e = 1.01 u V + 2.01 u P + 1.01 dl C + 2^-125 (loosely). If the float best
// beats the float runner-up by G > 2e, then for every other option j,
// D_best - D_j >= G - |S_best - D_best| - |S_j - D_j| > 0: the double pick
// takes the same option, strictly (so ties to the lower index are never in question). The
// test is
//   fl(S_best - S_second) > T,  T = 2^-22 V + 2^-21 fl(hf C) + L C + 2^-122  (in float),
// with hf = fl(hi) >= lf at either slope and L >= 4 dl rounded up: T is at least 1.9 times 2e
// in each term, which also covers the rounding of T and of the gap itself (a few u relative,
// a subnormal result absolute). The test needs finite inputs, costs >= +0.0, and no
// overflow (V + fl(hf C) finite, so that no product or score is infinite); otherwise the item
// is unproven and the double pick, which also checks the input, takes it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "cpu_dispatch.hpp"

// GCC 12 on: __builtin_shufflevector (load_columns4) is new in GCC 12.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && !defined(__CUDACC__)
#define APPORTION_FLOAT_PICK 1
// These helpers are always inlined into their caller's level (no vector crosses a call), so
// the ABI note GCC makes for wide vectors passed without their instruction set does not apply.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace apportion {

// The two slopes of a pass in float, with a bound on their rounding (see the top of the file).
struct FloatSlopes {
  float lo = 0.0f, hi = 0.0f, sign = 1.0f;
  float lambda_error = 0.0f;  // >= 4 max(|lo - fl(lo)|, |hi - fl(hi)|)
  bool usable = false;        // false: the slopes or the value sign do not fit (the double pick runs)

  FloatSlopes(double lo_d, double hi_d, double sign_d) {
    lo = static_cast<float>(lo_d);
    hi = static_cast<float>(hi_d);
    sign = static_cast<float>(sign_d);
    usable = (sign_d == 1.0 || sign_d == -1.0) && lo_d >= 0.0 && lo_d <= hi_d && std::isfinite(hi);
    if (!usable) return;
    // lo_d - lo is exact in double (the bits of lo_d that float rounding dropped), and so is 4 x.
    const double err = 4.0 * std::max(std::fabs(lo_d - static_cast<double>(lo)), std::fabs(hi_d - static_cast<double>(hi)));
    lambda_error = static_cast<float>(err);
    if (static_cast<double>(lambda_error) < err) lambda_error = std::nextafter(lambda_error, INFINITY);
    usable = std::isfinite(lambda_error) && proof_mode();
  }

  // Whether this thread's SSE unit computes as the proof assumes (one read of its MXCSR):
  // - it rounds to nearest (rounding control 0): the proof's u = 2^-24 is half an ulp, and a
  //   directed mode (fesetround) errs by up to a whole ulp, past what the test's tolerance
  //   covers;
  // - it neither flushes subnormal results (FTZ) nor reads subnormal operands as zero (DAZ), as
  //   after torch.set_flush_denormal(True) or in code built with -ffast-math: a subnormal slope,
  //   error bound or product would read as 0, which the proof does not cover (a shadow price of
  //   3e-40 gave other choices than the double pick).
  // Other threads use the double pick, whose numbers stay normal there.
  static bool proof_mode() {
#if defined(__x86_64__) || defined(__i386__)
    return (__builtin_ia32_stmxcsr() & 0xE040u) == 0;  // FTZ (bit 15), RC (bits 13-14), DAZ (bit 6)
#else
    return false;  // not measured off x86: keep to the double pick
#endif
  }
};

// L lanes of floats and of int32: 8 (256 bits, x86-64-v3) or 16 (512 bits, x86-64-v4).
template <int L>
struct FloatVec;
template <>
struct FloatVec<8> {
  using F = float __attribute__((vector_size(32)));
  using I = std::int32_t __attribute__((vector_size(32)));
};
template <>
struct FloatVec<16> {
  using F = float __attribute__((vector_size(64)));
  using I = std::int32_t __attribute__((vector_size(64)));
};

// 4 floats read from any float address (a may_alias vector load: a memcpy into a vector
// was copied through the stack).
using FloatQuad = float __attribute__((vector_size(16), aligned(4), may_alias));

// Entries j0..j0+4 of the L rows base + item[l] * stride (l < L) as 4 columns, one per entry:
// c[m] = (row 0's entry j0 + m, ..., row L-1's). Rows l, l + 4, ... share a register (one
// 128-bit lane each), so a 4 x 4 transpose inside each lane makes the columns: 8 shuffles for 4
// columns, and only 4 columns live at a time. (A full 8 x 8 transpose took 24 shuffles for 8
// columns, and the 16 columns of values and costs did not fit the 16 vector registers beside
// the pick's own: they were spilled to the stack and reloaded.)
template <int L>
APPORTION_INLINE void load_columns4(const float* base, const std::int64_t* item, std::int64_t stride, std::int64_t j0,
                                    typename FloatVec<L>::F* c) {
  using F = typename FloatVec<L>::F;
  using I = typename FloatVec<L>::I;
  F r[4];
  for (int l = 0; l < 4; ++l) {
    auto quad = [&](int g) APPORTION_INLINE_LAMBDA {
      return *reinterpret_cast<const FloatQuad*>(base + item[l + 4 * g] * stride + j0);
    };
    if constexpr (L == 8) {
      r[l] = __builtin_shufflevector(quad(0), quad(1), 0, 1, 2, 3, 4, 5, 6, 7);  // one vinsertf128
    } else {
      // At L = 16 (x86-64-v4 only): a broadcast load and three inserts from memory. Joined as
      // vectors, GCC loaded each quad, then joined them by three vshuff32x4 and two register
      // copies, all but the loads on the one port that shuffles 512-bit vectors (routing
      // 1e5 x 8 float32: 0.95-0.97 ms, 0.93-0.95 with the inserts).
      F row = __builtin_ia32_broadcastf32x4_512(quad(0), F{}, static_cast<unsigned short>(-1));
      row = __builtin_ia32_insertf32x4_mask(row, quad(1), 1, row, static_cast<unsigned short>(-1));
      row = __builtin_ia32_insertf32x4_mask(row, quad(2), 2, row, static_cast<unsigned short>(-1));
      r[l] = __builtin_ia32_insertf32x4_mask(row, quad(3), 3, row, static_cast<unsigned short>(-1));
    }
  }
  // Within each 128-bit lane: unpacklo, unpackhi, then shufps 0x44 and 0xee.
  if constexpr (L == 8) {
    const F t0 = __builtin_shuffle(r[0], r[1], I{0, 8, 1, 9, 4, 12, 5, 13});
    const F t1 = __builtin_shuffle(r[0], r[1], I{2, 10, 3, 11, 6, 14, 7, 15});
    const F t2 = __builtin_shuffle(r[2], r[3], I{0, 8, 1, 9, 4, 12, 5, 13});
    const F t3 = __builtin_shuffle(r[2], r[3], I{2, 10, 3, 11, 6, 14, 7, 15});
    c[0] = __builtin_shuffle(t0, t2, I{0, 1, 8, 9, 4, 5, 12, 13});
    c[1] = __builtin_shuffle(t0, t2, I{2, 3, 10, 11, 6, 7, 14, 15});
    c[2] = __builtin_shuffle(t1, t3, I{0, 1, 8, 9, 4, 5, 12, 13});
    c[3] = __builtin_shuffle(t1, t3, I{2, 3, 10, 11, 6, 7, 14, 15});
  } else {
    const I unpack_lo{0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29};
    const I unpack_hi{2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27, 14, 30, 15, 31};
    const I pairs_lo{0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29};
    const I pairs_hi{2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31};
    const F t0 = __builtin_shuffle(r[0], r[1], unpack_lo), t1 = __builtin_shuffle(r[0], r[1], unpack_hi);
    const F t2 = __builtin_shuffle(r[2], r[3], unpack_lo), t3 = __builtin_shuffle(r[2], r[3], unpack_hi);
    c[0] = __builtin_shuffle(t0, t2, pairs_lo);
    c[1] = __builtin_shuffle(t0, t2, pairs_hi);
    c[2] = __builtin_shuffle(t1, t3, pairs_lo);
    c[3] = __builtin_shuffle(t1, t3, pairs_hi);
  }
}

// v - s w rounded once (a fused multiply-add: x86-64-v3 and v4 both have FMA), one instruction
// where a product and a difference took two (routing 1e6 x 8 float32: 7.70-7.74 ms, 7.53-7.60
// fused). The proof's bound on a score's error covers it (see the top of the file).
template <int L>
APPORTION_INLINE typename FloatVec<L>::F minus_product(typename FloatVec<L>::F v, typename FloatVec<L>::F s,
                                                       typename FloatVec<L>::F w) {
  if constexpr (L == 8) {
    return __builtin_ia32_vfnmaddps256(s, w, v);  // -(s w) + v
  } else {
    return __builtin_ia32_vfnmaddps512_mask(s, w, v, static_cast<unsigned short>(-1), 4 /* _MM_FROUND_CUR_DIRECTION */);
  }
}

// The float pick of L items: their options at both slopes, their cheapest costs, and whether
// they are proven (sure: every item's options are the double pick's).
template <int L>
struct FloatBlockPicks {
  typename FloatVec<L>::I option_lo, option_hi;
  typename FloatVec<L>::F cheapest;
  // Where an item's options at both slopes are the same: that option's cost and value (times
  // the sign); +0.0 where they differ. At L = 16 only: at L = 8 they are +0.0, and the caller
  // reads them from the rows (the first pass's fix loop, frontier.cpp).
  typename FloatVec<L>::F fixed_cost, fixed_value;
  bool sure;  // every lane proven
  // Each half of the lanes proven: at L = 16, only a half with an unproven lane is picked again
  // in double, so that an unproven item costs the double pick of 8 items, as at x86-64-v3, not
  // 16; at L = 8, both are `sure`.
  bool half_sure[2];
};

// Whether every lane of an 8-lane mask is set (halves folded together: not a lane at a time).
APPORTION_INLINE bool all_lanes(FloatVec<8>::I m) {
  using I = FloatVec<8>::I;
  m &= __builtin_shuffle(m, I{4, 5, 6, 7, 0, 1, 2, 3});
  m &= __builtin_shuffle(m, I{2, 3, 0, 1, 2, 3, 0, 1});
  m &= __builtin_shuffle(m, I{1, 0, 1, 0, 1, 0, 1, 0});
  return m[0] == -1;
}

// Every lane of each 8-lane half ORed together (into lanes 0 and 8), by shuffles.
APPORTION_INLINE FloatVec<16>::I or_of_halves(FloatVec<16>::I x) {
  using I = FloatVec<16>::I;
  x |= __builtin_shuffle(x, I{4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11});
  x |= __builtin_shuffle(x, I{2, 3, 0, 1, 2, 3, 0, 1, 10, 11, 8, 9, 10, 11, 8, 9});
  x |= __builtin_shuffle(x, I{1, 0, 1, 0, 1, 0, 1, 0, 9, 8, 9, 8, 9, 8, 9, 8});
  return x;
}

// Items item[0..L) of unmasked rows of row_k entries (values, and costs unless kShared: one
// row for all items), each row readable for K rounded up to 4 entries. kK: K when known at
// compile time (then the rows' offsets are constants), 0 otherwise; kNegate: s.sign == -1 (both
// known, so that the loop over the options has no branch and no multiply for the sign).
//
// L = 16 is for x86-64-v4 only, and every comparison there feeds a select: GCC 12 makes a
// comparison whose lanes are used as integers (a mask turned into a vector) lane by lane with
// AVX-512, which made a routing 1e6 x 8 solve take 53 ms instead of 11. L = 8 keeps the forms
// fastest at x86-64-v3.
template <int L, int kK, bool kShared, bool kNegate>
APPORTION_INLINE FloatBlockPicks<L> float_pick_block(const float* values, const float* costs, std::int64_t row_k,
                                                     const std::int64_t* item, const FloatSlopes& s) {
  using F = typename FloatVec<L>::F;
  using I = typename FloatVec<L>::I;
  const std::int64_t k = kK ? kK : row_k;
  const F vlo = F{} + s.lo, vhi = F{} + s.hi;
  const F none = F{} - INFINITY;
  F best_lo = none, best_hi = none, second_lo = none, second_hi = none;
  // The best options so far, plus 1 (0: none yet). Options come in rising order, so the one
  // that beats the best so far is also the largest index so far: at L = 8 a mask and a max
  // take it, two single-micro-op instructions where a variable blend takes three.
  I option_lo = {}, option_hi = {};
  F cost_lo = {}, value_lo = {};  // the cost and value of the best option at lo so far
  // Bit patterns as int32: max |v| (a NaN's lies above inf's, so it sticks), max and min cost
  // (a negative cost, -0.0 included, has the sign bit: a negative minimum).
  I value_bits = {}, cost_max = I{} + std::numeric_limits<std::int32_t>::min(),
    cost_min = I{} + std::numeric_limits<std::int32_t>::max();
#pragma GCC unroll 4
  for (std::int64_t j0 = 0; j0 < k; j0 += 4) {
    F v[4], w[4];
    load_columns4<L>(values, item, k, j0, v);
    if constexpr (!kShared) load_columns4<L>(costs, item, k, j0, w);
    for (int m = 0; m < 4 && j0 + m < k; ++m) {
      const F cost = kShared ? F{} + costs[j0 + m] : w[m];
      const I j = I{} + static_cast<std::int32_t>(j0 + m + 1);  // the option + 1, in every lane
      I vb, cb;
      std::memcpy(&vb, &v[m], sizeof vb);
      std::memcpy(&cb, &cost, sizeof cb);
      vb &= 0x7fffffff;
      value_bits = value_bits < vb ? vb : value_bits;
      cost_max = cost_max < cb ? cb : cost_max;
      cost_min = cb < cost_min ? cb : cost_min;
      const F value = kNegate ? -v[m] : v[m];
      const F s_lo = minus_product<L>(value, vlo, cost), s_hi = minus_product<L>(value, vhi, cost);
      const F floor_lo = s_lo < best_lo ? s_lo : best_lo, floor_hi = s_hi < best_hi ? s_hi : best_hi;
      second_lo = second_lo < floor_lo ? floor_lo : second_lo;
      second_hi = second_hi < floor_hi ? floor_hi : second_hi;
      if constexpr (L == 16) {  // (at L = 8 a variable blend takes three micro-ops: not kept)
        cost_lo = s_lo > best_lo ? cost : cost_lo;
        value_lo = s_lo > best_lo ? value : value_lo;
      }
      if constexpr (L == 8) {
        const I up_lo = (s_lo > best_lo) & j, up_hi = (s_hi > best_hi) & j;
        option_lo = option_lo < up_lo ? up_lo : option_lo;
        option_hi = option_hi < up_hi ? up_hi : option_hi;
      } else {
        option_lo = s_lo > best_lo ? j : option_lo;
        option_hi = s_hi > best_hi ? j : option_hi;
      }
      best_lo = s_lo > best_lo ? s_lo : best_lo;
      best_hi = s_hi > best_hi ? s_hi : best_hi;
    }
  }
  F value_max, cost_top;
  std::memcpy(&value_max, &value_bits, sizeof value_max);
  std::memcpy(&cost_top, &cost_max, sizeof cost_top);
  const F reach = vhi * cost_top;  // >= fl(lf w) at either slope, for every option
  const F tol = 0x1p-22f * value_max + 0x1p-21f * reach + s.lambda_error * cost_top + 0x1p-122f;
  FloatBlockPicks<L> out;
  if constexpr (L == 8) {
    const I finite = (value_bits < 0x7f800000) & (cost_max < 0x7f800000) & (cost_min >= 0);
    out.sure = all_lanes(finite & (value_max + reach < INFINITY) & (best_lo - second_lo > tol) &
                         (best_hi - second_hi > tol));
    out.half_sure[0] = out.half_sure[1] = out.sure;
  } else {
    // The same tests, as a chain of selects, each failure its own negative constant: a lane stays
    // positive (best_hi - second_hi > tol > 0) while it passes. (With one constant, GCC merges
    // the selects into one of the comparisons' lanes ANDed as integers, which it makes lane by
    // lane with AVX-512.)
    F sure = best_lo - second_lo > tol ? best_hi - second_hi : F{} - 1.0f;
    sure = best_hi - second_hi > tol ? sure : F{} - 2.0f;
    sure = value_max + reach < INFINITY ? sure : F{} - 3.0f;
    // The integer tests as one lane value, negative where both hold (|v| and cost bits below
    // inf's, the least cost's sign bit clear); a lane failed where its sign bit is set in
    // `failed`. (No comparison: GCC folds a float one of converted integers into an integer
    // one, and an integer comparison that selects floats was made lane by lane too.)
    const I finite_bits = ((value_bits < cost_max ? cost_max : value_bits) - 0x7f800000) & ~cost_min;
    I sure_bits;
    std::memcpy(&sure_bits, &sure, sizeof sure_bits);
    const I failed = sure_bits | ~finite_bits;
    const I any = or_of_halves(failed);
    out.half_sure[0] = any[0] >= 0;
    out.half_sure[1] = any[8] >= 0;
    out.sure = out.half_sure[0] && out.half_sure[1];
  }
  out.option_lo = option_lo - 1;
  out.option_hi = option_hi - 1;
  // Selected as bits by an integer comparison (GCC 12 made one that selects floats lane by lane
  // at L = 16).
  I cost_bits, value_bits_lo;
  std::memcpy(&cost_bits, &cost_lo, sizeof cost_bits);
  std::memcpy(&value_bits_lo, &value_lo, sizeof value_bits_lo);
  cost_bits = option_lo == option_hi ? cost_bits : I{};
  value_bits_lo = option_lo == option_hi ? value_bits_lo : I{};
  std::memcpy(&out.fixed_cost, &cost_bits, sizeof out.fixed_cost);
  std::memcpy(&out.fixed_value, &value_bits_lo, sizeof out.fixed_value);
  std::memcpy(&out.cheapest, &cost_min, sizeof out.cheapest);  // the least cost, where sure
  return out;
}

// float_pick_block for rows whose costs are shared (cost_stride 0) or per item (stride K), of
// either value sign: the four forms, each with no branch in its loop over the options.
template <int L, int kK>
APPORTION_INLINE FloatBlockPicks<L> float_pick_items(const float* values, const float* costs, std::int64_t cost_stride,
                                                     std::int64_t row_k, const std::int64_t* item,
                                                     const FloatSlopes& s) {
  const bool shared = cost_stride == 0, negate = s.sign < 0.0f;
  return shared ? (negate ? float_pick_block<L, kK, true, true>(values, costs, row_k, item, s)
                          : float_pick_block<L, kK, true, false>(values, costs, row_k, item, s))
                : (negate ? float_pick_block<L, kK, false, true>(values, costs, row_k, item, s)
                          : float_pick_block<L, kK, false, false>(values, costs, row_k, item, s));
}

// Lanes at..at+4 of x, widened to doubles (through a copy of 4 floats: one 64-byte vector
// widened whole was copied out through general registers).
using FloatQuadValue = float __attribute__((vector_size(16)));
using DoubleQuad = double __attribute__((vector_size(32)));
template <int L>
APPORTION_INLINE DoubleQuad widen_quad(typename FloatVec<L>::F x, int at) {
  FloatQuadValue part;
  std::memcpy(&part, reinterpret_cast<const char*>(&x) + at * sizeof(float), sizeof part);
  return __builtin_convertvector(part, DoubleQuad);
}

}  // namespace apportion

#pragma GCC diagnostic pop

#endif
