"""The fast path: feasibility, certified bounds against CP-SAT and the cvxpy LP, batching,
dtypes, layouts, senses and edge cases."""

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import apportion
from apportion import workloads
from conftest import HAS_CVXPY, HAS_ORTOOLS
from helpers import check_solution, small_problems

# The fast path under test; method="auto" picks the exact solver for small inputs.
lagrangian = functools.partial(apportion.solve, method="lagrangian")

needs_ortools = pytest.mark.skipif(not HAS_ORTOOLS, reason="ortools not installed")
needs_cvxpy = pytest.mark.skipif(not HAS_CVXPY, reason="cvxpy not installed")


@needs_ortools
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_problems())
def test_bound_brackets_cpsat_optimum(problem):
    from apportion import reference

    values, costs, budget, mask = problem
    sol = lagrangian(values, costs, budget, mask=mask)
    check_solution(sol, values, costs, budget, mask)
    ref = reference.cpsat(values, costs, budget, mask=mask)
    assert sol.status == "infeasible" or ref.status == "optimal"
    if sol.status == "infeasible":
        assert ref.status == "infeasible"
        assert sol.min_budget > budget
        return
    assert sol.bound >= ref.value - 1e-9 * max(1, abs(ref.value))
    assert ref.value >= sol.value - 1e-9 * max(1, abs(ref.value))
    if sol.status == "optimal":
        assert sol.value == pytest.approx(ref.value, rel=1e-12, abs=1e-9)


@needs_ortools
@settings(max_examples=60, deadline=None)
@given(small_problems())
def test_min_sense_brackets_cpsat(problem):
    from apportion import reference

    values, costs, budget, mask = problem
    sol = lagrangian(values, costs, budget, mask=mask, sense="min")
    check_solution(sol, values, costs, budget, mask, sense="min")
    if sol.status == "infeasible":
        return
    ref = reference.cpsat(values, costs, budget, mask=mask, sense="min")
    assert sol.bound <= ref.value + 1e-9 * max(1, abs(ref.value))
    assert ref.value <= sol.value + 1e-9 * max(1, abs(ref.value))


@settings(max_examples=200, deadline=None)
@given(small_problems(max_n=40, max_k=8, integer=False))
def test_real_valued_feasible(problem):
    values, costs, budget, mask = problem
    sol = lagrangian(values, costs, budget, mask=mask)
    check_solution(sol, values, costs, budget, mask)
    assert sol.status == "infeasible" or sol.gap >= 0


@needs_cvxpy
@pytest.mark.parametrize("kind", workloads.CLASSES)
def test_bound_equals_cvxpy_lp(kind):
    from apportion import reference

    values, costs, budget = workloads.instance(kind, 40, 6, seed=3)
    sol = lagrangian(values, costs, budget)
    lp = reference.lp(values, costs, budget)
    assert sol.bound == pytest.approx(lp.value, rel=1e-6)


@needs_cvxpy
def test_bound_equals_cvxpy_lp_with_mask(rng):
    from apportion import reference

    values, costs, budget = workloads.instance("uncorrelated", 30, 5, seed=8)
    mask = rng.random(values.shape) < 0.6
    mask[:, 0] = True
    sol = lagrangian(values, costs, budget, mask=mask)
    lp = reference.lp(values, costs, budget, mask=mask)
    assert sol.bound == pytest.approx(lp.value, rel=1e-6)


def test_readme_example():
    values = np.array([[0.0, 5.0, 6.0], [0.0, 3.0, 8.0]])
    sol = lagrangian(values, costs=[0.0, 1.0, 3.0], budget=4.0)
    assert sol.choice.tolist() == [1, 2]
    assert sol.value == 13.0 and sol.status == "optimal" and sol.gap == 0.0
    assert sol.method == "lagrangian" and sol.seconds > 0


