"""Round-trip latency of `apportion solve --stream` over a pipe, as a scheduler written in
another language sees it: one process is started once, then each problem is one line written
to its stdin and one answer line read back from its stdout.

    python bench/bench_cli_stream.py [--n 300] [--k 4] [--problems 2000] [--rounds 3]
                                     [--costs shared|per-item] [--encoding lists|base64|both]
    python bench/bench_cli_stream.py --profile     # where the time of a line goes, in-process
    valgrind --tool=callgrind python bench/bench_cli_stream.py --in-process 300 --encoding base64
                                                    # instructions: run with 300 and 100 lines,
                                                    # (Ir(300) - Ir(100)) / 200 per line

Problems are seeded routing instances (`apportion.workloads.instance("routing", n, k)`) with
full-precision float64 numbers; "shared" costs are the first item's (K,) tier costs.
"lists" sends nested JSON lists of numbers, "base64" the encoded array form of
apportion/schemas/problem.schema.json. For each encoding it reports the median and 90th
percentile of the wall round trip per problem over every problem of every round (the first
`--warmup` problems of a process untimed), and the server's CPU time per problem (user +
system of the child process, from /proc, over the timed problems): the figure that does not
depend on what else the machine runs. Not a pytest-benchmark suite: run it as a script.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List

import numpy as np

from apportion import workloads


def encode(x: np.ndarray, how: str) -> Any:
    if how == "lists":
        return x.tolist()
    x = np.ascontiguousarray(x, dtype="<f8")
    return {"dtype": "float64", "shape": list(x.shape), "data": base64.b64encode(x.tobytes()).decode()}


def problem_lines(n: int, k: int, count: int, costs: str, how: str) -> List[str]:
    lines = []
    for seed in range(count):
        v, c, b = workloads.instance("routing", n, k, seed=seed)
        if costs == "shared":
            c = c[0]
        lines.append(json.dumps({"values": encode(v, how), "costs": encode(c, how),
                                 "budget": float(b), "id": seed}) + "\n")
    return lines


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process pid (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def round_trips(lines: List[str], warmup: int) -> Dict[str, Any]:
    """Starts one `apportion solve --stream` process and times each line's round trip."""
    proc = subprocess.Popen([sys.executable, "-m", "apportion", "solve", "--stream", "--no-timings"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for line in lines[:warmup]:
            proc.stdin.write(line)
            proc.stdin.flush()
            json.loads(proc.stdout.readline())
        cpu0 = cpu_seconds(proc.pid)
        times = []
        for line in lines[warmup:]:
            t0 = time.perf_counter()
            proc.stdin.write(line)
            proc.stdin.flush()
            answer = proc.stdout.readline()
            times.append(time.perf_counter() - t0)
            if '"error"' in answer:
                raise RuntimeError(answer)
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    return {"times": times, "cpu_per_problem": cpu / len(times)}


def profile(lines: List[str]) -> None:
    from apportion import cli

    cli.stream(io.StringIO("".join(lines[:50])), io.StringIO(), {}, timings=False)  # warm
    prof = cProfile.Profile()
    prof.enable()
    cli.stream(io.StringIO("".join(lines)), io.StringIO(), {}, timings=False)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(15)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help="items per problem (default 300)")
    ap.add_argument("--k", type=int, default=4, help="options per item (default 4)")
    ap.add_argument("--problems", type=int, default=2000, help="timed problems per round")
    ap.add_argument("--warmup", type=int, default=200, help="untimed problems per round first")
    ap.add_argument("--rounds", type=int, default=3, help="processes started, per encoding")
    ap.add_argument("--costs", choices=("shared", "per-item"), default="shared")
    ap.add_argument("--encoding", choices=("lists", "base64", "both"), default="both")
    ap.add_argument("--profile", action="store_true", help="cProfile of the in-process stream")
    ap.add_argument("--in-process", type=int, default=0, metavar="LINES",
                    help="only stream this many lines in-process, untimed (for callgrind)")
    args = ap.parse_args()
    encodings = ("lists", "base64") if args.encoding == "both" else (args.encoding,)
    distinct = 100  # seeded problems, sent round-robin
    if not args.in_process:
        print(f"apportion solve --stream: {args.n} x {args.k}, {args.costs} costs, "
              f"{args.rounds} rounds x {args.problems} problems (+{args.warmup} warm-up), "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for how in encodings:
        base = problem_lines(args.n, args.k, distinct, args.costs, how)
        lines = [base[i % distinct] for i in range(args.warmup + args.problems)]
        if args.in_process:
            from apportion import cli

            many = [base[i % distinct] for i in range(args.in_process)]
            cli.stream(io.StringIO("".join(many)), io.StringIO(), {}, timings=False)
            continue
        if args.profile:
            print(f"--- profile, {how}")
            profile(lines[:args.problems])
            continue
        times: List[float] = []
        cpus = []
        for _ in range(args.rounds):
            r = round_trips(lines, args.warmup)
            times += r["times"]
            cpus.append(r["cpu_per_problem"])
        q = statistics.quantiles(times, n=10)
        print(f"{how:7s} line {len(base[0]):6d} bytes: round trip median "
              f"{statistics.median(times) * 1e6:7.1f} us, p90 {q[-1] * 1e6:7.1f} us; server CPU "
              f"per problem {statistics.median(cpus) * 1e6:7.1f} us (median of {args.rounds})")


if __name__ == "__main__":
    main()
