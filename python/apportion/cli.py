"""The `apportion` command line (also `python -m apportion`).

    apportion demo [--quick] [--plot PATH]   compare routing policies on the shipped workloads
    apportion solve PROBLEM [--out FILE]     solve a .json or .npz problem file, JSON out
    apportion bench [ARGS...]                the peer comparison (apportion.benchmark)
    apportion example                        one seeded routing solve with its certificate
    apportion example learn [--quick]        decision-focused learning of the routing's predictor

Exit codes: 0 success, 2 bad usage or bad input (one line on stderr says why), 1 internal
error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad usage or bad input: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise UsageError(f"{message} (see {self.prog} --help)")


def _seed(text: str) -> int:
    """--seed: an integer >= 0 (numpy's generators take no negative seed)."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r:.40}") from None
    if seed < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {seed}")
    return seed


def _build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="apportion", description="Budget-constrained assignment solvers and a "
                "consequence-aware scheduler.")
    p.add_argument("--version", action="version", version=f"apportion {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser("demo", help="compare routing policies on the shipped workloads")
    d.add_argument("--quick", action="store_true",
                   help="a smaller general workload and fewer budgets (seconds)")
    d.add_argument("--plot", default="apportion-demo.png", metavar="PATH",
                   help="where to write the PNG of loss against budget (default: %(default)s)")
    d.add_argument("--no-plot", action="store_true", help="print the tables only")
    d.add_argument("--seed", type=_seed, default=0, help="seed of the general workload and of "
                   "the uniform policy's draw (default: %(default)s)")

    s = sub.add_parser("solve", help="solve a problem file (.json or .npz), JSON to stdout")
    s.add_argument("problem", metavar="PROBLEM", help="a .json or .npz file (see README)")
    s.add_argument("--out", metavar="FILE", help="write the solution JSON here, not stdout")
    s.add_argument("--method", default=None, help="solver method (default: the file's "
                   "'method' or auto)")
    s.add_argument("--sense", choices=("max", "min"), default=None,
                   help="override the file's sense (default: the file's or max)")

    b = sub.add_parser("bench", help="run the peer comparison (medians and ratios)",
                       add_help=False)
    b.add_argument("args", nargs=argparse.REMAINDER,
                   help="passed on to apportion.benchmark.main")

    e = sub.add_parser("example", help="one seeded routing solve with its certificate; "
                       "'example learn': decision-focused learning of the routing's predictor")
    e.add_argument("name", nargs="?", choices=("routing", "learn"), default="routing",
                   help="which example (default: %(default)s)")
    e.add_argument("--quick", action="store_true", help="learn: a smaller data set (seconds)")
    e.add_argument("--seed", type=_seed, default=0, help="learn: the data's and the models' "
                   "seed (default: %(default)s)")
    return p


# --------------------------------------------------------------------------------------------
# solve


PROBLEM_FIELDS = ("values", "costs", "budget")
OPTIONAL_FIELDS = ("mask", "sense", "method")


def load_problem(path: str) -> Dict[str, Any]:
    """Reads a problem file into a dict with values, costs, budget and optional mask, sense,
    method. Raises UsageError with a one-line reason on anything wrong with the file."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".json", ".npz"):
        raise UsageError(f"PROBLEM: expected a .json or .npz file, got {path!r}")
    if not os.path.isfile(path):
        raise UsageError(f"PROBLEM: no such file: {path!r}")
    if ext == ".json":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int of > 4300 digits
            raise UsageError(f"PROBLEM: {path!r} is not valid JSON ({exc})") from None
        except RecursionError:  # the json parser recurses once per level of nesting
            raise UsageError(f"PROBLEM: {path!r} is nested too deeply to read; values, costs "
                             "and mask need at most 3 levels of lists") from None
        except OSError as exc:
            raise UsageError(f"PROBLEM: cannot read {path!r} ({exc.strerror or exc})") from None
        if not isinstance(data, dict):
            raise UsageError(f"PROBLEM: {path!r} must hold a JSON object with fields "
                             f"{', '.join(PROBLEM_FIELDS)}")
    else:
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except Exception as exc:  # zipfile/pickle/format errors differ by numpy version
            raise UsageError(f"PROBLEM: {path!r} is not a readable .npz file ({exc})") from None
        for key in ("sense", "method"):
            if key in data:
                arr = data[key]
                if arr.ndim != 0 or arr.dtype.kind != "U":
                    raise UsageError(f"PROBLEM: field '{key}' must be a string")
                data[key] = str(arr)
    missing = [k for k in PROBLEM_FIELDS if k not in data]
    if missing:
        raise UsageError(f"PROBLEM: missing field(s) {', '.join(repr(m) for m in missing)} in "
                         f"{path!r}; a problem needs {', '.join(PROBLEM_FIELDS)}")
    unknown = sorted(set(data) - set(PROBLEM_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise UsageError(f"PROBLEM: unknown field(s) {', '.join(repr(u) for u in unknown)} in "
                         f"{path!r}; allowed: {', '.join(PROBLEM_FIELDS + OPTIONAL_FIELDS)}")
    for key in ("sense", "method"):
        if key in data and not isinstance(data[key], str):
            raise UsageError(f"PROBLEM: field '{key}' must be a string")
    if "budget" in data and isinstance(data["budget"], str):
        raise UsageError("PROBLEM: field 'budget' must be a number or a list of numbers")
    return data


def _jsonable(x: Any) -> Any:
    """numpy scalars and arrays to JSON types; non-finite floats to null."""
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()] if x.ndim else _jsonable(x.item())
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def solution_dict(sol: Any) -> Dict[str, Any]:
    """A `Solution` as a JSON-ready dict."""
    out = {
        "status": sol.status,
        "choice": np.asarray(sol.choice),
        "value": sol.value,
        "cost": sol.cost,
        "bound": sol.bound,
        "gap": sol.gap,
        "shadow_price": sol.shadow_price,
        "min_budget": sol.min_budget,
        "method": sol.method,
        "sense": sol.sense,
        "seconds": sol.seconds,
    }
    return {k: _jsonable(v) for k, v in out.items()}


def _cmd_solve(args: argparse.Namespace) -> int:
    from . import solve

    data = load_problem(args.problem)
    method = args.method or data.get("method", "auto")
    sense = args.sense or data.get("sense", "max")
    try:
        sol = solve(data["values"], data["costs"], data["budget"], mask=data.get("mask"),
                    method=method, sense=sense)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"PROBLEM: {exc}") from None
    text = json.dumps(solution_dict(sol), indent=2, allow_nan=False) + "\n"
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise UsageError(f"--out: cannot write {args.out!r} ({exc.strerror})") from None
    else:
        sys.stdout.write(text)
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# bench


def _cmd_bench(args: argparse.Namespace) -> int:
    try:
        benchmark = importlib.import_module("apportion.benchmark")
    except ModuleNotFoundError as exc:
        if exc.name in ("apportion.benchmark",):
            raise UsageError("bench: the peer comparison (apportion.benchmark) is not part of "
                             "this build of apportion") from None
        raise UsageError(f"bench: needs the package {exc.name!r}; install it with "
                         "pip install \"apportion[bench]\"") from None
    rc = benchmark.main(list(args.args))
    return EXIT_OK if rc is None else int(rc)


# --------------------------------------------------------------------------------------------
# example (the former `python -m apportion`)


def _cmd_example_learn(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("torch") is None:
        raise UsageError("example learn: needs PyTorch; pip install \"apportion[torch]\"")
    from . import learn

    size = learn.EXAMPLE_QUICK if args.quick else learn.EXAMPLE_FULL
    print(f"decision-focused learning: {size['train_days']} training days of {size['tasks']} "
          f"tasks x {len(learn.LEARN_TIERS)} tiers, {size['test_days']} test days, "
          f"{size['epochs']} epochs, seed {args.seed}", flush=True)
    print(learn.example_table(learn.run_example(seed=args.seed, **size)))
    return EXIT_OK


def _cmd_example(args: argparse.Namespace) -> int:
    if getattr(args, "name", "routing") == "learn":
        return _cmd_example_learn(args)
    from . import solve, workloads

    values, costs, budget = workloads.instance("routing", 1000, 4, seed=0)
    sol = solve(values, costs, budget)
    tiers = np.bincount(sol.choice, minlength=values.shape[1])
    print("routing workload: 1000 tasks, 4 tiers costing", costs[0].tolist())
    print(f"budget {float(budget):.1f}, spent {sol.cost:.1f}")
    print("tasks per tier:", tiers.tolist())
    print(f"value {sol.value:.4f}, bound {sol.bound:.4f}, relative gap {sol.relative_gap:.2e}, "
          f"status {sol.status}")
    print(f"shadow price {sol.shadow_price:.4f} value per unit of budget; "
          f"solved in {sol.seconds * 1e6:.0f} microseconds")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# demo


PUBLISHED_PAIRS = (  # (published policy, our analogue)
    ("difficulty-aware", "difficulty"),
    ("random", "uniform"),
    ("consequence-aware (oracle labels)", "consequence"),
    ("priority-aware (oracle)", "priority"),
    (None, "optimal"),
)


def run_demo(quick: bool, seed: int, progress: bool = True) -> Dict[str, Any]:
    """Routes both shipped workloads at each of their budgets with every available policy.

    Returns {"workloads": [Workload...], "policies": [...], "exact": bool,
    "results": {workload name: [(label, budget, {policy: Routing})...]}}.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from . import schedule

    exact = schedule.exact_available()
    policies = [p for p in schedule.POLICIES if exact or p != "optimal"]
    workloads = [schedule.published_setting(),
                 schedule.general_setting(n=60 if quick else 200, seed=seed,
                                          fractions=(0.1, 0.5, 0.9) if quick
                                          else schedule.GENERAL_FRACTIONS)]
    jobs = [(wl, label, budget) for wl in workloads for label, budget in wl.budgets]
    results: Dict[str, list] = {wl.name: [] for wl in workloads}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True,
                  disable=not progress) as bar:
        task = bar.add_task("routing", total=len(jobs) * len(policies))
        for wl, label, budget in jobs:
            row = {}
            for p in policies:
                bar.update(task, description=f"{wl.name} {label}: {p}")
                row[p] = schedule.route(wl.tasks, wl.tiers, budget, p, seed=seed)
                bar.advance(task)
            results[wl.name].append((label, budget, row))
    return {"workloads": workloads, "policies": policies, "exact": exact, "results": results}


