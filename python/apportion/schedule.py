"""Consequence-aware routing of tasks to compute tiers.

A scheduler has N tasks and K compute tiers (model sizes, thinking budgets). Task i has a
consequence c_i >= 0 (what a wrong answer costs, in any loss unit) and a success probability
s_ik on tier k; tier k costs w_k compute units per task; the day has a budget C. Routing task i
to tier x_i gives

    expected cost-weighted loss  L = sum_i c_i (1 - s_i,x_i)       (loss units)
    expected accuracy            A = mean_i s_i,x_i                 (fraction of tasks)
    spend                        S = sum_i w_x_i <= C               (compute units)

Minimising L under the budget is a multiple-choice knapsack with values v_ik = c_i s_ik.
`route(tasks, tiers, budget, policy=...)` routes with one of `POLICIES`:

- "optimal": consequence-aware and exact (`apportion.solve(..., method="exact")`); its loss is
  the least any routing within the budget can reach. `Routing.solution.status` is "optimal"
  when proven; past the exact solver's default work limits it is "feasible", with the gap.
- "lagrangian": the same objective through the Lagrangian fast path (`method="lagrangian"`):
  microseconds, with a certified gap to the optimum.
- "priority": the published priority-aware heuristic. Everyone starts on the cheapest tier;
  tasks are ranked by c_i times the marginal gain of their next tier (s_i,k+1 - s_ik) and
  upgraded one tier at a time, best first, while the budget lasts (a task whose next upgrade
  no longer fits is upgraded no further; upgrades with no gain are never taken).
- "consequence": the published consequence-aware baseline, routing by the consequence level
  alone: everyone starts on the cheapest tier, and tasks are upgraded one tier at a time in
  order of c_i (ties in task order) while the budget lasts, so the most consequential tasks
  go to the dearest tiers whatever their success probabilities. With two tiers: the premium
  tier for the tasks of highest consequence that the budget pays for.
- "difficulty": maximises expected accuracy, ignoring consequence (values v_ik = s_ik,
  Lagrangian fast path): difficulty-aware routing.
- "uniform": every task on the most expensive tier the budget affords for all of them, and a
  seeded random subset moved to the next tier up to use the rest of the budget. With two
  tiers this is the "random" baseline (a random share of tasks on the premium tier).

Until version 0.1.0 "consequence" named what is now "lagrangian"; the name now means what the
published baseline does. `POLICIES` lists them from the best informed to the least.

Tiers are ordered by cost wherever a policy speaks of "next" or "best"; results report tiers
as indices into the `tiers` sequence passed by the caller.

Tasks come as a `Tasks` object, a mapping of arrays, or a list of records (see `make_tasks`
and `tasks_from_records`). A task may give its success probabilities per tier, or a
difficulty d in [0, 1], mapped to success probabilities by the logistic model of
`success_from_difficulty`:

    s_ik = 1 / (1 + exp(-sharpness * (a_k - d_i)))

where a_k in [0, 1] is the ability of tier k (`Tier.ability`; when no tier sets one, the
tiers get a_k = (r_k + 1) / (K + 1) by their cost rank r_k = 0..K-1) and sharpness defaults
to 8. A task whose difficulty equals a tier's ability succeeds there half of the time.

Two workloads ship with the package (no downloads), see `published_setting` and
`general_setting`; `shipped_tasks()` reads the packaged CSV of the published setting.
"""

from __future__ import annotations

import csv
import dataclasses
import heapq
import io
import math
import sys
import time
from importlib import resources
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ._problem import Method, Solution
from .api import solve

__all__ = [
    "POLICIES",
    "Tier",
    "Tasks",
    "Routing",
    "Workload",
    "make_tasks",
    "tasks_from_records",
    "tasks_from_dataframe",
    "success_from_difficulty",
    "route",
    "route_all",
    "exact_available",
    "published_tiers",
    "published_tasks",
    "published_setting",
    "premium_share_budget",
    "general_tiers",
    "general_tasks",
    "general_setting",
    "shipped_tasks",
    "read_tasks_csv",
    "write_tasks_csv",
    "PUBLISHED_LOSSES",
]

POLICIES = ("optimal", "lagrangian", "priority", "consequence", "difficulty", "uniform")

DEFAULT_SHARPNESS = 8.0

# Cost-weighted losses reported for the published setting (300 tasks, two tiers priced 1:4,
# budget for 25% of tasks on the premium tier). These are the publication's numbers, quoted,
# not computed here.
PUBLISHED_LOSSES = {
    "difficulty-aware": 268.25,
    "random": 233.0,
    "consequence-aware (oracle labels)": 205.75,
    "priority-aware (oracle)": 179.75,
}


