"""Riemannian budget relaxation for objectives that are not sums (PyTorch).

Item i (of N, in each of B independent instances) takes one of K options. Relax its choice to
p_i = softmax(z_i / tau) over logits z_i. With option costs w_ik, the expected cost
E(z) = sum_ik p_ik w_ik must equal the budget C: the set {z : E(z) = C} is a smooth manifold
in logit space. `RCO` optimises any differentiable torch loss of p (or of straight-through
samples) on that manifold: it projects the gradient onto the tangent space, takes an Adam
step, retracts onto the manifold by shifting the logits along a curve (z - t c, the curve of
the published RCO code, or z - t w; see `retract`), with t found by a safeguarded Newton
iteration in one native call, and transports the momentum.
`round_to_budget` then turns the logits into a feasible discrete allocation with the exact
solver. See docs/architecture.md, "Riemannian relaxation".

Costs are given as option costs `costs` of shape (K,) (shared by every item), (N,K) or (B,N,K),
optionally multiplied by per-item `weights` (N,) or (B,N): w_ik = weights_i * costs_ik (for
example a layer's parameter count times the bits of option k). Costs and budgets are in the
same (arbitrary) units. Logits are (N,K) for one instance or (B,N,K) for a batch, with one
budget per instance; a logit of -inf marks an option that is never taken.

The CPU retraction, normal and tangent projection run in the C++ core on zero-copy numpy
views of the tensors (no torch softmax, which waits on torch's thread pool when the cores are
busy); tensors on other devices use torch operations (the retraction with one host
synchronisation per 16 iterations) until a CUDA kernel exists. Requires PyTorch: ``pip install "apportion[torch]"``.
"""

from __future__ import annotations

import math
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Literal, NamedTuple, Optional, Tuple,
                    Union, overload)

import numpy as np

try:
    import torch
except ImportError as _exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "apportion.torch needs PyTorch, which is not installed; install it with "
        "pip install \"apportion[torch]\" (or install a torch build for your platform first)"
    ) from _exc

import apportion
from apportion import _core
from apportion._problem import FloatArray, Solution, check_threads
from apportion._decision import allocate, fenchel_young_loss, perturbed_allocation, regret, spo_plus_loss

if TYPE_CHECKING:  # ParamsT is not in every torch supported (>= 2.1); annotations only
    from torch.optim.optimizer import ParamsT

__all__ = [
    "RCO",
    "RetractionInfo",
    "budget_normal",
    "expected_cost",
    "gumbel_sample",
    "project_tangent",
    "retract",
    "round_to_budget",
    "transport",
    "allocate",
    "regret",
    "spo_plus_loss",
    "fenchel_young_loss",
    "perturbed_allocation",
]

_STATUS = ("converged", "precision", "infeasible", "max_iter", "overflow", "rounded")
_CONVERGED, _INFEASIBLE, _OVERFLOW, _ROUNDED = 0, 2, 4, 5
# The retraction curves, as numbered in the core (RetractionCurve in cpp/retraction.hpp).
_CURVES = {"weighted": 0, "costs": 1}
# Largest max_iter the core takes (a C int).
_MAX_INT = 2**31 - 1
_FLOAT64_MAX = float(np.finfo(np.float64).max)
# Evaluations between the host synchronisations of the torch (non-CPU) retraction.
_TORCH_BLOCK = 16


class RetractionInfo(NamedTuple):
    """What `retract` found, per instance (arrays of shape (B,), or scalars when unbatched).

    shift: t, the logits moved to z - t * w (in logit units per cost unit, times tau).
    expected: E at the shift found, in cost units (float64).
    iterations: evaluations of E.
    status: "converged" (|E - budget| <= rtol * max(|budget|, 1e-6 * max(|E_min|, |E_max|)),
        E_min and E_max the ends of the reachable range: the second term a floor for budgets
        near 0), "precision" (double precision reached before rtol), "max_iter", or
        "rounded": the shift met rtol in float64, but the logits written in their own dtype
        miss it, and `expected` is E of the logits as written (float32 allows about 1e-8 to
        1e-7 relative, depending on the size of the logits and on how much E moves with them;
        float64 logits far from 0, such as a common offset of 1e12, can miss too). Only
        "converged" logits lie on the manifold to rtol; `retract` raises for the statuses it
        cannot write ("infeasible", "overflow").
    """

    shift: Any
    expected: Any
    iterations: Any
    status: Any


# --------------------------------------------------------------------------- input checking


def _check_logits(logits: Any, name: str = "logits", need_data: bool = False) -> Tuple[torch.Tensor, bool]:
    """Returns (logits as (B,N,K), batched). need_data: the caller reads the values (a meta
    tensor, which has none, is refused naming the argument)."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (N,K) or (B,N,K), got {type(logits).__name__}")
    if need_data and logits.device.type == "meta":
        raise ValueError(f"{name}: a tensor on the meta device holds no values; pass a CPU or CUDA tensor")
    if not logits.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() not in (2, 3):
        raise ValueError(f"{name}: expected shape (N,K) or (B,N,K), got {tuple(logits.shape)}")
    if logits.numel() == 0:
        raise ValueError(f"{name}: B, N and K must all be positive, got shape {tuple(logits.shape)}")
    batched = logits.dim() == 3
    return (logits if batched else logits.unsqueeze(0)), batched


def _shape(z: torch.Tensor) -> Tuple[int, int, int]:
    """(B, N, K) of a (B,N,K) tensor from `_check_logits`."""
    B, N, K = z.shape
    return B, N, K


def _check_bool(x: Any, name: str) -> bool:
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool (True or False), got {x!r}")
    return bool(x)


def _check_finite_logits(z: torch.Tensor, name: str = "logits") -> torch.Tensor:
    """torch.isfinite(z), after a ValueError naming `name` for NaN or +inf logits (no
    probability) or an item (last axis) with no finite logit; -inf marks an option never taken.
    (The core's check, for the torch paths.)"""
    finite = torch.isfinite(z)
    if bool((torch.isnan(z) | (z == math.inf)).any()) or not bool(finite.any(dim=-1).all()):
        raise ValueError(f"{name}: hold NaN or +inf, or an item with no finite logit; logits must be finite "
                         "(-inf marks an option that is never taken)")
    return finite


def _temperature(temperature: Any) -> float:
    if isinstance(temperature, bool):
        raise TypeError(f"temperature: expected a positive number, got {temperature!r}")
    try:
        tau = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(f"temperature: expected a positive number, got {temperature!r}") from None
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"temperature: must be finite and positive, got {temperature!r}")
    return tau


