"""The solver entry point, `apportion.solve`, and method dispatch."""

from __future__ import annotations

import time
from typing import Any, Optional

from . import _core
from ._problem import Solution, make_problem, make_solution

METHODS = ("auto", "lagrangian")


def _threads(threads: Optional[int]) -> int:
    if threads is None:
        return 0
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads: expected a positive int or None (all cores), got {threads!r}")
    return threads


def solve(values: Any, costs: Any, budget: Any, *, method: str = "auto", mask: Any = None,
          sense: str = "max", threads: Optional[int] = None) -> Solution:
    """Choose one option per item to maximise total value within a budget.

    The problem, for each instance of a batch: choose x_i in 0..K-1 for every item i to
    maximise sum_i values[i, x_i] subject to sum_i costs[i, x_i] <= budget, using only options
    where mask is True (a multiple-choice knapsack).

    Args:
        values: (N,K) or a batch (B,N,K); real, finite where allowed. For sense="min", losses.
        costs: (K,) shared tier costs, (N,K), or (B,N,K); finite and >= 0; broadcast against
            values. Costs may be real-valued.
        budget: a scalar, or (B,) for a batch; +inf means no limit.
        method: "lagrangian" (LP by break slope plus repair: certified gap, microseconds) or
            "auto" (currently "lagrangian").
        mask: bool, broadcastable to values; True = option allowed. Every item needs one.
        sense: "max" to maximise values, "min" to minimise them as losses.
        threads: native threads to use (None = all cores). Instances of a batch run in
            parallel; a single large instance uses threads for its per-item work.

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
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    nthreads = _threads(threads)
    problem = make_problem(values, costs, budget, mask, sense)
    raw = _core.lagrangian(problem.values, problem.costs, problem.budget, problem.mask,
                           problem.value_sign, nthreads)
    return make_solution(problem, raw, "lagrangian", started)