# --------------------------------------------------------------------------------------------
# Tiers and tasks


@dataclasses.dataclass(frozen=True)
class Tier:
    """A compute tier.

    Attributes:
        name: a label, unique among the tiers of one call.
        cost: compute units per task routed here (finite, >= 0).
        ability: optional, in [0, 1]; used only to map task difficulties to success
            probabilities (see `success_from_difficulty`).
    """

    name: str
    cost: float
    ability: Optional[float] = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Tier.name: expected a non-empty str, got {self.name!r}")
        try:
            cost = float(self.cost)
        except (TypeError, ValueError):
            raise TypeError(f"Tier.cost: expected a number, got {self.cost!r}") from None
        if not math.isfinite(cost) or cost < 0:
            raise ValueError(f"Tier.cost: expected a finite number >= 0, got {self.cost!r}")
        object.__setattr__(self, "cost", cost)
        if self.ability is not None:
            try:
                a = float(self.ability)
            except (TypeError, ValueError):
                raise TypeError(f"Tier.ability: expected a number in [0, 1], got {self.ability!r:.40}") from None
            if not (0.0 <= a <= 1.0):
                raise ValueError(f"Tier.ability: expected a number in [0, 1], got {self.ability!r}")
            object.__setattr__(self, "ability", a)


def _check_tiers(tiers: Any) -> Tuple[Tier, ...]:
    if isinstance(tiers, Tier) or isinstance(tiers, (str, bytes)):
        raise TypeError("tiers: expected a sequence of Tier, got a single value")
    try:
        out = tuple(tiers)
    except TypeError:
        raise TypeError(f"tiers: expected a sequence of Tier, got {type(tiers).__name__}") from None
    if not out:
        raise ValueError("tiers: expected at least one Tier")
    for t in out:
        if not isinstance(t, Tier):
            raise TypeError(f"tiers: expected Tier objects, got {type(t).__name__}")
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise ValueError(f"tiers: names must be unique, got {names}")
    return out


def _cost_order(tiers: Sequence[Tier]) -> np.ndarray:
    """Tier indices sorted by cost (stable: equal costs keep the caller's order)."""
    return np.argsort(np.array([t.cost for t in tiers]), kind="stable")


def success_from_difficulty(difficulty: Any, tiers: Sequence[Tier], *,
                            sharpness: float = DEFAULT_SHARPNESS) -> np.ndarray:
    """Success probabilities (N, K) from difficulties (N,) in [0, 1] by the logistic model
    s_ik = 1 / (1 + exp(-sharpness (a_k - d_i))), a_k the tier's ability.

    Abilities: all tiers set `ability`, or none does and tier k gets (r_k + 1) / (K + 1) from
    its cost rank r_k (cheapest 0). Raises ValueError when only some tiers set one.
    """
    tiers = _check_tiers(tiers)
    d = _real_array(difficulty, "difficulty", ndim=1)
    if ((d < 0) | (d > 1)).any():
        raise ValueError("difficulty: expected values in [0, 1]")
    if not (isinstance(sharpness, (int, float, np.integer, np.floating)) and not isinstance(sharpness, bool)
            and math.isfinite(sharpness) and sharpness > 0):
        raise ValueError(f"sharpness: expected a finite number > 0, got {sharpness!r}")
    given = [t.ability is not None for t in tiers]
    K = len(tiers)
    if all(given):
        ability = np.array([t.ability for t in tiers])
    elif not any(given):
        ability = np.empty(K)
        ability[_cost_order(tiers)] = (np.arange(K) + 1.0) / (K + 1.0)
    else:
        raise ValueError("tiers: set `ability` on every tier or on none (needed for difficulty)")
    success: np.ndarray = 1.0 / (1.0 + np.exp(-sharpness * (ability[None, :] - d[:, None])))
    return success


def _real_array(x: Any, name: str, ndim: int) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: could not be read as a real array") from None
    if arr.ndim != ndim:
        want = "(N,)" if ndim == 1 else "(N, K)"
        raise ValueError(f"{name}: expected shape {want}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinite entries")
    return arr