def _as_numpy64(x: Any, name: str) -> FloatArray:
    if isinstance(x, torch.Tensor):
        if x.device.type == "meta":
            raise ValueError(f"{name}: a tensor on the meta device holds no values; pass numbers, an array, "
                             "or a CPU or CUDA tensor")
        x = x.detach()
        # A CPU float tensor is read through numpy (cheaper than a torch conversion for the
        # small cost rows of every call); others are converted by torch.
        x = x.numpy() if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) else \
            x.to("cpu", torch.float64).numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a real numeric array, got {type(x).__name__}") from None
    return arr


def _finite_nonnegative(x: FloatArray) -> bool:
    """Every entry finite and >= 0 (NaN fails both comparisons)."""
    return x.size == 0 or bool(x.min() >= 0 and x.max() <= _FLOAT64_MAX)


class _Costs:
    """Option costs and per-item weights in canonical form for an instance shape (B,N,K):
    `costs` (Bc,Nc,K) float64 and `weights` (Bw,N) float64 or None (numpy, for the core)."""

    def __init__(self, costs: Any, weights: Any, shape: Tuple[int, int, int], batched: bool,
                 check_values: bool = True) -> None:
        """check_values=False: the caller has the core check that costs and weights are finite
        and >= 0 (the native retraction, normal and projection do, in their first pass, instead
        of more numpy passes per call)."""
        B, N, K = shape
        c = _as_numpy64(costs, "costs")
        if c.ndim == 0 or c.ndim > 3 or (not batched and c.ndim == 3):
            raise ValueError(f"costs: expected shape (K,), (N,K)" + (" or (B,N,K)" if batched else "")
                             + f" for logits of shape {shape if batched else shape[1:]}, got {c.shape}")
        c = c.reshape((1,) * (3 - c.ndim) + c.shape)
        if c.shape[2] != K or c.shape[1] not in (1, N) or c.shape[0] not in (1, B):
            raise ValueError(f"costs: shape {np.shape(costs)} does not match "
                             f"logits (B,N,K)={shape}; expected (K,), (N,K) or (B,N,K)")
        if check_values and not _finite_nonnegative(c):
            raise ValueError("costs: must be finite and >= 0")
        self.costs: FloatArray = np.ascontiguousarray(c)
        self.weights: Optional[FloatArray] = None
        if weights is not None:
            w = _as_numpy64(weights, "weights")
            if w.ndim == 1 and w.shape == (N,):
                w = w[None]
            if w.ndim != 2 or w.shape[1] != N or w.shape[0] not in (1, B) or (not batched and w.shape[0] != 1):
                raise ValueError(f"weights: expected shape (N,)" + (" or (B,N)" if batched else "")
                                 + f" with N={N}, got {w.shape}")
            if check_values and not _finite_nonnegative(w):
                raise ValueError("weights: must be finite and >= 0")
            self.weights = np.ascontiguousarray(w)
        # Keyed by str(device) for w_ik, by ("costs", str(device)) for c_ik.
        self._dense: Dict[Union[str, Tuple[str, str]], torch.Tensor] = {}

    def dense(self) -> FloatArray:
        """w_ik (B|1, N|1, K) float64 numpy (weights applied)."""
        if self.weights is None:
            return self.costs
        return self.costs * self.weights[:, :, None]

    def tensor(self, device: Any) -> torch.Tensor:
        """w_ik (B|1, N|1, K) float64 on `device` (cached)."""
        key = str(device)
        if key not in self._dense:
            self._dense[key] = torch.as_tensor(self.dense(), dtype=torch.float64, device=device)
        return self._dense[key]

    def direction(self, device: Any, curve: str) -> torch.Tensor:
        """The direction d of the retraction curve z - t d, (B|1, N|1, K) float64 on `device`:
        w_ik for curve "weighted", c_ik for curve "costs" (see `retract`)."""
        if curve == "weighted" or self.weights is None:
            return self.tensor(device)
        key = ("costs", str(device))
        if key not in self._dense:
            self._dense[key] = torch.as_tensor(self.costs, dtype=torch.float64, device=device)
        return self._dense[key]


def _budgets(budget: Any, B: int, batched: bool) -> FloatArray:
    b = _as_numpy64(budget, "budget")
    if b.ndim == 0:
        b = np.full(B, float(b))
    elif not batched and b.shape != (1,):
        raise ValueError(f"budget: expected a scalar for unbatched logits, got shape {b.shape}")
    elif b.shape not in ((B,), (1,)):
        raise ValueError(f"budget: expected a scalar or shape ({B},), got {b.shape}")
    b = np.ascontiguousarray(np.broadcast_to(b, (B,)), dtype=np.float64)
    if not np.isfinite(b).all():
        raise ValueError("budget: must be finite (the retraction needs E = budget to be reachable)")
    return b


