import importlib.util

import numpy as np
import pytest
from hypothesis import settings

import apportion

HAS_ORTOOLS = importlib.util.find_spec("ortools") is not None
HAS_CVXPY = importlib.util.find_spec("cvxpy") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None

# Hypothesis draws the same examples on every machine (seeded from each test's own hash; no
# example database), so that CI and local runs see and reproduce the same failures. Loaded
# here, before the test modules build their own @settings on top of it.
settings.register_profile("ci", derandomize=True)
settings.load_profile("ci")


def pytest_collection_modifyitems(config, items):
    if apportion.cuda_available():
        return
    reason = ("no CUDA device: the extension was built without CUDA" if not apportion.cuda_built()
              else "no CUDA device present (built with CUDA, no GPU or driver found)")
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
