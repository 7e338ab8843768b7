"""Run-time CPU dispatch (cpp/cpu_dispatch.hpp): build_info, and the same answers, bit for bit,
at every SIMD level the CPU runs."""

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


def _answers(values, costs, budget, **kw):
    out = []
    for method in ("lagrangian", "exact"):
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
