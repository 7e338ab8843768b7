"""Instances of 256 items or more take the reduced LP (frontier.cpp, solve_lp_reduced): a
bracket of the break slope guessed from a sample, most items fixed at their LP option, hulls
built only for the rest. These tests hold it to the same answers as the definitions: the LP
optimum by HiGHS, the integer optimum by the DP, feasibility of every allocation, on all
classes and with masks, ties, zero costs, float32, shared costs and the min sense."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog
from scipy.sparse import csr_matrix

import apportion
from apportion import _core, workloads
from helpers import as_batch, check_solution


def lp_optimum(values, costs, budget, mask=None):
    """The LP relaxation's optimum of one instance by HiGHS (maximisation)."""
    v, c, m, b = as_batch(values, costs, budget, mask)
    v, c, m = v[0], c[0], m[0]
    n, k = v.shape
    rows, cols = np.nonzero(m)
    x = len(rows)
    one_each = csr_matrix((np.ones(x), (rows, np.arange(x))), shape=(n, x))
    res = linprog(-v[rows, cols], A_ub=c[rows, cols][None, :], b_ub=[b[0]], A_eq=one_each,
                  b_eq=np.ones(n), bounds=(0, 1), method="highs")
    assert res.status == 0, res.message
    return -res.fun


@st.composite
def medium_problems(draw):
    """Instances of 256 to 700 items: random classes, ranges small enough for ties, masks,
    zero costs, shared costs, and budgets from below the cheapest to above the dearest."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(256, 700))
    k = draw(st.integers(1, 8))
    hi = draw(st.sampled_from([3, 12, 1000]))
    values = rng.integers(0, hi + 1, (n, k)).astype(float)
    if draw(st.booleans()):
        costs = np.sort(rng.integers(0, hi + 1, k)).astype(float)  # shared tier costs
    else:
        costs = rng.integers(0, hi + 1, (n, k)).astype(float)
        costs[rng.random((n, k)) < 0.1] = 0.0
    mask = None
    if draw(st.booleans()):
        mask = rng.random((n, k)) < 0.7
        mask[np.arange(n), rng.integers(0, k, n)] = True
    full = np.broadcast_to(costs, (n, k))
    allowed = np.ones((n, k), bool) if mask is None else mask
    lo = np.where(allowed, full, np.inf).min(axis=1).sum()
    top = np.where(allowed, full, -np.inf).max(axis=1).sum()
    budget = float(np.floor(lo + draw(st.floats(-0.05, 1.05)) * (top - lo)))
    return values, costs, budget, mask


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(medium_problems())
def test_reduced_lp_equals_highs_and_exact_equals_dp(problem):
    values, costs, budget, mask = problem
    lag = apportion.solve(values, costs, budget, method="lagrangian", mask=mask)
    exact = apportion.solve(values, costs, budget, method="exact", mask=mask)
    check_solution(lag, values, costs, budget, mask)
    check_solution(exact, values, costs, budget, mask)
    if lag.status == "infeasible":
        assert exact.status == "infeasible"
        return
    scale = max(1.0, abs(lag.bound))
    assert lag.bound == pytest.approx(lp_optimum(values, costs, budget, mask), rel=1e-9, abs=1e-9 * scale)
    if budget * len(values) <= 3e6:  # the DP's table: N x (budget span)
        dp = apportion.solve(values, costs, budget, method="dp", mask=mask)
        assert exact.status == dp.status == "optimal"
        assert exact.value == pytest.approx(dp.value, rel=1e-12, abs=1e-9)
    assert lag.value <= exact.value + 1e-9 * scale
    assert exact.value <= lag.bound + 1e-9 * scale


@pytest.mark.parametrize("kind", workloads.CLASSES)
@pytest.mark.parametrize("n,k", [(300, 8), (2000, 5)])
def test_reduced_lp_on_the_classes(kind, n, k):
    values, costs, budget = workloads.instance(kind, n, k, R=1000, seed=n + k)
    lag = apportion.solve(values, costs, budget, method="lagrangian")
    exact = apportion.solve(values, costs, budget, method="exact")
    check_solution(lag, values, costs, budget)
    check_solution(exact, values, costs, budget)
    lp = lp_optimum(values, costs, budget)
    assert lag.bound == pytest.approx(lp, rel=1e-9)
    assert exact.status == "optimal"
    assert lag.value <= exact.value * (1 + 1e-12) <= lp * (1 + 1e-9)


@pytest.mark.parametrize("kind", ["routing", "uncorrelated", "strongly"])
def test_reduced_lp_float32_min_sense_and_shared_costs(kind):
    values, costs, budget = workloads.instance(kind, 900, 6, R=1000, seed=5)
    # float32 input: the answers are those of the float64 instance with the same numbers.
    v32, c32 = values.astype(np.float32), np.asarray(costs, np.float32)
    lag32 = apportion.solve(v32, c32, budget, method="lagrangian")
    lag64 = apportion.solve(v32.astype(float), c32.astype(float), budget, method="lagrangian")
    assert lag32.choice.tolist() == lag64.choice.tolist() and lag32.bound == lag64.bound
    # Minimising the negated values is maximising the values.
    low = apportion.solve(-values, costs, budget, method="exact", sense="min")
    high = apportion.solve(values, costs, budget, method="exact")
    assert low.value == pytest.approx(-high.value, rel=1e-12)
    check_solution(low, -values, costs, budget, sense="min")
    # Shared tier costs (K,) give the answers of the same costs repeated per item.
    tiers = np.sort(np.asarray(costs, float).reshape(-1, costs.shape[-1])[0])
    shared = apportion.solve(values, tiers, budget, method="exact")
    per_item = apportion.solve(values, np.broadcast_to(tiers, values.shape).copy(), budget, method="exact")
    assert shared.value == per_item.value
    check_solution(shared, values, tiers, budget)


@pytest.mark.parametrize("method", ["lagrangian", "exact"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bad_input_inside_large_instances_is_named(method, dtype):
    # These solvers check values and costs in their own pass over the data; the error must
    # still name the first bad entry by its flat index in the batch.
    values, costs, budget = workloads.instance("uncorrelated", 1000, 8, R=1000, batch=3, seed=2)
    values, costs = values.astype(dtype), np.asarray(costs, dtype)
    flat = 2 * 1000 * 8 + 777 * 8 + 5  # instance 2, item 777, option 5
    for bad in (np.nan, np.inf, -np.inf):
        v = values.copy()
        v.reshape(-1)[flat] = bad
        with pytest.raises(ValueError, match=f"values: entry {flat} "):
            apportion.solve(v, costs, budget, method=method)
    for bad in (np.nan, np.inf, -1.0):
        c = np.broadcast_to(costs, values.shape).copy()
        c.reshape(-1)[flat] = bad
        with pytest.raises(ValueError, match=f"costs: entry {flat} "):
            apportion.solve(values, c, budget, method=method)
    # A NaN where the mask forbids the option is not an error.
    v = values.copy()
    v.reshape(-1)[flat] = np.nan
    mask = np.ones(values.shape, bool)
    mask.reshape(-1)[flat] = False
    sol = apportion.solve(v, costs, budget, method=method, mask=mask)
    check_solution(sol, np.nan_to_num(v), costs, budget, mask)



def test_the_core_names_the_first_item_without_an_allowed_option():
    # solve() checks masks first; the core's own check (here called directly) must name the
    # first such item too, not the first one its sample of the items meets (111 is sampled).
    values, costs, budget = workloads.instance("routing", 1000, 8, seed=0)
    mask = np.ones(values.shape, bool)
    mask[[3, 111]] = False
    for v, c in ((values, costs), (values.astype(np.float32), costs.astype(np.float32))):
        with pytest.raises(ValueError, match="mask: item 3 has no allowed option"):
            _core.lagrangian(v[None], c[None], np.array([float(budget)]), mask[None], 1.0, 1)

def _unrepresentative_sample(n, sample_slope, other_slopes, seed):
    """Two options per item, (cost 0, value 0) and (cost 1, value = its slope), where the items
    the bracket guess samples (every n/s-th, s = 16 + 1.5 sqrt(n)) all have `sample_slope` and
    the others slopes drawn from `other_slopes`: the guessed bracket misses the break."""
    rng = np.random.default_rng(seed)
    s = 16 + int(1.5 * np.sqrt(n))
    sampled = np.arange(s) * n // s
    slopes = rng.uniform(*other_slopes, n)
    slopes[sampled] = sample_slope
    values = np.stack([np.zeros(n), slopes], axis=1)
    costs = np.stack([np.zeros(n), np.ones(n)], axis=1)
    return values, costs, slopes


@pytest.mark.parametrize("sample_slope,other_slopes", [(10.0, (1.0, 2.0)), (0.5, (0.6, 0.9))])
@pytest.mark.parametrize("method", ["lagrangian", "exact"])
def test_a_missed_sample_bracket_still_gives_the_optimum(sample_slope, other_slopes, method):
    # The sampled items' slopes lie above every other item's (first case) or below them
    # (second), so the first pass finds the break outside its bracket and tries again on the
    # side it found. With unit costs and an integer budget, the LP optimum is integral: the
    # `budget` largest slopes.
    n, budget = 400, 200.0
    values, costs, slopes = _unrepresentative_sample(n, sample_slope, other_slopes, seed=7)
    optimum = np.sort(slopes)[::-1][:int(budget)].sum()
    sol = apportion.solve(values, costs, budget, method=method)
    check_solution(sol, values, costs, budget)
    assert sol.bound == pytest.approx(optimum, rel=1e-12)
    assert sol.value == pytest.approx(optimum, rel=1e-12)
    assert sol.status == "optimal"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(300, 800), k=st.integers(2, 8), slope=st.sampled_from([1.0, 2.0, 0.5]),
       seed=st.integers(0, 2**32 - 1), share=st.floats(0.05, 0.95), masked=st.booleans())
def test_all_tied_items_give_the_lp_and_the_optimum(n, k, slope, seed, share, masked):
    # Every option on one line v = slope * w (subset-sum when slope = 1): every item is tied at
    # the break, and all but a few are fixed at one of their ends. The bound must still be the
    # LP's, and exact must still find the optimum (the DP's).
    rng = np.random.default_rng(seed)
    costs = rng.integers(1, 60, (n, k)).astype(float)
    values = slope * costs
    mask = None
    if masked:
        mask = rng.random((n, k)) < 0.7
        mask[np.arange(n), rng.integers(0, k, n)] = True
    allowed = np.ones((n, k), bool) if mask is None else mask
    lo = np.where(allowed, costs, np.inf).min(axis=1).sum()
    top = np.where(allowed, costs, -np.inf).max(axis=1).sum()
    budget = float(np.floor(lo + share * (top - lo)))
    lag = apportion.solve(values, costs, budget, method="lagrangian", mask=mask)
    exact = apportion.solve(values, costs, budget, method="exact", mask=mask)
    dp = apportion.solve(values, costs, budget, method="dp", mask=mask)
    for sol in (lag, exact):
        check_solution(sol, values, costs, budget, mask)
    assert lag.bound == pytest.approx(lp_optimum(values, costs, budget, mask), rel=1e-9)
    assert exact.status == dp.status == "optimal"
    assert exact.value == pytest.approx(dp.value, rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_all_tied_items_without_an_exact_fill(seed):
    # Even costs on one line and an odd budget: no allocation spends it all, so the primal
    # stays one unit below the LP bound and the exact core must prove the optimum, with no
    # margins from the reduced LP (a tied sample skips them).
    rng = np.random.default_rng(seed)
    costs = 2.0 * rng.integers(1, 60, (300, 4))
    values = costs.copy()
    lo, top = costs.min(axis=1).sum(), costs.max(axis=1).sum()
    budget = float(np.floor(lo + 0.4 * (top - lo))) // 2 * 2 + 1
    exact = apportion.solve(values, costs, budget, method="exact")
    dp = apportion.solve(values, costs, budget, method="dp")
    check_solution(exact, values, costs, budget)
    assert exact.status == dp.status == "optimal"
    assert exact.value == dp.value == budget - 1
    assert exact.bound == pytest.approx(budget - 1, rel=1e-12)


@pytest.mark.parametrize("method", ["lagrangian", "exact"])
def test_first_pass_runs_on_threads_without_changing_answers(method):
    # Past 8192 items the first pass goes in runs, to the threads when there are several; the
    # runs' totals are added in run order, so the answer is the same on any number of threads.
    values, costs, budget = workloads.instance("weakly", 20000, 6, R=1000, seed=7)
    one = apportion.solve(values, costs, budget, method=method, threads=1)
    two = apportion.solve(values, costs, budget, method=method, threads=2)
    np.testing.assert_array_equal(one.choice, two.choice)
    assert (one.value, one.bound, one.min_budget) == (two.value, two.bound, two.min_budget)
    check_solution(two, values, costs, budget)
    # Bad input in a later run is still found, and named.
    flat = 15000 * 6 + 4
    v = values.copy()
    v.reshape(-1)[flat] = np.nan
    with pytest.raises(ValueError, match=f"values: entry {flat} "):
        apportion.solve(v, costs, budget, method=method, threads=2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["routing", "uncorrelated"])
def test_reduced_totals_are_the_allocations_own(kind, dtype):
    # After a reduced LP the totals come from the first pass (its fixed items, summed as it went,
    # in runs past 8192 items) plus the items it left active, not from a second pass over every
    # row: they must still be the allocation's exactly rounded totals (to the last bits), and the
    # allocation must fit a budget equal to its own cost, where only an exact sum decides.
    rng = np.random.default_rng(11)
    values, costs, budget = workloads.instance(kind, 20000, 8, seed=3)
    costs = costs * rng.uniform(0.5, 1.5, costs.shape)  # real costs: the sums round
    values, costs = values.astype(dtype), costs.astype(dtype)
    lo, hi = float(costs.min(-1).sum()), float(costs.max(-1).sum())
    for budget in (lo + 0.3 * (hi - lo), lo + 0.7 * (hi - lo)):
        sol = apportion.solve(values, costs, budget, method="lagrangian", threads=1)
        rows = np.arange(values.shape[0])
        cost = math.fsum(costs[rows, sol.choice].astype(np.float64))
        value = math.fsum(values[rows, sol.choice].astype(np.float64))
        assert sol.cost == pytest.approx(cost, rel=4e-16, abs=0.0)
        assert sol.value == pytest.approx(value, rel=4e-16, abs=0.0)
        assert cost <= budget
        check_solution(sol, values, costs, budget)
        # The same allocation at a budget of exactly its cost: fits (decided on the exact sum).
        again = apportion.solve(values, costs, cost, method="lagrangian", threads=1)
        again_cost = math.fsum(costs[rows, again.choice].astype(np.float64))
        assert again_cost <= cost
        assert again.value >= sol.value - 1e-9 * abs(sol.value)
        check_solution(again, values, costs, cost)


def _close_slope_items(n, k, seed):
    """Concave items whose hull slopes all lie within 1e-6 of 1, in random order across items:
    the sample's increments share the top bits of their slopes, which the bucket pass of the
    sample's sort (frontier.cpp, sort_steepest_first) leaves to its insertion sort, or to
    std::sort."""
    rng = np.random.default_rng(seed)
    steps = rng.random((n, k)) * 10 + 1
    slopes = 1 + 1e-6 * np.sort(rng.random((n, k)), axis=1)[:, ::-1]
    costs = np.cumsum(steps, axis=1)
    values = np.cumsum(steps * slopes, axis=1)
    return values, costs, float(costs[:, k // 2].sum())


@pytest.mark.parametrize("n,k", [(2000, 16), (300, 8)])
def test_sample_slopes_within_a_millionth_give_the_lp(n, k):
    values, costs, budget = _close_slope_items(n, k, seed=n)
    lag = apportion.solve(values, costs, budget, method="lagrangian")
    check_solution(lag, values, costs, budget)
    assert lag.bound == pytest.approx(lp_optimum(values, costs, budget), rel=1e-9)
    assert lag.value <= lag.bound


@pytest.mark.parametrize("far", [1e12, 1e-12])
def test_a_sample_slope_far_from_the_rest_gives_the_lp(far):
    """One item whose hull slope is far from every other's, which all lie within 1e-6 of 1:
    it widens every bucket of the sample's sort, so that its insertion sort gives up and
    std::sort orders the sample."""
    values, costs, budget = _close_slope_items(2000, 16, seed=7)
    values[0] = costs[0] * far
    lag = apportion.solve(values, costs, budget, method="lagrangian")
    check_solution(lag, values, costs, budget)
    assert lag.bound == pytest.approx(lp_optimum(values, costs, budget), rel=1e-9)
    assert lag.value <= lag.bound


def _reference_pareto(values, costs, mask, sign):
    """One item's Pareto list [(cost, value)] by the definition: the options in cost order
    (ties by index), an entry for each one worth more than every cheaper one (at equal cost
    the later, more valuable one replaces it)."""
    pareto = []
    for j in sorted(range(len(costs)), key=lambda j: (costs[j], j)):
        w, v = float(costs[j]), sign * float(values[j])
        if (mask is not None and not mask[j]) or (pareto and not v > pareto[-1][1]):
            continue
        if pareto and w == pareto[-1][0]:
            pareto[-1] = (w, v)
        else:
            pareto.append((w, v))
    return pareto


def _below_chord(w0, v0, w1, v1, wa, va):
    """Whether (w1, v1) lies on or below the chord from (w0, v0) to (wa, va), by cross products
    as rounded; where "below" rests on a rhs out of double's normal range, values and costs are
    first scaled by powers of two to magnitudes near 1 (an inf or a 0 on both sides took points
    off hulls). "Above" (lhs > rhs as rounded) stands as it is: rounding is monotone, so the
    exact products are ordered so too; scaling first lost the subnormal point (5e-324,
    5e-324) between (0, 0) and (3, 2) to underflow (item_ops.hpp, below_chord)."""
    lhs, rhs = (v1 - v0) * (wa - w1), (va - v1) * (w1 - w0)
    if not lhs <= rhs:
        return False
    if 2.2250738585072014e-308 <= rhs <= 1.7976931348623157e308:
        return True

    def scaled(*xs):
        top = max(abs(x) for x in xs)
        shift = 0 if top == 0 or not math.isfinite(top) else 1 - math.frexp(top)[1]  # -ilogb(top)
        return [math.ldexp(x, shift) for x in xs]

    (v0, v1, va), (w0, w1, wa) = scaled(v0, v1, va), scaled(w0, w1, wa)
    return (v1 - v0) * (wa - w1) <= (va - v1) * (w1 - w0)


def _reference_hull_steps(values, costs, mask, sign):
    """One item's hull steps [(slope, dcost)] and cheapest hull cost: the upper hull of its
    Pareto list by the monotone chain, dropping a point on or below the chord of its
    neighbours."""
    pareto = _reference_pareto(values, costs, mask, sign)
    if not pareto:
        return [], math.nan
    hull = []
    for wa, va in pareto:
        while len(hull) >= 2:
            (w0, v0), (w1, v1) = hull[-2], hull[-1]
            if _below_chord(w0, v0, w1, v1, wa, va):
                hull.pop()
            else:
                break
        hull.append((wa, va))
    steps = [((v1 - v0) / (w1 - w0), w1 - w0) for (w0, v0), (w1, v1) in zip(hull, hull[1:])]
    return steps, hull[0][0]


_entry = st.one_of(st.sampled_from([0.0, -0.0, 1.0, 2.0, 2.5, 3.0, 4.0, 5e-324, 1e300]),
                   st.floats(0, 100), st.floats(0, 1e300))


def _bits(steps):
    return [(slope.hex(), dcost.hex()) for slope, dcost in steps]  # -0.0 is not 0.0 here


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 20).flatmap(lambda k: st.tuples(
    st.lists(_entry, min_size=k, max_size=k), st.lists(_entry, min_size=k, max_size=k),
    st.one_of(st.none(), st.lists(st.booleans(), min_size=k, max_size=k)),
    st.sampled_from([1.0, -1.0]), st.booleans())))
@example(([2.0, 0.0, 5e-324], [3.0, 0.0, 5e-324], None, 1.0, False))  # a subnormal hull point (see _below_chord)
def test_sample_hull_steps_are_the_definitions(item):
    """The sample's one-pass hull steps (frontier.cpp, sample_hull_steps) are, bit for bit, those
    of the definitions, with equal costs, equal values, collinear points, subnormal and huge
    entries, costs in and out of order, rows longer than the small sort (K > 16), masks, both
    senses, and shared costs (visited in their sorted order) or not (in index order where they
    ascend); and the reference's Pareto list is the kernels' (pareto_filter) where they meet."""
    values, costs, mask, sign, shared = item
    values, costs = np.array(values), np.array(costs)
    steps, cheapest, valid = apportion._core._hull_steps(values, costs, None if mask is None else np.array(mask),
                                                         sign, shared)
    want_steps, want_cheapest = _reference_hull_steps(values, costs, mask, sign)
    assert valid
    assert _bits(steps) == _bits(want_steps)
    assert math.isnan(cheapest) and math.isnan(want_cheapest) or cheapest.hex() == want_cheapest.hex()
    if mask is None and sign == 1.0:
        kernels = [(c, v) for _, c, v in apportion._core._item_frontier(values, costs)]
        assert kernels == _reference_pareto(values, costs, None, 1.0)


def _assert_same_bits(got, want):
    """Two Solutions with the same choice and every scalar field the same to the last bit."""
    np.testing.assert_array_equal(got.choice, want.choice)
    for field in ("value", "cost", "bound", "shadow_price", "min_budget", "status"):
        assert np.asarray(getattr(got, field)).tobytes() == np.asarray(getattr(want, field)).tobytes(), field


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,k,shared,sense", [("routing", 8, False, "max"), ("strongly", 8, True, "max"),
                                                 ("uncorrelated", 13, False, "min"), ("strongly", 13, False, "max")])
@pytest.mark.parametrize("method", ["lagrangian", "exact"])
def test_copied_active_rows_give_the_answers_of_the_rows_in_place(method, kind, k, shared, sense, dtype):
    # Past 4 MB of rows, the rows of the items the first pass leaves active are copied side by
    # side for the narrowing and the allocation's totals (frontier.cpp, fix_items), unless a mask
    # is given; an all-True mask keeps them in place. The numbers are the same, read from another
    # place: every field must be the same to the last bit, whether the runs of the first pass go
    # to threads or not, where more items are active than the room for copies (strongly, K = 13,
    # at the smaller budget: more than a fifth), and where the sample's bracket misses (routing,
    # at the smaller budget).
    values, costs, budget = workloads.instance(kind, 140000, k, R=1000, seed=k)
    if shared:
        costs = np.sort(costs.reshape(-1, k)[0])
    if sense == "min":
        values = -values
    values, costs = values.astype(dtype), costs.astype(dtype)
    limits = {"max_states": 20000} if method == "exact" else {}
    for scale in (1.0, 0.6):
        for threads in (1, 3):
            args = (values, costs, scale * float(budget))
            copied = apportion.solve(*args, method=method, sense=sense, threads=threads, **limits)
            in_place = apportion.solve(*args, method=method, sense=sense, threads=threads, **limits,
                                       mask=np.ones(values.shape, bool))
            _assert_same_bits(copied, in_place)
            check_solution(copied, values, costs, scale * float(budget), sense=sense)


@pytest.mark.parametrize("kind,n,k,dtype", [
    ("routing", 140000, 8, "float64"),      # runs of the first pass, copies made
    ("uncorrelated", 8192, 40, "float64"),  # one run (n <= 8192), 5.2 MB of rows, copies made
    ("routing", 140000, 8, "float32"),
    ("routing", 780000, 8, "float64"),      # near the workspace's limit: it must be kept
    ("routing", 1_000_000, 8, "float32"),   # 64 MB of rows, a 32 MiB keep: copies fit beside the
                                            # active items' arrays, which grow with them
])
def test_copied_rows_are_made_and_the_workspace_is_kept(kind, n, k, dtype):
    # The copies of the active items' rows (fix_items) are made where they fit, and never grow
    # the workspace past what it keeps between calls (32 MiB, or half the input where more):
    # past it, it is dropped after every solve and faulted in again by the next (routing
    # 780000 x 8 float64 took 45% longer so).
    values, costs, budget = workloads.instance(kind, n, k, R=1000, seed=1 if n < 1_000_000 else 0)
    values, costs = values.astype(dtype), costs.astype(dtype)
    sol = apportion.solve(values, costs, float(budget), method="lagrangian", threads=1)
    state = apportion._core._lagrangian_workspace()
    keep = max(state["keep_bytes"], (values.nbytes + costs.nbytes) // 2)
    assert 0 < state["bytes"] <= keep, state
    assert state["copied_rows"] > 0, state
    in_place = apportion.solve(values, costs, float(budget), method="lagrangian", threads=1,
                               mask=np.ones(values.shape, bool))
    np.testing.assert_array_equal(sol.choice, in_place.choice)
    assert (sol.value, sol.bound, sol.cost) == (in_place.value, in_place.bound, in_place.cost)


@pytest.mark.parametrize("dtype,seed", [("float32", 0), ("float32", 1), ("float64", 1)])
def test_the_exact_workspace_counts_its_item_arrays_and_is_kept(dtype, seed):
    # What the exact solver holds beside its Lagrangian workspace (each item's LP and best
    # options, the core's candidates) is counted, and a thread keeps it all up to the instance's
    # input (values and costs): 4 MB of LP options at 1e6 items had not been counted at all, and
    # routing 1e6 x 8 float64 seed 1 holds 74 MB, past half its 128 MB input (dropped so, every
    # solve faulted 16,563 pages in again). Its copied rows fit within that keep beside them.
    n = 1_000_000
    values, costs, budget = workloads.instance("routing", n, 8, seed=seed)
    values, costs = values.astype(dtype), costs.astype(dtype)
    sol = apportion.solve(values, costs, float(budget), method="exact", threads=1)
    assert sol.status == "optimal"
    state = _core._exact_workspace()
    assert 0 < state["bytes"] <= max(state["keep_bytes"], values.nbytes + costs.nbytes), state
    assert state["bytes"] - state["lagrangian_bytes"] >= 4 * n, state  # (lp_option alone)
    assert state["copied_rows"] > 0, state  # (the active rows' copies fit beside them)
    again = apportion.solve(values, costs, float(budget), method="exact", threads=1)
    _assert_same_bits(again, sol)


def test_a_large_instance_keeps_its_workspace_between_solves():
    # A workspace past keep_bytes (32 MiB) stays where it is at most half the instance's input:
    # dropped, every solve faulted it in again (routing 2e6 x 8 float32: a 36.7 MB workspace,
    # 4328 page faults and about 20% of the CPU time a solve). A smaller instance's solve trims it.
    values, costs, budget = workloads.instance("routing", 2_000_000, 8, seed=0)
    values, costs = values.astype(np.float32), costs.astype(np.float32)
    first = apportion.solve(values, costs, float(budget), method="lagrangian", threads=1)
    state = _core._lagrangian_workspace()
    assert state["keep_bytes"] < state["bytes"] <= (values.nbytes + costs.nbytes) // 2, state
    # (about 8% of the items are fixed while the bracket narrows, a few left to the frontiers)
    assert state["reduced"] and 0 < state["near_items"] < 2_000_000 // 5 and state["frontier_items"] > 0, state
    assert state["copied_rows"] > 0, state  # (their rows, copied within the keep)
    again = apportion.solve(values, costs, float(budget), method="lagrangian", threads=1)  # in it
    _assert_same_bits(again, first)
    small_values, small_costs, small_budget = workloads.instance("routing", 1000, 8, seed=0)
    apportion.solve(small_values, small_costs, float(small_budget), method="lagrangian", threads=1)
    assert _core._lagrangian_workspace()["bytes"] <= state["keep_bytes"]


@pytest.mark.parametrize("shared", [True, False])
def test_reduced_bound_is_the_exact_lagrangian_at_its_price(shared):
    """The bound is L(lambda) at the returned shadow price, to a few ulps, computed here in exact
    rational arithmetic. The reduced LP's frontier budget takes the fixed items' costs as a
    plain running sum (which decides the bracket); the bound corrects for its rounding. Without
    that, 8192 items with shared real costs gave bounds 30-360 ulps from L(lambda), below it as
    often as above (found by a fuzzing helper)."""
    from fractions import Fraction

    for seed in range(3):
        n, k = 8192, 5
        rng = np.random.default_rng([5, seed, n])
        tiers = np.sort(rng.random(k)) * 4
        costs = tiers if shared else np.tile(tiers, (n, 1))
        values = np.sort(rng.random((n, k)), axis=1) * rng.lognormal(0, 1, (n, 1))
        budget = 0.5 * (math.fsum(np.full(n, tiers.min())) + math.fsum(np.full(n, tiers.max())))
        sol = apportion.solve(values, costs, budget, method="lagrangian")
        price = Fraction(sol.shadow_price)
        cost_row = [Fraction(c) for c in tiers]
        exact = price * Fraction(budget) + sum(max(Fraction(v) - price * c for v, c in zip(row, cost_row))
                                               for row in values.tolist())
        assert abs(Fraction(sol.bound) - exact) <= 4 * Fraction(math.ulp(sol.bound)), (seed, sol.bound, float(exact))
