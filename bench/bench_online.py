"""Online allocation benchmarks: decisions per second from C++ and from Python, and simulation
throughput.

    python -m pytest bench/bench_online.py --benchmark-only

Targets (2-core machine, K=8): <= 2 us per decision inside the core, <= 10 us per
`OnlineAllocator.decide` call from Python, 1000 streams x 10,000 requests in <= 2 s.
The per-decision core time is the simulation time divided by the decisions it made
(`extra_info["ns_per_decision"]`), single-threaded so that it is one core's rate.
"""

import numpy as np
import pytest

import apportion

K = 8


@pytest.fixture(scope="module")
def requests():
    rng = np.random.default_rng(0)
    return rng.random((4096, K)), rng.random((4096, K))


@pytest.mark.parametrize("mirror", ["euclidean", "entropy"])
def test_decide_python(benchmark, requests, mirror):
    """One `.decide` call per request from Python (validation, the native call, the update)."""
    values, costs = requests
    # A budget and horizon that never run out, so every call does the same work.
    alloc = apportion.OnlineAllocator(1e15, 10**12, mirror=mirror)
    state = {"i": 0}

    def one():
        i = state["i"] = (state["i"] + 1) & 4095
        return alloc.decide(values[i], costs[i])

    benchmark.pedantic(one, rounds=20, iterations=5000, warmup_rounds=1)


def test_decide_batch_python(benchmark, requests):
    """64 requests per `.decide` call."""
    values, costs = requests
    alloc = apportion.OnlineAllocator(1e15, 10**12)
    benchmark(alloc.decide, values[:64], costs[:64])
    benchmark.extra_info["requests_per_call"] = 64


@pytest.mark.parametrize("mirror", ["euclidean", "entropy"])
def test_decisions_in_core(benchmark, mirror):
    """Core rate: one stream of 200,000 requests, one thread."""
    rng = np.random.default_rng(1)
    T = 200_000
    values = rng.random((1, T, K))
    costs = rng.random((T, K))
    benchmark.pedantic(apportion.simulate_online, args=(values, costs, 0.2 * T),
                       kwargs=dict(mirror=mirror, threads=1, record_choices=False), rounds=5)
    benchmark.extra_info["ns_per_decision"] = benchmark.stats.stats.min / T * 1e9


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_simulate_1000x10000(benchmark, dtype):
    """1000 streams x 10,000 requests, K=8, all threads (the inputs are built outside the timing)."""
    S, T = 1000, 10_000
    rng = np.random.default_rng(2)
    values = rng.random((S, T, K), dtype=dtype)
    costs = rng.random((T, K)).astype(dtype)
    benchmark.pedantic(apportion.simulate_online, args=(values, costs, 0.2 * T),
                       kwargs=dict(record_choices=False), rounds=3)
    benchmark.extra_info["decisions_per_second"] = S * T / benchmark.stats.stats.min


def test_mirror_offline_r3(benchmark):
    """method="mirror" on N=5000 items, K=8, R=3 resources."""
    rng = np.random.default_rng(3)
    N, R = 5000, 3
    values = rng.random((N, K))
    costs = rng.random((N, K, R))
    budget = np.array([0.3, 0.35, 0.4]) * N
    sol = benchmark(apportion.solve, values, costs, budget, method="mirror")
    benchmark.extra_info["relative_gap"] = float(sol.relative_gap)
