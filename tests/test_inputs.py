"""Bad input to solve and frontier gets a ValueError or TypeError that names the argument, not an
OverflowError, an IndexError, a pybind signature dump or a silent answer."""

import sys

import numpy as np
import pytest

import apportion
from apportion import _core, api

V = np.array([[0.0, 5.0, 6.0], [0.0, 3.0, 8.0]])
C = np.array([0.0, 1.0, 3.0])
HUGE = 10**400  # a Python int past the float range


@pytest.mark.parametrize("call, error, name", [
    # an int too large for a float: OverflowError before
    (lambda: apportion.solve(V, C, HUGE), ValueError, "budget"),  # the one-instance path
    (lambda: apportion.solve(V.tolist(), C, HUGE), ValueError, "budget"),  # the general path
    (lambda: apportion.solve(V[None], C, [HUGE]), ValueError, "budget"),
    (lambda: apportion.frontier(V, C, HUGE), ValueError, "budget"),
    (lambda: apportion.solve([[0, HUGE]], [0, 1], 1.0), ValueError, "values"),
    (lambda: apportion.solve([[0, 1]], [0, HUGE], 1.0), ValueError, "costs"),
    (lambda: apportion.frontier(V, C, 4.0, at=HUGE), ValueError, "at"),
    # booleans as numbers: accepted silently before
    (lambda: apportion.solve(V, C, True), TypeError, "budget"),
    (lambda: apportion.solve(V, C, np.True_), TypeError, "budget"),
    (lambda: apportion.solve(V[None], C, [True]), TypeError, "budget"),
    (lambda: apportion.solve(np.array([[True, False]]), [0.0, 1.0], 1.0), TypeError, "values"),
    (lambda: apportion.solve([[1.0, 2.0]], np.array([True, False]), 1.0), TypeError, "costs"),
    (lambda: apportion.frontier(V, C, 4.0, at=True), TypeError, "at"),
    # flags and names of the wrong type: accepted ("no" is truthy) or a ValueError before
    (lambda: apportion.solve(V, C, 4.0, exact_spend="no"), TypeError, "exact_spend"),
    (lambda: apportion.frontier(V, C, 4.0, exact_spend="no"), TypeError, "exact_spend"),
    (lambda: apportion.solve(V, C, 4.0, sense=1), TypeError, "sense"),
    (lambda: apportion.frontier(V, C, 4.0, sense=None), TypeError, "sense"),
    (lambda: apportion.solve(V, C, 4.0, method=1), TypeError, "method"),
    # pybind's "incompatible function arguments" before
    (lambda: apportion.solve(V, C, 4.0, threads=2**40), ValueError, "threads"),
    (lambda: apportion.solve(V.tolist(), C, 4.0, threads=2**31), ValueError, "threads"),
    (lambda: apportion.solve(V, C, 4.0, method="dp", threads=2**40), ValueError, "threads"),
    (lambda: apportion.solve(V, C, 4.0, method="mirror", threads=2**40), ValueError, "threads"),
    (lambda: apportion.frontier(V, C, 4.0, threads=2**40), ValueError, "threads"),
    # numeric limits: True and "1" were taken as numbers before
    (lambda: apportion.solve(V, C, 4.0, method="exact", max_states=True), TypeError, "max_states"),
    (lambda: apportion.solve(V, C, 4.0, method="exact", max_states=0.5), ValueError, "max_states"),
    (lambda: apportion.solve(V, C, 4.0, method="exact", time_limit="1"), TypeError, "time_limit"),
    (lambda: apportion.solve(V, C, 4.0, method="dp", max_memory=True), TypeError, "max_memory"),
    # scalar values for method="mirror": IndexError before
    (lambda: apportion.solve(5.0, np.zeros((1, 1)), [1.0], method="mirror"), ValueError, "values"),
    (lambda: apportion.solve("ab", np.zeros((1, 1)), [1.0], method="mirror"), TypeError, "values"),
    # at= of frontier: taken ("3") or unnamed errors before
    (lambda: apportion.frontier(V, C, 4.0, at="3"), TypeError, "at"),
    (lambda: apportion.frontier(V, C, 4.0, at="x"), TypeError, "at"),
    (lambda: apportion.frontier(V, C, 4.0, at=[1, [2]]), TypeError, "at"),
    (lambda: apportion.frontier(V, C, 4.0, at=1j), TypeError, "at"),
    (lambda: apportion.frontier(V, C, 4.0, at=[None]), TypeError, "at"),
])
def test_bad_input_names_the_argument(call, error, name):
    with pytest.raises(error, match=rf"^{name}: "):
        call()


