"""Decision-focused learning in the scheduler: a worked example (`apportion example learn`).

Each instance is a day of N tasks routed to K compute tiers under a budget (see
`apportion.schedule`). Task i comes with a feature vector f_i (P standard-normal numbers, standing
in for what a model reads off the task text); its consequence c_i and its difficulty d_i are
known but nonlinear functions of f_i (`true_losses`), its success on tier k is
s_ik = sigmoid(8 (a_k - d_i)) (`schedule.success_from_difficulty`), and the quantity routed on is
the expected loss l_ik = c_i (1 - s_ik) (loss units; sense="min").

A linear predictor f_i -> (l_i1..l_iK) (`LinearPredictor`, misspecified on purpose: the truth is
not linear in f) is trained three ways for the same epochs, minibatches and optimiser:

- "two-stage": mean squared error on the losses (accuracy first, then route);
- "spo+": `apportion.torch.spo_plus_loss` through the exact solver;
- "fenchel-young": `apportion.torch.fenchel_young_loss` (Gaussian perturbations).

`run_example` returns the test regret of routing on each one's predictions: the loss the routing
adds over routing on the true losses, as a fraction of the optimum (sum over the test days of
regret / sum of the optimal losses). `pyepo_model` builds the same problem for PyEPO (OR-Tools
pywraplp with SCIP) for the comparison in bench/bench_decision.py; PyEPO is a benchmark peer,
never needed by apportion.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

try:
    import torch
except ImportError as _exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "apportion.learn needs PyTorch, which is not installed; install it with "
        "pip install \"apportion[torch]\" (or install a torch build for your platform first)"
    ) from _exc

from . import _decision
from ._decision import SolverMethod
from ._problem import FloatArray
from .schedule import Tier, success_from_difficulty

__all__ = [
    "LEARN_TIERS",
    "METHODS",
    "BASELINE",
    "EXAMPLE_FULL",
    "EXAMPLE_QUICK",
    "LearnData",
    "LinearPredictor",
    "true_losses",
    "make_data",
    "train",
    "test_regret",
    "run_example",
    "example_table",
    "pyepo_model",
]

# Four tiers; abilities spread over the difficulties, costs doubling per tier (compute units).
LEARN_TIERS = (Tier("small", 1.0, 0.2), Tier("medium", 2.0, 0.4), Tier("large", 4.0, 0.6),
               Tier("xl", 8.0, 0.8))
METHODS = ("two-stage", "spo+", "fenchel-young")
# Budget per task in compute units: every task on "medium" and a quarter of them one tier up.
BUDGET_PER_TASK = 2.5


@dataclasses.dataclass
class LearnData:
    """A seeded data set of routing days.

    Attributes:
        features: (B, N, P) float32, the task features.
        losses: (B, N, K) float32, true expected losses l_ik = c_i (1 - s_ik) (loss units).
        costs: (K,) float64 tier costs (compute units).
        budget: float, the budget of every day (compute units).
        solution: (B, N) int64, the optimal routing of each day on the true losses.
        optimum: (B,) float64, its expected loss.
    """

    features: torch.Tensor
    losses: torch.Tensor
    costs: FloatArray
    budget: float
    solution: torch.Tensor
    optimum: torch.Tensor


def true_losses(features: FloatArray, rng: np.random.Generator, noise: float = 0.25) -> FloatArray:
    """Expected losses (..., N, K) of tasks with features (..., N, P), by the fixed nonlinear
    truth: consequence c = exp(0.6 f0 + 0.6 f1 f2) times a multiplicative U(1-noise, 1+noise)
    draw (what a wrong answer on this task costs, lognormal-like), difficulty
    d = sigmoid(f3 + 0.8 (f4^2 - 1) - 0.5 f0), success on LEARN_TIERS by the logistic model."""
    f = features
    consequence: FloatArray = np.exp(0.6 * f[..., 0] + 0.6 * f[..., 1] * f[..., 2])
    consequence = consequence * rng.uniform(1.0 - noise, 1.0 + noise, consequence.shape)
    difficulty = 1.0 / (1.0 + np.exp(-(f[..., 3] + 0.8 * (f[..., 4] ** 2 - 1.0) - 0.5 * f[..., 0])))
    success = success_from_difficulty(difficulty.reshape(-1), LEARN_TIERS)
    success = success.reshape(difficulty.shape + (len(LEARN_TIERS),))
    return consequence[..., None] * (1.0 - success)


def make_data(days: int, tasks: int = 100, *, features: int = 5, seed: int = 0,
              threads: Optional[int] = None) -> LearnData:
    """`days` routing days of `tasks` tasks each, seeded; the optimal routing of each day is
    solved once (method="exact", one batched call)."""
    for name, count in (("days", days), ("tasks", tasks), ("features", features)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{name}: expected a positive int, got {count!r}")
    if features < 5:
        raise ValueError(f"features: the truth reads 5 features, got {features}")
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((days, tasks, features))
    losses = torch.from_numpy(true_losses(f, rng)).to(torch.float32)
    costs = np.array([t.cost for t in LEARN_TIERS])
    budget = BUDGET_PER_TASK * tasks
    x = _decision.allocate(losses, costs, budget, sense="min", threads=threads)
    return LearnData(torch.from_numpy(f).to(torch.float32), losses, costs, budget,
                     x.argmax(dim=-1), (losses.double() * x.double()).sum(dim=(1, 2)))


class LinearPredictor(torch.nn.Module):
    """Per task, one linear map from its P features to its K expected losses:
    (B, N, P) -> (B, N, K), the same weights for every task."""

    def __init__(self, features: int, tiers: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(features, tiers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        losses: torch.Tensor = self.linear(features)  # Module.__call__ is typed as returning Any
        return losses


def _loss(method: str, pred: torch.Tensor, data: LearnData, idx: torch.Tensor, sigma: float,
          n_samples: int, generator: torch.Generator, solver: SolverMethod,
          threads: Optional[int]) -> torch.Tensor:
    if method == "two-stage":
        return torch.nn.functional.mse_loss(pred, data.losses[idx])
    if method == "spo+":
        return _decision.spo_plus_loss(pred, data.losses[idx], data.costs, data.budget, sense="min",
                                       true_solution=data.solution[idx], method=solver,
                                       threads=threads)
    return _decision.fenchel_young_loss(pred, None, data.costs, data.budget, sense="min",
                                        true_solution=data.solution[idx], sigma=sigma,
                                        n_samples=n_samples, generator=generator, method=solver,
                                        threads=threads)


def train(method: str, data: LearnData, *, epochs: int = 10, batch_size: int = 32, lr: float = 0.01,
          sigma: float = 0.5, n_samples: int = 4, seed: int = 0, solver: SolverMethod = "exact",
          threads: Optional[int] = None, torch_threads: Optional[int] = 1,
          epoch_seconds: Optional[List[float]] = None,
          loss: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None
          ) -> LinearPredictor:
    """Trains a fresh `LinearPredictor` (initialised from `seed`) with `method` (one of
    METHODS) by Adam over shuffled minibatches of days.

    loss: loss(predictions (b,N,K), day indices (b,)) -> scalar, in place of the method's
    loss (`method` is then only a label): how bench/bench_decision.py runs PyEPO's losses
    through the same loop, model, minibatches and optimiser.

    sigma, n_samples: the Fenchel-Young perturbation (loss units, draws per day). solver: the
    method of the solves inside the losses ("exact" or "lagrangian"); the true routings in
    `data` are exact either way. threads: the native solver's threads (None: all cores).
    torch_threads: torch's intra-op threads during the loop, restored after (None: leave
    them). The default 1 is deliberate: these tensors are small, and torch's two threads beside
    the solver's on 2 busy cores took 8-20x the CPU time per epoch (measured, see README).
    epoch_seconds: a list to append each epoch's CPU time (process time, all threads) to."""
    if loss is None and method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if solver not in ("exact", "lagrangian"):  # (the losses would name it "method")
        raise ValueError(f"solver: expected 'exact' or 'lagrangian', got {solver!r:.40}")
    for name, count, least in (("epochs", epochs, 0), ("batch_size", batch_size, 1),
                               ("torch_threads", 1 if torch_threads is None else torch_threads, 1)):
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < least:
            raise ValueError(f"{name}: expected an integer >= {least}, got {count!r:.40}")
    previous = torch.get_num_threads()
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    try:
        torch.manual_seed(seed)
        model = LinearPredictor(data.features.shape[-1], data.losses.shape[-1])
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        B = data.features.shape[0]
        for _ in range(epochs):
            started = time.process_time()
            # torch.split and torch.autograd.backward: Tensor.split and Tensor.backward are
            # unannotated in torch.
            for idx in torch.split(torch.randperm(B, generator=gen), batch_size):
                pred = model(data.features[idx])
                value = loss(pred, idx) if loss is not None else \
                    _loss(method, pred, data, idx, sigma, n_samples, gen, solver, threads)
                opt.zero_grad()
                torch.autograd.backward(value)
                opt.step()
            if epoch_seconds is not None:
                epoch_seconds.append(time.process_time() - started)
    finally:
        torch.set_num_threads(previous)
    return model


