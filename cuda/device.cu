// CUDA kernels and their launchers. The per-item and per-instance arithmetic is not written
// here: it is the APPORTION_HD code of cpp/item_ops.hpp and cpp/online.hpp that the CPU core
// runs too ("one algorithm, two launchers"). What is device-specific is the mapping (instances
// to blocks, items and budget cells to threads, streams to threads), the block-wide
// reductions, and the bisection that finds the LP break slope without a host round-trip.
//
// Compiled with --fmad=false (CMakeLists.txt): a fused multiply-add would round differently
// from the CPU's separate multiply and add, and move ties in the decisions.
#include <cuda_runtime.h>
#include <math_constants.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "device.hpp"
#include "dp.hpp"
#include "item_ops.hpp"
#include "online.hpp"

namespace apportion {

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  return count;
}

namespace gpu {

namespace {

constexpr int kThreads = 256;  // threads per block (a multiple of 32: the reductions assume it)
constexpr int kWarps = kThreads / 32;
// Scratch the global-memory path of a launch may take at once; larger batches run in chunks.
constexpr std::size_t kMaxChunkScratch = std::size_t(1) << 30;

// Input errors found on the device, or-ed into one status word.
enum ErrorBits : unsigned {
  kBadValue = 1u,
  kBadCost = 2u,
  kNoOption = 4u,
  kNonInteger = 8u,
  kNanBudget = 16u,
  kGridTooLarge = 32u,
};

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
  }
}

cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// Device memory allocated and freed in stream order.
class DeviceBuffer {
 public:
  DeviceBuffer(std::size_t bytes, cudaStream_t s) : stream_(s) {
    if (bytes > 0) check(cudaMallocAsync(&ptr_, bytes, s), "cudaMallocAsync");
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFreeAsync(ptr_, stream_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class U>
  U* as() const { return static_cast<U*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

void raise_input_errors(unsigned bits) {
  if (bits & kNoOption) {
    throw std::invalid_argument("mask: an item has no allowed option; allow at least one per item");
  }
  if (bits & kBadValue) {
    throw std::invalid_argument("values: an entry is NaN or infinite; values must be finite");
  }
  if (bits & kBadCost) {
    throw std::invalid_argument("costs: an entry is NaN, infinite or negative; costs must be finite and >= 0");
  }
  if (bits & kNanBudget) throw std::invalid_argument("budget: an instance's budget is NaN");
  if (bits & kNonInteger) {
    throw std::invalid_argument("costs: method='dp' needs integer costs; pass cost_resolution to quantise them");
  }
  if (bits & kGridTooLarge) {
    throw std::invalid_argument("budget: the dp grid would be too large; quantise costs more coarsely (cost_resolution)");
  }
}

// Reads the status word back and throws on input errors: the launch's one synchronisation.
void finish(const unsigned* d_errors, cudaStream_t s) {
  check(cudaGetLastError(), "kernel launch");
  unsigned bits = 0;
  check(cudaMemcpyAsync(&bits, d_errors, sizeof bits, cudaMemcpyDeviceToHost, s), "status read-back");
  check(cudaStreamSynchronize(s), "kernel execution");
  raise_input_errors(bits);
}

// ------------------------------------------------------------------------------------------
// Block-wide reductions (fixed order: deterministic).

__device__ double block_sum(double x, double* red) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // the previous reduction's result has been read
  if (lane == 0) red[warp] = x;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int w = 0; w < kWarps; ++w) total += red[w];
    red[kWarps] = total;
  }
  __syncthreads();
  return red[kWarps];
}

// A compensated sum reduced across the block (sums and carries combined pairwise).
__device__ double block_compensated(CompensatedSum c, double* red) {
  for (int o = 16; o > 0; o >>= 1) {
    const double s = __shfl_down_sync(0xffffffffu, c.sum, o);
    const double k = __shfl_down_sync(0xffffffffu, c.carry, o);
    c.add(s);
    c.carry += k;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) {
    red[2 * warp] = c.sum;
    red[2 * warp + 1] = c.carry;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    CompensatedSum total;
    double carry = 0.0;
    for (int w = 0; w < kWarps; ++w) {
      total.add(red[2 * w]);
      carry += red[2 * w + 1];
    }
    total.add(carry);
    red[2 * kWarps] = total.value();
  }
  __syncthreads();
  return red[2 * kWarps];
}

constexpr int kRedSlots = 2 * kWarps + 1;

// ------------------------------------------------------------------------------------------
// Frontiers of one instance in flat device buffers (shared or global memory): the layout of
// ItemFrontiers (frontier.hpp), plus the LP's per-item state.

struct DeviceFrontiers {
  double* cost;              // (N,K)
  double* value;             // (N,K)
  double* aux;               // (N) dcost of the step at the break slope (0: none)
  std::int32_t* option;      // (N,K)
  std::int32_t* hull;        // (N,K)
  std::int32_t* count;       // (N)
  std::int32_t* hull_count;  // (N)
  std::int32_t* taken;       // (N) hull steps taken by the LP
  std::int32_t* position;    // (N) Pareto position of the allocation
  std::int64_t n, k;

