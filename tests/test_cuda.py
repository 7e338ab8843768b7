"""The CUDA backend: GPU answers against the CPU core (the reference), and the errors a CUDA
request gives where there is no GPU. Tests marked `gpu` skip where no GPU is present
(conftest.py); the arithmetic the kernels share with the CPU (cpp/item_ops.hpp,
cpp/online.hpp) is covered by every CPU test."""

import importlib.util
import math

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


# -- the Python layer of the device paths, checked here -----------------------------------------

def _fake_gpu(monkeypatch):
    """Makes solve() take its device branch without a GPU (target() answers a device); what
    it checks before any launch is then testable on the CPU."""
    monkeypatch.setattr(apportion._device, "target", lambda device, values: "cuda:0")


@pytest.mark.parametrize("kwargs, name", [
    (dict(method="lagrangian", threads=2), "threads"),
    (dict(method="lagrangian", time_limit=1.0), "time_limit"),
    (dict(method="lagrangian", exact_spend=True), "exact_spend"),
    (dict(method="lagrangian", max_memory=1e6), "max_memory"),
    (dict(method="lagrangian", cost_resolution=0.5), "cost_resolution"),
    (dict(method="dp", max_memory=0.5), "max_memory"),
    (dict(method="dp", max_memory=-1), "max_memory"),
    (dict(method="dp", max_states=10), "max_states"),
    (dict(method="exact"), "method"),
])
def test_device_options_are_checked_before_any_launch(monkeypatch, kwargs, name):
    # The resident path used to ignore exact_spend, time_limit and threads, and to read
    # max_memory < 1 as "the default".
    _fake_gpu(monkeypatch)
    with pytest.raises(ValueError, match=name):
        apportion.solve(np.ones((3, 2)), [0.0, 1.0], 1.0, device="cuda", **kwargs)


def test_device_table_limit_is_range_checked():
    from apportion.api import device_table_limit

    assert device_table_limit(None) == 0
    assert device_table_limit(1) == 1
    assert device_table_limit(2.5e9) == 2_500_000_000
    for huge in (float("inf"), 1e300, 2**70):  # no limit, and never past the launcher's uint64
        assert device_table_limit(huge) == 2**64 - 2048
    with pytest.raises(TypeError, match="max_memory"):
        device_table_limit("1e9")


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_host_input_is_checked_before_the_copy():
    from apportion._device import check_host_input
    from apportion._problem import make_problem

    v, c = np.ones((2, 3, 2)), np.ones((2, 3, 2))
    check_host_input(make_problem(v, c, 5.0))
    for bad in (np.nan, -1.0, -np.inf, np.inf):
        c2 = c.copy()
        c2[1, 2, 0] = bad
        with pytest.raises(ValueError, match="costs"):
            check_host_input(make_problem(v, c2, 5.0))
    v2 = v.copy()
    v2[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="values"):
        check_host_input(make_problem(v2, c, 5.0))
    mask = np.ones_like(v2, dtype=bool)
    mask[0, 1, 1] = False  # a masked-out NaN value is not read
    check_host_input(make_problem(v2, c, 5.0, mask=mask))


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
@pytest.mark.parametrize("case", ["lagrangian", "dp", "dp-resolution", "dp-resolution-exact",
                                  "dp-min-masked", "unbatched"])
def test_resident_path_python_layer_matches_cpu(monkeypatch, rng, case):
    import time

    import torch

    from gpu_emulation import host_launch

    monkeypatch.setattr(apportion._device, "_launch", host_launch)
    v, c, b = _batch(rng, B=10, N=12, K=4, integer=case in ("dp", "dp-min-masked", "unbatched"))
    kw = dict(method="lagrangian" if case == "lagrangian" else "dp", mask=None, sense="max",
              exact_spend=False, cost_resolution=None)
    if case.startswith("dp-resolution"):
        kw["cost_resolution"] = 0.25
        kw["exact_spend"] = case.endswith("exact")
    if case == "dp-min-masked":
        kw["sense"] = "min"
        kw["mask"] = rng.random(v.shape) < 0.8
        kw["mask"][:, :, 0] = True
    if case == "unbatched":
        v, c, b = v[0], c[0], b[0]
    cpu = apportion.solve(v, c, b, **{k: x for k, x in kw.items() if x is not None})
    got = apportion._device.solve_resident(
        torch.from_numpy(np.asarray(v)), torch.from_numpy(np.asarray(c)), torch.tensor(b),
        dev=torch.device("cpu"), table_limit=0, started=time.perf_counter(),
        **{k: (torch.from_numpy(x) if k == "mask" and x is not None else x) for k, x in kw.items()})
    np.testing.assert_array_equal(np.asarray(got.status), cpu.status)
    for field in ("choice", "value", "cost", "bound", "gap", "shadow_price", "min_budget"):
        np.testing.assert_allclose(getattr(got, field).numpy(), getattr(cpu, field), rtol=1e-12,
                                   err_msg=field)
    assert got.info.get("cost_resolution") == cpu.info.get("cost_resolution")


