// The CUDA backend: what the build can see at run time, and the launchers of the kernels.
// Compiled only where nvcc is found; the bindings call in under #ifdef APPORTION_WITH_CUDA.
//
// Every pointer a launcher takes is a device pointer on the current device (the caller sets
// it), laid out exactly as the CPU core's views (problem.hpp, online.hpp). Launchers enqueue
// on `stream` (a cudaStream_t as an integer; 0 = the legacy default stream), allocate their
// scratch stream-ordered, and read back only a small status word (and, for the DP, the grid
// size of each instance) to report bad input as std::invalid_argument naming the argument.
// CUDA failures throw std::runtime_error.
#pragma once

#include <cstdint>

#include "online.hpp"
#include "problem.hpp"

namespace apportion {

// Number of CUDA devices; 0 when no driver or device is present (any CUDA error counts as
// none, so the module imports on machines without a GPU).
int cuda_device_count();

namespace gpu {

// The CUDA device that owns device pointer `ptr` (cudaPointerGetAttributes); -1 when CUDA
// does not know the pointer or it is host memory.
int pointer_device(std::uintptr_t ptr);

// Sets the current device for the lifetime of the object and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// method="lagrangian": one block per instance. The LP break slope is found by a bisection over
// the (ordered) bit patterns of lambda with block-wide reductions, so it is the exact break
// slope the CPU's quickselect finds; bound L(lambda*) and the integer primal that drops the
// fractional step as on the CPU, then restore_budget. The CPU's repair pass and second
// rounding are not run on the device (the primal may be lower; the bound is the same).
// Instances too large for shared memory run in launches whose global scratch takes at most
// `chunk_scratch_bytes` (0: 1 GiB; tests pass less to reach several launches).
template <class T>
void lagrangian(const BatchView<T>& p, const BatchOutput& out, std::uintptr_t stream,
                std::uint64_t chunk_scratch_bytes = 0);

// method="dp": per chunk of instances, frontiers and grid sizes on the device (one small
// read-back of the grid sizes to size the tables), then one block per instance runs the rows
// (budget cells across threads, items in sequence) with back-pointers in device memory, and
// backtracks on the device. Everything allocated (frontiers, rows, back-pointers) counts
// against `max_table_bytes` (0: half of the memory cudaMemGetInfo reports free; memory that
// torch's caching allocator holds is not free to CUDA): the batch runs in as many chunks as
// that needs, and only an instance that does not fit alone raises.
template <class T>
void dp(const BatchView<T>& p, const BatchOutput& out, bool exact_spend, std::uint64_t max_table_bytes,
        std::uintptr_t stream);

// simulate_online: one thread per stream, the per-step functions of online.hpp. cfg is the
// host config (finalised); its arrays are copied to the device.
template <class T>
void simulate(const DmdConfig& cfg, const T* values, const T* costs, std::int64_t cs, std::int64_t ct,
              std::int64_t s, std::int64_t t, std::int64_t k, const SimulationOutput& out,
              std::uintptr_t stream);

}  // namespace gpu
}  // namespace apportion