@dataclasses.dataclass(frozen=True)
class Tasks:
    """N tasks ready to route over K tiers.

    Attributes:
        ids: (N,) str, one label per task.
        consequence: (N,) float64 >= 0, loss units incurred by a wrong answer.
        success: (N, K) float64 in [0, 1], success probability on each tier, columns in the
            order of the tiers the tasks were built for.
        tier_names: the K tier names the columns belong to.
        difficulty: (N,) float64 in [0, 1] when the tasks were given by difficulty, else None.
    """

    ids: np.ndarray
    consequence: np.ndarray
    success: np.ndarray
    tier_names: Tuple[str, ...]
    difficulty: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.consequence.shape[0])


def make_tasks(tiers: Sequence[Tier], *, consequence: Any, success: Any = None,
               difficulty: Any = None, ids: Any = None,
               sharpness: float = DEFAULT_SHARPNESS) -> Tasks:
    """Tasks from arrays.

    Args:
        tiers: the K tiers the tasks will be routed over.
        consequence: (N,) >= 0, loss units of a wrong answer.
        success: (N, K) in [0, 1], columns in the order of `tiers`; or None to use difficulty.
        difficulty: (N,) in [0, 1], mapped by `success_from_difficulty`; exactly one of
            success and difficulty must be given.
        ids: (N,) unique labels; default "0".."N-1".
        sharpness: slope of the difficulty model.
    """
    tiers = _check_tiers(tiers)
    K = len(tiers)
    c = _real_array(consequence, "consequence", ndim=1)
    N = c.shape[0]
    if N == 0:
        raise ValueError("consequence: no tasks (N=0); pass at least one task")
    if (c < 0).any():
        raise ValueError("consequence: expected values >= 0 (the loss of a wrong answer)")
    if (success is None) == (difficulty is None):
        raise ValueError("tasks: give exactly one of success (N, K) and difficulty (N,)")
    d = None
    if success is not None:
        s = _real_array(success, "success", ndim=2)
        if s.shape != (N, K):
            raise ValueError(f"success: expected shape ({N}, {K}) (tasks, tiers), got {s.shape}")
        if ((s < 0) | (s > 1)).any():
            raise ValueError("success: expected probabilities in [0, 1]")
    else:
        d = _real_array(difficulty, "difficulty", ndim=1)
        if d.shape != (N,):
            raise ValueError(f"difficulty: expected shape ({N},) like consequence, got {d.shape}")
        s = success_from_difficulty(d, tiers, sharpness=sharpness)
    if ids is None:
        id_arr = np.array([str(i) for i in range(N)], dtype=object)
    else:
        if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
            raise TypeError(f"ids: expected a sequence of {N} labels, got {type(ids).__name__} {ids!r:.40}")
        id_arr = np.array([str(i) for i in ids], dtype=object)
        if id_arr.shape != (N,):
            raise ValueError(f"ids: expected {N} labels like consequence, got {id_arr.shape[0]}")
        if len(set(id_arr.tolist())) != N:  # Routing.to_dict maps each id to its tier
            labels, counts = np.unique(id_arr.astype(str), return_counts=True)
            twice = str(labels[counts > 1][0])
            raise ValueError(f"ids: label {twice!r:.40} names more than one task; labels must be unique")
    return Tasks(id_arr, c, s, tuple(t.name for t in tiers), d)


def tasks_from_records(records: Iterable[Mapping[str, Any]], tiers: Sequence[Tier], *,
                       sharpness: float = DEFAULT_SHARPNESS) -> Tasks:
    """Tasks from a list of records (dicts).

    Each record has "consequence" (>= 0), an optional "id", and either "success" (a mapping
    tier name -> probability covering every tier, or a list of K probabilities in the order
    of `tiers`) or "difficulty" (in [0, 1]). All records must use the same form.
    """
    tiers = _check_tiers(tiers)
    names = [t.name for t in tiers]
    recs = list(records)
    if not recs:
        raise ValueError("tasks: no records; pass at least one task")
    ids, cons, succ, diff = [], [], [], []
    form = None
    for i, r in enumerate(recs):
        if not isinstance(r, Mapping):
            raise TypeError(f"tasks: record {i} is a {type(r).__name__}, expected a mapping")
        if "consequence" not in r:
            raise ValueError(f"tasks: record {i} has no 'consequence'")
        this = "success" if "success" in r else "difficulty" if "difficulty" in r else None
        if this is None:
            raise ValueError(f"tasks: record {i} needs 'success' (per tier) or 'difficulty'")
        if form is None:
            form = this
        elif this != form:
            raise ValueError(f"tasks: record {i} gives {this!r} but earlier records give {form!r}")
        ids.append(r.get("id", i))
        cons.append(r["consequence"])
        if form == "success":
            s = r["success"]
            if isinstance(s, Mapping):
                missing = [n for n in names if n not in s]
                if missing:
                    raise ValueError(f"tasks: record {i} has no success probability for tier(s) {missing}")
                s = [s[n] for n in names]
            succ.append(s)
        else:
            diff.append(r["difficulty"])
    try:
        if form == "success":
            return make_tasks(tiers, consequence=cons, success=succ, ids=ids, sharpness=sharpness)
        return make_tasks(tiers, consequence=cons, difficulty=diff, ids=ids, sharpness=sharpness)
    except TypeError as exc:
        raise TypeError(f"tasks: {exc}") from None


