"""Benchmarks of apportion.ray: sharded-solve throughput, overhead per shard, object-store
bandwidth, and regret against sync_every of the online servers.

    python bench/bench_ray.py                 # all tables (a few minutes on 2 cores)
    python bench/bench_ray.py --only regret   # one table: throughput | overhead | regret

Starts its own local Ray cluster (`--cpus`, default 2). Times: every configuration is run
`--repeats` times, alternating between configurations, and the median is reported. Wall times
are what throughput is; the CPU seconds (this process plus the workers', measured inside each
task with time.process_time) are reported beside them because they do not depend on what else
the machine runs. Not a pytest suite: it has no test functions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import apportion


def _load() -> str:
    """The 1-minute load average: wall times mean little when it is well above the CPU count."""
    return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"


def _instances(B, N, K, seed=0):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(B, N, K))
    costs = rng.integers(0, 9, (B, N, K)).astype(float)
    budget = 0.4 * costs.max(axis=2).sum(axis=1)
    return values, costs, budget


def _worker_cpu_solve(values, costs, budget, lo, hi, method):
    """A solve task that also reports its process CPU time (what the worker spent)."""
    started = time.process_time()
    sol = apportion.solve(values[lo:hi], costs[lo:hi], budget[lo:hi], method=method, threads=1)
    return sol.value.size, time.process_time() - started


def throughput(args):
    import ray

    import apportion.ray as ar

    B, N, K = args.batch, args.items, args.options
    values, costs, budget = _instances(B, N, K)
    method = args.method
    configs = {
        "apportion.solve, 1 thread (in process)":
            lambda: apportion.solve(values, costs, budget, method=method, threads=1),
        "apportion.solve, 2 threads (in process)":
            lambda: apportion.solve(values, costs, budget, method=method, threads=2),
        "apportion.ray.solve, 1 worker (1 shard)":
            lambda: ar.solve(values, costs, budget, method=method, shards=1),
        "apportion.ray.solve, 2 workers (2 shards)":
            lambda: ar.solve(values, costs, budget, method=method, shards=2),
        "apportion.ray.solve, 2 workers (16 shards)":
            lambda: ar.solve(values, costs, budget, method=method, shards=16),
    }
    want = apportion.solve(values, costs, budget, method=method)
    for run in configs.values():  # warm up (workers started, module imported) and check
        assert np.array_equal(run().choice, want.choice)
    walls = {name: [] for name in configs}
    cpus = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, run in configs.items():
            w0, c0 = time.perf_counter(), time.process_time()
            run()
            walls[name].append(time.perf_counter() - w0)
            cpus[name].append(time.process_time() - c0)
    # Workers' CPU time of the same shards, measured inside the tasks.
    task = ray.remote(_worker_cpu_solve)
    refs = [ray.put(x) for x in (values, costs, budget)]
    worker_cpu = {}
    for shards in (1, 2, 16):
        edges = [B * s // shards for s in range(shards + 1)]
        samples = []
        for _ in range(args.repeats):
            out = ray.get([task.remote(*refs, lo, hi, method) for lo, hi in zip(edges[:-1], edges[1:])])
            samples.append(sum(c for _, c in out))
        worker_cpu[shards] = statistics.median(samples)
    print(f"\nThroughput: B={B} instances of N={N} x K={K}, method={method!r}, {args.cpus} CPUs, "
          f"median of {args.repeats} alternating runs; load average {_load()}")
    print("| configuration | wall s (median) | instances/s | driver CPU s | worker CPU s |")
    print("|---|---|---|---|---|")
    for name in configs:
        wall = statistics.median(walls[name])
        shards = 1 if "1 shard" in name else (2 if "2 shards" in name else (16 if "16 shards" in name else None))
        wcpu = f"{worker_cpu[shards]:.3f}" if shards else "-"
        print(f"| {name} | {wall:.3f} | {B / wall:,.0f} | {statistics.median(cpus[name]):.3f} | {wcpu} |")


def _noop_solve(values, lo, hi):
    return hi - lo


def overhead(args):
    """Cost of one more shard: tiny instances, so that the solve itself is negligible."""
    import ray

    import apportion.ray as ar

    values, costs, budget = _instances(64, 2, 2)
    counts = (1, 8, 64)
    walls = {s: [] for s in counts}
    cpus = {s: [] for s in counts}
    for s in counts:
        ar.solve(values, costs, budget, method="lagrangian", shards=s)
    for _ in range(args.repeats):
        for s in counts:
            w0, c0 = time.perf_counter(), time.process_time()
            ar.solve(values, costs, budget, method="lagrangian", shards=s)
            walls[s].append(time.perf_counter() - w0)
            cpus[s].append(time.process_time() - c0)
    print(f"\nOverhead per shard: 64 instances of 2 x 2 (solve time negligible), {args.cpus} CPUs, "
          f"median of {args.repeats} alternating runs; load average {_load()}")
    print("| shards | wall s (median) | driver CPU s (median) |")
    print("|---|---|---|")
    for s in counts:
        print(f"| {s} | {statistics.median(walls[s]):.4f} | {statistics.median(cpus[s]):.4f} |")
    lo, hi = counts[0], counts[-1]
    per_wall = (statistics.median(walls[hi]) - statistics.median(walls[lo])) / (hi - lo)
    per_cpu = (statistics.median(cpus[hi]) - statistics.median(cpus[lo])) / (hi - lo)
    print(f"marginal cost of a shard ({lo} -> {hi} shards): wall {per_wall * 1e3:.2f} ms, "
          f"driver CPU {per_cpu * 1e3:.2f} ms")
    # Object store: ray.put of one large array, and a task reading it (zero-copy on one node).
    big = np.random.default_rng(1).normal(size=(2**27 // 8,))  # 128 MiB
    puts = []
    for _ in range(args.repeats):
        c0 = time.process_time()
        ref = ray.put(big)
        puts.append(time.process_time() - c0)
        del ref
    mib = big.nbytes / 2**20
    print(f"ray.put of {mib:.0f} MiB: driver CPU {statistics.median(puts):.3f} s "
          f"(median of {args.repeats}), {mib / 1024 / statistics.median(puts):.2f} GiB/s")


def _skewed(values, route, shards):
    """Server m's requests scaled by (m + 1) / shards: the busiest server sees the most value."""
    return values * ((route + 1) / shards)[:, None]


