"""The solver entry points, `apportion.solve` and `apportion.frontier`, and method dispatch."""

from __future__ import annotations

import dataclasses
import math
import functools
import os
import time
from typing import Any, Optional

import numpy as np

from . import _core, _device
from ._problem import (MAX_THREADS, Problem, Solution, check_threads, cost_resolution_value, fast_budget,
                       grid_costs, grid_down, logger, make_problem, make_solution, one_solution,
                       value_sign)
from ._problem import FloatArray, IntArray, Method, Sense, _on_grid, _to_numpy, mirror_values

METHODS = ("auto", "lagrangian", "exact", "dp", "mirror")

# method="auto" runs the exact solver on batches up to this many options (B*N*K) and the
# Lagrangian fast path beyond, where throughput matters more than the last fraction of a gap.
AUTO_EXACT_MAX_OPTIONS = 1 << 22
# Work caps of method="exact" when the caller gives none: past them it returns the best
# allocation found with status "feasible" and its certified gap.
DEFAULT_EXACT_TIME_LIMIT = 10.0
# max_states at or past this is no limit (the native count is a size_t).
_MAX_STATES_CAP = 1 << 63


def _positive(x: Any, name: str) -> float:
    # float() would take "1.5" and True: neither is a number here.
    if isinstance(x, (str, bytes, bool, np.bool_)):
        raise TypeError(f"{name}: expected a number, got {x!r:.40}")
    try:
        value = float(x)
    except OverflowError:  # an int past the float range: as large as a limit gets
        value = math.inf
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number, got {x!r:.40}") from None
    if not value > 0:
        raise ValueError(f"{name}: must be positive, got {x!r:.40}")
    return value


def _flag(x: Any, name: str) -> bool:
    """x as a bool; a TypeError naming it for anything but True/False (a string like "no"
    would otherwise count as True)."""
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    raise TypeError(f"{name}: expected True or False, got {x!r:.40}")


@functools.lru_cache(maxsize=None)  # read once: every exact solve's default limit comes from it
def default_max_memory() -> int:
    """A quarter of the machine's physical memory, in bytes (1 GiB where unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 1 << 30


def _quantise(problem: Problem, cost_resolution: Optional[float]) -> Optional[float]:
    """Puts the costs of `problem` on an integer grid for the DP, in place.

    Without a resolution the costs must already be integers. With one, costs and budgets go
    on the grid as `grid_costs` and `grid_down` say; the answer is exact for the quantised
    costs, and its real cost is checked by the caller."""
    if cost_resolution is None:
        finite = problem.costs[np.isfinite(problem.costs)]  # the core names NaN or inf costs
        if not np.array_equal(finite, np.floor(finite)):
            raise ValueError("costs: method='dp' needs integer costs; pass cost_resolution= "
                             "to quantise real costs (the answer is then exact for the grid)")
        return None
    res = cost_resolution_value(_positive(cost_resolution, "cost_resolution"))
    problem.costs = np.ascontiguousarray(grid_costs(problem.costs.astype(np.float64), res,
                                                    problem.values.dtype), dtype=problem.values.dtype)
    problem.budget = grid_down(problem.budget, res)
    return res


def _check_dp_memory(problem: Problem, threads: int, max_memory: Optional[float]) -> int:
    """Estimates the DP's table bytes (back-pointers of the instances solved at once) and
    raises a ValueError naming max_memory when they would not fit."""
    limit = default_max_memory() if max_memory is None else _positive(max_memory, "max_memory")
    if limit < 1:
        raise ValueError(f"max_memory: must be at least 1 byte, got {max_memory!r:.40}")
    B, N, K = problem.values.shape
    if problem.mask is None:  # per-item extremes of the costs as given: shared tiers stay (K,)
        cheapest, dearest = problem.costs.min(axis=2), problem.costs.max(axis=2)
    else:
        costs = np.broadcast_to(problem.costs, problem.values.shape)
        cheapest = np.where(problem.mask, costs, np.inf).min(axis=2)
        dearest = np.where(problem.mask, costs, -np.inf).max(axis=2)
    # Totals over the N items (costs shared by the items: N times the one item's).
    items = N // cheapest.shape[1]
    per_cell = 1 if K <= 256 else (2 if K <= 65536 else 4)
    at_once = min(B, threads if threads > 0 else _core.num_threads())
    # A span that is NaN (inf - inf) or inf counts as one cell here: the core rejects such grids
    # (kMaxDpGrid). A finite grid past the float range needs inf bytes, over any limit.
    with np.errstate(over="ignore", invalid="ignore"):
        low = cheapest.astype(np.float64).sum(axis=1) * items
        reach = (dearest.astype(np.float64) - cheapest).sum(axis=1) * items
        span = np.broadcast_to(np.minimum(problem.budget - low, reach), (B,))
        grid = np.maximum(np.floor(np.nan_to_num(span, nan=0.0, posinf=0.0)), 0) + 1
        per_instance = N * grid * per_cell + 16 * grid
        need = float(per_instance.sum() if at_once >= B else np.sort(per_instance)[::-1][:at_once].sum())
    if need > limit:
        given = "" if max_memory is not None else " (the default: a quarter of this machine's memory)"
        raise ValueError(
            f"max_memory: the dp tables need {_bytes_text(need)} (N={N}, up to {float(grid.max()):.4g} "
            f"budget cells per instance, {at_once} at once), over the limit of {_bytes_text(limit)}{given}; "
            f"pass a coarser cost_resolution, a larger max_memory, fewer threads, or use method='exact'")
    return int(need)


def _bytes_text(count: float) -> str:
    """A byte count for a message: 4 significant digits in B, KiB, MiB, GiB or TiB ("0.00 GiB"
    read as nothing, and a 300-digit count of GiB as noise)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.4g} {unit}"
        count /= 1024
    return f"{count:.4g} TiB"