  __host__ __device__ static std::size_t bytes(std::int64_t n, std::int64_t k) {
    const std::size_t nk = static_cast<std::size_t>(n * k);
    const std::size_t raw = nk * (2 * sizeof(double) + 2 * sizeof(std::int32_t)) +
                            static_cast<std::size_t>(n) * (sizeof(double) + 4 * sizeof(std::int32_t));
    return (raw + 15) & ~std::size_t(15);
  }

  __device__ void carve(unsigned char* base, std::int64_t n_, std::int64_t k_) {
    n = n_;
    k = k_;
    const std::int64_t nk = n * k;
    cost = reinterpret_cast<double*>(base);
    value = cost + nk;
    aux = value + nk;
    option = reinterpret_cast<std::int32_t*>(aux + n);
    hull = option + nk;
    count = hull + nk;
    hull_count = count + n;
    taken = hull_count + n;
    position = taken + n;
  }
};

// Builds every item's Pareto list and hull (item_ops.hpp) with items across threads, and
// checks the input as check_batch does on the CPU. With integer_costs, flags non-integer
// Pareto costs (method="dp").
template <class T>
__device__ void build_frontiers_block(const InstanceView<T>& p, const DeviceFrontiers& f,
                                      bool keep_dominated, bool integer_costs, unsigned* errors) {
  for (std::int64_t i = threadIdx.x; i < p.n; i += blockDim.x) {
    const std::int64_t base = i * p.k;
    const T* vrow = p.values + base;
    const T* crow = p.costs + i * p.cost_stride_item;
    const std::uint8_t* mrow = p.mask ? p.mask + base : nullptr;
    unsigned bad = 0;
    for (std::int64_t j = 0; j < p.k; ++j) {
      const double w = static_cast<double>(crow[j]);
      if (!(isfinite(w) && w >= 0.0)) bad |= kBadCost;
      if ((mrow == nullptr || mrow[j] != 0) && !isfinite(static_cast<double>(vrow[j]))) bad |= kBadValue;
    }
    // The sorted order is written where the Pareto options go (pareto_filter allows it). Bad
    // costs (NaN, negative) are reported, not sorted or filtered.
    std::int32_t c = 0;
    if (!(bad & kBadCost)) {
      sort_by_cost_any(p.k, crow, f.option + base);
      c = pareto_filter(vrow, crow, mrow, p.value_sign, p.k, f.option + base, keep_dominated, f.option + base,
                        f.cost + base, f.value + base);
      if (c == 0) bad |= kNoOption;
    }
    if (c == 0) {  // reported; a placeholder keeps every later index in range
      f.option[base] = 0;
      f.cost[base] = 0.0;
      f.value[base] = 0.0;
      c = 1;
    }
    f.count[i] = c;
    f.hull_count[i] = upper_hull(f.cost + base, f.value + base, c, f.hull + base);
    if (integer_costs) {
      for (std::int32_t q = 0; q < c; ++q) {
        if (f.cost[base + q] != floor(f.cost[base + q])) bad |= kNonInteger;
      }
    }
    if (bad) atomicOr(errors, bad);
  }
  __syncthreads();
}

struct DeviceLp {
  double lambda = 0.0, bound = 0.0, min_cost = 0.0;
  bool feasible = true, integral = false;
  std::int64_t break_item = -1;
};

// Total dcost of the hull steps with slope >= s (at_least) or > s of item i, and the number of
// such steps (a prefix: slopes fall along the hull).
__device__ inline double steps_above(const DeviceFrontiers& f, std::int64_t i, double s, bool strict,
                                     std::int32_t& steps) {
  const std::int64_t base = i * f.k;
  double total = 0.0;
  std::int32_t h = 0;
  for (; h + 1 < f.hull_count[i]; ++h) {
    double dw, dv;
    hull_step(f.cost + base, f.value + base, f.hull + base, h, dw, dv);
    const double slope = dv / dw;
    if (strict ? !(slope > s) : !(slope >= s)) break;
    total += dw;
  }
  steps = h;
  return total;
}

// The LP relaxation of one instance from built frontiers (all threads of the block call it).
// Same definitions as solve_lp (frontier.cpp): cheapest hull points first, increments by
// decreasing slope, the break slope lambda*; increments at exactly lambda* are taken in item
// order while they fit (one thread: usually a handful). The CPU finds lambda* by quickselect;
// here a bisection over the bit patterns of lambda >= 0 (ordered like the values) with a
// block reduction per step finds the same slope in at most 63 steps. Leaves the integer
// primal's Pareto positions in f.position.
__device__ DeviceLp block_lp(const DeviceFrontiers& f, double budget, double* red) {
  DeviceLp lp;
  const std::int64_t n = f.n, k = f.k;
  CompensatedSum base;
  double dcost = 0.0;
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    base.add(f.cost[i * k]);  // Pareto position 0 is the cheapest hull point
    for (std::int32_t h = 0; h + 1 < f.hull_count[i]; ++h) {
      double dw, dv;
      hull_step(f.cost + i * k, f.value + i * k, f.hull + i * k, h, dw, dv);
      dcost += dw;
    }
    f.taken[i] = 0;
    f.position[i] = 0;
  }
  lp.min_cost = block_compensated(base, red);
  const double total_dcost = block_sum(dcost, red);
  if (!(lp.min_cost <= budget)) {
    lp.feasible = false;
    lp.bound = lp.lambda = CUDART_NAN;
    __syncthreads();
    return lp;
  }
  double rem = budget - lp.min_cost;
  if (total_dcost <= rem) {  // the budget does not bind
    for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) f.taken[i] = f.hull_count[i] - 1;
    lp.lambda = 0.0;
    lp.integral = true;
  } else {
    // Largest s with D(slope >= s) > rem. D(>= +0) = total_dcost > rem; D(>= inf) = 0 <= rem.
    unsigned long long lo = 0ull, hi = 0x7ff0000000000000ull;
    while (hi - lo > 1ull) {
      const unsigned long long mid = lo + (hi - lo) / 2;
      const double s = __longlong_as_double(static_cast<long long>(mid));
      double part = 0.0;
      std::int32_t steps;
      for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) part += steps_above(f, i, s, false, steps);
      if (block_sum(part, red) > rem) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    lp.lambda = __longlong_as_double(static_cast<long long>(lo));
    double greater = 0.0;
    for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      std::int32_t steps;
      greater += steps_above(f, i, lp.lambda, true, steps);
      f.taken[i] = steps;
      double at_break = 0.0;
      if (steps + 1 < f.hull_count[i]) {
        double dw, dv;
        hull_step(f.cost + i * k, f.value + i * k, f.hull + i * k, steps, dw, dv);
        if (dv / dw == lp.lambda) at_break = dw;
      }
      f.aux[i] = at_break;
    }
    rem -= block_sum(greater, red);
    if (threadIdx.x == 0) {
      std::int64_t break_item = -1;
      for (std::int64_t i = 0; i < n; ++i) {
        if (!(f.aux[i] > 0.0)) continue;
        if (f.aux[i] <= rem) {
          ++f.taken[i];
          rem -= f.aux[i];
        } else if (break_item < 0) {
          break_item = i;
        }
      }
      red[kRedSlots] = static_cast<double>(break_item);
    }
    __syncthreads();
    lp.break_item = static_cast<std::int64_t>(red[kRedSlots]);
  }
  double dual = 0.0;
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const std::int64_t b = i * k;
    f.position[i] = f.hull[b + f.taken[i]];
    dual += item_dual(f.cost + b, f.value + b, f.hull + b, f.hull_count[i], lp.lambda);
  }
  lp.bound = dual_offset(lp.lambda, budget) + block_sum(dual, red);
  return lp;
}

