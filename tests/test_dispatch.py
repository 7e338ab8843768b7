"""Run-time CPU dispatch (cpp/cpu_dispatch.hpp): build_info, and the same answers, bit for bit,
at every SIMD level the CPU runs."""

import ctypes
import ctypes.util
import platform
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import apportion
from apportion import _core, workloads


@pytest.fixture
def levels():
    """The compiled levels this CPU runs, lowest first; the CPU's level is restored after."""
    info = apportion.build_info()
    compiled = info["simd_compiled"]
    yield compiled[: compiled.index(info["simd_cpu"]) + 1]
    _core._set_simd_level(info["simd_cpu"])


def test_build_info_names_the_levels_the_compiler_and_cuda():
    info = apportion.build_info()
    assert set(info) == {"simd_compiled", "simd_cpu", "simd_running", "compiler", "cuda_built"}
    assert info["simd_compiled"][0] == "baseline"
    assert set(info["simd_compiled"]) <= {"baseline", "x86-64-v3", "x86-64-v4"}
    assert info["simd_cpu"] in info["simd_compiled"]
    assert info["simd_running"] == info["simd_cpu"]
    assert isinstance(info["compiler"], str) and info["compiler"]
    assert info["cuda_built"] is apportion.cuda_built()


def test_set_simd_level_caps_at_the_cpu_and_names_a_bad_level(levels):
    assert _core._set_simd_level("baseline") == "baseline"
    assert apportion.build_info()["simd_running"] == "baseline"
    assert _core._set_simd_level(levels[-1]) == levels[-1]
    with pytest.raises(ValueError, match="level"):
        _core._set_simd_level("avx9000")


def _answers(values, costs, budget, methods=("lagrangian", "exact"), **kw):
    out = []
    for method in methods:
        s = apportion.solve(values, costs, budget, method=method, threads=1, **kw)
        out.append((s.status, s.value, s.bound, s.cost, s.shadow_price, s.min_budget, s.choice.tolist()))
    return out


def _same_at_every_level(levels, values, costs, budget, **kw):
    answers = {}
    for level in levels:
        _core._set_simd_level(level)
        answers[level] = _answers(values, costs, budget, **kw)
    first = answers[levels[0]]
    for level in levels[1:]:
        # repr: NaN == NaN, and 0.0 against -0.0 would show
        assert repr(answers[level]) == repr(first), level


