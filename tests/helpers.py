"""Shared checks for the tests: feasibility and recomputed totals of a Solution."""

import math

import numpy as np


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
