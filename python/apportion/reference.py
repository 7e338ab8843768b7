"""Reference solvers for validation: OR-Tools CP-SAT (exact), HiGHS through
scipy.optimize.milp (exact), and cvxpy (LP relaxation).

They take the arguments of `apportion.solve` and return the same `Solution` type, so a test
can swap one for another. They solve instances one at a time in Python and are meant for
checking answers and for benchmarks, not for production use. Each needs its optional
dependency (`pip install apportion[reference]`).
"""

from __future__ import annotations

import importlib
import math
import time
from fractions import Fraction
from types import ModuleType
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import numpy.typing as npt

from ._problem import Problem, Solution, make_problem

__all__ = ["cpsat", "milp", "lp", "cpsat_scales"]

# Integer resolution CP-SAT works at when data are not integral: about 2^31 over the range.
_CPSAT_RESOLUTION = 2.0**31

_F64 = npt.NDArray[np.float64]
# solve_one(values (N,K), costs (N,K,R), allowed (N,K), budgets (R,)) ->
#     (choice (N,), bound, status, shadow prices (R,), info)
_SolveOne = Callable[[_F64, _F64, npt.NDArray[np.bool_], _F64],
                     Tuple[npt.NDArray[np.int64], float, str, _F64, Dict[str, Any]]]


def _require(module: str, solver: str, package: str) -> ModuleType:
    """Imports an optional dependency, or an ImportError that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"apportion.reference.{solver} needs {package}: pip install "
                          f"\"apportion[reference]\" (or pip install {package})") from exc


def _inputs(values: Any, costs: Any, budget: Any, mask: Any, sense: str,
            resources: bool) -> Tuple[Problem, _F64, _F64, bool]:
    """(problem, costs (Bc,Nc,K,R) float64, budgets (B,R), resource_axis): the one-resource
    input of `apportion.solve`, or, where `resources`, costs with a trailing resource axis and
    budgets (R,) or (B,R) as method "mirror" takes them."""
    if resources:
        from .online import _mirror_inputs

        problem, c, bud, axis = _mirror_inputs(values, costs, budget, mask, sense)
        return problem, np.asarray(c, dtype=np.float64), bud, axis
    problem = make_problem(values, costs, budget, mask, sense)
    return problem, problem.costs.astype(np.float64)[..., None], problem.budget[:, None], False


def _totals(x: _F64) -> _F64:
    """Correctly rounded sums over the first axis (math.fsum), per trailing column: totals as
    the native solvers count them (feasible where the rounded total is at most the budget)."""
    cols = x.reshape(x.shape[0], -1)
    return np.array([math.fsum(cols[:, r]) for r in range(cols.shape[1])]).reshape(x.shape[1:])


def _cheapest_total(w: _F64, allowed: npt.NDArray[np.bool_]) -> _F64:
    """The cost of the cheapest allocation per resource (R,), correctly rounded, from costs
    (N,K,R): an instance is infeasible where it exceeds a budget."""
    return _totals(np.where(allowed[:, :, None], w, np.inf).min(axis=1))


def _fits(w: _F64, choice: npt.NDArray[np.int64], C: _F64) -> bool:
    """Whether an allocation's costs (rounded totals) fit every budget, from costs (N,K,R)."""
    return bool((_totals(w[np.arange(w.shape[0]), choice]) <= C).all())