def regret(args):
    import apportion.ray as ar

    T, shards = args.requests, args.servers
    costs = np.array([0.0, 1.0, 2.0, 4.0])
    budget = 0.8 * T  # spending about 0.8 per request: the price binds
    syncs = [None, 2000, 500, 100, 20]
    rows = {}
    for workload in ("iid", "skewed"):
        for seed in range(args.seeds):
            rng = np.random.default_rng(100 + seed)
            values = rng.uniform(0, 1, (T, 4)) * np.array([0.0, 1.0, 1.6, 2.0])
            route = np.arange(T) % shards
            if workload == "skewed":
                values = _skewed(values, route, shards)
            for se in syncs:
                run = ar.simulate_online(values, costs, budget, shards=shards, sync_every=se, server=route)
                rows.setdefault((workload, se), []).append(
                    (run.regret / run.reference_value, run.spent / budget, run.seconds))
    print(f"\nRegret against one OnlineAllocator seeing all requests: T={T} requests, {shards} servers "
          f"(round robin), K=4 (costs 0,1,2,4), budget {budget:g}, mean over {args.seeds} seeds")
    print("| workload | sync_every | syncs per server | regret / reference value | spent / budget | wall s |")
    print("|---|---|---|---|---|---|")
    for (workload, se), r in rows.items():
        per = T // shards
        n = "none" if se is None else str(max(0, -(-per // se) - 1))
        reg, spent, secs = (np.mean([x[i] for x in r]) for i in range(3))
        print(f"| {workload} | {'never' if se is None else se} | {n} | {reg:+.4f} | {spent:.4f} | {secs:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["throughput", "overhead", "regret"])
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--options", type=int, default=8)
    parser.add_argument("--method", default="exact")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    try:
        for name, fn in (("throughput", throughput), ("overhead", overhead), ("regret", regret)):
            if args.only in (None, name):
                fn(args)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
