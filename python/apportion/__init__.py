"""apportion: budget-constrained assignment (multiple-choice knapsack) solvers.

Given N items that must each take one of K options, a value and a cost per option, and a
budget, find the allocation of greatest value that fits the budget.

    >>> import numpy as np, apportion
    >>> values = np.array([[0.0, 5.0, 6.0], [0.0, 3.0, 8.0]])
    >>> sol = apportion.solve(values, costs=[0.0, 1.0, 3.0], budget=4.0)
    >>> sol.choice.tolist(), sol.value
    ([1, 2], 13.0)

Submodules, loaded on first use (`import apportion` imports none of their dependencies):
`reference` (CP-SAT, HiGHS and cvxpy references), `workloads` (seeded instances), `schedule`
(routing tasks to compute tiers), `torch` (the Riemannian relaxation, decision-focused losses),
`learn` (the decision-focused learning example), `ray` (sharded solves, Ray Data and online
servers on a Ray cluster), `cli` and `benchmark`.
`warmup()` pays the first call's one-time costs ahead of a scheduler's first request.
"""

import importlib as _importlib
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError, version as _version
from typing import Any as _Any, Dict as _Dict, List as _List

from . import _core
from ._problem import Solution
from ._warmup import warmup
from .api import Frontier, frontier, solve
from .online import NoFeasibleOptionError, OnlineAllocator, OnlineRun, simulate_online

try:
    __version__ = _version("apportion")
except _PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"


def cuda_built() -> bool:
    """Whether the extension was compiled with the CUDA backend."""
    return bool(_core.built_with_cuda())


def cuda_device_count() -> int:
    """CUDA devices visible to the extension (0 without a CUDA build, driver or GPU)."""
    return int(_core.cuda_device_count())


def cuda_available() -> bool:
    """True when the CUDA backend is built and a GPU is present."""
    return cuda_built() and cuda_device_count() > 0


def build_info() -> _Dict[str, _Any]:
    """How the native core was built and which of its code paths this CPU runs.

    Returns a dict:
        simd_compiled: the instruction-set levels the hot loops were compiled for, lowest
            first: "baseline" (x86-64 SSE2, or the only level off x86-64 Linux with GCC),
            "x86-64-v3" (AVX2, FMA, BMI2) and "x86-64-v4" (AVX-512).
        simd_cpu: the highest of them this CPU runs.
        simd_running: the level the Lagrangian's pass over every option runs at now
            (simd_cpu, unless lowered for a test). Every level gives the same answers, bit
            for bit.
        compiler: the C++ compiler and its version.
        cuda_built: whether the CUDA backend was compiled (see `cuda_available`).
    """
    info = dict(_core.build_info())
    info["simd_compiled"] = list(info["simd_compiled"])
    return info


__all__ = [
    "Frontier",
    "Solution",
    "frontier",
    "solve",
    "OnlineAllocator",
    "OnlineRun",
    "NoFeasibleOptionError",
    "simulate_online",
    "build_info",
    "cuda_available",
    "cuda_built",
    "cuda_device_count",
    "warmup",
    "__version__",
]

# Submodules loaded on first attribute access (as scipy does), so that `import apportion`
# stays light: `apportion.torch` imports torch, `apportion.reference` the reference solvers'
# packages on use, `apportion.cli` and `apportion.benchmark` argparse and rich.
# `import apportion.reference` works as well.
_LAZY_SUBMODULES = ("benchmark", "cli", "learn", "ray", "reference", "schedule", "torch", "workloads")


def __getattr__(name: str) -> _Any:
    if name in _LAZY_SUBMODULES:
        # import_module also binds the submodule as an attribute of this package, so this
        # runs once per name.
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> _List[str]:
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