# N >= 256 takes the reduced LP, whose pass over every item is the dispatched loop; K = 13
# spans several vector widths, K = 3 a partial one.
@pytest.mark.parametrize("kind", workloads.CLASSES)
@pytest.mark.parametrize("n,k", [(300, 3), (1000, 8), (600, 13)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_level_gives_the_same_answers(levels, kind, n, k, dtype):
    for seed in range(3):
        v, c, b = workloads.instance(kind, n, k, seed=seed)
        v, c = v.astype(dtype), c.astype(dtype)
        _same_at_every_level(levels, v, c, b)
        _same_at_every_level(levels, -v, c[0] if seed == 1 else c, b, sense="min")


def test_every_level_gives_the_same_answers_masked_and_batched(levels):
    v, c, b = workloads.instance("uncorrelated", 500, 8, batch=3, seed=4)
    mask = np.random.default_rng(0).random(v.shape) < 0.8
    mask[..., 0] = True
    _same_at_every_level(levels, v, c, b, mask=mask)
    _same_at_every_level(levels, v, c, b)


# The fixture only reads the levels and restores the CPU's at the end: nothing to reset per example.
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(256, 700), k=st.integers(1, 11), seed=st.integers(0, 2**32 - 1),
       ties=st.booleans(), frac=st.floats(0.05, 0.95))
def test_every_level_gives_the_same_answers_on_random_rows(levels, n, k, seed, ties, frac):
    # Small integers tie scores and slopes often; real values exercise the rounding of v - lambda w.
    rng = np.random.default_rng(seed)
    if ties:
        values = rng.integers(0, 6, (n, k)).astype(float)
        costs = rng.integers(0, 6, (n, k)).astype(float)
    else:
        values = rng.standard_normal((n, k)) * np.exp(rng.standard_normal((n, 1)))
        costs = rng.random((n, k)) * 10.0
    lo, hi = costs.min(axis=1).sum(), costs.max(axis=1).sum()
    _same_at_every_level(levels, values, costs, lo + frac * (hi - lo))


def test_bad_input_is_reported_at_every_level(levels):
    v, c, b = workloads.instance("routing", 400, 8, seed=0)
    v[123, 5] = np.nan
    c2 = c.copy()
    c2[321, 2] = -1.0
    for level in levels:
        _core._set_simd_level(level)
        with pytest.raises(ValueError, match="values"):
            apportion.solve(v, c, b, method="lagrangian")
        with pytest.raises(ValueError, match="costs"):
            apportion.solve(np.nan_to_num(v), c2, b, method="lagrangian")


# Float32 input: at the x86-64-v3 and v4 levels the first pass picks in float, 8 and 16 items
# per vector, and hands every item it cannot prove to the double pick (cpp/float_pick.hpp); the
# baseline level always picks in double. These rows are built to reach that hand-over: exact and
# near ties at the break, magnitudes where float products and scores round coarsely, underflow
# to subnormals, slopes beyond float's range, shared cost rows, the min sense, masks, and K that
# fill 8 lanes partly (3), exactly (8) and over two vectors (13).
def _float32_rows(case, n, k, seed):
    rng = np.random.default_rng(seed)
    costs = np.sort(rng.random((n, k)) * 10.0 + 0.5, axis=1)
    values = np.sort(rng.random((n, k)), axis=1) * np.exp(rng.standard_normal((n, 1)))
    if case == "near_ties":
        # every option on the line v = 0.5 w, off it by a few float ulps: every score ties
        # nearly at the break slope 0.5
        values = 0.5 * costs * (1.0 + rng.integers(-3, 4, (n, k)) * 2.0**-24)
    elif case == "exact_ties":
        values[:, 1] = values[:, 0]  # two options alike in value and cost in every item
        costs[:, 1] = costs[:, 0]
        values[: n // 2, -1] = values[: n // 2, 0] + 0.125 * (costs[: n // 2, -1] - costs[: n // 2, 0])
    elif case == "ulp_pairs":
        # options in pairs of one cost and values one float ulp apart, on a large common cost:
        # lambda w dwarfs v, float scores of a pair round to one number (the float pick would
        # take the first), double scores keep them apart (the double pick takes the second)
        levels = np.sort(rng.random((n, (k + 1) // 2)) * 10.0, axis=1)
        costs = 1e4 + np.repeat(levels, 2, axis=1)[:, :k]
        tops = np.sort(rng.random((n, (k + 1) // 2)), axis=1).astype(np.float32)
        pairs = np.stack([tops, np.nextafter(tops, np.float32(np.inf))], axis=2).reshape(n, -1)[:, :k]
        return pairs.astype(np.float32), costs.astype(np.float32)
    elif case == "huge":
        values, costs = values * 1e36, costs * 1e36
    elif case == "tiny":
        values = values * 1e-36  # slopes near 1e-37: products and scores round to subnormals
    elif case == "subnormal":
        values = values * 1e-41
    elif case == "steep":
        values, costs = values * 1e30, costs * 1e-15  # slopes near 1e45, beyond float
    elif case == "mixed":
        values = values * 10.0 ** rng.integers(-30, 30, (n, 1))
    return values.astype(np.float32), costs.astype(np.float32)


@pytest.mark.parametrize("case", ["ulp_pairs", "near_ties", "exact_ties", "huge", "tiny", "subnormal", "steep", "mixed"])
@pytest.mark.parametrize("k", [3, 8, 13])
def test_float32_first_pass_gives_the_same_answers_at_every_level(levels, case, k):
    n = 1003  # not a whole number of 8- or 16-item blocks
    # (exact, which takes the double pick for its margins, only where it proves quickly: near
    # ties make it enumerate until its time limit, whose answer depends on the machine's speed)
    methods = ("lagrangian",) if "ties" in case or "ulp" in case else ("lagrangian", "exact")
    for seed in range(4 if case == "near_ties" else 2):
        values, costs = _float32_rows(case, n, k, seed)
        lo, hi = costs.astype(float).min(axis=1).sum(), costs.astype(float).max(axis=1).sum()
        budget = lo + (0.3 + 0.4 * (seed % 2)) * (hi - lo)
        _same_at_every_level(levels, values, costs, budget, methods=methods)
        _same_at_every_level(levels, -values, costs, budget, methods=methods, sense="min")
        _same_at_every_level(levels, values, costs[7].copy(), costs[7].astype(float).sum() * n * 0.4, methods=methods)
        mask = np.random.default_rng(seed).random(values.shape) < 0.8
        mask[:, 0] = True
        _same_at_every_level(levels, values, costs, budget, methods=methods, mask=mask)


def test_float32_first_pass_over_several_runs_gives_the_same_answers_at_every_level(levels):
    # Over 8192 items the pass runs in pieces whose totals are added in run order.
    v, c, b = workloads.instance("routing", 20000, 8, seed=2)
    _same_at_every_level(levels, v.astype(np.float32), c.astype(np.float32), b)


# Item 517 is in the lower half of its 16-item block (512..527) at x86-64-v4, and in its own
# 8-item block at x86-64-v3; item 525 is in the upper half.
@pytest.mark.parametrize("at", [517, 525])
def test_float32_bad_input_is_reported_at_every_level(levels, at):
    v, c, b = workloads.instance("routing", 1000, 8, seed=0)
    v, c = v.astype(np.float32), c.astype(np.float32)
    for level in levels:
        _core._set_simd_level(level)
        for bad, name in [(np.nan, "values"), (np.inf, "values"), (-np.inf, "values")]:
            v2 = v.copy()
            v2[at, 3] = bad
            with pytest.raises(ValueError, match=name):
                apportion.solve(v2, c, b, method="lagrangian")
        for bad in (np.nan, np.inf, -1.0):
            c2 = c.copy()
            c2[at, 3] = bad
            with pytest.raises(ValueError, match="costs"):
                apportion.solve(v, c2, b, method="lagrangian")
        # -0.0 is a cost of zero (the float pick leaves it to the double pick)
        c2 = c.copy()
        c2[at, 0] = -0.0
        _core._set_simd_level(levels[0])
        first = _answers(v, c2, b)
        _core._set_simd_level(level)
        assert repr(_answers(v, c2, b)) == repr(first)


# A thread that rounds in a directed mode (fesetround) leaves the float pick to the double pick:
# the proof's rounding bound is for rounding to nearest (cpp/float_pick.hpp). Every level, in
# each mode, gives the answers of the same data as float64.
@pytest.mark.skipif(platform.machine() != "x86_64" or not sys.platform.startswith("linux"),
                    reason="the rounding modes' values are those of glibc on x86-64")
@pytest.mark.parametrize("mode", [0x400, 0x800, 0xC00])  # FE_DOWNWARD, FE_UPWARD, FE_TOWARDZERO
def test_float32_first_pass_in_a_directed_rounding_mode_gives_the_float64_answers(levels, mode):
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    cases = [(case, _float32_rows(case, 1003, 8, seed)) for case in ("ulp_pairs", "near_ties", "mixed")
             for seed in range(2)]
    answers = {}
    assert libm.fesetround(mode) == 0
    try:
        assert libm.fegetround() == mode
        for level in levels:
            _core._set_simd_level(level)
            for case, (values, costs) in cases:
                budget = float(costs.astype(np.float64).sum() * 0.4)
                answers[level, case, "f32"] = repr(_answers(values, costs, budget, methods=("lagrangian",)))
                answers[level, case, "f64"] = repr(_answers(values.astype(np.float64), costs.astype(np.float64),
                                                            budget, methods=("lagrangian",)))
    finally:
        libm.fesetround(0)
    for level in levels:
        for case, _ in cases:
            assert answers[level, case, "f32"] == answers[level, case, "f64"] == answers[levels[0], case, "f64"], \
                (level, case)


@pytest.mark.parametrize("kind", workloads.CLASSES)
def test_float32_input_gives_the_answers_of_the_same_data_widened(kind):
    # The float pick changes how the options are found, never which: a float32 instance is
    # solved as the float64 instance with the same numbers (field for field).
    for n, k, seed in [(300, 3, 0), (1000, 8, 1), (600, 13, 2), (5000, 8, 0)]:
        v, c, b = workloads.instance(kind, n, k, seed=seed)
        v32, c32 = v.astype(np.float32), c.astype(np.float32)
        for sense, values in (("max", v32), ("min", -v32)):
            narrow = _answers(values, c32, b, sense=sense)
            wide = _answers(values.astype(np.float64), c32.astype(np.float64), b, sense=sense)
            assert repr(narrow) == repr(wide), (n, k, seed, sense)
    for case in ("ulp_pairs", "near_ties", "tiny", "steep"):
        values, costs = _float32_rows(case, 1000, 8, 0)
        budget = costs.astype(float).sum() * 0.4
        wide = values.astype(np.float64), costs.astype(np.float64)
        assert repr(_answers(values, costs, budget, methods=("lagrangian",))) == repr(
            _answers(*wide, budget, methods=("lagrangian",))), case


def test_float32_first_pass_with_subnormals_flushed_gives_the_same_answers(levels):
    """A thread that flushes subnormals (FTZ/DAZ, as torch.set_flush_denormal(True) sets) reads a
    subnormal slope as 0 in float: the float pick must leave such a thread to the double pick.
    Here the shadow price is about 3e-40, subnormal as a float."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    costs = (rng.random((256, 2)) * 3e38).astype(np.float32)
    values = (rng.random((256, 2)) * 0.1).astype(np.float32)
    costs[:, 0] = 0
    values[:, 0] = 0
    budget = float(costs.astype(np.float64).sum() * 0.3)
    unflushed = {}
    for level in levels:
        _core._set_simd_level(level)
        unflushed[level] = _answers(values, costs, budget, methods=("lagrangian",))
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    try:
        for level in levels:
            _core._set_simd_level(level)
            assert repr(_answers(values, costs, budget, methods=("lagrangian",))) == repr(unflushed[levels[0]]), level
    finally:
        torch.set_flush_denormal(False)
    assert all(repr(a) == repr(unflushed[levels[0]]) for a in unflushed.values())


# Instances whose answers a thread that flushes subnormals (FTZ/DAZ) or rounds in a directed mode
# would change (found by fuzzing): subnormal costs against a budget of 0 (A: the allocation
# [1, 1] costs 1e-323, over the budget; B: infeasible, reported "optimal"), a negative
# subnormal budget (C: infeasible), subnormal values (D: value 3e-310, "optimal" at 0.0).
_CALLER_MODE_CASES = {
    "A": (np.array([[0.0, 1e-300], [0.0, 1e-300]]), np.array([0.0, 5e-324]), 0.0),
    "B": (np.random.default_rng(0).random((1000, 4)) * 1e-300,
          np.random.default_rng(1).integers(0, 3, (1000, 4)) * 5e-324, 0.0),
    "C": (np.array([[1.0, 2.0], [0.0, 1.0]]), np.array([0.0, 1.0]), -5e-324),
    "D": (np.array([[0.0, 1e-310], [0.0, 3e-310], [0.0, 2e-310]]), np.array([0.0, 1.0]), 1.0),
}
_ONLINE_SUBNORMAL = np.full((1, 4, 2), 3e-310) * [1.0, 2.0]  # (built here: not on a flushing thread)


def _mode_answers():
    """Every solver's answers on the cases above (exact and dp on D, whose costs are integers),
    as Python objects: repr them only after the caller's mode is back (Python's float repr
    itself reads a subnormal as 0 on a thread that flushes)."""
    out = {}
    for name, (v, c, b) in _CALLER_MODE_CASES.items():
        out[name] = _answers(v, c, b, methods=("lagrangian", "exact"))
    v, c, b = _CALLER_MODE_CASES["D"]
    out["D dp"] = _answers(v, c, b, methods=("dp",))
    f = apportion.frontier(v, c, 2.0, at=[1.0])
    out["D frontier"] = (f.budgets.tolist(), f.values.tolist(), f.choices.tolist())
    run = apportion.simulate_online(_ONLINE_SUBNORMAL, np.array([0.0, 1.0]), 2.0)
    out["online"] = (run.choice.tolist(), run.value.tolist(), run.spent.tolist())
    return out


def test_the_callers_floating_point_mode_changes_no_answer():
    """Native calls compute in IEEE's default mode (round to nearest, subnormals kept) whatever
    the calling thread's (cpp/thread_pool.hpp, IeeeFloatMode), and give the caller's mode back:
    under torch.set_flush_denormal(True) the cases above went over the budget, or claimed
    "optimal" for an infeasible instance or for value 0.0 where 3e-310 was reachable."""
    torch = pytest.importorskip("torch")
    expected = repr(_mode_answers())
    assert "'optimal', 3e-310" in expected and expected.count("'infeasible'") >= 4
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    try:
        flushed = _mode_answers()
        # The caller's mode is back: numpy on this thread still flushes.
        assert np.float64(1e-310) * np.float64(1.0) == 0.0
    finally:
        torch.set_flush_denormal(False)
    assert repr(flushed) == expected
    if platform.machine() == "x86_64" and sys.platform.startswith("linux"):
        libm = ctypes.CDLL(ctypes.util.find_library("m"))
        for mode in (0x400, 0x800, 0xC00):  # FE_DOWNWARD, FE_UPWARD, FE_TOWARDZERO (glibc, x86-64)
            assert libm.fesetround(mode) == 0
            try:
                directed = _mode_answers()
                assert libm.fegetround() == mode
            finally:
                libm.fesetround(0)
            assert repr(directed) == expected, mode


POOL_AND_FLUSHED_SUBNORMALS = """
import sys
import numpy as np, torch, apportion
pool_started_flushed = sys.argv[1] == "flushed"
# Values are subnormal multiples: a thread that flushes subnormals (DAZ) reads them as 0.
rng = np.random.default_rng(0)
v = np.repeat(rng.integers(0, 40, (1, 800, 3)) * 5e-324, 8, axis=0)
c = np.repeat(rng.integers(0, 5, (1, 800, 3)) * 1.0, 8, axis=0)
b = np.full(8, 1200.0)
def answers(threads):
    s = apportion.solve(v, c, b, method="lagrangian", threads=threads)
    return [(str(s.status[i]), s.value[i].tobytes(), s.cost[i].tobytes(), s.choice[i].tobytes())
            for i in range(len(b))]
if not torch.set_flush_denormal(pool_started_flushed) and pool_started_flushed:
    print("no flush"); raise SystemExit
# The pool's workers start here (num_threads() would start them too).
apportion.solve(np.ones((2, 300, 3)), np.ones((2, 300, 3)), np.full(2, 300.0), method="lagrangian", threads=2)
if apportion._core.num_threads() < 2:
    print("no workers"); raise SystemExit
for flush in (True, False, True):
    if not torch.set_flush_denormal(flush) and flush:
        print("no flush"); raise SystemExit
    serial = answers(1)
    for _ in range(10):
        assert answers(2) == serial, ("flushed" if flush else "unflushed") + " caller"
    if flush:
        flushed = serial
    else:
        assert serial == flushed  # native calls compute without flushing whatever the caller's mode
print("ok")
"""


@pytest.mark.parametrize("pool_started", ["flushed", "unflushed"])
def test_pool_workers_take_the_callers_floating_point_environment(pool_started):
    """The native pool's workers run each job in the caller's floating-point environment. They
    kept the environment of the thread that started the pool: after one first call under
    torch.set_flush_denormal(True), a batch's answers depended on which thread solved which
    instance (and, the other way round, a flushing caller got unflushed workers). A fresh
    process, so that its pool starts in the given mode."""
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, "-c", POOL_AND_FLUSHED_SUBNORMALS, pool_started], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    if out.stdout.strip() in ("no flush", "no workers"):
        pytest.skip(out.stdout.strip())
    assert out.stdout.strip() == "ok"
