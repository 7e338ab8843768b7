// Run-time CPU dispatch for the hot loops. The wheel is built for baseline x86-64 (no -march);
// the hot loops are compiled again for wider vector units and the one this CPU runs is chosen
// at run time. Two forms, both on GCC for x86-64 Linux only (elsewhere, clang and aarch64
// included, each is one ordinary function):
//
// - APPORTION_SIMD_CLONES on a function: GCC target_clones for the baseline, x86-64-v3 (AVX2,
//   FMA, BMI2) and x86-64-v4 (AVX-512 F/BW/CD/DQ/VL); the loader picks the clone (GNU ifunc).
// - simd_dispatch(f) around a lambda: f is inlined (flatten) into one copy per level (baseline,
//   x86-64-v3, x86-64-v4), and the copy of simd_level() runs. Unlike an ifunc, the level can be
//   lowered at run time (set_simd_level), so the tests compare every level on the same inputs.
//   At x86-64-v4, GCC 12 makes a vector comparison whose lanes are then used as integers (a
//   mask register turned into a vector: `(a < b) & m`, a comparison folded into an AND of
//   masks) into one scalar comparison a lane; the code under simd_dispatch feeds its
//   comparisons at that level to selects (`a < b ? x : y`, each select of its own values), one
//   mask and one blend. (Measured on a Sapphire Rapids core, against the x86-64-v3 copy: an
//   earlier 4-lane x86-64-v4 copy ran 2.5x slower; with 8 lanes, before its comparisons became
//   selects, the Lagrangian's first pass took 10.8 us against 5.7 at routing 1000 x 8 float64,
//   and with the 16-lane float pick a routing 1e6 x 8 float32 solve took 53 ms against 11.)
//
// Every level gives the same answers: the core is compiled with -ffp-contract=off (no a*b+c
// fused into one FMA, which rounds once instead of twice), its vector code is written in
// GCC's generic vector types, which each level lowers to its own registers without
// reordering any floating-point operation, and the CUDA kernels build with --fmad=false.
// The exception is the retraction (retraction.cpp, tangent.cpp, vector_exp.cpp; see
// CMakeLists.txt): no CUDA kernel, a tolerance, and FMA in its exp.
#pragma once

#include <atomic>

// GCC 12 on: older GCC does not know the level names of __builtin_cpu_supports("x86-64-v3").
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && defined(__linux__) && \
    !defined(__CUDACC__)
#define APPORTION_X86_DISPATCH 1
#define APPORTION_SIMD_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
// A helper inlined into each clone, so that it is compiled for the clone's target.
#define APPORTION_INLINE inline __attribute__((always_inline))
#define APPORTION_INLINE_LAMBDA __attribute__((always_inline))  // after a lambda's parameters
#else
#define APPORTION_X86_DISPATCH 0
#define APPORTION_SIMD_CLONES
#define APPORTION_INLINE inline
#define APPORTION_INLINE_LAMBDA
#endif

namespace apportion {

// The instruction-set levels the hot loops are compiled for, lowest first.
enum class SimdLevel : int { kBaseline = 0, kX86_64_V3 = 1, kX86_64_V4 = 2 };

// The highest level compiled into this build (kBaseline where dispatch is not compiled).
constexpr SimdLevel kTopSimdLevel = APPORTION_X86_DISPATCH ? SimdLevel::kX86_64_V4 : SimdLevel::kBaseline;

inline const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::kX86_64_V4: return "x86-64-v4";
    case SimdLevel::kX86_64_V3: return "x86-64-v3";
    default: return "baseline";
  }
}

// The highest compiled level this CPU runs.
inline SimdLevel cpu_simd_level() {
#if APPORTION_X86_DISPATCH
  static const SimdLevel level = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return SimdLevel::kX86_64_V4;
    if (__builtin_cpu_supports("x86-64-v3")) return SimdLevel::kX86_64_V3;
    return SimdLevel::kBaseline;
  }();
  return level;
#else
  return SimdLevel::kBaseline;
#endif
}

namespace detail {
// -1: the CPU's level; otherwise the level set_simd_level chose.
inline std::atomic<int> simd_level_set{-1};
}  // namespace detail

// The level simd_dispatch runs at: the CPU's, or the lower one set_simd_level asked for.
inline SimdLevel simd_level() {
  const int set = detail::simd_level_set.load(std::memory_order_relaxed);
  return set < 0 ? cpu_simd_level() : static_cast<SimdLevel>(set);
}

// Runs simd_dispatch's kernels at `level`, capped at what the CPU runs (for tests: every
// level must give the same answers); returns the level it runs now.
inline SimdLevel set_simd_level(SimdLevel level) {
  const SimdLevel top = cpu_simd_level();
  const SimdLevel run = static_cast<int>(level) < static_cast<int>(top) ? level : top;
  detail::simd_level_set.store(static_cast<int>(run), std::memory_order_relaxed);
  return run;
}

// The level a copy of simd_dispatch's f is compiled for, as its argument: kLanes doubles fill
// one vector register of that level (2: SSE2, also the width of the generic code elsewhere;
// 4: AVX2; 8: AVX-512).
template <SimdLevel L>
struct SimdTarget {
  static constexpr SimdLevel level = L;
  static constexpr int kLanes = L == SimdLevel::kX86_64_V4 ? 8 : L == SimdLevel::kX86_64_V3 ? 4 : 2;
};

#if APPORTION_X86_DISPATCH
namespace detail {
// One copy of f per level: flatten inlines every call inside f, so all of it is compiled for
// the level's target.
template <class F>
__attribute__((flatten)) auto run_baseline(F& f) { return f(SimdTarget<SimdLevel::kBaseline>{}); }
template <class F>
__attribute__((target("arch=x86-64-v3"), flatten)) auto run_x86_64_v3(F& f) {
  return f(SimdTarget<SimdLevel::kX86_64_V3>{});
}
template <class F>
__attribute__((target("arch=x86-64-v4"), flatten)) auto run_x86_64_v4(F& f) {
  return f(SimdTarget<SimdLevel::kX86_64_V4>{});
}
}  // namespace detail
#endif

// f(SimdTarget<level>) compiled for each level, the copy of simd_level() run (see the top of
// this file). f sizes its vectors by the target's kLanes: vectors wider than the level's
// registers are lowered lane by lane.
template <class F>
auto simd_dispatch(F&& f) {
#if APPORTION_X86_DISPATCH
  switch (simd_level()) {
    case SimdLevel::kX86_64_V4: return detail::run_x86_64_v4(f);
    case SimdLevel::kX86_64_V3: return detail::run_x86_64_v3(f);
    default: return detail::run_baseline(f);
  }
#else
  return f(SimdTarget<SimdLevel::kBaseline>{});
#endif
}

}  // namespace apportion