// L(lambda) over every item's Pareto entries, plus what rounding may hide: the bound where
// lambda lies below the normal range, as with_sound_bound (frontier.cpp) takes it on the CPU.
__device__ double block_raw_dual(const DeviceFrontiers& f, double lambda, double budget, double* red) {
  CompensatedSum items;
  double rounding = 0.0;
  for (std::int64_t i = threadIdx.x; i < f.n; i += blockDim.x) {
    RawItemDual item;
    const std::int64_t base = i * f.k;
    for (std::int32_t q = 0; q < f.count[i]; ++q) item.offer(f.cost[base + q], f.value[base + q], lambda);
    items.add(item.best);
    rounding += item.rounding();
  }
  const double total = block_compensated(items, red);
  return raw_dual_total(total, block_sum(rounding, red), lambda, budget);
}

__device__ void write_choice_block(const DeviceFrontiers& f, std::int64_t* choice) {
  __syncthreads();
  for (std::int64_t i = threadIdx.x; i < f.n; i += blockDim.x) choice[i] = f.option[i * f.k + f.position[i]];
}

// ------------------------------------------------------------------------------------------
// method="lagrangian"

template <class T>
__global__ void __launch_bounds__(kThreads)
lagrangian_kernel(BatchView<T> p, BatchOutput out, std::int64_t first, unsigned char* scratch,
                  std::size_t per_instance, bool use_shared, unsigned* errors) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ double red[kRedSlots + 1];
  const std::int64_t b = first + blockIdx.x;
  const InstanceView<T> inst = p.instance(b);
  DeviceFrontiers f;
  f.carve(use_shared ? smem : scratch + blockIdx.x * per_instance, inst.n, inst.k);
  if (threadIdx.x == 0 && isnan(inst.budget)) atomicOr(errors, kNanBudget);
  build_frontiers_block(inst, f, false, false, errors);
  DeviceLp lp = block_lp(f, inst.budget, red);
  if (lp.feasible && lambda_below_normal(lp.lambda)) {  // the same lambda in every thread
    const double raw = block_raw_dual(f, lp.lambda, inst.budget, red);
    lp.bound = raw > lp.bound ? raw : lp.bound;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    InstanceResult r;
    r.min_budget = lp.min_cost;
    if (lp.feasible) {
      // The integer primal that drops the fractional increment, restored into the budget as on
      // the CPU. Not run here: the CPU's repair pass and second rounding (lagrangian_primal).
      double total_cost, total_value;
      restore_budget_flat(f.cost, f.value, f.n, f.k, f.position, inst.budget, total_cost, total_value);
      r.value = total_value;
      r.cost = total_cost;
      r.bound = lp.bound > total_value ? lp.bound : total_value;
      r.shadow_price = lp.lambda;
      r.status = (r.bound - r.value <= optimality_slack(r.value, r.bound, dual_offset(lp.lambda, inst.budget)))
                     ? kOptimal
                     : kFeasible;
    } else {
      allocation_totals_flat(f.cost, f.value, f.n, f.k, f.position, r.cost, r.value);
      r.bound = CUDART_NAN;
      r.shadow_price = CUDART_NAN;
      r.status = kInfeasible;
    }
    out.store(b, r);
  }
  write_choice_block(f, out.choice + b * inst.n);
}

