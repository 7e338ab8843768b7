// The vectorised exp of cpp/vector_exp.hpp.
#include "vector_exp.hpp"

#include "cpu_dispatch.hpp"

namespace apportion {

// exp_nonpositive is written so that this loop vectorises: 2, 4 or 8 lanes in the baseline,
// AVX2 and AVX-512 clones.
APPORTION_SIMD_CLONES void exp_in_place(double* x, std::int64_t count) {
  for (std::int64_t i = 0; i < count; ++i) x[i] = exp_nonpositive(x[i]);
}

}  // namespace apportion
