"""The consequence-aware scheduler: inputs, policies, budgets and the shipped workloads."""

import itertools
import math
from importlib import resources

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apportion import schedule
from apportion.schedule import POLICIES, Tier, make_tasks, route, route_all

HAS_EXACT = schedule.exact_available()
needs_exact = pytest.mark.skipif(
    not HAS_EXACT, reason="the exact solver (method='exact') is not on this branch yet")
HEURISTICS = tuple(p for p in POLICIES if p != "optimal")
AVAILABLE = POLICIES if HAS_EXACT else HEURISTICS

TWO = (Tier("small", 1.0), Tier("large", 4.0))


def brute_force_loss(tasks, tiers, budget):
    """Least expected loss over every routing within budget (tiny instances only)."""
    w = np.array([t.cost for t in tiers])
    best = math.inf
    for choice in itertools.product(range(len(tiers)), repeat=len(tasks)):
        ch = np.array(choice)
        if math.fsum(w[ch]) <= budget:
            s = tasks.success[np.arange(len(tasks)), ch]
            best = min(best, math.fsum(tasks.consequence * (1 - s)))
    return best


@st.composite
def small_routings(draw, max_n=7, max_k=4):
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(1, max_k))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    costs = rng.integers(0, 6, k).astype(float)
    if draw(st.booleans()):
        costs = costs * rng.random(k) * 1.3  # real-valued costs
    tiers = tuple(Tier(f"t{j}", c) for j, c in enumerate(costs))
    success = rng.random((n, k))
    if draw(st.booleans()):
        success = np.round(success, 1)  # ties
    consequence = rng.choice([0.0, 1.0, 5.0, 25.0], n) if draw(st.booleans()) else rng.lognormal(0, 1, n)
    tasks = make_tasks(tiers, consequence=consequence, success=success)
    lo, hi = n * costs.min(), n * costs.max()
    budget = lo + draw(st.floats(0, 1.1)) * (hi - lo)
    return tasks, tiers, budget


# --------------------------------------------------------------------------------------------
# Input checking


@pytest.mark.parametrize("cost", [-1.0, float("nan"), float("inf")])
def test_tier_cost_checked(cost):
    with pytest.raises(ValueError, match="Tier.cost"):
        Tier("a", cost)


def test_tier_name_and_ability_checked():
    with pytest.raises(TypeError, match="Tier.name"):
        Tier("", 1.0)
    with pytest.raises(ValueError, match="Tier.ability"):
        Tier("a", 1.0, ability=1.5)
    with pytest.raises(ValueError, match="tiers: names must be unique"):
        route({"consequence": [1.0], "difficulty": [0.5]}, [Tier("a", 1), Tier("a", 2)], 2)
    with pytest.raises(TypeError, match="tiers"):
        route({"consequence": [1.0], "difficulty": [0.5]}, Tier("a", 1), 2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(consequence=[1.0, -1.0], success=[[0.1, 0.2], [0.3, 0.4]]), "consequence"),
    (dict(consequence=[1.0, 1.0], success=[[0.1, 0.2]]), "success: expected shape"),
    (dict(consequence=[1.0], success=[[0.1, 1.2]]), "success: expected probabilities"),
    (dict(consequence=[1.0], success=[[0.1, float("nan")]]), "success: contains NaN"),
    (dict(consequence=[1.0]), "exactly one of success"),
    (dict(consequence=[1.0], success=[[0.1, 0.2]], difficulty=[0.5]), "exactly one of success"),
    (dict(consequence=[1.0], difficulty=[1.5]), "difficulty"),
    (dict(consequence=[1.0, 2.0], difficulty=[0.5]), "difficulty: expected shape"),
    (dict(consequence=[], difficulty=[]), "no tasks"),
    (dict(consequence=[1.0], difficulty=[0.5], ids=["a", "b"]), "ids"),
])
def test_make_tasks_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_tasks(TWO, **kwargs)