def _reduction(loss: float, ref: float) -> str:
    """Relative change of loss against ref: "-23.3%" is a 23.3% lower loss."""
    return "n/a" if ref <= 0 else f"{(loss - ref) / ref:+.1%}"


def demo_tables(demo: Dict[str, Any]) -> List[Any]:
    """rich Tables: one per workload (loss per policy and budget, change against
    difficulty-aware routing), then the published setting beside the published numbers."""
    from rich.table import Table

    from . import schedule

    policies = demo["policies"]
    tables = []
    for wl in demo["workloads"]:
        t = Table(title=f"{wl.name} setting: {wl.description}\nexpected cost-weighted loss "
                  "(change vs difficulty-aware routing)", title_justify="left")
        t.add_column("budget", justify="left")
        t.add_column("units", justify="right")
        for p in policies:
            t.add_column(p, justify="right")
        for label, budget, row in demo["results"][wl.name]:
            ref = row["difficulty"].loss
            cells = []
            for p in policies:
                loss = row[p].loss
                cells.append(f"{loss:.2f}" if p == "difficulty" else
                             f"{loss:.2f} ({_reduction(loss, ref)})")
            t.add_row(label, f"{budget:g}", *cells)
        tables.append(t)

    pub = demo["workloads"][0]
    row25 = next((r for lab, b, r in demo["results"][pub.name] if lab.startswith("25%")), None)
    if row25 is not None:
        t = Table(title="published setting at 25% premium: published figures (quoted, not "
                  "reproduced) beside ours (expected loss on the shipped 300-task CSV)",
                  title_justify="left")
        t.add_column("published policy", no_wrap=True)
        t.add_column("published loss", justify="right")
        t.add_column("vs difficulty-aware", justify="right")
        t.add_column("our policy")
        t.add_column("our loss", justify="right")
        t.add_column("vs difficulty", justify="right")
        pref = schedule.PUBLISHED_LOSSES["difficulty-aware"]
        oref = row25["difficulty"].loss
        for pname, ours in PUBLISHED_PAIRS:
            if ours not in row25:
                continue
            pl = schedule.PUBLISHED_LOSSES.get(pname) if pname else None
            ol = row25[ours].loss
            t.add_row(pname or "-", "-" if pl is None else f"{pl:.2f}",
                      "-" if pl is None else ("reference" if pl == pref else _reduction(pl, pref)),
                      ours, f"{ol:.2f}", "reference" if ours == "difficulty" else _reduction(ol, oref))
        tables.append(t)
    return tables


