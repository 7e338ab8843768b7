"""Input checking and normalisation shared by every solver, native and reference.

`Problem` turns what a user passes (numpy arrays, lists, torch tensors, scalars) into the
canonical batched form the native core reads, raising a `ValueError` or `TypeError` that names
the argument and the fix. `Solution` is the result type of every solver.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import sys
import time
from typing import Any, Dict, Literal, Optional

import numpy as np
import numpy.typing as npt

from . import _core

#: Status codes of the native core, by code. "unknown": no feasible allocation was found and
#: infeasibility was not proven (only a method that cannot decide feasibility reports it).
#: Codes 4 to 6 are "feasible" where method "exact" stopped at its time_limit, max_states or
#: workspace bytes limit (kStoppedBy* in cpp/problem.hpp); the limit goes to info["stopped_by"].
_STATUS_LIST = ("optimal", "feasible", "infeasible", "unknown", "feasible", "feasible", "feasible")
STATUS_NAMES = np.array(_STATUS_LIST)
_STOPPED_BY = (None, None, None, None, "time_limit", "max_states", "max_bytes")
_FIRST_STOPPED = 4


_EPS = float(np.finfo(np.float64).eps)

#: What a user must know but should not see on stdout (work limits hit, fallbacks taken) is
#: logged here; the package adds only a NullHandler (configure logging to see it).
logger = logging.getLogger("apportion")
logger.addHandler(logging.NullHandler())

#: The most native threads a call may ask for: past it the count is a mistake, not a machine.
MAX_THREADS = 1 << 16

#: The most items (N) and options per item (K) of an instance: the native core keeps item and
#: option indices in 32-bit integers (kMaxItems and kMaxOptions in cpp/problem.hpp).
MAX_ITEMS = (1 << 31) - 1
MAX_OPTIONS = 1 << 30


def check_sizes(N: int, K: int) -> None:
    """A ValueError naming values where N or K is past the native core's limits; called on the
    shape alone, before anything copies the data (a broadcast view of 2^31 items is no memory,
    its copy gigabytes)."""
    if N > MAX_ITEMS:
        raise ValueError(f"values: N={N} items, over the limit of {MAX_ITEMS} (2^31 - 1: the "
                         "native core indexes items with 32-bit integers); split the instance")
    if K > MAX_OPTIONS:
        raise ValueError(f"values: K={K} options per item, over the limit of {MAX_OPTIONS} (2^30: the "
                         "native core indexes options with 32-bit integers)")


def check_threads(threads: Any, zero_is_all: bool = False) -> int:
    """threads as the core's int, 0 meaning all cores: None, or (with zero_is_all, for a count
    that was checked once already) 0; otherwise an int in 1..MAX_THREADS."""
    if threads is None:
        return 0
    if type(threads) is int and 1 <= threads <= MAX_THREADS:  # the common call, without the ABC check
        return threads
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, numbers.Integral):
        raise TypeError(f"threads: expected a positive int or None (all cores), got {threads!r:.40}")
    if not (0 if zero_is_all else 1) <= int(threads) <= MAX_THREADS:
        raise ValueError(f"threads: expected an int in 1..{MAX_THREADS} (MAX_THREADS) or None (all cores), "
                         f"got {threads!r}")
    return int(threads)


def cost_resolution_value(res: float) -> float:
    """A positive cost_resolution, checked finite: an infinite grid unit rounds every cost to 0."""
    if not math.isfinite(res):
        raise ValueError(f"cost_resolution: must be a finite positive number, got {res!r}")
    return res


def _on_grid(q: Any, x: Any, res: float, xp: Any) -> Any:
    """Whether q grid units of res make x up to rounding (as 6 x 0.1 makes 0.6)."""
    return xp.abs(q * res - x) <= 4 * _EPS * xp.maximum(xp.abs(x), xp.abs(q * res))


def grid_up(x: Any, res: float, xp: Any = np) -> Any:
    """The grid units that cover costs x, elementwise (x >= 0; numpy, or torch as xp): the
    nearest integer q where q * res makes x up to rounding (a cost of 0.3 on a grid of 0.1 is 3
    units), else the least q with q * res >= x. x / res is rounded, so its ceiling can sit one
    above the least such q (1.1 / 0.1 = 11.000000000000002) or below it."""
    with np.errstate(over="ignore", invalid="ignore"):  # past the float range: inf, rejected later
        near = xp.round(x / res)
        q = xp.ceil(x / res)
        q = xp.where((q >= 1) & ((q - 1) * res >= x), q - 1, q)
        q = xp.where(q * res < x, q + 1, q)
        return xp.where(_on_grid(near, x, res, xp), near, q)


def grid_costs(costs: Any, res: float, dtype: Any, xp: Any = np) -> Any:
    """Costs (float64, numpy or torch as xp) in grid units (grid_up), checked to be finite and
    exact in `dtype`, the dtype the DP reads them in (float32 holds every integer to 2^24)."""
    grid = grid_up(costs, res, xp)
    if not bool(xp.isfinite(grid).all()):
        raise ValueError(f"cost_resolution: {res!r} is too fine for the costs (cost / resolution "
                         "overflows); pass a coarser cost_resolution")
    cast = grid.astype(dtype) if xp is np else grid.to(dtype)
    if not bool((cast == grid).all()):
        raise ValueError(f"cost_resolution: the quantised costs are not exact in {dtype} (integers "
                         "past 2^24 in float32); pass a coarser cost_resolution or float64 input")
    return grid


def grid_down(x: Any, res: float, xp: Any = np) -> Any:
    """The grid units a budget x holds, elementwise: the nearest integer where it makes x up to
    rounding, else the greatest q with q * res <= x (+-inf stay as they are). Rounding on the
    grid can put an answer an ulp over the real budget: the caller checks the real cost."""
    with np.errstate(over="ignore", invalid="ignore"):
        units = xp.floor(x / res)
        finite = xp.isfinite(units)
        x = xp.where(finite, x, 0.0)  # the infinite ones stay as floor gave them
        q = xp.where(finite, units, 0.0)
        q = xp.where((q + 1) * res <= x, q + 1, q)
        q = xp.where(q * res > x, q - 1, q)
        near = xp.round(x / res)
        return xp.where(finite, xp.where(_on_grid(near, x, res, xp), near, q), units)


def _is_torch_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _to_numpy(x: Any, name: str, allow_bool: bool = False) -> np.ndarray:
    if _is_torch_tensor(x):
        x = x.detach()
        if x.layout != sys.modules["torch"].strided:
            raise TypeError(f"{name}: a {x.layout} tensor; pass a dense one (x.to_dense())")
        if x.device.type != "cpu":
            x = x.cpu()
        if x.is_complex():
            raise TypeError(f"{name}: expected a real numeric array, got dtype {x.dtype}")
        if x.is_floating_point() and x.element_size() < 4 and x.dtype != sys.modules["torch"].float16:
            x = x.float()  # bfloat16 and the float8 types, which numpy lacks: exact in float32
        x = x.resolve_neg().resolve_conj().numpy()  # (a view with torch's negative bit set)
    elif isinstance(x, np.ma.MaskedArray):  # np.asarray would drop its mask, and its hidden entries count
        raise TypeError(f"{name}: a numpy masked array; pass its data and the allowed options as mask= "
                        "(solve's mask is True where an option is allowed: ~x.mask)")
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged lists and the like
        raise TypeError(f"{name}: could not be read as a numeric array ({exc})") from None
    kind = arr.dtype.kind
    if kind not in "iuf":
        if kind == "b" and not allow_bool:
            # True/False as numbers is almost always a mix-up (a mask passed as values...).
            raise TypeError(f"{name}: expected numbers, got booleans; convert them to numbers "
                            "first if that is what you mean")
        if kind == "O":
            return _objects_to_float(arr, name)
        if kind != "b":
            raise TypeError(f"{name}: expected a real numeric array, got dtype {arr.dtype}")
    return arr


def _objects_to_float(arr: np.ndarray, name: str) -> np.ndarray:
    """An object array of real numbers (Python ints past int64 make numpy choose dtype object)
    as float64; a named error for anything else in it."""
    for x in arr.flat:
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
            raise TypeError(f"{name}: expected a real numeric array, got an element of type "
                            f"{type(x).__name__}: {x!r:.40}")
    try:
        return arr.astype(np.float64)
    except OverflowError:
        raise ValueError(f"{name}: a number is too large for a float64 (over 1.8e308); "
                         "rescale the input") from None


def _budget_float(budget: Any) -> float:
    """float(budget) for a Python or numpy real scalar, with a named error for an int past the
    float range and for NaN. A number that float64 cannot hold exactly (an integer past 2^53, a
    longdouble) is rounded down, so that an allocation within the float budget is within the
    caller's (rounded to nearest, 2^53 + 3 became 2^53 + 4, and a cost of 2^53 + 4 was taken)."""
    try:
        b = float(budget)
    except OverflowError:
        raise ValueError("budget: the number is too large for a float64 (over 1.8e308); pass "
                         "float('inf') for no limit") from None
    if b != b:
        raise ValueError("budget: is NaN; pass a number (use inf for no limit)")
    if isinstance(budget, (int, np.integer)) and abs(b) >= 2.0**53 and int(b) > int(budget):
        b = math.nextafter(b, -math.inf)
    elif isinstance(budget, np.floating) and budget.dtype.itemsize > 8 and np.longdouble(b) > budget:
        b = math.nextafter(b, -math.inf)
    return b