def _rounded_totals(rows: np.ndarray) -> np.ndarray:
    """Correctly rounded sums (math.fsum) of the rows of a 2-d array of costs >= 0; inf where
    one overflows."""
    def total(row: np.ndarray) -> float:
        try:
            return math.fsum(row)
        except OverflowError:
            return math.inf
    return np.array([total(row) for row in rows], dtype=np.float64)


def chosen_costs(costs: np.ndarray, shape: tuple[Any, ...], choice: np.ndarray) -> np.ndarray:
    """The real costs (broadcast to shape (B,N,K)) of allocations choice (B,N), as (B,N)
    float64; rows of -1 (no allocation) take option 0."""
    dense = np.broadcast_to(costs, shape).astype(np.float64)
    return np.take_along_axis(dense, np.maximum(choice, 0)[:, :, None], axis=2)[:, :, 0]


def within_real_budgets(run: Any, grid_budgets: np.ndarray, real_budgets: np.ndarray,
                        exact_spend: bool, resolution: float) -> tuple[Any, ...]:
    """Runs a quantised DP until every allocation's real cost fits its real budget.

    run(grid_budgets (M,)) -> (out, chosen (M,N) real costs of the allocations (chosen_costs),
    held (M,) bool: rows holding an allocation). The grid rounds costs up and budgets down only
    to the rounding of q * res, so each real cost is summed exactly; a row over its real budget
    by rounding is run again one grid cell lower, or, with exact_spend (whose target that would
    move), returned marked. Returns (out, grid_budgets, real costs (M,), marked, first): `first`
    is the first run's out, whose bounds still hold where a row was run lower (the lower cell
    leaves out allocations of the first that may fit their real budget)."""
    first = None
    # With exact_spend, a real budget that is no whole number of grid units (up to rounding) is
    # one that no quantised allocation spends: at a grid of 1.0, a budget of 5.5 was solved as
    # 5 and an allocation costing 5 returned "optimal".
    with np.errstate(invalid="ignore"):  # (inf budgets: inf - inf, and not finite anyway)
        off_grid = (np.isfinite(real_budgets) & ~_on_grid(grid_budgets, real_budgets, resolution, np)
                    if exact_spend else False)
    for _attempt in range(3):
        out, chosen, held = run(grid_budgets)
        first = out if first is None else first
        cost = _rounded_totals(chosen)
        over = held & ((cost > real_budgets) | off_grid)
        if exact_spend or not over.any():
            if over.any():
                logger.info("dp: %d quantised answer(s) over the real budget by rounding, "
                            "reported infeasible (exact_spend)", int(over.sum()))
            return out, grid_budgets, cost, over, first
        logger.info("dp: %d quantised answer(s) over the real budget by rounding; solving "
                    "again one grid cell lower", int(over.sum()))
        grid_budgets = np.where(over, grid_budgets - 1, grid_budgets)
    raise ValueError("cost_resolution: the quantised dp answer stayed over the real budget after "
                     f"three grid cells less; pass a coarser cost_resolution than {resolution!r}")


