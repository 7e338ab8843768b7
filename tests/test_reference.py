"""The reference solvers themselves: LP duals as shadow prices, several resources in milp and
lp (to check method "mirror" against an exact solver), and install hints."""

import importlib
import importlib.util
import itertools

import numpy as np
import pytest

import apportion
from apportion import reference

pytest.importorskip("scipy")


def lagrangian(values, costs, budget, prices):
    """L(mu) = sum_i max_k (v_ik - mu . w_ik) + mu . C for costs (N,K,R), budget (R,)."""
    return (values - (costs * prices).sum(axis=-1)).max(axis=1).sum() + prices @ budget


def brute(values, costs, budget):
    """The optimum over every allocation (costs (N,K,R), budget (R,)); None if none fits."""
    n, k = values.shape
    best = None
    for choice in itertools.product(range(k), repeat=n):
        rows = np.arange(n)
        if (costs[rows, choice].sum(axis=0) <= budget).all():
            v = values[rows, choice].sum()
            best = v if best is None else max(best, v)
    return best


@pytest.mark.parametrize("R", [1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_shadow_prices_are_optimal_lp_duals(R, seed):
    # A price vector is an optimal dual exactly when L(mu) equals the LP optimum: the LP
    # optimum is the least L(mu) over mu >= 0 (several prices may reach it).
    pytest.importorskip("cvxpy")
    rng = np.random.default_rng(seed)
    values, costs = rng.random((25, 4)), rng.random((25, 4, R))
    low, high = costs.min(axis=1).sum(axis=0), costs.max(axis=1).sum(axis=0)
    budget = low + 0.35 * (high - low)
    lp = reference.lp(values, costs, budget)
    ex = reference.milp(values, costs, budget)
    assert lp.status == ex.status == "optimal"
    for prices in (lp.shadow_price, ex.shadow_price):
        prices = np.atleast_1d(prices)
        assert prices.shape == (R,) and (prices >= -1e-9).all()
        assert lagrangian(values, costs, budget, np.maximum(prices, 0)) == pytest.approx(
            lp.value, rel=1e-7)  # cvxpy's interior point solvers: about 1e-9
    if R == 1:  # the native solvers' lambda* is an optimal dual too (HiGHS's is a vertex's)
        ours = apportion.solve(values, costs[..., 0], budget[0], method="lagrangian")
        assert lagrangian(values, costs, budget, np.array([ours.shadow_price])) == pytest.approx(
            lagrangian(values, costs, budget, np.maximum(ex.shadow_price, 0)), rel=1e-12)


def test_shadow_price_for_losses_and_unlimited_budgets():
    rng = np.random.default_rng(7)
    values, costs = rng.random((20, 3)), np.array([0.0, 1.0, 3.0])
    ex = reference.milp(values, costs, 12.0, sense="min")
    ours = apportion.solve(values, costs, 12.0, sense="min", method="lagrangian")
    assert ex.shadow_price >= 0  # loss saved per extra unit
    signed = -values  # the maximisation the duals belong to
    lp_value = lagrangian(signed, costs[None, :, None].repeat(20, 0), np.array([12.0]),
                          np.array([ex.shadow_price]))
    assert lp_value == pytest.approx(lagrangian(signed, costs[None, :, None].repeat(20, 0),
                                                np.array([12.0]), np.array([ours.shadow_price])),
                                     rel=1e-9)
    assert reference.milp(values, costs, np.inf).shadow_price == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_milp_with_several_resources_is_exact_and_bounds_mirror(seed):
    rng = np.random.default_rng(seed)
    n, k, R = 5, 3, 2
    values, costs = rng.random((n, k)), rng.random((k, R)) if seed % 2 else rng.random((n, k, R))
    dense = np.broadcast_to(costs, (n, k, R))
    budget = dense.min(axis=1).sum(axis=0) + rng.uniform(0.2, 1.0, R)
    ex = reference.milp(values, costs, budget)
    opt = brute(values, dense, budget)
    if opt is None:  # the cheapest use of each resource fits, but no allocation fits both
        assert ex.status == "infeasible" and np.isnan(ex.bound)
        return
    assert ex.status == "optimal" and ex.value == pytest.approx(opt, abs=1e-9)
    assert ex.cost.shape == (R,) and (ex.cost <= budget + 1e-12).all()
    mirror = apportion.solve(values, costs, budget, method="mirror")
    if mirror.status in ("optimal", "feasible"):
        assert mirror.value <= ex.value + 1e-9 <= mirror.bound + 2e-9


def test_milp_batch_with_resources_indexes_per_instance():
    rng = np.random.default_rng(1)
    values, costs = rng.random((3, 6, 3)), rng.random((3, 2))
    budget = np.array([[1.5, 1.5], [3.0, 2.0], [0.0, 0.0]])
    ex = reference.milp(values, costs, budget)
    assert ex.cost.shape == (3, 2) and ex.shadow_price.shape == (3, 2)
    assert list(ex.status) == ["optimal", "optimal", "infeasible"]
    one = reference.milp(values[1], costs, budget[1])
    assert ex[1].value == one.value and ex[1].choice.tolist() == one.choice.tolist()
    assert "message" in ex[1].info


def test_missing_dependency_names_the_install(monkeypatch):
    real = importlib.import_module

    def without_cvxpy(name, *args):
        if name == "cvxpy":
            raise ImportError("No module named 'cvxpy'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_cvxpy)
    with pytest.raises(ImportError, match=r'lp needs cvxpy: pip install "apportion\[reference\]"'):
        reference.lp([[0.0, 1.0]], [0.0, 1.0], 1.0)


def _available(solver):
    module = {"milp": "scipy.optimize", "cpsat": "ortools.sat.python.cp_model", "lp": "cvxpy"}[solver]
    return importlib.util.find_spec(module.split(".")[0]) is not None


def _fits(costs, choice, budget):
    from fractions import Fraction
    return sum(Fraction(float(costs[i, j])) for i, j in enumerate(choice)) <= Fraction(budget)


def test_milp_answer_over_the_budget_by_highs_tolerance_is_solved_again():
    # Found by a fuzzing helper: HiGHS takes rows up to 1e-7 past a bound, and option 1 costing
    # 1 + 1e-8 in a budget of 1 came back "optimal" (value 1; the optimum is 0).
    sol = reference.milp(np.array([[0.0, 1.0]]), np.array([[0.0, 1.0 + 1e-8]]), 1.0)
    assert list(sol.choice) == [0] and sol.value == 0.0
    assert sol.status == "feasible" and sol.bound >= sol.value  # not proven under the lowered budget


@pytest.mark.skipif(importlib.util.find_spec("ortools") is None, reason="ortools not installed")
def test_cpsat_rounds_costs_up_and_the_budget_down_exactly():
    # Found by a fuzzing helper: a margin of 1e-9 rounded costs of 1 + 1e-12 down to 1 and a
    # budget of 3 - 1e-10 up to 3 (the last item's cost of 2^29 sets the cost scale to 1), so
    # CP-SAT took three items over the budget and called it optimal.
    values = np.array([[0.0, 1.0]] * 3 + [[0.0, -1.0]])
    for unit, budget, best in ((1.0 + 1e-12, 3.0, None), (1.0, 3.0 - 1e-10, 2.0)):
        costs = np.array([[0.0, unit]] * 3 + [[0.0, 2.0**29]])
        sol = reference.cpsat(values, costs, budget)
        assert sol.info["cost_scale"] == 1.0 and _fits(costs, sol.choice, budget)
        if best is not None:
            assert sol.status == "optimal" and sol.value == best


@pytest.mark.parametrize("solver", ["milp", "cpsat", "lp"])
def test_references_decide_feasibility_on_the_correctly_rounded_total(solver):
    # Found by a fuzzing helper: the plain numpy sum of the cheapest costs (2.7199999999999998)
    # lies an ulp under their correctly rounded total (2.72); as a budget, the native solvers
    # call it infeasible, and the references took an allocation over it.
    if not _available(solver):
        pytest.skip(f"{solver} needs its optional dependency")
    costs = np.array([[0.87], [0.43], [0.66], [0.76]])
    budget = float(costs.sum())
    assert budget < 2.72
    assert apportion.solve(np.ones((4, 1)), costs, budget).status == "infeasible"
    sol = getattr(reference, solver)(np.ones((4, 1)), costs, budget)
    assert sol.status == "infeasible" and sol.min_budget == 2.72


def test_milp_with_resources_never_calls_an_allocation_over_a_budget_feasible():
    # Found by a fuzzing helper: HiGHS took option 0 (1 + 1e-9 on a budget of 1), the lowered
    # budgets shut every allocation out, and the fallback, the cheapest option by total cost
    # (0.6 on a budget of 0.5), came back "feasible". No option fits here; without a proof,
    # "unknown".
    costs = np.array([[0.0, 1.0 + 1e-9], [0.6, 0.0]])
    sol = reference.milp(np.array([[1.0, 2.0]]), costs, np.array([0.5, 1.0]))
    assert sol.status == "unknown" and np.isnan(sol.bound)
    assert apportion.solve(np.array([[1.0, 2.0]]), costs, np.array([0.5, 1.0]), method="mirror").status == "infeasible"