def test_route_arguments_checked():
    tasks = {"consequence": [1.0, 2.0], "difficulty": [0.2, 0.8]}
    with pytest.raises(ValueError, match="policy"):
        route(tasks, TWO, 4.0, policy="greedy")
    with pytest.raises(ValueError, match="budget: 1 is below the cheapest routing"):
        route(tasks, TWO, 1.0)
    with pytest.raises(ValueError, match="budget: is NaN"):
        route(tasks, TWO, float("nan"))
    with pytest.raises(TypeError, match="budget"):
        route(tasks, TWO, "lots")
    with pytest.raises(ValueError, match="unknown field"):
        route({**tasks, "cost": [1, 2]}, TWO, 4.0)
    with pytest.raises(ValueError, match="missing field 'consequence'"):
        route({"difficulty": [0.5]}, TWO, 4.0)
    with pytest.raises(TypeError, match="tasks"):
        route(3.0, TWO, 4.0)
    built = make_tasks(TWO, consequence=[1.0], difficulty=[0.5])
    with pytest.raises(ValueError, match="built for tiers"):
        route(built, (Tier("x", 1.0), Tier("y", 2.0)), 4.0)


def test_records():
    recs = [{"id": "a", "consequence": 1.0, "success": {"large": 0.9, "small": 0.5}},
            {"id": "b", "consequence": 10.0, "success": [0.2, 0.6]}]
    t = schedule.tasks_from_records(recs, TWO)
    assert t.ids.tolist() == ["a", "b"]
    np.testing.assert_array_equal(t.success, [[0.5, 0.9], [0.2, 0.6]])
    r = route(recs, TWO, 5.0, policy="lagrangian")
    assert r.tier_names == ["small", "large"] and r.to_dict()["routing"] == {"a": "small", "b": "large"}
    with pytest.raises(ValueError, match="record 1 gives 'difficulty'"):
        schedule.tasks_from_records([recs[0], {"consequence": 1.0, "difficulty": 0.3}], TWO)
    with pytest.raises(ValueError, match="record 0 has no 'consequence'"):
        schedule.tasks_from_records([{"success": [0.1, 0.2]}], TWO)
    with pytest.raises(ValueError, match=r"tier\(s\) \['large'\]"):
        schedule.tasks_from_records([{"consequence": 1, "success": {"small": 0.1}}], TWO)
    with pytest.raises(TypeError, match="record 0 is a list"):
        schedule.tasks_from_records([[1.0, 0.5]], TWO)
    with pytest.raises(ValueError, match="no records"):
        schedule.tasks_from_records([], TWO)


# --------------------------------------------------------------------------------------------
# The difficulty model


def test_difficulty_model():
    tiers = (Tier("b", 4.0), Tier("a", 1.0), Tier("c", 9.0))  # abilities by cost rank
    d = np.linspace(0, 1, 11)
    s = schedule.success_from_difficulty(d, tiers)
    assert s.shape == (11, 3)
    assert (np.diff(s, axis=0) < 0).all(), "harder tasks succeed less"
    assert (s[:, 2] > s[:, 0]).all() and (s[:, 0] > s[:, 1]).all(), "dearer tiers succeed more"
    half = schedule.success_from_difficulty([0.5], tiers)  # a_b = 2/4 by rank 1 of 3
    assert half[0, 0] == pytest.approx(0.5)
    explicit = (Tier("x", 1, ability=0.3), Tier("y", 2, ability=0.9))
    assert schedule.success_from_difficulty([0.3], explicit)[0, 0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="ability"):
        schedule.success_from_difficulty([0.3], (Tier("x", 1, ability=0.3), Tier("y", 2)))