@pytest.mark.parametrize("call, error, name", [
    # already right; kept so
    (lambda: apportion.solve(V, C, "6"), TypeError, "budget"),
    (lambda: apportion.solve(V, C, None), TypeError, "budget"),
    (lambda: apportion.solve(V, C, 1 + 2j), TypeError, "budget"),
    (lambda: apportion.solve(V, C, float("nan")), ValueError, "budget"),
    (lambda: apportion.solve([[1, 2], [3]], [0, 1], 1.0), TypeError, "values"),
    (lambda: apportion.solve(np.zeros((0, 3)), C, 1.0), ValueError, "values"),
    (lambda: apportion.solve(V.astype(complex), C, 1.0), TypeError, "values"),
    (lambda: apportion.solve(None, C, 1.0), TypeError, "values"),
    (lambda: apportion.solve(V, C, 4.0, mask=np.full((2, 3), 0.5)), ValueError, "mask"),
    (lambda: apportion.solve(V, C, 4.0, mask=[["a", "b", "c"]] * 2), TypeError, "mask"),
    (lambda: apportion.solve(V, C, 4.0, sense="least"), ValueError, "sense"),
    (lambda: apportion.solve(V, C, 4.0, method="magic"), ValueError, "method"),
    (lambda: apportion.solve(V, C, 4.0, threads=0), ValueError, "threads"),
    (lambda: apportion.solve(V, C, 4.0, method="exact", time_limit=float("nan")), ValueError,
     "time_limit"),
])
def test_bad_input_still_names_the_argument(call, error, name):
    with pytest.raises(error, match=rf"^{name}: "):
        call()


# Views of 2^31 items (and of 2^30 + 1 options) that take no memory: N or K past the native
# core's 32-bit indices must be refused on the shape, before anything copies 8 GiB.
_MANY_ITEMS = np.broadcast_to(np.zeros((1, 1), np.float32), (2**31, 1))
_MANY_OPTIONS = np.broadcast_to(np.zeros((1, 1), np.float32), (1, 2**30 + 1))
_ONE = np.zeros(1, np.float32)
_TOO_MANY_ITEMS = r"^values: N=2147483648 items, over the limit of 2147483647 \(2\^31 - 1"
_TOO_MANY_OPTIONS = r"^values: K=1073741825 options per item, over the limit of 1073741824 \(2\^30"


@pytest.mark.parametrize("call, message", [
    (lambda: apportion.solve(_MANY_ITEMS, _ONE, 1.0), _TOO_MANY_ITEMS),
    (lambda: apportion.solve(_MANY_ITEMS[None], _ONE, [1.0], method="lagrangian"), _TOO_MANY_ITEMS),
    (lambda: apportion.solve(_MANY_ITEMS, _ONE, 1.0, method="exact"), _TOO_MANY_ITEMS),
    (lambda: apportion.solve(_MANY_ITEMS, _ONE, 1.0, method="dp"), _TOO_MANY_ITEMS),
    (lambda: apportion.solve(_MANY_ITEMS, _ONE, 1.0, method="mirror"), _TOO_MANY_ITEMS),
    (lambda: apportion.solve(_MANY_ITEMS, _ONE, 1.0, mask=np.ones(1, bool)), _TOO_MANY_ITEMS),
    (lambda: apportion.frontier(_MANY_ITEMS, _ONE, 1.0), _TOO_MANY_ITEMS),
    (lambda: apportion.solve(_MANY_OPTIONS, _MANY_OPTIONS[0], 1.0), _TOO_MANY_OPTIONS),
], ids=["auto", "lagrangian-batch", "exact", "dp", "mirror", "mask", "frontier", "options"])
def test_too_many_items_or_options_refused_before_a_copy(call, message):
    # np.ascontiguousarray copied the view first (8 GiB), then the core indexed past int32
    with pytest.raises(ValueError, match=message):
        call()


