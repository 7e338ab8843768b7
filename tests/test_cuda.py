"""The CUDA backend: GPU answers against the CPU core (the reference), and the errors a CUDA
request gives where there is no GPU. Tests marked `gpu` skip where no GPU is present
(conftest.py); the arithmetic the kernels share with the CPU (cpp/item_ops.hpp,
cpp/online.hpp) is covered by every CPU test."""

import importlib.util

import numpy as np
import pytest

import apportion
from apportion import workloads

HAS_TORCH = importlib.util.find_spec("torch") is not None
DEVICES = ["cpu"] + (["cuda"] if apportion.cuda_available() else [])


def _batch(rng, B=16, N=40, K=6, integer=False, dtype=np.float64):
    values = rng.random((B, N, K)).astype(dtype)
    costs = rng.random((B, N, K)) * 10
    if integer:
        costs = np.floor(costs)
    costs = costs.astype(dtype)
    lo, hi = costs.min(axis=2).sum(axis=1), costs.max(axis=2).sum(axis=1)
    budget = lo + rng.uniform(-0.05, 0.8, B) * (hi - lo)
    if integer:
        budget = np.floor(budget)
    return values, costs, budget


# -- where no GPU is present (these run here) -----------------------------------------------------

@pytest.mark.skipif(apportion.cuda_available(), reason="a GPU is present")
@pytest.mark.parametrize("method", ["lagrangian", "dp", "auto"])
def test_cuda_request_without_gpu_names_device(method):
    with pytest.raises(RuntimeError, match="device='cuda'"):
        apportion.solve(np.ones((3, 2)), [0.0, 1.0], 1.0, method=method, device="cuda")


@pytest.mark.skipif(apportion.cuda_available(), reason="a GPU is present")
def test_simulate_online_cuda_without_gpu_names_device(rng):
    with pytest.raises(RuntimeError, match="device='cuda:0'"):
        apportion.simulate_online(rng.random((4, 3)), [0.0, 1.0, 2.0], 5.0, device="cuda:0")


def test_unknown_device_is_a_value_error():
    with pytest.raises(ValueError, match="device"):
        apportion.solve(np.ones((3, 2)), [0.0, 1.0], 1.0, device="tpu")


def test_device_cpu_equals_default(rng):
    v, c, b = _batch(rng)
    a = apportion.solve(v, c, b, method="lagrangian", device="cpu")
    d = apportion.solve(v, c, b, method="lagrangian")
    np.testing.assert_array_equal(a.choice, d.choice)


def test_build_reports_cuda_consistently():
    assert apportion.cuda_available() == (apportion.cuda_built() and apportion.cuda_device_count() > 0)
    if not apportion.cuda_built():
        assert not hasattr(apportion._core, "cuda_lagrangian")
    else:
        assert hasattr(apportion._core, "cuda_lagrangian")


# -- on a GPU (skipped here) ----------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shared_costs", [False, True])
def test_gpu_lagrangian_matches_cpu(rng, dtype, shared_costs):
    v, c, b = _batch(rng, B=32, dtype=dtype)
    if shared_costs:
        c = c[0, 0]
    cpu = apportion.solve(v, c, b, method="lagrangian")
    gpu = apportion.solve(v, c, b, method="lagrangian", device="cuda")
    np.testing.assert_array_equal(gpu.status == "infeasible", cpu.status == "infeasible")
    ok = cpu.status != "infeasible"
    np.testing.assert_allclose(gpu.bound[ok], cpu.bound[ok], rtol=1e-6)
    np.testing.assert_allclose(gpu.shadow_price[ok], cpu.shadow_price[ok], rtol=1e-6)
    np.testing.assert_allclose(gpu.min_budget, cpu.min_budget, rtol=1e-6)
    assert (gpu.cost[ok] <= b[ok]).all()
    assert (gpu.value[ok] <= gpu.bound[ok] + 1e-9 * np.abs(gpu.bound[ok]).clip(1)).all()
    # The GPU skips the repair pass and second rounding: its primal is at most the CPU's, and
    # equal where the budget does not bind.
    assert (gpu.value[ok] <= cpu.value[ok] + 1e-6 * np.abs(cpu.value[ok]).clip(1)).all()
    loose = ok & (cpu.shadow_price == 0)
    np.testing.assert_array_equal(gpu.choice[loose], cpu.choice[loose])


