"""Benchmarks: our solvers against OR-Tools CP-SAT, HiGHS (scipy.optimize.milp, gap 0) and
cvxpy on the same seeded instances in the same run, warmed alike, as one markdown document.

    python bench/report.py [--quick]      regenerates docs/benchmarks.md (every table)
    apportion bench [OPTIONS]             the same generator; prints, and writes with --out

Options: --suite lagrangian|exact|grid|threads|all (default all), --quick, --instances N,
--repeats N, --min-time S, --peer-limit S, --peers cpsat,milp,lp (or "" for ours alone),
--methods lagrangian,exact,dp, --out FILE, --note TEXT.

How every solver is timed (ours and the peers alike, see `measure`):
- one untimed call on the instance first (imports, first-call set-up, thread pool);
- then repeated calls, at least --repeats and for at least --min-time seconds, at most
  `MAX_CALLS`; a cell is the median of those calls, wall and process CPU time, averaged over
  the seeded instances of the case. A peer call that stops at --peer-limit is not repeated
  (every repeat would stop there too) and reads ">= limit";
- the peer's own account of its solve is shown beside (CP-SAT's wall and user time, cvxpy's
  `solver_stats.solve_time`; scipy's milp reports none);
- ratios are the peer's CPU time over our fastest method's CPU time;
- a batch case times ours on the whole batch; peers solve one instance at a time, so their
  batch time is B times their per-instance median, marked "est." in the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import platform
import shlex
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, cast

import numpy as np

from . import api, workloads
from ._problem import Method

__all__ = ["Case", "Timing", "SUITES", "QUICK", "measure", "run_case", "format_table", "format_seconds",
           "stamp", "main"]

OUR_METHODS = ("lagrangian", "exact", "dp")
PEERS = ("cpsat", "milp", "lp")
MAX_CALLS = 200  # timed calls per solver and instance, at most


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark case: instances of `kind` with n items and k options (a batch of `batch`
    instances when set), data range R for the classic classes; `threads` for ours (None = all
    cores); `ours` and `peers` name the solvers timed on it."""
    kind: str
    n: int
    k: int
    batch: Optional[int] = None
    R: int = 1000
    ours: Tuple[str, ...] = ("lagrangian",)
    peers: Tuple[str, ...] = PEERS
    threads: Optional[int] = None

    @property
    def label(self) -> str:
        size = f"N={self.n},K={self.k}" + (f",B={self.batch}" if self.batch else "")
        r = "" if self.kind == "routing" else f",R={self.R}"
        t = "" if self.threads is None else f", {self.threads} thread" + "s" * (self.threads > 1)
        return f"{self.kind} {size}{r}{t}"


def _exact_cases(sizes: Sequence[Tuple[int, int]], Rs: Sequence[int],
                 peers: Tuple[str, ...] = ("cpsat", "milp"),
                 ours: Tuple[str, ...] = ("exact", "dp")) -> List[Case]:
    # Exact targets are per core: ours run on one thread, as the peers do (CP-SAT gets 1 worker).
    return [Case(kind, n, k, R=R, ours=ours, peers=peers, threads=1)
            for (n, k) in sizes for R in Rs for kind in workloads.CLASSIC]


@dataclasses.dataclass(frozen=True)
class Suite:
    title: str
    about: str
    full: List[Case]
    quick: List[Case]