# -- on a GPU (skipped here): every field against the CPU core ----------------------------------

def _host_totals(values, costs, choice, mask=None):
    """Value and cost of each allocation, summed exactly on the host (math.fsum)."""
    import math

    v = np.asarray(values, dtype=np.float64)
    v = v[None] if v.ndim == 2 else v
    cst = np.broadcast_to(np.asarray(costs, dtype=np.float64), v.shape)
    ch = np.asarray(choice).reshape(v.shape[:2])
    if mask is not None:
        assert np.take_along_axis(np.broadcast_to(mask, v.shape), ch[:, :, None], 2).all()
    pick = lambda a: np.take_along_axis(a, ch[:, :, None], axis=2)[:, :, 0]  # noqa: E731
    return (np.array([math.fsum(r) for r in pick(v)]), np.array([math.fsum(r) for r in pick(cst)]))


def _check_lagrangian(gpu, cpu, values, costs, budget, mask=None, sense="max"):
    """The GPU Lagrangian against the CPU's on every field. The GPU runs the LP and the first
    rounding but not the CPU's repair pass: bound, shadow price, min_budget and the
    infeasible statuses must be the CPU's; its allocation must be what it reports, feasible,
    no better than the CPU's, within one item's value range of the bound, and the CPU's
    wherever the budget does not bind."""
    sign = 1.0 if sense == "max" else -1.0
    status, cpu_status = np.atleast_1d(gpu.status), np.atleast_1d(cpu.status)
    np.testing.assert_array_equal(status == "infeasible", cpu_status == "infeasible")
    np.testing.assert_allclose(gpu.min_budget, cpu.min_budget, rtol=1e-12)
    ok = cpu_status != "infeasible"
    bound, value = np.atleast_1d(gpu.bound), np.atleast_1d(gpu.value)
    np.testing.assert_allclose(bound[ok], np.atleast_1d(cpu.bound)[ok], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.atleast_1d(gpu.shadow_price)[ok], np.atleast_1d(cpu.shadow_price)[ok],
                               rtol=1e-12)
    assert np.isnan(bound[~ok]).all()
    host_value, host_cost = _host_totals(values, costs, gpu.choice, mask)
    np.testing.assert_allclose(value, host_value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gpu.cost, host_cost, rtol=1e-12, atol=1e-12)
    assert (host_cost[ok] <= np.broadcast_to(budget, ok.shape)[ok]).all()
    signed, cpu_signed = sign * value, sign * np.atleast_1d(cpu.value)
    assert (signed[ok] <= cpu_signed[ok] + 1e-9 * np.abs(cpu_signed[ok]).clip(1)).all()
    v = np.asarray(values, dtype=np.float64) * sign
    v = v[None] if v.ndim == 2 else v
    if mask is not None:
        v = np.where(np.broadcast_to(mask, v.shape), v, np.nan)
    widest = np.nanmax(np.nanmax(v, axis=2) - np.nanmin(v, axis=2), axis=1)  # one item's range
    assert (sign * bound[ok] - signed[ok] <= widest[ok] * (1 + 1e-9) + 1e-9).all()
    np.testing.assert_allclose(np.atleast_1d(gpu.gap)[ok], np.abs(bound - value)[ok], rtol=1e-12)
    assert set(status[ok]) <= {"optimal", "feasible"}
    assert (np.abs(bound - value)[ok & (status == "optimal")] <= 1e-9 * np.abs(bound).clip(1)[ok & (status == "optimal")]).all()
    loose = ok & (np.atleast_1d(cpu.shadow_price) == 0)
    np.testing.assert_array_equal(np.asarray(gpu.choice).reshape(len(ok), -1)[loose],
                                  np.asarray(cpu.choice).reshape(len(ok), -1)[loose])
    np.testing.assert_array_equal(status[loose], cpu_status[loose])