def test_too_many_items_refused_for_torch_input():
    torch = pytest.importorskip("torch")
    values = torch.zeros((1, 1)).expand(2**31, 1)  # no memory either
    with pytest.raises(ValueError, match=_TOO_MANY_ITEMS):
        apportion.solve(values, torch.zeros(1), 1.0)


def test_size_limits_at_the_boundary():
    from apportion import _problem

    assert (_problem.MAX_ITEMS, _problem.MAX_OPTIONS) == (2**31 - 1, 2**30)
    _problem.check_sizes(2**31 - 1, 2**30)  # the largest taken
    with pytest.raises(ValueError, match=_TOO_MANY_ITEMS):
        _problem.check_sizes(2**31, 1)
    with pytest.raises(ValueError, match=_TOO_MANY_OPTIONS):
        _problem.check_sizes(1, 2**30 + 1)


def _unbacked(count, dtype):
    """A C-contiguous read-only array of `count` zeros over an anonymous mapping that is never
    touched (no memory is committed), for the bindings' checks, which take only C-contiguous
    arrays. Skips where such a mapping cannot be made."""
    import mmap

    if not hasattr(mmap, "PROT_READ") or sys.maxsize < 2**62:
        pytest.skip("needs a 64-bit POSIX mmap")
    try:
        mapping = mmap.mmap(-1, count * np.dtype(dtype).itemsize, prot=mmap.PROT_READ)
    except (OSError, OverflowError, ValueError) as exc:
        pytest.skip(f"no unbacked mapping of {count} x {np.dtype(dtype)}: {exc}")
    return np.frombuffer(mapping, dtype)


@pytest.fixture(scope="module")
def many_items():
    """(2^31, 1) float32, C-contiguous, no memory."""
    return _unbacked(2**31, np.float32).reshape(2**31, 1)


@pytest.fixture(scope="module")
def many_options():
    """(2^30 + 1,) float64, C-contiguous, no memory."""
    return _unbacked(2**30 + 1, np.float64)


_NATIVE_TOO_MANY_ITEMS = r"^values: N \(the number of items\) must be at most 2147483647"
_NATIVE_TOO_MANY_OPTIONS = r"^values: K \(the number of options\) must be at most 1073741824"
_C, _C3, _B = _ONE, _ONE[None, None], np.ones(1)


def test_fast_budget_leaves_too_many_items_to_the_general_path(many_items):
    # The one-instance path went straight to solve_one with 2^31 items before.
    assert _core.fast_budget(many_items, _C, 1.0) is None
    assert _core.fast_budget(many_items[1:], _C, 1.0) == 1.0  # 2^31 - 1 items: still taken
    with pytest.raises(ValueError, match=_TOO_MANY_ITEMS):
        apportion.solve(many_items, _C, 1.0)


@pytest.mark.parametrize("call", [
    lambda v: _core.solve_one("lagrangian", v, _C, 1.0, 1.0, 1.0, 1, 1, 0),
    lambda v: _core.solve_one("exact", v, _C, 1.0, 1.0, 1.0, 1, 1, 0),
    lambda v: _core.lagrangian(v[None], _C3, _B, None, 1.0, 1),
    lambda v: _core.dp(v[None], _C3, _B, None, 1.0, False, 1),
    lambda v: _core.exact(v[None], _C3, _B, None, 1.0, 1.0, 1, 1, 0),
    lambda v: _core.frontier(v[None], _C3, _B, None, 1.0, False, _B, 1),
], ids=["solve_one-lagrangian", "solve_one-exact", "lagrangian", "dp", "exact", "frontier"])
def test_native_core_refuses_too_many_items(many_items, call):
    # The bindings' own check (the second line of defence): the solvers' int32 item indices
    # wrapped before.
    with pytest.raises(ValueError, match=_NATIVE_TOO_MANY_ITEMS):
        call(many_items)


