"""Device dispatch: where a solve runs, and the CUDA path of `solve` and `simulate_online`.

`device=None` solves where the input lives: a CUDA array (a torch CUDA tensor, or anything
exposing ``__dlpack__`` or ``__cuda_array_interface__`` on a CUDA device) is solved on its
device, on torch's current stream of that device, with outputs allocated on the same device
and no copy to the host; numpy input is solved on the CPU. ``device="cuda"`` (or ``"cuda:N"``)
moves numpy input to the GPU and the answer back. The native core reads device memory through
DLPack or ``__cuda_array_interface__`` (it does not link against torch); this module uses
torch, found through ``sys.modules``/import, to normalise shapes and dtypes and to allocate
the outputs.

Stream order with other libraries: a producer with ``__dlpack__`` (CuPy, JAX, torch...) is
read through torch.from_dlpack, which passes the consumer's stream so the producer orders its
pending work before it; a producer with only ``__cuda_array_interface__`` (Numba) is read on
the device its pointer belongs to, and the stream it names (CAI v3 ``stream``) is waited on
before the launch. The outputs are ready on torch's current stream of the solve's device.

After a device solve the launcher has synchronised the stream once (to report bad input found
by the kernels), so reading the small status vector back to name the statuses costs nothing more.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

import numpy as np

from . import _core
from ._problem import STATUS_NAMES, Method, Problem, Solution, check_sense, cost_resolution_value, grid_costs, grid_down, make_solution

DEVICE_METHODS = ("lagrangian", "dp")
_OPTIMAL, _FEASIBLE, _INFEASIBLE = 0, 1, 2  # the core's status codes (problem.hpp)
_DLPACK_CUDA = (2, 13)  # kDLCUDA, kDLCUDAManaged


def is_cuda_array(x: Any) -> bool:
    """Whether `x` lives on a CUDA device (torch tensor, CAI or DLPack producer)."""
    if type(x) is np.ndarray:  # the common case, answered before any attribute lookup
        return False
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return bool(x.is_cuda)
    if hasattr(x, "__cuda_array_interface__"):
        return True
    dlpack_device = getattr(x, "__dlpack_device__", None)
    if dlpack_device is not None:
        try:
            return int(dlpack_device()[0]) in _DLPACK_CUDA
        except Exception:  # a producer that cannot say is not a CUDA array
            return False
    return False


def _torch_for_cuda(device: Any) -> Any:
    """torch, after checking that a CUDA solve can run; a RuntimeError naming `device` if not."""
    if not _core.built_with_cuda():
        raise RuntimeError(
            f"device={device!r}: apportion was built without the CUDA backend (nvcc was not found "
            "at build time); reinstall with APPORTION_CUDA=ON, or pass device=None for the CPU")
    if _core.cuda_device_count() == 0:
        raise RuntimeError(
            f"device={device!r}: no CUDA device or driver is present; pass device=None for the CPU")
    try:
        import torch
    except ImportError:
        raise RuntimeError(f"device={device!r}: the CUDA path needs torch with CUDA support "
                           "installed (pip install apportion[torch])") from None
    if not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r}: torch was built without CUDA; install a CUDA build of torch")
    return torch


def target(device: Any, values: Any) -> Optional[Any]:
    """The torch device a solve runs on, or None for the CPU. Raises a ValueError naming
    `device` for a value it does not know and a RuntimeError when CUDA is asked for but absent."""
    if device is None:
        if not is_cuda_array(values):
            return None
        torch = _torch_for_cuda("cuda (the input's device)")
        return _as_tensor(torch, values, None).device
    name = str(device)
    if name == "cpu":
        return None
    if not (name == "cuda" or name.startswith("cuda:")):
        raise ValueError(f"device: expected None, 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    torch = _torch_for_cuda(device)
    dev = torch.device(name)
    return torch.device("cuda", torch.cuda.current_device()) if dev.index is None else dev


def device_method(method: Method, exact_spend: bool, cost_resolution: Any, where: Any) -> Method:
    """The method a device solve runs: "auto" picks "dp" for exact_spend or cost_resolution,
    else "lagrangian"; methods without a kernel raise a ValueError naming method and device."""
    if method == "auto":
        return "dp" if (exact_spend or cost_resolution is not None) else "lagrangian"
    if method not in DEVICE_METHODS:
        raise ValueError(f"method: {method!r} has no CUDA kernel (device {where}); use one of "
                         f"{DEVICE_METHODS}, or device='cpu'")
    return method


def _from_cai(torch: Any, x: Any) -> Any:
    """A tensor over a ``__cuda_array_interface__`` array, on the device its pointer belongs
    to, with torch's current stream there waiting on the producer's stream (CAI v3)."""
    cai = x.__cuda_array_interface__
    ptr = int(cai["data"][0])
    index = _core.cuda_pointer_device(ptr) if ptr else torch.cuda.current_device()
    if index < 0:
        raise ValueError("__cuda_array_interface__: the data pointer is not CUDA device memory")
    dev = torch.device("cuda", index)
    producer = cai.get("stream")
    if producer is not None:  # CAI v3: the data is ready once this stream's work is done
        torch.cuda.current_stream(dev).wait_stream(torch.cuda.ExternalStream(int(producer), device=dev))
    return torch.as_tensor(x, device=dev)


def _as_tensor(torch: Any, x: Any, dev: Any) -> Any:
    """x as a torch tensor (on `dev` if given): torch tensors as they are, DLPack producers
    through torch.from_dlpack (stream-ordered, on their own device), CAI-only producers
    through _from_cai, anything else through numpy."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif hasattr(x, "__dlpack__") and is_cuda_array(x):
        t = torch.from_dlpack(x)
    elif hasattr(x, "__cuda_array_interface__"):
        t = _from_cai(torch, x)
    else:
        t = torch.as_tensor(np.asarray(x))
    return t if dev is None else t.to(dev)