def _binding_batch(rng, B=32, N=40, K=6, dtype=np.float64, integer=False, costs_shape="per-instance"):
    """A batch with every status: instance 0's budget below its cheapest allocation
    (infeasible), binding budgets, and two that do not bind (the last: inf). costs_shape:
    "shared" (K,), "per-item" (N,K) or "per-instance" (B,N,K)."""
    v, c, _ = _batch(rng, B=B, N=N, K=K, integer=integer, dtype=dtype)
    c = {"shared": c[0, 0], "per-item": c[0], "per-instance": c}[costs_shape]
    dense = np.broadcast_to(c, v.shape).astype(np.float64)
    lo, hi = dense.min(axis=2).sum(axis=1), dense.max(axis=2).sum(axis=1)
    b = lo + rng.uniform(0.05, 0.8, B) * (hi - lo)
    if integer:
        b = np.floor(b)
    b[0] = lo[0] - 1.0
    b[-2] = hi[-2] + 1.0
    b[-1] = np.inf
    return v, c, b


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("costs_shape", ["shared", "per-item", "per-instance"])
@pytest.mark.parametrize("sense", ["max", "min"])
def test_gpu_lagrangian_matches_cpu(rng, dtype, costs_shape, sense):
    v, c, b = _binding_batch(rng, dtype=dtype, costs_shape=costs_shape)
    cpu = apportion.solve(v, c, b, method="lagrangian", sense=sense)
    gpu = apportion.solve(v, c, b, method="lagrangian", sense=sense, device="cuda")
    assert {"optimal", "infeasible"} <= set(cpu.status)
    _check_lagrangian(gpu, cpu, v, c, b, sense=sense)


@pytest.mark.gpu
def test_gpu_lagrangian_masked_and_unbatched(rng):
    v, c, b = _binding_batch(rng, B=8)
    mask = rng.random(v.shape) < 0.7
    mask[:, :, 0] = True
    cpu = apportion.solve(v, c, b, method="lagrangian", mask=mask)
    gpu = apportion.solve(v, c, b, method="lagrangian", mask=mask, device="cuda")
    _check_lagrangian(gpu, cpu, v, c, b, mask=mask)
    one_cpu = apportion.solve(v[3], c[3], b[3], method="lagrangian")
    one_gpu = apportion.solve(v[3], c[3], b[3], method="lagrangian", device="cuda")
    assert isinstance(one_gpu.status, str) and np.asarray(one_gpu.choice).shape == (v.shape[1],)
    _check_lagrangian(one_gpu, one_cpu, v[3], c[3], b[3])


@pytest.mark.gpu
def test_gpu_lagrangian_shadow_price_below_the_normal_range_keeps_the_bound_sound():
    # As test_a_shadow_price_below_the_normal_range_keeps_the_bound_sound (test_edges.py): small
    # integer values times 2^-1074 against real costs put the shadow price at a few units of
    # 2^-1074, where the hull's rounded terms need not be the largest; the kernel takes the bound
    # on every Pareto entry as well (block_raw_dual).
    rng = np.random.default_rng(9129)
    costs = rng.random((4, 200, 8)) * 10
    units = np.round(costs * 2)
    budget = costs.min(2).sum(1) + 0.37 * (costs.max(2).sum(1) - costs.min(2).sum(1))
    best = apportion.solve(units, costs, budget, method="exact")
    sol = apportion.solve(units * 2.0**-1074, costs, budget, method="lagrangian", device="cuda")
    for b in range(4):
        feasible = math.fsum(units[b, np.arange(200), best.choice[b]]) * 2.0**-1074
        assert 0.0 < sol.shadow_price[b] < np.finfo(float).tiny
        assert sol.bound[b] >= feasible and sol.value[b] <= sol.bound[b]
        assert sol.status[b] == "feasible" or sol.value[b] >= feasible
        assert math.fsum(costs[b, np.arange(200), sol.choice[b]]) <= budget[b]


