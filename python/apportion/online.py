"""Online allocation by dual mirror descent, a stream simulator, and the offline `mirror` solver.

Requests arrive one at a time; each offers K options with a value and a cost per resource, and
must be routed at once while the budget covers the whole horizon of T requests. The allocator
keeps a price mu[r] >= 0 per resource and routes each request to the option of greatest
``value - mu . cost`` (the null action, value 0 and cost 0, competes when skipping is allowed),
plays it if the remaining budget pays for it (otherwise skips it), and moves the prices towards
spending ``budget / T`` per request. Where skipping is not allowed, the allocator also keeps a
reserve for the requests still to come in the horizon (see `OnlineAllocator`), so that a budget
that covers the cheapest option of every request serves every request. It never spends past
the budget. The decision and the update run in the C++ core (see docs/architecture.md,
"Online: dual mirror descent").

Resources: a scalar ``budget`` means one resource and costs without a resource axis (``(K,)``
per request); a vector ``budget`` of shape (R,) means R resources and costs with a trailing
resource axis (``(K,R)`` per request), R = 1 included.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
from typing import Any, Optional

import numpy as np

from . import _core
from ._problem import (STATUS_NAMES, Problem, Solution, _is_torch_tensor, _to_numpy, budgets_down, check_threads,
                       exact_in_float64, make_problem)

__all__ = ["OnlineAllocator", "OnlineRun", "NoFeasibleOptionError", "simulate_online", "mirror_solve",
           "SKIP"]

MIRRORS = {"euclidean": 0, "entropy": 1}

#: The option code of the null action (nothing spent, no value).
SKIP = -1
_STALLED = -2

# Default normalised starting price of the entropy mirror (which cannot start at 0): one unit of
# value per period's share of the budget.
_ENTROPY_START = 1.0


class NoFeasibleOptionError(RuntimeError):
    """No option of a request fits the remaining budget and skipping is not allowed.

    The allocator's state is left as it was before the call (for a batch, before its first
    request). `request` is the index of the offending request in the call (0 for one request).
    """

    def __init__(self, message: str, request: int = 0):
        super().__init__(message)
        self.request = request


def _check_budget(budget: Any) -> tuple[Any, ...]:
    """(budget as a float64 (R,) array, whether it was a scalar)."""
    if isinstance(budget, (float, int, np.floating, np.integer)) and not isinstance(budget, bool):
        try:  # the common scalar budget, without numpy's reductions over a 1-element array
            x = float(budget)
        except OverflowError:  # an int past the float range: the general path says so
            x = None
        if x is not None and x > 0:  # NaN and x <= 0 take the general path's errors
            return np.array([x]), True
    if isinstance(budget, bool):
        raise TypeError("budget: expected a number or a 1-d array of numbers, got a bool")
    b = _to_numpy(budget, "budget").astype(np.float64, copy=False)
    if b.ndim > 1:
        raise ValueError(f"budget: expected a scalar or shape (R,), got shape {b.shape}")
    scalar = b.ndim == 0
    b = np.ascontiguousarray(b.reshape(-1))
    if b.size == 0:
        raise ValueError("budget: no resources (shape (0,)); pass at least one budget")
    if np.isnan(b).any():
        raise ValueError("budget: is NaN; pass a number > 0 (inf for no limit)")
    if (b <= 0).any():
        raise ValueError(f"budget: must be > 0 for every resource, got {b.tolist() if not scalar else float(b[0])}")
    return b, scalar


# Largest horizon: request counts stay exact in the float64 arithmetic of the prices and the
# reserve (and within the core's int64).
_MAX_HORIZON = 2**53


def _check_horizon(horizon: Any) -> int:
    if isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral):
        if isinstance(horizon, float) and horizon.is_integer():
            horizon = int(horizon)
        else:
            raise TypeError(f"horizon: expected an integer number of requests >= 1, got {horizon!r}")
    if not 1 <= horizon <= _MAX_HORIZON:
        raise ValueError(f"horizon: expected an integer in 1..2**53, got {horizon}")
    return int(horizon)


def _check_max_iter(max_iter: Any) -> int:
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral):
        raise TypeError(f"max_iter: expected an integer >= 1, got {max_iter!r}")
    if not 1 <= int(max_iter) <= 2**63 - 1:
        raise ValueError(f"max_iter: expected an integer in 1..2**63-1, got {max_iter!r}")
    return int(max_iter)


def _check_mirror(mirror: Any) -> int:
    if mirror not in MIRRORS:
        raise ValueError(f"mirror: expected 'euclidean' or 'entropy', got {mirror!r}")
    return MIRRORS[mirror]


def _check_step(step_size: Any, horizon: int) -> float:
    if step_size is None:
        return 1.0 / math.sqrt(horizon)
    if isinstance(step_size, bool) or not isinstance(step_size, numbers.Real):
        raise TypeError(f"step_size: expected a positive number or None, got {step_size!r}")
    step = float(step_size)
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"step_size: expected a finite number > 0, got {step_size!r}")
    return step


def _initial_m(initial_prices: Any, budget: np.ndarray, horizon: int, mirror: str) -> np.ndarray:
    """Initial normalised prices m = mu * budget / horizon."""
    R = budget.size
    if initial_prices is None and R == 1:  # one resource: no array arithmetic needed
        return np.array([(_ENTROPY_START if mirror == "entropy" else 0.0) if math.isfinite(budget[0]) else 0.0])
    finite = np.isfinite(budget)
    if initial_prices is None:
        start = _ENTROPY_START if mirror == "entropy" else 0.0
        return np.where(finite, start, 0.0)
    mu0 = _to_numpy(initial_prices, "initial_prices").astype(np.float64)
    if mu0.ndim > 1 or (mu0.ndim == 1 and mu0.size != R):
        raise ValueError(f"initial_prices: expected a scalar or shape ({R},), got {mu0.shape}")
    mu0 = np.broadcast_to(mu0, (R,))
    if not np.isfinite(mu0).all() or (mu0 < 0).any():
        raise ValueError("initial_prices: expected finite prices >= 0")
    if mirror == "entropy" and (mu0[finite] <= 0).any():
        raise ValueError("initial_prices: the entropy mirror needs prices > 0")
    return np.where(finite, mu0 * np.where(finite, budget, 0.0) / horizon, 0.0)


def _request_array(x: Any, name: str) -> np.ndarray:
    """The slow path of `decide`: anything array-like (torch included) as float64."""
    return _to_numpy(x, name).astype(np.float64, copy=False)


class OnlineAllocator:
    """Routes requests one by one under a budget for the whole horizon (dual mirror descent).

    Args:
        budget: total budget over the horizon: a scalar (one resource; request costs have shape
            (K,)) or shape (R,) (R resources; request costs have shape (K,R)). Each > 0, in the
            units of the costs; inf means no limit on that resource.
        horizon: T, the number of requests the budget is meant for (an integer in 1..2**53).
            The target spend per request is budget / T. Requests past T are still decided
            (the prices keep the same target, no reserve is kept), and the budget is never
            exceeded. When the true number of requests is unknown, pass an estimate: too small,
            and the reserve (below) ends early, so requests past T may find the budget spent;
            too large, and up to (T - requests seen) times the cheapest cost stays unspent.
        mirror: "euclidean" (additive price steps, prices start at 0) or "entropy"
            (multiplicative steps, prices start above 0).
        step_size: eta, in normalised units (price times budget / T, against a gradient of
            1 - cost * T / budget). None: 1 / sqrt(T), which suits values of order one; with
            the euclidean mirror scale it with the magnitude of the values.
        skip_allowed: whether the null action (value 0, cost 0) is available.
            True: a request is skipped when no option is worth its price (value below
            mu . cost) or the proposal does not fit. No reserve is kept (skipping costs
            nothing); skips from the first requests on are the price at work, not a shortage:
            the hindsight optimum skips requests worth less than its shadow price too.
            False: each request takes one of its options, and the allocator keeps a reserve
            for the requests still to come: at request t (0-based, t < T) an option is played
            only if the remaining budget minus its cost still covers (T - t - 1) times the
            least cost seen (per resource, the least cost of any option over the requests so
            far, this one included; with costs shared by every request, the cheapest tier
            cost). The best-priced option that keeps the reserve is played; when none does
            (the budget cannot cover the rest at their least cost), the fitting option that
            uses the least share of the remaining budget (sum_r cost_r / remaining_r: the
            cheapest, for one resource), so that as many requests as possible are served;
            when none fits, `decide` raises `NoFeasibleOptionError`. Guarantee: when the cheapest
            option of every request costs the same c (shared tier costs, for example; with R
            resources, one option cheapest in every resource at once) and budget >= T * c,
            all T requests are served. With per-request costs the least cost seen is a guess
            at the future: a later request whose cheapest option is dearer may still stall.
        initial_prices: starting prices mu (value per unit of cost), a scalar or (R,).
            None: 0 (euclidean), or one unit of value per period's share of the budget
            (entropy: mu = T / budget).

    Attributes (read-only): prices (mu, value per unit of cost), spent, remaining (float for a
    scalar budget, (R,) arrays otherwise), steps (requests decided so far).

    The allocator pickles; a restored one continues bit for bit where the original stopped.
    """

    SKIP = SKIP

    def __init__(self, budget: Any, horizon: int, *, mirror: str = "euclidean",
                 step_size: Optional[float] = None, skip_allowed: bool = True,
                 initial_prices: Any = None):
        b, scalar = _check_budget(budget)
        self._horizon = _check_horizon(horizon)
        self._mirror_code = _check_mirror(mirror)
        self._mirror = mirror
        self._step = _check_step(step_size, self._horizon)
        if not isinstance(skip_allowed, (bool, np.bool_)):
            raise TypeError(f"skip_allowed: expected a bool, got {skip_allowed!r}")
        self._skip = bool(skip_allowed)
        self._budget = b
        self._scalar = scalar
        self._m0 = _initial_m(initial_prices, b, self._horizon, mirror)
        self._make_core()

    def _make_core(self) -> None:
        self._R = self._budget.size
        self._core = _core.OnlineCore(self._budget, self._horizon, self._mirror_code, self._step,
                                      self._skip, self._m0)

    # -- deciding ---------------------------------------------------------------------------

    def decide(self, values: Any, costs: Any) -> Any:
        """Decides one request, or a small batch of requests in order, and updates the prices.

        Args:
            values: (K,) for one request, or (M,K) for M requests; finite, in value units.
            costs: one request: (K,) for a scalar budget, (K,R) for a budget of R resources.
                M requests: the same shape shared by all, or (M,K) / (M,K,R). Finite, >= 0.

        Returns:
            The option played: an int in 0..K-1 or `SKIP` (-1) for one request; an int64 (M,)
            array for a batch, decided as M consecutive requests (each sees the prices left by
            the one before), in one native call.

        Raises:
            NoFeasibleOptionError: skipping is not allowed and no option of a request fits the
                remaining budget (the state is left as before the call).
            ValueError, TypeError: bad input, naming the argument.
        """
        v = values if type(values) is np.ndarray and values.dtype == np.float64 else \
            _request_array(values, "values")
        c = costs if type(costs) is np.ndarray and costs.dtype == np.float64 else \
            _request_array(costs, "costs")
        if v.ndim == 1:
            K = v.shape[0]
            expect = (K,) if self._scalar else (K, self._R)
            if c.shape != expect:
                self._bad_costs(c, expect, None)
            if K == 0:
                raise ValueError("values: no options (K=0); pass at least one option")
            choice = self._core.decide_one(v, c)
            if choice == _STALLED:
                raise self._stalled(0)
            return choice
        if v.ndim != 2:
            raise ValueError(f"values: expected shape (K,) for one request or (M,K) for M requests, "
                             f"got {v.shape}")
        M, K = v.shape
        if M == 0 or K == 0:
            raise ValueError(f"values: expected at least one request and one option, got shape {v.shape}")
        shared = (K,) if self._scalar else (K, self._R)
        if c.shape != shared and c.shape != (M,) + shared:
            self._bad_costs(c, shared, M)
        choices, stalled = self._core.decide_batch(v, c)
        if stalled >= 0:
            raise self._stalled(int(stalled))
        return choices

    def _bad_costs(self, c: np.ndarray, shared: tuple[Any, ...], M: Optional[int]) -> ValueError:
        what = "a scalar budget" if self._scalar else f"a budget of {self._R} resources"
        allowed = f"{shared}" if M is None else f"{shared} or {(M,) + shared}"
        raise ValueError(f"costs: expected shape {allowed} for these values with {what}, got {c.shape}")

    def _stalled(self, request: int) -> NoFeasibleOptionError:
        where = "the request" if request == 0 else f"request {request} of the batch"
        return NoFeasibleOptionError(
            f"{where}: no option fits the remaining budget {self._public(self._core.remaining)} and "
            "skip_allowed=False; nothing was decided (pass skip_allowed=True to allow the null "
            "action, or offer a cheaper option)", request)

    # -- state --------------------------------------------------------------------------------

    def _public(self, arr: np.ndarray) -> Any:
        return float(arr[0]) if self._scalar else arr

    @property
    def prices(self) -> Any:
        """mu: value per unit of cost of each resource (float for a scalar budget, else (R,))."""
        return self._public(self._core.prices)

    @property
    def spent(self) -> Any:
        """Total cost of the options played so far, per resource."""
        return self._public(self._core.spent)

    @property
    def remaining(self) -> Any:
        """budget - spent per resource, from the compensated spent sum, rounded down and never
        negative: a cost fits exactly when it is <= remaining (spent + cost <= budget)."""
        return self._public(self._core.remaining)

    @property
    def steps(self) -> int:
        """Requests decided so far."""
        return int(self._core.steps)

    @property
    def budget(self) -> Any:
        return float(self._budget[0]) if self._scalar else self._budget.copy()

    @property
    def horizon(self) -> int:
        return self._horizon

    @property
    def mirror(self) -> str:
        return self._mirror

    @property
    def step_size(self) -> float:
        return self._step

    @property
    def skip_allowed(self) -> bool:
        return self._skip

    def reset(self) -> None:
        """Back to the initial prices with nothing spent."""
        self._core.reset()

    def __getstate__(self) -> dict[str, Any]:
        m, spent_sum, spent_carry, steps, floor = self._core.get_state()
        return {"version": 2, "budget": self._budget, "scalar": self._scalar, "horizon": self._horizon,
                "mirror": self._mirror, "step_size": self._step, "skip_allowed": self._skip,
                "m0": self._m0, "m": m, "spent_sum": spent_sum, "spent_carry": spent_carry,
                "steps": int(steps), "floor": floor}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Version 1 predates the reserve's cost floor: it is relearnt from the next request.
        if state.get("version") not in (1, 2):
            raise ValueError(f"OnlineAllocator state: unknown version {state.get('version')!r}")
        self._budget = np.ascontiguousarray(state["budget"], dtype=np.float64)
        self._scalar = bool(state["scalar"])
        self._horizon = int(state["horizon"])
        self._mirror = state["mirror"]
        self._mirror_code = _check_mirror(self._mirror)
        self._step = float(state["step_size"])
        self._skip = bool(state["skip_allowed"])
        self._m0 = np.ascontiguousarray(state["m0"], dtype=np.float64)
        self._make_core()
        floor = state.get("floor")
        floor = np.full(self._budget.size, np.inf) if floor is None else np.asarray(floor, np.float64)
        self._core.set_state(np.asarray(state["m"], np.float64), np.asarray(state["spent_sum"], np.float64),
                             np.asarray(state["spent_carry"], np.float64), int(state["steps"]), floor)

    def __repr__(self) -> str:
        return (f"OnlineAllocator(budget={self.budget!r}, horizon={self._horizon}, mirror={self._mirror!r}, "
                f"step_size={self._step:.4g}, skip_allowed={self._skip}, steps={self.steps}, "
                f"spent={self.spent!r}, prices={self.prices!r})")


# -- simulation ---------------------------------------------------------------------------------

@dataclasses.dataclass
class OnlineRun:
    """The outcome of `simulate_online`.

    choice: int64 (S,T) (or (T,) for one stream): the option played per request, `SKIP` (-1)
        for the null action or a stalled request; None when record_choices=False.
    value: (S,) (or float): total value collected per stream.
    spent: (S,) for a scalar budget, (S,R) otherwise (or one stream's): total cost.
    prices: final prices mu, shaped like spent.
    stalled: int64 (S,) (or int): requests where no option fitted and skipping was not allowed.
    seconds: wall time of the call.
    """

    choice: Any
    value: Any
    spent: Any
    prices: Any
    stalled: Any
    seconds: float


def _request_costs(costs: Any, scalar: bool, R: int, S: int, T: int, K: int, streams: bool,
                   dtype: Any) -> np.ndarray:
    """Costs as a C-contiguous (S|1, T|1, K, R) array."""
    c = _to_numpy(costs, "costs")
    tail = (K,) if scalar else (K, R)
    allowed = [tail, (T,) + tail] + ([(S, T) + tail] if streams else [])
    if c.shape not in allowed:
        raise ValueError(f"costs: expected one of the shapes {allowed} (values {'(S,T,K)' if streams else '(T,K)'}"
                         f", {'scalar budget' if scalar else f'budget of {R} resources'}), got {c.shape}")
    if scalar:
        c = c[..., None]
    c = c.reshape((1,) * (4 - c.ndim) + c.shape)
    return np.ascontiguousarray(c, dtype=dtype)


def simulate_online(values: Any, costs: Any, budget: Any, *, horizon: Optional[int] = None,
                    mirror: str = "euclidean", step_size: Optional[float] = None,
                    skip_allowed: bool = True, initial_prices: Any = None,
                    record_choices: bool = True, threads: Optional[int] = None,
                    device: Optional[str] = None) -> OnlineRun:
    """Runs S independent streams of T requests through fresh allocators, in one native call.

    Each stream behaves exactly as an `OnlineAllocator(budget, horizon, ...)` fed its requests
    one by one; streams run in parallel on the native thread pool, with the GIL released.

    Args:
        values: (S,T,K) for S streams, or (T,K) for one; finite.
        costs: for a scalar budget (K,) shared, (T,K) per request shared by the streams, or
            (S,T,K); for a budget of shape (R,) the same with a trailing R axis. Finite, >= 0.
            float32 values and costs are read as float32 (no copy).
        budget: per stream: a scalar or (R,), each > 0 (inf: no limit).
        horizon: T of the allocators (default: the number of requests per stream).
        mirror, step_size, skip_allowed, initial_prices: as for `OnlineAllocator`.
        record_choices: keep the (S,T) choices (8 bytes per request).
        threads: native threads (None: all cores).
        device: None: where the input lives (a CUDA tensor or array on its GPU, numpy on the
            CPU); "cpu" forces the CPU; "cuda" or "cuda:N" runs one stream per GPU thread (same
            step functions) and returns host arrays. With skip_allowed=False the streams run on
            the CPU (the GPU kernel does not keep the reserve yet).

    Returns:
        An `OnlineRun`.
    """
    started = time.perf_counter()
    b, scalar = _check_budget(budget)
    v = _to_numpy(values, "values")
    if v.ndim not in (2, 3):
        raise ValueError(f"values: expected shape (T,K) or (S,T,K), got {v.shape}")
    streams = v.ndim == 3
    if not streams:
        v = v[None]
    S, T, K = v.shape
    if S == 0 or T == 0 or K == 0:
        raise ValueError(f"values: expected at least one stream, request and option, got shape {v.shape}")
    c = _to_numpy(costs, "costs")
    dtype = np.float32 if (v.dtype == np.float32 and c.dtype == np.float32) else np.float64
    v = np.ascontiguousarray(v, dtype=dtype)
    c = _request_costs(c, scalar, b.size, S, T, K, streams, dtype)
    H = _check_horizon(T if horizon is None else horizon)
    code = _check_mirror(mirror)
    step = _check_step(step_size, H)
    if not isinstance(skip_allowed, (bool, np.bool_)):
        raise TypeError(f"skip_allowed: expected a bool, got {skip_allowed!r}")
    nthreads = check_threads(threads)
    m0 = _initial_m(initial_prices, b, H, mirror)
    from . import _device

    where = _device.target(device, values)
    # The GPU kernel does not keep the reserve of skip_allowed=False yet: such streams run on
    # the CPU, so that both give the same answer.
    if where is not None and skip_allowed:
        choice, value, spent, prices, stalled = _device.simulate(
            v, c, b, H, code, step, bool(skip_allowed), m0, bool(record_choices), where)
    else:
        choice, value, spent, prices, stalled = _core.simulate_online(
            v, c, b, H, code, step, bool(skip_allowed), m0, bool(record_choices), nthreads)
    if scalar:
        spent, prices = spent[:, 0], prices[:, 0]
    if not streams:
        choice = None if choice is None else choice[0]
        value, stalled = float(value[0]), int(stalled[0])
        spent = float(spent[0]) if scalar else spent[0]
        prices = float(prices[0]) if scalar else prices[0]
    return OnlineRun(choice, value, spent, prices, stalled, time.perf_counter() - started)


# -- offline: method="mirror" ---------------------------------------------------------------------

def _mirror_inputs(values: Any, costs: Any, budget: Any, mask: Any,
                   sense: str) -> tuple[Problem, np.ndarray, np.ndarray, bool]:
    """(problem, costs (Bc,Nc,K,R), budgets (B,R), resource_axis)."""
    b_arr = budgets_down(_to_numpy(budget, "budget"))
    v_ndim = np.ndim(values) if not _is_torch_tensor(values) else values.dim()
    batched = v_ndim == 3
    resource_axis = b_arr.ndim == (2 if batched else 1)
    if not resource_axis:
        try:
            problem = make_problem(values, costs, budget, mask, sense)
        except ValueError:
            # Costs that are no one-resource costs but look like (..., K, R): name the budget,
            # which lacks the resource axis (the error named costs). Only after make_problem
            # refused them: (N, 1) costs with N = K are per-item costs.
            c = _to_numpy(costs, "costs")
            shape = tuple(values.shape if _is_torch_tensor(values) else np.shape(values))
            if shape and c.ndim >= 2 and c.shape[-1] != shape[-1] and c.shape[-2] in (1, shape[-1]):
                R = c.shape[-1]
                want = f"(B,{R}) or (1,{R})" if batched else f"({R},)"
                raise ValueError(f"budget: costs {c.shape} have a trailing resource axis of {R}: expected a "
                                 f"budget per resource, shape {want}, got {b_arr.shape}") from None
            raise
        c = problem.costs[..., None]
        return problem, c, problem.budget[:, None].copy(), False
    if b_arr.ndim > (2 if batched else 1):
        raise ValueError(f"budget: expected at most {2 if batched else 1} dimensions, got {b_arr.shape}")
    R = b_arr.shape[-1]
    if R == 0:
        raise ValueError("budget: no resources (R=0)")
    c = _to_numpy(costs, "costs")
    exact_in_float64(c, "costs")
    K = (values.shape if _is_torch_tensor(values) else np.shape(values))[-1]
    if c.ndim < 2 or c.shape[-1] != R or c.shape[-2] not in (1, K):
        raise ValueError(f"costs: with a budget of {R} resources expected a trailing resource axis "
                         f"(...,K,{R}) with K={K}, got shape {c.shape}")
    # Validate values, mask and the leading cost axes through the one-resource path.
    if batched:
        if b_arr.shape[0] not in (1, np.shape(values)[0]):
            raise ValueError(f"budget: expected shape (B,R) or (1,R) with B={np.shape(values)[0]}, got {b_arr.shape}")
        problem = make_problem(values, c[..., 0], np.zeros(np.shape(values)[0]), mask, sense)
    else:
        problem = make_problem(values, c[..., 0], 0.0, mask, sense)
    B, N, K = problem.values.shape
    c = c.reshape((1,) * (4 - c.ndim) + c.shape)
    if c.shape[2] != K:
        c = np.broadcast_to(c, c.shape[:2] + (K, R))
    c = np.ascontiguousarray(c, dtype=problem.values.dtype)
    bud = np.ascontiguousarray(np.broadcast_to(b_arr.reshape(-1, R), (B, R)), dtype=np.float64)
    if np.isnan(bud).any():
        raise ValueError("budget: is NaN; pass numbers (inf for no limit)")
    problem.budget = bud[:, 0].copy()
    return problem, c, bud, True


_OPTIMAL, _FEASIBLE = 0, 1  # status codes of the core (STATUS_NAMES)


def _check_value_totals(problem: Problem) -> None:
    """A ValueError when the value of an allocation can overflow float64 (the sum over items of
    the largest |value| is not finite): values and bounds would be inf or NaN."""
    mags = np.abs(problem.values)
    if problem.mask is not None:
        mags = np.where(problem.mask, mags, 0)
    with np.errstate(over="ignore"):
        totals = mags.max(axis=-1).sum(axis=-1, dtype=np.float64)
    if not np.isfinite(totals).all():
        b = int(np.flatnonzero(~np.isfinite(totals))[0])
        raise ValueError(f"values: instance {b}: the total value of an allocation can overflow float64 (the sum "
                         "over items of the largest |value| is not finite); rescale the values (divide them "
                         "by a common factor)")


def mirror_solve(values: Any, costs: Any, budget: Any, *, mask: Any = None, sense: str = "max",
                 threads: Optional[int] = None, max_iter: int = 2000, tol: float = 1e-6,
                 _started: Optional[float] = None) -> Solution:
    """Offline solve by dual updates over the whole batch, for R >= 1 resources.

    The problem of `apportion.solve` with costs per resource: choose one option per item to
    maximise sum_i values[i,x_i] subject to sum_i costs[i,x_i,r] <= budget[r] for every r.
    The prices follow projected subgradient steps on L(mu) = sum_i max_k (v_ik - mu . w_ik)
    + mu . C (Polyak steps towards the best feasible value, in prices normalised by C / N);
    every L(mu) is an upper bound and the least is kept; x(mu) is repaired to feasibility and
    the leftover spent greedily. Stops when the relative gap is below `tol` or after
    `max_iter` steps.

    Args:
        values: (N,K) or (B,N,K).
        costs: one resource (budget a scalar, or (B,) for a batch): as for `solve`. R resources
            (budget (R,) unbatched, (B,R) or (1,R) batched): (K,R), (N,K,R) or (B,N,K,R).
        budget: see costs. A budget below the least possible use of a resource is reported
            "infeasible", as is one where a dual bound L(mu) falls below the least value of any
            allocation (which proves that none fits).
        mask, sense, threads: as for `solve`.
        max_iter, tol: iteration limit and relative gap to stop at.

    Returns:
        A `Solution` with method "mirror". With a resource axis, `cost`, `shadow_price` (the
        prices of the best bound) and `min_budget` (least use of each resource) carry it:
        (R,) or (B,R). `info` holds "iterations" per instance.

        status is "optimal" or "feasible" (within `gap` of the optimum) when an allocation
        within the budget was found, "infeasible" when none can exist (proven, see `budget`;
        `choice` is the least-normalised-cost allocation), and "unknown" when no allocation
        within the budget was found but infeasibility is not proven either: with several
        resources, deciding feasibility is NP-hard, and when neither the dual iterations nor the
        feasibility search (steepest descent on the normalised excess
        sum_r max(0, used_r - C_r) / C_r, from the least-normalised-cost allocation and from
        x(mu) at the prices of the best bound) find one, the solver cannot decide. `choice` is
        then the allocation of least excess found (over the budget), `bound`, `gap` and
        `shadow_price` are NaN. With one resource the status is never "unknown".

        "optimal" is claimed only where a finite bound proves a finite value. Where the least
        use of a resource overflows float64 (costs near 1e308 summed over items), it exceeds
        every finite budget: "infeasible", `min_budget` inf. Where prices on the scale of
        value / cost do not fit in float64 (denormal or tiny costs and budgets), no dual step
        is taken: the bound is L(0) = sum_i max_k v_ik, the allocation is repaired from x(0),
        `shadow_price` is 0, and the status is "feasible" unless that bound proves it.

    Raises:
        ValueError: bad input, naming the argument; values whose total over the items can
            overflow float64 (rescale them).
    """
    started = time.perf_counter() if _started is None else _started
    max_iter = _check_max_iter(max_iter)
    nthreads = check_threads(threads, zero_is_all=True)
    if not (isinstance(tol, numbers.Real) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol: expected a finite number >= 0, got {tol!r}")
    problem, c, bud, resource_axis = _mirror_inputs(values, costs, budget, mask, sense)
    _check_value_totals(problem)
    choice, value, cost, bound, prices, min_cost, status, iterations = _core.mirror(
        problem.values, c, bud, problem.mask, problem.value_sign, max_iter, float(tol), nthreads)
    if problem.value_sign < 0:
        value, bound = -value, -bound
    # "optimal" only where a finite bound proves a finite value (the core decides so; this
    # keeps the promise should a total ever leave float64).
    status = np.where((status == _OPTIMAL) & ~(np.isfinite(value) & np.isfinite(bound)), _FEASIBLE, status)
    with np.errstate(over="ignore"):  # a bound and value of opposite sign near 1e308: gap inf
        gap = np.abs(bound - value)
    names = STATUS_NAMES[status]
    if not resource_axis:
        cost, prices, min_cost = cost[:, 0], prices[:, 0], min_cost[:, 0]
    info = {"iterations": iterations}
    if not problem.batched:
        choice = choice[0]
        value, bound, gap, names = float(value[0]), float(bound[0]), float(gap[0]), str(names[0])
        if resource_axis:
            cost, prices, min_cost = cost[0], prices[0], min_cost[0]
        else:
            cost, prices, min_cost = float(cost[0]), float(prices[0]), float(min_cost[0])
        info = {"iterations": int(iterations[0])}
    if problem.torch_device is not None:
        import torch

        choice = torch.from_numpy(np.asarray(choice)).to(problem.torch_device)
    return Solution(choice, value, cost, bound, gap, names, prices, min_cost, "mirror",
                    time.perf_counter() - started, problem.sense, info)
