"""The `apportion` command line (also `python -m apportion`).

    apportion solve PROBLEM [options]        solve a .json or .npz problem file ("-": stdin)
    apportion solve --stream [options]       one JSON problem per stdin line, one answer per line
    apportion demo [--quick] [--plot PATH]   compare routing policies on the shipped workloads
    apportion bench [ARGS...]                the peer comparison (apportion.benchmark)
    apportion example                        one seeded routing solve with its certificate
    apportion example learn [--quick]        decision-focused learning of the routing's predictor

Exit codes: 0 success, 3 an instance has no allocation within its budget (status
"infeasible" or "unknown"; the answer is still written), 2 bad usage or bad input (one line on
stderr says why), 1 internal error. The problem and answer formats are described by the JSON
schemas `problem_schema()` and `answer_schema()` (files in apportion/schemas/).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import importlib
import importlib.util
import io
import json
import math
import os
import sys
import tempfile
from typing import (IO, Any, Callable, Dict, Iterable, List, Mapping, NoReturn, Optional, Sequence,
                    Tuple, Union)

import numpy as np

from ._problem import Solution, _to_numpy, exact_in_float64, json_ready

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_NO_ALLOCATION = 0, 1, 2, 3


class UsageError(Exception):
    """Bad usage or bad input: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
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


def _json_arg(text: str) -> Any:
    """--mask: a JSON array."""
    try:
        return json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a JSON array, got {text!r:.40}") from None


PLOT_FORMATS = (".png", ".svg", ".pdf")
DEFAULT_PLOT = os.path.join(tempfile.gettempdir(), "apportion-demo.png")