def _solve_each(problem: Problem, costs: _F64, budgets: _F64, resource_axis: bool, method: str,
                started: float, solve_one: _SolveOne) -> Solution:
    """Runs solve_one on each instance (see _SolveOne) and assembles a Solution; values,
    costs and bounds are recomputed from the original data."""
    B, N, K = problem.values.shape
    R = budgets.shape[1]
    signed = problem.signed_values()
    allowed_all = problem.allowed()
    dense = np.broadcast_to(costs, (B, N, K, R))
    choice = np.zeros((B, N), dtype=np.int64)
    value, bound = np.zeros(B), np.zeros(B)
    cost, min_budget, shadow = np.zeros((B, R)), np.zeros((B, R)), np.full((B, R), np.nan)
    status = np.empty(B, dtype="<U10")
    infos = []
    rows = np.arange(N)
    for b in range(B):
        v, w, allowed, C = signed[b], dense[b], allowed_all[b], budgets[b]
        min_budget[b] = _cheapest_total(w, allowed)
        ch, bd, st, prices, info = solve_one(v, w, allowed, C)
        choice[b] = ch
        value[b] = math.fsum(v[rows, ch])
        cost[b] = _totals(w[rows, ch])
        bound[b], status[b], shadow[b] = bd, st, prices
        infos.append(info)
    sign = problem.value_sign
    value, bound = sign * value, sign * bound
    gap = np.abs(bound - value)
    if not resource_axis:
        cost, min_budget, shadow = cost[:, 0], min_budget[:, 0], shadow[:, 0]
    if not problem.batched:
        one = (lambda x: x[0]) if resource_axis else (lambda x: float(x[0]))
        return Solution(choice[0], float(value[0]), one(cost), float(bound[0]), float(gap[0]),
                        str(status[0]), one(shadow), one(min_budget), method,
                        time.perf_counter() - started, problem.sense, infos[0])
    return Solution(choice, value, cost, bound, gap, status, shadow, min_budget, method,
                    time.perf_counter() - started, problem.sense, {"instances": infos})


