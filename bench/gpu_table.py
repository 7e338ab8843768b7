"""The GPU benchmark table, measured against yardsticks in the same run (no pytest-benchmark
needed): `python bench/gpu_table.py [--repeats N]`. Run by bench/gpu_check.sh.

Rows:
- Lagrangian B=4096 x (1024x8) float64 and float32: our kernel against one read of the same
  input bytes from device memory (torch sums of values and costs: the bandwidth floor) and
  against a pure-torch bisection on the price (60 halvings, batched); target within 2x of one
  read.
- Dense DP B=1024 x (300x4, C=8000): target 10 ms or less.
Every GPU answer is checked against the CPU core's on the same batch (the table says "equal"
only when choice, value, bound and status agree within the tolerances of tests/test_cuda.py).
Times are medians of CUDA-event timings after one warm-up call of every side.
"""

import argparse
import time
from types import SimpleNamespace

import numpy as np
import torch

import apportion
from apportion import workloads


def gpu_median_ms(fn, repeats):
    fn()  # warm-up: allocations, the first launch
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return float(np.median(times))


def cpu_median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def torch_bisection(v, c, budget, iters=60):
    lo = torch.zeros_like(budget)
    hi = torch.full_like(budget, float((v.abs().max() / c[c > 0].min()).item()) + 1.0)
    for _ in range(iters):
        mid = (lo + hi) / 2
        x = (v - mid[:, None, None] * c).argmax(dim=2)
        over = torch.gather(c, 2, x[:, :, None])[:, :, 0].sum(dim=1) > budget
        lo, hi = torch.where(over, mid, lo), torch.where(over, hi, mid)
    return (v - hi[:, None, None] * c).argmax(dim=2)


def lagrangian_equal(gpu, cpu):
    """The GPU Lagrangian's certificate equals the CPU's (its primal skips the repair pass)."""
    ok = cpu.status != "infeasible"
    return (np.array_equal(gpu.status == "infeasible", ~ok)
            and np.allclose(gpu.bound[ok], cpu.bound[ok], rtol=1e-10)
            and np.allclose(gpu.shadow_price[ok], cpu.shadow_price[ok], rtol=1e-12)
            and bool((gpu.value[ok] <= cpu.value[ok] + 1e-9 * np.abs(cpu.value[ok]).clip(1)).all()))


def host(sol):
    return {k: (v.cpu().numpy() if hasattr(v, "cpu") else v) for k, v in vars(sol).items()}


def main():
    parser = argparse.ArgumentParser(description="GPU benchmark table (needs a CUDA device)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if not apportion.cuda_available() or not torch.cuda.is_available():
        raise SystemExit("gpu_table: no CUDA device (or a CPU build of torch)")
    rows = []
    for dtype in (np.float64, np.float32):
        v, c, b = workloads.instance("routing", 1024, 8, batch=4096, seed=0)
        v, c = v.astype(dtype), c.astype(dtype)
        tv, tc, tb = (torch.from_numpy(np.ascontiguousarray(x)).cuda() for x in (v, c, b))
        ours = gpu_median_ms(lambda: apportion.solve(tv, tc, tb, method="lagrangian"), args.repeats)
        read = gpu_median_ms(lambda: (tv.sum(), tc.sum()), args.repeats)
        bisect = gpu_median_ms(lambda: torch_bisection(tv, tc, tb), max(3, args.repeats // 4))
        cpu_sol = apportion.solve(v, c, b, method="lagrangian")
        cpu_ms = cpu_median_ms(lambda: apportion.solve(v, c, b, method="lagrangian"), 3)
        gpu_sol = SimpleNamespace(**host(apportion.solve(tv, tc, tb, method="lagrangian")))
        rows.append((f"lagrangian B=4096 x (1024x8) {np.dtype(dtype).name}", ours, read, ours / read,
                     bisect, cpu_ms, "equal" if lagrangian_equal(gpu_sol, cpu_sol) else "DIFFERENT",
                     "<= 2x one read"))
    rng = np.random.default_rng(0)
    v = rng.random((1024, 300, 4))
    c = np.array([0.0, 20.0, 45.0, 80.0])
    b = np.full(1024, 8000.0)
    tv, tc, tb = (torch.from_numpy(x).cuda() for x in (v, c, b))
    ours = gpu_median_ms(lambda: apportion.solve(tv, tc, tb, method="dp"), max(3, args.repeats // 4))
    read = gpu_median_ms(lambda: tv.sum(), args.repeats)
    cpu_sol = apportion.solve(v, c, b, method="dp")
    cpu_ms = cpu_median_ms(lambda: apportion.solve(v, c, b, method="dp"), 1)
    g = host(apportion.solve(tv, tc, tb, method="dp"))
    same = (np.array_equal(g["choice"], cpu_sol.choice) and np.allclose(g["value"], cpu_sol.value, rtol=1e-12)
            and np.array_equal(g["status"], cpu_sol.status))
    rows.append(("dp B=1024 x (300x4, C=8000) float64", ours, read, ours / read, float("nan"), cpu_ms,
                 "equal" if same else "DIFFERENT", "<= 10 ms"))
    print(f"device: {torch.cuda.get_device_name()}; CPU threads: {apportion._core.num_threads()}; "
          f"median of {args.repeats} CUDA-event timings after a warm-up call")
    print("| case | ours (ms) | one read (ms) | ours / read | torch bisection (ms) | CPU core (ms) | answers vs CPU | target |")
    print("|---|---|---|---|---|---|---|---|")
    for name, ours, read, ratio, bisect, cpu_ms, same, target in rows:
        print(f"| {name} | {ours:.3f} | {read:.3f} | {ratio:.1f}x | {bisect:.3f} | {cpu_ms:.1f} | {same} | {target} |")
    if any(row[6] != "equal" for row in rows):
        raise SystemExit("gpu_table: a GPU answer differs from the CPU's")


if __name__ == "__main__":
    main()