// ------------------------------------------------------------------------------------------
// method="dp"

// Frontiers (keep_dominated with exact_spend), integer check, and the grid of each instance
// as dp_grid (dp.cpp) computes it.
template <class T>
__global__ void __launch_bounds__(kThreads)
dp_prepare_kernel(BatchView<T> p, std::int64_t first, bool exact_spend, unsigned char* frontiers,
                  std::size_t per_instance, std::int64_t* grids, double* base_costs, unsigned* errors) {
  __shared__ double red[kRedSlots + 1];
  const std::int64_t local = blockIdx.x, b = first + local;  // per-chunk buffers index by local
  const InstanceView<T> inst = p.instance(b);
  DeviceFrontiers f;
  f.carve(frontiers + local * per_instance, inst.n, inst.k);
  if (threadIdx.x == 0 && isnan(inst.budget)) atomicOr(errors, kNanBudget);
  build_frontiers_block(inst, f, exact_spend, true, errors);
  CompensatedSum base, reach;
  for (std::int64_t i = threadIdx.x; i < inst.n; i += blockDim.x) {
    const double w0 = f.cost[i * inst.k];
    base.add(w0);
    reach.add(f.cost[i * inst.k + f.count[i] - 1] - w0);
  }
  const double base_cost = block_compensated(base, red);
  const double cap = block_compensated(reach, red);
  if (threadIdx.x == 0) {
    std::int64_t grid = 0;
    if (base_cost <= inst.budget) {
      const double span = floor(inst.budget - base_cost);
      if (!(exact_spend && (span != inst.budget - base_cost || span > cap))) {
        const double cells = (span < cap ? span : cap) + 1.0;
        if (!(cells <= static_cast<double>(kMaxDpGrid))) {  // NaN too: never cast unchecked
          atomicOr(errors, kGridTooLarge);
        } else {
          grid = static_cast<std::int64_t>(cells);
        }
      }
    }
    grids[local] = grid;
    base_costs[local] = base_cost;
  }
}

