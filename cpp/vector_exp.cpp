// The vectorised exp of cpp/vector_exp.hpp.
#include "vector_exp.hpp"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

namespace apportion {

namespace {

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

}  // namespace

void exp_in_place(double* x, std::int64_t count) {
#if defined(__GNUC__) && defined(__x86_64__)
  if (have_avx2()) {
    exp_in_place_avx2(x, count);
    return;
  }
#endif
  for (std::int64_t i = 0; i < count; ++i) x[i] = exp_nonpositive(x[i]);
}


}  // namespace apportion