def test_batch_equals_one_by_one():
    values, costs, budget = workloads.instance("weakly", 50, 6, batch=7, seed=4)
    budget = budget.copy()
    budget[2] = 1.0  # infeasible: the batch must still solve
    sol = lagrangian(values, costs, budget)
    assert sol.status[2] == "infeasible"
    assert sol.min_budget[2] > 1.0
    for b in range(7):
        one = lagrangian(values[b], costs[b], budget[b])
        np.testing.assert_array_equal(sol.choice[b], one.choice)
        assert sol.value[b] == one.value and sol.status[b] == one.status
        if one.status != "infeasible":
            assert sol.bound[b] == one.bound
    check_solution(sol, values, costs, budget)


def test_threads_do_not_change_answers():
    values, costs, budget = workloads.instance("routing", 200, 5, batch=16, seed=5)
    a = lagrangian(values, costs, budget, threads=1)
    b = lagrangian(values, costs, budget)
    np.testing.assert_array_equal(a.choice, b.choice)
    np.testing.assert_array_equal(a.bound, b.bound)


def test_large_instance_uses_item_threads_deterministically():
    values, costs, budget = workloads.instance("uncorrelated", 20000, 8, seed=6)
    a = lagrangian(values, costs, budget, threads=1)
    b = lagrangian(values, costs, budget)
    np.testing.assert_array_equal(a.choice, b.choice)
    check_solution(b, values, costs, budget)


def test_float32_and_float64_agree():
    values, costs, budget = workloads.instance("uncorrelated", 100, 6, seed=7)
    a = lagrangian(values, costs, budget)
    b = lagrangian(values.astype(np.float32), costs.astype(np.float32), budget)
    np.testing.assert_array_equal(a.choice, b.choice)
    assert a.value == b.value and a.bound == pytest.approx(b.bound, rel=1e-12)


def test_strided_inputs_match_contiguous():
    values, costs, budget = workloads.instance("zigzag", 60, 6, seed=9)
    big_v = np.zeros((120, 12))
    big_c = np.zeros((120, 12))
    big_v[::2, ::2] = values
    big_c[::2, ::2] = costs
    strided = lagrangian(big_v[::2, ::2], big_c[::2, ::2], budget)
    fortran = lagrangian(np.asfortranarray(values), np.asfortranarray(costs), budget)
    plain = lagrangian(values, costs, budget)
    for other in (strided, fortran):
        np.testing.assert_array_equal(other.choice, plain.choice)
        assert other.value == plain.value


@pytest.mark.parametrize("method", ["lagrangian", "exact", "auto"])
@pytest.mark.parametrize("sense", ["max", "min"])
def test_one_instance_path_matches_general_path(method, sense):
    # Plain numpy (N,K) input takes a shorter native path (scalars out, no batch axis); an
    # all-True mask sends the same instance through the general one.
    for kind, dtype, shared_costs, budget_scale in [("routing", np.float64, True, 1.0),
                                                    ("weakly", np.float64, False, 1.0),
                                                    ("uncorrelated", np.float32, False, 1.0),
                                                    ("zigzag", np.float64, False, 0.01)]:
        values, costs, budget = workloads.instance(kind, 300, 5, seed=11)
        values = values.astype(dtype)
        costs = (costs[0] if shared_costs and np.all(costs == costs[0]) else costs).astype(dtype)
        budget = float(budget) * budget_scale  # 0.01: below the cheapest allocation
        one = apportion.solve(values, costs, budget, method=method, sense=sense, threads=1)
        general = apportion.solve(values, costs, budget, method=method, sense=sense, threads=1,
                                  mask=np.ones(values.shape, bool))
        assert one.choice.shape == (300,) and one.choice.dtype == np.int64
        np.testing.assert_array_equal(one.choice, general.choice)
        for field in ("value", "cost", "bound", "gap", "shadow_price", "min_budget"):
            a, b = getattr(one, field), getattr(general, field)
            assert type(a) is float and (a == b or (np.isnan(a) and np.isnan(b))), field
        for field in ("status", "method", "sense"):
            assert getattr(one, field) == getattr(general, field), field
        if budget_scale < 1:
            assert one.status == "infeasible"