# --------------------------------------------------------------------------------------------
# Policies


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_routings())
def test_every_policy_spends_within_budget(problem):
    tasks, tiers, budget = problem
    n = len(tasks)
    for policy in AVAILABLE:
        r = route(tasks, tiers, budget, policy)
        assert r.tier.shape == (n,) and ((0 <= r.tier) & (r.tier < len(tiers))).all()
        w = np.array([t.cost for t in tiers])
        assert r.spend == pytest.approx(math.fsum(w[r.tier]))
        assert r.spend <= budget, policy
        s = tasks.success[np.arange(n), r.tier]
        assert r.loss == pytest.approx(math.fsum(tasks.consequence * (1 - s)))
        assert r.accuracy == pytest.approx(s.mean())


@needs_exact
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_routings(max_n=6, max_k=3))
def test_optimal_matches_brute_force(problem):
    tasks, tiers, budget = problem
    r = route(tasks, tiers, budget, "optimal")
    assert r.loss == pytest.approx(brute_force_loss(tasks, tiers, budget), abs=1e-9)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 8), st.integers(0, 2**32 - 1), st.floats(0, 1))
def test_priority_is_optimal_with_two_tiers_and_one_upgrade_price(n, seed, frac):
    rng = np.random.default_rng(seed)
    tasks = make_tasks(TWO, consequence=rng.choice([1.0, 5.0, 25.0], n), success=rng.random((n, 2)))
    budget = n * (1 + 3 * frac)
    r = route(tasks, TWO, budget, "priority")
    assert r.loss == pytest.approx(brute_force_loss(tasks, TWO, budget), abs=1e-9)


@needs_exact
@pytest.mark.parametrize("setting", ["published", "general"])
def test_optimal_is_no_worse_than_any_policy_at_every_budget(setting):
    wl = schedule.published_setting() if setting == "published" else schedule.general_setting(n=120)
    for _, budget in wl.budgets:
        rs = route_all(wl.tasks, wl.tiers, budget)
        opt = rs["optimal"].loss
        for p, r in rs.items():
            assert opt <= r.loss + 1e-9 * max(1.0, r.loss), (p, budget)


@needs_exact
def test_general_setting_defeats_the_sort_heuristic():
    wl = schedule.general_setting()
    gaps = [route(wl.tasks, wl.tiers, b, "priority").loss - route(wl.tasks, wl.tiers, b, "optimal").loss
            for _, b in wl.budgets]
    assert max(gaps) > 1.0


def test_difficulty_and_consequence_differ_where_they_should():
    # A trivial task with a big gain from the big tier, and a costly one with a smaller gain;
    # one upgrade affordable: accuracy upgrades the first, consequence the second.
    tasks = make_tasks(TWO, consequence=[1.0, 100.0], success=[[0.2, 0.9], [0.6, 0.8]],
                       ids=["typo", "database"])
    budget = 1.0 + 4.0
    by_diff = route(tasks, TWO, budget, "difficulty")
    by_cons = route(tasks, TWO, budget, "lagrangian")
    assert by_diff.tier_names == ["large", "small"]
    assert by_cons.tier_names == ["small", "large"]
    assert by_cons.loss < by_diff.loss and by_diff.accuracy > by_cons.accuracy


@pytest.mark.parametrize("setting", ["published", "general"])
def test_lagrangian_beats_difficulty_on_shipped_workloads(setting):
    wl = schedule.published_setting() if setting == "published" else schedule.general_setting()
    label, budget = wl.budgets[0]
    d = route(wl.tasks, wl.tiers, budget, "difficulty")
    c = route(wl.tasks, wl.tiers, budget, "lagrangian")
    assert (d.tier != c.tier).any()
    assert c.loss < 0.95 * d.loss
    assert d.accuracy >= c.accuracy - 1e-12  # what each one optimises


def test_uniform_is_random_mix_of_two_adjacent_tiers():
    tasks = make_tasks(TWO, consequence=np.ones(300), difficulty=np.linspace(0, 1, 300))
    b = schedule.premium_share_budget(300, TWO, 0.25)
    r = route(tasks, TWO, b, "uniform", seed=3)
    assert r.counts == {"small": 225, "large": 75} and r.spend == b
    assert (route(tasks, TWO, b, "uniform", seed=3).tier == r.tier).all()
    assert route(tasks, TWO, 300 * 4.0, "uniform").counts == {"small": 0, "large": 300}
    three = (Tier("a", 1), Tier("b", 2), Tier("c", 5))
    t3 = make_tasks(three, consequence=np.ones(10), difficulty=np.full(10, 0.5))
    r3 = route(t3, three, 10 * 2 + 7, "uniform")
    assert r3.counts == {"a": 0, "b": 8, "c": 2} and r3.spend <= 27


