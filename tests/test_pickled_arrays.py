"""Arrays that went through pickle (multiprocessing, Ray's object store) are accepted.

An unpickled array carries its own dtype object: equal to numpy's float64 but not the same
object, so the bindings must compare dtypes by equivalence, not identity.
"""

import pickle

import numpy as np
import pytest

import apportion


def _roundtrip(x):
    return pickle.loads(pickle.dumps(x))


def _instances(dtype):
    rng = np.random.default_rng(7)
    values = rng.random((3, 12, 4)).astype(dtype)
    costs = rng.integers(0, 6, (3, 12, 4)).astype(dtype)
    budget = rng.uniform(10, 30, 3)
    return values, costs, budget


def test_unpickled_dtype_is_not_the_builtin_object():
    # The premise of this file: if numpy ever returns the builtin dtype here, the tests below
    # no longer exercise anything.
    assert _roundtrip(np.zeros(2)).dtype is not np.dtype(np.float64)


@pytest.mark.parametrize("method", ["lagrangian", "exact", "dp", "mirror"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_solve_takes_unpickled_arrays(method, dtype):
    values, costs, budget = _instances(dtype)
    mask = np.ones(values.shape, bool)
    mask[:, :, 3] = False
    want = apportion.solve(values, costs, budget, method=method, mask=mask)
    got = apportion.solve(_roundtrip(values), _roundtrip(costs), _roundtrip(budget), method=method,
                          mask=_roundtrip(mask))
    np.testing.assert_array_equal(got.choice, want.choice)
    np.testing.assert_array_equal(got.value, want.value)
    np.testing.assert_array_equal(got.status, want.status)


def test_online_takes_unpickled_arrays():
    values, costs, _ = _instances(np.float64)
    want = apportion.simulate_online(values[0], costs[0], 10.0)
    got = apportion.simulate_online(_roundtrip(values[0]), _roundtrip(costs[0]), 10.0)
    np.testing.assert_array_equal(got.choice, want.choice)
    alloc = apportion.OnlineAllocator(10.0, 12)
    ref = apportion.OnlineAllocator(10.0, 12)
    np.testing.assert_array_equal(alloc.decide(_roundtrip(values[0]), _roundtrip(costs[0])),
                                  ref.decide(values[0], costs[0]))
