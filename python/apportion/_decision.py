"""Decision-focused learning through the allocation (PyTorch): regret, SPO+ and perturbed
Fenchel-Young losses, and the perturbed (expected) allocation as a differentiable layer.

A predictor maps features to the values of a batch of allocation problems (B instances of N
items x K options, as `apportion.solve` takes them). Trained for accuracy (MSE on the values), it
spends its capacity where the allocation does not care; these losses train it on the decisions
its predictions lead to instead. Every loss solves its whole batch in one native call (for the
perturbed losses, all B x n_samples perturbed problems in one call), with the solver `method`
("exact" by default, or "lagrangian" for speed: its certified gap is reported through `info`).

Notation, per instance: values v (N,K) (losses for sense="min"), an allocation x is a one-hot
(N,K) tensor (x[i,k] = 1 when item i takes option k) within the budget, <v, x> = sum v*x its
objective, x*(v) the solver's allocation and z*(v) = <v, x*(v)>. s = +1 for "max", -1 for "min".

- regret(v_hat, v) = s (z*(v) - <v, x*(v_hat)>) >= 0: the objective lost by deciding on the
  predicted values, measured with the true ones.
- SPO+ (Elmachtoub and Grigas, "Smart 'predict, then optimize'", 2022):
  l(v_hat, v) = s (<2 v_hat - v, x*(2 v_hat - v)> - 2 <v_hat, x*(v)> + z*(v)), a convex upper
  bound on the regret, with the subgradient 2 s (x*(2 v_hat - v) - x*(v)).
- Perturbed Fenchel-Young (Berthet et al., "Learning with differentiable perturbed optimizers",
  2020): with Z Gaussian and F(theta) = E[s max_x s <theta + sigma Z, x>],
  l(theta, y) = s (F(theta) - <theta, y>) >= 0 (the Fenchel-Young loss up to a constant in y),
  gradient s (E[x*(theta + sigma Z)] - y). F is estimated by n_samples draws; for fixed draws
  the estimate is exactly a piecewise-linear convex function of theta with that gradient.
- perturbed_allocation(theta) = E[x*(theta + sigma Z)], differentiable with the Jacobian
  estimate E[x*(theta + sigma Z) Z^T] / sigma.

These definitions and their sign conventions are PyEPO's (`pyepo.func.SPOPlus`,
`perturbedFenchelYoung`, `perturbedOpt`), which `tests/test_decision.py` checks, value and
gradient, on small instances. Solves run on the CPU: tensors on another device are copied to
the host for the solve and the allocations copied back.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Literal, Optional, Tuple, cast

import numpy as np
import torch

from . import api
from ._problem import Sense, Solution

__all__ = [
    "allocate",
    "regret",
    "spo_plus_loss",
    "fenchel_young_loss",
    "perturbed_allocation",
]

SolverMethod = Literal["exact", "lagrangian"]
Reduction = Literal["mean", "sum", "none"]
# The certificate `info` dicts collect (see `allocate`): counts, gaps, seconds, the method.
Info = Dict[str, Any]

_SOLVER_METHODS = ("exact", "lagrangian")
_REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------- input checking


def _as_values(x: Any, name: str, like: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, bool]:
    """Returns (x as a (B,N,K) tensor, batched). `like`: the tensor x must match in shape."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (N,K) or (B,N,K), got "
                        f"{type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if like is not None and x.shape != like.shape:
        raise ValueError(f"{name}: shape {tuple(x.shape)} does not match the predictions' "
                         f"{tuple(like.shape)}")
    if x.dim() not in (2, 3):
        raise ValueError(f"{name}: expected shape (N,K) or (B,N,K), got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name}: B, N and K must all be positive, got shape {tuple(x.shape)}")
    if x.device.type == "meta":
        raise ValueError(f"{name}: a tensor on the meta device holds no values")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: holds NaN or infinite entries; values must be finite")
    return (x if x.dim() == 3 else x.unsqueeze(0)), x.dim() == 3