def _solve_dp(problem: Problem, where: Any, nthreads: int, exact_spend: bool,
              cost_resolution: Optional[float], max_memory: Optional[float], info: dict[str, Any]) -> tuple[Any, ...]:
    """method="dp" on `problem` (on the GPU `where`, or the CPU), its costs first quantised by
    cost_resolution, each answer then held to its real budget (within_real_budgets; with
    exact_spend an instance over it is reported infeasible). Returns the core's raw tuple."""
    real_costs, real_budget = problem.costs, problem.budget
    resolution = _quantise(problem, cost_resolution)

    def solve_grid(budgets: np.ndarray) -> tuple[Any, ...]:
        problem.budget = budgets
        if where is not None:
            raw = _device.run_host_problem(problem, "dp", where, exact_spend=exact_spend,
                                           table_limit=device_table_limit(max_memory))
            info["device"] = str(where)
        else:
            info["table_bytes"] = _check_dp_memory(problem, nthreads, max_memory)
            raw = _core.dp(problem.values, problem.costs, problem.budget, problem.mask,
                           problem.value_sign, bool(exact_spend), nthreads)
        return tuple(np.asarray(x) for x in raw)

    if resolution is None:  # integer costs: the answer is in the caller's units already
        return solve_grid(problem.budget)

    def run(budgets: np.ndarray) -> tuple[tuple[Any, ...], np.ndarray, np.ndarray]:
        raw = solve_grid(budgets)
        return raw, chosen_costs(real_costs, problem.values.shape, raw[0]), raw[6] != _INFEASIBLE

    first_cells = problem.budget
    raw, problem.budget, cost, over, first = within_real_budgets(
        run, problem.budget, real_budget, exact_spend, resolution)
    choice, value, _, bound, shadow, _, status = raw
    lowered = problem.budget < first_cells
    if lowered.any():
        # Optimal for the cell below, not for the budget's own, whose optimum did not fit its real
        # budget by rounding: another allocation of that cell may fit (costs 1.5 and 2.0 on a grid
        # of 0.1 in a budget of 3.5, left out one cell lower, where 5 was claimed optimal against
        # 7). "feasible", with the first cell's bound.
        status = np.where(lowered & (status == _OPTIMAL), _FEASIBLE, status)
        bound = np.where(lowered, first[3], bound)
    if over.any():  # exact_spend: a cell lower would move the target
        status, bound, shadow = (np.where(over, x, y) for x, y in
                                 ((_INFEASIBLE, status), (np.nan, bound), (np.nan, shadow)))
    # Totals in the caller's units; optimality holds for the quantised costs.
    info.update(cost_resolution=resolution, quantised_budget=problem.budget * resolution)
    dense = np.broadcast_to(real_costs, problem.values.shape).astype(np.float64)
    min_budget = _rounded_totals(np.where(problem.allowed(), dense, np.inf).min(axis=2))
    return (choice, value, cost, bound, shadow / resolution, min_budget, status.astype(np.int8))