def demo_plot(demo: Dict[str, Any], path: str) -> str:
    """Writes a PNG of expected loss against budget, one panel per workload; returns the
    absolute path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wls = demo["workloads"]
    fig, axes = plt.subplots(1, len(wls), figsize=(6 * len(wls), 4.2))
    axes = np.atleast_1d(axes)
    styles = {"optimal": "k-o", "consequence": "C0--s", "priority": "C1-^",
              "difficulty": "C3-v", "uniform": "C7-d"}
    for ax, wl in zip(axes, wls):
        rows = demo["results"][wl.name]
        x = [b for _, b, _ in rows]
        for p in demo["policies"]:
            ax.plot(x, [r[p].loss for _, _, r in rows], styles.get(p, "-o"), label=p, ms=4)
        ax.set_title(f"{wl.name} setting ({len(wl.tasks)} tasks, {len(wl.tiers)} tiers)")
        ax.set_xlabel("budget (compute units)")
        ax.set_ylabel("expected cost-weighted loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out = os.path.abspath(path)
    try:
        fig.savefig(out, dpi=110)
    except OSError as exc:
        raise UsageError(f"--plot: cannot write {path!r} ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
    return out


def _cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    if not args.no_plot:
        plot_dir = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(plot_dir):
            raise UsageError(f"--plot: directory {plot_dir!r} does not exist")
        if not args.plot.lower().endswith(".png"):
            raise UsageError(f"--plot: expected a .png path, got {args.plot!r}")
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("demo: the plot needs matplotlib; pip install \"apportion[plot]\" "
                             "or pass --no-plot")
    demo = run_demo(args.quick, args.seed)
    console = Console(width=None if sys.stdout.isatty() else 120)
    for t in demo_tables(demo):
        console.print(t)
        console.print()
    if not demo["exact"]:
        console.print("note: the exact solver (method=\"exact\") is not in this build, so the "
                      "'optimal' policy is not shown")
    if not args.no_plot:
        console.print(f"plot: {demo_plot(demo, args.plot)}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------


COMMANDS = {"demo": _cmd_demo, "solve": _cmd_solve, "bench": _cmd_bench,
            "example": _cmd_example}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit code (0 ok, 2 bad usage or input, 1 internal
    error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = _build_parser()
        # `bench` passes everything after it on, --help included.
        if argv and argv[0] == "bench":
            args = argparse.Namespace(command="bench", args=argv[1:])
        else:
            args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            raise UsageError("a command is needed: demo, solve, bench or example")
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"apportion: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("apportion: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal error: one line, and the traceback on request
        if os.environ.get("APPORTION_DEBUG"):
            raise
        print(f"apportion: internal error: {type(exc).__name__}: {exc} "
              "(set APPORTION_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
