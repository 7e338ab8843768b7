"""apportion on Ray: sharded batch solves, Ray Data pipelines, and online allocation across servers.

A thin layer over the same solver API (`apportion.solve`, `apportion.OnlineAllocator`), on Ray's
own machinery: the object store for the data, tasks for batch shards (retried by Ray when a
worker dies), a callable class for `Dataset.map_batches`, and actors for online servers. Ray is
imported here only: `import apportion` never imports it (install it with `apportion[ray]`).

- `solve`: the answer of `apportion.solve` on the whole batch, field for field, computed by Ray
  tasks over shards of the batch (or over a list of `ObjectRef`s of batches).
- `SolveBatches`: solves the instances of a Ray Dataset (columns values, costs, budget) and adds
  the columns choice, value, bound, gap, status.
- `simulate_online`: M servers, each with a share of one budget and an `OnlineAllocator`,
  exchanging prices and unused budget every `sync_every` decisions; the global budget is never
  overspent, even when a server dies (the proof is in `simulate_online`'s docstring).

Ray's own conventions hold: `remote_options` is passed to `.options()` of every task or actor
(num_cpus, num_gpus, resources, max_retries, scheduling_strategy, runtime_env...); nothing is
kept between calls, so `ray.shutdown()`/`ray.init()` cycles work; a call starts a local cluster
only if none is running (as `ray.get` does).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
import warnings
from fractions import Fraction
from typing import Any, Iterable, Literal, NoReturn, Optional, Sequence, Union, overload

import numpy as np
import numpy.typing as npt

try:
    import ray
except ImportError as _exc:  # pragma: no cover - exercised only without ray
    raise ImportError(f"apportion.ray needs Ray: pip install \"apportion[ray]\" ({_exc})") from _exc

from . import api
from ._problem import IntArray, Method, Solution, _to_numpy
from .online import SKIP, NoFeasibleOptionError, OnlineAllocator, OnlineRun
from .online import simulate_online as _simulate_one

__all__ = ["solve", "concatenate", "SolveBatches", "simulate_online", "DistributedRun"]

# Default Ray options of a solve task: one CPU, and Ray's retries on a worker's death (a shard
# is a pure function of its input, so running it again gives the same answer).
_TASK_DEFAULTS = {"num_cpus": 1, "max_retries": 3}
# Default options of a server actor: restarted by Ray when its process dies, and a call never
# run twice (a decision is an action: running it again would spend twice).
_SERVER_DEFAULTS = {"num_cpus": 0, "max_restarts": 3, "max_task_retries": 0}

# A handle of a `_Server` actor. Ray types it as ActorHandle[_Server] | type[_Server] and the
# methods of an ActorHandle as Never, after which mypy takes the rest of a function for
# unreachable and checks none of it: so a handle is Any here.
_ServerHandle = Any
# What `_Server.decide` returns: (choices (M,) int64, refused (M,) bool).
_Decisions = tuple[IntArray, npt.NDArray[np.bool_]]


# -- sharded batch solve ----------------------------------------------------------------------

def _host_array(x: Any, name: str) -> Any:
    """x as a host numpy array (numpy arrays as they are; torch CPU tensors without a copy);
    a TypeError naming `name` for device arrays, which Ray cannot move between nodes here."""
    if x is None or isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__cuda_array_interface__") or getattr(getattr(x, "device", None), "type", "cpu") == "cuda":
        raise TypeError(f"{name}: apportion.ray takes host arrays (numpy, lists, CPU tensors); pass "
                        "device='cuda' and num_gpus in remote_options to solve the shards on GPUs")
    # apportion.solve's reading: named errors for ragged lists and the like, here in the caller
    return _to_numpy(x, name, allow_bool=name == "mask")


def _task_threads(solve_kwargs: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """solve_kwargs with `threads` defaulting to the CPUs a task holds (so that tasks sharing a
    node do not each start a thread per core)."""
    if "threads" in solve_kwargs or solve_kwargs.get("device") not in (None, "cpu"):
        return solve_kwargs  # (a GPU solve takes no thread count: apportion.solve refuses one)
    cpus = options.get("num_cpus", 1)
    return {**solve_kwargs, "threads": max(1, int(math.floor(cpus))) if cpus else 1}


def _solve_slice(values: Any, costs: Any, budget: Any, mask: Any, lo: int, hi: int,
                 sliced: set[str], kwargs: dict[str, Any]) -> Solution:
    """The body of a solve task: `apportion.solve` on instances lo..hi-1 of the batch. The
    arrays arrive from the object store as read-only views; the slices are views too."""
    def part(x: Any, name: str) -> Any:
        return x[lo:hi] if name in sliced else x
    return api.solve(part(values, "values"), part(costs, "costs"), part(budget, "budget"),
                     mask=part(mask, "mask"), **kwargs)


def _solve_batch(values: Any, costs: Any, budget: Any, mask: Any, kwargs: dict[str, Any]) -> Solution:
    """The body of a task that solves one whole batch (an element of a list of refs)."""
    return api.solve(values, costs, budget, mask=mask, **kwargs)


def _batch_shape(values: Any) -> tuple[int, ...]:
    return np.shape(values)


def _batch_axes(B: int, values: np.ndarray, costs: Any, budget: Any, mask: Any, method: str) -> set[str]:
    """The arguments that carry the batch axis (and are sliced per shard); the others are
    broadcast to every shard, as `apportion.solve` broadcasts them."""
    sliced = {"values"}
    b = np.asarray(budget)
    # With several resources (method "mirror"), a batched budget is (B,R) and batched costs
    # (B,N,K,R); a (1,R) budget or (N,K,R) costs are shared.
    resource_axis = b.ndim == 2
    if b.ndim >= 1 and b.shape[0] == B:
        sliced.add("budget")
    c = np.asarray(costs) if not isinstance(costs, np.ndarray) else costs
    if c.ndim == (4 if resource_axis else 3) and c.shape[0] == B:
        sliced.add("costs")
    if mask is not None and np.ndim(mask) == 3 and np.shape(mask)[0] == B:
        sliced.add("mask")
    return sliced


def _resolved_method(method: Method, options: int, solve_kwargs: dict[str, Any]) -> Method:
    """What "auto" runs on the whole batch (B*N*K options), so that every shard runs the same
    method as `apportion.solve` would on the whole batch; other methods as given."""
    if method != "auto":
        return method
    if solve_kwargs.get("exact_spend") or solve_kwargs.get("cost_resolution") is not None:
        return "dp"
    if solve_kwargs.get("device") not in (None, "cpu"):
        return method  # the device decides (see apportion.solve)
    return api._auto_method(options, _exact_asked(solve_kwargs))


def _exact_asked(solve_kwargs: dict[str, Any]) -> bool:
    """Whether an option only method "exact" takes is given (then "auto" runs "exact")."""
    return any(solve_kwargs.get(key) is not None for key in ("time_limit", "max_states", "max_memory"))


def _check_batch_shapes(values: np.ndarray, costs: Any, budget: Any, mask: Any) -> None:
    """The shapes a batch must have, checked on the whole batch as apportion.solve checks them
    (in the tasks, the errors quoted a shard's shapes, or named costs for a bad budget)."""
    B = values.shape[0]
    b = np.shape(budget)
    if b not in ((), (B,)):
        raise ValueError(f"budget: expected a scalar or shape ({B},), got {b}")
    for name, x in (("costs", costs), ("mask", mask)):
        if x is None:
            continue
        try:
            if np.broadcast_shapes(np.shape(x), values.shape) != values.shape:
                raise ValueError
        except ValueError:
            raise ValueError(f"{name}: shape {np.shape(x)} does not broadcast against values {values.shape}") from None


def _check_shards(shards: Any, B: int) -> int:
    if shards is None:
        if not ray.is_initialized():  # as ray.put would: a local cluster
            ray.init()
        # ray.cluster_resources has no annotations in Ray 2.60
        cpus = ray.cluster_resources().get("CPU", 1)  # type: ignore[no-untyped-call]
        return max(1, min(B, int(cpus)))
    if isinstance(shards, bool) or not isinstance(shards, numbers.Integral) or shards < 1:
        raise ValueError(f"shards: expected an integer >= 1 (or None: one per CPU of the cluster), got {shards!r}")
    return min(int(shards), B)


def _shard_bounds(B: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) ranges, sizes differing by at most one."""
    edges = [B * s // shards for s in range(shards + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _reraise(err: Exception, where: str) -> NoReturn:
    """The cause of a failed task, raised again with where it happened (its type kept, so a
    ValueError from a shard is a ValueError here)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, (ValueError, TypeError)):
        raise type(cause)(f"{cause} ({where})") from err
    raise err