def test_priority_skips_upgrades_without_gain():
    tasks = make_tasks(TWO, consequence=[5.0, 5.0], success=[[0.9, 0.8], [0.5, 0.5]])
    r = route(tasks, TWO, 100.0, "priority")
    assert r.tier_names == ["small", "small"]


def test_tiers_in_any_order():
    tiers = (Tier("large", 4.0), Tier("small", 1.0))
    tasks = make_tasks(tiers, consequence=[1.0, 100.0], success=[[0.9, 0.2], [0.8, 0.6]])
    for p in AVAILABLE:
        r = route(tasks, tiers, 5.0, p)
        assert r.spend <= 5.0
        if p in ("lagrangian", "priority", "consequence", "optimal"):
            assert r.tier_names == ["small", "large"], p


# --------------------------------------------------------------------------------------------
# Shipped workloads


def test_shipped_csv_is_package_data_and_matches_the_generator():
    res = resources.files("apportion").joinpath("data").joinpath("tasks.csv")
    assert res.is_file()
    shipped = schedule.shipped_tasks()
    made, levels = schedule.published_tasks(300, seed=0)
    assert len(shipped) == 300
    assert shipped.ids.tolist() == made.ids.tolist()
    np.testing.assert_array_equal(shipped.consequence, made.consequence)
    np.testing.assert_array_equal(shipped.success, made.success)
    assert sorted(set(levels)) == ["high", "low", "medium"]
    assert schedule.write_tasks_csv(made, levels) == res.read_text(encoding="utf-8")


def test_published_setting_shape():
    wl = schedule.published_setting()
    assert len(wl.tasks) == 300
    assert [t.cost for t in wl.tiers] == [1.0, 4.0]
    assert set(np.unique(wl.tasks.consequence)) == {1.0, 5.0, 25.0}
    b25 = dict(wl.budgets)["25% premium"]
    assert b25 == 300 * 0.75 + 75 * 4
    # difficulty is independent of consequence (by construction; a loose check on the sample)
    d = wl.tasks.difficulty
    for level in (1.0, 5.0, 25.0):
        assert 0.35 < d[wl.tasks.consequence == level].mean() < 0.65


def test_general_setting_is_the_hard_kind():
    wl = schedule.general_setting()
    w = np.array([t.cost for t in wl.tiers])
    assert len(w) >= 4 and len(set(np.diff(w))) > 1, "unequal upgrade costs"
    s = wl.tasks.success
    gains = np.diff(s, axis=1)
    assert (gains[:, 1:] > gains[:, :-1] + 1e-9).any(), "some success curves are not concave"
    top = len(wl.tasks) * w.max()
    fracs = [b / top for _, b in wl.budgets]
    assert min(fracs) >= 0.099 and max(fracs) <= 0.9


def test_csv_reader_accepts_success_columns():
    text = "id,consequence,p_small,p_large\na,2,0.5,0.9\nb,3,0.1,0.4\n"
    t = schedule.read_tasks_csv(text, TWO)
    np.testing.assert_array_equal(t.success, [[0.5, 0.9], [0.1, 0.4]])
    with pytest.raises(ValueError, match="tasks CSV: missing column 'consequence'"):
        schedule.read_tasks_csv("id,difficulty\na,0.5\n", TWO)
    with pytest.raises(ValueError, match="tasks CSV"):
        schedule.read_tasks_csv("id,consequence\na,1\n", TWO)


