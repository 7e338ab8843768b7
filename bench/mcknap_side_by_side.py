"""method="exact" side by side with Pisinger's mcknap (EJOR 1995), on the same instances.

    APPORTION_MCKNAP_SRC=/path/to/mcknap.c python bench/mcknap_side_by_side.py \
        [--seeds 5] [--cases all|quick] [--classes strongly,subset_sum] [--min-time 0.05] \
        [--rounds 3] [--per-seed]

APPORTION_MCKNAP_SRC is a local copy of Pisinger's public mcknap.c (the reduced harness whose
main takes `k n r type [first last]`). Without it the script says so and exits 0. Nothing of it
is copied here: the script patches a copy in a temporary folder so that its `inititems` reads
our instances (from a file written here) instead of generating them, and its timer reads
clock_gettime(CLOCK_PROCESS_CPUTIME_ID) around the solve instead of times(); the algorithm is
untouched. It is compiled with gcc -O3 -march=native. Every patch checks that its anchor is
found once, so a different version of the file fails loudly instead of timing the wrong thing.

Instances come from `apportion.workloads` (the distributions of mcknap's classes 1-5, with the
budget of mcknap's generator); the 0-1 class (mcknap's type 6) is the uncorrelated class at
K = 2 with option 0 set to (0, 0). Seeds 0..S-1 per case.

Timing, the same on both sides: CPU time of the solve alone (mcknap: from its own start to its
end timer, inside its process; ours: process_time around `apportion.solve(..., method="exact",
threads=1)`, the Python call included), one untimed call first, then calls until `--min-time`
has passed (at least 3, or 1 once a call takes over 0.2 s); a round's time is the median of
its calls. The two sides take turns on each instance, `--rounds` times (mcknap, ours, mcknap,
ours, ...), and an instance's time on each side is the median over its rounds: on a machine
shared with other work, the load then weighs on both sides alike (one pass of mcknap over all
instances, then one of ours, read strongly correlated 10000 x 10 seed 2 at 1.01 in one run and
1.40 in the next). Per case: median and
worst over the seeds on each side, and the ratios ours/mcknap of the medians, of the worsts,
and the largest per-seed ratio.

Both must find the same optimum on every instance (ours with status "optimal", mcknap with
its own solution check passed); a mismatch raises.
"""

from __future__ import annotations

import os

# One BLAS thread: numpy's OpenBLAS threads spin for a while after an operation, and their CPU
# time would count in the process time taken around our solve (perf put blas_thread_server at
# 12% of a loop of weakly correlated 1000 x 100 exact solves).
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Dict, List, Sequence, Tuple  # noqa: E402

import numpy as np  # noqa: E402

import apportion  # noqa: E402
from apportion import workloads  # noqa: E402
from apportion.benchmark import format_seconds  # noqa: E402

# (kind, N, K, R): the classes of workloads.CLASSIC at the sizes, and the 0-1 class.
CASES: List[Tuple[str, int, int, int]] = (
    [(kind, n, k, 1000) for n, k in ((1000, 8), (10000, 10), (1000, 100)) for kind in workloads.CLASSIC]
    + [(kind, 1000, 8, 10000) for kind in workloads.CLASSIC]
    + [("zero_one", n, 2, r) for n in (1000, 10000) for r in (1000, 10000)]
)
QUICK = [(kind, n, k, r) for kind, n, k, r in CASES if n * k <= 10000]

# mcknap's data are 16-bit (itype short); a copy with 32-bit data is built when an instance
# needs it.
SHORT_MAX = 32767

# The patches: (anchor in mcknap.c, replacement). Each anchor must occur exactly once.
PATCHES = [
    # item data: 16 bits unless the build asks for more
    ("typedef short         itype;",
     "#ifndef MCKNAP_ITYPE\n#define MCKNAP_ITYPE short\n#endif\ntypedef MCKNAP_ITYPE itype;"),
    # the solve's clock: CPU time of the process, in nanoseconds
    ("  times(&timestart);", "  harness_start();"),
    ("void endtime(long *time)\n{", "void endtime(long *time)\n{\n  harness_end(time); return;"),
    # instances from the file, with the file's budget
    ("stype inititems(allinfo *al, isetset *h,",
     "void harness_fill(itemset *j);\nextern long harness_capacity;\nstype inititems(allinfo *al, isetset *h,"),
    ("    maketest(j, r, type);", "    harness_fill(j);"),
    ("  al->capacity = (wsum1 + wsum2) / 2;", "  al->capacity = harness_capacity;"),
    # what the harness reports
    ("void sumdata(allinfo *a)\n{", "void sumdata(allinfo *a)\n{\n  harness_record(a->zstar, a->checked); return;"),
    ("int main(int argc, char *argv[])", "int mcknap_main(int argc, char *argv[])"),
]

PRELUDE = r"""
void harness_start(void);
void harness_end(long *time);
void harness_record(long zstar, long checked);
"""

