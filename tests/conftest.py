import faulthandler
import importlib.util
import os

import numpy as np
import pytest
try:  # the GPU machine of bench/gpu_check.sh may lack hypothesis; test_cuda.py does not use it
    from hypothesis import settings
except ImportError:
    settings = None

import apportion

HAS_ORTOOLS = importlib.util.find_spec("ortools") is not None
HAS_CVXPY = importlib.util.find_spec("cvxpy") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None

# Hypothesis draws the same examples on every machine (seeded from each test's own hash; no
# example database), so that CI and local runs see and reproduce the same failures. Loaded
# here, before the test modules build their own @settings on top of it.
if settings is not None:
    settings.register_profile("ci", derandomize=True)
    settings.load_profile("ci")


# A duplicate of the real stderr, taken in pytest_configure, when pytest's capture of fd 2 is
# suspended (as pytest's own faulthandler plugin takes it).
_stderr_fd = None


def pytest_configure(config):
    global _stderr_fd
    _stderr_fd = os.dup(2)


def restore_faulthandler():
    """faulthandler's handlers of fatal signals again, after Ray's: ray.init installs Ray's own,
    which stay after ray.shutdown() and print nothing, so a later test that aborted or crashed
    ended the run without a word (CI lost a SIGABRT that way). Call after ray.shutdown()."""
    if _stderr_fd is not None and faulthandler.is_enabled():
        faulthandler.disable()  # enable() alone keeps Ray's handlers where its own were replaced
        faulthandler.enable(file=_stderr_fd, all_threads=True)


def gpu_skip_reason():
    """Why tests marked `gpu` cannot run here, or None: they need the CUDA build, a device,
    and a CUDA build of torch (the GPU path allocates its outputs with torch)."""
    if not apportion.cuda_built():
        return "no CUDA: the extension was built without CUDA"
    if apportion.cuda_device_count() == 0:
        return "no CUDA device present (built with CUDA, no GPU or driver found)"
    if not HAS_TORCH:
        return "torch is not installed (the GPU path needs a CUDA build of torch)"
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} has no CUDA support (a CPU build)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = gpu_skip_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
