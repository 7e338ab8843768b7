"""`apportion.warmup`: pay the first call's one-time costs before the first real call."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import numpy.typing as npt

from . import _core
from ._problem import check_threads
from .api import solve

# Instance sizes that take each path of the native solvers once: below 256 items every item
# gets its hull; from 256 up the reduced LP runs (cpp/frontier.cpp, kReduceMinItems).
_SMALL_ITEMS = 64
_LARGE_ITEMS = 1024
_OPTIONS = 8
# Instances per pool thread in the warm-up batch. run_batch hands them out in chunks of one at
# this size, so every worker is likely to take some; a worker that takes none grows its
# workspace on its first real call instead.
_BATCH_PER_THREAD = 4


_Arrays = Tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]


def _instance(rng: np.random.Generator, shape: Tuple[int, ...]) -> _Arrays:
    """Uncorrelated values and costs of `shape` (..., N, K) and a budget of half the dearest
    allocation: an instance whose optimum is neither the cheapest nor the dearest choice."""
    values = rng.uniform(0.0, 100.0, size=shape)
    costs = rng.uniform(1.0, 100.0, size=shape)
    budget = 0.5 * costs.max(axis=-1).sum(axis=-1)
    return values, costs, budget


def warmup(threads: Optional[int] = None) -> int:
    """Starts the native thread pool and grows the solvers' per-thread workspaces.

    The first solve in a process pays for creating the pool's worker threads and for the
    first allocation of each thread's scratch memory, on top of the solve itself (see
    docs/architecture.md, "The package surface", for the measured cost). A scheduler that
    answers requests under a deadline can call `warmup()` once at start-up instead, so that its
    first request costs nearly what later ones do. The answers of later solves do not change.

    It solves a few small seeded instances (N = 64 and 1024 items, K = 8 options, single and
    batched, methods "lagrangian" and "exact"): about 2 ms of CPU time. Calling it
    again is harmless. Workspaces grow on demand beyond what these sizes need, so a much
    larger first instance still pays for its own memory.

    Args:
        threads: the `threads` the real calls will pass to `apportion.solve` (None = all
            cores). The batch is spread over that many threads, so each one's workspace is
            grown.

    Returns:
        The number of threads of the native pool, the calling thread included (the most any
        call can use).

    Raises:
        TypeError, ValueError: `threads` is not None or an int in 1..MAX_THREADS.
    """
    check_threads(threads)
    pool_threads = int(_core.num_threads())  # creates the pool on first use
    rng = np.random.default_rng(0)
    batch = _BATCH_PER_THREAD * max(1, min(threads or pool_threads, pool_threads))
    for shape in ((_SMALL_ITEMS, _OPTIONS), (_LARGE_ITEMS, _OPTIONS),
                  (batch, _SMALL_ITEMS, _OPTIONS)):
        values, costs, budget = _instance(rng, shape)
        for method in ("lagrangian", "exact"):
            solve(values, costs, budget, method=method, threads=threads)
    return pool_threads