# Reads instances ("N K capacity" then N*K lines "value cost", item-major) and solves each
# repeatedly; prints "zstar checked calls median_ns" per instance.
HARNESS = r"""
#include <time.h>
static struct timespec harness_t0;
static long harness_start_ns, harness_last_ns, harness_zstar, harness_checked;
long harness_capacity;
static long *harness_p, *harness_w;
static int harness_item, harness_k;

static long harness_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec * 1000000000L + t.tv_nsec;
}
void harness_start(void) { harness_start_ns = harness_now(); }
/* its last end timer (a.time) closes the solve */
void harness_end(long *time) { *time = harness_last_ns = harness_now() - harness_start_ns; }
void harness_record(long zstar, long checked) { harness_zstar = zstar; harness_checked = checked; }

/* inititems calls this once per class, in order: class harness_item's options */
void harness_fill(itemset *j) {
  itemrec *i;
  int o = 0;
  for (i = j->fset; i <= j->lset; i++, o++) {
    i->psum = harness_p[(long) harness_item * harness_k + o];
    i->wsum = harness_w[(long) harness_item * harness_k + o];
  }
  harness_item++;
}

static int cmp_long(const void *a, const void *b) {
  long x = *(const long *) a, y = *(const long *) b;
  return (x > y) - (x < y);
}

int main(int argc, char *argv[]) {
  FILE *f;
  int n, k, c, s;
  long cap, calls, total, *ns;
  double min_time;
  if (argc < 3) { printf("usage: harness instances min_time\n"); return 2; }
  f = fopen(argv[1], "r");
  min_time = atof(argv[2]);
  if (f == NULL) { printf("cannot open %s\n", argv[1]); return 2; }
  trace = fopen("/dev/null", "w");
  ns = malloc(100000 * sizeof(long));
  while (fscanf(f, "%d %d %ld", &n, &k, &cap) == 3) {
    harness_p = malloc((long) n * k * sizeof(long));
    harness_w = malloc((long) n * k * sizeof(long));
    for (c = 0; c < n * k; c++) {
      if (fscanf(f, "%ld %ld", &harness_p[c], &harness_w[c]) != 2) { printf("bad file\n"); return 2; }
    }
    harness_capacity = cap;
    harness_k = k;
    calls = -1; total = 0;  /* call -1 is the untimed one */
    for (;;) {
      harness_item = 0;
      srand48(1);  /* its median sampling draws random numbers */
      minmcknap(n, k, 1, 0);
      if (calls >= 0) { ns[calls] = harness_last_ns; total += harness_last_ns; }
      calls++;
      if (calls >= 100000) break;
      if (calls >= 1 && harness_last_ns > 200000000L) break;
      if (calls >= 3 && total >= min_time * 1e9) break;
    }
    qsort(ns, calls, sizeof(long), cmp_long);
    printf("%ld %ld %ld %ld\n", harness_zstar, harness_checked, calls, ns[calls / 2]);
    fflush(stdout);
    free(harness_p);
    free(harness_w);
  }
  return 0;
}
"""


def build_mcknap(src: str, folder: str, wide: bool) -> str:
    """Patches a copy of mcknap.c into `folder` and compiles it; returns the binary's path."""
    with open(src) as fh:
        text = fh.read()
    for anchor, replacement in PATCHES:
        count = text.count(anchor)
        if count != 1:
            raise RuntimeError(f"{src}: expected the anchor {anchor!r} once, found it {count} times "
                               "(not the reduced-harness mcknap.c this script patches)")
        text = text.replace(anchor, replacement)
    name = "mcknap_wide" if wide else "mcknap"
    path_c = os.path.join(folder, name + ".c")
    with open(path_c, "w") as fh:
        fh.write(PRELUDE + text + HARNESS)
    binary = os.path.join(folder, name)
    cmd = ["gcc", "-O3", "-march=native", "-w", "-o", binary, path_c, "-lm"]
    if wide:
        cmd.insert(1, "-DMCKNAP_ITYPE=int")
    subprocess.run(cmd, check=True)
    return binary


def make_instance(kind: str, n: int, k: int, r: int, seed: int) -> Tuple[np.ndarray, np.ndarray, float]:
    """(values, costs, budget) of a case; the 0-1 class is mcknap's type 6 at K = 2."""
    if kind == "zero_one":
        values, costs, _ = workloads.instance("uncorrelated", n, k, R=r, seed=seed)
        values[:, 0] = 0.0
        costs[:, 0] = 0.0
        budget = workloads.classic_budget(values, costs)
    else:
        values, costs, budget = workloads.instance(kind, n, k, R=r, seed=seed)
    return values, costs, float(budget)


def write_instances(path: str, instances: Sequence[Tuple[np.ndarray, np.ndarray, float]]) -> None:
    with open(path, "w") as fh:
        for values, costs, budget in instances:
            n, k = values.shape
            fh.write(f"{n} {k} {int(budget)}\n")
            pairs = np.stack([values.astype(np.int64).ravel(), costs.astype(np.int64).ravel()], axis=1)
            np.savetxt(fh, pairs, fmt="%d")