@pytest.mark.gpu
@pytest.mark.parametrize("n,k", [(256, 7), (128, 15), (64, 31), (512, 3), (2048, 1), (40, 300)])
def test_gpu_lagrangian_shared_memory_edges(rng, n, k):
    # N*(K+1) in [2043, 2048]: dynamic shared memory just under 48 KiB, plus the kernel's
    # static 144 B, once failed to launch; K=300 sorts its rows by the heap sort.
    v, c, b = _binding_batch(rng, B=4, N=n, K=k)
    cpu = apportion.solve(v, c, b, method="lagrangian")
    gpu = apportion.solve(v, c, b, method="lagrangian", device="cuda")
    _check_lagrangian(gpu, cpu, v, c, b)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gpu_lagrangian_global_memory_in_several_launches(monkeypatch, dtype):
    # N*K*24 bytes past the shared memory: the global scratch path, in launches of two
    # instances (the last one alone), so that every launch's offset is used.
    v, c, b = workloads.instance("routing", 20000, 8, batch=7, seed=3)
    v, c = v.astype(dtype), c.astype(dtype)
    b = b.copy()
    b[0] = c[0].min(axis=1).sum() * 0.99  # infeasible
    per = 20000 * 8 * 24 + 20000 * 24
    monkeypatch.setattr(apportion._device, "LAGRANGIAN_CHUNK_SCRATCH", 2 * per + 64)
    cpu = apportion.solve(v, c, b, method="lagrangian")
    gpu = apportion.solve(v, c, b, method="lagrangian", device="cuda")
    _check_lagrangian(gpu, cpu, v, c, b)


def _check_exact(gpu, cpu):
    """An exact GPU answer (dp) against the CPU's: equal on every field."""
    np.testing.assert_array_equal(gpu.status, cpu.status)
    np.testing.assert_array_equal(gpu.choice, cpu.choice)
    for field in ("value", "cost", "bound", "gap", "shadow_price", "min_budget"):
        np.testing.assert_allclose(getattr(gpu, field), getattr(cpu, field), rtol=1e-12, atol=1e-12,
                                   err_msg=field)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("exact_spend", [False, True])
@pytest.mark.parametrize("max_memory", [None, 20000, 12000])
def test_gpu_dp_matches_cpu(rng, dtype, exact_spend, max_memory):
    # Binding, loose and infeasible budgets; with exact_spend also unreachable ones. A small
    # max_memory runs the batch in many chunks, and 12000 bytes makes some instance's tables
    # too large beside a chunk's frontiers: it is prepared again alone.
    v, c, b = _binding_batch(rng, B=12, N=20, K=5, integer=True, dtype=dtype)
    if exact_spend:
        c[3] = c[3] * 2
        b[3] = np.floor(b[3]) // 2 * 2 + 1  # all costs even, an odd budget: unreachable
    cpu = apportion.solve(v, c, b, method="dp", exact_spend=exact_spend)
    gpu = apportion.solve(v, c, b, method="dp", exact_spend=exact_spend, device="cuda",
                          max_memory=max_memory)
    assert "infeasible" in set(cpu.status) and "optimal" in set(cpu.status)
    _check_exact(gpu, cpu)


@pytest.mark.gpu
def test_gpu_dp_instance_over_max_memory_names_it(rng):
    v, c, b = _batch(rng, B=3, N=20, K=5, integer=True)
    with pytest.raises(ValueError, match="max_memory"):
        apportion.solve(v, c, b, method="dp", device="cuda", max_memory=3000)


@pytest.mark.gpu
@pytest.mark.parametrize("k", [300, 20])
def test_gpu_dp_wide_options_masked_min(rng, k):
    v, c, b = _binding_batch(rng, B=4, N=6, K=k, integer=True)
    mask = rng.random(v.shape) < 0.6
    mask[:, :, 1] = True
    cpu = apportion.solve(v, c, b, method="dp", mask=mask, sense="min")
    gpu = apportion.solve(v, c, b, method="dp", mask=mask, sense="min", device="cuda")
    _check_exact(gpu, cpu)


@pytest.mark.gpu
@pytest.mark.parametrize("exact_spend", [False, True])
def test_gpu_dp_cost_resolution_matches_cpu(rng, exact_spend):
    v, c, b = _binding_batch(rng, B=10, N=15, K=4)
    cpu = apportion.solve(v, c, b, method="dp", cost_resolution=0.25, exact_spend=exact_spend)
    gpu = apportion.solve(v, c, b, method="dp", cost_resolution=0.25, exact_spend=exact_spend,
                          device="cuda")
    _check_exact(gpu, cpu)


@pytest.mark.gpu
def test_gpu_dp_solved_a_cell_lower_matches_cpu():
    # The grid's optimum over the real budget by rounding, solved a cell lower: "feasible" with
    # the first cell's bound on both (test_edges.py has the instance's story).
    values = np.array([[[3.0, 5.0], [2.0, 4.0]]] * 2)
    costs = np.array([[[1.5, 2.4000000000000004], [1.1, 2.0]]] * 2)
    cpu = apportion.solve(values, costs, np.array([3.5, 3.6]), method="dp", cost_resolution=0.1)
    gpu = apportion.solve(values, costs, np.array([3.5, 3.6]), method="dp", cost_resolution=0.1, device="cuda")
    assert cpu.status.tolist() == ["feasible", "optimal"]
    _check_exact(gpu, cpu)