def budgets_down(raw: np.ndarray) -> np.ndarray:
    """A budget array as float64, each entry rounded down where float64 cannot hold it exactly
    (integers past 2^53, longdouble), as _budget_float rounds a scalar."""
    if raw.dtype.kind in "iu":
        f = raw.astype(np.float64)
        big = (raw > 2**53) | (raw < -(2**53)) if raw.dtype.kind == "i" else raw > 2**53
        if big.any():  # (rare: the others convert exactly)
            f[big] = [_budget_float(x) for x in raw[big].tolist()]
        return f
    if raw.dtype.kind == "f" and raw.dtype.itemsize > 8:
        with np.errstate(over="ignore"):
            f = raw.astype(np.float64)
        up = f.astype(raw.dtype) > raw
        f[up] = np.nextafter(f[up], -np.inf)
        return f
    return raw.astype(np.float64, copy=False)


def exact_in_float64(arr: np.ndarray, name: str) -> None:
    """A ValueError naming `name` where an array holds numbers that float64 cannot hold exactly
    (integers past 2^53, longdouble): the solvers compute in float64, and a cost rounded down
    could put an allocation over the budget."""
    if arr.size == 0 or not (arr.dtype.kind in "iu" or arr.dtype.kind == "f" and arr.dtype.itemsize > 8):
        return
    if arr.dtype.kind == "f":
        with np.errstate(over="ignore"):
            bad = np.isfinite(arr) & (arr.astype(np.float64).astype(arr.dtype) != arr)
        if bad.any():
            raise ValueError(f"{name}: {arr[bad].flat[0]!r} has no exact float64 (the solvers compute in "
                             "float64): pass float64 numbers you accept, or rescale")
        return
    if -(2**53) <= int(arr.min()) and int(arr.max()) <= 2**53:  # (the usual case: two reductions)
        return
    big = arr[(arr > 2**53) | (arr < -(2**53))] if arr.dtype.kind == "i" else arr[arr > 2**53]
    for x in big.ravel().tolist():
        if int(float(x)) != x:
            raise ValueError(f"{name}: the integer {x} has no exact float64 (past 2**53); the solvers "
                             "compute in float64: pass float64 values you accept, or rescale")