def _is_dataframe(x: Any) -> bool:
    """Whether x is a pandas DataFrame, without importing pandas."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(x, pandas.DataFrame)


def tasks_from_dataframe(frame: Any, tiers: Sequence[Tier], *,
                         sharpness: float = DEFAULT_SHARPNESS) -> Tasks:
    """Tasks from a pandas DataFrame, one row a task, with the columns of `read_tasks_csv`:
    "consequence", and either "difficulty" or one column "p_<tier name>" per tier (success
    probabilities); "id" when present, else the index, labels the tasks. Other columns (such
    as a level) are ignored."""
    tiers = _check_tiers(tiers)
    columns = set(map(str, frame.columns))
    if "consequence" not in columns:
        raise ValueError("tasks: the DataFrame has no 'consequence' column")
    pcols = [f"p_{t.name}" for t in tiers]
    ids = frame["id"] if "id" in columns else frame.index

    def numbers(cols: Any, name: str) -> np.ndarray:
        try:
            return np.asarray(frame[cols].to_numpy(dtype=float))
        except (TypeError, ValueError):
            raise ValueError(f"tasks: the DataFrame's column(s) {name} hold entries that are not numbers") from None

    fields: Dict[str, Any] = {"consequence": numbers("consequence", "'consequence'"),
                              "ids": [str(i) for i in ids]}
    if all(c in columns for c in pcols):
        fields["success"] = numbers(pcols, str(pcols))
    elif "difficulty" in columns:
        fields["difficulty"] = numbers("difficulty", "'difficulty'")
    else:
        raise ValueError(f"tasks: the DataFrame needs a 'difficulty' column or columns {pcols}")
    try:
        return make_tasks(tiers, sharpness=sharpness, **fields)
    except TypeError as exc:
        raise TypeError(f"tasks: {exc}") from None


def _as_tasks(tasks: Any, tiers: Tuple[Tier, ...]) -> Tasks:
    names = tuple(t.name for t in tiers)
    if _is_dataframe(tasks):
        return tasks_from_dataframe(tasks, tiers)
    if isinstance(tasks, Tasks):
        if tasks.tier_names != names:
            raise ValueError(f"tasks: built for tiers {list(tasks.tier_names)}, routed over {list(names)}")
        return tasks
    if isinstance(tasks, Mapping):
        known = {"consequence", "success", "difficulty", "ids", "id"}
        extra = set(tasks) - known
        if extra:
            raise ValueError(f"tasks: unknown field(s) {sorted(extra)}; expected {sorted(known)}")
        if "consequence" not in tasks:
            raise ValueError("tasks: missing field 'consequence'")
        return make_tasks(tiers, consequence=tasks["consequence"], success=tasks.get("success"),
                          difficulty=tasks.get("difficulty"), ids=tasks.get("ids", tasks.get("id")))
    if isinstance(tasks, (str, bytes)) or not isinstance(tasks, Iterable):
        raise TypeError("tasks: expected Tasks, a mapping of arrays or a list of records, "
                        f"got {type(tasks).__name__}")
    return tasks_from_records(tasks, tiers)


# --------------------------------------------------------------------------------------------
# Routing


@dataclasses.dataclass
class Routing:
    """The result of `route`.

    Attributes:
        policy: the policy that produced it.
        tiers: the tiers, as passed.
        ids: (N,) task labels.
        tier: (N,) int64, the index into `tiers` each task is routed to.
        loss: expected cost-weighted loss sum_i c_i (1 - s_i,tier_i), loss units.
        accuracy: expected accuracy mean_i s_i,tier_i, in [0, 1].
        spend: sum_i cost of tier_i, compute units; never above `budget`.
        budget: the budget, compute units.
        seconds: wall time of the policy.
        solution: the solver's `Solution` for the solver-backed policies, else None.
    """

    policy: str
    tiers: Tuple[Tier, ...]
    ids: np.ndarray
    tier: np.ndarray
    loss: float
    accuracy: float
    spend: float
    budget: float
    seconds: float
    solution: Optional[Solution] = None

    @property
    def tier_names(self) -> List[str]:
        """(N,) the name of each task's tier."""
        return [self.tiers[k].name for k in self.tier]

    @property
    def counts(self) -> Dict[str, int]:
        """Tasks per tier, by tier name."""
        n = np.bincount(self.tier, minlength=len(self.tiers))
        return {t.name: int(n[k]) for k, t in enumerate(self.tiers)}

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready summary with the per-task routing."""
        return {
            "policy": self.policy,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "spend": self.spend,
            "budget": self.budget,
            "counts": self.counts,
            "routing": dict(zip((str(i) for i in self.ids), self.tier_names)),
        }


def exact_available() -> bool:
    """Whether this build of apportion has the exact solver (`method="exact"`)."""
    try:
        solve(np.zeros((1, 1)), np.zeros(1), 0.0, method="exact")
    except ValueError as exc:
        if "method" in str(exc):
            return False
        raise
    return True


def _check_budget(budget: Any, tiers: Tuple[Tier, ...], n: int) -> float:
    if isinstance(budget, bool):
        raise TypeError("budget: expected a number of compute units, got a bool")
    try:
        b = float(budget)
    except (TypeError, ValueError):
        raise TypeError(f"budget: expected a number of compute units, got {budget!r}") from None
    if math.isnan(b):
        raise ValueError("budget: is NaN; pass a number of compute units")
    cheapest = n * min(t.cost for t in tiers)  # (one rounding: the total rounded, as _Fits takes it)
    if b < cheapest:
        raise ValueError(f"budget: {b:g} is below the cheapest routing ({n} tasks on the "
                         f"cheapest tier cost {cheapest:g}); raise it to at least that")
    return b


def _policy_solver(values: np.ndarray, costs: np.ndarray, budget: float,
                   method: Method) -> Tuple[np.ndarray, Solution]:
    sol = solve(values, costs, budget, method=method)
    if sol.status in ("infeasible", "unknown"):  # unreachable after _check_budget; a guard
        raise ValueError(f"budget: infeasible, the cheapest routing costs {sol.min_budget:g}")
    return np.asarray(sol.choice, dtype=np.int64), sol


class _Fits:
    """Whether a routing fits the budget as the solver and `Routing.spend` count it: its exact
    total, rounded once (math.fsum), at most the budget. Totals are kept as integers of one
    unit, in which every cost is exact (floats are dyadic), so that no running float sum drifts."""

    def __init__(self, costs: Any, budget: float):
        ratios = [float(c).as_integer_ratio() for c in costs]
        self.unit = max(d for _, d in ratios)  # powers of two: each divides the largest
        self.units = [m * (self.unit // d) for m, d in ratios]
        self.budget = budget

    def __call__(self, total: int) -> bool:
        return total / self.unit <= self.budget  # int / int rounds once, correctly


def _upgrade_in_order(tasks: Tasks, w: np.ndarray, budget: float,
                      gain_weighted: bool) -> np.ndarray:
    """The sort-based heuristics: everyone on the cheapest tier, then upgrades one tier at a
    time, best key first, while the budget lasts. The key of task i's next upgrade is
    c_i (s_i,k+1 - s_ik) ("priority", gain_weighted) or c_i alone ("consequence"); an upgrade
    that no longer fits ends that task's upgrades, one with no gain (priority) is never taken."""
    order = _cost_order_from_costs(w)
    N = len(tasks)
    s = tasks.success[:, order]  # columns by cost
    wc = w[order]
    pos = np.zeros(N, dtype=np.int64)
    # Fits tested on exact totals: a running float difference stopped one upgrade short
    # (costs 0 and 0.3, budget 1.2: three upgrades, where four cost 1.2 by math.fsum).
    fits = _Fits(wc, budget)
    units = fits.units
    spent = N * units[0]
    K = len(order)

    def key(i: int, k: int) -> float:  # of the upgrade from cost rank k to k + 1
        c = float(tasks.consequence[i])
        return c * float(s[i, k + 1] - s[i, k]) if gain_weighted else c

    heap: List[Tuple[float, int]] = []
    if K > 1:
        heap = [(-g, i) for i, g in ((i, key(i, 0)) for i in range(N))
                if g > 0 or not gain_weighted]
        heapq.heapify(heap)
    while heap:
        _, i = heapq.heappop(heap)
        k = int(pos[i])
        step = units[k + 1] - units[k]
        if not fits(spent + step):
            continue  # what is left only shrinks and later steps cost more: no more upgrades
        spent += step
        pos[i] = k + 1
        if k + 2 < K:
            g = key(i, k + 1)
            if g > 0 or not gain_weighted:
                heapq.heappush(heap, (-g, i))
    routed: np.ndarray = order[pos]
    return routed


