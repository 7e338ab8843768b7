"""Exact solvers (core enumeration and dense DP) per instance class, against CP-SAT and HiGHS.

    python -m pytest bench/bench_exact.py --benchmark-only [--peers]

Targets (2-core machine, one instance at a time, one core): see the exact-solver issue; dp at
N=300,K=4,C about 8000 <= 5 ms, and a frontier of 8000 budgets no dearer than one dp solve.
"""

import numpy as np
import pytest

import apportion
from apportion import workloads



@pytest.mark.parametrize("kind", workloads.CLASSIC)
@pytest.mark.parametrize("n,k,R", [(1000, 8, 1000), (1000, 10, 1000), (10000, 10, 1000),
                                   (1000, 100, 1000), (1000, 8, 10000)])
def test_exact(benchmark, kind, n, k, R):
    values, costs, budget = workloads.instance(kind, n, k, R=R, seed=0)
    benchmark.group = f"{kind} N={n} K={k} R={R}"
    sol = benchmark.pedantic(apportion.solve, args=(values, costs, budget),
                             kwargs=dict(method="exact", threads=1), rounds=3, warmup_rounds=1)
    assert sol.status == "optimal"


def _dp_instance():
    rng = np.random.default_rng(0)
    values = rng.random((300, 4))
    costs = np.array([0.0, 20.0, 45.0, 80.0])  # a budget grid of about 8000 cells
    return values, costs, 8000.0


def test_dp_300x4(benchmark):
    values, costs, budget = _dp_instance()
    benchmark.group = "dp N=300 K=4 C=8000"
    benchmark(apportion.solve, values, costs, budget, method="dp", threads=1)


def test_frontier_300x4(benchmark):
    values, costs, budget = _dp_instance()
    benchmark.group = "dp N=300 K=4 C=8000"
    front = benchmark(apportion.frontier, values, costs, budget)
    assert front.budgets.size == 8001


@pytest.mark.parametrize("threads", [1, None])
@pytest.mark.parametrize("kind", workloads.CLASSIC)
def test_exact_batch_scales_with_cores(benchmark, kind, threads):
    # One thread against all cores on the same batch: the ratio is the scaling. A warm-up
    # round first: the first call on a thread allocates its workspace.
    values, costs, budget = workloads.instance(kind, 1000, 8, batch=16, seed=0)
    benchmark.group = f"batch of 16 {kind} N=1000 K=8"
    benchmark.pedantic(apportion.solve, args=(values, costs, budget),
                       kwargs=dict(method="exact", threads=threads), rounds=3 if kind == "strongly" else 20,
                       warmup_rounds=1)


@pytest.mark.parametrize("peer", ["cpsat", "milp"])
@pytest.mark.parametrize("kind", workloads.CLASSIC)
def test_peer(benchmark, peers_enabled, peer, kind):
    from apportion import reference

    values, costs, budget = workloads.instance(kind, 1000, 8, seed=0)
    benchmark.group = f"{kind} N=1000 K=8 R=1000"
    benchmark.pedantic(getattr(reference, peer), args=(values, costs, budget),
                       kwargs=dict(time_limit=60.0), rounds=1)