SUITES: Dict[str, Suite] = {
    "lagrangian": Suite(
        'The fast path (`method="lagrangian"`) against the peers',
        "Ours with its default threads, as a user calls it. Its answers are certified to the gap "
        "shown, not proven optimal as CP-SAT's and HiGHS's are; cvxpy solves the LP relaxation.",
        [Case("routing", 300, 4), Case("routing", 1000, 8), Case("routing", 5000, 16),
         Case("uncorrelated", 1000, 8), Case("weakly", 1000, 8), Case("strongly", 1000, 8),
         Case("routing", 1000, 8, batch=1000, peers=("milp",))],
        [Case("routing", 300, 4), Case("routing", 1000, 8),
         Case("routing", 300, 4, batch=100, peers=("milp",))]),
    "exact": Suite(
        "The exact methods against the peers",
        "One thread for ours and one CP-SAT worker. Every answer that two solvers proved "
        "optimal is compared; a disagreement is flagged in the answer column.",
        _exact_cases([(1000, 8)], (1000,)),
        _exact_cases([(300, 8)], (1000,))),
    "grid": Suite(
        '`method="exact"` alone',
        "One thread. The sizes of the exact solver's targets (1000 x 8 and 10000 x 10) and "
        "more; no peer here, it would take hours (see the table above for the peers).",
        _exact_cases([(1000, 8), (1000, 10), (10000, 10), (1000, 100)], (1000, 10000),
                     peers=(), ours=("exact",)),
        _exact_cases([(1000, 8), (10000, 10)], (1000,), peers=(), ours=("exact",))),
    "threads": Suite(
        "Threads",
        "The same solve on one thread and on two: a batch spreads its instances over the "
        "threads, a single large instance uses them for its pass over every option. Compare "
        "the wall times; the CPU time counts every thread. On a machine shared with other work "
        "the second thread is often busy, and then these rows say little about the gain.",
        [Case(kind, 1000, 8, batch=B, ours=("exact",), peers=(), threads=t)
         for kind in ("uncorrelated", "subset_sum") for B in (16, 128) for t in (1, 2)]
        + [Case(kind, 100000, 8, ours=("lagrangian",), peers=(), threads=t)
           for kind in ("routing", "uncorrelated") for t in (1, 2)],
        [Case("uncorrelated", 1000, 8, batch=16, ours=("exact",), peers=(), threads=t)
         for t in (1, 2)]
        + [Case("routing", 100000, 8, ours=("lagrangian",), peers=(), threads=t)
           for t in (1, 2)]),
}
#: The cases of each suite in --quick mode.
QUICK = {name: suite.quick for name, suite in SUITES.items()}


# ---------------------------------------------------------------------------------------------
# measuring

@dataclasses.dataclass
class Timing:
    """Medians over the timed calls of one solver on one instance (seconds): `wall`, process
    `cpu` (all threads), `own` (the solver's own report, by name, e.g. {"wall": ..}), the
    number of timed `calls`, whether a call stopped at the time limit (`limited`), and the
    last call's answer."""
    wall: float
    cpu: float
    own: Dict[str, float]
    calls: int
    limited: bool
    answer: Any


def measure(call: Callable[[], Any], *, repeats: int = 3, min_time: float = 0.2,
            own_time: Optional[Callable[[Any], Dict[str, float]]] = None,
            hit_limit: Optional[Callable[[Any], bool]] = None) -> Timing:
    """Times call() the same way for every solver: one untimed warm-up call, then at least
    `repeats` timed calls and at least `min_time` seconds of them (at most MAX_CALLS); medians.
    A timed call whose answer `hit_limit` is not repeated. `own_time(answer)` is the solver's
    own report of its time, by name."""
    call()  # untimed: imports, first-call set-up, caches, for ours and the peers alike
    walls: List[float] = []
    cpus: List[float] = []
    owns: Dict[str, List[float]] = {}
    limited = False
    while True:
        w0, c0 = time.perf_counter(), time.process_time()
        answer = call()
        cpus.append(time.process_time() - c0)
        walls.append(time.perf_counter() - w0)
        for key, seconds in (own_time(answer) if own_time else {}).items():
            owns.setdefault(key, []).append(seconds)
        if hit_limit is not None and hit_limit(answer):
            limited = True
            break
        if len(walls) >= MAX_CALLS or (len(walls) >= repeats and sum(walls) >= min_time):
            break
    return Timing(statistics.median(walls), statistics.median(cpus),
                  {k: statistics.median(v) for k, v in owns.items()}, len(walls), limited, answer)


def _peer_call(name: str, limit: float) -> Callable[..., Any]:
    from . import reference

    if name == "cpsat":
        return lambda v, c, b: reference.cpsat(v, c, b, time_limit=limit)
    if name == "milp":
        return lambda v, c, b: reference.milp(v, c, b, time_limit=limit)
    if name == "lp":
        return lambda v, c, b: reference.lp(v, c, b)
    raise ValueError(f"peers: unknown peer {name!r}; known: {', '.join(PEERS)}")