def test_consequence_routes_by_consequence_alone():
    # The published consequence-aware baseline: the premium tier for the highest consequences
    # the budget pays for, whatever the gain (task "sure" gains nothing from it).
    tasks = make_tasks(TWO, consequence=[1.0, 25.0, 5.0, 25.0],
                       success=[[0.1, 0.9], [0.95, 0.95], [0.5, 0.6], [0.2, 0.9]])
    r = route(tasks, TWO, 4 * 1.0 + 2 * 3.0, "consequence")
    assert r.tier_names == ["small", "large", "small", "large"] and r.spend == 10.0
    # ties in task order; the same successes with other consequences route otherwise
    r = route(make_tasks(TWO, consequence=[5.0, 5.0], success=[[0.9, 0.8], [0.5, 0.5]]), TWO,
              5.0, "consequence")
    assert r.tier_names == ["large", "small"]


def test_consequence_climbs_tiers_in_consequence_order():
    three = (Tier("a", 1), Tier("b", 2), Tier("c", 5))
    tasks = make_tasks(three, consequence=[1.0, 3.0, 2.0], success=np.full((3, 3), 0.5))
    # 3 on "a" = 3, then task 1 takes b (+1) and c (+3), task 2 takes b (+1): 8
    r = route(tasks, three, 8.0, "consequence")
    assert r.tier_names == ["a", "c", "b"] and r.spend == 8.0


def test_published_setting_orders_the_policies_as_published():
    # difficulty > consequence > priority = optimal in loss at the published budget (25%)
    wl = schedule.published_setting()
    budget = dict(wl.budgets)["25% premium"]
    loss = {p: route(wl.tasks, wl.tiers, budget, p).loss
            for p in ("difficulty", "consequence", "priority", "lagrangian")}
    assert loss["difficulty"] > loss["consequence"] > loss["priority"]
    assert loss["priority"] == pytest.approx(loss["lagrangian"], rel=1e-9)


def test_route_takes_a_dataframe():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"id": ["typo", "database"], "consequence": [1.0, 100.0],
                          "p_small": [0.2, 0.6], "p_large": [0.9, 0.8], "level": ["low", "high"]})
    r = route(frame, TWO, 5.0, "optimal")
    assert r.tier_names == ["small", "large"] and list(r.ids) == ["typo", "database"]
    records = [{"id": "typo", "consequence": 1.0, "success": {"small": 0.2, "large": 0.9}},
               {"id": "database", "consequence": 100.0, "success": {"small": 0.6, "large": 0.8}}]
    assert r.loss == route(records, TWO, 5.0, "optimal").loss
    by_difficulty = pd.DataFrame({"consequence": [1.0, 5.0], "difficulty": [0.2, 0.9]},
                                 index=["a", "b"])
    r = route(by_difficulty, TWO, 5.0, "lagrangian")
    assert list(r.ids) == ["a", "b"] and r.spend <= 5.0
    with pytest.raises(ValueError, match="'difficulty' column or columns"):
        route(pd.DataFrame({"consequence": [1.0]}), TWO, 5.0)
    with pytest.raises(ValueError, match="no 'consequence' column"):
        route(pd.DataFrame({"difficulty": [0.5]}), TWO, 5.0)