def solve(values: Any, costs: Any, budget: Any, *, shards: Optional[int] = None,
          return_refs: bool = False, remote_options: Optional[dict[str, Any]] = None,
          **solve_kwargs: Any) -> Union[Solution, list[ray.ObjectRef[Solution]]]:
    """`apportion.solve` over a Ray cluster: the same arguments, the same `Solution`.

    The batch goes into the object store once (one `ray.put` per array), and `shards` Ray tasks
    each solve a contiguous range of its instances with the native solver on their node; the
    tasks read the arrays as read-only views of the object store (no copy on the node) and
    send back their `Solution`s, whose arrays are concatenated. Every instance is solved by the
    same method as `apportion.solve` would use on the whole batch ("auto" is resolved on the
    whole batch first), and instances are solved independently of each other, so the answer
    equals `apportion.solve(values, costs, budget, **solve_kwargs)` field for field (only
    `seconds`, and `info["table_bytes"]` of method "dp", which is the largest of one task,
    differ; and an instance of method "exact" stopped by `time_limit` keeps what it found in
    that time, which no two runs need share, sharded or not). A task whose worker dies is run
    again by Ray (`max_retries`, default 3); no
    instance is lost.

    Args:
        values: (B,N,K) as for `apportion.solve` (numpy, lists, or CPU tensors), or (N,K) for
            one instance (solved by one task). Or a list of `ray.ObjectRef`s, each of a
            (B_j,N,K) batch, for input larger than one process's memory: one task per batch,
            and the answer is that of the concatenated batch.
        costs, budget: as for `apportion.solve` (arrays with the batch axis are split with
            values, the others shared). With a list of refs: either one value shared by every
            batch, or a list of the same length (arrays or refs) of per-batch values.
        shards: number of tasks (at most B). None: one per CPU of the cluster. Ignored for a
            list of refs (one task per batch).
        return_refs: False: a `Solution` (its arrays held by the caller). True: the list of
            `ObjectRef`s of the shards' `Solution`s, in batch order, left in the object store
            (join them with `concatenate(ray.get(refs))` where they fit; one (N,K) instance is
            solved as a batch of one for that).
        remote_options: passed to `.options()` of each task: num_cpus (default 1), num_gpus,
            resources, max_retries (default 3), scheduling_strategy, runtime_env...
        **solve_kwargs: method, mask, sense, threads, time_limit, max_states, exact_spend,
            cost_resolution, max_memory, device: as for `apportion.solve`. `threads` defaults
            to the task's num_cpus.

    Returns:
        A `Solution` (choice (B,N), per-instance arrays (B,)), or a list of refs (return_refs).
        `seconds` is the wall time of the whole call.

    Raises:
        ValueError, TypeError: bad input (naming the argument and, from a task, its instances).
    """
    started = time.perf_counter()
    if not isinstance(return_refs, (bool, np.bool_)):
        raise TypeError(f"return_refs: expected True or False, got {return_refs!r:.40}")
    options = {**_TASK_DEFAULTS, **(remote_options or {})}
    kwargs = _task_threads(solve_kwargs, options)
    method = kwargs.pop("method", "auto")
    mask = kwargs.pop("mask", None)
    if isinstance(values, (list, tuple)) and values and all(isinstance(v, ray.ObjectRef) for v in values):
        # (a mask may be per batch, as costs and budget: a list of refs or arrays)
        return _solve_refs(list(values), costs, budget, mask, method, kwargs, options, return_refs, started)
    if values is None:
        raise TypeError("values: expected (B,N,K) or (N,K) numbers, got None")
    values, mask = _host_array(values, "values"), _host_array(mask, "mask")
    costs, budget = _host_array(costs, "costs"), _host_array(budget, "budget")
    task = ray.remote(_solve_slice).options(**options)
    if values.ndim != 3:  # one instance (or input that apportion.solve will reject, by name)
        if shards is not None:
            _check_shards(shards, 1)  # (checked as for a batch, though one task solves it)
        if return_refs and values.ndim == 2:  # as a batch of one, which concatenate takes
            values = values[None]
        ref = ray.remote(_solve_batch).options(**options).remote(values, costs, budget, mask,
                                                                 {**kwargs, "method": method})
        return [ref] if return_refs else _get(ref, "the one instance", started)
    B = values.shape[0]
    if B == 0:  # apportion.solve names the empty batch
        return api.solve(values, costs, budget, method=method, mask=mask, **kwargs)
    count = _check_shards(shards, B)
    kwargs["method"] = _resolved_method(method, values.size, kwargs)
    if kwargs["method"] != "mirror":
        _check_batch_shapes(values, costs, budget, mask)
    sliced = _batch_axes(B, values, costs, budget, mask, kwargs["method"])
    put = {name: ray.put(x) if name in sliced or isinstance(x, np.ndarray) and x.size > 1024 else x
           for name, x in (("values", values), ("costs", costs), ("budget", budget), ("mask", mask))}
    bounds = _shard_bounds(B, count)
    refs = [task.remote(put["values"], put["costs"], put["budget"], put["mask"], lo, hi, sliced, kwargs)
            for lo, hi in bounds]
    if return_refs:
        return refs
    return _gather(refs, [f"instances {lo}..{hi - 1}" for lo, hi in bounds], started)