def _stream(torch: Any, dev: Any) -> int:
    return int(torch.cuda.current_stream(dev).cuda_stream)


def _outputs(torch: Any, dev: Any, B: int, N: int) -> tuple[Any, ...]:
    f64 = dict(dtype=torch.float64, device=dev)
    return (torch.empty((B, N), dtype=torch.int64, device=dev), torch.empty(B, **f64),
            torch.empty(B, **f64), torch.empty(B, **f64), torch.empty(B, **f64),
            torch.empty(B, **f64), torch.empty(B, dtype=torch.int8, device=dev))


# Scratch bytes per launch of the Lagrangian's global-memory path (0: the launcher's 1 GiB);
# tests lower it to reach several launches with small batches.
LAGRANGIAN_CHUNK_SCRATCH = 0


def _launch(torch: Any, dev: Any, method: str, v: Any, c: Any, b: Any, m: Any, value_sign: float,
            exact_spend: bool, table_limit: int) -> tuple[Any, ...]:
    """Runs `method` on device tensors (B,N,K) values v, costs c (broadcastable), budgets b
    (B,) float64, mask m (B,N,K) uint8 or None; returns the 7 output tensors on `dev`."""
    B, N, _ = v.shape
    outs = _outputs(torch, dev, B, N)
    stream = _stream(torch, dev)
    if method == "lagrangian":
        _core.cuda_lagrangian(v, c, b, m, value_sign, outs, stream, dev.index, LAGRANGIAN_CHUNK_SCRATCH)
    else:
        _core.cuda_dp(v, c, b, m, value_sign, bool(exact_spend), int(table_limit), outs, stream, dev.index)
    return outs


def check_host_input(problem: Problem) -> None:
    """The kernels' input checks, on host arrays before the copy to the device (one pass over
    data that is on the host anyway): a bad entry is named before any launch. The kernels keep
    their own checks for device-resident input."""
    costs = problem.costs
    if not (np.isfinite(costs) & (costs >= 0)).all():
        raise ValueError("costs: an entry is NaN, infinite or negative; costs must be finite and >= 0")
    values = problem.values if problem.mask is None else problem.values[problem.mask]
    if not np.isfinite(values).all():
        raise ValueError("values: an entry is NaN or infinite; values must be finite")


