"""The CUDA backend against a pure-torch GPU bisection and the CPU core, in the same run.

    python -m pytest bench/bench_cuda.py --benchmark-only

Skips where no GPU is present. Each group solves the same batch three ways: our kernels
(apportion.solve on CUDA tensors, device-resident), a pure-torch GPU bisection on the price
lambda (x(lambda) = argmax_k v - lambda w per item, 60 halvings, batched), and the CPU core on
numpy. The GPU timings synchronise the device before stopping the clock.
"""

import importlib.util

import numpy as np
import pytest

import apportion
from apportion import workloads

if not apportion.cuda_available() or importlib.util.find_spec("torch") is None:
    pytest.skip("no CUDA device (or no torch): the GPU benchmarks need one", allow_module_level=True)

import torch  # noqa: E402

SIZES = [(1, 1000, 8), (1000, 300, 4), (1000, 1000, 8), (64, 5000, 16)]


def torch_bisection(v, c, budget, iters=60):
    """The Lagrangian dual by bisection on lambda, in torch: returns (choice, value, bound)."""
    slope = (v.max(dim=2).values - v.min(dim=2).values).sum(dim=1) / c.min(dim=2).values.clamp_min(1e-12).sum(dim=1)
    lo = torch.zeros_like(budget)
    hi = torch.full_like(budget, 1.0) * (v.abs().max() / c[c > 0].min().clamp_min(1e-12))
    hi = torch.maximum(hi, slope)
    for _ in range(iters):
        mid = (lo + hi) / 2
        x = (v - mid[:, None, None] * c).argmax(dim=2)
        spend = torch.gather(c, 2, x[:, :, None])[:, :, 0].sum(dim=1)
        over = spend > budget
        lo = torch.where(over, mid, lo)
        hi = torch.where(over, hi, mid)
    x = (v - hi[:, None, None] * c).argmax(dim=2)
    value = torch.gather(v, 2, x[:, :, None])[:, :, 0].sum(dim=1)
    bound = (v - hi[:, None, None] * c).max(dim=2).values.sum(dim=1) + hi * budget
    return x, value, bound


def _sync_after(fn):
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out
    return run


@pytest.mark.parametrize("b,n,k", SIZES)
@pytest.mark.parametrize("impl", ["ours-cuda", "torch-bisection", "ours-cpu"])
def test_lagrangian_gpu(benchmark, b, n, k, impl):
    values, costs, budget = workloads.instance("routing", n, k, batch=b, seed=0)
    benchmark.group = f"lagrangian B={b} N={n} K={k}"
    if impl == "ours-cpu":
        sol = benchmark(apportion.solve, values, costs, budget, method="lagrangian")
        benchmark.extra_info["mean_value"] = float(np.mean(sol.value))
        return
    tv, tc, tb = (torch.from_numpy(np.ascontiguousarray(x)).cuda() for x in (values, costs, budget))
    if impl == "ours-cuda":
        sol = benchmark(_sync_after(lambda: apportion.solve(tv, tc, tb, method="lagrangian")))
        benchmark.extra_info["mean_value"] = float(sol.value.mean())
    else:
        _, value, _ = benchmark(_sync_after(lambda: torch_bisection(tv, tc, tb)))
        benchmark.extra_info["mean_value"] = float(value.mean())


@pytest.mark.parametrize("impl", ["ours-cuda", "ours-cpu"])
def test_dp_rollouts_gpu(benchmark, impl):
    """The rollout-budget setting: 256 prompts, K=127 options, 2048 rollouts, 64 steps batched."""
    rng = np.random.default_rng(0)
    B, N = 64, 256
    n = np.arange(2, 129, dtype=np.float64)
    p = rng.uniform(0.05, 0.95, (B, N, 1))
    values = (1 - p ** n - (1 - p) ** n) * p * (1 - p) ** 2
    costs = np.broadcast_to(n, (B, N, n.size)).copy()
    budget = np.full(B, 2048.0)
    benchmark.group = "dp rollouts B=64 N=256 K=127"
    if impl == "ours-cpu":
        benchmark(apportion.solve, values, costs, budget, method="dp")
    else:
        tv, tc, tb = (torch.from_numpy(x).cuda() for x in (values, costs, budget))
        benchmark(_sync_after(lambda: apportion.solve(tv, tc, tb, method="dp")))


@pytest.mark.parametrize("impl", ["ours-cuda", "ours-cpu"])
def test_simulate_online_gpu(benchmark, impl):
    rng = np.random.default_rng(0)
    S, T, K = 4096, 1000, 4
    v, c = rng.random((S, T, K)), rng.random((T, K))
    benchmark.group = f"simulate_online S={S} T={T} K={K}"
    benchmark(apportion.simulate_online, v, c, T * 0.3, record_choices=False,
              device="cuda" if impl == "ours-cuda" else None)