def _solve_refs(refs: list[ray.ObjectRef[Any]], costs: Any, budget: Any, mask: Any, method: Any,
                kwargs: dict[str, Any], options: dict[str, Any], return_refs: bool,
                started: float) -> Union[Solution, list[ray.ObjectRef[Solution]]]:
    """solve() for a list of refs of batches: one task per batch."""
    def per_batch(x: Any, name: str) -> list[Any]:
        # A list of refs or numpy arrays, one per batch; anything else is shared (a list of
        # numbers is an array, such as tier costs).
        if isinstance(x, list) and x and all(isinstance(e, (ray.ObjectRef, np.ndarray)) for e in x):
            if len(x) != len(refs):
                raise ValueError(f"{name}: expected one entry per batch ({len(refs)}), got {len(x)}")
            return x
        x = x if isinstance(x, ray.ObjectRef) else _host_array(x, name)
        shared = ray.put(x) if isinstance(x, np.ndarray) and x.size > 1024 else x
        return [shared] * len(refs)

    costs_j, budget_j, mask_j = per_batch(costs, "costs"), per_batch(budget, "budget"), per_batch(mask, "mask")
    kwargs = dict(kwargs)
    if method == "auto" and not kwargs.get("exact_spend") and kwargs.get("cost_resolution") is None \
            and kwargs.get("device") in (None, "cpu"):
        shapes = ray.get([ray.remote(_batch_shape).options(num_cpus=0).remote(r) for r in refs])
        if any(len(s) != 3 for s in shapes):
            raise ValueError(f"values: each ref must hold a (B,N,K) batch, got shapes {shapes}")
        method = api._auto_method(sum(int(np.prod(s)) for s in shapes), _exact_asked(kwargs))
    kwargs["method"] = method
    task = ray.remote(_solve_batch).options(**options)
    out = [task.remote(v, c, b, m, kwargs) for v, c, b, m in zip(refs, costs_j, budget_j, mask_j)]
    if return_refs:
        return out
    return _gather(out, [f"batch {j} of the list" for j in range(len(out))], started)


def _get(ref: ray.ObjectRef[Solution], where: str, started: float) -> Solution:
    try:
        sol = ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        _reraise(err, where)
    # The caller's own choice array: the object store's is read-only.
    choice = np.array(sol.choice) if isinstance(sol.choice, np.ndarray) else sol.choice
    return dataclasses.replace(sol, choice=choice, seconds=time.perf_counter() - started)


def _gather(refs: list[ray.ObjectRef[Solution]], where: list[str], started: float) -> Solution:
    parts: list[Solution] = []
    for ref, w in zip(refs, where):
        try:
            parts.append(ray.get(ref))
        except ray.exceptions.RayTaskError as err:
            _reraise(err, w)
    sol = concatenate(parts)
    return dataclasses.replace(sol, seconds=time.perf_counter() - started)