def test_regret(model: torch.nn.Module, data: LearnData, threads: Optional[int] = None) -> float:
    """Normalised regret of routing every day of `data` on the model's predictions: the sum of
    the regrets over the sum of the optimal losses (0 = as good as knowing the truth)."""
    with torch.no_grad():
        pred = model(data.features)
    lost = _decision.regret(pred.double(), data.losses.double(), data.costs, data.budget,
                            sense="min", true_solution=data.solution, threads=threads)
    return float(lost.sum() / data.optimum.abs().sum())


def _test_mse(model: torch.nn.Module, data: LearnData) -> float:
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(model(data.features), data.losses))


BASELINE = "no features (mean per tier)"
# The sizes of `apportion example learn` and of its --quick form.
EXAMPLE_FULL = dict(train_days=10_000, test_days=1000, tasks=100, epochs=10)
EXAMPLE_QUICK = dict(train_days=500, test_days=200, tasks=100, epochs=5)


def run_example(*, train_days: int = 1000, test_days: int = 1000, tasks: int = 100,
                epochs: int = 10, methods: Sequence[str] = METHODS, seed: int = 0,
                threads: Optional[int] = None, **train_args: Any) -> Dict[str, Dict[str, float]]:
    """Trains each of `methods` on the same training days and tests them on other days.

    Returns {name: {"regret": normalised test regret (`test_regret`), "mse": test mean squared
    error of the predicted losses, "epoch_seconds": mean CPU seconds per epoch}} for each method
    and for BASELINE, which predicts every task's losses as the training mean per tier (routing
    that ignores the features; no training, epoch_seconds NaN). train_args go to `train`."""
    train_data = make_data(train_days, tasks, seed=seed, threads=threads)
    test_data = make_data(test_days, tasks, seed=seed + 1, threads=threads)
    mean = train_data.losses.mean(dim=(0, 1))

    class _Constant(torch.nn.Module):
        def forward(self, f: torch.Tensor) -> torch.Tensor:
            return mean.expand(f.shape[:-1] + mean.shape)

    out: Dict[str, Dict[str, float]] = {}
    for name in (BASELINE,) + tuple(methods):
        seconds: List[float] = []
        if name == BASELINE:
            model: torch.nn.Module = _Constant()
        else:
            model = train(name, train_data, epochs=epochs, seed=seed, threads=threads,
                          epoch_seconds=seconds, **train_args)
        out[name] = {"regret": test_regret(model, test_data, threads),
                     "mse": _test_mse(model, test_data),
                     "epoch_seconds": float(np.mean(seconds)) if seconds else math.nan}
    return out