@pytest.mark.gpu
@pytest.mark.parametrize("mirror", ["euclidean", "entropy"])
@pytest.mark.parametrize("R", [1, 3, 10])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gpu_simulate_online_matches_cpu(rng, mirror, R, dtype):
    S, T, K = 64, 200, 5
    v = rng.random((S, T, K)).astype(dtype)
    budget = np.full(R, 30.0) if R > 1 else 30.0
    c = (rng.random((S, T, K, R)) if R > 1 else rng.random((S, T, K))).astype(dtype)
    cpu = apportion.simulate_online(v, c, budget, mirror=mirror)
    gpu = apportion.simulate_online(v, c, budget, mirror=mirror, device="cuda")
    np.testing.assert_array_equal(gpu.choice, cpu.choice)
    for field in ("value", "spent", "prices", "stalled"):
        np.testing.assert_allclose(getattr(gpu, field), getattr(cpu, field), rtol=1e-12, err_msg=field)


@pytest.mark.gpu
def test_gpu_simulate_online_without_skips_matches_cpu(rng):
    # Streams that may not skip need the CPU's reserve; the device call must give its answer.
    v = rng.random((16, 100, 4))
    c = rng.random((16, 100, 4)) + 0.5
    cpu = apportion.simulate_online(v, c, 80.0, skip_allowed=False)
    gpu = apportion.simulate_online(v, c, 80.0, skip_allowed=False, device="cuda")
    for field in ("choice", "value", "spent", "prices", "stalled"):
        np.testing.assert_array_equal(getattr(gpu, field), getattr(cpu, field), err_msg=field)


def _resident(rng, B=4):
    import torch

    v, c, b = _batch(rng, B=B)
    return v, c, b, [torch.from_numpy(x).cuda() for x in (v, c, b)]


@pytest.mark.gpu
@pytest.mark.parametrize("bad_cost", [-1.0, np.nan, -np.inf, np.inf])
def test_gpu_kernel_reports_bad_costs(rng, bad_cost):
    # Device-resident input reaches the kernels unchecked: their own checks must name it (a
    # first cost of exactly -1.0 once wrote before the item's slot, a NaN left the sort's
    # order partly unwritten).
    v, c, b, (tv, tc, tb) = _resident(rng)
    tc[1, 3, 2] = bad_cost
    tc[2, 0, :] = bad_cost
    for method in ("lagrangian", "dp"):
        with pytest.raises(ValueError, match="costs"):
            apportion.solve(tv, tc, tb, method=method)
    sol = apportion.solve(v, c, b, method="lagrangian", device="cuda")  # the context survived
    _check_lagrangian(sol, apportion.solve(v, c, b, method="lagrangian"), v, c, b)


@pytest.mark.gpu
def test_gpu_kernel_reports_bad_values_budgets_masks(rng):
    import torch

    v, c, b, (tv, tc, tb) = _resident(rng)
    bad_v = tv.clone()
    bad_v[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="values"):
        apportion.solve(bad_v, tc, tb, method="lagrangian")
    bad_b = tb.clone()
    bad_b[2] = float("nan")
    with pytest.raises(ValueError, match="budget"):
        apportion.solve(tv, tc, bad_b, method="lagrangian")
    mask = torch.ones(v.shape, dtype=torch.bool, device="cuda")
    mask[1, 4] = False
    with pytest.raises(ValueError, match="mask"):
        apportion.solve(tv, tc, tb, method="lagrangian", mask=mask)
    fractional = tc.clone()
    fractional[1, 3, 2] = 1.5
    with pytest.raises(ValueError, match="integer"):  # the dp kernel's own integer check
        apportion.solve(tv, fractional, tb, method="dp")


@pytest.mark.gpu
def test_gpu_host_input_is_checked_before_the_copy(rng):
    v, c, b = _batch(rng, B=2)
    c[1, 3, 2] = np.nan
    for method in ("lagrangian", "dp"):
        with pytest.raises(ValueError, match="costs"):
            apportion.solve(v, c, b, method=method, device="cuda")