def _join_info(infos: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    """The `info` of a concatenated Solution (parts of `sizes` instances): per-instance arrays
    concatenated ("stopped_by", absent from a part that stopped nothing, as None for each of
    its instances), equal entries kept, "table_bytes" (method dp) the largest of one part, other
    differing entries listed per part."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for info in infos for k in info):
        vals: list[Any] = [info.get(key) for info in infos]  # None where a part lacks the key
        if key == "stopped_by":
            out[key] = np.concatenate([np.full(n, None, dtype=object) if v is None else np.asarray(v, dtype=object)
                                       for v, n in zip(vals, sizes)])
        elif key == "table_bytes":
            out[key] = max(v for v in vals if v is not None)
        elif all(isinstance(v, np.ndarray) and v.ndim >= 1 for v in vals):
            out[key] = np.concatenate(vals)
        elif all(type(v) is type(vals[0]) and np.array_equal(v, vals[0]) for v in vals):
            out[key] = vals[0]
        else:
            out[key] = vals
    return out


def concatenate(solutions: Sequence[Solution]) -> Solution:
    """One `Solution` of the batch made of the given batched Solutions, in order.

    Args:
        solutions: Solutions of batches (choice (B_j,N)) from the same method and sense.

    Returns:
        A Solution with choice (sum B_j, N) and per-instance arrays concatenated; `seconds` is
        the largest of the parts (they ran in parallel); `info` as described in `solve`.
    """
    solutions = list(solutions)
    if not solutions:
        raise ValueError("solutions: expected at least one Solution")
    first = solutions[0]
    if any(np.ndim(s.choice) != 2 for s in solutions):
        raise ValueError("solutions: expected batched Solutions (choice of shape (B,N))")
    if any(np.shape(s.choice)[1] != np.shape(first.choice)[1] for s in solutions):
        raise ValueError("solutions: mixed numbers of items N ("
                         + ", ".join(str(np.shape(s.choice)[1]) for s in solutions) + ")")
    for s in solutions:
        if (s.method, s.sense) != (first.method, first.sense):
            raise ValueError(f"solutions: mixed methods or senses ({s.method!r}/{s.sense!r} and "
                             f"{first.method!r}/{first.sense!r})")
    fields = {}
    for f in ("choice", "value", "cost", "bound", "gap", "status", "shadow_price", "min_budget"):
        fields[f] = np.concatenate([np.asarray(getattr(s, f)) for s in solutions])
    return Solution(**fields, method=first.method, seconds=max(s.seconds for s in solutions),
                    sense=first.sense, info=_join_info([s.info for s in solutions],
                                                       [np.shape(s.choice)[0] for s in solutions]))


# -- Ray Data ---------------------------------------------------------------------------------

class SolveBatches:
    """A callable class for `Dataset.map_batches`: solves each row as one instance.

    Each row holds an instance: column `values` (N,K), `costs` ((K,) or (N,K)) and `budget` (a
    scalar); an optional `mask` (N,K) column. Rows of one batch with the same shapes are solved
    in one native call; rows of other shapes (a ragged dataset) in calls of their own. The
    batch comes back with the columns `choice` (N,) int64, `value`, `cost`, `bound`, `gap`,
    `shadow_price` (float64), and `status` (str), next to the input columns. Every row gets the
    answer of `apportion.solve` on that instance alone: "auto" picks the method per instance as
    `apportion.solve` would for it alone, whatever the batch size.

        ds = ray.data.read_parquet(path)
        ds.map_batches(apportion.ray.SolveBatches, fn_constructor_kwargs={"method": "exact"},
                       batch_format="numpy",
                       compute=ray.data.ActorPoolStrategy(size=2))

    Args (constructor):
        method, sense, threads, time_limit, max_states, exact_spend, cost_resolution,
        max_memory, device: as for `apportion.solve` (threads defaults to 1: one per actor).
    """

    OUTPUTS = ("choice", "value", "cost", "bound", "gap", "shadow_price", "status")

    def __init__(self, method: Method = "auto", **solve_kwargs: Any) -> None:
        for bad in ("mask", "values", "costs", "budget"):
            if bad in solve_kwargs:
                raise TypeError(f"{bad}: SolveBatches reads it from the column {bad!r}, not from an argument")
        self.method: Method = method
        self.kwargs: dict[str, Any] = {"threads": 1, **solve_kwargs}

    def _method(self, n_options: int) -> Method:
        return _resolved_method(self.method, n_options, self.kwargs)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(batch, dict):
            raise TypeError(f"batch: expected a dict of numpy arrays, got {type(batch).__name__}; "
                            "pass batch_format='numpy' to map_batches")
        for col in ("values", "costs", "budget"):
            if col not in batch:
                raise ValueError(f"{col}: the batch has no column {col!r} (columns: {sorted(batch)})")
        rows = len(batch["budget"])
        groups: dict[tuple[Any, ...], list[int]] = {}  # rows by their shapes
        for i in range(rows):
            key = (np.shape(batch["values"][i]), np.shape(batch["costs"][i]),
                   None if "mask" not in batch else np.shape(batch["mask"][i]))
            groups.setdefault(key, []).append(i)
        out: dict[str, list[Any]] = {name: [None] * rows for name in self.OUTPUTS}
        for idx in groups.values():
            values = np.stack([np.asarray(batch["values"][i]) for i in idx])
            costs = np.stack([np.asarray(batch["costs"][i]) for i in idx])
            if costs.ndim == 2:  # (K,) per row: as (1,K) per instance for the batched call
                costs = costs[:, None, :]
            budget = np.asarray([batch["budget"][i] for i in idx], dtype=np.float64).reshape(-1)
            mask = None if "mask" not in batch else np.stack([np.asarray(batch["mask"][i], bool) for i in idx])
            # Instances are solved independently within a call; only "auto" looks at the call's
            # size, so it is resolved per instance.
            method = self._method(values.shape[1] * values.shape[2])
            sol = api.solve(values, costs, budget, method=method, mask=mask, **self.kwargs)
            for j, i in enumerate(idx):
                for name in self.OUTPUTS:
                    out[name][i] = getattr(sol, name)[j]
        result = dict(batch)
        for name in self.OUTPUTS:
            answers = out[name]
            if name == "choice":
                same = len({c.shape for c in answers}) == 1
                result[name] = np.stack(answers) if same else _object_column(answers)
            elif name == "status":
                result[name] = np.asarray(answers, dtype=object)
            else:
                result[name] = np.asarray(answers, dtype=np.float64)
        return result


def _object_column(items: list[Any]) -> np.ndarray:
    col = np.empty(len(items), dtype=object)
    col[:] = items
    return col


# -- online allocation across servers ---------------------------------------------------------

class _Server:
    """One online server (a Ray actor): an `OnlineAllocator` over the allotment it holds.

    Between two syncs the server decides its requests alone. At a sync it hands back its
    unspent allotment (`report`) and receives a new one with the synced prices (`assign`).
    A restarted server (its process died; Ray ran __init__ again) holds no allotment, since it
    cannot know what its previous incarnation spent, and refuses requests (SKIP) until its
    next `assign`, which restores the last synced prices.
    """

    def __init__(self, mirror: str, step_size: float, skip_allowed: bool) -> None:
        self.mirror, self.step, self.skip = mirror, step_size, skip_allowed
        with warnings.catch_warnings():  # Ray deprecates this flag without a replacement yet
            warnings.simplefilter("ignore")
            self.restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        self.alloc: Optional[OnlineAllocator] = None
        self.prices: Any = None
        self.decided = 0

    def assign(self, allotment: np.ndarray, horizon: int, prices: Any, scalar: bool = False) -> None:
        """Starts an epoch: `allotment` (R,) to spend on the next `horizon` requests, as a
        scalar budget where the caller's was one (costs (K,)), else (R,) (costs (K,R), R = 1
        too)."""
        self.prices = prices
        self.decided = 0
        self.alloc = None
        if horizon > 0 and (np.asarray(allotment) > 0).all():
            budget = float(allotment[0]) if scalar else np.asarray(allotment)
            self.alloc = OnlineAllocator(budget, horizon, mirror=self.mirror, step_size=self.step,
                                         skip_allowed=self.skip, initial_prices=prices)

    def decide(self, values: np.ndarray, costs: np.ndarray) -> _Decisions:
        """Decides the requests in order: (choices (M,) int64, refused (M,) bool)."""
        M = values.shape[0]
        choices = np.full(M, SKIP, dtype=np.int64)
        refused = np.ones(M, dtype=bool)
        if self.alloc is None:
            return choices, refused
        shared = costs.ndim == values.ndim - 1 + (0 if self.alloc._scalar else 1)
        start = 0
        while start < M:
            part_c = costs if shared else costs[start:]
            try:
                choices[start:] = self.alloc.decide(values[start:], part_c)
                refused[start:] = False
                break
            except NoFeasibleOptionError as err:  # only without skipping: decide up to it
                stop = start + err.request
                if stop > start:
                    choices[start:stop] = self.alloc.decide(values[start:stop], costs if shared else costs[start:stop])
                    refused[start:stop] = False
                start = stop + 1  # refused: nothing fits the remaining allotment
        self.decided += M
        return choices, refused

    def incarnation_restarted(self) -> bool:
        """Whether this process is a restart (Ray ran __init__ again after the actor died)."""
        return self.restarted

    def report(self) -> dict[str, Any]:
        """Ends the epoch: hands back the unspent allotment (the server holds none after it)."""
        rep: dict[str, Any]
        if self.alloc is None:
            rep = {"leftover": None, "spent": None, "prices": self.prices, "decided": self.decided}
        else:
            rep = {"leftover": np.atleast_1d(self.alloc.remaining).astype(np.float64),
                   "spent": np.atleast_1d(self.alloc.spent).astype(np.float64),
                   "prices": self.alloc.prices, "decided": self.decided}
        rep["restarted"] = self.restarted
        self.alloc = None
        return rep


def _exact_sum(xs: Iterable[Any]) -> Fraction:
    return sum((Fraction(float(x)) for x in xs), Fraction(0))


def _within(amounts: np.ndarray, pool: list[Fraction]) -> np.ndarray:
    """amounts (M,R) >= 0, scaled down (per resource) until their exact sum is <= pool[r] (an
    exact Fraction): float rounding of a split must not create budget."""
    amounts = np.maximum(amounts, 0.0)
    for r in range(amounts.shape[1]):
        col = amounts[:, r]
        while _exact_sum(col) > pool[r]:
            col = col * (1.0 - 2.0**-50)
        amounts[:, r] = col
    return amounts


def _split(pool: list[Fraction], weights: np.ndarray) -> np.ndarray:
    """Splits the exact pools (R,) in proportion to weights (M,R) >= 0, within the pools."""
    M, R = weights.shape
    out = np.zeros((M, R))
    for r in range(R):
        w = weights[:, r]
        total = w.sum()
        if total > 0 and pool[r] > 0:
            out[:, r] = float(pool[r]) * (w / total)
    return _within(out, pool)


@dataclasses.dataclass
class DistributedRun:
    """The outcome of `apportion.ray.simulate_online`.

    choice: int64 (T,): the option played per request (SKIP, -1, for a skip or a refusal).
    value: total value collected over all servers.
    spent: total cost of the options played (float, or (R,) for R resources), summed exactly.
    shard_value: (M,) value per server. shard_spent: (M,) or (M,R) cost per server.
    refused: requests refused: by a restarted server before its next sync, or (without skipping)
        because no option fitted the server's allotment.
    reference_value, reference_spent: value and spend of one `OnlineAllocator` that sees all T
        requests in order, with the whole budget (same mirror, step rule and skipping).
    regret: reference_value - value (negative when the servers did better).
    syncs: sync rounds run. restarts: server restarts seen. max_committed: the largest, over the
        syncs, of spent so far plus the allotments handed out (never above the budget).
    seconds: wall time of the call.
    """

    choice: np.ndarray
    value: float
    spent: Any
    shard_value: np.ndarray
    shard_spent: np.ndarray
    refused: int
    reference_value: float
    reference_spent: Any
    regret: float
    syncs: int
    restarts: int
    max_committed: Any
    seconds: float


@overload
def _check_positive_int(x: Any, name: str, allow_none: Literal[False] = False) -> int: ...
@overload
def _check_positive_int(x: Any, name: str, allow_none: bool) -> Optional[int]: ...
def _check_positive_int(x: Any, name: str, allow_none: bool = False) -> Optional[int]:
    if x is None and allow_none:
        return None
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 1:
        extra = " (or None: never)" if allow_none else ""
        raise ValueError(f"{name}: expected an integer >= 1{extra}, got {x!r:.40}")
    return int(x)


def simulate_online(streams: Any, costs: Any, budget: Any, *, shards: int, sync_every: Optional[int],
                    server: Any = None, mirror: str = "euclidean", step_size: Optional[float] = None,
                    skip_allowed: bool = True, initial_prices: Any = None,
                    kill: Sequence[tuple[int, int]] = (),
                    remote_options: Optional[dict[str, Any]] = None) -> DistributedRun:
    """Online allocation by `shards` servers under one budget, on a recorded stream.

    Each server is a Ray actor with an `OnlineAllocator` over its allotment, a share of the
    budget. The servers decide their own requests alone, `sync_every` of them between two
    syncs. At a sync every server hands back what it has not spent, the coordinator (this
    call) averages the servers' prices and splits the returned budget among them, and each
    server starts a fresh allocator over its new allotment, for the requests it still has to
    decide, at the averaged prices.

    Prices: the average, weighted by the requests each server decided since the last sync. The
    whole problem has one budget and so one shadow price (the hindsight optimum takes every
    request whose value per cost beats it); each server's price is an estimate of it from its
    own part of the requests, and the weighted average is the estimate from all of them. A
    consensus step (moving each price part way to its neighbours') is what servers without a
    coordinator do; with one, the average is the step taken in full, at no extra cost.

    Budget: the returned budget goes to where it is spent fastest: in proportion to the
    requests each server has left times its spend per request so far (as reported), shrunk a
    tenth of the way to the average over servers (`_SHRINK`: a server that spent nothing so
    far is not starved for good; half way cost more regret where servers differ: on the
    skewed workload of bench/bench_ray.py with T=8000, one seed, sync_every=20, 0.070 of the
    reference value against 0.051, while the i.i.d. one moved from 0.0037 to 0.0040). Before
    the first sync each
    server holds the budget times its share of the requests.

    The budget is never overspent, even when servers die. Proof. Write A_m^k for the allotment
    of server m in epoch k (between syncs k and k+1), S_m^k for the exact (real-number) total
    cost of the options it plays in that epoch and u_m^k for what it hands back at sync k+1.
    (i) S_m^k <= A_m^k: an `OnlineAllocator` plays an option only if its cost fits the
    remaining budget, decided on the exact total. (ii) u_m^k <= A_m^k - S_m^k: the handed-back
    amount is the allocator's `remaining`, budget minus spent rounded down. (iii) The
    coordinator hands out sum_m A_m^(k+1) <= sum_m u_m^k, checked in exact rational arithmetic
    (`_within`; the float split is scaled down until it holds), and sum_m A_m^0 <= budget
    likewise. (iv) A server hands back its allotment when it reports, and a server that died
    (killed, or its process lost) is restarted by Ray with no allotment: the allotment it held,
    and any handed to it while it was down, is never handed out again (it counts as spent). By
    (ii)-(iv), sum_{j<k} S^j + sum_m A_m^k <= sum_{j<k-1} S^j + sum_m A_m^(k-1) <= ... <=
    sum_m A_m^0 <= budget, where S^j = sum_m S_m^j; and by (i) the spend at any moment of epoch
    k is at most sum_{j<k} S^j + sum_m A_m^k <= budget. No step uses a server's report of its
    spend, so a dead or lost report cannot break it. (Only the coordinator is trusted: its
    ledger here is this call.)

    Args:
        streams: (T,K) values of the T requests in arrival order (finite).
        costs: (K,) shared, or (T,K) per request; for a budget of R resources (K,R) or (T,K,R).
        budget: the one budget over all servers: a scalar or (R,), finite and > 0.
        shards: M, the number of servers (Ray actors).
        sync_every: decisions per server between syncs; None: never sync (each server spends
            only its first share).
        server: (T,) ints in 0..M-1: which server receives each request (default t mod M).
        mirror, step_size, skip_allowed, initial_prices: as for `OnlineAllocator`. The step
            size of each server is that of its whole stream (default 1 / sqrt(T_m)), kept across
            syncs; each allocator's horizon is the number of requests the server has left.
        kill: (server, sync) pairs: in epoch `sync` (0 before the first sync), that server is
            killed with `ray.kill` after deciding half of its requests of the epoch (Ray then
            restarts it). To measure what a crash costs; the budget bound still holds.
        remote_options: passed to `.options()` of the server actors (defaults: num_cpus=0,
            max_restarts=3, max_task_retries=0).

    Returns:
        A `DistributedRun`, with the regret against one `OnlineAllocator` that sees every
        request.
    """
    started = time.perf_counter()
    values = np.ascontiguousarray(_host_array(streams, "streams"), dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"streams: expected (T,K) request values with T, K >= 1, got shape {values.shape}")
    T, K = values.shape
    M = _check_positive_int(shards, "shards")
    every = _check_positive_int(sync_every, "sync_every", allow_none=True)
    b = np.atleast_1d(np.asarray(_host_array(budget, "budget"), dtype=np.float64))
    scalar = np.ndim(budget) == 0
    if b.ndim != 1 or not np.isfinite(b).all() or (b <= 0).any():
        raise ValueError(f"budget: expected a finite number > 0 or (R,) of them, got {budget!r:.60}")
    R = b.size
    c = np.ascontiguousarray(_host_array(costs, "costs"), dtype=np.float64)
    tail = (K,) if scalar else (K, R)
    if c.shape not in (tail, (T,) + tail):
        raise ValueError(f"costs: expected shape {tail} or {(T,) + tail}, got {c.shape}")
    per_request = c.shape == (T,) + tail
    if server is None:
        route = np.arange(T) % M
    else:
        route = np.asarray(server)
        if route.shape != (T,) or not np.issubdtype(route.dtype, np.integer) or \
                (route < 0).any() or (route >= M).any():
            raise ValueError(f"server: expected (T,) integers in 0..{M - 1}, got {route!r:.60}")
    kills: dict[int, set[int]] = {}  # servers to kill, by epoch
    for pair in kill:
        m, k = pair
        if not (0 <= m < M) or k < 0:
            raise ValueError(f"kill: expected (server in 0..{M - 1}, sync >= 0) pairs, got {pair!r}")
        kills.setdefault(int(k), set()).add(int(m))

    # The reference: one allocator sees every request, with the whole budget.
    ref = _simulate_one(values, c, budget if scalar else b, mirror=mirror, step_size=step_size,
                        skip_allowed=skip_allowed, initial_prices=initial_prices, threads=1)

    own = [np.flatnonzero(route == m) for m in range(M)]
    counts = np.array([len(ix) for ix in own])
    steps = [None if step_size is None else float(step_size) for _ in range(M)]
    steps = [s if s is not None else 1.0 / math.sqrt(max(n, 1)) for s, n in zip(steps, counts)]
    options = {**_SERVER_DEFAULTS, **(remote_options or {})}
    actor = ray.remote(_Server).options(**options)
    servers: list[_ServerHandle] = [actor.remote(mirror, steps[m], skip_allowed) for m in range(M)]

    try:
        # A server that cannot start (its options, its environment) is an error here, not a
        # server that died: later deaths are the faults the protocol absorbs.
        ray.get([s.incarnation_restarted.remote() for s in servers])
        return _run_servers(servers, values, c, per_request, b, scalar, counts, own, every, kills,
                            initial_prices, ref, started)
    finally:
        for s_ in servers:
            ray.kill(s_, no_restart=True)


def _run_servers(servers: list[_ServerHandle], values: np.ndarray, c: np.ndarray, per_request: bool,
                 b: np.ndarray, scalar: bool, counts: np.ndarray, own: list[np.ndarray],
                 every: Optional[int], kills: dict[int, set[int]], initial_prices: Any,
                 ref: OnlineRun, started: float) -> DistributedRun:
    """The epochs of simulate_online: assign, decide, report, rebalance."""
    M, R, T = len(servers), b.size, values.shape[0]
    pool = [Fraction(float(x)) for x in b]
    allot = _split(pool, np.repeat(counts[:, None].astype(np.float64), R, axis=1))
    prices = [initial_prices] * M
    done = np.zeros(M, dtype=np.int64)
    choice = np.full(T, SKIP, dtype=np.int64)
    refused = np.zeros(T, dtype=bool)
    committed_spend = [Fraction(0)] * R  # exact spend of completed epochs (from the choices)
    max_committed = np.zeros(R)
    restarts, syncs, epoch = 0, 0, 0
    history = {"spent": np.zeros((M, R)), "decided": np.zeros(M)}  # as reported, for the rates

    def cost_of(ix: np.ndarray, ch: np.ndarray) -> np.ndarray:
        """Exact (R,) cost of requests ix with choices ch (SKIP costs nothing)."""
        played = ch >= 0
        if not played.any():
            return np.zeros((0, R))
        rows = c[ix[played]] if per_request else c[None].repeat(played.sum(), axis=0)
        picked: np.ndarray = rows[np.arange(played.sum()), ch[played]]
        return picked.reshape(-1, R)

    while True:
        left = counts - done
        horizon = left.copy()
        _call_each([(s.assign, (allot[m], int(horizon[m]), prices[m], scalar)) for m, s in enumerate(servers)])
        committed = [committed_spend[r] + _exact_sum(allot[:, r]) for r in range(R)]
        max_committed = np.maximum(max_committed, [float(x) for x in committed])
        take = left if every is None else np.minimum(left, every)
        calls = []
        for m in range(M):
            ix = own[m][done[m]:done[m] + take[m]]
            if ix.size == 0:
                continue
            halves = [ix]
            if m in kills.get(epoch, ()):
                halves = [ix[:ix.size // 2], ix[ix.size // 2:]]
            calls.append((m, halves))
        results = {}
        # The first (or only) part of each server's epoch runs in parallel; a killed server's
        # second part goes to its restarted incarnation.
        firsts = [servers[m].decide.remote(values[h[0]], c[h[0]] if per_request else c) for m, h in calls]
        for (m, halves), fut in zip(calls, firsts):
            results[m] = [(halves[0], _decided(fut, halves[0].size))]
        for m, halves in calls:
            if len(halves) == 2:
                ray.kill(servers[m], no_restart=False)
                restarts += 1
                _await_restart(servers[m])
                fut = servers[m].decide.remote(values[halves[1]], c[halves[1]] if per_request else c)
                results[m].append((halves[1], _decided(fut, halves[1].size)))
        for m, parts in results.items():
            for ix, (ch, ref_) in parts:
                choice[ix], refused[ix] = ch, ref_
                spend = cost_of(ix, ch)
                for r in range(R):
                    committed_spend[r] += _exact_sum(spend[:, r])
            done[m] += take[m]
        if (done >= counts).all():
            break
        reports = [_NO_REPORT if rep is None else rep
                   for rep in _call_each([(s.report, ()) for s in servers])]
        syncs += 1
        epoch += 1
        if every is None:
            break
        allot, prices = _rebalance(reports, counts - done, allot, prices, history)

    shard_value = np.array([values[own[m], choice[own[m]]][choice[own[m]] >= 0].sum() for m in range(M)])
    shard_spent = np.array([[float(_exact_sum(cost_of(own[m], choice[own[m]])[:, r])) for r in range(R)]
                            for m in range(M)])
    total = np.array([float(x) for x in committed_spend])
    value = float(math.fsum(shard_value))
    return DistributedRun(choice=choice, value=value, spent=float(total[0]) if scalar else total,
                          shard_value=shard_value, shard_spent=shard_spent[:, 0] if scalar else shard_spent,
                          refused=int(refused.sum()), reference_value=float(ref.value),
                          reference_spent=ref.spent, regret=float(ref.value) - value, syncs=syncs,
                          restarts=restarts, max_committed=float(max_committed[0]) if scalar else max_committed,
                          seconds=time.perf_counter() - started)


def _decided(fut: ray.ObjectRef[_Decisions], size: int) -> _Decisions:
    """The (choices, refused) of a decide call; a call lost with its server (the process died
    with it in flight) counts as refused requests."""
    try:
        return ray.get(fut)
    except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
        return np.full(size, SKIP, dtype=np.int64), np.ones(size, dtype=bool)


def _call(method: Any, *args: Any, attempts: int = 3) -> Any:
    """ray.get(method.remote(*args)), tried again while the actor is coming back up after a
    restart (the first calls may find it unavailable). Only for calls that are safe to repeat:
    assign (idempotent) and report (a second report hands back nothing). None if it stays down."""
    for _attempt in range(attempts):
        try:
            return ray.get(method.remote(*args))
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            time.sleep(0.1)
    return None


def _await_restart(server: _ServerHandle, timeout: float = 60.0) -> None:
    """Waits until the killed server answers from its restarted process (ray.kill returns
    before the process is gone, and a call sent meanwhile could still reach it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _call(server.incarnation_restarted, attempts=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"kill: the killed server did not come back within {timeout:.0f} s "
                       "(max_restarts in remote_options must be >= 1)")


def _call_each(calls: list[tuple[Any, tuple[Any, ...]]]) -> list[Any]:
    """[ray.get(method.remote(*args))] for (method, args) in calls, sent together (one round
    trip for all servers); a call that finds its actor down is tried again as `_call` does,
    and gives None if it stays down. Only for assign and report (see `_call`)."""
    futures = [method.remote(*args) for method, args in calls]
    out = []
    for (method, args), fut in zip(calls, futures):
        try:
            out.append(ray.get(fut))
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            out.append(_call(method, *args))
    return out


# The report of a server that stays down: it hands back nothing.
_NO_REPORT = {"leftover": None, "spent": None, "prices": None, "decided": 0, "restarted": True}


# How far a server's own spend rate is shrunk towards the average rate when the returned budget
# is split (see simulate_online).
_SHRINK = 0.1


def _rebalance(reports: list[dict[str, Any]], left: np.ndarray, allot: np.ndarray, prices: list[Any],
               history: dict[str, np.ndarray]) -> tuple[np.ndarray, list[Any]]:
    """New allotments (M,R) and prices per server from the servers' reports (see
    `simulate_online`): the budget handed back, split by projected demand; prices averaged.
    history holds each server's reported spend (M,R) and decisions (M,) so far, updated here:
    the spend rate over all epochs, not the last one alone, which over a few decisions is
    mostly noise (and would hand nearly all the budget to whoever bought last)."""
    M, R = allot.shape
    leftover = np.zeros((M, R))
    decided = np.zeros(M)
    for m, rep in enumerate(reports):
        if rep["leftover"] is not None:
            leftover[m] = rep["leftover"]
            decided[m] = rep["decided"]
            history["spent"][m] += rep["spent"]
            history["decided"][m] += rep["decided"]
    seen = history["decided"] > 0
    rate = np.where(seen[:, None], history["spent"] / np.maximum(history["decided"], 1)[:, None], 0.0)
    pool = [_exact_sum(leftover[:, r]) for r in range(R)]
    mean_rate = rate.sum(axis=0) / max(1, seen.sum())
    demand = left[:, None] * ((1 - _SHRINK) * rate + _SHRINK * mean_rate[None, :])
    if not (demand.sum(axis=0) > 0).all():  # nobody spent: by requests left
        demand = np.where(demand.sum(axis=0)[None, :] > 0, demand, left[:, None].astype(np.float64))
    new_allot = _split(pool, demand)
    weighted = [(rep["prices"], rep["decided"]) for rep in reports
                if rep["leftover"] is not None and rep["decided"] > 0 and rep["prices"] is not None]
    if weighted:
        w = np.array([d for _, d in weighted], dtype=np.float64)
        p = np.array([np.atleast_1d(pr) for pr, _ in weighted], dtype=np.float64)
        avg = (p * w[:, None]).sum(axis=0) / w.sum()
        synced = float(avg[0]) if R == 1 and np.ndim(weighted[0][0]) == 0 else avg
        prices = [synced] * M
    return new_allot, prices
