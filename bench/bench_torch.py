"""Riemannian relaxation benchmarks: the budget retraction and round_to_budget.

    python -m pytest bench/bench_torch.py --benchmark-only

Targets (2-core machine): retraction of 1e6 logits (N=125,000, K=8) to 1e-9 relative in
<= 10 ms on CPU; round_to_budget for N=224, K=7 in <= 1 ms. The retraction is compared with a
pure-torch bisection that synchronises with the host every iteration (`.item()` in the loop
test, as published reference code does).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
at = pytest.importorskip("apportion.torch")

COSTS8 = np.array([2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 16.0])


def make(B, N, K=8, scale=0.8, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, N, K, generator=g, dtype=torch.float64)
    budget = (at.expected_cost(z, COSTS8[:K]) * scale).numpy()
    return z, budget


def torch_bisection(z, costs, budget, rtol=1e-9):
    """Reference-style retraction: bisection on t with a host sync (`.item()`) per iteration."""
    w = torch.as_tensor(costs, dtype=z.dtype)
    C = torch.as_tensor(budget, dtype=z.dtype)
    lo = torch.full((z.shape[0],), -1e3, dtype=z.dtype)
    hi = torch.full((z.shape[0],), 1e3, dtype=z.dtype)
    while True:
        t = 0.5 * (lo + hi)
        e = (torch.softmax(z - t[:, None, None] * w, -1) * w).sum((1, 2))
        err = e - C
        if (err.abs() / C.abs()).max().item() <= rtol:
            return z - t[:, None, None] * w
        lo = torch.where(err > 0, t, lo)
        hi = torch.where(err > 0, hi, t)


@pytest.mark.parametrize("case", ["far", "near"])
def test_retract_1e6_logits(benchmark, case):
    """N=125,000, K=8, one budget: 'far' asks for 80% of the current expected cost (a large
    shift); 'near' is an optimizer step (E already within 1e-3 of the budget)."""
    z, budget = make(1, 125_000, scale=0.8 if case == "far" else 1.001)
    out, info = at.retract(z, COSTS8, budget, return_info=True)
    assert info.status[0] == "converged"
    benchmark.extra_info["iterations"] = int(info.iterations[0])
    benchmark.pedantic(lambda: at.retract(z, COSTS8, budget), rounds=10, warmup_rounds=1)


def test_retract_batch_of_64_budgets(benchmark):
    """64 instances of N=2,000, K=8 (about 1e6 logits), one native call."""
    z, budget = make(64, 2000)
    benchmark.pedantic(lambda: at.retract(z, COSTS8, budget), rounds=10, warmup_rounds=1)


@pytest.mark.parametrize("B,N", [(1, 125_000), (64, 2000)])
def test_torch_bisection_reference(benchmark, B, N):
    z, budget = make(B, N)
    benchmark.pedantic(lambda: torch_bisection(z, COSTS8, budget), rounds=3, warmup_rounds=0)


def test_round_to_budget_224x7(benchmark):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(224, 7, generator=g, dtype=torch.float64)
    costs = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0])
    benchmark.pedantic(lambda: at.round_to_budget(z, costs, 3.0 * 224), rounds=50, iterations=5, warmup_rounds=2)