def test_one_instance_path_checks_its_arguments():
    values, costs, budget = workloads.instance("routing", 20, 3, seed=12)
    with pytest.raises(ValueError, match="time_limit"):
        apportion.solve(values, costs, budget, method="lagrangian", time_limit=1.0)
    with pytest.raises(ValueError, match="time_limit"):
        apportion.solve(values, costs, budget, method="exact", time_limit=-1.0)
    with pytest.raises(ValueError, match="sense"):
        apportion.solve(values, costs, budget, sense="least")
    with pytest.raises(ValueError, match="budget"):
        apportion.solve(values, costs, float("nan"))
    # The native entry point checks what it is given too.
    from apportion import _core

    for bad, match in [(dict(method="dp"), "method"), (dict(values=values[None]), "values"),
                       (dict(costs=costs[:, :2].copy()), "costs"),
                       (dict(values=np.asfortranarray(values)), "C-contiguous"),
                       (dict(costs=costs.astype(np.float32)), "dtype")]:
        args = dict(method="exact", values=values, costs=costs)
        args.update(bad)
        with pytest.raises(ValueError, match=match):
            _core.solve_one(args["method"], args["values"], args["costs"], budget, 1.0, 1.0, 10, 1)


def test_cost_broadcasting_forms_agree():
    values, _, _ = workloads.instance("uncorrelated", 30, 4, batch=3, seed=10)
    tiers = np.array([1.0, 3.0, 7.0, 15.0])
    budgets = np.array([60.0, 120.0, 200.0])
    shared = lagrangian(values, tiers, budgets)
    per_item = lagrangian(values, np.broadcast_to(tiers, (30, 4)), budgets)
    full = lagrangian(values, np.broadcast_to(tiers, values.shape).copy(), budgets)
    for other in (per_item, full):
        np.testing.assert_array_equal(other.choice, shared.choice)


def test_single_option_items():
    values = np.array([[3.0], [4.0]])
    sol = lagrangian(values, [2.0], 10.0)
    assert sol.choice.tolist() == [0, 0] and sol.value == 7.0 and sol.status == "optimal"
    assert lagrangian(values, [2.0], 3.0).status == "infeasible"


def test_zero_costs_and_ties():
    values = np.array([[1.0, 1.0, 2.0], [5.0, 5.0, 5.0]])
    costs = np.array([0.0, 0.0, 0.0])
    sol = lagrangian(values, costs, 0.0)
    assert sol.value == 7.0 and sol.status == "optimal"
    assert sol.choice.tolist() == [2, 0]  # ties resolved to the lowest index


def test_unlimited_budget_takes_best_options(rng):
    values = rng.random((50, 5))
    sol = lagrangian(values, rng.random(5), np.inf)
    np.testing.assert_array_equal(sol.choice, values.argmax(axis=1))
    assert sol.status == "optimal" and sol.shadow_price == 0.0


def test_shadow_price_predicts_marginal_value():
    values, costs, budget = workloads.instance("routing", 2000, 6, seed=11)
    a = lagrangian(values, costs, budget)
    b = lagrangian(values, costs, budget + 10.0)
    assert a.shadow_price > 0
    # the LP bound is concave in the budget with slope lambda* at the break
    assert b.bound - a.bound <= 10.0 * a.shadow_price * (1 + 1e-9)


def test_routing_gap_is_small():
    for n in (300, 1000, 5000):
        values, costs, budget = workloads.instance("routing", n, 4, seed=n)
        sol = lagrangian(values, costs, budget)
        assert sol.relative_gap <= 1e-4


def test_min_sense_negates():
    losses = np.array([[5.0, 1.0], [4.0, 0.0]])
    sol = lagrangian(losses, [0.0, 1.0], 1.0, sense="min")
    assert sol.value == 5.0 and sol.bound <= sol.value and sol.status == "optimal"


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    values, costs, budget = workloads.instance("uncorrelated", 20, 4, seed=12)
    sol = lagrangian(torch.from_numpy(values).requires_grad_(), torch.from_numpy(costs),
                          torch.tensor(budget))
    ref = lagrangian(values, costs, budget)
    assert isinstance(sol.choice, torch.Tensor)
    assert sol.choice.tolist() == ref.choice.tolist()