def _build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .api import METHODS

    p = _Parser(prog="apportion", description="Budget-constrained assignment solvers and a "
                "consequence-aware scheduler. Exit codes: 0 success, 3 an instance without an "
                "allocation within its budget, 2 bad usage or input, 1 internal error.")
    p.add_argument("--version", action="version", version=f"apportion {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("solve", help="solve a problem file (.json or .npz), JSON to stdout",
                       description="Solves a problem file and writes the answer as one line of "
                       "JSON. Options given here override the file's fields of the same name. "
                       "Exit code 3 when an instance has no allocation within its budget.")
    s.add_argument("problem", metavar="PROBLEM", nargs="?", default=None,
                   help="a .json or .npz file, or - for stdin (see the README or "
                   "apportion/schemas/problem.schema.json)")
    s.add_argument("--stream", action="store_true",
                   help="keep running: read one JSON problem per line of stdin and write one "
                   "JSON answer per line of stdout (flushed), until stdin closes; a bad line "
                   "gets {\"error\": ...} and the stream goes on")
    s.add_argument("--out", metavar="FILE", help="write the answer here, not to stdout")
    s.add_argument("--no-timings", action="store_true",
                   help="leave out 'seconds', so that answers can be compared as text")
    s.add_argument("--method", choices=METHODS, default=None,
                   help="solver method (default: the file's 'method', else auto)")
    s.add_argument("--sense", choices=("max", "min"), default=None,
                   help="max: maximise values; min: minimise them as losses (default: the "
                   "file's, else max)")
    s.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="seconds per instance for method exact (default 10)")
    s.add_argument("--max-states", type=int, default=None, metavar="N",
                   help="core states per instance for method exact (default: no count; memory bounds them)")
    s.add_argument("--threads", type=int, default=None, metavar="N",
                   help="native threads (default: all cores)")
    s.add_argument("--cost-resolution", type=float, default=None, metavar="UNIT",
                   help="method dp: quantise real costs to this unit")
    s.add_argument("--exact-spend", action="store_const", const=True, default=None,
                   help="method dp: spend exactly the budget")
    s.add_argument("--mask", type=_json_arg, default=None, metavar="JSON",
                   help="a JSON array of booleans broadcastable to values; true = allowed")

    d = sub.add_parser("demo", help="compare routing policies on the shipped workloads",
                       description="Routes the shipped workloads with every policy, prints the "
                       "expected cost-weighted losses (80 columns) and plots them when "
                       "matplotlib is installed (pip install \"apportion[plot]\").")
    d.add_argument("--quick", action="store_true",
                   help="a smaller general workload and fewer budgets (seconds)")
    d.add_argument("--plot", default=DEFAULT_PLOT, metavar="PATH",
                   help="where to write the plot of loss against budget: .png, .svg or .pdf "
                   "(default: %(default)s)")
    d.add_argument("--no-plot", action="store_true", help="print the tables only")
    d.add_argument("--seed", type=_seed, default=0, help="seed of the general workload and of "
                   "the uniform policy's draw (default: %(default)s)")

    b = sub.add_parser("bench", help="run the peer comparison (apportion bench --help)",
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
#: Optional fields of a problem: the keyword arguments of `apportion.solve` that a file may
#: set (a command-line option of the same name overrides each), and "id", echoed in the answer.
OPTION_FIELDS = ("mask", "sense", "method", "time_limit", "max_states", "threads",
                 "cost_resolution", "exact_spend")
OPTIONAL_FIELDS = OPTION_FIELDS + ("id",)
_REQUIRED = frozenset(PROBLEM_FIELDS)
_ALLOWED = frozenset(PROBLEM_FIELDS + OPTIONAL_FIELDS)
_STRING_FIELDS = ("sense", "method")
_ARRAY_FIELDS = ("values", "costs", "budget", "mask")
_ARRAY_DTYPES = ("float64", "float32", "int64", "int32", "bool")


def schema_path(name: str) -> str:
    """The path of a shipped JSON schema: "problem" or "answer"."""
    from importlib import resources

    return str(resources.files("apportion").joinpath("schemas").joinpath(f"{name}.schema.json"))


def problem_schema() -> Dict[str, Any]:
    """The JSON schema (draft 2020-12) of a problem file or stream line."""
    with open(schema_path("problem"), encoding="utf-8") as f:
        schema: Dict[str, Any] = json.load(f)
    return schema


def answer_schema() -> Dict[str, Any]:
    """The JSON schema (draft 2020-12) of an answer (`Solution.to_dict()`)."""
    with open(schema_path("answer"), encoding="utf-8") as f:
        schema: Dict[str, Any] = json.load(f)
    return schema


def _decode_array(obj: Mapping[str, Any], name: str) -> np.ndarray:
    """An array given as {"dtype", "shape", "data": base64 of its little-endian C-order
    bytes}: a form that parses in microseconds where a list of numbers takes ~100 ns each."""
    extra = set(obj) - {"dtype", "shape", "data"}
    if extra or not {"dtype", "shape", "data"} <= set(obj):
        raise UsageError(f"PROBLEM: field '{name}': an encoded array is an object with exactly "
                         "'dtype', 'shape' and 'data'")
    dtype, shape, data = obj["dtype"], obj["shape"], obj["data"]
    if dtype not in _ARRAY_DTYPES:
        raise UsageError(f"PROBLEM: field '{name}': dtype must be one of {', '.join(_ARRAY_DTYPES)}"
                         f", got {dtype!r:.40}")
    if (not isinstance(shape, list) or len(shape) > 4
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise UsageError(f"PROBLEM: field '{name}': shape must be a list of up to 4 integers >= 0")
    if not isinstance(data, str):
        raise UsageError(f"PROBLEM: field '{name}': data must be a base64 string")
    try:  # strict: the lenient decoder skipped junk such as "#!*" and decoded the rest
        if sys.version_info >= (3, 11):  # (binascii's strict mode: base64.b64decode runs a regex first)
            raw = binascii.a2b_base64(data, strict_mode=True)
        else:
            raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"PROBLEM: field '{name}': data is not valid base64") from None
    # The canonical native dtype object, not an equal one from newbyteorder: the extension
    # compares dtypes by identity.
    native = np.dtype(dtype)
    count = math.prod(shape)  # not np.prod: a numpy reduction costs microseconds per call
    if len(raw) != count * native.itemsize:
        raise UsageError(f"PROBLEM: field '{name}': {len(raw)} bytes of data for shape {shape} "
                         f"of {dtype} ({count * native.itemsize} bytes)")
    try:  # (a shape with a 0 and dimensions numpy cannot index: its own message named no field)
        if sys.byteorder == "little":
            return np.frombuffer(raw, dtype=native).reshape(shape)
        return np.frombuffer(raw, dtype=native.newbyteorder("<")).astype(native).reshape(shape)
    except ValueError as exc:
        raise UsageError(f"PROBLEM: field '{name}': shape {shape} cannot be made ({exc})") from None


def _array(x: Any, name: str) -> Any:
    """A problem's array field as the solver takes it fastest: float64 numpy for numbers
    (integers too, so that the native fast path takes them), bool for a mask, a decoded
    encoded array, a scalar budget as it is. Named errors for what is not an array of
    numbers."""
    if isinstance(x, dict):
        return _decode_array(x, name)
    if name == "budget" and type(x) in (int, float):
        return x  # solve names an int past the float range
    arr = _to_numpy(x, name, allow_bool=name == "mask")
    if name == "costs":
        exact_in_float64(arr, name)  # (a cost rounded down could break the budget)
    if arr.dtype.kind in "iu" and name in ("values", "costs"):
        arr = arr.astype(np.float64)  # larger ints than int64 came as floats
    return arr  # (budgets as they are: solve rounds them down where float64 cannot hold them)


def check_problem(data: Any, where: str = "PROBLEM") -> Dict[str, Any]:
    """Checks the fields of a problem (a parsed JSON object or an .npz's arrays): the required
    values, costs and budget, the OPTIONAL_FIELDS, nothing else, strings where strings belong;
    returns them with null optional fields dropped (`solve_problem` converts the arrays).
    Raises UsageError with a one-line reason."""
    if not isinstance(data, dict):
        raise UsageError(f"{where} must hold a JSON object with fields "
                         f"{', '.join(PROBLEM_FIELDS)}")
    keys = data.keys()
    if not _REQUIRED <= keys:
        missing = [k for k in PROBLEM_FIELDS if k not in data]
        raise UsageError(f"{where}: missing field(s) {', '.join(repr(m) for m in missing)}; "
                         f"a problem needs {', '.join(PROBLEM_FIELDS)}")
    unknown = sorted(keys - _ALLOWED)
    if unknown:
        raise UsageError(f"{where}: unknown field(s) {', '.join(repr(u) for u in unknown)}; "
                         f"allowed: {', '.join(PROBLEM_FIELDS + OPTIONAL_FIELDS)}")
    out = {k: v for k, v in data.items() if v is not None or k in PROBLEM_FIELDS}
    for key in _STRING_FIELDS:
        if key in out and not isinstance(out[key], str):
            raise UsageError(f"{where}: field '{key}' must be a string")
    if isinstance(out["budget"], str):
        raise UsageError(f"{where}: field 'budget' must be a number or a list of numbers")
    if "id" in out and not _is_json(out["id"]):
        raise UsageError(f"{where}: field 'id' holds NaN or Infinity, which JSON does not allow "
                         "(it is echoed in the answer)")
    return out


def _is_json(x: Any) -> bool:
    """Whether x encodes as JSON: Python's json reads NaN and Infinity, which JSON does not
    allow, and which the answer's encoder refuses."""
    try:
        _COMPACT.encode(x)
    except (ValueError, TypeError, RecursionError):
        return False
    return True


def _read_json(text: Any, source: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int of > 4300 digits
        raise UsageError(f"PROBLEM: {source} is not valid JSON ({exc})") from None
    except RecursionError:  # the json parser recurses once per level of nesting
        raise UsageError(f"PROBLEM: {source} is nested too deeply to read; values, costs "
                         "and mask need at most 4 levels of lists") from None


def _read_npz(file: Any, source: str) -> Dict[str, Any]:
    try:
        with np.load(file, allow_pickle=False) as z:
            data: Dict[str, Any] = {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile/pickle/format errors differ by numpy version
        raise UsageError(f"PROBLEM: {source} is not a readable .npz file ({exc})") from None
    for key in _STRING_FIELDS:
        if key in data:
            arr = data[key]
            if arr.ndim != 0 or arr.dtype.kind != "U":
                raise UsageError(f"PROBLEM: field '{key}' must be a string")
            data[key] = str(arr)
    if "id" in data:
        data["id"] = json_ready(data["id"])
    for key in ("exact_spend",):
        if key in data:
            arr = data[key]
            if arr.ndim != 0 or arr.dtype != np.bool_:
                raise UsageError(f"PROBLEM: field '{key}' must be a 0-d boolean")
            data[key] = bool(arr)
    for key in ("time_limit", "max_states", "threads", "cost_resolution"):
        if key in data:
            arr = data[key]
            if arr.ndim != 0 or arr.dtype.kind not in "iuf":
                raise UsageError(f"PROBLEM: field '{key}' must be a 0-d number")
            data[key] = arr.item()
    return data


def load_problem(path: str) -> Dict[str, Any]:
    """Reads a problem file ("-": stdin, JSON or .npz bytes) into a dict with values, costs,
    budget and any of OPTIONAL_FIELDS. Raises UsageError with a one-line reason on anything
    wrong with the file."""
    if path == "-":
        raw = sys.stdin.buffer.read()
        source = "stdin"
        if raw.startswith(b"PK"):
            return check_problem(_read_npz(io.BytesIO(raw), source), f"PROBLEM: {source}")
        return check_problem(_read_json(raw, source), f"PROBLEM: {source}")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".json", ".npz"):
        raise UsageError(f"PROBLEM: expected a .json or .npz file (or - for stdin), got {path!r}")
    if not os.path.isfile(path):
        raise UsageError(f"PROBLEM: no such file: {path!r}")
    source = repr(path)
    if ext == ".json":
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise UsageError(f"PROBLEM: cannot read {path!r} ({exc.strerror or exc})") from None
        return check_problem(_read_json(raw, source), f"PROBLEM: {source}")
    return check_problem(_read_npz(path, source), f"PROBLEM: {source}")


def _overrides(args: argparse.Namespace) -> Dict[str, Any]:
    """The solver options given on the command line (they override a problem's fields)."""
    return {k: getattr(args, k) for k in OPTION_FIELDS if getattr(args, k) is not None}


def solve_problem(data: Dict[str, Any], overrides: Mapping[str, Any]) -> Solution:
    """Solves a checked problem (`check_problem`) with the command line's overrides; a
    UsageError naming the field for input the solver refuses."""
    from .api import solve

    options = {k: data[k] for k in OPTION_FIELDS if k in data}
    options.update(overrides)
    try:
        values = _array(data["values"], "values")
        costs = _array(data["costs"], "costs")
        budget = _array(data["budget"], "budget")
        if "mask" in options:
            options["mask"] = _array(options["mask"], "mask")
        return solve(values, costs, budget, **options)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"PROBLEM: {exc}") from None


def solution_dict(sol: Solution, timings: bool = True, problem_id: Any = None) -> Dict[str, Any]:
    """A `Solution` as a JSON-ready dict (`Solution.to_dict`), with the problem's "id" first
    when it had one."""
    out = sol.to_dict(timings=timings)
    return out if problem_id is None else {"id": problem_id, **out}


# Made once: json.dumps with options builds a new encoder on every call.
_COMPACT = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def answer_line(answer: Mapping[str, Any]) -> str:
    """One compact line of JSON (no NaN: `Solution.to_dict` has made them null)."""
    return _COMPACT.encode(answer)


def _error_line(reason: str, problem_id: Any) -> str:
    error: Dict[str, Any] = {"error": reason}
    return answer_line(error if problem_id is None else {"id": problem_id, **error})


def _no_allocation(sol: Solution) -> bool:
    """Whether an instance has no allocation within its budget (exit code 3)."""
    status = np.asarray(sol.status)
    return bool(np.isin(status, ("infeasible", "unknown")).any())


def _write(text: str, out: Optional[str]) -> None:
    if out:
        try:
            with open(out, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise UsageError(f"--out: cannot write {out!r} ({exc.strerror})") from None
    else:
        sys.stdout.write(text)


def _cmd_solve(args: argparse.Namespace) -> int:
    overrides = _overrides(args)
    timings = not args.no_timings
    if args.stream:
        if args.problem not in (None, "-"):
            raise UsageError("--stream reads problems from stdin; pass no PROBLEM (or -)")
        if args.out:
            raise UsageError("--stream writes answers to stdout; --out does not apply")
        # Bytes in: json reads them as UTF-8 without a text layer decoding each long line.
        return stream(sys.stdin.buffer, sys.stdout, overrides, timings)
    if args.problem is None:
        raise UsageError("the following arguments are required: PROBLEM (a file, or - for "
                         "stdin; or --stream)")
    data = load_problem(args.problem)
    sol = solve_problem(data, overrides)
    _write(answer_line(solution_dict(sol, timings, data.get("id"))) + "\n", args.out)
    return EXIT_NO_ALLOCATION if _no_allocation(sol) else EXIT_OK


def stream(lines: Iterable[Union[str, bytes]], out: IO[str], overrides: Mapping[str, Any],
           timings: bool = True) -> int:
    """`apportion solve --stream`: answers each line of `lines` (str or UTF-8 bytes) holding a
    JSON problem with one line of JSON on `out`, flushed, in order; a bad line gets
    {"error": reason} (with its "id" when one could be read) and the stream goes on. Blank
    lines are skipped. Returns the exit code, 0 once `lines` ends."""
    write, flush = out.write, out.flush
    for line in lines:
        if not line or line.isspace():  # isspace stops at the first character of a problem
            continue
        problem_id = None
        try:
            data = _read_json(line, "the line")
            if isinstance(data, dict) and _is_json(data.get("id")):  # (else its error goes without)
                problem_id = data.get("id")
            data = check_problem(data, "PROBLEM: the line")
            text = answer_line(solution_dict(solve_problem(data, overrides), timings, problem_id))
        except UsageError as exc:
            text = _error_line(str(exc), problem_id)
        except Exception as exc:  # an internal error: reported on its line; the stream goes on
            if os.environ.get("APPORTION_DEBUG"):
                raise
            text = _error_line(f"internal error: {type(exc).__name__}: {exc}", problem_id)
        write(text + "\n")
        flush()
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
    print(learn.example_table(learn.run_example(
        seed=args.seed, train_days=size["train_days"], test_days=size["test_days"],
        tasks=size["tasks"], epochs=size["epochs"])))
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
    (None, "lagrangian"),
    (None, "optimal"),
)

#: The width the demo's tables are laid out for (they are printed at it when stdout is not a
#: terminal).
DEMO_WIDTH = 80


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
    results: Dict[str, List[Tuple[str, float, Dict[str, Any]]]] = {wl.name: [] for wl in workloads}
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
    """rich Tables that fit DEMO_WIDTH columns: one per workload (a row per policy, a column
    per budget: the loss over its change against difficulty-aware routing), then the
    published setting beside the published numbers."""
    from rich import box
    from rich.table import Table

    from . import schedule

    policies = demo["policies"]
    tables = []
    for wl in demo["workloads"]:
        rows = demo["results"][wl.name]
        t = Table(title=f"{wl.name} setting: {wl.description}\nexpected cost-weighted loss, "
                  "change vs difficulty-aware routing", title_justify="left", box=box.SIMPLE_HEAD)
        t.add_column("policy", no_wrap=True)
        for label, budget, _ in rows:
            t.add_column(f"{label}\n{budget:g}", justify="right")
        for p in policies:
            cells = []
            for _, _, row in rows:
                loss = row[p].loss
                change = "ref." if p == "difficulty" else _reduction(loss, row["difficulty"].loss)
                cells.append(f"{loss:.2f}\n{change}")
            t.add_row(p, *cells)
        tables.append(t)

    pub = demo["workloads"][0]
    row25 = next((r for lab, b, r in demo["results"][pub.name] if lab.startswith("25%")), None)
    if row25 is not None:
        t = Table(title="published setting at 25% premium: the published figures (quoted, not "
                  "reproduced) beside ours (expected loss on the shipped 300-task CSV; only "
                  "the changes compare)", title_justify="left", box=box.SIMPLE_HEAD)
        t.add_column("published policy", max_width=22)
        t.add_column("loss", justify="right")
        t.add_column("change", justify="right")
        t.add_column("our policy", no_wrap=True)
        t.add_column("loss", justify="right")
        t.add_column("change", justify="right")
        pref = schedule.PUBLISHED_LOSSES["difficulty-aware"]
        oref = row25["difficulty"].loss
        for pname, ours in PUBLISHED_PAIRS:
            if ours not in row25:
                continue
            pl = schedule.PUBLISHED_LOSSES.get(pname) if pname else None
            ol = row25[ours].loss
            t.add_row(pname or "-", "-" if pl is None else f"{pl:.2f}",
                      "-" if pl is None else ("ref." if pl == pref else _reduction(pl, pref)),
                      ours, f"{ol:.2f}", "ref." if ours == "difficulty" else _reduction(ol, oref))
        tables.append(t)
    return tables


def demo_plot(demo: Dict[str, Any], path: str) -> str:
    """Writes the plot of expected loss against budget, one panel per workload, as .png, .svg
    or .pdf (by the extension of `path`); returns the absolute path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wls = demo["workloads"]
    fig, axes = plt.subplots(1, len(wls), figsize=(6 * len(wls), 4.2))
    axes = np.atleast_1d(axes)
    styles = {"optimal": "k-o", "lagrangian": "C0--s", "priority": "C1-^",
              "consequence": "C2-x", "difficulty": "C3-v", "uniform": "C7-d"}
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

    plot = not args.no_plot
    if plot:
        plot_dir = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(plot_dir):
            raise UsageError(f"--plot: directory {plot_dir!r} does not exist")
        if os.path.splitext(args.plot)[1].lower() not in PLOT_FORMATS:
            raise UsageError(f"--plot: expected a {', '.join(PLOT_FORMATS)} path, got {args.plot!r}")
        if importlib.util.find_spec("matplotlib") is None:
            print("apportion: the plot needs matplotlib: pip install \"apportion[plot]\" "
                  "(tables only)", file=sys.stderr)
            plot = False
    demo = run_demo(args.quick, args.seed)
    console = Console(width=None if sys.stdout.isatty() else DEMO_WIDTH)
    for t in demo_tables(demo):
        console.print(t)
    if not demo["exact"]:
        console.print("note: the exact solver (method=\"exact\") is not in this build, so the "
                      "'optimal' policy is not shown")
    if plot:
        print(f"plot: {demo_plot(demo, args.plot)}", file=sys.stderr)
    return EXIT_OK


# --------------------------------------------------------------------------------------------


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": _cmd_demo, "solve": _cmd_solve, "bench": _cmd_bench, "example": _cmd_example}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit code (0 ok, 3 an instance without an allocation
    within its budget, 2 bad usage or input, 1 internal error)."""
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
            raise UsageError("a command is needed: solve, demo, bench or example")
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