def time_mcknap(binary: str, instances, min_time: float) -> List[Tuple[int, float]]:
    """(optimum, median CPU seconds per solve) per instance, from mcknap's own process."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        path = fh.name
    try:
        write_instances(path, instances)
        out = subprocess.run([binary, path, str(min_time)], check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(path)
    rows = []
    for line in out.strip().splitlines():
        zstar, checked, _calls, median_ns = (int(x) for x in line.split())
        if checked != 1:
            raise RuntimeError(f"mcknap's own solution check failed: {line}")
        rows.append((zstar, median_ns * 1e-9))
    if len(rows) != len(instances):
        raise RuntimeError(f"mcknap answered {len(rows)} of {len(instances)} instances:\n{out}")
    return rows


def time_ours(values: np.ndarray, costs: np.ndarray, budget: float, min_time: float) -> Tuple[float, float]:
    """(optimum, median CPU seconds per solve) of method="exact" on one thread."""
    sol = apportion.solve(values, costs, budget, method="exact", threads=1)  # untimed
    if sol.status != "optimal":
        raise RuntimeError(f"ours ended {sol.status!r} (gap {sol.gap})")
    times: List[float] = []
    while True:
        t0 = time.process_time()
        apportion.solve(values, costs, budget, method="exact", threads=1)
        times.append(time.process_time() - t0)
        if len(times) >= 100000 or times[-1] > 0.2 or (len(times) >= 3 and sum(times) >= min_time):
            break
    return float(sol.value), statistics.median(times)



def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cases", choices=("all", "quick"), default="all")
    parser.add_argument("--classes", default="", help="comma-separated kinds to keep (default: all)")
    parser.add_argument("--min-time", type=float, default=0.05, help="CPU seconds of timed calls per instance")
    parser.add_argument("--rounds", type=int, default=3,
                        help="turns of (mcknap, ours) per instance; each side's time is the median over them")
    parser.add_argument("--per-seed", action="store_true", help="also print every seed's times")
    args = parser.parse_args(argv)

    src = os.environ.get("APPORTION_MCKNAP_SRC")
    if not src or not os.path.isfile(src):
        print("APPORTION_MCKNAP_SRC does not name mcknap.c: skipped (see the docstring)")
        return 0
    cases = CASES if args.cases == "all" else QUICK
    if args.classes:
        keep = set(args.classes.split(","))
        cases = [c for c in cases if c[0] in keep]
    apportion.warmup(1)

    with tempfile.TemporaryDirectory() as folder:
        binaries: Dict[bool, str] = {}
        print("| class | N x K | R | ours median / worst | mcknap median / worst | ratio median / worst / worst seed |")
        print("|---|---|---|---|---|---|")
        for kind, n, k, r in cases:
            instances = [make_instance(kind, n, k, r, seed) for seed in range(args.seeds)]
            wide = any(max(np.abs(v).max(), np.abs(c).max()) > SHORT_MAX for v, c, _ in instances)
            if wide not in binaries:
                binaries[wide] = build_mcknap(src, folder, wide)
            theirs: List[Tuple[int, float]] = []
            ours: List[Tuple[float, float]] = []
            for inst in instances:
                rounds_theirs, rounds_ours = [], []
                for _ in range(max(1, args.rounds)):
                    rounds_theirs.append(time_mcknap(binaries[wide], [inst], args.min_time)[0])
                    rounds_ours.append(time_ours(*inst, args.min_time))
                theirs.append((rounds_theirs[0][0], statistics.median(t for _, t in rounds_theirs)))
                ours.append((rounds_ours[0][0], statistics.median(t for _, t in rounds_ours)))
            for seed, ((z_ours, _), (z_theirs, _)) in enumerate(zip(ours, theirs)):
                if z_ours != z_theirs:
                    raise RuntimeError(f"{kind} {n}x{k} R={r} seed {seed}: ours {z_ours} != mcknap {z_theirs}")
            t_ours = [t for _, t in ours]
            t_theirs = [t for _, t in theirs]
            per_seed = [a / b for a, b in zip(t_ours, t_theirs)]
            med_o, med_t = statistics.median(t_ours), statistics.median(t_theirs)
            print(f"| {kind} | {n}x{k} | {r} | {format_seconds(med_o)} / {format_seconds(max(t_ours))} | "
                  f"{format_seconds(med_t)} / {format_seconds(max(t_theirs))} | "
                  f"{med_o / med_t:.2f} / {max(t_ours) / max(t_theirs):.2f} / {max(per_seed):.2f} |", flush=True)
            if args.per_seed:
                for seed in range(args.seeds):
                    print(f"|   seed {seed} | | | {format_seconds(t_ours[seed])} | {format_seconds(t_theirs[seed])} | "
                          f"{per_seed[seed]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
