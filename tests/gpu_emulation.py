"""A pytest plugin that runs the GPU tests of test_cuda.py without a GPU: the launcher
(_device._launch) is replaced by the CPU core and `device="cuda"` by the CPU, so the tests'
own code (their batches, their comparisons against the CPU) runs on every machine, and a
deliberately broken "kernel" shows that they can fail.

    python -m pytest tests/test_cuda.py -p gpu_emulation -k gpu          # must pass
    APPORTION_GPU_BREAK=choice python -m pytest tests/test_cuda.py -p gpu_emulation -k gpu  # must fail

(run with tests/ on PYTHONPATH). What it cannot check: the kernels themselves, streams,
device memory, CuPy, and simulate_online (no CPU stand-in for its launcher); those GPU tests
are deselected here and run on a GPU (bench/gpu_check.sh). The emulated "GPU Lagrangian" is
the CPU's, so the checks that the GPU's primal is no better than the CPU's hold trivially.
"""

import os

import numpy as np
import pytest

# The GPU tests that need a real device (streams, CuPy, device tensors, the online kernel).
NEEDS_DEVICE = ("simulate", "kernel_reports", "torch_tensors", "cupy", "without_kernel",
                "over_max_memory", "host_input_is_checked_before_the_copy")

# A wrong "kernel" for APPORTION_GPU_BREAK: how one instance's answer is spoiled.
BREAKS = ("choice", "bound", "shadow", "status", "min_budget", "neighbour")


def host_launch(torch, dev, method, v, c, b, m, value_sign, exact_spend, table_limit):
    """_device._launch on the CPU core: the same inputs and the 7 outputs as CPU tensors."""
    import apportion

    args = [x.numpy() for x in (v, c.contiguous(), b)] + [None if m is None else m.numpy().astype(bool)]
    if method == "lagrangian":
        raw = apportion._core.lagrangian(*args, value_sign, 1)
    else:
        raw = apportion._core.dp(*args, value_sign, bool(exact_spend), 1)
    return tuple(torch.from_numpy(np.array(x)) for x in raw)


def broken_launch(how):
    def launch(torch, dev, method, v, c, b, m, value_sign, exact_spend, table_limit):
        choice, value, cost, bound, shadow, min_budget, status = host_launch(
            torch, dev, method, v, c, b, m, value_sign, exact_spend, table_limit)
        i = choice.shape[0] - 3 if choice.shape[0] > 3 else 0  # a binding instance
        if how == "choice":
            choice[i, 0] = (choice[i, 0] + 1) % v.shape[2]
        elif how == "bound":
            bound[i] *= 1.001
        elif how == "shadow":
            shadow[i] *= 1 + 1e-9
        elif how == "status":
            status[i] = 1 - status[i] if status[i] < 2 else status[i]
        elif how == "min_budget":
            min_budget[i] += 1e-6
        elif how == "neighbour":  # an instance's answer written into the next one's slot
            for out in (choice, value, cost, bound, shadow, min_budget, status):
                out[i] = out[i - 1]
        return choice, value, cost, bound, shadow, min_budget, status
    return launch


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    import torch

    from apportion import _device

    how = os.environ.get("APPORTION_GPU_BREAK")
    if how is not None and how not in BREAKS:
        raise pytest.UsageError(f"APPORTION_GPU_BREAK: expected one of {BREAKS}, got {how!r}")
    _device.target = lambda device, values: (torch.device("cpu") if device not in (None, "cpu") else None)
    _device._launch = host_launch if how is None else broken_launch(how)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    kept = []
    for item in items:
        if "gpu" not in item.keywords or any(word in item.name for word in NEEDS_DEVICE):
            continue
        item.own_markers = [mark for mark in item.own_markers if mark.name != "skip"]
        kept.append(item)
    items[:] = kept