def _cheapest_choice(values: _F64, costs: _F64, allowed: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """Each item's cheapest allowed option (by its total normalised cost over the resources
    when there are several), the most valuable among ties."""
    masked_cost = np.where(allowed, costs if costs.ndim == 2 else costs.sum(axis=2), np.inf)
    best = masked_cost.min(axis=1, keepdims=True)
    picked: npt.NDArray[np.int64] = np.argmax(np.where(masked_cost == best, values, -np.inf), axis=1)
    return picked


def _lp_prices(v: _F64, w: _F64, allowed: npt.NDArray[np.bool_], C: _F64) -> _F64:
    """The LP relaxation's dual prices of the budget constraints (R,), by HiGHS
    (scipy.optimize.linprog): value gained per extra unit of each budget at the LP optimum
    (0 for an infinite budget; NaN where the LP does not solve)."""
    optimize = _require("scipy.optimize", "milp", "scipy")
    sparse = _require("scipy.sparse", "milp", "scipy")
    n = v.shape[0]
    ii, jj = np.nonzero(allowed)
    finite = np.isfinite(C)
    prices = np.zeros(C.shape[0])
    if not finite.any():
        return prices
    assign = sparse.csr_matrix((np.ones(ii.size), (ii, np.arange(ii.size))), shape=(n, ii.size))
    res = optimize.linprog(-v[ii, jj], A_ub=w[ii, jj][:, finite].T, b_ub=C[finite], A_eq=assign,
                  b_eq=np.ones(n), bounds=(0, 1), method="highs")
    if res.status != 0:
        return np.full(C.shape[0], np.nan)
    prices[finite] = -np.asarray(res.ineqlin.marginals)  # the minimisation's duals are <= 0
    return prices


def cpsat_scales(values: np.ndarray, costs: np.ndarray, budget: float) -> tuple[float, float]:
    """The integer scalings CP-SAT uses: (value_scale, cost_scale).

    A scale is 1 when the data are already integers (then CP-SAT is exact for them);
    otherwise it maps the largest magnitude to about 2^31 / N, so that sums stay in range, and
    the data are rounded to the nearest integer (costs are rounded up and the budget down, so
    every allocation CP-SAT accepts is feasible for the real costs: see `_cpsat_costs`)."""
    n = values.shape[0]

    def scale(x: np.ndarray) -> float:
        x = x[np.isfinite(x)]
        if x.size == 0 or (np.all(x == np.round(x)) and np.abs(x).max() * n < 2**53):
            return 1.0
        return float(_CPSAT_RESOLUTION / (max(np.abs(x).max(), 1e-300) * n))

    budget_part = np.array([budget]) if np.isfinite(budget) else np.array([])
    return scale(values), scale(np.concatenate([costs.ravel(), budget_part]))


def _cpsat_costs(w: _F64, C: float, cs: float) -> Tuple[npt.NDArray[np.int64], Optional[int]]:
    """Costs rounded up and the budget down to integers at scale cs, exactly: where w * cs
    rounds onto an integer in floating point, the exact product (Fraction) decides. So any
    allocation whose integer costs fit the integer budget has an exact total at most C. (A
    margin of 1e-9 rounded a cost of 1 + 1e-12 down to 1, and a budget of 2.9999999999 up
    to 3.) The budget is None where infinite."""
    product = w * cs
    iw = np.ceil(product)
    if cs != 1.0:  # (at scale 1 the products are exact)
        for i, j in zip(*np.nonzero(iw == product)):  # the float product is whole: is the exact one?
            if Fraction(float(w[i, j])) * Fraction(cs) > int(iw[i, j]):
                iw[i, j] += 1
    if not math.isfinite(C):
        return iw.astype(np.int64), None
    ib = math.floor(C * cs)
    if Fraction(C) * Fraction(cs) < ib:  # C * cs rounded up onto the integer
        ib -= 1
    return iw.astype(np.int64), ib


def cpsat(values: Any, costs: Any, budget: Any, *, mask: Any = None, sense: str = "max",
          time_limit: float = 60.0, workers: int = 1) -> Solution:
    """Exact solve with OR-Tools CP-SAT (one resource).

    Values and costs are scaled to integers as `cpsat_scales` describes; the scales are
    reported in `info` ("value_scale", "cost_scale"). With integer data the answer is exact;
    otherwise it is exact for the scaled problem. status is "optimal" when CP-SAT proved
    optimality within `time_limit` seconds, else "feasible" (bound from CP-SAT's best bound).
    `shadow_price` is NaN: CP-SAT has no LP dual (`milp` and `lp` report it). `info` also holds
    CP-SAT's own "wall_time" and "user_time" (seconds) of the search.
    """
    cp_model = _require("ortools.sat.python.cp_model", "cpsat", "ortools")

    started = time.perf_counter()
    problem, costs4, budgets, _ = _inputs(values, costs, budget, mask, sense, resources=False)
    no_price = np.full(1, np.nan)

    def solve_one(v: _F64, w3: _F64, allowed: npt.NDArray[np.bool_], C1: _F64) -> Any:
        w, C = w3[:, :, 0], float(C1[0])
        n, k = v.shape
        vs, cs = cpsat_scales(np.where(allowed, v, 0.0), np.where(allowed, w, 0.0), C)
        cheapest = _cheapest_choice(v, w, allowed)
        info = {"value_scale": vs, "cost_scale": cs}
        if _cheapest_total(w3, allowed)[0] > C:
            return cheapest, np.nan, "infeasible", no_price, info
        iv = np.round(v * vs).astype(np.int64)
        iw, ib = _cpsat_costs(np.where(allowed, w, 0.0), C, cs)
        model = cp_model.CpModel()
        x = [[model.NewBoolVar(f"x{i}_{j}") if allowed[i, j] else None for j in range(k)]
             for i in range(n)]
        for i in range(n):
            model.AddExactlyOne([xij for xij in x[i] if xij is not None])
        terms = [(xij, i, j) for i, row in enumerate(x) for j, xij in enumerate(row)
                 if xij is not None]
        if ib is not None:
            model.Add(sum(int(iw[i, j]) * xij for xij, i, j in terms) <= ib)
        model.Maximize(sum(int(iv[i, j]) * xij for xij, i, j in terms))
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = float(time_limit)
        solver.parameters.num_workers = int(workers)
        code = solver.Solve(model)
        # CP-SAT's own clocks, for benchmarks that show them beside the caller's wall time.
        info.update(wall_time=solver.WallTime(), user_time=solver.UserTime())
        if code == cp_model.INFEASIBLE:
            # The cheapest allocation fits its rounded total, but no allocation fits the scaled
            # integers (an exact total just over the budget, or costs rounded up past it).
            return cheapest, np.inf, "feasible", no_price, info
        if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            # Out of time before any solution: the cheapest allocation fits (checked above).
            return cheapest, np.inf, "feasible", no_price, info
        ch = np.array([next(j for j in range(k) if x[i][j] is not None and solver.Value(x[i][j]))
                       for i in range(n)], dtype=np.int64)
        bound = solver.BestObjectiveBound() / vs
        return ch, bound, "optimal" if code == cp_model.OPTIMAL else "feasible", no_price, info

    return _solve_each(problem, costs4, budgets, False, "cpsat", started, solve_one)


def _picked(x: _F64, ii: npt.NDArray[np.intp], jj: npt.NDArray[np.intp], n: int) -> npt.NDArray[np.int64]:
    """The choice (N,) of a MILP solution over the allowed entries (ii, jj)."""
    ch = np.zeros(n, dtype=np.int64)
    picked = x > 0.5
    ch[ii[picked]] = jj[picked]
    return ch


def milp(values: Any, costs: Any, budget: Any, *, mask: Any = None, sense: str = "max",
         time_limit: float = 60.0, mip_rel_gap: float = 0.0) -> Solution:
    """Exact solve with HiGHS through scipy.optimize.milp, on the real-valued data.

    Takes the input of `apportion.solve`, and also R resources as method "mirror" does:
    costs (K,R), (N,K,R) or (B,N,K,R) with budget (R,) (or (B,R) for a batch), so that mirror
    answers can be checked against an exact solver; `cost`, `shadow_price` and `min_budget`
    then have a trailing R axis. `shadow_price` is the dual price of each budget in the LP
    relaxation (scipy.optimize.linprog with HiGHS, one more solve per instance): value gained
    (loss saved, for sense "min") per extra unit of budget at the LP optimum, as the native
    solvers report it. `mip_rel_gap` defaults to 0: scipy's own default (1e-4) reports answers
    up to 0.01% short of the optimum as optimal. Feasibility is decided as the native solvers
    decide it, on the correctly rounded total; an answer that HiGHS's feasibility tolerance
    (1e-7) lets past a budget is solved again under budgets lowered by a growing margin, and
    reported "feasible" with the first solve's bound."""
    optimize = _require("scipy.optimize", "milp", "scipy")
    sparse = _require("scipy.sparse", "milp", "scipy")

    started = time.perf_counter()
    problem, costs4, budgets, resource_axis = _inputs(values, costs, budget, mask, sense,
                                                      resources=True)

    def solve_one(v: _F64, w: _F64, allowed: npt.NDArray[np.bool_], C: _F64) -> Any:
        n, k = v.shape
        R = C.shape[0]
        cheapest = _cheapest_choice(v, w, allowed)
        if (_cheapest_total(w, allowed) > C).any():
            return cheapest, np.nan, "infeasible", np.full(R, np.nan), {}
        ii, jj = np.nonzero(allowed)
        m = ii.size
        assign = sparse.csr_matrix((np.ones(m), (ii, np.arange(m))), shape=(n, m))
        constraints = [optimize.LinearConstraint(assign, 1, 1)]
        finite = np.isfinite(C)

        def run(limit: _F64) -> Any:
            rows = list(constraints)
            if finite.any():
                rows.append(optimize.LinearConstraint(w[ii, jj][:, finite].T, -np.inf, limit[finite]))
            return optimize.milp(-v[ii, jj], constraints=rows, integrality=np.ones(m),
                                 bounds=optimize.Bounds(0, 1),
                                 options={"time_limit": float(time_limit), "mip_rel_gap": mip_rel_gap})

        res = run(C)
        first = res
        # HiGHS accepts rows up to its feasibility tolerance (1e-7) past a budget: costs of
        # 1 + 1e-8 in a budget of 1 came back "optimal". Such an answer is solved again under
        # budgets lowered by a growing margin, and is then "feasible" (allocations between the
        # lowered budget and the real one were left out) with the first solve's bound, which
        # holds: the first solve's feasible set holds every allocation that fits.
        margin = 1e-7
        while res.x is not None and not _fits(w, _picked(res.x, ii, jj, n), C) and margin < 1e-2:
            res = run(C - margin * np.maximum(1.0, np.abs(C)))
            margin *= 10.0
        def fallback(bound: float, message: str) -> Any:
            """No answer of HiGHS that fits: the cheapest allocation where it fits every budget
            (always with one resource: checked above), else "unknown" (with several resources
            the cheapest by total cost may not fit, and none may)."""
            if _fits(w, cheapest, C):
                return cheapest, bound, "feasible", _lp_prices(v, w, allowed, C), {"message": message}
            return cheapest, np.nan, "unknown", np.full(R, np.nan), {"message": message}

        if res.x is not None and not _fits(w, _picked(res.x, ii, jj, n), C):
            return fallback(np.inf, "no answer of HiGHS fits the budget")
        if res.x is None and first.x is not None:  # the lowered budgets shut every allocation out
            return fallback(-first.fun, res.message)
        if res.x is None:
            if res.status == 2:  # HiGHS proved that no allocation fits every budget
                return cheapest, np.nan, "infeasible", np.full(R, np.nan), {"message": res.message}
            return fallback(np.inf, res.message)  # out of time before any solution
        ch = _picked(res.x, ii, jj, n)
        bound = -getattr(first, "mip_dual_bound", -np.nan)
        if not np.isfinite(bound):
            bound = -first.fun
        return (ch, bound, "optimal" if res.status == 0 and res is first else "feasible",
                _lp_prices(v, w, allowed, C), {"message": res.message})

    return _solve_each(problem, costs4, budgets, resource_axis, "milp", started, solve_one)


def lp(values: Any, costs: Any, budget: Any, *, mask: Any = None, sense: str = "max",
       solver: Optional[str] = None) -> Solution:
    """LP relaxation with cvxpy: x in [0,1]^(N,K), one unit per item, expected cost <= budget.

    Takes R resources as `milp` does. `value` and `bound` are the LP optimum (an upper bound
    on the integer optimum for "max"); `shadow_price` the dual price of each budget (value
    gained per extra unit of it; 0 for an infinite budget); `choice` is each item's largest
    fractional entry (not necessarily within the budget); `info["x"]` holds the fractional
    solution (N,K), `info["solver"]` the backend cvxpy chose and `info["solve_time"]` the
    seconds that backend reports (None if it reports none).
    """
    cp = _require("cvxpy", "lp", "cvxpy")

    started = time.perf_counter()
    problem, costs4, budgets, resource_axis = _inputs(values, costs, budget, mask, sense,
                                                      resources=True)

    def solve_one(v: _F64, w: _F64, allowed: npt.NDArray[np.bool_], C: _F64) -> Any:
        n, k = v.shape
        R = C.shape[0]
        cheapest = _cheapest_choice(v, w, allowed)
        if (_cheapest_total(w, allowed) > C).any():
            return cheapest, np.nan, "infeasible", np.full(R, np.nan), {}
        x = cp.Variable((n, k), nonneg=True)
        cons = [cp.sum(x, axis=1) == 1, x <= allowed.astype(float)]
        budget_cons = {r: cp.sum(cp.multiply(w[:, :, r], x)) <= C[r]
                       for r in range(R) if np.isfinite(C[r])}
        prob = cp.Problem(cp.Maximize(cp.sum(cp.multiply(np.where(allowed, v, 0.0), x))),
                          cons + list(budget_cons.values()))
        prob.solve(solver=solver)
        if prob.status in ("infeasible", "infeasible_inaccurate"):
            return cheapest, np.nan, "infeasible", np.full(R, np.nan), {}
        prices = np.zeros(R)
        for r, con in budget_cons.items():
            prices[r] = float(con.dual_value)
        xv = np.asarray(x.value)
        stats = prob.solver_stats  # the backend's own time, without cvxpy's compilation
        return np.argmax(xv, axis=1), float(prob.value), "optimal", prices, {
            "x": xv, "solver": stats.solver_name, "solve_time": stats.solve_time}

    sol = _solve_each(problem, costs4, budgets, resource_axis, "lp", started, solve_one)
    sol.value = sol.bound  # the LP optimum, not the value of the rounded choice
    sol.gap = sol.gap * 0.0
    return sol
