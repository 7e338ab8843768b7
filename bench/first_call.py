"""The first solve in a process against later ones, with and without `apportion.warmup()`:
CPU time (time.process_time, every thread of the process), median over fresh processes.

    python bench/first_call.py [--processes 9]

Each process imports apportion, builds a seeded routing instance, optionally calls
`apportion.warmup()`, and times three solves. Cold and warmed processes alternate, so a slow
spell of a shared machine lands on both. Prints a markdown table.
"""

import argparse
import json
import statistics
import subprocess
import sys

# (N, K, batch, method): one instance of each size the README times, and a batch of 16.
CASES = [(300, 4, 1, "lagrangian"), (300, 4, 1, "exact"), (1000, 8, 1, "exact"),
         (10000, 10, 1, "exact"), (1000, 8, 16, "lagrangian"), (1000, 8, 16, "exact")]

# Runs in a fresh interpreter: argv = warm (0/1), N, K, batch, method.
CHILD = r"""
import json, sys, time
import apportion
from apportion import workloads
warm, n, k, batch, method = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
values, costs, budget = workloads.instance("routing", n, k, batch=batch if batch > 1 else None, seed=1)
start = time.process_time()
if warm:
    apportion.warmup()
warmup_seconds = time.process_time() - start
calls = []
for _ in range(3):
    start = time.process_time()
    apportion.solve(values, costs, budget, method=method)
    calls.append(time.process_time() - start)
print(json.dumps({"warmup": warmup_seconds, "calls": calls}))
"""


def run_child(warm: bool, case: tuple) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(int(warm)), *map(str, case)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=9, help="fresh processes per case and mode")
    args = parser.parse_args()
    runs = {(case, warm): [] for case in CASES for warm in (False, True)}
    for _ in range(args.processes):
        for case in CASES:
            for warm in (False, True):
                runs[case, warm].append(run_child(warm, case))

    def ms(xs: list) -> str:
        return f"{1e3 * statistics.median(xs):.3f} ms"

    print(f"CPU time, median of {args.processes} fresh processes per row\n")
    print("| case | method | warmup() | first solve | third solve | warmup() itself |")
    print("|---|---|---|---|---|---|")
    for case in CASES:
        n, k, batch, method = case
        name = f"N={n},K={k}" + (f",B={batch}" if batch > 1 else "")
        for warm in (False, True):
            rs = runs[case, warm]
            print(f"| {name} | {method} | {'yes' if warm else 'no'} | {ms([r['calls'][0] for r in rs])} "
                  f"| {ms([r['calls'][2] for r in rs])} | {ms([r['warmup'] for r in rs]) if warm else '-'} |")


if __name__ == "__main__":
    main()