def _shape(v: torch.Tensor) -> Tuple[int, int, int]:
    """(B, N, K) of a (B,N,K) tensor from `_as_values`."""
    B, N, K = v.shape
    return B, N, K


def _to_host64(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a real numeric array, got {type(x).__name__}") from None


class _Problems:
    """The fixed part of a batch of allocation problems: costs, budgets, sense and solver.

    costs: float64 numpy (K,), (N,K) or (B,N,K); budget: float64 (B,). `solve` takes values of
    shape (B*r, N, K), r copies of each instance in a row (instance-major), as the perturbed
    losses stack them."""

    def __init__(self, shape: Tuple[int, int, int], costs: Any, budget: Any, sense: Sense,
                 method: SolverMethod, threads: Optional[int], batched: bool) -> None:
        B, N, K = shape
        if sense not in ("max", "min"):
            raise ValueError(f"sense: expected 'max' or 'min', got {sense!r:.40}")
        if not isinstance(method, str) or method not in _SOLVER_METHODS:
            raise ValueError(f"method: expected one of {_SOLVER_METHODS}, got {method!r:.40}")
        c = _to_host64(costs, "costs")
        if c.ndim == 3 and not batched:
            raise ValueError(f"costs: expected shape (K,) or (N,K) for one instance (N,K)="
                             f"{(N, K)}, got {c.shape}")
        if c.ndim == 3 and c.shape[0] == 1:
            c = c[0]
        if c.ndim == 0 or c.ndim > 3 or c.shape[-1] != K or (c.ndim >= 2 and c.shape[-2] not in (1, N)) \
                or (c.ndim == 3 and c.shape[0] != B):
            raise ValueError(f"costs: expected shape (K,), (N,K) or (B,N,K) with (B,N,K)="
                             f"{shape}, got {c.shape}")
        b = _to_host64(budget, "budget")
        if b.ndim > 1 or (b.ndim == 1 and b.shape[0] not in (1, B)):
            raise ValueError(f"budget: expected a scalar or shape ({B},), got {b.shape}")
        self.costs = np.ascontiguousarray(c)
        self.budget = np.ascontiguousarray(np.broadcast_to(b, (B,)), dtype=np.float64)
        self.sense: Sense = sense
        self.sign = 1.0 if sense == "max" else -1.0
        self.method: SolverMethod = method
        self.threads, self.batched = threads, batched

    def solve(self, values: torch.Tensor, repeats: int = 1, info: Optional[Info] = None) -> torch.Tensor:
        """x*(values): one batched native solve of values (B*repeats, N, K); returns the
        one-hot allocations (B*repeats, N, K), detached, in the dtype and on the device of
        values. Raises ValueError naming the budget where an instance has no allocation."""
        v = np.ascontiguousarray(values.detach().to("cpu", torch.float64).numpy())
        costs, budget = self.costs, self.budget
        if repeats > 1:
            budget = np.repeat(budget, repeats)
            if costs.ndim == 3:
                costs = np.repeat(costs, repeats, axis=0)
        sol = api.solve(v, costs, budget, method=self.method, sense=self.sense,
                        threads=self.threads)
        status = np.asarray(sol.status)
        if (status == "infeasible").any():
            first = int(np.flatnonzero(status == "infeasible")[0])
            b = first // repeats
            raise ValueError(f"budget: instance {b} has no allocation within its budget "
                             f"{float(self.budget[b])!r} (its cheapest allocation costs "
                             f"{float(np.asarray(sol.min_budget)[first])!r})")
        if info is not None:
            _record(info, sol)
        choice = torch.from_numpy(np.asarray(sol.choice)).to(values.device)
        return torch.nn.functional.one_hot(choice, values.shape[-1]).to(values.dtype)


def _record(info: Info, sol: Solution) -> None:
    """Adds one batched solve's certificate to `info` (accumulated over the solves of a call)."""
    gap = np.asarray(sol.gap, dtype=np.float64)
    rel = np.asarray(sol.relative_gap, dtype=np.float64)
    info["method"] = sol.method
    info["solves"] = info.get("solves", 0) + int(gap.size)
    info["optimal"] = info.get("optimal", 0) + int(np.count_nonzero(np.asarray(sol.optimal)))
    info["max_gap"] = max(info.get("max_gap", 0.0), float(gap.max()))
    info["max_relative_gap"] = max(info.get("max_relative_gap", 0.0), float(rel.max()))
    info["seconds"] = info.get("seconds", 0.0) + float(sol.seconds)


def _objective(values: torch.Tensor, allocation: torch.Tensor) -> torch.Tensor:
    """<values, allocation> per instance: (..., N, K) x (..., N, K) -> (...)."""
    return (values * allocation).sum(dim=(-2, -1))


def _reduce(loss: torch.Tensor, reduction: Reduction, batched: bool) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss if batched else loss[0]


def _check_reduction(reduction: Any) -> Reduction:
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r:.40}")
    return cast(Reduction, reduction)


