// Run-time CPU dispatch for the hot loops. The wheel is built for baseline x86-64 (no -march);
// a function marked APPORTION_SIMD_CLONES is compiled three times, for the baseline, for
// x86-64-v3 (AVX2, FMA, BMI2) and for x86-64-v4 (AVX-512 F/BW/CD/DQ/VL), and the loader picks
// the clone that the CPU runs (GNU ifunc).
// Elsewhere (clang, aarch64, non-Linux) it is one ordinary function.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(__CUDACC__)
#define APPORTION_SIMD_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
// A helper inlined into each clone, so that it is compiled for the clone's target.
#define APPORTION_INLINE inline __attribute__((always_inline))
#else
#define APPORTION_SIMD_CLONES
#define APPORTION_INLINE inline
#endif