// Item i's row: budget cells across threads, each taking the best Pareto option (dp_relax,
// the cell update of the CPU's dp_item; the first option wins ties in either loop order).
template <class Back>
__device__ void dp_row(const DeviceFrontiers& f, std::int64_t i, std::int64_t grid, const double* best,
                       double* next, Back* back) {
  const std::int64_t base = i * f.k;
  const double* cost = f.cost + base;
  const double* value = f.value + base;
  const std::int32_t count = f.count[i];
  for (std::int64_t c = threadIdx.x; c < grid; c += blockDim.x) {
    double cell = best[c] + value[0];
    Back tag = 0;
    for (std::int32_t q = 1; q < count; ++q) {
      if (cost[q] - cost[0] >= static_cast<double>(grid)) break;  // Pareto entries rise in cost
      const std::int64_t r = dp_shift(cost, q);
      if (r > c) break;
      dp_relax(best[c - r], value[q], static_cast<Back>(q), cell, tag);
    }
    next[c] = cell;
    back[c] = tag;
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
dp_run_kernel(BatchView<T> p, BatchOutput out, std::int64_t first, bool exact_spend, unsigned char* frontiers,
              std::size_t per_instance, const std::int64_t* grids, const double* base_costs,
              const std::int64_t* row_offsets, double* rows, const std::int64_t* back_offsets,
              unsigned char* backs) {
  __shared__ double red[kRedSlots + 1];
  const std::int64_t local = blockIdx.x, b = first + local;  // per-launch buffers index by local
  const InstanceView<T> inst = p.instance(b);
  DeviceFrontiers f;
  f.carve(frontiers + local * per_instance, inst.n, inst.k);
  const std::int64_t grid = grids[local], n = inst.n;
  const bool wide = inst.k > 256;
  bool feasible = grid > 0;
  double shadow = CUDART_NAN;
  if (feasible) {
    double* best = rows + row_offsets[local];
    double* next = best + grid;
    for (std::int64_t c = threadIdx.x; c < grid; c += blockDim.x) {
      best[c] = (c == 0 || !exact_spend) ? 0.0 : -CUDART_INF;
    }
    __syncthreads();
    for (std::int64_t i = 0; i < n; ++i) {
      if (wide) {
        dp_row(f, i, grid, best, next, reinterpret_cast<std::uint16_t*>(backs + back_offsets[local]) + i * grid);
      } else {
        dp_row(f, i, grid, best, next, backs + back_offsets[local] + i * grid);
      }
      __syncthreads();
      double* t = best;
      best = next;
      next = t;
    }
    feasible = best[grid - 1] != -CUDART_INF;  // exact spending may be unreachable
    // The LP's break slope is the budget's shadow price (the DP has none); block_lp also
    // resets f.position, which the backtrack then overwrites.
    if (feasible && !exact_spend) shadow = block_lp(f, inst.budget, red).lambda;
    __syncthreads();
    if (feasible && threadIdx.x == 0) {
      if (wide) {
        dp_backtrack_flat(f.cost, n, inst.k, reinterpret_cast<const std::uint16_t*>(backs + back_offsets[local]),
                          grid, grid - 1, f.position);
      } else {
        dp_backtrack_flat(f.cost, n, inst.k, static_cast<const std::uint8_t*>(backs + back_offsets[local]),
                          grid, grid - 1, f.position);
      }
    }
  }
  if (!feasible) {
    for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) f.position[i] = 0;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    InstanceResult r;
    r.min_budget = base_costs[local];
    allocation_totals_flat(f.cost, f.value, n, inst.k, f.position, r.cost, r.value);
    if (feasible) {
      r.status = kOptimal;
      r.bound = r.value;
      r.shadow_price = exact_spend ? CUDART_NAN : shadow;
    } else {
      r.status = kInfeasible;
      r.bound = CUDART_NAN;
      r.shadow_price = CUDART_NAN;
    }
    out.store(b, r);
  }
  write_choice_block(f, out.choice + b * n);
}

// ------------------------------------------------------------------------------------------
// simulate_online: one thread per stream, the step functions of online.hpp (as dmd_simulate).

struct DeviceDmd {
  const double* budget;   // (R)
  const double* inv_rho;  // (R)
  const double* m0;       // (R)
  std::int64_t r;
  double eta;
  Mirror mirror;
  bool skip_allowed;
};

constexpr std::int64_t kLocalResources = 8;

template <class T>
__global__ void __launch_bounds__(kThreads)
simulate_kernel(DeviceDmd cfg, const T* values, const T* costs, std::int64_t cs, std::int64_t ct,
                std::int64_t s, std::int64_t t, std::int64_t k, SimulationOutput out, double* state,
                unsigned* errors) {
  const std::int64_t sidx = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (sidx >= s) return;
  const std::int64_t r = cfg.r;
  double local[5 * kLocalResources];
  double* m = r <= kLocalResources ? local : state + sidx * 5 * r;
  double* mu = m + r;
  double* spent_sum = mu + r;
  double* spent_carry = spent_sum + r;
  double* rem = spent_carry + r;
  for (std::int64_t q = 0; q < r; ++q) {  // DmdState::reset
    m[q] = cfg.m0[q];
    if (cfg.mirror == kEntropy && m[q] < kMinEntropyPrice) m[q] = kMinEntropyPrice;
    mu[q] = m[q] * cfg.inv_rho[q];
    spent_sum[q] = 0.0;
    spent_carry[q] = 0.0;
  }
  CompensatedSum value;
  std::int64_t stalled = 0;
  unsigned bad = 0;
  const T* vs = values + sidx * t * k;
  const T* ws = costs + sidx * cs;
  std::int64_t* ch = out.choice ? out.choice + sidx * t : nullptr;
  for (std::int64_t i = 0; i < t; ++i) {
    const T* v = vs + i * k;
    const T* w = ws + i * ct;
    for (std::int64_t j = 0; j < k; ++j) {
      if (!isfinite(static_cast<double>(v[j]))) bad |= kBadValue;
      for (std::int64_t q = 0; q < r; ++q) {
        const double x = static_cast<double>(w[j * r + q]);
        if (!(isfinite(x) && x >= 0.0)) bad |= kBadCost;
      }
    }
    dmd_remaining(cfg.budget, spent_sum, spent_carry, r, rem);
    const DmdChoice c = dmd_decide(v, w, static_cast<const std::uint8_t*>(nullptr), k, r, mu, rem,
                                   cfg.skip_allowed);
    if (c.played == kStalled) {
      ++stalled;
      if (ch) ch[i] = kSkip;
      continue;
    }
    dmd_commit(c, v, w, r, m, mu, spent_sum, spent_carry, cfg.inv_rho, cfg.eta, cfg.mirror, &value);
    if (ch) ch[i] = c.played;
  }
  dmd_store_stream(out, sidx, r, value, spent_sum, spent_carry, mu, stalled);
  if (bad) atomicOr(errors, bad);
}

template <class T>
void check_dims(const BatchView<T>& p) {
  if (p.b < 1 || p.n < 1 || p.k < 1) throw std::invalid_argument("values: B, N and K must all be positive");
  if (p.b > 0x7fffffff) throw std::invalid_argument("values: the batch is too large for one launch");
}

}  // namespace