@dataclasses.dataclass
class Problem:
    """A batch of B multiple-choice knapsack instances in canonical form.

    values: (B,N,K) float32/float64, C-contiguous, in the maximisation sense of `sense`
        (the native core multiplies by `value_sign`; no copy is made for the sign).
    costs: (Bc,Nc,K) with Bc in {1,B}, Nc in {1,N}, same dtype as values (broadcast by stride).
    budget: (B,) float64.
    mask: (B,N,K) bool or None.
    batched: whether the caller passed a batch (outputs keep the batch axis).
    """

    values: np.ndarray
    costs: np.ndarray
    budget: np.ndarray
    mask: Optional[np.ndarray]
    sense: Sense
    batched: bool
    torch_device: Any = None  # the device of torch input, to return tensors there

    @property
    def value_sign(self) -> float:
        return value_sign(self.sense)

    @property
    def shape(self) -> tuple[Any, ...]:
        return self.values.shape

    def dense_costs(self) -> np.ndarray:
        """Costs broadcast to (B,N,K) float64 (a view where possible)."""
        return np.broadcast_to(self.costs, self.values.shape).astype(np.float64, copy=False)

    def signed_values(self) -> np.ndarray:
        """Values (B,N,K) float64 in the maximisation sense."""
        v = self.values.astype(np.float64, copy=False)
        return v if self.sense == "max" else -v

    def allowed(self) -> np.ndarray:
        """Mask (B,N,K) bool with every option allowed where no mask was given."""
        if self.mask is None:
            return np.ones(self.values.shape, dtype=bool)
        return self.mask