def _own_time(name: str, sol: Any) -> Dict[str, float]:
    """The peer's own account of its solve time, as `apportion.reference` records it."""
    info = sol.info if isinstance(sol.info, dict) else {}
    if name == "cpsat" and "wall_time" in info:
        return {"wall": info["wall_time"], "user": info["user_time"]}
    if name == "lp" and info.get("solve_time") is not None:
        return {info.get("solver", "solve").lower(): info["solve_time"]}
    return {}


def _peer_hit_limit(name: str, sol: Any) -> bool:
    return name != "lp" and sol.status not in ("optimal", "infeasible")


@dataclasses.dataclass
class _Cell:
    """One solver on one case: its per-instance Timings and what its answers were."""
    timings: List[Timing] = dataclasses.field(default_factory=list)
    estimated_from: int = 0  # > 0: a batch time estimated from this many instances
    statuses: Dict[str, int] = dataclasses.field(default_factory=dict)  # status -> instances
    max_rel_gap: float = 0.0
    error: str = ""

    def mean(self, what: str) -> float:
        if not self.timings:
            return float("nan")
        return statistics.fmean(getattr(t, what) for t in self.timings)

    def mean_own(self) -> Dict[str, float]:
        keys = dict.fromkeys(k for t in self.timings for k in t.own)
        return {k: statistics.fmean(t.own[k] for t in self.timings if k in t.own) for k in keys}


def _record(cell: _Cell, sol: Any) -> None:
    for status in np.atleast_1d(sol.status):
        cell.statuses[str(status)] = cell.statuses.get(str(status), 0) + 1
    gap = np.atleast_1d(np.asarray(sol.gap, dtype=float))
    scale = np.maximum(np.abs(np.atleast_1d(np.asarray(sol.value, dtype=float))), 1e-300)
    rel = gap / scale
    if rel.size and np.all(np.isfinite(rel)):
        cell.max_rel_gap = max(cell.max_rel_gap, float(rel.max()))


def _steps(case: Case, instances: int) -> int:
    """Measurements one case takes, for the progress line."""
    peer_instances = min(instances, case.batch) if case.batch else instances
    return (1 if case.batch else instances) * len(case.ours) + peer_instances * len(case.peers)


def run_case(case: Case, instances: int = 3, peer_limit: float = 20.0,
             peers: Optional[Sequence[str]] = None, *, repeats: int = 3, min_time: float = 0.2,
             progress: Optional["Progress"] = None) -> Dict[str, Any]:
    """Times our methods and the peers on `instances` seeded instances of `case` (for a batch
    case: ours on the whole batch, peers on its first `instances` instances). Returns
    {"case": label, "batch": B or None, "cells": {solver: _Cell}, "notes": [str]}."""
    peers = list(case.peers if peers is None else [p for p in case.peers if p in peers])
    cells = {name: _Cell() for name in (*case.ours, *peers)}
    row: Dict[str, Any] = {"case": case.label, "batch": case.batch, "ours": list(case.ours),
                           "cells": cells, "notes": []}
    tick = progress.step if progress is not None else (lambda label: None)

    def ours(m: str, values: Any, costs: Any, budget: Any, what: str) -> Optional[Any]:
        tick(f"{case.label} {what}")
        cell = cells[m]
        try:
            # m is one of OUR_METHODS (checked by main), a Method for the type checker
            t = measure(lambda: api.solve(values, costs, budget, method=cast(Method, m),
                                          threads=case.threads),
                        repeats=repeats, min_time=min_time)
        except ValueError as exc:  # e.g. a dp table past max_memory
            cell.error = str(exc).split(";")[0][:90]
            return None
        cell.timings.append(t)
        _record(cell, t.answer)
        return t.answer

    def peer(p: str, values: Any, costs: Any, budget: Any, what: str) -> Any:
        tick(f"{case.label} {what}")
        t = measure(lambda: _peer_call(p, peer_limit)(values, costs, budget), repeats=repeats,
                    min_time=min_time, own_time=lambda s: _own_time(p, s),
                    hit_limit=lambda s: _peer_hit_limit(p, s))
        cells[p].timings.append(t)
        _record(cells[p], t.answer)
        return t.answer

    if case.batch:
        values, costs, budget = workloads.instance(case.kind, case.n, case.k, batch=case.batch,
                                                   R=case.R, seed=0)
        for m in case.ours:
            ours(m, values, costs, budget, m)
        for p in peers:
            used = min(instances, case.batch)
            for b in range(used):
                peer(p, values[b], costs[b], budget[b], f"{p} instance {b + 1}/{used}")
            cells[p].estimated_from = used
        return row

    for seed in range(instances):
        values, costs, budget = workloads.instance(case.kind, case.n, case.k, R=case.R, seed=seed)
        got = {}
        for m in case.ours:
            answer = ours(m, values, costs, budget, f"{m} seed {seed}")
            if answer is not None:
                got[m] = answer
        for p in peers:
            sol = peer(p, values, costs, budget, f"{p} seed {seed}")
            if p == "lp" or sol.status != "optimal":
                continue
            for m, mine in got.items():
                if mine.status == "optimal" and not math.isclose(mine.value, sol.value,
                                                                 rel_tol=1e-9):
                    row["notes"].append(f"DISAGREE: {m} {mine.value:.10g} vs {p} "
                                        f"{sol.value:.10g} on seed {seed}")
    return row