int pointer_device(std::uintptr_t ptr) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, reinterpret_cast<const void*>(ptr)) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  const bool on_device = attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged;
  return on_device ? attributes.device : -1;
}

DeviceGuard::DeviceGuard(int device) {
  check(cudaGetDevice(&previous_), "cudaGetDevice");
  if (device != previous_) {
    check(cudaSetDevice(device), "cudaSetDevice");
  } else {
    previous_ = -1;
  }
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);
}

template <class T>
void lagrangian(const BatchView<T>& p, const BatchOutput& out, std::uintptr_t stream_id,
                std::uint64_t chunk_scratch_bytes) {
  check_dims(p);
  const cudaStream_t stream = as_stream(stream_id);
  int device = 0, optin = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "shared memory limit");
  const std::size_t per = DeviceFrontiers::bytes(p.n, p.k);
  const std::size_t static_smem = (kRedSlots + 1) * sizeof(double);
  // The instance is staged in shared memory when it fits; otherwise in global scratch.
  const bool use_shared = per + static_smem <= static_cast<std::size_t>(optin);
  // Past 48 KiB of static plus dynamic shared memory a launch needs the opt-in.
  if (use_shared && per + static_smem > (48u << 10)) {
    check(cudaFuncSetAttribute(lagrangian_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(per)),
          "cudaFuncSetAttribute");
  }
  DeviceBuffer errors(sizeof(unsigned), stream);
  check(cudaMemsetAsync(errors.as<unsigned>(), 0, sizeof(unsigned), stream), "cudaMemsetAsync");
  const std::uint64_t scratch_cap = chunk_scratch_bytes == 0 ? kMaxChunkScratch : chunk_scratch_bytes;
  const std::int64_t chunk =
      use_shared ? p.b : std::max<std::int64_t>(1, std::min<std::uint64_t>(p.b, scratch_cap / per));
  DeviceBuffer scratch(use_shared ? 0 : static_cast<std::size_t>(chunk) * per, stream);
  for (std::int64_t first = 0; first < p.b; first += chunk) {
    const std::int64_t blocks = std::min(chunk, p.b - first);
    lagrangian_kernel<T><<<static_cast<unsigned>(blocks), kThreads, use_shared ? per : 0, stream>>>(
        p, out, first, scratch.as<unsigned char>(), per, use_shared, errors.as<unsigned>());
    check(cudaGetLastError(), "lagrangian kernel launch");
  }
  finish(errors.as<unsigned>(), stream);
}