def check_sense(sense: Any) -> Sense:
    """sense as the Literal type, checked (see value_sign for the errors)."""
    return "max" if value_sign(sense) > 0 else "min"


def value_sign(sense: str) -> float:
    """+1.0 for sense "max", -1.0 for "min" (the native core maximises sign * values); a
    ValueError naming `sense` for anything else (a TypeError for a non-string)."""
    if not isinstance(sense, str):  # before ==: an array would compare elementwise
        raise TypeError(f"sense: expected 'max' or 'min', got {type(sense).__name__} {sense!r:.40}")
    if sense == "max":
        return 1.0
    if sense == "min":
        return -1.0
    raise ValueError(f"sense: expected 'max' or 'min', got {sense!r}")


#: fast_budget(values, costs, budget): the budget as a float when the call is the common one
#: the native core takes as it is (one C-contiguous float64 or float32 numpy instance, costs
#: (K,) or (N,K) of its dtype, a real scalar budget; no mask is checked here), None for anything
#: else, which the general path then checks and converts; a ValueError for a NaN budget. Native,
#: as the checks cost several times more in Python; its docstring gives the exact rule.
fast_budget = _core.fast_budget


def mirror_values(values: Any) -> Any:
    """values for method "mirror", which reads their shape before make_problem checks them:
    a torch tensor as it is, anything else as a numpy array, with a named error where they
    are not (N,K) or (B,N,K) numbers."""
    arr = values if _is_torch_tensor(values) else _to_numpy(values, "values")
    if arr.ndim not in (2, 3):
        raise ValueError(f"values: expected shape (N,K) or (B,N,K), got {tuple(arr.shape)}")
    return arr


def _fast_problem(values: Any, costs: Any, budget: Any, sense: Sense) -> Optional[Problem]:
    """The Problem of a call that fast_budget accepts, without the general path's conversions;
    None for any other."""
    b = fast_budget(values, costs, budget)
    if b is None:
        return None
    c = costs[None] if costs.ndim == 2 else costs[None, None]
    return Problem(values[None], c, np.array([b]), None, sense, False, None)