def _true_allocation(true_solution: Any, true_values: Optional[torch.Tensor], v_pred: torch.Tensor,
                     problems: _Problems, info: Optional[Info]) -> torch.Tensor:
    """x*(true values) as a (B,N,K) one-hot: the precomputed `true_solution` when given (one-hot
    (N,K)/(B,N,K), or option indices (N,)/(B,N)), else one solve of `true_values`."""
    if true_solution is None:
        if true_values is None:
            raise ValueError("true_values: needed when true_solution is not given")
        return problems.solve(true_values, info=info)
    if not isinstance(true_solution, torch.Tensor):
        raise TypeError(f"true_solution: expected a torch.Tensor, got {type(true_solution).__name__}")
    B, N, K = v_pred.shape
    batched = problems.batched
    x = true_solution.detach().to(v_pred.device)
    if x.dim() == (2 if batched else 1):  # option indices
        if x.is_floating_point() or x.shape[-1] != N or (batched and x.shape[0] != B) or bool(((x < 0) | (x >= K)).any()):
            raise ValueError(f"true_solution: option indices must be integers of shape "
                             f"{'(B,N)' if batched else '(N,)'} with N={N}, in 0..{K - 1}")
        return torch.nn.functional.one_hot(x.reshape(-1, N).long(), K).to(v_pred.dtype)
    if x.dim() != (3 if batched else 2) or tuple(x.shape[-2:]) != (N, K) \
            or (batched and x.shape[0] != B):
        raise ValueError(f"true_solution: expected a one-hot {'(B,N,K)' if batched else '(N,K)'}="
                         f"{(B, N, K) if batched else (N, K)} tensor or option indices, got shape "
                         f"{tuple(true_solution.shape)}")
    x = x.reshape(B, N, K).to(v_pred.dtype)
    if not bool(((x == 0) | (x == 1)).all() and (x.sum(dim=-1) == 1).all()):
        raise ValueError("true_solution: each item's row must be one-hot (one 1, the rest 0)")
    return x


# --------------------------------------------------------------------------- public functions


def allocate(values: torch.Tensor, costs: Any, budget: Any, *, sense: Sense = "max",
             method: SolverMethod = "exact", threads: Optional[int] = None,
             info: Optional[Info] = None) -> torch.Tensor:
    """The solver's allocation x*(values) as a one-hot tensor (no gradient).

    Args:
        values: (N,K) or (B,N,K) float tensor; losses for sense="min".
        costs: (K,), (N,K) or (B,N,K) option costs (array or tensor), >= 0, in budget units.
        budget: a scalar or (B,).
        sense: "max" (maximise values) or "min" (minimise losses).
        method: "exact" (proven optimal) or "lagrangian" (microseconds, certified gap).
        threads: native threads (None: all cores).
        info: a dict to fill with the solve's certificate: "method", "solves" (instances
            solved), "optimal" (how many proven optimal), "max_gap" (largest bound - value, in
            value units), "max_relative_gap", "seconds". Accumulates over calls that share it.

    Returns:
        (N,K) or (B,N,K) one-hot allocations in the dtype and on the device of `values`.
    """
    v, batched = _as_values(values, "values")
    problems = _Problems(_shape(v), costs, budget, sense, method, threads, batched)
    x = problems.solve(v, info=info)
    return x if batched else x[0]