# ---------------------------------------------------------------------------------------------
# the document

def format_seconds(seconds: float) -> str:
    """A duration for the tables: us below 1 ms, ms below 1 s, else s; "n/a" for NaN."""
    if seconds != seconds:
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:,.2f} s"


def _answer_text(name: str, cell: _Cell, peer_limit: float) -> str:
    if cell.error:
        return f"error: {cell.error}"
    if name == "lp":
        return "LP optimum (a bound)"
    total = sum(cell.statuses.values())
    parts = []
    for status, count in sorted(cell.statuses.items()):
        text = status if count == total else f"{status} {count} of {total}"
        if status == "feasible" and name in PEERS:
            text += f" (stopped at the {peer_limit:g} s limit)"
        elif status == "feasible":
            text += f", relative gap <= {cell.max_rel_gap:.1e}"
        parts.append(text)
    return "; ".join(parts)


def format_table(rows: List[Dict[str, Any]], peer_limit: float = 20.0) -> str:
    """Markdown, one line per case and solver: median wall and CPU time per call (mean over the
    instances), the peer's own reported time, the peer's CPU time over our fastest method's,
    and what the answers were."""
    head = ["case", "solver", "wall", "CPU", "solver's own time", "CPU / ours", "answer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = row["cells"]
        ours_cpu = [cells[m].mean("cpu") for m in row["ours"] if cells[m].timings]
        best = min(ours_cpu) if ours_cpu else float("nan")
        first = True
        for name, cell in cells.items():
            wall, cpu = cell.mean("wall"), cell.mean("cpu")
            limited = any(t.limited for t in cell.timings)
            own = ", ".join(f"{format_seconds(s)} ({k})" for k, s in cell.mean_own().items())
            prefix = ">= " if limited else ""
            if cell.estimated_from:
                B = row["batch"]
                prefix = f"est. {B} x " + prefix
                ratio = f"est. {B * cpu / best:,.0f}x" if best == best else ""
                wall_text, cpu_text = (f"est. {format_seconds(B * wall)} ({B} x {format_seconds(wall)})",
                                       f"est. {format_seconds(B * cpu)} ({B} x {format_seconds(cpu)})")
                own = own and f"{own} per instance"
            else:
                ratio = ("" if name in row["ours"] or best != best
                         else f"{prefix}{cpu / best:,.0f}x")
                wall_text, cpu_text = prefix + format_seconds(wall), prefix + format_seconds(cpu)
            label = row["case"] if first else ""
            first = False
            lines.append("| " + " | ".join([label, name, wall_text, cpu_text, own or "",
                                             ratio, _answer_text(name, cell, peer_limit)]) + " |")
        for note in row["notes"]:
            lines.append(f"| | | | | | | {note} |")
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> str:
    from importlib import metadata

    parts = [f"Python {platform.python_version()}"]
    for dist in ("apportion", "numpy", "scipy", "ortools", "cvxpy"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(parts)


def _load() -> Optional[float]:
    """The machine's 1-minute load average (None where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def stamp(command: str, note: Optional[str] = None, started: Optional[datetime.datetime] = None,
          loads: Sequence[Optional[float]] = ()) -> str:
    """The header of the document: when (`started`, default now), where (CPU model, thread
    counts, the load averages in `loads`, e.g. at the start and the end of the run), with what,
    and the command that regenerates it."""
    from . import _core

    when = started or datetime.datetime.now(datetime.timezone.utc)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        f"- Date: {when.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- CPU: {_cpu_model()}, {os.cpu_count()} logical CPUs, {usable} usable by the process; "
        f"apportion's default thread count: {_core.num_threads()}",
    ]
    if loads and all(x is not None for x in loads):
        lines.append("- Load average (1 min) at the start and the end of the run: "
                     + " and ".join(f"{x:.2f}" for x in loads))
    lines += [f"- Software: {_versions()}", f"- Command: `{command}`"]
    if note:
        lines.append(f"- Note: {note}")
    return "\n".join(lines)


METHOD_TEXT = """\
How every solver is timed, ours and the peers alike (`apportion.benchmark.measure`):

- Each solver is first called once on the instance, untimed: imports, first-call set-up and
  thread pools are out of every number below.
- Then it is called again and again, at least {repeats} times and for at least {min_time:g} s, at
  most {max_calls} times. A cell is the median of those calls, in wall time and in process CPU
  time (all threads of the process), averaged over the seeded instances of the case
  ({instances} per case here).
- A peer call that stops at its time limit ({peer_limit:g} s of wall time) is not repeated,
  since every repeat would stop there too; its cells read ">= " and its answer says so. On a
  loaded machine a peer reaches that limit with less CPU time spent than on an idle one.
- "solver's own time" is the peer's own account of its solve, where it gives one: the wall
  and user time CP-SAT reports for its search (`WallTime()`, `UserTime()`; clocks of its own,
  not the process CPU time), and the solve time cvxpy reports for its backend (named;
  `solver_stats.solve_time`, without cvxpy's compilation). scipy's `milp` reports no run time
  for HiGHS, so that cell is empty.
- "CPU / ours" divides the peer's CPU time by that of our fastest method on the case. Read
  the ratios from CPU time: on a machine shared with other work a call's wall time includes
  the time it waited for a CPU, which stretches long calls (the peers') more than short ones.
- A batch case times ours on the whole batch in one call. The peers solve one instance at a
  time, so their batch time is B times their per-instance median over the first
  {instances} instance(s) of the batch: an estimate, marked "est." in the table.
- Times run from the Python call to the returned `Solution`, so they include each side's
  Python layer (the peers' model building included).

No row compares with Pisinger's `mcknap` (the 1995 minimal MCKP algorithm, the best exact
code known for this problem): its C code is not available to this build, so it was not
measured here, and no number is quoted for it.
"""


class Progress:
    """A progress line on stderr: steps done, the current step, elapsed time and an estimate
    of the time left (elapsed / done x left: cases differ, so it is rough)."""

    def __init__(self, total: int, stream: Any = None) -> None:
        self.total, self.done = total, 0
        self.stream = sys.stderr if stream is None else stream
        self.started = time.perf_counter()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    @staticmethod
    def _clock(seconds: float) -> str:
        m, s = divmod(int(round(seconds)), 60)
        return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"

    def step(self, label: str) -> None:
        elapsed = time.perf_counter() - self.started
        eta = (self._clock(elapsed / self.done * (self.total - self.done))
               if self.done else "?")
        self.done += 1
        text = (f"[{self.done}/{self.total}] {label} | elapsed {self._clock(elapsed)}, "
                f"left ~{eta}")
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        elapsed = self._clock(time.perf_counter() - self.started)
        self.stream.write(("\r\x1b[K" if self.tty else "") + f"done in {elapsed}\n")
        self.stream.flush()


def _names(text: Optional[str], known: Sequence[str], what: str,
           parser: argparse.ArgumentParser) -> Optional[List[str]]:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"--{what}: unknown {', '.join(map(repr, unknown))}; "
                     f"choose from {','.join(known)}")
    return names


def main(argv: Optional[Sequence[str]] = None, prog: str = "apportion bench",
         default_out: Optional[str] = None,
         sections: Optional[Dict[str, Callable[[bool], str]]] = None) -> int:
    """Runs the suites and prints the markdown document; writes it to --out (or
    `default_out`). `sections`: more suites by name, each a function of `quick` that measures
    and returns its own markdown section (bench/report.py adds bench/bench_limits.py's this
    way); they run after the suites above, with --suite NAME or "all". Returns the exit status
    (2 for bad options, through argparse)."""
    sections = dict(sections or {})
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=[*SUITES, *sections, "all"], default="all",
                        help="which tables (default: all of them)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller cases, one instance each, a 5 s peer limit: a minute or two")
    parser.add_argument("--instances", type=int, default=None,
                        help="seeded instances per case (default 3, with --quick 1)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed calls per solver and instance, at least (default 3)")
    parser.add_argument("--min-time", type=float, default=0.2,
                        help="seconds of timed calls per solver and instance, at least (0.2)")
    parser.add_argument("--peer-limit", type=float, default=None,
                        help="time limit of a peer's solve, seconds (default 20, with --quick 5)")
    parser.add_argument("--peers", default=None,
                        help=f"comma-separated subset of {','.join(PEERS)} (\"\" for ours alone)")
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated subset of our methods, {','.join(OUR_METHODS)}")
    parser.add_argument("--out", default=default_out,
                        help="write the document to this file" +
                        (f" (default {default_out})" if default_out else ""))
    parser.add_argument("--note", default=None,
                        help="a line for the header, e.g. what else ran on the machine")
    args = parser.parse_args(argv)
    instances = args.instances if args.instances is not None else (1 if args.quick else 3)
    peer_limit = args.peer_limit if args.peer_limit is not None else (5.0 if args.quick else 20.0)
    if instances < 1:
        parser.error("--instances must be at least 1")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not (args.min_time >= 0 and math.isfinite(args.min_time)):
        parser.error("--min-time must be a finite number of seconds >= 0")
    if not (peer_limit > 0 and math.isfinite(peer_limit)):
        parser.error("--peer-limit must be a finite number of seconds > 0")
    peers = _names(args.peers, PEERS, "peers", parser)
    methods = _names(args.methods, OUR_METHODS, "methods", parser)
    if args.out:  # checked before the run, not after it
        folder = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK) or os.path.isdir(args.out):
            parser.error(f"--out: cannot write {args.out!r} (no such folder, not writable, or a folder)")

    plan = []
    for name in (list(SUITES) if args.suite == "all" else [args.suite] if args.suite in SUITES
                 else []):
        cases = QUICK[name] if args.quick else SUITES[name].full
        if methods is not None:
            cases = [dataclasses.replace(c, ours=tuple(m for m in c.ours if m in methods))
                     for c in cases]
            cases = [c for c in cases if c.ours]
        if cases:
            plan.append((name, cases))
    extra = [name for name in sections if args.suite in ("all", name)]
    progress = Progress(sum(_steps(c if peers is None else dataclasses.replace(
        c, peers=tuple(p for p in c.peers if p in peers)), instances)
        for _, cases in plan for c in cases) + len(extra))

    started, load_start = datetime.datetime.now(datetime.timezone.utc), _load()
    chunks = []
    for name, cases in plan:
        rows = [run_case(c, instances, peer_limit, peers, repeats=args.repeats,
                         min_time=args.min_time, progress=progress) for c in cases]
        suite = SUITES[name]
        chunks.append(f"## {suite.title}\n\n{suite.about}\n\n{format_table(rows, peer_limit)}")
    for name in extra:
        progress.step(name)
        chunks.append(sections[name](args.quick).rstrip("\n"))
    progress.close()
    command = " ".join([prog, *map(shlex.quote, argv)])
    head = (f"# Benchmarks\n\nGenerated by `apportion.benchmark`; do not edit by hand, "
            f"regenerate it with the command below.\n\n"
            f"{stamp(command, args.note, started, (load_start, _load()))}")
    method = METHOD_TEXT.format(repeats=args.repeats, min_time=args.min_time,
                                max_calls=MAX_CALLS, instances=instances, peer_limit=peer_limit)
    text = "\n\n".join([head, method, *chunks]) + "\n"
    sys.stdout.write(text)
    if args.out:
        try:
            with open(args.out, "w") as fh:
                fh.write(text)
        except OSError as exc:
            parser.error(f"--out: cannot write {args.out!r} ({exc.strerror})")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
