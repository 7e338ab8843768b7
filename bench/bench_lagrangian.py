"""The fast path against its peers on the issue's sizes.

    python -m pytest bench/bench_lagrangian.py --benchmark-only [--peers]

Targets (2-core machine): N=300,K=4 <= 30 us from the Python call to the Solution;
N=1000,K=8 <= 100 us; B=1000 x (N=1000,K=8) <= 100 ms.
"""

import pytest

import apportion
from apportion import workloads

SIZES = [(300, 4), (1000, 8), (5000, 16)]


@pytest.mark.parametrize("kind", ["routing", "uncorrelated"])
@pytest.mark.parametrize("n,k", SIZES)
def test_lagrangian(benchmark, kind, n, k):
    values, costs, budget = workloads.instance(kind, n, k, seed=0)
    benchmark.group = f"{kind} N={n} K={k}"
    sol = benchmark(apportion.solve, values, costs, budget, method="lagrangian")
    benchmark.extra_info["relative_gap"] = float(sol.relative_gap)


@pytest.mark.parametrize("kind", ["routing"])
@pytest.mark.parametrize("n,k", [(300, 4)])
def test_lagrangian_shared_tier_costs(benchmark, kind, n, k):
    """Costs given once per tier (K,), as a scheduler passes them."""
    values, costs, budget = workloads.instance(kind, n, k, seed=0)
    benchmark.group = f"{kind} N={n} K={k}"
    benchmark(apportion.solve, values, costs[0], budget, method="lagrangian")


def test_lagrangian_batch(benchmark):
    values, costs, budget = workloads.instance("routing", 1000, 8, batch=1000, seed=0)
    benchmark.group = "routing B=1000 N=1000 K=8"
    benchmark.pedantic(apportion.solve, args=(values, costs, budget),
                       kwargs=dict(method="lagrangian"), rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("peer", ["cpsat", "milp", "lp"])
@pytest.mark.parametrize("n,k", SIZES[:2])
def test_peer(benchmark, peers_enabled, peer, n, k):
    from apportion import reference

    values, costs, budget = workloads.instance("routing", n, k, seed=0)
    benchmark.group = f"routing N={n} K={k}"
    benchmark.pedantic(getattr(reference, peer), args=(values, costs, budget), rounds=1)