def regret(pred_values: torch.Tensor, true_values: torch.Tensor, costs: Any, budget: Any, *,
           sense: Sense = "max", normalized: bool = False, true_solution: Any = None,
           method: SolverMethod = "exact", threads: Optional[int] = None,
           info: Optional[Info] = None) -> torch.Tensor:
    """The objective lost by deciding on the predicted values, measured with the true ones.

    regret = z*(true) - <true, x*(pred)> for sense="max", <true, x*(pred)> - z*(true) for "min":
    >= 0 when both solves are exact (method="exact"). No gradient: regret is piecewise constant
    in the predictions; train with `spo_plus_loss` or `fenchel_young_loss`.

    Args:
        pred_values, true_values: (N,K) or (B,N,K) tensors of the same shape, in value units.
        costs, budget, sense, method, threads, info: as in `allocate`.
        normalized: divide each instance's regret by |z*(true)| (a ValueError where that is 0).
            For a data set's normalised regret as PyEPO reports it, divide the sum of the
            unnormalised regrets by the sum of |z*(true)| instead.
        true_solution: x*(true_values), precomputed: one-hot (B,N,K) or option indices (B,N).

    Returns:
        (B,) regrets (a 0-d tensor for unbatched input), in value units (or a fraction of the
        optimum when normalized), dtype and device of pred_values.
    """
    normalized = api._flag(normalized, "normalized")  # (a string such as "False" is truthy)
    v_pred, batched = _as_values(pred_values, "pred_values")
    v_true, _ = _as_values(true_values, "true_values", like=pred_values)
    problems = _Problems(_shape(v_pred), costs, budget, sense, method, threads, batched)
    x_true = _true_allocation(true_solution, v_true, v_pred, problems, info)
    v_true = v_true.detach().to(v_pred.dtype)
    x_pred = problems.solve(v_pred, info=info)
    best = _objective(v_true, x_true)
    lost = problems.sign * (best - _objective(v_true, x_pred))
    if normalized:
        if bool((best == 0).any()):
            raise ValueError("normalized: the true optimum is 0 for some instance, so its regret "
                             "has no relative size; pass normalized=False")
        lost = lost / best.abs()
    return lost.detach() if batched else lost.detach()[0]


def spo_plus_loss(pred_values: torch.Tensor, true_values: torch.Tensor, costs: Any, budget: Any, *,
                  sense: Sense = "max", true_solution: Any = None, reduction: Reduction = "mean",
                  method: SolverMethod = "exact", threads: Optional[int] = None,
                  info: Optional[Info] = None) -> torch.Tensor:
    """The SPO+ loss (Elmachtoub and Grigas), a convex surrogate of the regret.

    For sense="max": l = <2 pred - true, x*(2 pred - true)> - 2 <pred, x*(true)> + z*(true)
    (negated for "min"); it bounds the regret from above and is 0 at pred = true. Its gradient
    with respect to pred_values is the subgradient 2 (x*(2 pred - true) - x*(true)) (negated
    for "min"); no gradient flows to true_values. One batched solve of 2 pred - true per call,
    plus one of true_values unless true_solution is given (precompute it once per data set
    with `allocate`).

    Args:
        pred_values: (N,K) or (B,N,K) predictions (requires_grad as the model gives them).
        true_values: the same shape, the realised values.
        costs, budget, sense, method, threads, info: as in `allocate`.
        true_solution: x*(true_values), precomputed: one-hot (B,N,K) or option indices (B,N).
        reduction: "mean" (default) or "sum" over the batch, or "none" for the (B,) losses.

    Returns:
        The loss in value units: a scalar tensor, or (B,) with reduction="none".
    """
    reduction = _check_reduction(reduction)
    v_pred, batched = _as_values(pred_values, "pred_values")
    v_true, _ = _as_values(true_values, "true_values", like=pred_values)
    problems = _Problems(_shape(v_pred), costs, budget, sense, method, threads, batched)
    x_true = _true_allocation(true_solution, v_true, v_pred, problems, info)
    v_true = v_true.detach().to(v_pred.dtype)
    shifted = 2 * v_pred - v_true
    x_shifted = problems.solve(shifted, info=info)
    # Danskin: with x_shifted held fixed this expression has the SPO+ subgradient.
    loss = problems.sign * (_objective(shifted, x_shifted) - 2 * _objective(v_pred, x_true)
                            + _objective(v_true, x_true))
    return _reduce(loss, reduction, batched)


