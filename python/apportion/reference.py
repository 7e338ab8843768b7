"""Reference solvers for validation: OR-Tools CP-SAT (exact), HiGHS through
scipy.optimize.milp (exact), and cvxpy (LP relaxation).

They take the arguments of `apportion.solve` and return the same `Solution` type, so a test
can swap one for another. They solve instances one at a time in Python and are meant for
checking answers and for benchmarks, not for production use. Each needs its optional
dependency (`pip install apportion[reference]`).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import numpy as np

from ._problem import Problem, Solution, make_problem

__all__ = ["cpsat", "milp", "lp", "cpsat_scales"]

# Integer resolution CP-SAT works at when data are not integral: about 2^31 over the range.
_CPSAT_RESOLUTION = 2.0**31


def _instance_arrays(problem: Problem, b: int):
    """Dense float64 (values in the maximisation sense, costs, allowed, budget) of instance b."""
    values = problem.signed_values()[b]
    costs = problem.dense_costs()[b]
    allowed = problem.allowed()[b]
    return values, costs, allowed, float(problem.budget[b])


def _solve_each(problem: Problem, method: str, started: float,
                solve_one: Callable[[np.ndarray, np.ndarray, np.ndarray, float], tuple]) -> Solution:
    """Runs solve_one(values, costs, allowed, budget) -> (choice, bound, status, info) on each
    instance and assembles a Solution; values and bounds are recomputed from the original data."""
    B, N, _ = problem.values.shape
    choice = np.zeros((B, N), dtype=np.int64)
    value, cost, bound = np.zeros(B), np.zeros(B), np.zeros(B)
    min_budget = np.zeros(B)
    status = np.empty(B, dtype="<U10")
    infos = []
    for b in range(B):
        v, w, allowed, budget = _instance_arrays(problem, b)
        cheapest = np.where(allowed, w, np.inf).min(axis=1)
        min_budget[b] = cheapest.sum()
        ch, bd, st, info = solve_one(v, w, allowed, budget)
        rows = np.arange(N)
        choice[b] = ch
        value[b] = v[rows, ch].sum()
        cost[b] = w[rows, ch].sum()
        bound[b] = bd
        status[b] = st
        infos.append(info)
    sign = problem.value_sign
    value, bound = sign * value, sign * bound
    gap = np.abs(bound - value)
    shadow = np.full(B, np.nan)
    info = {"instances": infos}
    if not problem.batched:
        return Solution(choice[0], float(value[0]), float(cost[0]), float(bound[0]), float(gap[0]),
                        str(status[0]), float(shadow[0]), float(min_budget[0]), method,
                        time.perf_counter() - started, problem.sense, infos[0])
    return Solution(choice, value, cost, bound, gap, status, shadow, min_budget, method,
                    time.perf_counter() - started, problem.sense, info)


def _cheapest_choice(values: np.ndarray, costs: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    masked_cost = np.where(allowed, costs, np.inf)
    best = masked_cost.min(axis=1, keepdims=True)
    return np.argmax(np.where(masked_cost == best, values, -np.inf), axis=1)


def cpsat_scales(values: np.ndarray, costs: np.ndarray, budget: float) -> tuple:
    """The integer scalings CP-SAT uses: (value_scale, cost_scale).

    A scale is 1 when the data are already integers (then CP-SAT is exact for them);
    otherwise it maps the largest magnitude to about 2^31 / N, so that sums stay in range, and
    the data are rounded to the nearest integer (costs are rounded up and the budget down, so
    every allocation CP-SAT accepts is feasible for the real costs)."""
    n = values.shape[0]

    def scale(x: np.ndarray) -> float:
        x = x[np.isfinite(x)]
        if x.size == 0 or (np.all(x == np.round(x)) and np.abs(x).max() * n < 2**53):
            return 1.0
        return _CPSAT_RESOLUTION / (max(np.abs(x).max(), 1e-300) * n)

    budget_part = np.array([budget]) if np.isfinite(budget) else np.array([])
    return scale(values), scale(np.concatenate([costs.ravel(), budget_part]))


def cpsat(values: Any, costs: Any, budget: Any, *, mask: Any = None, sense: str = "max",
          time_limit: float = 60.0, workers: int = 1) -> Solution:
    """Exact solve with OR-Tools CP-SAT.

    Values and costs are scaled to integers as `cpsat_scales` describes; the scales are
    reported in `info` ("value_scale", "cost_scale"). With integer data the answer is exact;
    otherwise it is exact for the scaled problem. status is "optimal" when CP-SAT proved
    optimality within `time_limit` seconds, else "feasible" (bound from CP-SAT's best bound).
    `info` also holds CP-SAT's own "wall_time" and "user_time" (seconds) of the search.
    """
    from ortools.sat.python import cp_model

    started = time.perf_counter()
    problem = make_problem(values, costs, budget, mask, sense)

    def solve_one(v, w, allowed, C):
        n, k = v.shape
        vs, cs = cpsat_scales(np.where(allowed, v, 0.0), np.where(allowed, w, 0.0), C)
        cheapest = _cheapest_choice(v, w, allowed)
        info = {"value_scale": vs, "cost_scale": cs}
        if np.where(allowed, w, np.inf).min(axis=1).sum() > C:
            return cheapest, np.nan, "infeasible", info
        iv = np.round(v * vs).astype(np.int64)
        iw = np.ceil(w * cs - 1e-9).astype(np.int64) if cs != 1.0 else w.astype(np.int64)
        model = cp_model.CpModel()
        x = [[model.NewBoolVar(f"x{i}_{j}") if allowed[i, j] else None for j in range(k)]
             for i in range(n)]
        for i in range(n):
            model.AddExactlyOne([xij for xij in x[i] if xij is not None])
        terms = [(x[i][j], i, j) for i in range(n) for j in range(k) if x[i][j] is not None]
        if np.isfinite(C):
            model.Add(sum(int(iw[i, j]) * xij for xij, i, j in terms) <= int(np.floor(C * cs + 1e-9)))
        model.Maximize(sum(int(iv[i, j]) * xij for xij, i, j in terms))
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = float(time_limit)
        solver.parameters.num_workers = int(workers)
        code = solver.Solve(model)
        # CP-SAT's own clocks, for benchmarks that show them beside the caller's wall time.
        info.update(wall_time=solver.WallTime(), user_time=solver.UserTime())
        if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            # Out of time before any solution: the cheapest allocation fits (checked above).
            return cheapest, np.inf, "feasible", info
        ch = np.array([next(j for j in range(k) if x[i][j] is not None and solver.Value(x[i][j]))
                       for i in range(n)], dtype=np.int64)
        bound = solver.BestObjectiveBound() / vs
        return ch, bound, "optimal" if code == cp_model.OPTIMAL else "feasible", info

    return _solve_each(problem, "cpsat", started, solve_one)


def milp(values: Any, costs: Any, budget: Any, *, mask: Any = None, sense: str = "max",
         time_limit: float = 60.0, mip_rel_gap: float = 0.0) -> Solution:
    """Exact solve with HiGHS through scipy.optimize.milp, on the real-valued data.

    `mip_rel_gap` defaults to 0: scipy's own default (1e-4) reports answers up to 0.01% short of
    the optimum as optimal."""
    from scipy.optimize import Bounds, LinearConstraint
    from scipy.optimize import milp as scipy_milp
    from scipy.sparse import csr_matrix

    started = time.perf_counter()
    problem = make_problem(values, costs, budget, mask, sense)

    def solve_one(v, w, allowed, C):
        n, k = v.shape
        cheapest = _cheapest_choice(v, w, allowed)
        if np.where(allowed, w, np.inf).min(axis=1).sum() > C:
            return cheapest, np.nan, "infeasible", {}
        ii, jj = np.nonzero(allowed)
        m = ii.size
        assign = csr_matrix((np.ones(m), (ii, np.arange(m))), shape=(n, m))
        constraints = [LinearConstraint(assign, 1, 1)]
        if np.isfinite(C):
            constraints.append(LinearConstraint(w[ii, jj][None, :], -np.inf, C))
        res = scipy_milp(-v[ii, jj], constraints=constraints, integrality=np.ones(m),
                         bounds=Bounds(0, 1),
                         options={"time_limit": float(time_limit), "mip_rel_gap": mip_rel_gap})
        if res.x is None:
            # Out of time before any solution: the cheapest allocation fits (checked above).
            return cheapest, np.inf, "feasible", {"message": res.message}
        ch = np.zeros(n, dtype=np.int64)
        picked = res.x > 0.5
        ch[ii[picked]] = jj[picked]
        bound = -getattr(res, "mip_dual_bound", -np.nan)
        if not np.isfinite(bound):
            bound = -res.fun
        return ch, bound, "optimal" if res.status == 0 else "feasible", {"message": res.message}

    return _solve_each(problem, "milp", started, solve_one)


def lp(values: Any, costs: Any, budget: Any, *, mask: Any = None, sense: str = "max",
       solver: Optional[str] = None) -> Solution:
    """LP relaxation with cvxpy: x in [0,1]^(N,K), one unit per item, expected cost <= budget.

    `value` and `bound` are the LP optimum (an upper bound on the integer optimum for "max");
    `choice` is each item's largest fractional entry (not necessarily within the budget);
    `info["x"]` holds the fractional solution (N,K), `info["solver"]` the backend cvxpy chose
    and `info["solve_time"]` the seconds that backend reports (None if it reports none).
    """
    import cvxpy as cp

    started = time.perf_counter()
    problem = make_problem(values, costs, budget, mask, sense)

    def solve_one(v, w, allowed, C):
        n, k = v.shape
        cheapest = _cheapest_choice(v, w, allowed)
        if np.where(allowed, w, np.inf).min(axis=1).sum() > C:
            return cheapest, np.nan, "infeasible", {}
        x = cp.Variable((n, k), nonneg=True)
        cons = [cp.sum(x, axis=1) == 1, x <= allowed.astype(float)]
        if np.isfinite(C):
            cons.append(cp.sum(cp.multiply(w, x)) <= C)
        prob = cp.Problem(cp.Maximize(cp.sum(cp.multiply(np.where(allowed, v, 0.0), x))), cons)
        prob.solve(solver=solver)
        xv = np.asarray(x.value)
        stats = prob.solver_stats  # the backend's own time, without cvxpy's compilation
        return np.argmax(xv, axis=1), float(prob.value), "optimal", {
            "x": xv, "solver": stats.solver_name, "solve_time": stats.solve_time}

    sol = _solve_each(problem, "lp", started, solve_one)
    sol.value = sol.bound  # the LP optimum, not the value of the rounded choice
    sol.gap = sol.gap * 0.0
    return sol
