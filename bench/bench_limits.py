"""Each solver against the limits of this machine, measured in the same run.

    python bench/bench_limits.py [--quick]     # prints the markdown table
    python bench/report.py [--quick]           # the same table as a section of docs/benchmarks.md
    python -m pytest bench/bench_limits.py     # checks the yardsticks' answers against ours (fast)

Two kinds of limit, both native loops in `bench/limits.cpp`, compiled here at run time with the
system C++ compiler for this CPU (-O3 -march=native):

- the read limit: one pass summing the 64-bit words of the solver's input (values and costs),
  on one thread, and on all threads (apportion's default count) where the input is 8 MiB or
  more. No solver that reads its input can beat it.
- yardsticks for the dense DP and the online simulation: a tight loop of the same recurrence
  (`dp_loop`) and a minimal loop making the same decisions (`online_loop`). Their answers are
  checked against ours on the timed instances: the same allocation and value for the DP, the
  same choice for every request online.

Every time is process CPU time per call (`time.process_time`, all threads of the process),
the median of several timed runs of repeated calls, after one untimed call; ours is timed from
the Python call. `method="exact"` is left out: its time is the core enumeration, which depends on
the instance class and not on the bytes read (compare the classes of one size in the exact
tables of docs/benchmarks.md); its yardstick, Pisinger's `mcknap`, is compared in
bench/mcknap_side_by_side.py, which needs a local copy of its source.

Without a C++ compiler the section says so instead of failing.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

import apportion
from apportion import workloads
from apportion.benchmark import format_seconds

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "limits.cpp")
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-std=c++17", "-shared", "-fPIC",
         "-pthread"]


# ---------------------------------------------------------------------------------------------
# the native yardsticks

def find_compiler() -> Optional[str]:
    """The C++ compiler: $CXX if set, else the first of c++, g++, clang++ on PATH."""
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx) or (cxx if os.path.isfile(cxx) else None)
    for name in ("c++", "g++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclasses.dataclass
class Native:
    """The compiled yardsticks (`lib`), or why there are none (`reason`)."""
    lib: Optional[ctypes.CDLL]
    reason: str
    compiler: str = ""


_NATIVE: Optional[Native] = None


def native() -> Native:
    """Compiles bench/limits.cpp once per source, compiler and flags (cached under
    build/bench_limits, or a temporary directory) and loads it."""
    global _NATIVE
    if _NATIVE is not None:
        return _NATIVE
    cxx = find_compiler()
    if cxx is None:
        _NATIVE = Native(None, "no C++ compiler found (set CXX, or install g++ or clang++)")
        return _NATIVE
    with open(SOURCE, "rb") as fh:
        key = hashlib.sha256(fh.read() + cxx.encode() + " ".join(FLAGS).encode()).hexdigest()[:16]
    out_dir = os.path.join(os.path.dirname(HERE), "build", "bench_limits")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError:
        out_dir = tempfile.mkdtemp(prefix="apportion-limits-")
    lib_path = os.path.join(out_dir, f"limits-{key}.so")
    if not os.path.exists(lib_path):
        tmp = lib_path + f".{os.getpid()}.tmp"
        run = subprocess.run([cxx, *FLAGS, SOURCE, "-o", tmp], capture_output=True, text=True)
        if run.returncode != 0:
            _NATIVE = Native(None, f"{cxx} failed to compile bench/limits.cpp: "
                                   f"{run.stderr.strip()[:500]}", cxx)
            return _NATIVE
        os.replace(tmp, lib_path)
    lib = ctypes.CDLL(lib_path)
    i64, f64p, i64p, vp = ctypes.c_int64, ctypes.POINTER(ctypes.c_double), \
        ctypes.POINTER(ctypes.c_int64), ctypes.c_void_p
    lib.read_words.argtypes = [vp, i64, i64]
    lib.read_words.restype = ctypes.c_uint64
    lib.read_words_threads.argtypes = [vp, i64, ctypes.c_int]
    lib.read_words_threads.restype = ctypes.c_uint64
    lib.dp_loop.argtypes = [f64p, i64p, i64, i64, i64, i64p]
    lib.dp_loop.restype = ctypes.c_double
    lib.online_loop.argtypes = [f64p, f64p, i64, i64, i64, ctypes.c_double, i64, ctypes.c_double,
                                ctypes.c_int, i64p, f64p]
    lib.online_loop.restype = ctypes.c_double
    _NATIVE = Native(lib, "", cxx)
    return _NATIVE


def _ptr(a: np.ndarray, ctype: Any) -> Any:
    return a.ctypes.data_as(ctypes.POINTER(ctype))


def read_once(lib: ctypes.CDLL, arrays: Tuple[np.ndarray, ...], threads: int = 1) -> int:
    """Sums the 64-bit words of each (C-contiguous) array: one read of its bytes."""
    total = 0
    for a in arrays:
        if threads == 1:
            total += lib.read_words(a.ctypes.data, a.nbytes, 1)
        else:
            total += lib.read_words_threads(a.ctypes.data, a.nbytes, threads)
    return total % 2**64


def read_time(lib: ctypes.CDLL, arrays: Tuple[np.ndarray, ...], threads: int,
              sizes: "Sizes") -> float:
    """CPU seconds of one read of the arrays' bytes. On one thread the reads repeat inside one
    native call, so that no Python call overhead counts (it would dominate a 100 KB read)."""
    if threads != 1:
        return cpu_per_call(lambda: read_once(lib, arrays, threads), runs=sizes.runs,
                            min_run=sizes.min_run)
    nbytes = sum(a.nbytes for a in arrays)
    reps = max(1, int(2e8 // max(nbytes, 1)))  # about 0.2 GB a call

    def many() -> None:
        for a in arrays:
            lib.read_words(a.ctypes.data, a.nbytes, reps)

    return cpu_per_call(many, runs=sizes.runs, min_run=sizes.min_run) / reps


def dp_yardstick(lib: ctypes.CDLL, values: np.ndarray, costs: np.ndarray,
                 budget: float) -> Tuple[float, np.ndarray]:
    """(value, choice (N,)) of `dp_loop` on values (N,K), integer costs (N,K) or (K,) and an
    integer budget."""
    v = np.ascontiguousarray(values, dtype=np.float64)
    n, k = v.shape
    if k > 256:
        raise ValueError("dp_loop keeps one-byte back-pointers: K <= 256")
    w = np.ascontiguousarray(np.broadcast_to(costs, v.shape), dtype=np.int64)
    choice = np.empty(n, dtype=np.int64)
    value = lib.dp_loop(_ptr(v, ctypes.c_double), _ptr(w, ctypes.c_int64), n, k, int(budget),
                        _ptr(choice, ctypes.c_int64))
    return value, choice


def online_yardstick(lib: ctypes.CDLL, values: np.ndarray, costs: np.ndarray, budget: float,
                     mirror: str = "euclidean") -> Tuple[np.ndarray, float]:
    """(choice (T,), value) of `online_loop` on one stream: values (T,K), costs (K,) or (T,K),
    one resource, skipping allowed, horizon T and step 1/sqrt(T) (simulate_online's defaults)."""
    v = np.ascontiguousarray(values, dtype=np.float64)
    t, k = v.shape
    w = np.ascontiguousarray(costs, dtype=np.float64)
    stride = 0 if w.ndim == 1 else k
    choice = np.empty(t, dtype=np.int64)
    out = np.empty(2)
    value = lib.online_loop(_ptr(v, ctypes.c_double), _ptr(w, ctypes.c_double), stride, t, k,
                            float(budget), t, 1.0 / np.sqrt(t), {"euclidean": 0, "entropy": 1}[mirror],
                            _ptr(choice, ctypes.c_int64), _ptr(out, ctypes.c_double))
    return choice, value


# ---------------------------------------------------------------------------------------------
# timing

def cpu_per_call(call: Callable[[], Any], *, runs: int = 5, min_run: float = 0.05) -> float:
    """Median over `runs` timed runs of the process CPU time per call, each run repeating the
    call until it has taken at least `min_run` seconds of CPU time; one untimed call first."""
    call()
    per_call = []
    for _ in range(runs):
        calls, start = 0, time.process_time()
        while True:
            call()
            calls += 1
            spent = time.process_time() - start
            if spent >= min_run:
                break
        per_call.append(spent / calls)
    return statistics.median(per_call)



@dataclasses.dataclass
class Row:
    """One case: our CPU time per call (`ours`, on `threads` threads), one read of the same
    input on one thread (`read_1`) and on all threads (`read_all`, None where the input is too
    small for threads to matter), and a native yardstick loop (`loop`, named `loop_what`)."""
    case: str
    ours: float
    threads: int
    read_1: float
    read_all: Optional[float] = None
    loop: Optional[float] = None
    loop_what: str = ""
    per: str = ""           # a per-unit figure beside the time (e.g. ns per decision)


def _ratio(ours: float, limit: Optional[float]) -> str:
    return "" if limit is None or limit <= 0 else f"{ours / limit:.1f}x"


def format_table(rows: List[Row], threads: int) -> str:
    """The markdown table; `threads` heads the all-threads read column. The read ratio divides
    ours by the read on as many threads as ours ran on."""
    lines = [f"| case | ours | one read, 1 thread | one read, {threads} threads | ours / read | "
             "native loop | ours / loop |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ours = format_seconds(r.ours) + (f" ({r.per})" if r.per else "")
        read_all = format_seconds(r.read_all) if r.read_all is not None else ""
        limit = r.read_1 if r.threads == 1 else r.read_all
        loop = f"{format_seconds(r.loop)} ({r.loop_what})" if r.loop is not None else ""
        lines.append(f"| {r.case} | {ours} | {format_seconds(r.read_1)} | {read_all} | "
                     f"{_ratio(r.ours, limit)} | {loop} | {_ratio(r.ours, r.loop)} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the cases

@dataclasses.dataclass(frozen=True)
class Sizes:
    routing_large: int      # N of the large routing instances (K = 8)
    batch: int              # B of the batch of routing 1000 x 8 instances
    online_requests: int    # T of the online stream (K = 8)
    runs: int
    min_run: float


FULL = Sizes(routing_large=1_000_000, batch=1000, online_requests=200_000, runs=5, min_run=0.1)
QUICK = Sizes(routing_large=100_000, batch=100, online_requests=20_000, runs=3, min_run=0.03)

DP_COSTS = np.array([0.0, 20.0, 45.0, 80.0])  # 300 x 4 at a budget of 8000: 8001 cells
DP_BUDGET = 8000.0


def dp_instance(n: int = 300, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, float]:
    """bench_exact.py's dense DP case: random values (n,4), tier costs 0, 20, 45, 80, budget 8000."""
    rng = np.random.default_rng(seed)
    return rng.random((n, DP_COSTS.size)), DP_COSTS, DP_BUDGET


def online_instance(t: int, k: int = 8, seed: int = 1) -> Tuple[np.ndarray, np.ndarray, float]:
    """bench_online.py's core-rate stream: values and per-request costs (t,k) uniform, budget 0.2 t."""
    rng = np.random.default_rng(seed)
    return rng.random((t, k)), rng.random((t, k)), 0.2 * t


# Below this many bytes a read on all threads is mostly the threads' start-up: not shown.
MIN_THREADED_READ = 8 << 20


def _reads(lib: ctypes.CDLL, arrays: Tuple[np.ndarray, ...], threads: int,
           sizes: Sizes) -> Tuple[float, Optional[float]]:
    """(one read on 1 thread, on `threads` threads or None) of the arrays, CPU seconds."""
    one = read_time(lib, arrays, 1, sizes)
    if threads == 1 or sum(a.nbytes for a in arrays) < MIN_THREADED_READ:
        return one, None
    return one, read_time(lib, arrays, threads, sizes)


def _lagrangian_row(label: str, lib: ctypes.CDLL, values: np.ndarray, costs: np.ndarray,
                    budget: Any, threads: int, all_threads: int, sizes: Sizes) -> Row:
    def ours() -> Any:
        return apportion.solve(values, costs, budget, method="lagrangian", threads=threads)

    t_ours = cpu_per_call(ours, runs=sizes.runs, min_run=sizes.min_run)
    read_1, read_all = _reads(lib, (values, costs), all_threads, sizes)
    what = "1 thread" if threads == 1 else f"{threads} threads"
    return Row(f"{label}, {what}", t_ours, threads, read_1, read_all)


# Instances a row takes in turn (TURNS): 8 of routing 1000 x 8 float64 hold 1 MB, which stays
# in a core's L2 beside the solver's workspace.
TURNS = 8


def _lagrangian_turns_row(label: str, lib: ctypes.CDLL, instances: List[Tuple[np.ndarray, np.ndarray, Any]],
                          sizes: Sizes) -> Row:
    """Ours on one thread over `instances` (values, costs, budget) in turn, per solve: a timed
    call solves each once, so the time is the mean over them. Each solve is of another instance
    than the solve before: as for a scheduler whose every decision is on new numbers, the CPU's
    branch predictors cannot learn one instance's branches, as they do when one instance is
    solved over and over (routing 1000 x 8 float64, the native call: 18.3-18.5 us repeated,
    20.4-20.8 in turn over 8 seeds). For the large instances the mean counts the seeds whose
    sample misses the break, which the row of seed 0 alone does not: about one seed in five
    (routing 1e5 and 1e6 x 8, 3 of 16 seeds), where one more pass over every item finds it (1e6
    float64 seed 1: 41 ms, seed 0: 16 ms). The read is of one instance."""
    def every_instance() -> None:
        for values, costs, budget in instances:
            apportion.solve(values, costs, budget, method="lagrangian", threads=1)

    t_ours = cpu_per_call(every_instance, runs=sizes.runs, min_run=sizes.min_run) / len(instances)
    read_1, _ = _reads(lib, instances[0][:2], 1, sizes)
    return Row(f"{label}, 1 thread", t_ours, 1, read_1)


def limit_rows(sizes: Sizes, lib: ctypes.CDLL, threads: Optional[int] = None) -> List[Row]:
    """Times every case of the table (see the module's docstring) and checks the yardsticks'
    answers; raises AssertionError when a yardstick disagrees with ours."""
    threads = threads or apportion._core.num_threads()
    rows = []
    v, c, b = workloads.instance("routing", 1000, 8, seed=0)
    rows.append(_lagrangian_row("lagrangian routing 1000 x 8 f64", lib, v, c, b, 1, threads, sizes))
    turns = [workloads.instance("routing", 1000, 8, seed=seed) for seed in range(TURNS)]
    rows.append(_lagrangian_turns_row(f"lagrangian routing 1000 x 8 f64, {TURNS} instances in turn", lib,
                                      turns, sizes))
    n = sizes.routing_large
    v, c, b = workloads.instance("routing", n, 8, seed=0)
    rows.append(_lagrangian_row(f"lagrangian routing {n:.0e} x 8 f64".replace("e+0", "e"), lib,
                                v, c, b, 1, threads, sizes))
    v32, c32 = v.astype(np.float32), c.astype(np.float32)
    rows.append(_lagrangian_row(f"lagrangian routing {n:.0e} x 8 f32".replace("e+0", "e"), lib,
                                v32, c32, b, 1, threads, sizes))
    del v, c, v32, c32
    seeds = [workloads.instance("routing", n, 8, seed=seed) for seed in range(TURNS)]
    for dtype, short in ((np.float64, "f64"), (np.float32, "f32")):
        typed = [(v.astype(dtype, copy=False), c.astype(dtype, copy=False), b) for v, c, b in seeds]
        rows.append(_lagrangian_turns_row(f"lagrangian routing {n:.0e} x 8 {short}, mean of seeds 0-{TURNS - 1}"
                                          .replace("e+0", "e"), lib, typed, sizes))
        del typed
    del seeds
    v, c, b = workloads.instance("routing", 1000, 8, batch=sizes.batch, seed=0)
    rows.append(_lagrangian_row(f"lagrangian routing B={sizes.batch} x (1000 x 8) f64", lib,
                                v, c, b, threads, threads, sizes))
    del v, c

    # Dense DP: the same recurrence over the same 8001 cells, one thread.
    v, c, b = dp_instance()
    sol = apportion.solve(v, c, b, method="dp", threads=1)
    value, choice = dp_yardstick(lib, v, c, b)
    assert np.array_equal(sol.choice, choice), "dp_loop's allocation differs from method='dp'"
    assert abs(value - sol.value) <= 1e-12 * abs(sol.value), (value, sol.value)
    t_ours = cpu_per_call(lambda: apportion.solve(v, c, b, method="dp", threads=1),
                          runs=sizes.runs, min_run=sizes.min_run)
    t_loop = cpu_per_call(lambda: dp_yardstick(lib, v, c, b), runs=sizes.runs,
                          min_run=sizes.min_run)
    cb = np.broadcast_to(c, v.shape).copy()
    read_1, read_all = _reads(lib, (v, cb), threads, sizes)
    rows.append(Row(f"dp 300 x 4, {int(b) + 1} cells, 1 thread", t_ours, 1, read_1, read_all,
                    t_loop, "dp_loop"))

    # Online: one stream, one resource, K = 8, per-request costs, one thread.
    t_req = sizes.online_requests
    v, c, b = online_instance(t_req)
    for mirror in ("euclidean", "entropy"):
        run = apportion.simulate_online(v, c, b, mirror=mirror, threads=1)
        choice, _ = online_yardstick(lib, v, c, b, mirror)
        assert np.array_equal(run.choice, choice), f"online_loop's decisions differ ({mirror})"

        def ours(mirror: str = mirror) -> Any:
            return apportion.simulate_online(v, c, b, mirror=mirror, threads=1)

        t_ours = cpu_per_call(ours, runs=sizes.runs, min_run=sizes.min_run)
        t_loop = cpu_per_call(lambda mirror=mirror: online_yardstick(lib, v, c, b, mirror),
                              runs=sizes.runs, min_run=sizes.min_run)
        read_1, read_all = _reads(lib, (v, c), threads, sizes)
        rows.append(Row(f"simulate_online {mirror}, T={t_req}, K=8, 1 thread", t_ours, 1, read_1,
                        read_all, t_loop, "online_loop",
                        per=f"{t_ours / t_req * 1e9:.1f} ns/decision"))
    return rows


SECTION_TITLE = "## Against the limits of this machine"

ABOUT = """\
Each solver beside what this machine does at best, measured in the same run by
`bench/bench_limits.py`:

- **One read** of the solver's input: a native loop summing its 64-bit words, on one thread,
  and on {threads} threads (apportion's default) for inputs of {mib} MiB or more (below that,
  starting the threads is most of the time). "ours / read" divides by the read on as many
  threads as ours ran on. Process CPU time counts every thread, so a read on {threads} threads
  costs about what it costs on one, plus the threads' start-up.
- **Native loops** for the dense DP and the online simulation: the same recurrence
  (`dp_loop`) and the same decisions (`online_loop`), in `bench/limits.cpp`, compiled here with
  `{compiler} -O3 -march=native`. Their answers were checked against ours in this run: the
  same allocation and value for the DP, every decision online.
- Process CPU time per call, the median of {runs} runs; ours from the Python call. Each row
  but one solves the same instance again and again, whose branches the CPU learns; the row
  "{turns} instances in turn" solves routing 1000 x 8 instances of {turns} seeds one after the
  other, as a scheduler deciding on new numbers each time would. The rows "mean of seeds"
  solve the large instances of {turns} seeds and give the mean per solve: the rows of seed 0
  alone show a seed whose sample brackets the break, and about one seed in five misses it,
  which costs one more pass over every item.
- The DP's ratio to one read is large by nature: it updates N x K x cells entries from an
  input of N x K numbers, so its limit is the loop.
- `method="exact"` is not here: its time is the core enumeration, which depends on the
  instance class rather than on the bytes read; bench/mcknap_side_by_side.py puts it beside
  its yardstick, Pisinger's `mcknap` (it needs a local copy of mcknap's source)."""


def section(quick: bool = False) -> str:
    """The markdown section of docs/benchmarks.md: a heading, what was measured, the table."""
    nat = native()
    if nat.lib is None:
        return (f"{SECTION_TITLE}\n\nNot measured: {nat.reason}. The read limit and the "
                "yardsticks are native loops compiled at bench time (`bench/limits.cpp`).")
    sizes = QUICK if quick else FULL
    threads = apportion._core.num_threads()
    rows = limit_rows(sizes, nat.lib, threads)
    about = ABOUT.format(compiler=os.path.basename(nat.compiler), runs=sizes.runs, turns=TURNS,
                         threads=threads, mib=MIN_THREADED_READ >> 20)
    return f"{SECTION_TITLE}\n\n{about}\n\n{format_table(rows, threads)}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller cases: seconds, not minutes")
    args = parser.parse_args(argv)
    sys.stdout.write(section(args.quick) + "\n")
    return 0


# ---------------------------------------------------------------------------------------------
# pytest: the yardsticks' answers (fast; nothing timed)

def _lib_or_skip() -> ctypes.CDLL:
    import pytest

    nat = native()
    if nat.lib is None:
        pytest.skip(nat.reason)
    return nat.lib


def test_read_sums_every_word():
    lib = _lib_or_skip()
    a = np.random.default_rng(0).random(1001)
    b = np.arange(7, dtype=np.uint8)  # a tail of bytes
    expect = (int(a.view(np.uint64).sum(dtype=np.uint64)) + int(b.sum())) % 2**64
    assert read_once(lib, (a, b)) == expect
    assert read_once(lib, (a, b), threads=3) == expect


def test_dp_loop_matches_method_dp():
    lib = _lib_or_skip()
    for seed in range(5):
        rng = np.random.default_rng(seed)
        n, k = 30 + 7 * seed, 2 + seed
        v = rng.random((n, k))
        c = rng.integers(0, 25, (n, k)).astype(np.float64)
        b = float(np.floor(c.min(axis=1).sum() + 0.4 * (c.max(axis=1) - c.min(axis=1)).sum()))
        sol = apportion.solve(v, c, b, method="dp")
        value, choice = dp_yardstick(lib, v, c, b)
        assert np.array_equal(sol.choice, choice)
        assert value == sol.value or abs(value - sol.value) <= 1e-12 * abs(sol.value)
    v, c, b = dp_instance(40)
    sol = apportion.solve(v, c, 700.0, method="dp")
    assert np.array_equal(dp_yardstick(lib, v, c, 700.0)[1], sol.choice)


def test_online_loop_makes_the_same_decisions():
    lib = _lib_or_skip()
    v, c, b = online_instance(3000, seed=4)
    b = b / 2  # a tighter budget: more skips
    for mirror in ("euclidean", "entropy"):
        for costs in (c, c[0]):
            run = apportion.simulate_online(v, costs, b, mirror=mirror)
            choice, value = online_yardstick(lib, v, costs, b, mirror)
            assert np.array_equal(run.choice, choice)
            assert (run.choice >= 0).sum() > 20 and (run.choice < 0).sum() > 20  # both branches
            assert abs(value - run.value) <= 1e-9 * run.value


def test_table_formats_every_row():
    rows = [Row("a", 2e-3, 1, 1e-3, 5e-4), Row("b", 3e-6, 2, 1e-6, 1.5e-6, 1.5e-6, "loop", "x")]
    text = format_table(rows, 2).splitlines()
    assert len(text) == 4 and "one read, 2 threads" in text[0]
    assert text[2].count("2.0x") == 1  # against the read on one thread, as ours ran
    assert text[3].count("2.0x") == 2  # against the read on two threads, and the loop


if __name__ == "__main__":
    raise SystemExit(main())
