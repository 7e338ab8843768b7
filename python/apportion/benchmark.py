"""Peer comparison: our solvers against OR-Tools CP-SAT, HiGHS (scipy.optimize.milp, gap 0)
and cvxpy on the same seeded instances, in the same run; a markdown table of times and ratios.

    apportion bench [--suite lagrangian|exact|all] [--quick] [--instances 3] [--peer-limit 20]
                    [--peers cpsat,milp,lp] [--methods exact,dp] [--out FILE]
    python bench/report.py  (the same)

`--peers ""` times ours alone; `--methods exact` times only that method of ours.

Our solvers are timed as medians over repeated calls (from the Python call to the Solution);
each peer solves each instance once, under a time limit (a peer that hits it is shown as
">= limit"). Times are means over the instances of a case. For batches, peers solve the first
`instances` instances of the batch and their time is scaled to the batch size (marked "x B").
The exact methods' values are checked against the peers' and disagreements are flagged.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from typing import Callable, List, Optional, Sequence

import numpy as np

from . import api, workloads

__all__ = ["Case", "SUITES", "run_case", "format_table", "main"]


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str
    n: int
    k: int
    batch: Optional[int] = None
    R: int = 1000
    ours: tuple = ("lagrangian",)
    peers: tuple = ("cpsat", "milp", "lp")

    @property
    def label(self) -> str:
        size = f"N={self.n},K={self.k}" + (f",B={self.batch}" if self.batch else "")
        r = "" if self.kind == "routing" else f",R={self.R}"
        return f"{self.kind} {size}{r}"


def _exact_cases(sizes, Rs) -> List[Case]:
    return [Case(kind, n, k, R=R, ours=("exact", "dp"), peers=("cpsat", "milp"))
            for (n, k) in sizes for R in Rs
            for kind in workloads.CLASSIC]


SUITES = {
    "lagrangian": [
        Case("routing", 300, 4), Case("routing", 1000, 8), Case("routing", 5000, 16),
        Case("uncorrelated", 1000, 8), Case("weakly", 1000, 8), Case("strongly", 1000, 8),
        Case("routing", 1000, 8, batch=1000, peers=("milp",)),
    ],
    "exact": _exact_cases([(1000, 8), (1000, 10), (10000, 10), (1000, 100)], (1000, 10000)),
}
QUICK = {
    "lagrangian": [Case("routing", 300, 4), Case("routing", 1000, 8)],
    "exact": _exact_cases([(1000, 8)], (1000,)),
}


def median_time(fn: Callable[[], object], budget_s: float = 0.3, max_repeats: int = 200) -> float:
    """Median seconds of fn() after a warm-up call: at least three calls, more while `budget_s`
    lasts, at most `max_repeats`."""
    fn()  # warm up
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < max_repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _peer(name: str, limit: float):
    from . import reference

    if name == "cpsat":
        return lambda v, c, b: reference.cpsat(v, c, b, time_limit=limit)
    if name == "milp":
        return lambda v, c, b: reference.milp(v, c, b, time_limit=limit)
    if name == "lp":
        return lambda v, c, b: reference.lp(v, c, b)
    raise ValueError(f"peer: unknown {name!r}")


def _our_options(method: str) -> dict:
    # Exact targets are per core: one thread. The fast path is timed as a user calls it.
    return {"threads": 1} if method in ("exact", "dp") else {}


def run_case(case: Case, instances: int = 3, peer_limit: float = 20.0,
             peers: Optional[Sequence[str]] = None) -> dict:
    """Times our methods and the peers on `instances` seeded instances of `case`."""
    peers = case.peers if peers is None else [p for p in case.peers if p in peers]
    row = {"case": case.label, "times": {}, "notes": []}
    ours_values = {}
    if case.batch:
        values, costs, budget = workloads.instance(case.kind, case.n, case.k, batch=case.batch,
                                                   R=case.R, seed=0)
        for m in case.ours:
            row["times"][m] = median_time(lambda: api.solve(values, costs, budget, method=m))
            ours_values[m] = api.solve(values, costs, budget, method=m)
        for p in peers:
            fn = _peer(p, peer_limit)
            t0 = time.perf_counter()
            for b in range(instances):
                fn(values[b], costs[b], budget[b])
            row["times"][p] = (time.perf_counter() - t0) / instances * case.batch
            row["notes"].append(f"{p}: {instances} instances x B")
        return row
    sums = {m: 0.0 for m in (*case.ours, *peers)}
    hit_limit = set()
    for seed in range(instances):
        values, costs, budget = workloads.instance(case.kind, case.n, case.k, R=case.R, seed=seed)
        got = {}
        for m in case.ours:
            opts = _our_options(m)
            try:
                sums[m] += median_time(lambda: api.solve(values, costs, budget, method=m, **opts))
                got[m] = api.solve(values, costs, budget, method=m, **opts)
                if m in ("exact", "dp") and got[m].status != "optimal":
                    row["notes"].append(f"{m}: {got[m].status} on seed {seed}")
            except ValueError as exc:  # e.g. a dp table past max_memory
                sums[m] = float("nan")
                row["notes"].append(f"{m}: {exc}"[:80])
        for p in peers:
            t0 = time.perf_counter()
            sol = _peer(p, peer_limit)(values, costs, budget)
            sums[p] += time.perf_counter() - t0
            if sol.status != "optimal" and p != "lp":
                hit_limit.add(p)
            elif p != "lp":
                for m, mine in got.items():
                    if mine.status == "optimal" and not np.isclose(mine.value, sol.value, rtol=1e-9):
                        row["notes"].append(f"DISAGREE {m} vs {p} seed {seed}")
    for m, s in sums.items():
        row["times"][m] = s / instances
    for p in hit_limit:
        row["notes"].append(f"{p} hit the {peer_limit:g} s limit")
    return row


def _fmt(seconds: float) -> str:
    if seconds != seconds:
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def format_table(rows: List[dict], ours: Sequence[str], peers: Sequence[str]) -> str:
    """Markdown: one row per case, the time of each solver, and each peer's time divided by
    our fastest method's (how many times faster we are)."""
    head = ["case", *ours, *peers, *[f"{p}/ours" for p in peers], "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        t = row["times"]
        best = min((t[m] for m in ours if m in t and t[m] == t[m]), default=float("nan"))
        cells = [row["case"], *[_fmt(t.get(m, float("nan"))) for m in ours],
                 *[_fmt(t.get(p, float("nan"))) for p in peers],
                 *[(f"{t[p] / best:,.0f}x" if p in t and best == best else "") for p in peers],
                 "; ".join(row["notes"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="apportion bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=["lagrangian", "exact", "all"], default="lagrangian")
    parser.add_argument("--quick", action="store_true", help="small cases only")
    parser.add_argument("--instances", type=int, default=3, help="seeded instances per case")
    parser.add_argument("--peer-limit", type=float, default=20.0, help="seconds per peer solve")
    parser.add_argument("--peers", default=None,
                        help="comma-separated subset of cpsat,milp,lp (default: each case's)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated subset of our methods to time (default: each case's)")
    parser.add_argument("--out", default=None, help="also write the markdown to this file")
    args = parser.parse_args(argv)
    if args.instances < 1:
        parser.error("--instances must be at least 1")
    peers = None if args.peers is None else [p.strip() for p in args.peers.split(",") if p.strip()]
    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    suites = ["lagrangian", "exact"] if args.suite == "all" else [args.suite]
    chunks = []
    for suite in suites:
        cases = (QUICK if args.quick else SUITES)[suite]
        if methods is not None:
            cases = [dataclasses.replace(c, ours=tuple(m for m in c.ours if m in methods)) for c in cases]
            cases = [c for c in cases if c.ours]
        rows = []
        for case in cases:
            print(f"[{suite}] {case.label} ...", file=sys.stderr, flush=True)
            rows.append(run_case(case, args.instances, args.peer_limit, peers))
        ours = list(dict.fromkeys(m for c in cases for m in c.ours))
        used_peers = list(dict.fromkeys(p for c in cases for p in c.peers
                                        if peers is None or p in peers))
        chunks.append(f"### {suite}\n\n" + format_table(rows, ours, used_peers))
    text = "\n\n".join(chunks)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
