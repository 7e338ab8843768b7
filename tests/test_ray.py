"""apportion.ray on a local Ray cluster (one per module): sharded solves equal to one process,
Ray Data, online allocation across servers under one budget, and faults (a worker killed
mid-batch, a server killed mid-stream). Skipped where ray is not installed, except the check
that `import apportion` does not import ray."""

import importlib.util
import math
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import apportion
from conftest import restore_faulthandler

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install 'apportion[ray]')")

FIELDS = ("choice", "value", "cost", "bound", "gap", "status", "shadow_price", "min_budget", "method", "sense")


def test_import_apportion_does_not_import_ray():
    code = "import sys, apportion; assert 'ray' not in sys.modules, 'ray was imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_apportion_ray_without_ray_names_the_install_command():
    code = ("import sys; sys.modules['ray'] = None\nimport apportion\n"
            "try:\n    apportion.ray\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert 'pip install "apportion[ray]"' in out.stdout, out.stderr


@needs_ray
def test_apportion_ray_is_a_lazy_submodule():
    code = "import apportion; print(callable(apportion.ray.solve), callable(apportion.ray.simulate_online))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True True", out.stderr


def _fault_hook(fault_dir):
    """A worker setup hook that makes the first `apportion.solve` call, in any worker, after the
    file `armed` appears in fault_dir, kill its worker process (os._exit), leaving the marker
    `died` (created atomically, so exactly one call dies)."""
    def hook():
        import apportion.api as api

        solve = api.solve

        def solve_or_die(*args, **kwargs):
            if os.path.exists(os.path.join(fault_dir, "armed")):
                try:
                    fd = os.open(os.path.join(fault_dir, "died"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass
                else:
                    os.close(fd)
                    os._exit(1)
            return solve(*args, **kwargs)

        api.solve = solve_or_die
    return hook


def _init(fault_dir):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": _fault_hook(str(fault_dir))})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local Ray cluster for the module; yields the fault directory of `_fault_hook`."""
    if not HAVE_RAY:
        pytest.skip("ray is not installed")
    import ray

    if ray.is_initialized():
        ray.shutdown()
    fault_dir = tmp_path_factory.mktemp("ray_faults")
    _init(fault_dir)
    yield fault_dir
    ray.shutdown()
    restore_faulthandler()


@pytest.fixture
def ar(cluster):
    import apportion.ray as ar

    return ar


def _same(got, want, skip_info=("table_bytes",)):
    for name in FIELDS:
        g, w = getattr(got, name), getattr(want, name)
        if isinstance(w, np.ndarray) and w.dtype.kind == "f":
            np.testing.assert_array_equal(g, w, err_msg=name)  # NaN == NaN here
        else:
            assert np.array_equal(g, w), name
    assert set(got.info) == set(want.info)
    for key, w in want.info.items():
        if key not in skip_info:
            np.testing.assert_array_equal(got.info[key], w, err_msg=key)


def _batch(B, N=20, K=4, seed=0, integer=True):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(B, N, K))
    costs = rng.integers(0, 9, (B, N, K)).astype(float) if integer else rng.uniform(0, 9, (B, N, K))
    budget = rng.uniform(0.2, 0.6, B) * costs.max(axis=2).sum(axis=1)
    return values, costs, budget


# -- sharded solve -------------------------------------------------------------------------------

@needs_ray
@pytest.mark.parametrize("method", ["auto", "lagrangian", "exact", "dp", "mirror"])
def test_sharded_solve_equals_solve(ar, method):
    values, costs, budget = _batch(7, seed=1)
    budget[2] = 0.5  # below the cheapest allocation: infeasible in both
    mask = np.ones(values.shape, bool)
    mask[:, ::3, 0] = False
    for kwargs in ({}, {"mask": mask}, {"sense": "min"}):
        want = apportion.solve(values, costs, budget, method=method, **kwargs)
        got = ar.solve(values, costs, budget, method=method, shards=3, **kwargs)
        _same(got, want)
    # Shared tier costs and a scalar budget are broadcast to every shard.
    want = apportion.solve(values, costs[0, 0], 11.0, method=method)
    _same(ar.solve(values, costs[0, 0], 11.0, method=method, shards=4), want)


@needs_ray
def test_sharded_solve_dp_options_and_resources(ar):
    values, costs, budget = _batch(6, seed=2, integer=False)
    for kwargs in ({"cost_resolution": 0.25}, {"cost_resolution": 0.5, "exact_spend": True}):
        want = apportion.solve(values, costs, budget, method="dp", **kwargs)
        _same(ar.solve(values, costs, budget, method="dp", shards=4, **kwargs), want)
    # Two resources (method mirror): costs (B,N,K,R) and budgets (B,R) are split, (1,R) shared.
    rng = np.random.default_rng(3)
    costs2 = rng.uniform(0, 5, values.shape + (2,))
    budget2 = rng.uniform(20, 40, (6, 2))
    want = apportion.solve(values, costs2, budget2, method="mirror")
    _same(ar.solve(values, costs2, budget2, method="mirror", shards=4), want)
    want = apportion.solve(values, costs2, budget2[:1], method="mirror")
    _same(ar.solve(values, costs2, budget2[:1], method="mirror", shards=3), want)


@needs_ray
@settings(max_examples=12, deadline=None)
@given(B=st.integers(1, 9), shards=st.integers(1, 5), seed=st.integers(0, 2**16),
       method=st.sampled_from(["lagrangian", "exact", "dp"]))
def test_sharded_solve_any_split(cluster, B, shards, seed, method):
    import apportion.ray as ar

    values, costs, budget = _batch(B, N=9, K=3, seed=seed)
    _same(ar.solve(values, costs, budget, method=method, shards=shards),
          apportion.solve(values, costs, budget, method=method))


@needs_ray
def test_sharded_solve_one_instance_and_float32(ar):
    values, costs, budget = _batch(1, seed=4)
    _same(ar.solve(values[0], costs[0], float(budget[0])),
          apportion.solve(values[0], costs[0], float(budget[0])))
    v32, c32 = values.astype(np.float32), costs.astype(np.float32)
    _same(ar.solve(v32, c32, budget, shards=1), apportion.solve(v32, c32, budget))


@needs_ray
def test_sharded_solve_takes_cpu_tensors(ar):
    torch = pytest.importorskip("torch")
    values, costs, budget = _batch(5, seed=16)
    got = ar.solve(torch.from_numpy(values), torch.from_numpy(costs), torch.from_numpy(budget), shards=2)
    _same(got, apportion.solve(values, costs, budget))
    assert isinstance(got.choice, np.ndarray)


@needs_ray
def test_list_of_refs_and_return_refs(ar):
    import ray

    values, costs, budget = _batch(9, seed=5)
    want = apportion.solve(values, costs, budget)
    parts = [(0, 4), (4, 5), (5, 9)]
    refs = [ray.put(values[lo:hi]) for lo, hi in parts]
    got = ar.solve(refs, [ray.put(costs[lo:hi]) for lo, hi in parts], [budget[lo:hi] for lo, hi in parts])
    _same(got, want)
    shared = apportion.solve(values, costs[0], 12.0, method="exact")
    _same(ar.solve(refs, costs[0], 12.0, method="exact"), shared)
    out = ar.solve(values, costs, budget, shards=3, return_refs=True)
    assert len(out) == 3 and all(isinstance(r, ray.ObjectRef) for r in out)
    _same(ar.concatenate(ray.get(out)), want)


@needs_ray
def test_sharded_solve_errors_name_the_argument(ar):
    values, costs, budget = _batch(4, seed=6)
    with pytest.raises(ValueError, match="shards"):
        ar.solve(values, costs, budget, shards=0)
    with pytest.raises(TypeError, match="return_refs"):
        ar.solve(values, costs, budget, return_refs="yes")
    bad = values.copy()
    bad[3, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"values.*instances 2\.\.3"):
        ar.solve(bad, costs, budget, shards=2)
    with pytest.raises(ValueError, match="method"):
        ar.solve(values, costs, budget, method="nope", shards=2)
    with pytest.raises(ValueError, match="costs: expected one entry per batch"):
        import ray

        ar.solve([ray.put(values)], [costs, costs], budget)


@needs_ray
def test_sharded_solve_edges_found_by_a_fuzzing_helper(ar):
    import ray

    # A shard that stopped nothing has no stopped_by: the merged info was a per-shard list.
    from apportion import workloads

    hard_v, hard_c, hard_b = workloads.instance("strongly", 200, 8, batch=6, seed=1)
    hard_b = np.where(np.arange(6) < 3, np.inf, hard_b)  # the first shard stops nothing
    want = apportion.solve(hard_v, hard_c, hard_b, method="exact", max_states=50)
    got = ar.solve(hard_v, hard_c, hard_b, method="exact", max_states=50, shards=2)
    assert list(want.info["stopped_by"]) == [None] * 3 + ["max_states"] * 3
    _same(got, want)
    assert [got[i].info for i in range(6)] == [want[i].info for i in range(6)]
    values, costs, budget = _batch(6, N=30, K=4, seed=17)
    # Shapes are checked on the whole batch (a shard's shapes were quoted, or costs blamed).
    with pytest.raises(ValueError, match=r"budget: expected a scalar or shape \(6,\), got \(6, 1\)$"):
        ar.solve(values, costs, budget[:, None], shards=2)
    with pytest.raises(ValueError, match=r"costs: shape \(5, 30, 4\) does not broadcast against values \(6, 30, 4\)$"):
        ar.solve(values, costs[:5], budget, shards=2)
    with pytest.raises(TypeError, match="values: "):
        ar.solve(None, costs, budget)
    with pytest.raises(TypeError, match="costs: could not be read"):
        ar.solve(values, [[1, 2], [3]], budget)
    # One instance: shards checked; return_refs joins with concatenate; the choice is the caller's.
    with pytest.raises(ValueError, match="shards"):
        ar.solve(values[0], costs[0], float(budget[0]), shards=0)
    one = ar.solve(values[0], costs[0], float(budget[0]))
    one.choice[0] = 0  # (read-only from the object store before)
    joined = ar.concatenate(ray.get(ar.solve(values[0], costs[0], float(budget[0]), return_refs=True)))
    _same(joined[0], apportion.solve(values[0], costs[0], float(budget[0])))
    with pytest.raises(ValueError, match="solutions: mixed numbers of items N"):
        ar.concatenate([apportion.solve(values, costs, budget), apportion.solve(values[:, :5], costs[:, :5], budget)])
    # A per-batch mask with a list of refs, as costs and budget.
    mask = np.ones(values.shape, bool)
    mask[:, ::4, 0] = False
    parts = [(0, 2), (2, 6)]
    got = ar.solve([ray.put(values[lo:hi]) for lo, hi in parts], [costs[lo:hi] for lo, hi in parts],
                   [budget[lo:hi] for lo, hi in parts], mask=[ray.put(mask[lo:hi]) for lo, hi in parts])
    _same(got, apportion.solve(values, costs, budget, mask=mask))
    # A GPU solve takes no thread count: the tasks no longer get one.
    assert "threads" not in ar._task_threads({"device": "cuda"}, {"num_cpus": 1})


@needs_ray
def test_worker_killed_mid_batch_loses_no_instance(ar, cluster):
    """A worker dies (os._exit) in the middle of a shard; Ray runs the shard again."""
    import ray

    values, costs, budget = _batch(8, seed=7)
    want = apportion.solve(values, costs, budget, method="exact")
    armed, died = cluster / "armed", cluster / "died"
    armed.touch()
    try:
        got = ar.solve(values, costs, budget, method="exact", shards=2)
        assert died.exists(), "no worker died: the fault was not injected"
        _same(got, want)
        # Without retries the same fault loses the shard: the kill really hit a solve task.
        died.unlink()
        with pytest.raises(ray.exceptions.WorkerCrashedError):
            ar.solve(values, costs, budget, method="exact", shards=2, remote_options={"max_retries": 0})
        assert died.exists()
    finally:
        armed.unlink()


# -- Ray Data ------------------------------------------------------------------------------------

@needs_ray
def test_ray_data_parquet_pipeline(ar, tmp_path):
    import ray

    values, costs, budget = _batch(12, seed=8)
    rows = [{"values": values[i], "costs": costs[i], "budget": float(budget[i])} for i in range(12)]
    ray.data.from_items(rows, override_num_blocks=2).write_parquet(str(tmp_path / "instances"))
    ds = ray.data.read_parquet(str(tmp_path / "instances"))
    solved = ds.map_batches(ar.SolveBatches, fn_constructor_kwargs={"method": "exact"},
                            batch_format="numpy", batch_size=5,
                            compute=ray.data.ActorPoolStrategy(size=1))
    out = sorted(solved.take_all(), key=lambda r: r["budget"])
    order = np.argsort(budget)
    assert len(out) == 12
    for row, i in zip(out, order):
        want = apportion.solve(values[i], costs[i], float(budget[i]), method="exact")
        np.testing.assert_array_equal(row["values"], values[i])
        np.testing.assert_array_equal(row["choice"], want.choice)
        for name in ("value", "cost", "bound", "gap", "shadow_price"):
            assert row[name] == getattr(want, name), name
        assert row["status"] == want.status


@needs_ray
def test_solve_batches_ragged_rows_and_tier_costs(ar):
    rng = np.random.default_rng(9)
    shapes = [(5, 3), (7, 3), (5, 3), (4, 2)]
    values = [rng.normal(size=s) for s in shapes]
    costs = [np.arange(s[1], dtype=float) for s in shapes]  # (K,) tier costs per row
    budget = np.array([3.0, 5.0, 4.0, 2.0])

    def column(items):
        col = np.empty(len(items), dtype=object)
        col[:] = items
        return col

    batch = {"values": column(values), "costs": column(costs), "budget": budget}
    out = ar.SolveBatches()(batch)
    for i in range(4):
        want = apportion.solve(values[i], costs[i], budget[i])
        np.testing.assert_array_equal(out["choice"][i], want.choice)
        assert out["value"][i] == want.value and out["status"][i] == want.status
    with pytest.raises(ValueError, match="budget"):
        ar.SolveBatches()({"values": batch["values"], "costs": batch["costs"]})


# -- online allocation across servers -----------------------------------------------------------

def _stream(T=1200, K=4, seed=10):
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 1, (T, K)) * np.array([0.0, 1.0, 1.6, 2.0])[:K]
    costs = np.array([0.0, 1.0, 2.0, 4.0])[:K]
    return values, costs


def _exact_spend(values, costs, choice):
    """The exact total cost of the options played, recomputed from the choices."""
    per = costs if costs.ndim == 2 else np.broadcast_to(costs, values.shape)
    played = choice >= 0
    return sum((Fraction(float(x)) for x in per[np.flatnonzero(played), choice[played]]), Fraction(0))


@needs_ray
def test_one_server_without_sync_is_the_single_allocator(ar):
    values, costs = _stream()
    run = ar.simulate_online(values, costs, 400.0, shards=1, sync_every=None)
    ref = apportion.simulate_online(values, costs, 400.0)
    np.testing.assert_array_equal(run.choice, ref.choice)
    assert run.value == pytest.approx(ref.value, rel=1e-12) and run.regret == pytest.approx(0, abs=1e-9)
    assert run.reference_value == ref.value
    # One resource as a vector: budget (1,), costs (K, 1) (the servers took a scalar budget).
    run1 = ar.simulate_online(values, costs[:, None], np.array([400.0]), shards=1, sync_every=None)
    np.testing.assert_array_equal(run1.choice, ref.choice)


@needs_ray
@pytest.mark.parametrize("sync_every", [None, 7])
def test_budget_never_overspent(ar, sync_every):
    values, costs = _stream(seed=11)
    budget = 0.1 + 1 / 3 * 301  # not a multiple of anything: the split rounds
    run = ar.simulate_online(values, costs, budget, shards=3, sync_every=sync_every)
    spent = _exact_spend(values, costs, run.choice)
    assert spent <= Fraction(budget)
    assert float(spent) == run.spent
    assert run.max_committed <= budget
    assert math.fsum(run.shard_spent) == pytest.approx(run.spent)
    assert run.spent > 0.9 * budget  # the servers spend it, not just stay under it
    assert run.syncs == (0 if sync_every is None else math.ceil(400 / sync_every) - 1)


@needs_ray
def test_budget_moves_to_the_busy_server(ar):
    """Server 0 gets requests worth spending on, server 1 nearly worthless ones: with syncs the
    budget server 1 leaves moves to server 0; without, server 0 stops at its share."""
    values, costs = _stream(T=1000, seed=12)
    route = np.arange(1000) % 2
    values = np.where(route[:, None] == 1, values * 0.01, values)
    budget = 600.0
    alone = ar.simulate_online(values, costs, budget, shards=2, sync_every=None, server=route)
    synced = ar.simulate_online(values, costs, budget, shards=2, sync_every=25, server=route)
    assert alone.shard_spent[0] <= budget / 2
    assert synced.shard_spent[0] > budget / 2 + 50
    assert synced.value > alone.value
    assert _exact_spend(values, costs, synced.choice) <= Fraction(budget)


@needs_ray
def test_server_killed_mid_stream(ar):
    values, costs = _stream(T=1200, seed=13)
    budget = 500.0
    run = ar.simulate_online(values, costs, budget, shards=2, sync_every=60, kill=[(1, 3)])
    assert run.restarts == 1
    # The restarted server refuses the rest of its epoch (it cannot know what it had spent) ...
    assert run.refused == 30
    server1 = np.flatnonzero(np.arange(1200) % 2 == 1)
    assert (run.choice[server1[210:240]] == apportion.online.SKIP).all()
    # ... and spends again from its next allotment on.
    assert (run.choice[server1[240:]] >= 0).any()
    assert _exact_spend(values, costs, run.choice) <= Fraction(budget)
    assert run.max_committed <= budget


@needs_ray
def test_budget_safe_with_two_resources_and_no_skipping(ar):
    rng = np.random.default_rng(14)
    T, K = 600, 3
    values = rng.uniform(0, 1, (T, K))
    costs = rng.uniform(0.1, 1.0, (T, K, 2))
    budget = np.array([200.0, 170.0])
    run = ar.simulate_online(values, costs, budget, shards=3, sync_every=20, skip_allowed=False,
                             mirror="entropy", kill=[(0, 2)])
    played = run.choice >= 0
    for r in range(2):
        total = sum((Fraction(float(x)) for x in costs[np.flatnonzero(played), run.choice[played], r]),
                    Fraction(0))
        assert total <= Fraction(float(budget[r]))
    assert (run.max_committed <= budget).all()
    assert run.shard_spent.shape == (3, 2)


@needs_ray
@settings(max_examples=60, deadline=None)
@given(pool=st.lists(st.floats(0, 1e6), min_size=1, max_size=8),
       weights=st.lists(st.floats(0, 1e3), min_size=1, max_size=8))
def test_split_never_exceeds_the_pool(pool, weights):
    """The float split of handed-back budget, summed exactly, stays within the exact pool."""
    from apportion.ray import _exact_sum, _split

    exact = _exact_sum(pool)
    shares = _split([exact], np.array(weights, dtype=np.float64)[:, None])
    assert (shares >= 0).all()
    assert _exact_sum(shares[:, 0]) <= exact


@needs_ray
def test_simulate_online_errors_name_the_argument(ar):
    values, costs = _stream(T=50)
    with pytest.raises(ValueError, match="shards"):
        ar.simulate_online(values, costs, 10.0, shards=0, sync_every=5)
    with pytest.raises(ValueError, match="sync_every"):
        ar.simulate_online(values, costs, 10.0, shards=2, sync_every=0)
    with pytest.raises(ValueError, match="budget"):
        ar.simulate_online(values, costs, math.inf, shards=2, sync_every=5)
    with pytest.raises(ValueError, match="costs"):
        ar.simulate_online(values, costs[:2], 10.0, shards=2, sync_every=5)
    with pytest.raises(ValueError, match="server"):
        ar.simulate_online(values, costs, 10.0, shards=2, sync_every=5, server=np.full(50, 2))
    with pytest.raises(ValueError, match="kill"):
        ar.simulate_online(values, costs, 10.0, shards=2, sync_every=5, kill=[(2, 0)])


# Last in the module: it restarts the module's cluster.
@needs_ray
def test_shutdown_init_cycle(ar, cluster):
    import ray

    values, costs, budget = _batch(4, seed=15)
    want = apportion.solve(values, costs, budget)
    _same(ar.solve(values, costs, budget, shards=2), want)
    ray.shutdown()
    _init(cluster)
    _same(ar.solve(values, costs, budget, shards=2), want)
