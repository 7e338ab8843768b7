"""The Solution type: to_dict, repr, indexing a batch, stopped_by, and the typed API."""

import json
import logging
import math

import numpy as np
import pytest

import apportion
from apportion import workloads
from apportion._problem import json_ready


def test_to_dict_is_json_and_round_trips_the_fields():
    rng = np.random.default_rng(0)
    values = rng.random((20, 4))
    sol = apportion.solve(values, [0.0, 1.0, 2.0, 4.0], 10.0)
    d = sol.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert back["choice"] == sol.choice.tolist() and back["value"] == sol.value
    assert back["status"] == sol.status and back["seconds"] == sol.seconds
    assert "seconds" not in sol.to_dict(timings=False)


def test_to_dict_of_a_batch_with_infeasible_and_losses():
    values = np.zeros((3, 2, 2))
    sol = apportion.solve(values, [1.0, 2.0], [2.0, 3.0, 1.0], sense="min")
    d = sol.to_dict(timings=False)
    json.dumps(d, allow_nan=False)
    assert d["status"] == ["optimal", "optimal", "infeasible"]
    assert d["bound"][2] is None and d["gap"][2] is None and d["shadow_price"][2] is None
    assert all(math.copysign(1.0, v) == 1.0 for v in d["value"])  # no -0.0
    assert "-0.0" not in json.dumps(d)


def test_json_ready_keeps_types():
    assert json_ready(np.float32(1.5)) == 1.5 and type(json_ready(np.int64(3))) is int
    assert json_ready(np.array([[-0.0, np.inf], [1.0, np.nan]])) == [[0.0, None], [1.0, None]]
    assert json_ready({1: np.bool_(True), "x": (np.int8(2),)}) == {"1": True, "x": [2]}


def test_repr_is_short():
    values, costs, budget = workloads.instance("routing", 10_000, 8, seed=0)
    sol = apportion.solve(values, costs, budget)
    text = repr(sol)
    assert len(text) < 250 and "N=10000" in text and sol.status in text
    batch = apportion.solve(*workloads.instance("routing", 500, 4, batch=64, seed=0))
    text = repr(batch)
    assert len(text) < 250 and "B=64" in text and "'optimal': 64" in text


@pytest.mark.parametrize("method", ["lagrangian", "exact", "dp", "mirror"])
def test_indexing_a_batch_gives_each_instance(method):
    values, costs, budget = workloads.instance("uncorrelated", 30, 4, batch=5, R=100, seed=1)
    budget = budget.copy()
    budget[3] = 0.0  # infeasible
    batch = apportion.solve(values, costs, budget, method=method, threads=1)
    assert batch.batched and len(batch) == 5
    for i in (0, 3, -1):
        alone = apportion.solve(values[i], costs[i], budget[i], method=method, threads=1)
        one = batch[i]
        assert not one.batched and one.method == alone.method and one.sense == alone.sense
        assert one.choice.tolist() == alone.choice.tolist()
        assert one.status == alone.status and isinstance(one.status, str)
        for field in ("value", "cost", "bound", "gap", "shadow_price", "min_budget"):
            a, b = getattr(one, field), getattr(alone, field)
            assert isinstance(a, float), field
            assert (a == b) or (math.isnan(a) and math.isnan(b)), (field, a, b)
        # info: the dp's table_bytes are those of the call (a batch solves several at once)
        drop = ("info",) if method == "dp" else ()
        assert ({k: v for k, v in one.to_dict(timings=False).items() if k not in drop}
                == {k: v for k, v in alone.to_dict(timings=False).items() if k not in drop})


def test_indexing_errors():
    single = apportion.solve([[0.0, 1.0]], [0.0, 1.0], 1.0)
    with pytest.raises(TypeError, match="batched"):
        single[0]
    with pytest.raises(TypeError, match="batched"):
        len(single)
    batch = apportion.solve(np.ones((2, 1, 2)), [0.0, 1.0], 1.0)
    with pytest.raises(IndexError, match="instance 2 out of range for a batch of 2"):
        batch[2]
    with pytest.raises(TypeError, match="int instance number"):
        batch[0.5]
    assert [s.value for s in batch] == [1.0, 1.0]  # iterable through __getitem__


def test_stopped_by_names_the_limit(caplog):
    values, costs, budget = workloads.instance("strongly", 3000, 10, seed=0)
    with caplog.at_level(logging.WARNING, logger="apportion"):
        by_states = apportion.solve(values, costs, budget, method="exact", max_states=5)
    assert by_states.status == "feasible" and by_states.info["stopped_by"] == "max_states"
    assert by_states.gap > 0 and by_states.cost <= budget
    assert any("max_states" in r.getMessage() for r in caplog.records)
    by_time = apportion.solve(values, costs, budget, method="exact", time_limit=1e-9)
    assert by_time.status == "feasible" and by_time.info["stopped_by"] == "time_limit"
    done = apportion.solve(values[:50], costs[:50], budget / 60, method="exact")
    assert done.status == "optimal" and "stopped_by" not in done.info