@pytest.mark.parametrize("call", [
    # (BatchArgs refused it before too, as "K is too large"; the message now gives the limit)
    lambda w: _core.lagrangian(w[None, None], w[None, None], _B, None, 1.0, 1),
    lambda w: _core._item_frontier(w, w),
    lambda w: _core._hull_steps(w, w, None, 1.0),
], ids=["lagrangian", "_item_frontier", "_hull_steps"])
def test_native_core_refuses_too_many_options(many_options, call):
    with pytest.raises(ValueError, match=_NATIVE_TOO_MANY_OPTIONS):
        call(many_options)


def test_too_many_options_left_to_the_general_path(many_options):
    assert _core.fast_budget(many_options[None], many_options, 1.0) is None
    with pytest.raises(ValueError, match=_TOO_MANY_OPTIONS):
        apportion.solve(many_options[None], many_options, 1.0)


def test_threads_cap_is_documented_and_allowed():
    assert "MAX_THREADS" in apportion.solve.__doc__
    ref = apportion.solve(V, C, 4.0)
    assert apportion.solve(V, C, 4.0, threads=api.MAX_THREADS).choice.tolist() == ref.choice.tolist()
    with pytest.raises(ValueError, match="threads"):
        apportion.solve(V, C, 4.0, threads=api.MAX_THREADS + 1)


@pytest.mark.parametrize("max_states", [1e30, 2**70, HUGE, float("inf")])
def test_max_states_past_the_native_range_is_no_limit(max_states):
    # OverflowError or a pybind signature dump before
    sol = apportion.solve(V, C, 4.0, method="exact", max_states=max_states)
    assert sol.status == "optimal" and sol.value == 13.0


def test_huge_limits_mean_no_limit():
    # OverflowError before (float() of an int past the float range)
    assert apportion.solve(V, C, 4.0, method="exact", time_limit=HUGE).status == "optimal"
    assert apportion.solve(V, C, 4.0, method="dp", max_memory=HUGE).status == "optimal"


def test_large_python_ints_are_numbers():
    # Ints past int64 make numpy choose dtype object: a TypeError before, though they are real
    # numbers within the float range.
    big = 2**70
    sol = apportion.solve([[0, big], [0, 1]], [0.0, 1.0], 1.0)
    assert sol.choice.tolist() == [1, 0] and sol.value == float(big)
    sol = apportion.solve(V[None], C, [2**70])
    assert sol.cost[0] == 6.0


def test_accepted_forms_still_accepted():
    ref = apportion.solve(V, C, 4.0)
    for budget in (4, np.int64(4), np.float32(4.0), np.array(4.0)):
        assert apportion.solve(V, C, budget).choice.tolist() == ref.choice.tolist()
    assert apportion.solve(V, C, -0.0).cost == 0.0
    assert apportion.solve(V, C, 4.0, sense=np.str_("max")).value == ref.value
    assert apportion.solve(V, C, 4.0, exact_spend=np.False_).value == ref.value
    assert apportion.solve(V, C, 4.0, mask=np.ones((2, 3))).value == ref.value  # 0/1 floats
    assert apportion.solve(V, C, 4.0, method="exact", max_states=1e8).value == ref.value
    f = apportion.frontier(V, C, 4.0, at=[2, 3.5])
    assert f.choices.shape == (2, 2)
    sol = apportion.solve(V.tolist(), C[:, None], [4.0], method="mirror")  # one resource, (R,)
    assert sol.cost[0] <= 4.0


def _python_fast_budget(values, costs, budget):
    """The rule _problem.fast_budget kept in Python before it moved into the bindings (issue
    target: the common call's overhead), as the oracle of the native one."""
    if type(values) is not np.ndarray or type(costs) is not np.ndarray or values.ndim != 2:
        return None
    dtype = values.dtype
    if dtype not in (np.dtype(np.float64), np.dtype(np.float32)) or costs.dtype != dtype or values.size == 0:
        return None
    if not (values.flags.c_contiguous and costs.flags.c_contiguous):
        return None
    shape, cost_shape = values.shape, costs.shape
    if cost_shape != shape and cost_shape != (shape[1],):
        return None
    if shape[0] > 2**31 - 1 or shape[1] > 2**30:  # past the core's limits: the general path names them
        return None
    kind = type(budget)
    if not (kind is float or kind is int or kind is np.float64
            or (kind is np.ndarray and budget.ndim == 0 and budget.dtype.kind in "fiu")):
        return None
    try:
        real = float(budget)
    except OverflowError:
        return None
    if real != real:
        raise ValueError("budget: is NaN; pass a number (use inf for no limit)")
    if (kind is int or kind is np.ndarray and budget.dtype.kind in "iu") and abs(real) >= 2.0**53:
        return None  # the general path rounds such an integer down (_budget_float)
    return real


