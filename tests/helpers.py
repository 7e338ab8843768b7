"""Shared checks for the tests: feasibility and recomputed totals of a Solution."""

import math

import itertools

import numpy as np
from hypothesis import strategies as st


def as_batch(values, costs, budget, mask=None):
    """Dense float64 (B,N,K) values, costs, mask and (B,) budget from solve-style arguments."""
    v = np.asarray(values, dtype=np.float64)
    batched = v.ndim == 3
    if not batched:
        v = v[None]
    c = np.broadcast_to(np.asarray(costs, dtype=np.float64), v.shape if batched else v.shape[1:])
    c = np.broadcast_to(c, v.shape)
    m = np.ones(v.shape, bool) if mask is None else np.broadcast_to(
        np.asarray(mask, bool), v.shape if batched else v.shape[1:])
    m = np.broadcast_to(m, v.shape)
    b = np.broadcast_to(np.asarray(budget, dtype=np.float64), (v.shape[0],))
    return v, c, m, b


def check_solution(sol, values, costs, budget, mask=None, sense="max", tol=1e-9):
    """Every instance: choice allowed, totals match, within budget unless infeasible,
    bound on the right side of the value."""
    v, c, m, b = as_batch(values, costs, budget, mask)
    choice = np.asarray(sol.choice).reshape(v.shape[0], v.shape[1])
    status = np.atleast_1d(np.asarray(sol.status))
    value = np.atleast_1d(sol.value)
    cost = np.atleast_1d(sol.cost)
    bound = np.atleast_1d(sol.bound)
    rows = np.arange(v.shape[1])
    for i in range(v.shape[0]):
        ch = choice[i]
        assert ((0 <= ch) & (ch < v.shape[2])).all()
        assert m[i, rows, ch].all(), "a masked option was chosen"
        total_cost = math.fsum(c[i, rows, ch])  # exactly rounded, as the solver's totals
        total_value = math.fsum(v[i, rows, ch])
        assert np.isclose(total_cost, cost[i], rtol=1e-9, atol=1e-9)
        assert np.isclose(total_value, value[i], rtol=1e-9, atol=1e-9)
        if status[i] == "infeasible":
            assert total_cost > b[i]
            continue
        assert total_cost <= b[i], f"instance {i}: cost {total_cost} over budget {b[i]}"
        scale = max(1.0, abs(total_value))
        if sense == "max":
            assert bound[i] >= total_value - tol * scale
        else:
            assert bound[i] <= total_value + tol * scale


@st.composite
def small_problems(draw, max_n=10, max_k=5, integer=True):
    """Random small instances with ties, zero costs, shared or per-item costs and masks."""
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(1, max_k))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    hi = draw(st.sampled_from([3, 20, 1000]))  # small ranges make ties likely
    values = rng.integers(-hi, hi + 1, (n, k)).astype(float)
    if draw(st.booleans()):
        costs = rng.integers(0, hi + 1, k).astype(float)  # shared tier costs
        full_costs = np.broadcast_to(costs, (n, k))
    else:
        costs = rng.integers(0, hi + 1, (n, k)).astype(float)
        full_costs = costs
    if not integer:
        values = values + rng.random((n, k))
        costs = costs * rng.random(costs.shape) * 1.7
        full_costs = np.broadcast_to(costs, (n, k))
    mask = None
    if draw(st.booleans()):
        mask = rng.random((n, k)) < 0.7
        mask[np.arange(n), rng.integers(0, k, n)] = True
    allowed_costs = np.where(mask if mask is not None else True, full_costs, np.inf)
    lo, hi_c = allowed_costs.min(axis=1).sum(), np.where(np.isinf(allowed_costs), 0, allowed_costs).max(axis=1).sum()
    frac = draw(st.floats(-0.2, 1.2))
    budget = float(np.floor(lo + frac * (hi_c - lo))) if integer else lo + frac * (hi_c - lo)
    return values, costs, budget, mask


def brute_force(values, costs, budget, mask=None, exact_spend=False):
    """The optimum of one small instance by enumerating all K^N allocations (None when no
    allocation fits)."""
    v = np.asarray(values, dtype=np.float64)
    n, k = v.shape
    w = np.broadcast_to(np.asarray(costs, dtype=np.float64), (n, k))
    allowed = np.ones((n, k), bool) if mask is None else np.asarray(mask, bool)
    options = [np.flatnonzero(allowed[i]) for i in range(n)]
    best = None
    for combo in itertools.product(*options):
        idx = np.arange(n), np.array(combo)
        cost = math.fsum(w[idx])
        if cost > budget or (exact_spend and cost != budget):
            continue
        value = math.fsum(v[idx])
        if best is None or value > best:
            best = value
    return best