namespace {

// Bytes of one instance's DP tables on the device: two rows of grid cells (doubles) and the
// back-pointers (one byte per cell and item up to 256 options, two up to 65536), aligned;
// UINT64_MAX where that does not fit 64 bits (no instance that large fits any limit).
std::uint64_t dp_table_bytes(std::int64_t n, std::int64_t k, std::int64_t grid) {
  const std::uint64_t per_cell = k <= 256 ? 1 : 2, cells = static_cast<std::uint64_t>(grid);
  if (cells == 0) return 0;
  const std::uint64_t most = ~std::uint64_t(0);
  if (static_cast<std::uint64_t>(n) > (most - 64) / (cells * per_cell + 16)) return most;
  const std::uint64_t backs = (static_cast<std::uint64_t>(n) * cells * per_cell + 15) & ~std::uint64_t(15);
  return backs + 16u * cells;
}

[[noreturn]] void raise_dp_memory(std::uint64_t need, std::uint64_t limit) {
  throw std::invalid_argument("max_memory: one dp instance needs " + std::to_string(need >> 20) +
                              " MiB of device memory (frontiers and tables), over the limit of " +
                              std::to_string(limit >> 20) +
                              " MiB; pass a coarser cost_resolution or a larger max_memory, or use "
                              "method='lagrangian'");
}

}  // namespace

template <class T>
void dp(const BatchView<T>& p, const BatchOutput& out, bool exact_spend, std::uint64_t max_table_bytes,
        std::uintptr_t stream_id) {
  check_dims(p);
  // The kernels keep back-pointers of one or two bytes; the CPU's four-byte ones are not here.
  if (p.k > 65536) {
    throw std::invalid_argument("values: the GPU dp takes at most 65536 options per item (got " +
                                std::to_string(p.k) + "); solve on device='cpu'");
  }
  const cudaStream_t stream = as_stream(stream_id);
  const std::uint64_t per = DeviceFrontiers::bytes(p.n, p.k);
  std::uint64_t limit = max_table_bytes;
  if (limit == 0) {
    std::size_t free_bytes = 0, total_bytes = 0;
    check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    limit = free_bytes / 2;
  }
  if (per > limit) raise_dp_memory(per, limit);
  DeviceBuffer errors(sizeof(unsigned), stream);
  check(cudaMemsetAsync(errors.as<unsigned>(), 0, sizeof(unsigned), stream), "cudaMemsetAsync");
  // Everything the solve allocates counts against `limit`: the batch runs in chunks whose
  // frontiers take at most half of it, each chunk's tables in launches that fit the rest. An
  // instance whose tables do not fit beside a full chunk's frontiers is prepared again alone.
  bool alone = false;
  for (std::int64_t first = 0; first < p.b;) {
    const std::int64_t m = alone ? 1 : std::max<std::int64_t>(1, std::min<std::uint64_t>(p.b - first, limit / 2 / per));
    alone = false;
    DeviceBuffer frontiers(static_cast<std::size_t>(m * per), stream);
    DeviceBuffer grids(static_cast<std::size_t>(m) * sizeof(std::int64_t), stream);
    DeviceBuffer bases(static_cast<std::size_t>(m) * sizeof(double), stream);
    dp_prepare_kernel<T><<<static_cast<unsigned>(m), kThreads, 0, stream>>>(
        p, first, exact_spend, frontiers.as<unsigned char>(), per, grids.as<std::int64_t>(), bases.as<double>(),
        errors.as<unsigned>());
    // The table sizes depend on the data: read the grid sizes back (with the status word).
    std::vector<std::int64_t> grid(m);
    check(cudaMemcpyAsync(grid.data(), grids.as<std::int64_t>(), m * sizeof(std::int64_t), cudaMemcpyDeviceToHost,
                          stream),
          "grid read-back");
    finish(errors.as<unsigned>(), stream);
    const std::uint64_t room = limit - m * per;  // per * m <= limit / 2 unless m == 1
    std::int64_t done = 0;
    while (done < m) {
      std::vector<std::int64_t> row_off(1, 0), back_off(1, 0);
      std::uint64_t used = 0;
      std::int64_t end = done;
      for (; end < m; ++end) {
        const std::uint64_t t = dp_table_bytes(p.n, p.k, grid[end]);
        if (t > room - used) break;
        used += t;
        row_off.push_back(row_off.back() + 2 * grid[end]);
        back_off.push_back(back_off.back() + static_cast<std::int64_t>(t - 16u * grid[end]));
      }
      if (end == done) {  // instance `done` alone does not fit beside this chunk's frontiers
        const std::uint64_t need = per + dp_table_bytes(p.n, p.k, grid[done]);
        if (m == 1 || need > limit) raise_dp_memory(need, limit);
        alone = true;
        break;
      }
      const std::int64_t q = end - done;
      DeviceBuffer offsets(2 * (q + 1) * sizeof(std::int64_t), stream);
      check(cudaMemcpyAsync(offsets.as<std::int64_t>(), row_off.data(), (q + 1) * sizeof(std::int64_t),
                            cudaMemcpyHostToDevice, stream),
            "offsets");
      check(cudaMemcpyAsync(offsets.as<std::int64_t>() + q + 1, back_off.data(), (q + 1) * sizeof(std::int64_t),
                            cudaMemcpyHostToDevice, stream),
            "offsets");
      DeviceBuffer rows(static_cast<std::size_t>(row_off[q]) * sizeof(double), stream);
      DeviceBuffer backs(static_cast<std::size_t>(back_off[q]), stream);
      dp_run_kernel<T><<<static_cast<unsigned>(q), kThreads, 0, stream>>>(
          p, out, first + done, exact_spend, frontiers.as<unsigned char>() + done * per, per,
          grids.as<std::int64_t>() + done, bases.as<double>() + done, offsets.as<std::int64_t>(), rows.as<double>(),
          offsets.as<std::int64_t>() + q + 1, backs.as<unsigned char>());
      check(cudaGetLastError(), "dp kernel launch");
      // The host vectors of the offsets must outlive their asynchronous copy.
      check(cudaStreamSynchronize(stream), "dp kernel execution");
      done = end;
    }
    first += done;
  }
  finish(errors.as<unsigned>(), stream);
}