def example_table(results: Dict[str, Dict[str, float]]) -> str:
    """`run_example`'s results as a markdown table."""
    lines = ["| trained with | test regret (share of the optimal loss) | test MSE | CPU s per epoch |",
             "|---|---|---|---|"]
    for name, row in results.items():
        sec = "-" if math.isnan(row["epoch_seconds"]) else f"{row['epoch_seconds']:.2f}"
        lines.append(f"| {name} | {row['regret']:.2%} | {row['mse']:.4f} | {sec} |")
    return "\n".join(lines)


_PYEPO_CLASS: Optional[type] = None


def pyepo_model(costs: Any, budget: float, tasks: int, *, sense: str = "min", solver: str = "scip") -> Any:
    """The routing problem of one day as a PyEPO model: OR-Tools pywraplp (backend `solver`),
    binaries x_ik, one tier per task, sum_ik costs_k x_ik <= budget; the predicted cost vector
    is the (N*K,) flattening of the (N, K) losses. Needs `pip install pyepo` (a peer for
    bench/bench_decision.py and tests/test_decision.py, never used by apportion itself)."""
    global _PYEPO_CLASS
    if _PYEPO_CLASS is None:
        # Imported by name so that mypy reads these optional peers as Any, installed or not
        # (OR-Tools ships no type information; PyEPO's, where present, is not checked here).
        pywraplp = importlib.import_module("ortools.linear_solver.pywraplp")
        EPO = importlib.import_module("pyepo.EPO")
        optOrtModel: Any = importlib.import_module("pyepo.model.ort").optOrtModel

        class RoutingModel(optOrtModel):  # type: ignore[misc]  # an untyped base (Any)
            """Multiple-choice knapsack in pywraplp for PyEPO."""

            def __init__(self, costs: Any, budget: float, tasks: int, sense: str = "min",
                         solver: str = "scip") -> None:
                self.tier_costs = np.asarray(costs, dtype=np.float64)
                self.budget, self.tasks = float(budget), int(tasks)
                self.modelSense = EPO.MINIMIZE if sense == "min" else EPO.MAXIMIZE
                super().__init__(solver)

            def _getModel(self) -> Tuple[Any, Dict[Tuple[int, int], Any]]:
                m = pywraplp.Solver.CreateSolver(self.solver.upper())
                if m is None:
                    raise RuntimeError(f"pywraplp has no solver {self.solver!r}")
                K = len(self.tier_costs)
                x = {(i, k): m.BoolVar(f"x_{i}_{k}") for i in range(self.tasks) for k in range(K)}
                for i in range(self.tasks):
                    m.Add(sum(x[i, k] for k in range(K)) == 1)
                m.Add(sum(float(self.tier_costs[k]) * x[i, k] for (i, k) in x) <= self.budget)
                return m, x

        _PYEPO_CLASS = RoutingModel
    return _PYEPO_CLASS(costs, budget, tasks, sense=sense, solver=solver)