def _perturbed_solutions(theta: torch.Tensor, problems: _Problems, n_samples: Any, sigma: Any,
                         generator: Optional[torch.Generator], noise: Optional[torch.Tensor],
                         info: Optional[Info]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Draws Z (B,S,N,K) standard Gaussian (or takes `noise`) and solves theta + sigma Z, all
    B*S problems in one native call. Returns (Z, x* (B,S,N,K)), both detached."""
    B, N, K = theta.shape
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples: expected an integer >= 1, got {n_samples!r:.40}")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma: expected a finite number > 0, got {sigma!r:.40}")
    S = int(n_samples)
    if noise is None:
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        # (B, S, N, K) in this order draws the same numbers as PyEPO's (B, S, N*K).
        noise = torch.randn((B, S, N, K), generator=generator, dtype=theta.dtype,
                            device=theta.device)
    else:
        if not isinstance(noise, torch.Tensor) or tuple(noise.shape[-3:]) != (S, N, K) \
                or noise.numel() != B * S * N * K:
            raise ValueError(f"noise: expected a tensor of shape (B,S,N,K)={(B, S, N, K)} "
                             f"(S = n_samples), got {getattr(noise, 'shape', type(noise).__name__)}")
        noise = noise.detach().reshape(B, S, N, K).to(theta.device, theta.dtype)
        if not bool(torch.isfinite(noise).all()):  # (the solver would name the perturbed values)
            raise ValueError("noise: holds NaN or infinite entries; the draws must be finite")
    perturbed = theta.detach().unsqueeze(1) + float(sigma) * noise
    if not bool(torch.isfinite(perturbed).all()):
        raise ValueError(f"sigma: values + sigma * noise overflow at sigma={float(sigma)!r}; "
                         "lower sigma or rescale the values")
    x = problems.solve(perturbed.reshape(B * S, N, K), repeats=S, info=info)
    return noise, x.reshape(B, S, N, K)


class _PerturbedAllocation(torch.autograd.Function):
    """E[x*(theta + sigma Z)] with the Jacobian estimate E[x* Z^T] / sigma (Berthet et al.)."""

    @staticmethod
    def forward(ctx: Any, theta: torch.Tensor, noise: torch.Tensor, solutions: torch.Tensor,
                sigma: float, variance_reduction: bool) -> torch.Tensor:
        ctx.save_for_backward(noise, solutions)
        ctx.sigma, ctx.variance_reduction = sigma, variance_reduction
        return solutions.mean(dim=1)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> Tuple[torch.Tensor, None, None, None, None]:
        noise, solutions = ctx.saved_tensors
        S = solutions.shape[1]
        reward = (solutions * grad_output.unsqueeze(1)).sum(dim=(-2, -1))  # (B, S)
        if ctx.variance_reduction and S > 1:
            # Leave-one-out baseline: unbiased, and it removes the reward's common part.
            reward = (reward - reward.mean(dim=1, keepdim=True)) * (S / (S - 1))
        grad = (noise * reward[:, :, None, None]).sum(dim=1) / (S * ctx.sigma)
        return grad, None, None, None, None


def perturbed_allocation(values: torch.Tensor, costs: Any, budget: Any, *, n_samples: int = 10,
                         sigma: float = 1.0, sense: Sense = "max", method: SolverMethod = "exact",
                         variance_reduction: bool = True, generator: Optional[torch.Generator] = None,
                         noise: Optional[torch.Tensor] = None, threads: Optional[int] = None,
                         info: Optional[Info] = None) -> torch.Tensor:
    """The expected allocation under Gaussian perturbation, a differentiable layer.

    Returns the Monte-Carlo mean of x*(values + sigma Z) over n_samples draws of Z ~ N(0, I):
    (N,K) or (B,N,K) entries in [0, 1], each item's row summing to 1 (the probability that it
    takes each option). Its backward pass is the estimate E[x*(values + sigma Z) Z^T] / sigma of
    the Jacobian of the smoothed map (Berthet et al. 2020), with a leave-one-out baseline when
    variance_reduction is True (the default, as PyEPO's `perturbedOpt`). All B * n_samples
    perturbed problems are solved in one native call.

    Args:
        values: (N,K) or (B,N,K) float tensor, in value units (losses for sense="min").
        costs, budget, sense, method, threads, info: as in `allocate`.
        n_samples: draws per instance (>= 1).
        sigma: the perturbation's standard deviation, in value units (> 0).
        generator: a torch.Generator for the draws (None: torch's global one).
        noise: the draws themselves, (B, n_samples, N, K) standard Gaussian (overrides
            generator); for common random numbers across calls.
    """
    theta, batched = _as_values(values, "values")
    problems = _Problems(_shape(theta), costs, budget, sense, method, threads, batched)
    vr = api._flag(variance_reduction, "variance_reduction")
    z, x = _perturbed_solutions(theta, problems, n_samples, sigma, generator, noise, info)
    # torch leaves Function.apply unannotated; it returns what forward returns.
    apply = cast(Callable[..., torch.Tensor], _PerturbedAllocation.apply)
    out = apply(theta, z, x, float(sigma), bool(vr))
    return out if batched else out[0]


def fenchel_young_loss(pred_values: torch.Tensor, true_values: Optional[torch.Tensor], costs: Any,
                       budget: Any, *, true_solution: Any = None, n_samples: int = 10,
                       sigma: float = 1.0, sense: Sense = "max", reduction: Reduction = "mean",
                       method: SolverMethod = "exact", generator: Optional[torch.Generator] = None,
                       noise: Optional[torch.Tensor] = None, threads: Optional[int] = None,
                       info: Optional[Info] = None) -> torch.Tensor:
    """The perturbed Fenchel-Young loss (Berthet et al. 2020) against the true allocation.

    For sense="max": l = mean_s <pred + sigma Z_s, x*(pred + sigma Z_s)> - <pred, y>, where
    y = x*(true_values) (negated for "min"). It is >= 0 up to the Monte-Carlo error of the first
    term (Jensen: E max >= max), and its gradient with respect to pred_values is
    mean_s x*(pred + sigma Z_s) - y (negated for "min"): the perturbed allocation minus the
    target. No Jacobian of the solver is needed. All B * n_samples perturbed problems are solved
    in one native call.

    Args:
        pred_values: (N,K) or (B,N,K) predictions.
        true_values: the same shape, or None when true_solution is given.
        true_solution: y, precomputed: one-hot (B,N,K) or option indices (B,N).
        n_samples, sigma, generator, noise: the perturbation, as in `perturbed_allocation`.
        costs, budget, sense, method, threads, info: as in `allocate`.
        reduction: "mean" (default), "sum", or "none" for the (B,) losses.

    Returns:
        The loss in value units: a scalar tensor, or (B,) with reduction="none".
    """
    reduction = _check_reduction(reduction)
    theta, batched = _as_values(pred_values, "pred_values")
    v_true = None if true_values is None else _as_values(true_values, "true_values", like=pred_values)[0]
    problems = _Problems(_shape(theta), costs, budget, sense, method, threads, batched)
    y = _true_allocation(true_solution, v_true, theta, problems, info)
    z, x = _perturbed_solutions(theta, problems, n_samples, sigma, generator, noise, info)
    # With the draws and their solutions held fixed, d/dtheta of this is mean_s x_s - y.
    perturbed_best = _objective(theta.unsqueeze(1) + float(sigma) * z, x).mean(dim=1)
    loss = problems.sign * (perturbed_best - _objective(theta, y))
    return _reduce(loss, reduction, batched)