def _exact_limits(time_limit: Optional[float], max_states: Optional[int], max_memory: Optional[float],
                  at_once: int) -> tuple[float, int, int]:
    """(seconds, states, workspace bytes) per instance for the exact core. By default only
    time and memory bound it: a quarter of RAM shared by the `at_once` instances solved in
    parallel, so that a solve that fits in memory runs until time_limit."""
    tl = DEFAULT_EXACT_TIME_LIMIT if time_limit is None else _positive(time_limit, "time_limit")
    ms = _MAX_STATES_CAP
    if max_states is not None:
        states = _positive(max_states, "max_states")
        if states < 1:
            raise ValueError(f"max_states: must be at least 1, got {max_states!r}")
        ms = int(min(states, _MAX_STATES_CAP))  # inf and the like: no limit
    if max_memory is None:
        return tl, ms, max(1, default_max_memory() // max(1, at_once))
    limit = _positive(max_memory, "max_memory")
    if limit < 1:
        raise ValueError(f"max_memory: must be at least 1 byte, got {max_memory!r:.40}")
    return tl, ms, int(min(limit, _MAX_STATES_CAP))  # inf: no limit that can bind


def _auto_method(options: int, exact_asked: bool = False) -> Method:
    """What method="auto" runs, without exact_spend or cost_resolution, for B*N*K options:
    "exact" too wherever an option only it takes is given (time_limit, max_states, max_memory),
    so that whether a call is accepted does not depend on its size."""
    return "exact" if exact_asked or options <= AUTO_EXACT_MAX_OPTIONS else "lagrangian"


def _check_exact_only(method: str, time_limit: Optional[float], max_states: Optional[int]) -> None:
    if method != "exact" and (time_limit is not None or max_states is not None):
        raise ValueError(
            f"time_limit/max_states: only method='exact' takes them (method={method!r})")


def _check_dp_only(method: str, exact_spend: bool, cost_resolution: Optional[float],
                   max_memory: Optional[float]) -> None:
    if method != "dp":
        for name, given in (("exact_spend", exact_spend), ("cost_resolution", cost_resolution)):
            if given is not None and given is not False:  # (0 == False: "not in" let 0 pass)
                raise ValueError(f"{name}: only method='dp' takes it (method={method!r})")
    if max_memory is not None and method not in ("dp", "exact"):
        raise ValueError(f"max_memory: only methods 'dp' and 'exact' take it (method={method!r})")


def device_table_limit(max_memory: Optional[float]) -> int:
    """max_memory as the GPU DP's byte limit: 0 for the default (half the free device memory),
    else at least 1 and at most 2**64 - 1 (a larger or infinite limit is no limit)."""
    if max_memory is None:
        return 0
    limit = _positive(max_memory, "max_memory")
    if limit < 1:
        raise ValueError(f"max_memory: must be at least 1 byte, got {max_memory!r:.40}")
    return int(min(limit, 2.0**64 - 2048))  # the largest double below 2**64


_OPTIMAL, _FEASIBLE, _INFEASIBLE = 0, 1, 2  # the core's status codes (problem.hpp)

# The methods of the common call, which skips the general path (see _problem.fast_budget).
_ONE_METHODS = ("auto", "lagrangian", "exact")


def solve(values: Any, costs: Any, budget: Any, *, method: Method = "auto", mask: Any = None,
          sense: Sense = "max", threads: Optional[int] = None, time_limit: Optional[float] = None,
          max_states: Optional[int] = None, exact_spend: bool = False,
          cost_resolution: Optional[float] = None, max_memory: Optional[float] = None,
          device: Optional[str] = None) -> Solution:
    """Choose one option per item to maximise total value within a budget.

    The problem, for each instance of a batch: choose x_i in 0..K-1 for every item i to
    maximise sum_i values[i, x_i] subject to sum_i costs[i, x_i] <= budget, using only options
    where mask is True (a multiple-choice knapsack).

    Args:
        values: (N,K) or a batch (B,N,K); real, finite where allowed. For sense="min", losses.
        costs: (K,) shared tier costs, (N,K), or (B,N,K); finite and >= 0; broadcast against
            values. Real-valued costs are fine except for method="dp" (see cost_resolution).
        budget: a scalar, or (B,) for a batch; +inf means no limit.
        method:
            "lagrangian": LP by break slope plus two roundings and a repair pass; certified
                gap; microseconds.
            "exact": the LP-bounded core enumeration (Pisinger's minimal algorithm); exact
                for real-valued costs; stops at time_limit / max_states with status "feasible"
                and its gap.
            "dp": dense DP over an integer cost grid; exact for integer (or quantised) costs;
                supports exact_spend.
            "mirror": dual updates over the batch, for R >= 1 resources (costs with a
                trailing R axis, budget (R,) or (B,R)); feasible allocation and Lagrangian
                bound; see `apportion.online.mirror_solve`. With several resources it may
                report status "unknown" (no feasible allocation found, infeasibility not
                proven).
            "auto" (default): "dp" when exact_spend or cost_resolution is given; "exact"
                when time_limit, max_states or max_memory is; otherwise "exact" for batches of
                up to AUTO_EXACT_MAX_OPTIONS options (B*N*K) and "lagrangian" beyond. The
                method used is reported in Solution.method.
        mask: bool, broadcastable to values; True = option allowed. Every item needs one.
        sense: "max" to maximise values, "min" to minimise them as losses.
        threads: native threads to use (None = all cores; at most MAX_THREADS, 65536).
            Instances of a batch run in parallel; a single large instance uses threads for its
            per-item work.
        time_limit: seconds per instance for method="exact" (default 10).
        max_states: core states method="exact" may keep per instance, over all its layers
            (default: no count; max_memory bounds them).
        exact_spend: method="dp" only: spend exactly the budget (as compression budgets
            need); instances where no allocation costs exactly that are "infeasible".
        cost_resolution: method="dp" only: quantise real costs to this unit, finite and > 0
            (costs rounded up and budgets down to whole units, except where they are whole
            units up to rounding); the answer's real cost is checked against the real budget,
            so it stays feasible; exact for the quantised costs.
        max_memory: method="dp": bytes its back-pointer tables may take (default a quarter
            of RAM); past it a ValueError says what to change. method="exact": bytes the
            core states of one instance may take (default a quarter of RAM shared by the
            instances solved at once), checked before each merge of states; past it the solve stops
            with status "feasible" and info["stopped_by"] == "max_bytes", so that by default
            time_limit is what stops a hard solve that fits in memory. On a GPU it bounds all
            the device memory the DP allocates (frontiers, rows, back-pointers; default half
            the memory CUDA reports free, which excludes blocks torch's caching allocator
            holds: torch.cuda.empty_cache() returns them), and a batch over it runs in chunks;
            only an instance that does not fit alone raises.
        device: None (default) solves where the input lives: a CUDA tensor or array (torch,
            CuPy, anything with __cuda_array_interface__ or __dlpack__) on its device and current
            stream, the Solution's arrays then on that device; numpy on the CPU. "cuda" or
            "cuda:N" moves numpy input to the GPU and the answer back; "cpu" forces the CPU.
            On a GPU, methods "lagrangian" and "dp" run ("auto" picks "dp" for exact_spend or
            cost_resolution, else "lagrangian"; the GPU Lagrangian skips the CPU's repair pass,
            so its primal may be lower, with the same bound). A GPU solve takes no `threads`,
            `time_limit` or `max_states` (a ValueError names them). A RuntimeError names
            `device` where CUDA is not built or no GPU is present. Stream order: torch tensors
            and DLPack producers are ordered on the current stream of their device;
            a `__cuda_array_interface__`-only producer's `stream` (CAI v3) is waited on.

    Returns:
        A `Solution`: choice (N,) or (B,N), value, cost, bound, gap, status, shadow_price,
        min_budget, method, seconds. Instances whose budget is below the cheapest allocation
        get status "infeasible" (and `min_budget` says what would suffice); the batch still
        solves.

    Raises:
        ValueError, TypeError: bad input, naming the argument (NaN or infinite values,
            negative costs, shapes that do not broadcast, an item with no allowed option...).
    """
    started = time.perf_counter()
    if not isinstance(method, str) or method not in METHODS:
        kind = ValueError if isinstance(method, str) else TypeError
        raise kind(f"method: expected one of {METHODS}, got {method!r:.40}")
    nthreads = check_threads(threads)
    if exact_spend is not False:
        exact_spend = _flag(exact_spend, "exact_spend")
    if (device is None and mask is None and method in _ONE_METHODS and exact_spend is False
            and cost_resolution is None and max_memory is None):
        one_budget = fast_budget(values, costs, budget)
        if one_budget is not None:
            # One unmasked numpy instance as the native core reads it: the general path's answer
            # with less work per call (no Problem, scalars instead of arrays). Inline, not a
            # function: this is the microsecond path.
            if method == "auto":
                method = _auto_method(values.size, time_limit is not None or max_states is not None)
            if time_limit is not None or max_states is not None:  # (the common call: neither)
                _check_exact_only(method, time_limit, max_states)
            sign = value_sign(sense)
            if method == "lagrangian":  # (the exact limits go unused: no need to compute them)
                raw = _core.solve_one(method, values, costs, one_budget, sign, 1.0, 1, nthreads, 0)
            else:
                tl, ms, mb = _exact_limits(time_limit, max_states, None, 1)
                raw = _core.solve_one(method, values, costs, one_budget, sign, tl, ms, nthreads, mb)
            return one_solution(raw, sign, method, started, "max" if sign > 0 else "min")
    where = _device.target(device, values)
    if where is not None:
        method = _device.device_method(method, exact_spend, cost_resolution, where)
        _check_dp_only(method, exact_spend, cost_resolution, max_memory)
        _check_exact_only(method, time_limit, max_states)
        if threads is not None:
            raise ValueError(f"threads: a solve on {where} runs on the GPU and takes no thread "
                             "count; leave threads=None")
        if _device.is_cuda_array(values):
            return _device.solve_resident(values, costs, budget, method=method, mask=mask, sense=sense,
                                          dev=where, exact_spend=exact_spend,
                                          cost_resolution=cost_resolution,
                                          table_limit=device_table_limit(max_memory),
                                          started=started)
    if method == "mirror":
        from .online import mirror_solve

        values = mirror_values(values)  # checks its rank before mirror_solve indexes its shape
        for name, given in (("exact_spend", exact_spend), ("cost_resolution", cost_resolution),
                            ("max_memory", max_memory), ("time_limit", time_limit),
                            ("max_states", max_states)):
            if given is not None and given is not False:  # (0 == False: "not in" let 0 pass)
                raise ValueError(f"{name}: method='mirror' does not take it")
        return mirror_solve(values, costs, budget, mask=mask, sense=sense, threads=nthreads,
                            _started=started)
    problem = make_problem(values, costs, budget, mask, sense)
    if method == "auto":
        dp_asked = exact_spend or cost_resolution is not None
        method = "dp" if dp_asked else _auto_method(
            problem.values.size, time_limit is not None or max_states is not None or max_memory is not None)
    _check_dp_only(method, exact_spend, cost_resolution, max_memory)
    _check_exact_only(method, time_limit, max_states)

    info = {}
    if where is not None and method == "lagrangian":
        raw = _device.run_host_problem(problem, method, where)
        info["device"] = str(where)
    elif method == "lagrangian":
        raw = _core.lagrangian(problem.values, problem.costs, problem.budget, problem.mask,
                               problem.value_sign, nthreads)
    elif method == "exact":
        at_once = min(problem.values.shape[0], nthreads if nthreads > 0 else _core.num_threads())
        tl, ms, mb = _exact_limits(time_limit, max_states, max_memory, at_once)
        raw = _core.exact(problem.values, problem.costs, problem.budget, problem.mask,
                          problem.value_sign, tl, ms, nthreads, mb)
    else:
        raw = _solve_dp(problem, where, nthreads, exact_spend, cost_resolution, max_memory, info)
    return make_solution(problem, raw, method, started, info)


@dataclasses.dataclass
class Frontier:
    """The optimum as a function of the budget, from one DP pass.

    Attributes:
        budgets: (M,) float64: every budget on the grid (integers, or multiples of
            cost_resolution) from `min_budget` up to the budget asked for (capped where more
            budget buys nothing), in cost units.
        values: (M,) the optimum at each of them (NaN where exact_spend cannot be met). For
            sense="max" it never decreases with the budget (without exact_spend).
        at: (A,) the budgets whose allocations were asked for.
        choices: (A,N) int64 allocations at `at` (rows of -1 where infeasible).
        min_budget: cost of the cheapest allocation (the first budget).
        sense: "max" or "min".
        seconds: wall time of the call.
        cost_resolution: the grid's step (None: integer costs, a step of 1).
        complete: whether the grid ends where more budget buys nothing (every item on its
            dearest useful option), so that budgets past the last hold values[-1] (NaN with
            exact_spend: no allocation spends them); False where it ends at the budget asked
            for, past which it knows nothing.
        exact_spend: as asked of `frontier`.
    """

    budgets: FloatArray
    values: FloatArray
    at: FloatArray
    choices: IntArray
    min_budget: float
    sense: Sense
    seconds: float
    cost_resolution: Optional[float] = None
    complete: bool = False
    exact_spend: bool = False

    def value_at(self, budget: float) -> float:
        """The optimum at `budget`: at the last grid budget it covers, as `frontier` puts a
        budget on the grid (NaN below min_budget, where no allocation fits). Past the last grid
        budget: values[-1] where the frontier is `complete` (NaN with exact_spend); otherwise a
        ValueError naming budget, as the frontier was not built that far."""
        if not budget >= self.min_budget:
            return math.nan
        step = 1.0 if self.cost_resolution is None else self.cost_resolution
        first = round(self.min_budget / step)  # (a whole number of steps)
        if math.isinf(budget):
            cell = math.inf
        else:
            cells = math.floor(budget) if self.cost_resolution is None else float(grid_down(float(budget), step))
            cell = max(cells - first, 0)
        if cell < len(self.values):
            return float(self.values[int(cell)])
        if not self.complete:
            last = f"{float(self.budgets[-1])!r}" if len(self.budgets) else "none: the budget asked lay below min_budget"
            raise ValueError(f"budget: {budget!r} lies past the budgets this frontier covers (the last: {last}); "
                             "build it with a larger budget (or +inf)")
        return math.nan if self.exact_spend else float(self.values[-1])


def frontier(values: Any, costs: Any, budget: Any, *, at: Any = None, mask: Any = None,
             sense: Sense = "max", exact_spend: bool = False, cost_resolution: Optional[float] = None,
             max_memory: Optional[float] = None, threads: Optional[int] = None) -> Frontier:
    """The optimum value at every budget up to `budget`, and the allocations at budgets `at`.

    One dense DP pass (as method="dp") over a single instance: values (N,K), costs (K,) or
    (N,K) integers (or quantised by cost_resolution), budget a scalar (+inf: up to the budget
    where every item takes its most expensive useful option). `at` is a scalar or a 1-d list
    of budgets whose allocations to return (default: [budget] when finite). A scheduler reads
    off what more budget buys; `Frontier.values` is monotone in the budget.
    """
    started = time.perf_counter()
    nthreads = check_threads(threads)
    exact_spend = _flag(exact_spend, "exact_spend")
    if at is not None:
        at = _to_numpy(at, "at")  # a named error for strings, booleans, ragged lists...
    problem = make_problem(values, costs, budget, mask, sense)
    if problem.batched:
        raise ValueError("values: frontier takes one instance (N,K); loop over a batch")
    if at is None:
        at = [] if not np.isfinite(problem.budget[0]) else [problem.budget[0]]
    at_arr = np.atleast_1d(np.asarray(at, dtype=np.float64))
    if at_arr.ndim != 1 or np.isnan(at_arr).any():
        raise ValueError("at: expected a scalar or a 1-d list of budgets (no NaN)")
    real_costs = problem.costs
    resolution = _quantise(problem, cost_resolution)
    scale = 1.0 if resolution is None else resolution
    at_grid = grid_down(at_arr, resolution) if resolution is not None else at_arr
    top = np.array([max(problem.budget[0], at_grid.max(initial=-np.inf))])
    sized = dataclasses.replace(problem, budget=top)
    _check_dp_memory(sized, 1, max_memory)
    def run(budgets: np.ndarray) -> tuple[Any, ...]:
        out = _core.frontier(problem.values, problem.costs, top, problem.mask, problem.value_sign,
                             bool(exact_spend), budgets, nthreads)
        shape = (len(budgets),) + problem.values.shape[1:]
        return out, chosen_costs(real_costs, shape, out[2]), out[2][:, 0] >= 0

    if resolution is None or not at_arr.size:
        best, base, choices = run(at_grid)[0]
    else:
        (best, base, choices), _, _, over, _ = within_real_budgets(
            run, at_grid, at_arr, exact_spend, resolution)
        choices[over] = -1  # exact_spend: a cell lower would move the target
    best = np.where(np.isneginf(best), np.nan, best)
    if problem.value_sign < 0:  # (negated: a product, even by 1.0, flushes a subnormal under FTZ)
        best = np.negative(best, out=best)
    budgets = (base + np.arange(best.size, dtype=np.float64)) * scale
    # The core's grid holds min(floor(top - base), reach) + 1 cells (dp_grid), reach the cost of
    # every item's dearest useful option over its cheapest: fewer cells than the budget asked for
    # means that it ended at reach. (At exactly reach, complete stays False: cautious.)
    asked = math.inf if math.isinf(top[0]) else math.floor(top[0] - base) + 1 if top[0] >= base else 0
    return Frontier(budgets, best, at_arr, choices, float(base * scale), problem.sense,
                    time.perf_counter() - started, resolution, best.size < asked, exact_spend)