def _cost_order_from_costs(w: np.ndarray) -> np.ndarray:
    return np.argsort(w, kind="stable")


def _uniform(n: int, w: np.ndarray, budget: float, seed: int) -> np.ndarray:
    order = _cost_order_from_costs(w)
    wc = w[order]
    # Exact totals (floor((budget - n w_k) / step) in floats left one upgrade out in a fifth of
    # random cases).
    fits = _Fits(wc, budget)
    units = fits.units
    k = max(j for j, u in enumerate(units) if fits(n * u))  # _check_budget: the cheapest fits
    pos = np.full(n, k, dtype=np.int64)
    if k + 1 < len(order):
        lo, hi = 0, n  # the most tasks moved up a tier that fit (fits falls as m grows)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(n * units[k] + mid * (units[k + 1] - units[k])) else (lo, mid - 1)
        perm = np.random.default_rng(seed).permutation(n)
        pos[perm[:lo]] = k + 1
    return order[pos]


def route(tasks: Any, tiers: Sequence[Tier], budget: float, policy: str = "optimal", *,
          seed: int = 0) -> Routing:
    """Route tasks to tiers within a budget.

    Args:
        tasks: a `Tasks`, a mapping of arrays ("consequence" (N,), and "success" (N, K) or
            "difficulty" (N,), optional "ids"), a list of records (see
            `tasks_from_records`), or a pandas DataFrame, one row a task (see
            `tasks_from_dataframe`).
        tiers: the K tiers (`Tier(name, cost)`), cost in compute units per task.
        budget: total compute units; at least N times the cheapest tier's cost.
        policy: one of `POLICIES` (see the module docstring).
        seed: the random draw of the "uniform" policy (ignored by the others).

    Returns:
        A `Routing`: each task's tier, the expected cost-weighted loss, the expected accuracy
        and the spend.

    Raises:
        ValueError, TypeError: bad input, naming the argument.
    """
    started = time.perf_counter()
    if policy not in POLICIES:
        raise ValueError(f"policy: expected one of {POLICIES}, got {policy!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        kind = ValueError if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) else TypeError
        raise kind(f"seed: expected an int >= 0, got {seed!r:.40}")
    tiers = _check_tiers(tiers)
    t = _as_tasks(tasks, tiers)
    N = len(t)
    b = _check_budget(budget, tiers, N)
    w = np.array([tier.cost for tier in tiers])
    sol = None
    if policy == "optimal":
        choice, sol = _policy_solver(t.consequence[:, None] * t.success, w, b, "exact")
    elif policy == "lagrangian":
        choice, sol = _policy_solver(t.consequence[:, None] * t.success, w, b, "lagrangian")
    elif policy == "difficulty":
        choice, sol = _policy_solver(t.success, w, b, "lagrangian")
    elif policy in ("priority", "consequence"):
        choice = _upgrade_in_order(t, w, b, gain_weighted=policy == "priority")
    else:
        choice = _uniform(N, w, b, seed)
    rows = np.arange(N)
    s = t.success[rows, choice]
    loss = math.fsum(t.consequence * (1.0 - s))
    spend = math.fsum(w[choice])
    return Routing(policy, tiers, t.ids, choice, loss, float(s.mean()), spend, b,
                   time.perf_counter() - started, sol)


def route_all(tasks: Any, tiers: Sequence[Tier], budget: float,
              policies: Sequence[str] = POLICIES, *, seed: int = 0) -> Dict[str, Routing]:
    """`route` with each of `policies` on the same tasks; a dict policy -> Routing."""
    tiers = _check_tiers(tiers)
    t = _as_tasks(tasks, tiers)
    return {p: route(t, tiers, budget, p, seed=seed) for p in policies}


# --------------------------------------------------------------------------------------------
# Shipped workloads


@dataclasses.dataclass
class Workload:
    """A task set with its tiers and the budgets to compare policies at.

    Attributes:
        name: a short label.
        tasks: the tasks.
        tiers: the tiers.
        budgets: list of (label, budget in compute units), in increasing budget.
        description: one line on how the workload was made.
    """

    name: str
    tasks: Tasks
    tiers: Tuple[Tier, ...]
    budgets: List[Tuple[str, float]]
    description: str


CONSEQUENCE_LEVELS = {"low": 1.0, "medium": 5.0, "high": 25.0}
CONSEQUENCE_SHARES = {"low": 0.6, "medium": 0.3, "high": 0.1}


def published_tiers() -> Tuple[Tier, ...]:
    """The two tiers of the published setting, priced 1:4 (abilities for the difficulty
    model: 0.45 and 0.8)."""
    return (Tier("standard", 1.0, ability=0.45), Tier("premium", 4.0, ability=0.8))


def published_tasks(n: int = 300, *, seed: int = 0) -> Tuple[Tasks, List[str]]:
    """The published setting's kind of task set: consequence in three levels on a long-tailed
    scale (low 1, medium 5, high 25 loss units; 60% / 30% / 10% of tasks), difficulty uniform
    in [0, 1] and independent of consequence, success by the difficulty model over
    `published_tiers()`. Returns (tasks, level of each task)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    rng = np.random.default_rng(seed)
    names = list(CONSEQUENCE_LEVELS)
    levels = rng.choice(names, size=n, p=[CONSEQUENCE_SHARES[k] for k in names])
    difficulty = np.round(rng.random(n), 4)
    consequence = np.array([CONSEQUENCE_LEVELS[k] for k in levels])
    ids = [f"t{i:03d}" for i in range(n)]
    tasks = make_tasks(published_tiers(), consequence=consequence, difficulty=difficulty, ids=ids)
    return tasks, [str(x) for x in levels]


def premium_share_budget(n: int, tiers: Sequence[Tier], share: float) -> float:
    """Budget that pays for `share` of n tasks on the most expensive tier and the rest on the
    cheapest: n ((1 - share) w_min + share w_max), compute units."""
    if not (0.0 <= share <= 1.0):
        raise ValueError(f"share: expected a fraction in [0, 1], got {share!r}")
    costs = [t.cost for t in _check_tiers(tiers)]
    return n * ((1.0 - share) * min(costs) + share * max(costs))


PUBLISHED_SHARES = (0.1, 0.25, 0.4, 0.6)


def published_setting(*, shares: Sequence[float] = PUBLISHED_SHARES,
                      from_csv: bool = True, seed: int = 0) -> Workload:
    """The published setting: 300 tasks (read from the packaged CSV, or generated with
    `seed` when from_csv is False), two tiers priced 1:4, budgets paying for each of `shares`
    of the tasks on the premium tier (the published budget is share 0.25)."""
    tiers = published_tiers()
    tasks = shipped_tasks() if from_csv else published_tasks(seed=seed)[0]
    n = len(tasks)
    budgets = [(f"{s:.0%} premium", premium_share_budget(n, tiers, s)) for s in shares]
    return Workload("published", tasks, tiers, budgets,
                    f"{n} tasks, consequence low/medium/high = 1/5/25, difficulty independent, "
                    "two tiers priced 1:4")


# Thinking budgets in units of 512 tokens: 0.5k, 1k, 4k, 8k, 32k tokens. The upgrade costs
# (1, 6, 8, 48 units) are unequal.
GENERAL_TIER_TOKENS = (512, 1024, 4096, 8192, 32768)
GENERAL_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


def general_tiers() -> Tuple[Tier, ...]:
    """Five thinking-budget tiers; cost = tokens / 512 (1, 2, 8, 16, 64 units)."""
    return tuple(Tier(f"think-{t // 1024}k" if t >= 1024 else f"think-{t}", t / 512)
                 for t in GENERAL_TIER_TOKENS)


def general_tasks(n: int = 200, *, seed: int = 0) -> Tasks:
    """Tasks whose success curves are not concave in the tier.

    Per task: a threshold t_i ~ U(-1, 6) in log2 of the thinking budget (units of 1k tokens),
    a slope h_i ~ U(1.5, 5), a floor f_i ~ U(0, 0.25) and a ceiling g_i ~ U(0.7, 1), and
    s_ik = f_i + (g_i - f_i) / (1 + exp(-h_i (log2 tokens_k/1024 - t_i))): an S-curve, so the
    gain of the next tier can be small while the one after is large. 15% of tasks
    "overthink": their top tier loses U(0, 0.2) of success. Consequences are long-tailed:
    lognormal(0, 1.2) loss units.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    rng = np.random.default_rng(seed)
    x = np.log2(np.array(GENERAL_TIER_TOKENS) / 1024.0)
    t = rng.uniform(-1.0, 6.0, n)
    h = rng.uniform(1.5, 5.0, n)
    f = rng.uniform(0.0, 0.25, n)
    g = rng.uniform(0.7, 1.0, n)
    s = f[:, None] + (g - f)[:, None] / (1.0 + np.exp(-h[:, None] * (x[None, :] - t[:, None])))
    over = rng.random(n) < 0.15
    s[over, -1] = np.maximum(0.0, s[over, -1] - rng.uniform(0.0, 0.2, over.sum()))
    consequence = rng.lognormal(0.0, 1.2, n)
    return make_tasks(general_tiers(), consequence=consequence, success=s,
                      ids=[f"g{i:03d}" for i in range(n)])


def general_setting(n: int = 200, *, fractions: Sequence[float] = GENERAL_FRACTIONS,
                    seed: int = 0) -> Workload:
    """The general setting: `general_tasks(n)` over `general_tiers()`, budgets a fraction of
    the top-tier cost (every task on the top tier), rounded down to whole units."""
    tiers = general_tiers()
    top = max(t.cost for t in tiers)
    budgets = [(f"{f:.0%} of top", float(math.floor(f * n * top))) for f in fractions]
    return Workload("general", general_tasks(n, seed=seed), tiers, budgets,
                    f"{n} tasks, 5 thinking-budget tiers (costs 1/2/8/16/64), S-shaped success "
                    "curves, lognormal consequences")


# --------------------------------------------------------------------------------------------
# CSV


CSV_FIELDS = ("id", "level", "consequence", "difficulty")


def write_tasks_csv(tasks: Tasks, levels: Optional[Sequence[str]] = None,
                    file: Optional[io.TextIOBase] = None) -> str:
    """Writes difficulty-based tasks as CSV (columns id, level, consequence, difficulty);
    returns the text (and writes it to `file` when given)."""
    if tasks.difficulty is None:
        raise ValueError("tasks: only tasks given by difficulty can be written as CSV")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for i in range(len(tasks)):
        w.writerow([tasks.ids[i], "" if levels is None else levels[i],
                    repr(float(tasks.consequence[i])), repr(float(tasks.difficulty[i]))])
    text = buf.getvalue()
    if file is not None:
        file.write(text)
    return text


def read_tasks_csv(text_or_file: Union[str, io.TextIOBase], tiers: Sequence[Tier]) -> Tasks:
    """Tasks from CSV with columns id, consequence and either difficulty or one column
    `p_<tier name>` per tier (other columns, such as level, are ignored)."""
    if isinstance(text_or_file, str):
        text = text_or_file
    elif hasattr(text_or_file, "read"):
        text = text_or_file.read()
    else:
        raise TypeError(f"text_or_file: expected CSV text (str) or a text file, got {type(text_or_file).__name__}")
    if not isinstance(text, str):
        raise TypeError(f"text_or_file: expected a text file (open it in text mode), got one that reads "
                        f"{type(text).__name__}")
    rows = list(csv.DictReader(io.StringIO(text)))
    tiers = _check_tiers(tiers)
    if not rows:
        raise ValueError("tasks CSV: no rows")
    cols = set(rows[0])
    if "consequence" not in cols:
        raise ValueError("tasks CSV: missing column 'consequence'")
    pcols = [f"p_{t.name}" for t in tiers]
    try:
        cons = [float(r["consequence"]) for r in rows]
        ids = [r.get("id") or str(i) for i, r in enumerate(rows)]
        if all(c in cols for c in pcols):
            succ = [[float(r[c]) for c in pcols] for r in rows]
            return make_tasks(tiers, consequence=cons, success=succ, ids=ids)
        if "difficulty" in cols:
            return make_tasks(tiers, consequence=cons, difficulty=[float(r["difficulty"]) for r in rows],
                              ids=ids)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"tasks CSV: {exc}") from None
    raise ValueError(f"tasks CSV: needs a 'difficulty' column or columns {pcols}")


def shipped_tasks() -> Tasks:
    """The packaged CSV (apportion/data/tasks.csv): the published setting's 300 tasks over
    `published_tiers()` (made by `published_tasks(300, seed=0)`)."""
    text = resources.files("apportion").joinpath("data").joinpath("tasks.csv").read_text(encoding="utf-8")
    return read_tasks_csv(text, published_tiers())