def _positive_real(x: Any, name: str) -> float:
    """A finite number > 0 (not a bool)."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a finite number > 0, got {x!r}")
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"{name}: must be a finite number > 0, got {x!r}")
    return float(x)


# --------------------------------------------------------------------------- the geometry


def _probs64(z: torch.Tensor, tau: float) -> torch.Tensor:
    return torch.softmax(z.to(torch.float64) / tau, dim=-1)


def expected_cost(logits: torch.Tensor, costs: Any, weights: Any = None, temperature: float = 1.0) -> torch.Tensor:
    """E(z) = sum_ik softmax(z_i / tau)_k w_ik, differentiable.

    Args:
        logits: (N,K) or (B,N,K).
        costs: (K,), (N,K) or (B,N,K) option costs, >= 0; weights: None, (N,) or (B,N).
        temperature: tau > 0.

    Returns:
        float64 tensor () for (N,K) logits or (B,) for a batch, in cost units.
    """
    z, batched = _check_logits(logits)
    tau = _temperature(temperature)
    w = _Costs(costs, weights, _shape(z), batched).tensor(z.device)
    e = (_probs64(z, tau) * w).sum(dim=(1, 2))
    return e if batched else e[0]


def _native(*tensors: torch.Tensor) -> bool:
    """Whether the core takes these tensors (CPU, float32 or float64)."""
    return all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in tensors)


def _normal(z: torch.Tensor, cs: _Costs, tau: float, shape: Optional[Tuple[int, ...]] = None) -> torch.Tensor:
    """n_ik = p_ik (w_ik - wbar_i) / tau for z (B,N,K) (or any tensor of that many logits, with
    its (B,N,K) `shape`): computed in float64 and returned in the dtype and shape of z on the
    CPU (one native pass, no torch thread pool), float64 (B,N,K) elsewhere."""
    z = z.detach()
    if _native(z):
        shape = tuple(z.shape) if shape is None else shape
        zc = z if z.is_contiguous() else z.contiguous()
        out = torch.empty(zc.shape, dtype=zc.dtype)
        _core.budget_normal(zc.numpy().reshape(shape), cs.costs, cs.weights, tau, out.numpy().reshape(shape), 0)
        return out
    z = z.reshape(shape) if shape is not None else z
    _check_finite_logits(z)
    p = _probs64(z, tau)
    wb = torch.broadcast_to(cs.tensor(z.device), z.shape)
    wb = wb - wb.amin(dim=-1, keepdim=True)  # as the core: constant costs give an exact 0
    wbar = (p * wb).sum(dim=-1, keepdim=True)
    return p * (wb - wbar) / tau


def _project(g: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """g - (<g,n>/<n,n>) n per instance; g and n (B,N,K); float64 result."""
    g64 = g.to(torch.float64)
    gn = (g64 * n).sum(dim=(1, 2), keepdim=True)
    nn = (n * n).sum(dim=(1, 2), keepdim=True)
    coef = torch.where(nn > 0, gn / torch.where(nn > 0, nn, torch.ones_like(nn)), torch.zeros_like(nn))
    return g64 - coef * n


def budget_normal(logits: torch.Tensor, costs: Any, weights: Any = None, temperature: float = 1.0) -> torch.Tensor:
    """The gradient of E with respect to the logits: the normal of the budget manifold.

    n_ik = p_ik (w_ik - wbar_i) / tau with wbar_i = sum_k p_ik w_ik, computed in float64 and
    rounded once to the dtype of logits (for CPU tensors in one native pass, on one thread per
    instance).

    Args:
        logits: (N,K) or (B,N,K); costs (K,), (N,K) or (B,N,K); weights None, (N,) or (B,N);
            temperature tau > 0.

    Returns:
        Tensor of the shape and dtype of logits (cost units per logit unit).

    Raises:
        ValueError: NaN or +inf logits, or an item with no finite logit (as `retract`); costs
            or weights that are NaN, infinite or negative.
    """
    z, batched = _check_logits(logits)
    tau = _temperature(temperature)
    native = _native(z)
    n = _normal(logits, _Costs(costs, weights, _shape(z), batched, check_values=not native), tau,
                _shape(z))
    return n if native else n.to(logits.dtype).reshape(logits.shape)


def project_tangent(grad: torch.Tensor, logits: torch.Tensor, costs: Any, weights: Any = None,
                    temperature: float = 1.0) -> torch.Tensor:
    """Projects `grad` onto the tangent space of the budget manifold at `logits`.

    Returns grad - (<grad,n>/<n,n>) n per instance (n = budget_normal), so that a small step
    along it leaves E unchanged to first order. Where n = 0 (every item deterministic or of
    constant cost) grad is returned unchanged.
    Computed in float64 and rounded once to the dtype of grad.

    Args:
        grad: the shape of logits, (N,K) or (B,N,K).
        logits, costs, weights, temperature: as in `budget_normal`.

    Returns:
        Tensor of the shape and dtype of grad.

    Raises:
        ValueError: as `budget_normal`, and grad not of the shape of logits.
    """
    z, batched = _check_logits(logits)
    g, _ = _check_logits(grad, "grad")
    if g.shape != z.shape:
        raise ValueError(f"grad: expected the shape of logits {tuple(logits.shape)}, got {tuple(grad.shape)}")
    tau = _temperature(temperature)
    native = _native(logits, grad)
    cs = _Costs(costs, weights, _shape(z), batched, check_values=not native)
    if native:
        # One native pass: the normal in float64, the dot products, and g - coef n rounded once.
        shape = _shape(z)
        gc = grad.detach()
        gc = gc if gc.is_contiguous() else gc.contiguous()
        zc = logits.detach()
        zc = zc if zc.is_contiguous() else zc.contiguous()
        out = torch.empty(gc.shape, dtype=gc.dtype)
        _core.project_tangent(gc.numpy().reshape(shape), zc.numpy().reshape(shape), cs.costs, cs.weights, tau,
                              out.numpy().reshape(shape), 0)
        return out
    out = _project(g.detach(), _normal(z, cs, tau)).to(grad.dtype)
    return out if batched else out[0]


def transport(momentum: torch.Tensor, logits: torch.Tensor, costs: Any, weights: Any = None,
              temperature: float = 1.0) -> torch.Tensor:
    """Vector transport of `momentum` to the tangent space at the (retracted) `logits`: the
    tangent projection there. Shapes as in `project_tangent`."""
    return project_tangent(momentum, logits, costs, weights, temperature)


# (shift, expected, iterations, status code) per instance, as the core's retract returns them.
_RetractArrays = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _check_curve(curve: Any) -> str:
    if not isinstance(curve, str) or curve not in _CURVES:
        raise ValueError(f"curve: expected one of {sorted(_CURVES)}, got {curve!r}")
    return curve


def _retract_native(z: torch.Tensor, cs: _Costs, budgets: FloatArray, tau: float, rtol: float, max_iter: int,
                    threads: int, curve: str = "weighted") -> _RetractArrays:
    """Retracts the contiguous CPU tensor z (B,N,K) in place through a numpy view."""
    return _core.retract(z.numpy(), cs.costs, cs.weights, budgets, tau, rtol, max_iter, _CURVES[curve], threads)


def _retract_torch(z: torch.Tensor, cs: _Costs, budgets: FloatArray, tau: float, rtol: float,
                   max_iter: int, curve: str = "weighted") -> _RetractArrays:
    """The same safeguarded Newton iteration as the core, in torch operations over the whole
    batch (for tensors off the CPU); one host synchronisation per _TORCH_BLOCK evaluations."""
    dev = z.device
    w = torch.broadcast_to(cs.tensor(dev), z.shape)
    d = torch.broadcast_to(cs.direction(dev, curve), z.shape)
    z64 = z.to(torch.float64)
    C = torch.tensor(budgets, dtype=torch.float64, device=dev)
    finite = _check_finite_logits(z64)
    e_min = torch.where(finite, w, torch.full_like(w, math.inf)).amin(-1).sum(-1)
    e_max = torch.where(finite, w, torch.full_like(w, -math.inf)).amax(-1).sum(-1)
    spread = (torch.where(finite, d, torch.full_like(d, -math.inf)).amax(-1)
              - torch.where(finite, d, torch.full_like(d, math.inf)).amin(-1)).amax(-1)
    floor = 1e-6 * torch.maximum(e_min.abs(), e_max.abs())
    scale = torch.maximum(C.abs(), floor)
    slack = rtol * scale
    infeasible = (C < e_min - slack) | (C > e_max + slack)
    _raise_infeasible(infeasible.cpu().numpy(), e_min.cpu().numpy(), e_max.cpu().numpy(), budgets)
    constant = (spread <= 0) | (e_max - e_min <= 0)

    def evaluate(t: torch.Tensor, logits: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        x = ((z64 if logits is None else logits) - t[:, None, None] * d) / tau
        p = torch.softmax(x, dim=-1)
        mean = (p * w).sum(-1)
        mean_d = (p * d).sum(-1)
        cov = (p * (w - mean[..., None]) * (d - mean_d[..., None])).sum(-1)
        return mean.sum(-1) - C, -cov.sum(-1) / tau

    B = z.shape[0]
    inf = torch.full((B,), math.inf, dtype=torch.float64, device=dev)
    t = torch.zeros(B, dtype=torch.float64, device=dev)
    lo, hi, last = -inf, inf.clone(), inf.clone()
    span = 1.0 / (torch.where(constant, torch.ones_like(spread), spread) / tau)
    done = constant.clone()
    iterations = torch.zeros(B, dtype=torch.int32, device=dev)
    f, df = evaluate(t)
    iterations += 1
    status = torch.zeros(B, dtype=torch.int8, device=dev)
    eps4 = 4 * 2.220446049250313e-16
    for it in range(1, max_iter):
        conv = f.abs() <= slack
        closed = torch.isfinite(lo) & torch.isfinite(hi)
        collapsed = closed & ((hi - lo) <= eps4 * torch.maximum(lo.abs(), hi.abs()))
        status = torch.where(~done & ~conv & collapsed, torch.ones_like(status), status)
        done = done | conv | collapsed
        if it % _TORCH_BLOCK == 0 and bool(done.all()):
            break
        lo = torch.where(~done & (f > 0), t, lo)
        hi = torch.where(~done & (f <= 0), t, hi)
        newton = torch.where(df < 0, t - f / torch.where(df < 0, df, -torch.ones_like(df)), torch.full_like(t, math.nan))
        open_ = ~(torch.isfinite(lo) & torch.isfinite(hi))
        left = ~torch.isfinite(lo)
        cap = span
        cand_l = torch.maximum(torch.where(newton < t, newton, t - cap), t - cap)
        cand_r = torch.minimum(torch.where(newton > t, newton, t + cap), t + cap)
        cand_open = torch.where(left, cand_l, cand_r)
        step = newton - t
        use_newton = (newton > lo) & (newton < hi) & (step.abs() <= 0.5 * last)
        mid = lo + 0.5 * (hi - lo)
        cand = torch.where(open_, cand_open, torch.where(use_newton, newton, mid))
        new_last = torch.where(open_, (cand_open - t).abs(), torch.where(use_newton, step.abs(), 0.5 * (hi - lo)))
        live = ~done
        span = torch.where(live & open_, span * 4, span)
        last = torch.where(live, new_last, last)
        t = torch.where(live, cand, t)
        f2, df2 = evaluate(t)
        f = torch.where(live, f2, f)
        df = torch.where(live, df2, df)
        iterations += live.to(torch.int32)
    conv = f.abs() <= slack
    status = torch.where(~conv & (status == 0) & ~constant, torch.full_like(status, 3), status)
    moved = z64 - t[:, None, None] * d
    # As the core: shifted logits past the largest of their dtype would be written as inf (off
    # the manifold); such an instance is left unchanged and reported.
    over = (finite & ~(moved.abs() <= torch.finfo(z.dtype).max)).flatten(1).any(1)
    if bool(over.any()):
        f0, _ = evaluate(torch.zeros_like(t))
        status = torch.where(over, torch.full_like(status, _OVERFLOW), status)
        t = torch.where(over, torch.zeros_like(t), t)
        f = torch.where(over, f0, f)
        moved = torch.where(over[:, None, None], z64, moved)
    z.copy_(moved.to(z.dtype))
    # As the core: E of the logits as written in their dtype, "rounded" where that misses rtol;
    # float64 only where the write's rounding could move E past it (retract_instance).
    delta = 2.0**-53 * (torch.where(finite, z64.abs(), torch.zeros_like(z64)).flatten(1).amax(1)
                        + t.abs() * torch.where(finite, d.abs(), torch.zeros_like(d)).flatten(1).amax(1)) * (1 + 1e-12)
    write_error = (e_max - e_min) * torch.expm1(2.0 * delta / tau) * (1 + 1e-12)
    if z.dtype != torch.float64 or bool((~(f.abs() + write_error <= slack)).any()):
        f, _ = evaluate(torch.zeros_like(t), z.to(torch.float64))
        status = torch.where((status == 0) & ~(f.abs() <= slack), torch.full_like(status, _ROUNDED), status)
        f = torch.where(constant, e_min - C, f)
    expected = torch.where(constant, e_min, f + C)
    return (t.cpu().numpy(), expected.cpu().numpy(), iterations.cpu().numpy(), status.cpu().numpy())


def _raise_infeasible(infeasible: np.ndarray, e_min: np.ndarray, e_max: np.ndarray, budgets: FloatArray) -> None:
    if infeasible.any():
        b = int(np.flatnonzero(infeasible)[0])
        raise ValueError(
            f"budget: instance {b} asks for an expected cost of {budgets[b]!r}, outside the reachable "
            f"range [{e_min[b]!r}, {e_max[b]!r}] (sum over items of the least and greatest option cost); "
            f"pass a budget inside it")


def _check_on_manifold(p: torch.Tensor, costs: Any, budget: Any, weights: Any, temperature: float,
                       name: str) -> None:
    """ValueError naming `name` where the expected cost of p is off its budget by more than the
    tolerance RCO promises (float32 rounding included)."""
    e = np.atleast_1d(expected_cost(p.detach(), costs, weights, temperature).cpu().numpy())
    b = _budgets(budget, e.size, p.dim() == 3)
    tol = (1e-9 if p.dtype == torch.float64 else 1e-5) * np.maximum(np.abs(b), 1e-300)
    bad = ~(np.abs(e - b) <= tol)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}: instance {i}: the logits cannot be retracted onto the budget {b[i]!r} "
                         f"(E = {e[i]!r}); their differences are too large for softmax to reach it")


@overload
def retract(logits: torch.Tensor, costs: Any, budget: Any, weights: Any = None, temperature: float = 1.0, *,
            curve: str = "weighted", inplace: bool = False, rtol: float = 1e-9, max_iter: int = 200,
            threads: Optional[int] = None, return_info: Literal[False] = False) -> torch.Tensor: ...
@overload
def retract(logits: torch.Tensor, costs: Any, budget: Any, weights: Any = None, temperature: float = 1.0, *,
            curve: str = "weighted", inplace: bool = False, rtol: float = 1e-9, max_iter: int = 200,
            threads: Optional[int] = None, return_info: Literal[True]) -> Tuple[torch.Tensor, RetractionInfo]: ...
@overload
def retract(logits: torch.Tensor, costs: Any, budget: Any, weights: Any = None, temperature: float = 1.0, *,
            curve: str = "weighted", inplace: bool = False, rtol: float = 1e-9, max_iter: int = 200,
            threads: Optional[int] = None, return_info: bool = False
            ) -> Union[torch.Tensor, Tuple[torch.Tensor, RetractionInfo]]: ...
def retract(logits: torch.Tensor, costs: Any, budget: Any, weights: Any = None, temperature: float = 1.0, *,
            curve: str = "weighted", inplace: bool = False, rtol: float = 1e-9, max_iter: int = 200,
            threads: Optional[int] = None, return_info: bool = False
            ) -> Union[torch.Tensor, Tuple[torch.Tensor, RetractionInfo]]:
    """Moves logits onto the budget manifold along a curve z - t d, with E(z - t d) = budget.

    With option costs c_ik and per-item weights s_i (1 without weights), item i's cost of
    option k is w_ik = s_i c_ik, and the two curves are:
      - curve="weighted" (default): z_ik - t s_i c_ik = z_ik - t w_ik, each item moved in
        proportion to its weight (along the cost vector w);
      - curve="costs": z_ik - t c_ik, every item moved by the same t times its option costs,
        whatever its weight: the curve of the published RCO code (alpha + t c), and the default
        of the `RCO` optimizer.
    Without weights the two are the same curve. On either, E falls monotonically in t
    (dE/dt = -sum_i s_i^a Var_{p_i}(c_i) / tau, a = 2 or 1), so t is unique; a safeguarded
    Newton iteration on a bracket finds it to |E - budget| <= rtol * |budget| in float64 (see
    RetractionInfo.status for the floor near 0), for every instance of the batch in one native
    call (CPU tensors; threads over instances, or over the items of one large instance). Other
    devices use the same iteration in torch operations. The logits are written rounded to
    their dtype, which moves E (float32 always, float64 where the logits are large): the info
    then reports E of the logits as written, with status "rounded" where that misses rtol.

    Args:
        logits: (N,K) or (B,N,K) float32/float64 (-inf: an option never taken).
        costs: (K,), (N,K) or (B,N,K) option costs >= 0; weights: None, (N,) or (B,N) per-item
            multipliers (cost of option k for item i = weights_i * costs_ik).
        budget: scalar or (B,): the expected cost to reach, in cost units; it must lie inside
            [sum_i min_k w_ik, sum_i max_k w_ik].
        temperature: tau > 0 (p = softmax(z / tau)).
        curve: "weighted" or "costs", as above.
        inplace: write into `logits` (no autograd) instead of returning a new tensor.
        rtol: relative tolerance on E; max_iter: evaluations of E per instance.
        threads: native threads (None: all cores).
        return_info: also return a `RetractionInfo`.

    Returns:
        The retracted logits (shape and dtype of `logits`; `logits` itself when inplace), and
        with return_info=True a (logits, RetractionInfo) pair.

    Raises:
        ValueError: a budget outside the reachable range (naming the instance), NaN/+inf
            logits, bad shapes or costs; logits that the shift would take past the largest
            value of their dtype (float32: 3.4e38), where the instance is left unchanged
            (subtract each item's largest logit first, which leaves softmax unchanged, or use
            float64). With inplace=True the other instances of a batch are retracted.
        TypeError: an argument of the wrong type, naming it.
    """
    z, batched = _check_logits(logits, need_data=True)
    tau = _temperature(temperature)
    rtol = _positive_real(rtol, "rtol")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)):
        raise TypeError(f"max_iter: expected a positive int, got {max_iter!r}")
    if not 1 <= max_iter <= _MAX_INT:
        raise ValueError(f"max_iter: expected an int in 1..{_MAX_INT}, got {max_iter!r}")
    max_iter = int(max_iter)
    inplace = _check_bool(inplace, "inplace")
    return_info = _check_bool(return_info, "return_info")
    curve = _check_curve(curve)
    nthreads = check_threads(threads)
    B, N, K = z.shape
    native = z.device.type == "cpu" and z.dtype in (torch.float32, torch.float64)
    cs = _Costs(costs, weights, (B, N, K), batched, check_values=not native)
    budgets = _budgets(budget, B, batched)
    if inplace:
        if logits.requires_grad and torch.is_grad_enabled():
            raise ValueError("inplace: logits require grad; call under torch.no_grad() or pass inplace=False")
        target = z
    else:
        target = z.detach().clone()
    with torch.no_grad():
        if native:
            work = target if target.is_contiguous() else target.contiguous()
            try:
                shift, expected, iterations, status = _retract_native(work, cs, budgets, tau, float(rtol),
                                                                      max_iter, nthreads, curve)
            except ValueError as exc:
                raise ValueError(str(exc)) from None
            infeasible = status == _INFEASIBLE
            if infeasible.any():
                dense = np.broadcast_to(cs.dense(), (B, N, K))
                fin = np.isfinite(target.detach().to(torch.float64).numpy())
                e_min = np.where(fin, dense, np.inf).min(-1).sum(-1)
                e_max = np.where(fin, dense, -np.inf).max(-1).sum(-1)
                _raise_infeasible(infeasible, e_min, e_max, budgets)
            if work is not target:
                target.copy_(work)
        else:
            shift, expected, iterations, status = _retract_torch(target, cs, budgets, tau, float(rtol), max_iter,
                                                                 curve)
    overflow = np.asarray(status) == _OVERFLOW
    if overflow.any():
        b = int(np.flatnonzero(overflow)[0])
        raise ValueError(
            f"logits: instance {b}: reaching the budget {float(budgets[b])!r} shifts the logits past the largest "
            f"{z.dtype} ({torch.finfo(z.dtype).max:.4g}); that instance was left unchanged. Subtract each "
            "item's largest logit first (softmax is unchanged by it)"
            + (", or use float64 logits" if z.dtype != torch.float64 else
               ", or rescale costs and budget (the shift grows as the costs shrink)"))
    out = target if batched else target[0]
    if inplace:
        out = logits
    if not return_info:
        return out
    names = np.array(_STATUS)[status]
    if batched:
        info = RetractionInfo(shift, expected, iterations, names)
    else:
        info = RetractionInfo(float(shift[0]), float(expected[0]), int(iterations[0]), str(names[0]))
    return out, info


# --------------------------------------------------------------------------- discrete answers


def _solve_inputs(z: torch.Tensor, scores: Union[torch.Tensor, FloatArray],
                  cs: _Costs) -> Tuple[FloatArray, FloatArray, Optional[np.ndarray]]:
    """Values (scores as float64 numpy, -inf masked), dense costs and the mask for `solve`."""
    s = scores.detach().to("cpu", torch.float64).numpy() if isinstance(scores, torch.Tensor) else scores
    finite = np.isfinite(s)
    mask = None if finite.all() else finite
    values = np.where(finite, s, 0.0) if mask is not None else s
    costs = np.ascontiguousarray(np.broadcast_to(cs.dense(), z.shape))
    return values, costs, mask


@overload
def round_to_budget(logits: torch.Tensor, costs: Any, budget: Any, weights: Any = None, temperature: float = 1.0,
                    *, exact: bool = True, exact_spend: bool = False, cost_resolution: Optional[float] = None,
                    threads: Optional[int] = None, return_solution: Literal[False] = False) -> torch.Tensor: ...
@overload
def round_to_budget(logits: torch.Tensor, costs: Any, budget: Any, weights: Any = None, temperature: float = 1.0,
                    *, exact: bool = True, exact_spend: bool = False, cost_resolution: Optional[float] = None,
                    threads: Optional[int] = None, return_solution: Literal[True]
                    ) -> Tuple[torch.Tensor, Solution]: ...
@overload
def round_to_budget(logits: torch.Tensor, costs: Any, budget: Any, weights: Any = None, temperature: float = 1.0,
                    *, exact: bool = True, exact_spend: bool = False, cost_resolution: Optional[float] = None,
                    threads: Optional[int] = None, return_solution: bool = False
                    ) -> Union[torch.Tensor, Tuple[torch.Tensor, Solution]]: ...
def round_to_budget(logits: torch.Tensor, costs: Any, budget: Any, weights: Any = None, temperature: float = 1.0,
                    *, exact: bool = True, exact_spend: bool = False, cost_resolution: Optional[float] = None,
                    threads: Optional[int] = None, return_solution: bool = False
                    ) -> Union[torch.Tensor, Tuple[torch.Tensor, Solution]]:
    """The feasible discrete allocation of greatest log-probability.

    Chooses x_i for every item to maximise sum_i log p_i,x_i (p_i = softmax(z_i / tau))
    subject to sum_i w_i,x_i <= budget, by `apportion.solve`:
      - exact=True (default): method="exact", exact for real-valued costs, no quantisation.
      - exact=False: method="lagrangian" (certified gap, faster on huge instances).
      - exact_spend=True: the equality form sum_i w_i,x_i == budget, by method="dp" on integer
        costs (or costs quantised to `cost_resolution`); instances where no allocation spends
        exactly the budget raise ValueError.

    Args:
        logits: (N,K) or (B,N,K); costs (K,), (N,K) or (B,N,K); weights None, (N,) or (B,N);
            budget scalar or (B,) in cost units; temperature tau > 0.

    Returns:
        int64 tensor of choices, (N,) or (B,N), on the device of logits; with
        return_solution=True, (choice, `apportion.Solution`).

    Raises:
        ValueError: a budget below the cheapest allocation (naming the instance), NaN or +inf
            logits or an item with none finite, bad input.
        TypeError: exact, exact_spend or return_solution not a bool, or another argument of the
            wrong type, naming it.
    """
    z, batched = _check_logits(logits, need_data=True)
    tau = _temperature(temperature)
    exact = _check_bool(exact, "exact")
    exact_spend = _check_bool(exact_spend, "exact_spend")
    return_solution = _check_bool(return_solution, "return_solution")
    nthreads = check_threads(threads) or None
    B, N, K = z.shape
    # log softmax in numpy: a small torch softmax waits on torch's thread pool when the cores
    # are busy (8 ms instead of 0.2 ms for 224 x 7 on a loaded 2-core machine).
    raw = z.detach().to("cpu", torch.float64).numpy()
    if np.isnan(raw).any() or (raw == math.inf).any() or not np.isfinite(raw).any(axis=-1).all():
        raise ValueError("logits: hold NaN or +inf, or an item with no finite logit; logits must be finite "
                         "(-inf marks an option that is never taken)")
    with np.errstate(over="ignore"):
        x = raw / tau
    if (x == math.inf).any():
        raise ValueError(f"temperature: the logits divided by temperature={tau!r} overflow; raise it")
    cs = _Costs(costs, weights, (B, N, K), batched)
    budgets = _budgets(budget, B, batched)
    top = x.max(axis=-1, keepdims=True)  # finite: every item has a finite logit
    logp = x - top - np.log(np.exp(x - top).sum(axis=-1, keepdims=True))
    values, dense, mask = _solve_inputs(z, logp, cs)
    if exact_spend:
        sol = apportion.solve(values, dense, budgets, method="dp", mask=mask, exact_spend=True,
                              cost_resolution=cost_resolution, threads=nthreads)
    else:
        if cost_resolution is not None:
            raise ValueError("cost_resolution: only exact_spend=True (method='dp') takes it")
        sol = apportion.solve(values, dense, budgets, method="exact" if exact else "lagrangian", mask=mask,
                              threads=nthreads)
    status = np.asarray(sol.status)
    if (status == "infeasible").any():
        b = int(np.flatnonzero(status == "infeasible")[0])
        what = "no allocation spends exactly" if exact_spend else "the cheapest allocation costs more than"
        raise ValueError(f"budget: instance {b}: {what} the budget {budgets[b]!r} "
                         f"(cheapest allocation: {np.asarray(sol.min_budget)[b]!r})")
    choice = torch.from_numpy(np.ascontiguousarray(sol.choice)).to(logits.device)
    if not batched:
        choice = choice[0]
    return (choice, sol) if return_solution else choice


def gumbel_sample(logits: torch.Tensor, costs: Any, budget: Any, weights: Any = None, temperature: float = 1.0, *,
                  hard: bool = True, generator: Optional[torch.Generator] = None,
                  threads: Optional[int] = None) -> torch.Tensor:
    """A Gumbel-softmax sample of the relaxed allocation, differentiable in `logits`.

    With Gumbel noise g: soft = softmax((z + g) / tau). With hard=True (default) the forward
    value is the one-hot of the budgeted perturb-and-MAP sample argmax_x sum_i (z + g)_i,x_i
    subject to sum_i w_i,x_i <= budget, drawn by the exact solver, so every sample is feasible;
    the gradient is that of `soft` (straight-through).

    Returns:
        Tensor of the shape and dtype of logits: one-hot rows (hard) or probabilities.

    Raises:
        ValueError: NaN or +inf logits, a budget below the cheapest allocation, bad input.
        TypeError: hard not a bool, or another argument of the wrong type, naming it.
    """
    z, batched = _check_logits(logits, need_data=True)
    tau = _temperature(temperature)
    hard = _check_bool(hard, "hard")
    nthreads = check_threads(threads) or None
    _check_finite_logits(z)
    B, N, K = z.shape
    u = torch.rand(z.shape, generator=generator, dtype=torch.float64, device=z.device)
    g = -torch.log((-torch.log(u.clamp_min(1e-300))).clamp_min(1e-300))  # Gumbel(0, 1)
    perturbed = z + g.to(z.dtype)
    soft = torch.softmax(perturbed / tau, dim=-1)
    if hard:
        cs = _Costs(costs, weights, (B, N, K), batched)
        budgets = _budgets(budget, B, batched)
        values, dense, mask = _solve_inputs(z, perturbed, cs)
        sol = apportion.solve(values, dense, budgets, method="exact", mask=mask, threads=nthreads)
        status = np.asarray(sol.status)
        if (status == "infeasible").any():
            b = int(np.flatnonzero(status == "infeasible")[0])
            raise ValueError(f"budget: instance {b}: the cheapest allocation costs "
                             f"{np.asarray(sol.min_budget)[b]!r}, more than the budget {budgets[b]!r}")
        idx = torch.from_numpy(np.ascontiguousarray(sol.choice)).to(z.device)
        one_hot = torch.nn.functional.one_hot(idx, K).to(soft.dtype)
        out = one_hot - soft.detach() + soft
    else:
        out = soft
    return out if batched else out[0]


# --------------------------------------------------------------------------- the optimizer


def _check_group_options(group: Dict[str, Any]) -> None:
    """Checks the Adam and geometry options of an RCO param group (the defaults, or a group's
    own), writing them back as floats; errors name the option."""
    group["lr"] = _positive_real(group["lr"], "lr")
    betas = group["betas"]
    try:
        b1, b2 = (float(x) for x in betas)
    except (TypeError, ValueError):
        raise TypeError(f"betas: expected a pair of floats, got {betas!r:.40}") from None
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"betas: each must lie in [0, 1), got {betas!r:.40}")
    group["betas"] = (b1, b2)
    eps = group["eps"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps: must be a finite number >= 0, got {eps!r:.40}")
    group["eps"] = float(eps)
    group["temperature"] = _temperature(group["temperature"])
    _check_curve(group["curve"])


class RCO(torch.optim.Optimizer):
    """Riemannian constrained optimisation of softmax logits on the budget manifold.

    Every parameter is a logits tensor, (N,K) or (B,N,K), whose expected cost
    E = sum_ik softmax(z_i / tau)_k w_ik must equal `budget`. A step: project the gradient onto
    the tangent space, take an Adam step (moments of the tangent gradient, the step projected
    again), retract onto E = budget (`retract`), and transport the first moment to the new
    tangent space. After every step E equals the budget to 1e-9 relative in float64; float32
    logits are retracted as stored, and their rounding leaves E off by what float32 allows
    (status "rounded" of `retract`; about 1e-8 to 1e-7 relative). The parameters are
    retracted onto the manifold when the optimizer is built.

    Args:
        params: logits tensors (or param groups; a group may override costs, budget, weights,
            temperature, lr, betas, eps).
        costs: (K,), (N,K) or (B,N,K) option costs >= 0; weights: None, (N,) or (B,N).
        budget: scalar or (B,): the expected cost, in cost units.
        lr: step size in logit units; betas, eps: as in Adam.
        temperature: tau of the relaxation p = softmax(z / tau).
        curve: the retraction curve (see `retract`): "costs" (default) moves every item by
            z_i - t c_i, the curve of the published RCO code; "weighted" moves item i by
            z_i - t weights_i c_i. The same without weights.
        threads: native threads of the retraction (None: all cores).

    `step` raises ValueError (naming lr) and leaves the parameter and the optimizer state as
    they were when a step cannot end on the manifold: the Adam step or the retracted logits
    leave the range of their dtype, or the retraction does not converge (with logits so far
    apart that softmax is one-hot, E jumps past the budget).

    Use `probs()` for the relaxed allocations, `sample()` for budget-feasible Gumbel
    straight-through samples, and `round()` for the final discrete allocation.
    """

    def __init__(self, params: ParamsT, costs: Any, budget: Any, lr: float = 0.1,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weights: Any = None,
                 temperature: float = 1.0, curve: str = "costs", threads: Optional[int] = None) -> None:
        self._threads = check_threads(threads)
        defaults = dict(lr=lr, betas=betas, eps=eps, costs=costs, budget=budget, weights=weights,
                        temperature=temperature, curve=curve)
        _check_group_options(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Adds a group (as torch.optim.Optimizer does; __init__ adds each of its groups here):
        its options checked, each of its logits checked and retracted onto its manifold."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            _check_group_options(group)
            for p in group["params"]:
                _check_logits(p, "params", need_data=True)
                if p.dtype not in (torch.float32, torch.float64):
                    raise TypeError(f"params: expected float32 or float64 logits, got {p.dtype}")
                with torch.no_grad():
                    retract(p, group["costs"], group["budget"], group["weights"], group["temperature"],
                            curve=group["curve"], inplace=True, threads=self._threads or None)
                    _check_on_manifold(p, group["costs"], group["budget"], group["weights"], group["temperature"],
                                       "params")
        except (TypeError, ValueError):
            self.param_groups.pop()  # (a refused group is not left half added)
            raise

    def _geometry(self, group: Dict[str, Any], p: torch.Tensor) -> Tuple[torch.Tensor, bool, _Costs]:
        z, batched = _check_logits(p.detach(), "params")
        state = self.state[p]
        key = "_costs"
        if key not in state or state[key][0] is not group["costs"] or state[key][1] is not group["weights"]:
            state[key] = (group["costs"], group["weights"], _Costs(group["costs"], group["weights"],
                                                                     _shape(z), batched))
        return z, batched, state[key][2]

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:  # the closure's loss, or None
        """One Riemannian Adam step on every parameter with a gradient; returns the closure's
        loss when a closure is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            tau = group["temperature"]
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                z, batched, cs = self._geometry(group, p)
                B, N, K = z.shape
                budgets = _budgets(group["budget"], B, batched)
                g = p.grad.detach()
                g = g if batched else g.unsqueeze(0)
                if not bool(torch.where(torch.isfinite(z), torch.isfinite(g), True).all()):
                    # (the step would be NaN, refused as if lr were too large)
                    raise ValueError("params: the gradient holds NaN or infinite entries (at finite logits); "
                                     "the parameter was left unchanged")
                state = self.state[p]
                if "step" not in state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros(z.shape, dtype=torch.float64, device=z.device)
                    state["exp_avg_sq"] = torch.zeros(z.shape, dtype=torch.float64, device=z.device)
                # New moments and logits first; the state changes only once the step has landed
                # on the manifold.
                t = state["step"] + 1
                z64 = z.to(torch.float64)
                n = _normal(z64, cs, tau)
                gt = _project(g, n)
                m = state["exp_avg"] * b1 + gt * (1 - b1)
                v = state["exp_avg_sq"] * b2 + gt * gt * (1 - b2)
                denom = (v / (1 - b2 ** t)).sqrt_().add_(group["eps"])
                step = (m / (1 - b1 ** t)) / denom
                step = _project(step, n)
                # -inf logits (options never taken) stay where they are. The step is written in the
                # parameter's dtype and retracted there, so that the retraction sees (and reports)
                # the logits as they will be stored.
                finite = torch.isfinite(z64)
                moved = torch.where(finite, z64 - group["lr"] * step, z64)
                limit = torch.finfo(p.dtype).max
                if not bool((moved[finite].abs() <= limit).all()):
                    raise ValueError(f"lr: the step of lr={group['lr']!r} takes the logits past the largest "
                                     f"{p.dtype} ({limit:.4g}); the parameter was left unchanged; lower lr")
                znew = moved.to(p.dtype).contiguous()
                try:
                    _, info = retract(znew, cs.costs, budgets, cs.weights, tau, curve=_check_curve(group["curve"]),
                                      inplace=True, threads=self._threads or None, return_info=True)
                except ValueError as exc:
                    raise ValueError(f"lr: after the step of lr={group['lr']!r} the retraction failed ({exc}); "
                                     "the parameter was left unchanged; lower lr") from None
                status = np.atleast_1d(np.asarray(info.status))
                # "rounded": on the manifold as far as the dtype (float32) allows.
                off = (status != _STATUS[_CONVERGED]) & (status != _STATUS[_ROUNDED])
                if off.any():
                    b = int(np.flatnonzero(off)[0])
                    expected = float(np.atleast_1d(info.expected)[b])
                    raise ValueError(
                        f"lr: after the step of lr={group['lr']!r} the retraction of instance {b} ended "
                        f"'{status[b]}' with E = {expected!r} against the budget {float(budgets[b])!r} (the logits are "
                        "too far apart for softmax to reach it); the parameter was left unchanged; lower lr")
                state["step"] = t
                state["exp_avg"] = _project(m, _normal(znew.to(torch.float64), cs, tau))
                state["exp_avg_sq"] = v
                p.copy_(znew if batched else znew[0])
        return loss

    def _each(self) -> Iterator[Tuple[Dict[str, Any], torch.Tensor]]:
        for group in self.param_groups:
            for p in group["params"]:
                yield group, p

    def probs(self) -> List[torch.Tensor]:
        """softmax(z / tau) of every parameter (float64, differentiable), in parameter order."""
        return [torch.softmax(p.to(torch.float64) / g["temperature"], dim=-1) for g, p in self._each()]

    def expected_costs(self) -> List[torch.Tensor]:
        """E of every parameter (float64 scalar or (B,)), in parameter order."""
        return [expected_cost(p.detach(), g["costs"], g["weights"], g["temperature"]) for g, p in self._each()]

    def sample(self, hard: bool = True, generator: Optional[torch.Generator] = None) -> List[torch.Tensor]:
        """A Gumbel straight-through sample of every parameter (see `gumbel_sample`); with
        hard=True every sample meets the budget (drawn by the exact solver)."""
        return [gumbel_sample(p, g["costs"], g["budget"], g["weights"], g["temperature"], hard=hard,
                              generator=generator, threads=self._threads or None) for g, p in self._each()]

    def round(self, exact: bool = True, exact_spend: bool = False,
              cost_resolution: Optional[float] = None) -> List[torch.Tensor]:
        """`round_to_budget` of every parameter: the feasible allocation of greatest
        log-probability (int64 choices), in parameter order."""
        return [round_to_budget(p, g["costs"], g["budget"], g["weights"], g["temperature"], exact=exact,
                                exact_spend=exact_spend, cost_resolution=cost_resolution,
                                threads=self._threads or None) for g, p in self._each()]