def run_host_problem(problem: Problem, method: str, dev: Any, *, exact_spend: bool = False,
                     table_limit: int = 0) -> tuple[Any, ...]:
    """Solves a canonical (numpy) Problem on `dev` and returns the raw host tuple of the core.
    table_limit: bytes the GPU DP may allocate (0: half the free device memory)."""
    import torch

    check_host_input(problem)

    def tensor(a: np.ndarray) -> Any:  # torch warns on a read-only array (a broadcast mask or costs)
        return torch.from_numpy(a if a.flags.writeable else np.array(a)).to(dev)

    v, c, b = tensor(problem.values), tensor(problem.costs), tensor(problem.budget)
    m = None if problem.mask is None else tensor(problem.mask.view(np.uint8))
    outs = _launch(torch, dev, method, v, c, b, m, problem.value_sign, exact_spend, table_limit)
    return tuple(o.cpu().numpy() for o in outs)


def solve_resident(values: Any, costs: Any, budget: Any, *, method: str, mask: Any, sense: Any,
                   dev: Any, exact_spend: bool, cost_resolution: Optional[float], table_limit: int,
                   started: float) -> Solution:
    """Solves input that already lives on a CUDA device, on that device; the Solution's arrays
    are tensors there (status names excepted). With cost_resolution the real cost of each
    answer is checked against its real budget as on the CPU (within_real_budgets), which reads
    the (B,N) chosen costs back to the host."""
    import torch

    if sense not in ("max", "min"):
        raise ValueError(f"sense: expected 'max' or 'min', got {sense!r}")
    v = _as_tensor(torch, values, dev)
    c = _as_tensor(torch, costs, dev)
    if v.dim() not in (2, 3):
        raise ValueError(f"values: expected shape (N,K) or (B,N,K), got {tuple(v.shape)}")
    batched = v.dim() == 3
    if not batched:
        v = v[None]
    B, N, K = v.shape
    if B == 0 or N == 0 or K == 0:
        raise ValueError(f"values: expected B, N and K all positive, got shape {tuple(v.shape)}")
    if c.dim() == 0 or c.dim() > v.dim() or (not batched and c.dim() == 3):
        raise ValueError(f"costs: expected shape (K,), (N,K) or (B,N,K) matching values, got {tuple(c.shape)}")
    c = c.reshape((1,) * (3 - c.dim()) + tuple(c.shape))
    if any(cd not in (1, vd) for cd, vd in zip(c.shape, v.shape)):
        raise ValueError(f"costs: shape {tuple(c.shape)} does not broadcast against values {tuple(v.shape)}")
    dtype = torch.float32 if (v.dtype == torch.float32 and c.dtype == torch.float32) else torch.float64
    v = v.to(dtype).contiguous()
    if c.shape[2] != K:
        c = c.expand(c.shape[0], c.shape[1], K)
    if cost_resolution is not None:
        res = float(cost_resolution)
        if not res > 0:
            raise ValueError(f"cost_resolution: must be positive, got {cost_resolution!r}")
        res = cost_resolution_value(res)
        real_costs = c.to(torch.float64)  # the caller's costs, for the real-budget check
        c = grid_costs(real_costs, res, dtype, torch)
    c = c.to(dtype).contiguous()
    b = _as_tensor(torch, budget, dev).to(torch.float64)
    if b.dim() == 0:
        b = b.expand(B)
    elif not batched or tuple(b.shape) != (B,):
        raise ValueError(f"budget: expected a scalar or shape ({B},), got {tuple(b.shape)}")
    b = b.contiguous()
    m = None
    if mask is not None:
        m = _as_tensor(torch, mask, dev)
        if not batched and m.dim() == 2:
            m = m[None]
        m = (m != 0).expand(B, N, K).contiguous().view(torch.uint8)
    sign = 1.0 if sense == "max" else -1.0
    if cost_resolution is None:
        outs = _launch(torch, dev, method, v, c, b, m, sign, exact_spend, table_limit)
        choice, value, cost, bound, shadow, min_budget, status = outs
    else:
        from .api import within_real_budgets  # api imports this module

        dense = real_costs.expand(B, N, K)

        def run(grid_budgets: np.ndarray) -> tuple[Any, ...]:
            outs = _launch(torch, dev, method, v, c, torch.from_numpy(grid_budgets).to(dev), m, sign,
                           exact_spend, table_limit)
            chosen = torch.gather(dense, 2, outs[0].clamp_min(0)[:, :, None])[:, :, 0]
            return outs, chosen.cpu().numpy(), outs[6].cpu().numpy() != _INFEASIBLE

        real_budgets = b.cpu().numpy()
        first_cells = grid_down(real_budgets, res)
        outs, grid_budgets, real_cost, over, first = within_real_budgets(
            run, first_cells, real_budgets, exact_spend, res)
        choice, value, _, bound, shadow, _, status = outs
        cost = torch.from_numpy(real_cost).to(dev)  # totals in the caller's units
        lowered = grid_budgets < first_cells
        if lowered.any():  # as on the CPU (api._solve_dp): "feasible", with the first cell's bound
            lowered_t = torch.from_numpy(lowered).to(dev)
            status = torch.where(lowered_t & (status == _OPTIMAL), torch.full_like(status, _FEASIBLE), status)
            bound = torch.where(lowered_t, first[3], bound)
        if over.any():  # exact_spend: a cell lower would move the target
            over_t = torch.from_numpy(over).to(dev)
            status = torch.where(over_t, torch.full_like(status, _INFEASIBLE), status)
            bound = torch.where(over_t, torch.full_like(bound, float("nan")), bound)
            shadow = torch.where(over_t, torch.full_like(shadow, float("nan")), shadow)
        shadow = shadow / res
        allowed = dense if m is None else torch.where(m.bool(), dense, torch.full_like(dense, float("inf")))
        min_budget = allowed.min(dim=2).values.sum(dim=1)
    if sense == "min":
        value, bound = -value, -bound
    gap = (bound - value).abs()
    names = STATUS_NAMES[status.cpu().numpy()]
    if not batched:
        choice, value, cost, bound, gap = choice[0], value[0], cost[0], bound[0], gap[0]
        shadow, min_budget, names = shadow[0], min_budget[0], str(names[0])
    info: dict[str, Any] = {"device": str(dev)}
    if cost_resolution is not None:
        info.update(cost_resolution=res, quantised_budget=grid_budgets * res)
    return Solution(choice, value, cost, bound, gap, names, shadow, min_budget, method,
                    time.perf_counter() - started, check_sense(sense), info)


def simulate(v: np.ndarray, c: np.ndarray, b: np.ndarray, horizon: int, mirror: int, step: float,
             skip_allowed: bool, m0: np.ndarray, record_choices: bool, dev: Any) -> tuple[Any, ...]:
    """simulate_online on `dev` for canonical host arrays; returns the raw host tuple."""
    import torch

    S, T, _ = v.shape
    R = b.size
    vt, ct = torch.from_numpy(v).to(dev), torch.from_numpy(c).to(dev)
    f64 = dict(dtype=torch.float64, device=dev)
    outs = (torch.empty((S, T), dtype=torch.int64, device=dev) if record_choices else None,
            torch.empty(S, **f64), torch.empty((S, R), **f64), torch.empty((S, R), **f64),
            torch.empty(S, dtype=torch.int64, device=dev))
    _core.cuda_simulate_online(vt, ct, b, horizon, mirror, step, bool(skip_allowed), m0, outs,
                               _stream(torch, dev), dev.index)
    return tuple(None if o is None else o.cpu().numpy() for o in outs)
