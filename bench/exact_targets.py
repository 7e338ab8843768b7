"""method="exact" on the sizes of the exact-solver issue's targets:
one thread, mean over three seeded instances of the median time per instance, per class.

    python bench/exact_targets.py [--sizes 1000x8,10000x10] [--R 1000] [--repeat 5]

With --repeat, the whole grid is timed that many times and each cell reports its median run:
a shared VM's speed drifts by tens of percent over minutes.
"""

import argparse
import statistics

import apportion
from apportion import workloads
from apportion.benchmark import median_time



def cell(kind: str, n: int, k: int, R: int) -> tuple:
    """(mean seconds over three seeds, set of statuses)."""
    total, statuses = 0.0, set()
    small = n * k < 20000
    for seed in range(3):
        v, c, b = workloads.instance(kind, n, k, R=R, seed=seed)
        solve = lambda: apportion.solve(v, c, b, method="exact", threads=1)  # noqa: E731
        total += median_time(solve, 0.2 if small else 0.05, 50 if small else 3)
        statuses.add(solve().status)
    return total / 3, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000x8,10000x10")
    parser.add_argument("--R", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    # The whole grid once per repeat (not one cell repeated): a slow spell of the machine then
    # lands on different cells in different repeats, and the median leaves it out.
    runs = {(n, k, kind): [] for n, k in sizes for kind in workloads.CLASSIC}
    for _ in range(args.repeat):
        for n, k in sizes:
            for kind in workloads.CLASSIC:
                runs[n, k, kind].append(cell(kind, n, k, args.R))
    print("| N x K | R | " + " | ".join(workloads.CLASSIC) + " |")
    print("|---|---|" + "---|" * len(workloads.CLASSIC))
    for n, k in sizes:
        cells = []
        for kind in workloads.CLASSIC:
            seconds = statistics.median(r[0] for r in runs[n, k, kind])
            statuses = set().union(*(r[1] for r in runs[n, k, kind]))
            text = f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"
            if statuses != {"optimal"}:
                text += " (" + ",".join(sorted(statuses)) + ")"
            cells.append(text)
        print(f"| {n}x{k} | {args.R} | " + " | ".join(cells) + " |", flush=True)

if __name__ == "__main__":
    main()