class _FloatSubclass(float):
    pass


def _fast_budget_arrays():
    import pickle

    v = np.arange(6.0).reshape(2, 3)
    yield v, v[0].copy()
    yield v, v.copy()
    yield v.astype(np.float32), v[0].astype(np.float32)
    yield v.astype(np.float32), v[0].copy()  # dtypes differ
    yield v, v[0].astype(np.float32)
    yield pickle.loads(pickle.dumps(v)), v[0].copy()  # an equal dtype that is another object
    yield v.astype(">f8"), v[0].astype(">f8")  # byte-swapped
    yield v.astype(np.float16), v[0].astype(np.float16)
    yield v.astype(np.int64), v[0].astype(np.int64)
    yield v.astype(np.longdouble), v[0].astype(np.longdouble)
    yield v.astype(bool), v[0].astype(bool)
    yield v.astype(complex), v[0].astype(complex)
    yield v.astype(object), v[0].astype(object)
    yield np.asfortranarray(v), v[0].copy()
    yield v, v.T.copy().T  # costs (N,K) in Fortran order
    yield v[:, ::2].copy(), v[0, ::2]  # costs a strided view
    yield v[:, :2], v[0, :2].copy()  # values a non-contiguous view
    yield np.asfortranarray(v[:1]), v[0].copy()  # (1,K) is C-contiguous in either order
    yield v, v[:1].copy()  # (1,K): broadcasts, but not the common form
    yield v, v[:, :1].copy()
    yield v, v[0, :2].copy()
    yield v, v[None].copy()
    yield v[None].copy(), v[0].copy()
    yield v[0].copy(), v[0].copy()
    yield np.zeros((0, 3)), v[0].copy()
    yield np.zeros((2, 0)), np.zeros(0)
    yield v.view(np.matrix), v[0].copy()  # ndarray subclasses
    yield v, np.ma.array(v[0])
    yield v.tolist(), v[0].copy()
    yield v, v[0].tolist()
    yield None, None


_FAST_BUDGETS = [4.0, -0.0, float("inf"), -float("inf"), float("nan"), 4, -3, 0, 10**400, -10**400,
                 True, np.True_, np.float64(4.5), np.float64("nan"), np.float64(-0.0),
                 np.float32(4.0), np.int64(4), np.uint8(4), np.longdouble(4),
                 np.array(4.0), np.array(np.nan), np.array(4), np.array(4, np.uint64),
                 np.array(2**64 - 1, np.uint64), np.array(4.0, np.float32), np.array(4.0, ">f8"),
                 np.array(4.0, np.longdouble), np.array(True), np.array(4 + 0j), np.array("4"),
                 np.array([4.0]), np.array(4.0).view(np.matrix), _FloatSubclass(4.0), "4", None,
                 1 + 2j, [4.0]]


def test_native_fast_budget_keeps_the_python_rule():
    from apportion import _problem

    for values, costs in _fast_budget_arrays():
        for budget in _FAST_BUDGETS:
            try:
                want = _python_fast_budget(values, costs, budget)
            except ValueError as exc:
                with pytest.raises(ValueError) as got:
                    _problem.fast_budget(values, costs, budget)
                assert str(got.value) == str(exc)
                continue
            got = _problem.fast_budget(values, costs, budget)
            where = (type(values), getattr(values, "dtype", None), getattr(costs, "shape", None), budget)
            if want is None:
                assert got is None, where
            else:
                assert type(got) is float and str(got) == str(want), where  # -0.0 and inf too