@pytest.mark.gpu
def test_gpu_lagrangian_global_memory_path():
    # Too large for shared memory (N*K*24 bytes > 227 KB): the global scratch path.
    v, c, b = workloads.instance("routing", 20000, 8, batch=2)
    cpu = apportion.solve(v, c, b, method="lagrangian")
    gpu = apportion.solve(v, c, b, method="lagrangian", device="cuda")
    np.testing.assert_allclose(gpu.bound, cpu.bound, rtol=1e-6)
    np.testing.assert_allclose(gpu.shadow_price, cpu.shadow_price, rtol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("exact_spend", [False, True])
def test_gpu_dp_matches_cpu(rng, exact_spend):
    v, c, b = _batch(rng, B=12, N=20, K=5, integer=True)
    cpu = apportion.solve(v, c, b, method="dp", exact_spend=exact_spend)
    gpu = apportion.solve(v, c, b, method="dp", exact_spend=exact_spend, device="cuda")
    np.testing.assert_array_equal(gpu.status, cpu.status)
    np.testing.assert_array_equal(gpu.choice, cpu.choice)
    np.testing.assert_allclose(gpu.value, cpu.value, rtol=1e-6)
    np.testing.assert_allclose(gpu.shadow_price, cpu.shadow_price, rtol=1e-6)


@pytest.mark.gpu
def test_gpu_dp_wide_options(rng):
    v, c, b = _batch(rng, B=2, N=6, K=300, integer=True)
    cpu = apportion.solve(v, c, b, method="dp")
    gpu = apportion.solve(v, c, b, method="dp", device="cuda")
    np.testing.assert_array_equal(gpu.choice, cpu.choice)


@pytest.mark.gpu
@pytest.mark.parametrize("mirror", ["euclidean", "entropy"])
@pytest.mark.parametrize("R", [1, 3, 10])
def test_gpu_simulate_online_matches_cpu(rng, mirror, R):
    S, T, K = 64, 200, 5
    v = rng.random((S, T, K))
    budget = np.full(R, 30.0) if R > 1 else 30.0
    c = rng.random((S, T, K, R)) if R > 1 else rng.random((S, T, K))
    cpu = apportion.simulate_online(v, c, budget, mirror=mirror)
    gpu = apportion.simulate_online(v, c, budget, mirror=mirror, device="cuda")
    np.testing.assert_array_equal(gpu.choice, cpu.choice)
    np.testing.assert_allclose(gpu.value, cpu.value, rtol=1e-6)
    np.testing.assert_allclose(gpu.prices, cpu.prices, rtol=1e-6)


@pytest.mark.gpu
def test_gpu_bad_input_is_reported(rng):
    v, c, b = _batch(rng, B=2)
    c[1, 3, 2] = -1.0
    with pytest.raises(ValueError, match="costs"):
        apportion.solve(v, c, b, method="lagrangian", device="cuda")
    c[1, 3, 2] = 1.5
    with pytest.raises(ValueError, match="integer"):
        apportion.solve(v, c, b, method="dp", device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_gpu_torch_tensor_stays_on_device(rng):
    import torch

    v, c, b = _batch(rng, B=8)
    tv, tc, tb = (torch.from_numpy(x).cuda() for x in (v, c, b))
    sol = apportion.solve(tv, tc, tb, method="lagrangian")
    assert sol.choice.is_cuda and sol.value.is_cuda and sol.bound.is_cuda
    host = apportion.solve(v, c, b, method="lagrangian", device="cuda")
    np.testing.assert_array_equal(sol.choice.cpu().numpy(), host.choice)
    with torch.cuda.stream(torch.cuda.Stream()):
        again = apportion.solve(tv, tc, tb, method="lagrangian")
    np.testing.assert_array_equal(again.choice.cpu().numpy(), host.choice)


@pytest.mark.gpu
def test_gpu_method_without_kernel_names_method():
    with pytest.raises(ValueError, match="method"):
        apportion.solve(np.ones((3, 2)), [0.0, 1.0], 1.0, method="exact", device="cuda")


# --- the kernels' shared per-item functions on the host, with the unchecked costs the kernels
# see (the CPU solvers reject such input before these functions run). Under .ci/sanitize.sh a
# write out of bounds fails the run.

def _pareto_reference(values, costs):
    """Options by (cost, index) kept when worth more than every cheaper one; at equal cost the
    most valuable (first by index) stands for the group."""
    order = sorted(range(len(costs)), key=lambda j: (costs[j], -values[j], j))
    out, best = [], -np.inf
    for j in order:
        if values[j] > best:
            if out and out[-1][1] == costs[j]:
                out.pop()
            out.append((j, costs[j], values[j]))
            best = values[j]
    return out


@pytest.mark.parametrize("costs", [[-1.0, 2.0, 3.0], [2.0, -1.0, -1.0], [np.nan, 1.0, 2.0],
                                   [2.0, np.nan, 1.0, -np.inf], [np.nan, np.nan, np.nan], [-np.inf, -1.0]])
def test_item_frontier_with_bad_costs_stays_in_bounds(costs):
    # A first cost of -1.0 used to match the filter's sentinel and write before the item's slot;
    # a NaN left an entry of the rank sort's order unwritten.
    values = np.arange(1.0, len(costs) + 1)
    entries = apportion._core._item_frontier(values, np.array(costs))
    assert len(entries) <= len(costs)
    assert sorted({e[0] for e in entries}) == sorted(e[0] for e in entries)  # distinct options
    assert all(0 <= e[0] < len(costs) for e in entries)
    if not np.isnan(costs).any():  # negative costs still order: the list is the reference's
        assert [tuple(e) for e in entries] == _pareto_reference(list(values), costs)


def test_item_frontier_matches_a_reference():
    rng = np.random.default_rng(5)
    for _ in range(300):
        k = int(rng.integers(1, 20))
        costs = rng.integers(0, 5, k).astype(float)
        values = rng.integers(0, 6, k).astype(float)
        got = [(o, c, v) for o, c, v in apportion._core._item_frontier(values, costs)]
        assert got == _pareto_reference(list(values), list(costs)), (list(values), list(costs))
