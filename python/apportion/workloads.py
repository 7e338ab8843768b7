"""Seeded instance generators, shared by tests and benchmarks.

Classic multiple-choice knapsack classes, following the generators of the MCKP literature
(Pisinger 1995) with data range R:

- "uncorrelated": costs and values uniform in [1, R].
- "weakly": costs uniform in [1, R], values uniform in [w - 10, w + 10], at least 1.
- "strongly": the cumulated strongly correlated class: per item, K pairs w' in [1, 2R/K],
  p' = w' + 10, sorted, then prefix sums; no option is dominated (the hard class).
- "subset_sum": values equal costs, costs uniform in [1, R].
- "zigzag": costs and values drawn uniformly in [1, R], each sorted ascending, then paired.

Their budget is half of the sum over items of (cheapest cost + cost of the most valuable
option). Integer data are returned as float64 holding integers.

- "routing": tasks routed to K compute tiers: tier costs rise geometrically, the success
  probability of task i on tier k rises with k and falls with the task's difficulty, the value
  is consequence_i * success_ik (consequences long-tailed); the budget pays for about 35% of
  the way from the cheapest to the most expensive allocation.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

#: The classic MCKP classes (with a data range R), then the routing flavour.
CLASSIC = ("uncorrelated", "weakly", "strongly", "subset_sum", "zigzag")
CLASSES = CLASSIC + ("routing",)

__all__ = ["CLASSES", "CLASSIC", "instance", "classic_budget"]


def classic_budget(values: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Half of the sum over items of (cheapest cost + cost of the most valuable option);
    values and costs (..., N, K), result (...)."""
    cheapest = costs.min(axis=-1)
    richest = np.take_along_axis(costs, values.argmax(axis=-1)[..., None], axis=-1)[..., 0]
    budget: np.ndarray = np.floor(0.5 * (cheapest + richest).sum(axis=-1))
    return budget


def _classic(kind: str, rng: np.random.Generator, shape: tuple[Any, ...], R: int) -> Tuple[np.ndarray, np.ndarray]:
    if kind == "uncorrelated":
        w = rng.integers(1, R + 1, shape)
        p = rng.integers(1, R + 1, shape)
    elif kind == "weakly":
        w = rng.integers(1, R + 1, shape)
        p = np.maximum(1, w + rng.integers(-10, 11, shape))
    elif kind == "strongly":
        K = shape[-1]
        wp = np.sort(rng.integers(1, max(2, 2 * R // K) + 1, shape), axis=-1)
        w = np.cumsum(wp, axis=-1)
        p = np.cumsum(wp + 10, axis=-1)
    elif kind == "subset_sum":
        w = rng.integers(1, R + 1, shape)
        p = w.copy()
    elif kind == "zigzag":
        w = np.sort(rng.integers(1, R + 1, shape), axis=-1)
        p = np.sort(rng.integers(1, R + 1, shape), axis=-1)
    else:
        raise ValueError(f"kind: expected one of {CLASSES}, got {kind!r}")
    return p.astype(np.float64), w.astype(np.float64)


def _routing(rng: np.random.Generator, shape: tuple[Any, ...]) -> Tuple[np.ndarray, np.ndarray]:
    *lead, K = shape
    tier_cost = 2.0 ** np.arange(K)  # each tier costs twice the one below
    difficulty = rng.random((*lead, 1))
    consequence = rng.lognormal(mean=0.0, sigma=1.2, size=(*lead, 1))
    skill = np.linspace(-1.0, 2.5, K)  # success rises with the tier
    noise = 0.3 * rng.standard_normal(shape)
    success = 1.0 / (1.0 + np.exp(-(skill + noise - 3.0 * (difficulty - 0.5))))
    success = np.maximum.accumulate(success, axis=-1)  # a bigger tier never does worse
    values = consequence * success
    costs = np.broadcast_to(tier_cost, shape).copy()
    return values, costs


def instance(kind: str, n: int, k: int, *, batch: Optional[int] = None, R: int = 1000,
             seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One seeded instance (or a batch) of a class in CLASSES.

    Returns (values, costs, budget): values and costs (N,K) or (B,N,K) float64, budget a
    0-d array or (B,). The same (kind, n, k, batch, R, seed) always gives the same data.
    """
    def integer(x: Any, name: str, least: int, most: Optional[int] = None) -> int:
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < least or (most is not None and x > most):
            span = f">= {least}" if most is None else f"in [{least}, {most}]"
            raise ValueError(f"{name}: expected an integer {span}, got {x!r:.40}")
        return int(x)

    if kind not in CLASSES:
        raise ValueError(f"kind: expected one of {CLASSES}, got {kind!r:.40}")
    n, seed = integer(n, "n", 1), integer(seed, "seed", 0)
    # (routing's tier k costs 2^k: past 1024 tiers a cost is inf)
    k = integer(k, "k", 1, 1024 if kind == "routing" else None)
    R = integer(R, "R", 1, 2**62)
    if batch is not None:
        batch = integer(batch, "batch", 1)
    rng = np.random.default_rng(seed)
    shape = (n, k) if batch is None else (batch, n, k)
    if kind == "routing":
        values, costs = _routing(rng, shape)
        lo, hi = costs.min(axis=-1).sum(axis=-1), costs.max(axis=-1).sum(axis=-1)
        budget = lo + 0.35 * (hi - lo)
    else:
        values, costs = _classic(kind, rng, shape, R)
        budget = classic_budget(values, costs)
    return values, costs, np.asarray(budget, dtype=np.float64)