@pytest.mark.parametrize("method", ["auto", "lagrangian", "exact"])
def test_integers_past_2_53_never_put_an_allocation_over_the_budget(method):
    # Found by a fuzzing helper: integer input was rounded to nearest float64, so a budget of
    # 2^53 + 3 became 2^53 + 4 and a cost of 2^53 + 4 fit it; an int64 cost of 2^53 + 1 became
    # 2^53. Integer budgets are now rounded down, integer costs must convert exactly.
    values = np.array([[0, 1]], dtype=np.int64)
    dear = np.array([[0, 2**53 + 4]], dtype=np.int64)
    for budget in (2**53 + 3, np.int64(2**53 + 3), np.array(2**53 + 3), [2**53 + 3]):
        batched = isinstance(budget, list)
        sol = apportion.solve(values[None] if batched else values, dear[None] if batched else dear,
                              budget, method=method)
        assert int(np.ravel(sol.choice)[0]) == 0
    sol = apportion.solve(values.astype(float), dear.astype(float), 2**53 + 3, method=method)  # the fast path
    assert sol.choice[0] == 0
    assert apportion.solve(values, dear, 2**53 + 4, method=method).choice[0] == 1  # exact: fits
    with pytest.raises(ValueError, match="costs: the integer 9007199254740993 has no exact float64"):
        apportion.solve(values, np.array([[0, 2**53 + 1]], dtype=np.int64), 2**53, method=method)


@pytest.mark.parametrize("method", ["exact", "lagrangian", "dp", "mirror"])
def test_longdouble_costs_and_budgets_never_put_an_allocation_over_the_budget(method):
    # Found by a fuzzing helper: longdouble input was rounded to nearest float64, so a cost of
    # 1 + 2^-60 fit a budget of 1, and a cost of 1 a budget of 1 - 2^-60, both "optimal". Costs
    # must convert exactly (a named error), budgets are rounded down.
    values = np.array([[0.0, 1.0]])
    mirror = method == "mirror"
    shape = (lambda c: c[..., None]) if mirror else (lambda c: c)
    budget = (lambda b: np.array([b])) if mirror else (lambda b: b)
    over = np.array([[0.0, 1.0]], dtype=np.longdouble) + np.array([[0.0, 2.0**-60]], dtype=np.longdouble)
    with pytest.raises(ValueError, match="costs: .* has no exact float64"):
        apportion.solve(values, shape(over), budget(1.0), method=method)
    short = np.longdouble(1) - np.longdouble(2.0**-60)
    sol = apportion.solve(values, shape(np.array([[0.0, 1.0]])), budget(short), method=method)
    assert int(sol.choice[0]) == 0
    exact = apportion.solve(values, shape(np.array([[0.0, 1.0]])), budget(np.longdouble(1)), method=method)
    assert int(exact.choice[0]) == 1  # exactly 1: it fits


def test_mirror_budget_without_a_resource_axis_is_named():
    # Found by a fuzzing helper: the error named costs ("does not broadcast against values").
    values, costs = np.ones((2, 3)), np.ones((3, 2))
    for budget in (1.0, np.ones((1, 2))):
        with pytest.raises(ValueError, match=r"budget: costs \(3, 2\) have a trailing resource axis of 2: .*\(2,\)"):
            apportion.solve(values, costs, budget, method="mirror")
    with pytest.raises(ValueError, match=r"budget: .*shape \(B,2\) or \(1,2\), got \(2,\)"):
        apportion.solve(np.ones((4, 2, 3)), costs, np.ones(2), method="mirror")
    # One-resource costs that broadcast, (N, 1) with N = K among them, are solved as by exact.
    values = np.arange(9.0).reshape(3, 3)
    for costs in (np.array([[1.0], [2.0], [0.5]]), np.ones((1, 1))):
        mirror, exact = (apportion.solve(values, costs, 4.0, method=m) for m in ("mirror", "exact"))
        assert mirror.status == exact.status == "optimal" and mirror.value == exact.value