def make_problem(values: Any, costs: Any, budget: Any, mask: Any = None, sense: Any = "max") -> Problem:
    """Checks and normalises solver input; see `apportion.solve` for the accepted forms."""
    sense = check_sense(sense)
    if mask is None:
        fast = _fast_problem(values, costs, budget, sense)
        if fast is not None:
            return fast
    torch_device = values.device if _is_torch_tensor(values) else None
    v = _to_numpy(values, "values")
    c = _to_numpy(costs, "costs")
    exact_in_float64(c, "costs")
    if v.ndim not in (2, 3):
        raise ValueError(f"values: expected shape (N,K) or (B,N,K), got {v.shape}")
    batched = v.ndim == 3
    if not batched:
        v = v[None]
    B, N, K = v.shape
    if B == 0:
        raise ValueError("values: the batch is empty (B=0); pass at least one instance")
    if N == 0:
        raise ValueError("values: no items (N=0); pass at least one item")
    if K == 0:
        raise ValueError("values: no options (K=0); pass at least one option per item")
    check_sizes(N, K)
    # Costs (..., K, R) with a resource axis look like this too: only "mirror" takes them.
    resources = (" (costs with a trailing resource axis, (K,R), (N,K,R) or (B,N,K,R), need "
                 "method='mirror')" if c.ndim >= 2 and c.shape[-2] == K else "")
    if c.ndim == 0 or c.ndim > v.ndim or (not batched and c.ndim == 3):
        raise ValueError(
            "costs: expected shape (K,), (N,K)" + (" or (B,N,K)" if batched else "") +
            f" matching values {tuple(v.shape[1:]) if not batched else v.shape}, got {c.shape}"
            + resources)
    c = c.reshape((1,) * (3 - c.ndim) + c.shape)
    if any(cd not in (1, vd) for cd, vd in zip(c.shape, v.shape)):
        raise ValueError(
            f"costs: shape {costs_shape(c, batched)} does not broadcast against values "
            f"{v.shape if batched else v.shape[1:]}" + resources)
    dtype = np.float32 if (v.dtype == np.float32 and c.dtype == np.float32) else np.float64
    v = np.ascontiguousarray(v, dtype=dtype)
    if c.shape[2] != K:
        c = np.broadcast_to(c, (c.shape[0], c.shape[1], K))
    c = np.ascontiguousarray(c, dtype=dtype)

    if isinstance(budget, (float, int)) and not isinstance(budget, bool):
        # The common scalar budget, without the array round trip.
        return _finish_problem(v, c, np.full(B, _budget_float(budget)), mask, sense, batched,
                               torch_device)
    b = budgets_down(_to_numpy(budget, "budget"))
    if b.ndim == 0:
        b = np.full(B, float(b))
    elif not batched:
        raise ValueError(f"budget: expected a scalar for unbatched values, got shape {b.shape}")
    elif b.shape != (B,):
        raise ValueError(f"budget: expected a scalar or shape ({B},), got {b.shape}")
    else:
        b = np.ascontiguousarray(b)
    if np.isnan(b).any():
        raise ValueError("budget: is NaN; pass a number (use inf for no limit)")
    return _finish_problem(v, c, b, mask, sense, batched, torch_device)


def _finish_problem(v: np.ndarray, c: np.ndarray, b: np.ndarray, mask: Any, sense: Sense,
                    batched: bool, torch_device: Any) -> Problem:
    """The mask part of make_problem, and the Problem."""
    m = None
    if mask is not None:
        m = _to_numpy(mask, "mask", allow_bool=True)
        if m.dtype != np.bool_:
            if not np.isin(m, (0, 1)).all():
                raise ValueError("mask: expected booleans (True = option allowed)")
            m = m.astype(bool)
        if not batched:
            if m.ndim == 3:
                raise ValueError(f"mask: expected the shape of values {v.shape[1:]}, got {m.shape}")
            m = m[None] if m.ndim == 2 else m
        try:
            m = np.ascontiguousarray(np.broadcast_to(m, v.shape))
        except ValueError:
            raise ValueError(
                f"mask: shape {m.shape} does not broadcast against values {v.shape}") from None
        empty = ~m.any(axis=2)
        if empty.any():
            bi, ii = np.argwhere(empty)[0]
            where = f"instance {bi}, item {ii}" if batched else f"item {ii}"
            raise ValueError(f"mask: {where} has no allowed option; allow at least one per item")
    return Problem(v, c, b, m, sense, batched, torch_device)