template <class T>
void simulate(const DmdConfig& cfg, const T* values, const T* costs, std::int64_t cs, std::int64_t ct,
              std::int64_t s, std::int64_t t, std::int64_t k, const SimulationOutput& out,
              std::uintptr_t stream_id) {
  if (s < 1 || t < 1 || k < 1) throw std::invalid_argument("values: S, T and K must all be positive");
  const cudaStream_t stream = as_stream(stream_id);
  const std::int64_t r = cfg.r;
  std::vector<double> host(3 * r);
  std::copy(cfg.budget.begin(), cfg.budget.end(), host.begin());
  std::copy(cfg.inv_rho.begin(), cfg.inv_rho.end(), host.begin() + r);
  std::copy(cfg.m0.begin(), cfg.m0.end(), host.begin() + 2 * r);
  DeviceBuffer errors(sizeof(unsigned), stream);
  check(cudaMemsetAsync(errors.as<unsigned>(), 0, sizeof(unsigned), stream), "cudaMemsetAsync");
  DeviceBuffer params(host.size() * sizeof(double), stream);
  check(cudaMemcpyAsync(params.as<double>(), host.data(), host.size() * sizeof(double), cudaMemcpyHostToDevice,
                        stream),
        "config upload");
  DeviceBuffer state(r > kLocalResources ? static_cast<std::size_t>(s) * 5 * r * sizeof(double) : 0, stream);
  DeviceDmd d{params.as<double>(), params.as<double>() + r, params.as<double>() + 2 * r, r, cfg.eta,
              cfg.mirror, cfg.skip_allowed};
  const std::int64_t blocks = (s + kThreads - 1) / kThreads;
  simulate_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      d, values, costs, cs, ct, s, t, k, out, state.as<double>(), errors.as<unsigned>());
  finish(errors.as<unsigned>(), stream);
}

template void lagrangian<float>(const BatchView<float>&, const BatchOutput&, std::uintptr_t, std::uint64_t);
template void lagrangian<double>(const BatchView<double>&, const BatchOutput&, std::uintptr_t, std::uint64_t);
template void dp<float>(const BatchView<float>&, const BatchOutput&, bool, std::uint64_t, std::uintptr_t);
template void dp<double>(const BatchView<double>&, const BatchOutput&, bool, std::uint64_t, std::uintptr_t);
template void simulate<float>(const DmdConfig&, const float*, const float*, std::int64_t, std::int64_t,
                              std::int64_t, std::int64_t, std::int64_t, const SimulationOutput&, std::uintptr_t);
template void simulate<double>(const DmdConfig&, const double*, const double*, std::int64_t, std::int64_t,
                               std::int64_t, std::int64_t, std::int64_t, const SimulationOutput&,
                               std::uintptr_t);

}  // namespace gpu
}  // namespace apportion