def test_torch_forms_numpy_lacks_and_masked_arrays():
    # Found by a fuzzing helper: bfloat16 and float8 tensors, a view with torch's negative bit
    # set, and sparse tensors failed with torch's own errors (naming no argument); a numpy masked
    # array lost its mask, and its hidden entries were chosen.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    values, costs = rng.random((6, 3)), np.array([0.0, 1.0, 2.0])
    half = torch.from_numpy(values).to(torch.bfloat16)
    got = apportion.solve(half, costs, 5.0).choice
    assert torch.equal(got, apportion.solve(half.float(), costs, 5.0).choice)
    negated = torch.complex(torch.zeros(6, 3, dtype=torch.float64), -torch.from_numpy(values)).conj().imag
    assert negated.is_neg()
    assert np.array_equal(np.asarray(apportion.solve(negated, costs, 5.0).choice),
                          np.asarray(apportion.solve(values, costs, 5.0).choice))
    with pytest.raises(TypeError, match="values: a torch.sparse_coo tensor; pass a dense one"):
        apportion.solve(torch.from_numpy(values).to_sparse(), costs, 5.0)
    hidden = np.ma.masked_array([[0.0, 100.0], [0.0, 1.0]], mask=[[False, True], [False, False]])
    with pytest.raises(TypeError, match="values: a numpy masked array"):
        apportion.solve(hidden, [0.0, 1.0], 1.0)


def test_auto_runs_exact_where_an_option_only_exact_takes_is_given(monkeypatch):
    # Found by a fuzzing helper: "auto" took time_limit, max_states and max_memory below 2^22
    # options and refused them above, naming method='lagrangian', which the caller never passed.
    from apportion import api
    monkeypatch.setattr(api, "AUTO_EXACT_MAX_OPTIONS", 16)  # (the size rule, without 2^22 options)
    values, costs = np.random.default_rng(0).random((40, 4)), np.array([0.0, 1.0, 2.0, 3.0])
    assert apportion.solve(values, costs, 30.0).method == "lagrangian"
    for option in (dict(time_limit=5.0), dict(max_states=10**6), dict(max_memory=2**30)):
        for batch in (False, True):
            sol = apportion.solve(values[None] if batch else values, costs, [30.0] if batch else 30.0, **option)
            assert sol.method == "exact", option


@pytest.mark.parametrize("method, option", [("lagrangian", "cost_resolution"), ("exact", "cost_resolution"),
                                            ("mirror", "time_limit"), ("mirror", "max_states"),
                                            ("mirror", "max_memory"), ("mirror", "cost_resolution")])
def test_an_option_a_method_does_not_take_is_refused_at_zero_too(method, option):
    # Found by a fuzzing helper: the checks skipped values "in (None, False)", and 0 == False.
    values, costs = np.ones((3, 2)), np.array([0.0, 1.0])
    for zero in (0, 0.0):
        with pytest.raises(ValueError, match=f"^{option}: "):
            apportion.solve(values, costs, 2.0, method=method, **{option: zero})


def test_mirror_names_the_flat_index_of_a_bad_cost_as_the_other_methods():
    # Found by a fuzzing helper: mirror counted the index within the item's row ("entry 1").
    values, costs = np.ones((4, 3)), np.ones((4, 3))
    costs[3, 1] = np.nan
    for method in ("exact", "mirror"):
        with pytest.raises(ValueError, match=r"costs: entry 10 \(flat index\)"):
            apportion.solve(values, costs, 5.0, method=method)


def test_dp_memory_message_reads_at_both_extremes():
    # Found by a fuzzing helper: sizes in GiB with 2 decimals ("need 0.00 GiB ... over the limit
    # of 0.00 GiB"), a 300-digit count of GiB for a cost_resolution far too fine, and a
    # max_memory under 1 byte that exact refuses as such.
    values, costs = np.array([[0.0, 5, 6], [0, 3, 8]]), np.array([0.0, 1, 3])
    with pytest.raises(ValueError, match=r"max_memory: the dp tables need \d+ B .* over the limit of 10 B;"):
        apportion.solve(values, costs, 2.0, method="dp", max_memory=10)
    with pytest.raises(ValueError, match="max_memory: must be at least 1 byte"):
        apportion.solve(values, costs, 2.0, method="dp", max_memory=0.5)
    with pytest.raises(ValueError, match=r"need [0-9.e+]+ TiB .*\(the default: .*\); pass a coarser cost_resolution") as exc:
        apportion.solve(values, costs * 0.5, 2.0, method="dp", cost_resolution=1e-300)
    assert len(str(exc.value)) < 400