def costs_shape(c: np.ndarray, batched: bool) -> tuple[Any, ...]:
    return c.shape if batched else c.shape[1:]


Method = Literal["auto", "lagrangian", "exact", "dp", "mirror"]
"""The `method` argument of `apportion.solve`."""
Sense = Literal["max", "min"]
"""`sense`: "max" maximises values, "min" minimises them as losses."""
Status = Literal["optimal", "feasible", "infeasible", "unknown"]
"""The status of one instance (see `Solution.status`)."""
StoppedBy = Literal["time_limit", "max_states", "max_bytes"]
"""What stopped method "exact" before it proved the optimum (`Solution.info["stopped_by"]`)."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _json_number(x: float) -> Optional[float]:
    """A float for JSON: None for NaN and +-inf (JSON has neither), 0.0 for -0.0."""
    return x + 0.0 if math.isfinite(x) else None


def json_ready(x: Any) -> Any:
    """x with numpy (and torch) scalars and arrays as JSON types: lists, Python numbers, None
    for non-finite floats, 0.0 for -0.0; dict keys as strings. Anything else JSON cannot hold
    becomes its str()."""
    if isinstance(x, float):  # first: the common case, and np.float64 is a float
        return _json_number(float(x))
    if x is None or isinstance(x, (bool, str, int)):
        return x
    if _is_torch_tensor(x):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        if x.dtype.kind == "f":
            # -0.0 -> 0.0 by adding 0.0; NaN and inf become None below (tolist keeps them).
            x = x + 0.0
            if np.isfinite(x).all():
                return x.tolist()
        elif x.dtype.kind in "iub":
            return x.tolist()
        return json_ready(x.tolist())
    if isinstance(x, np.generic):
        return json_ready(x.item())
    if isinstance(x, dict):
        return {str(k): json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    return str(x)


@dataclasses.dataclass
class Solution:
    """The answer of a solver, with its evidence.

    Batched input (values (B,N,K)) gives arrays with a leading batch axis; unbatched input
    gives scalars and a (N,) choice. `sol[i]` is the Solution of instance i of a batch,
    `len(sol)` the batch size B, `sol.to_dict()` a JSON-ready dict.

    Attributes:
        choice: int64, (N,) or (B,N): the option chosen for each item (a torch tensor on the
            input's device for torch input).
        value: total value of the choice (the loss, for sense="min"): a float, or (B,).
        cost: total cost of the choice, in the units of `costs`: a float, or (B,); with R
            resources (method "mirror"), (R,) or (B,R).
        bound: a bound on the optimum: upper for "max", lower for "min" (NaN when infeasible
            or unknown).
        gap: |bound - value| >= 0, in value units; 0 means proven optimal (NaN when
            infeasible or unknown).
        status: one of
            "optimal": proven optimal to the rounding of float64 sums: gap <= 64 ulps of the
                largest of |value|, |bound| and shadow_price * budget (method "exact" decides
                it on differences from the LP allocation, so a common offset in the values
                costs it no precision);
            "feasible": within the budget, and within `gap` of the optimum; when method
                "exact" stopped at a work limit, `info["stopped_by"]` says which
                ("time_limit", "max_states" or "max_bytes"). Without it, "exact" could not
                prove its answer: values so much smaller than the costs that the LP's slopes
                fall below the normal range (2.2e-308) leave it only the absolute bound;
            "infeasible": proven that no allocation fits (the budget is below `min_budget`, or,
                for method "mirror" with several resources, the dual bound proves it);
                `choice` is then the cheapest allocation;
            "unknown": no allocation within the budget was found and infeasibility was not
                proven either. Only a method that cannot decide feasibility reports it (method
                "mirror" with several resources); `choice` is then the allocation closest to
                feasible that was found (it exceeds the budget) and `bound` is NaN.
            A str, or a (B,) array of them.
        shadow_price: lambda*, value gained (loss saved) per extra unit of budget; (R,) or
            (B,R) prices with R resources.
        min_budget: cost of the cheapest allocation (per resource with R resources).
        method: the solver that produced this answer ("lagrangian", "exact", "dp", "mirror";
            the reference solvers' "cpsat", "milp", "lp").
        seconds: wall time of the call, validation included (of the whole batch).
        sense: "max" or "min".
        info: solver-specific details (for example the integer scaling of a reference solver,
            the dp's cost_resolution, or "stopped_by").
    """

    choice: Any
    value: Any
    cost: Any
    bound: Any
    gap: Any
    status: Any
    shadow_price: Any
    min_budget: Any
    method: str
    seconds: float
    sense: Sense = "max"
    info: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def relative_gap(self) -> Any:
        """gap / max(1, |bound|): the fraction of the optimum that may still be missing."""
        return self.gap / np.maximum(1.0, np.abs(self.bound))

    @property
    def optimal(self) -> Any:
        """True (per instance) where the answer is proven optimal."""
        return np.asarray(self.status) == "optimal"

    @property
    def batched(self) -> bool:
        """Whether this answers a batch (values (B,N,K)): choice (B,N) and per-instance arrays."""
        return int(self.choice.ndim) == 2

    def __len__(self) -> int:
        """B, the number of instances of a batched solution."""
        if not self.batched:
            raise TypeError("Solution: len() needs a batched solution (values (B,N,K)); this "
                            "one answers a single instance")
        return int(self.choice.shape[0])

    def __getitem__(self, i: int) -> "Solution":
        """The Solution of instance i of a batch (negative i counts from the end), as if that
        instance had been solved alone; `seconds` stays the time of the whole call."""
        B = len(self)
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, numbers.Integral):
            raise TypeError(f"Solution: index with an int instance number, got {i!r:.40}")
        if not -B <= i < B:
            raise IndexError(f"Solution: instance {i} out of range for a batch of {B}")
        i = int(i) % B

        def pick(x: Any) -> Any:
            return _instance_entry(x[i])

        info: Dict[str, Any] = {}
        for key, entry in self.info.items():
            if key == "instances" and isinstance(entry, list) and len(entry) == B:
                info.update(entry[i])  # the reference solvers: one dict per instance
            elif isinstance(entry, np.ndarray) and entry.ndim >= 1 and entry.shape[0] == B:
                if key != "stopped_by" or entry[i] is not None:  # None: that one was not stopped
                    info[key] = pick(entry)
            else:
                info[key] = entry
        return Solution(self.choice[i], pick(self.value), pick(self.cost), pick(self.bound),
                        pick(self.gap), pick(self.status), pick(self.shadow_price),
                        pick(self.min_budget), self.method, self.seconds, self.sense, info)

    def __repr__(self) -> str:
        """One short line: the status, value, bound, gap and cost (or, for a batch, the count
        of each status), never the whole choice."""
        if not self.batched:
            n = int(self.choice.shape[0])
            return (f"Solution(status={self.status!r}, value={_short(self.value)}, "
                    f"bound={_short(self.bound)}, gap={_short(self.gap)}, "
                    f"cost={_short(self.cost)}, method={self.method!r}, sense={self.sense!r}, "
                    f"N={n}, seconds={self.seconds:.3g})")
        B, n = (int(d) for d in self.choice.shape)
        names, counts = np.unique(np.asarray(self.status), return_counts=True)
        status = {str(k): int(c) for k, c in zip(names.tolist(), counts)}
        return (f"Solution(B={B}, N={n}, status={status}, method={self.method!r}, "
                f"sense={self.sense!r}, seconds={self.seconds:.3g}; sol[i] for instance i)")

    def to_dict(self, timings: bool = True) -> Dict[str, Any]:
        """A JSON-serialisable dict: status, choice (a list, nested for a batch), value, cost,
        bound, gap, shadow_price, min_budget, method, sense, seconds (left out when `timings`
        is False, so that answers can be compared as text) and info when it is not empty.
        NaN and infinities become None (JSON has neither), -0.0 becomes 0.0."""
        out: Dict[str, Any] = {
            "status": json_ready(self.status),
            "choice": json_ready(self.choice),
            "value": json_ready(self.value),
            "cost": json_ready(self.cost),
            "bound": json_ready(self.bound),
            "gap": json_ready(self.gap),
            "shadow_price": json_ready(self.shadow_price),
            "min_budget": json_ready(self.min_budget),
            "method": self.method,
            "sense": self.sense,
        }
        if timings:
            out["seconds"] = json_ready(self.seconds)
        if self.info:
            out["info"] = json_ready(self.info)
        return out


def _short(x: Any) -> str:
    """A number for a repr: 6 significant digits, or an array's short numpy form."""
    if isinstance(x, (float, int, np.generic)):
        return f"{float(x):.6g}"
    return np.array2string(np.asarray(x), precision=6, threshold=6)


def _instance_entry(item: Any) -> Any:
    """One instance's entry of a per-instance array, a Python scalar where it is one."""
    return item.item() if isinstance(item, (np.generic, np.ndarray)) and np.ndim(item) == 0 else item


def make_solution(problem: Problem, raw: tuple[Any, ...], method: str, started: float,
                  info: Optional[Dict[str, Any]] = None) -> Solution:
    """Builds a Solution from native outputs (choice, value, cost, bound, shadow_price,
    min_budget, status) given in the maximisation sense of the core."""
    choice, value, cost, bound, shadow, min_budget, status = raw
    if problem.torch_device is not None:
        import torch

        choice = torch.from_numpy(np.asarray(choice)).to(problem.torch_device)
    if not problem.batched:  # scalars (.item(): one instance), in info too, as sol[i] gives them
        if info:
            info = {key: _instance_entry(entry[0])
                    if isinstance(entry, np.ndarray) and entry.ndim >= 1 and entry.shape[0] == 1 else entry
                    for key, entry in info.items()}
        return one_solution((choice[0], value.item(), cost.item(), bound.item(), shadow.item(),
                             min_budget.item(), status.item()), problem.value_sign, method, started,
                            problem.sense, info)
    sign = problem.value_sign
    if sign < 0:
        value = -value
        bound = -bound
    info = dict(info or {})
    if (status >= _FIRST_STOPPED).any():  # (B,): the limit, or None where none stopped it
        info["stopped_by"] = np.array(_STOPPED_BY, dtype=object)[status]
        logger.warning("method %r stopped at a work limit on %d of %d instances before proving "
                       "the optimum (status 'feasible' with its gap; info['stopped_by'] says "
                       "which limit)", method, int((status >= _FIRST_STOPPED).sum()), status.size)
    return Solution(choice, value, cost, bound, np.abs(bound - value), STATUS_NAMES[status], shadow,
                    min_budget, method, time.perf_counter() - started, problem.sense, info)


def one_solution(raw: tuple[Any, ...], sign: float, method: str, started: float, sense: Sense,
                 info: Optional[Dict[str, Any]] = None) -> Solution:
    """The Solution of one instance from (choice (N,), value, cost, bound, shadow_price,
    min_budget, status code) as Python scalars in the maximisation sense of the core."""
    choice, value, cost, bound, shadow, min_budget, status = raw
    if sign < 0:  # (negated: a product, even by -1.0, flushes a subnormal under FTZ)
        value, bound = -value, -bound
    info = dict(info) if info else {}
    if status >= _FIRST_STOPPED:
        info["stopped_by"] = _STOPPED_BY[status]
        logger.warning("method %r stopped at its %s before proving the optimum (status "
                       "'feasible', gap %g)", method, _STOPPED_BY[status], abs(bound - value))
    return Solution(choice, value, cost, bound, abs(bound - value), _STATUS_LIST[status], shadow,
                    min_budget, method, time.perf_counter() - started, sense, info)