def test_stopped_by_in_a_batch():
    values, costs, budget = workloads.instance("strongly", 400, 10, batch=4, seed=2)
    easy = workloads.instance("uncorrelated", 400, 10, batch=4, seed=2)
    values, costs, budget = (np.concatenate([a, b]) for a, b in zip((values, costs, budget), easy))
    sol = apportion.solve(values, costs, budget, method="exact", max_states=20)
    stopped = sol.info["stopped_by"]
    feasible = np.asarray(sol.status) == "feasible"
    assert feasible.any() and stopped.shape == (8,)
    assert [s is not None for s in stopped] == [bool(f) for f in feasible]
    for i in range(8):
        assert ("stopped_by" in sol[i].info) == bool(feasible[i])
    assert json.dumps(sol.to_dict())


def test_literal_types_are_exported():
    from typing import get_args

    from apportion._problem import Method, Sense, Status

    assert set(get_args(Method)) == set(apportion.api.METHODS)
    assert set(get_args(Sense)) == {"max", "min"}
    assert set(get_args(Status)) == {"optimal", "feasible", "infeasible", "unknown"}


def test_stopped_by_the_workspace_bytes_limit():
    # The core's third work limit (ExactLimits.max_bytes; no solve() keyword yet) reports too.
    import time

    from apportion import _core
    from apportion._problem import make_problem, make_solution

    values, costs, budget = workloads.instance("strongly", 3000, 10, seed=0)
    problem = make_problem(values, costs, budget)
    raw = _core.exact(problem.values, problem.costs, problem.budget, problem.mask,
                      problem.value_sign, 10.0, 10**8, 1, max_bytes=1)
    assert int(raw[6][0]) == 6  # kStoppedByBytes
    sol = make_solution(problem, raw, "exact", time.perf_counter())
    assert sol.status == "feasible" and sol.info["stopped_by"] == "max_bytes"


def _same_solution(fast, general):
    """fast and general are the same Solution but for `seconds`: type, every field's type and
    value (NaN and -0.0 by repr), the choice array's dtype, repr and pickle."""
    import dataclasses
    import pickle

    assert type(fast) is type(general) is apportion.Solution
    assert type(fast.choice) is np.ndarray and fast.choice.dtype == general.choice.dtype == np.int64
    assert fast.choice.tolist() == general.choice.tolist()
    # A new array of its own (the general path's is a row of its (1,N) output).
    fresh = np.empty(fast.choice.shape, np.int64)
    assert fast.choice.flags == fresh.flags and fast.choice.strides == fresh.strides
    for field in dataclasses.fields(apportion.Solution):
        if field.name in ("choice", "seconds"):
            continue
        a, b = getattr(fast, field.name), getattr(general, field.name)
        assert type(a) is type(b) and repr(a) == repr(b), field.name
    assert type(fast.seconds) is float and fast.seconds > 0
    same_time = dataclasses.replace(fast, seconds=general.seconds)
    assert repr(same_time) == repr(general)
    assert pickle.loads(pickle.dumps(same_time)).to_dict() == general.to_dict()
    assert same_time.to_dict() == general.to_dict()


@pytest.mark.parametrize("method", ["auto", "lagrangian", "exact"])
@pytest.mark.parametrize("sense", ["max", "min"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("per_item_costs", [False, True])
def test_the_one_instance_path_gives_the_general_paths_solution(method, sense, dtype, per_item_costs,
                                                                monkeypatch):
    # device="cpu" takes the general path (make_problem, the batched core, make_solution) with
    # the same arrays.
    from apportion import _core

    taken = []
    one = _core.solve_one
    monkeypatch.setattr(_core, "solve_one", lambda *args: taken.append(1) or one(*args))
    values, costs, budget = workloads.instance("routing", 40, 5, seed=3)
    values = (values if sense == "max" else -values).astype(dtype)
    costs = (np.broadcast_to(costs, values.shape).copy() if per_item_costs else costs).astype(dtype)
    for b in (budget, float(budget), int(budget), 0.0, float("inf"), np.float64(budget) / 3):
        fast = apportion.solve(values, costs, b, method=method, sense=sense)
        general = apportion.solve(values, costs, b, method=method, sense=sense, device="cpu")
        _same_solution(fast, general)
    assert len(taken) == 6
    assert apportion.solve(values, costs, 0.0, method=method, sense=sense).status == "infeasible"


@pytest.mark.parametrize("limit", [dict(max_states=5), dict(time_limit=1e-9)])
def test_the_one_instance_path_reports_a_stopped_solve_as_the_general_path(limit):
    values, costs, budget = workloads.instance("strongly", 3000, 10, seed=0)
    fast = apportion.solve(values, costs, budget, method="exact", **limit)
    general = apportion.solve(values, costs, budget, method="exact", device="cpu", **limit)
    assert fast.status == "feasible" and "stopped_by" in fast.info
    if "max_states" in limit:  # (a time limit stops where the clock says)
        _same_solution(fast, general)
    else:
        assert general.info == fast.info


def test_one_instance_info_holds_scalars_as_its_batch_entry_does():
    # Found by a fuzzing helper: dp with cost_resolution gave info["quantised_budget"] as a
    # (1,) array for one instance, and a float for the same instance taken from a batch.
    v, c = np.array([[0.0, 1.0], [0.0, 2.0]]), np.array([[0.0, 0.25], [0.0, 0.3]])
    alone = apportion.solve(v, c, 0.45, method="dp", cost_resolution=0.05)
    batch = apportion.solve(v[None], c[None], [0.45], method="dp", cost_resolution=0.05)
    assert alone.info == batch[0].info and isinstance(alone.info["quantised_budget"], float)