def test_heuristics_spend_the_budget_to_the_last_upgrade_that_fits():
    """Regression (found by a fuzzing helper): the heuristics decided fits by running float
    differences, and left budget unused. Costs 0 and 0.3 with a budget of 1.2: four premium
    tasks cost 1.2 by math.fsum (the solver's count, and Routing.spend's), yet "priority" and
    "consequence" stopped at three; "uniform" put 2 of 11 tasks on a tier of 1.97 against 1.44
    in a budget of 17.43 that pays for 3."""
    tiers = [Tier("standard", 0.0), Tier("premium", 0.3)]
    tasks = {"consequence": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "success": [[0.1, 0.9]] * 6}
    for policy in ("priority", "consequence"):
        r = route(tasks, tiers, 1.2, policy)
        assert r.counts["premium"] == 4 and r.spend == 1.2
    tiers = [Tier("small", 1.44), Tier("large", 1.44 + 0.53)]
    tasks = {"consequence": [1.0] * 11, "success": [[0.1, 0.9]] * 11}
    r = route(tasks, tiers, 17.43, "uniform")
    assert r.counts["large"] == 3 and r.spend <= 17.43


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 12), st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_two_tier_heuristics_stop_only_where_one_more_upgrade_does_not_fit(n, cheap, dear, seed):
    # Decimal costs (0.01 steps), whose float sums round: after every heuristic, a task left on
    # the cheap tier means that one more upgrade would cost more than the budget (math.fsum).
    rng = np.random.default_rng(seed)
    w = [cheap / 100, (cheap + dear) / 100]
    tiers = [Tier("cheap", w[0]), Tier("dear", w[1])]
    tasks = {"consequence": list(rng.random(n) + 0.1), "success": [[0.1, 0.9]] * n}
    upgrades = int(rng.integers(0, n + 1))
    budget = math.fsum([w[0]] * (n - upgrades) + [w[1]] * upgrades)
    for policy in ("priority", "consequence", "uniform"):
        r = route(tasks, tiers, budget, policy)
        up = r.counts["dear"]
        assert r.spend <= budget
        assert up == n or math.fsum([w[0]] * (n - up - 1) + [w[1]] * (up + 1)) > budget, policy
        assert up >= upgrades, policy


def test_bad_inputs_are_named():
    """Regressions (found by a fuzzing helper): raw Python errors that named no argument,
    duplicate ids that Routing.to_dict folded into one entry, a numpy sharpness refused."""
    tiers = [Tier("small", 1.0), Tier("large", 4.0)]
    tasks = {"consequence": [1.0, 2.0], "success": [[0.2, 0.9], [0.5, 0.8]]}
    with pytest.raises(ValueError, match="ids: label 'x' names more than one task"):
        route(dict(tasks, ids=["x", "x"]), tiers, 5.0)
    with pytest.raises(TypeError, match="ids: expected a sequence of 2 labels"):
        route(dict(tasks, ids=5), tiers, 5.0)
    for seed, kind in ((-1, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(kind, match="seed: expected an int >= 0"):
            route(tasks, tiers, 5.0, policy="uniform", seed=seed)
    for ability in ("x", [0.5]):
        with pytest.raises(TypeError, match="Tier.ability"):
            Tier("a", 1.0, ability=ability)
    for source in (b"id,consequence,difficulty\na,1,0.5\n", None):
        with pytest.raises(TypeError, match="text_or_file"):
            schedule.read_tasks_csv(source, tiers)
    assert schedule.success_from_difficulty([0.5], tiers, sharpness=np.float32(8)).shape == (1, 2)
    with pytest.raises(ValueError, match="sharpness"):
        schedule.success_from_difficulty([0.5], tiers, sharpness=True)
    pd = pytest.importorskip("pandas")
    with pytest.raises(ValueError, match="column.*'consequence'.*not numbers"):
        route(pd.DataFrame({"consequence": ["x"], "difficulty": [0.5]}), tiers, 5.0)


def test_workload_arguments_are_named():
    # Found by a fuzzing helper: only n and k were checked; batch=0 gave an empty batch,
    # routing past 1024 tiers infinite costs, R=-5 an instance, the rest numpy's messages.
    from apportion import workloads
    for kind, kwargs, name in (("strongly", dict(batch=0), "batch"), ("strongly", dict(batch=-1), "batch"),
                               ("strongly", dict(seed=-1), "seed"), ("strongly", dict(seed=1.5), "seed"),
                               ("strongly", dict(R=0), "R"), ("strongly", dict(R=-5), "R"),
                               ("strongly", dict(R=2**63), "R"), ("routing", dict(k=1100), "k"),
                               ("nope", {}, "kind")):
        with pytest.raises(ValueError, match=f"^{name}: "):
            workloads.instance(kind, 3, kwargs.pop("k", 2), **kwargs)