def test_lists_are_accepted():
    sol = lagrangian([[1, 2], [3, 5]], [0, 1], 1)
    assert sol.value == 6.0


# --- bad input: every error names the argument -------------------------------------------

GOOD_V = np.ones((3, 2))
GOOD_C = np.array([0.0, 1.0])


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(values=np.array([[np.nan, 1.0]] * 3)), ValueError, "values"),
        (dict(values=np.array([[np.inf, 1.0]] * 3)), ValueError, "values"),
        (dict(costs=np.array([-1.0, 1.0])), ValueError, "costs"),
        (dict(costs=np.array([np.nan, 1.0])), ValueError, "costs"),
        (dict(costs=np.array([np.inf, 1.0])), ValueError, "costs"),
        (dict(costs=np.ones(3)), ValueError, "costs"),
        (dict(costs=np.ones((4, 2))), ValueError, "costs"),
        (dict(costs=np.ones((2, 3, 2))), ValueError, "costs"),
        (dict(values=np.ones((3,))), ValueError, "values"),
        (dict(values=np.ones((0, 2))), ValueError, "N=0"),
        (dict(values=np.ones((0, 3, 2))), ValueError, "B=0"),
        (dict(values=np.ones((3, 0)), costs=np.ones(0)), ValueError, "K=0"),
        (dict(values=np.array([["a", "b"]] * 3)), TypeError, "values"),
        (dict(values=np.ones((3, 2), dtype=complex)), TypeError, "values"),
        (dict(costs=np.array(["a", "b"])), TypeError, "costs"),
        (dict(budget=np.nan), ValueError, "budget"),
        (dict(budget=np.array([1.0, 2.0])), ValueError, "budget"),
        (dict(budget="lots"), TypeError, "budget"),
        (dict(mask=np.array([[True, False], [False, False], [True, True]])), ValueError, "item 1"),
        (dict(mask=np.ones((2, 2), bool)), ValueError, "mask"),
        (dict(mask=np.full((3, 2), 2)), ValueError, "mask"),
        (dict(sense="maximize"), ValueError, "sense"),
        (dict(method="simplex"), ValueError, "method"),
        (dict(threads=0), ValueError, "threads"),
    ],
)
def test_bad_input_names_the_argument(kwargs, exc, match):
    args = dict(values=GOOD_V, costs=GOOD_C, budget=1.0)
    args.update(kwargs)
    values, costs, budget = args.pop("values"), args.pop("costs"), args.pop("budget")
    with pytest.raises(exc, match=match):
        lagrangian(values, costs, budget, **args)


def test_masked_out_values_may_be_nan():
    values = np.array([[np.nan, 1.0], [2.0, 3.0]])
    mask = np.array([[False, True], [True, True]])
    sol = lagrangian(values, [0.0, 1.0], 2.0, mask=mask)
    assert sol.choice.tolist() == [1, 1] and sol.value == 4.0


def test_batched_budget_shape_checked():
    with pytest.raises(ValueError, match="budget"):
        lagrangian(np.ones((2, 3, 2)), GOOD_C, np.ones(3))


def test_readme_quickstart():
    values = np.array([[0.0, 5.0, 6.0], [0.0, 3.0, 8.0], [1.0, 2.0, 9.0], [0.0, 4.0, 4.5]])
    sol = apportion.solve(values, costs=[0.0, 1.0, 3.0], budget=6.0)
    assert sol.choice.tolist() == [1, 1, 2, 1] and sol.value == 21.0 and sol.status == "optimal"
    assert sol.method == "exact"


def test_main_job_runs(capsys):
    from apportion.cli import main

    assert main(["example"]) == 0
    assert "relative gap" in capsys.readouterr().out