@pytest.mark.gpu
def test_gpu_torch_tensors_stay_on_device_and_follow_the_stream(rng):
    import torch

    v, c, b = _binding_batch(rng, B=8)
    cpu = apportion.solve(v, c, b, method="lagrangian")
    tv, tc, tb = (torch.from_numpy(x).cuda() for x in (v, c, b))
    sol = apportion.solve(tv, tc, tb, method="lagrangian")
    assert sol.choice.is_cuda and sol.value.is_cuda and sol.bound.is_cuda
    _check_lagrangian(_to_host(sol), cpu, v, c, b)
    # On a side stream, the values are written by work queued behind a long sleep: a solve
    # that did not run on the current stream would read the zeros it held before.
    side = torch.cuda.Stream()
    late = torch.zeros_like(tv)
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)
        late.copy_(tv)
        again = apportion.solve(late, tc, tb, method="lagrangian")
    side.synchronize()
    _check_lagrangian(_to_host(again), cpu, v, c, b)


def _to_host(sol):
    import dataclasses

    def host(x):
        return x.cpu().numpy() if hasattr(x, "cpu") else x
    return dataclasses.replace(sol, **{f.name: host(getattr(sol, f.name)) for f in dataclasses.fields(sol)
                                       if hasattr(getattr(sol, f.name), "cpu")})


@pytest.mark.gpu
def test_gpu_cupy_arrays_dlpack_and_cuda_array_interface(rng):
    cupy = pytest.importorskip("cupy")

    class CaiOnly:  # a producer with only __cuda_array_interface__ (as Numba's arrays)
        def __init__(self, a):
            self.a = a
            self.__cuda_array_interface__ = a.__cuda_array_interface__

    v, c, b = _binding_batch(rng, B=8)
    cpu = apportion.solve(v, c, b, method="lagrangian")
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        cv, cc, cb = (cupy.asarray(x) for x in (v, c, b))
        via_dlpack = apportion.solve(cv, cc, cb, method="lagrangian")
        via_cai = apportion.solve(CaiOnly(cv), CaiOnly(cc), CaiOnly(cb), method="lagrangian")
    for sol in (via_dlpack, via_cai):
        _check_lagrangian(_to_host(sol), cpu, v, c, b)


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


@pytest.mark.parametrize("k_range, cost_range", [((1, 20), 5), ((17, 400), 40)])
def test_item_frontier_matches_a_reference(k_range, cost_range):
    # Up to 16 options a row is sorted by rank; past that the kernels use the heap sort
    # (sort_long_by_cost): the same order, ties by index.
    rng = np.random.default_rng(k_range[0])
    for _ in range(200):
        k = int(rng.integers(*k_range))
        costs = rng.integers(0, cost_range, k).astype(float)
        values = rng.integers(0, cost_range + 10, k).astype(float)
        got = [(o, c, v) for o, c, v in apportion._core._item_frontier(values, costs)]
        assert got == _pareto_reference(list(values), list(costs)), (list(values), list(costs))


def test_item_frontier_long_row_with_bad_costs_stays_in_bounds():
    costs = np.random.default_rng(6).random(64)
    costs[[3, 40]] = np.nan  # the heap sort puts NaN costs last
    costs[7] = -np.inf
    entries = apportion._core._item_frontier(np.arange(64.0), costs)
    assert len({e[0] for e in entries}) == len(entries) and all(0 <= e[0] < 64 for e in entries)


def _run_gpu_tests_emulated(env_extra):
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]), **env_extra)
    return subprocess.run([sys.executable, "-m", "pytest", os.path.join(here, "test_cuda.py"), "-q", "-x",
                           "-p", "gpu_emulation", "-p", "no:cacheprovider", "-k", "gpu"],
                          cwd=os.path.dirname(here), env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
@pytest.mark.skipif(apportion.cuda_available(), reason="a GPU is present: the GPU tests run for real")
def test_gpu_tests_pass_on_the_emulation_and_fail_on_a_broken_kernel():
    # The GPU tests' own code runs here with the CPU core as the "kernel" (gpu_emulation.py);
    # an instance's answer spoiled in the launcher must make them fail.
    ok = _run_gpu_tests_emulated({})
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    assert " passed" in ok.stdout and " skipped" not in ok.stdout.split("\n")[-2]
    broken = _run_gpu_tests_emulated({"APPORTION_GPU_BREAK": "neighbour"})
    assert broken.returncode == 1 and "failed" in broken.stdout, broken.stdout[-3000:]
