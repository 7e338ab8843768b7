"""Decision-focused learning: apportion's batched native solves beside PyEPO's per-instance MIP.

    python bench/bench_decision.py                 # the side-by-side table (PyEPO: minutes)
    python bench/bench_decision.py --quick         # a smaller one (about a minute)
    python bench/bench_decision.py --target        # SPO+ epochs of 10,000 days of 100 x 4 only
    python -m pytest bench/bench_decision.py --benchmark-only   # one SPO+ epoch, pytest-benchmark

The task and model are those of `apportion example learn` (`apportion.learn`): days of
100 tasks x 4 tiers, a misspecified linear predictor, Adam, minibatches of 32 days, the same
seeds. PyEPO (`pip install pyepo`) runs its own losses (`pyepo.func.SPOPlus`,
`perturbedFenchelYoung`) through the same training loop (`learn.train(loss=...)`), on its
OR-Tools back end: `pyepo.model.ort.optOrtModel`, pywraplp with SCIP, one MIP per day per
step, one process. Times are CPU seconds (process time, all threads) per epoch; the test regret
of every trained model is measured the same way (exact solves, `learn.test_regret`).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from apportion import learn  # noqa: E402

HAS_PYEPO = importlib.util.find_spec("pyepo") is not None
SIGMA, SAMPLES = 0.5, 4  # learn.train's defaults, given to PyEPO's Fenchel-Young too


def pyepo_losses(data: learn.LearnData):
    """PyEPO's SPO+ and perturbed Fenchel-Young on `data`, as learn.train(loss=...) takes them."""
    import pyepo

    B, N, K = data.losses.shape
    model = learn.pyepo_model(data.costs, data.budget, N, sense="min")
    true = data.losses.reshape(B, N * K)
    sol = torch.nn.functional.one_hot(data.solution, K).to(torch.float32).reshape(B, N * K)
    obj = data.optimum.to(torch.float32).unsqueeze(1)
    spo = pyepo.func.SPOPlus(model, processes=1)
    fy = pyepo.func.perturbedFenchelYoung(model, n_samples=SAMPLES, sigma=SIGMA, processes=1)
    return {
        "spo+": lambda pred, idx: spo(pred.reshape(len(idx), -1), true[idx], sol[idx], obj[idx]),
        "fenchel-young": lambda pred, idx: fy(pred.reshape(len(idx), -1), sol[idx]),
    }


def run(train_days: int, test_days: int, epochs: int, pyepo_epochs: int, seed: int = 0) -> list:
    """Rows (library, loss, solver, CPU s per epoch, test regret, epochs) on one data set."""
    train_data = learn.make_data(train_days, seed=seed)
    test_data = learn.make_data(test_days, seed=seed + 1)
    rows = []

    def one(library, method, label, n_epochs, **kw):
        seconds = []
        started = time.process_time()
        model = learn.train(method, train_data, epochs=n_epochs, seed=seed, epoch_seconds=seconds, **kw)
        regret = learn.test_regret(model, test_data)
        rows.append((library, method, label, float(np.mean(seconds)), regret, n_epochs,
                     time.process_time() - started))
        print(f"  {library} {method} ({label}): {rows[-1][3]:.3f} s/epoch, regret {regret:.2%}",
              file=sys.stderr, flush=True)

    one("apportion", "two-stage", "-", epochs)
    one("apportion", "spo+", "exact", epochs)
    one("apportion", "spo+", "lagrangian", epochs, solver="lagrangian")
    one("apportion", "fenchel-young", "exact", epochs)
    if HAS_PYEPO and pyepo_epochs > 0:
        losses = pyepo_losses(train_data)
        for method in ("spo+", "fenchel-young"):
            one("PyEPO", method, "OR-Tools pywraplp SCIP", pyepo_epochs, loss=losses[method])
    return rows


def table(rows: list) -> str:
    lines = ["| library | loss | solver | CPU s per epoch | epochs | test regret |",
             "|---|---|---|---|---|---|"]
    for library, method, solver, sec, regret, epochs, _ in rows:
        lines.append(f"| {library} | {method} | {solver} | {sec:.3f} | {epochs} | {regret:.2%} |")
    return "\n".join(lines)


def target(days: int = 10_000, epochs: int = 3, seed: int = 0) -> str:
    """CPU seconds per SPO+ epoch over `days` days of 100 tasks x 4 tiers, both solvers."""
    data = learn.make_data(days, seed=seed)
    out = []
    for solver in ("exact", "lagrangian"):
        seconds = []
        learn.train("spo+", data, epochs=epochs, seed=seed, solver=solver, epoch_seconds=seconds)
        out.append(f"SPO+ ({solver}), {days} days of 100 x 4: CPU s per epoch "
                   + ", ".join(f"{s:.3f}" for s in seconds))
    return "\n".join(out)


def test_spo_plus_epoch(benchmark):
    """One SPO+ epoch (exact) over 1,000 days of 100 tasks x 4 tiers."""
    data = learn.make_data(1000, seed=0)
    benchmark.pedantic(lambda: learn.train("spo+", data, epochs=1), rounds=3, iterations=1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="200 training days, 2 epochs")
    p.add_argument("--target", action="store_true", help="only the 10,000-day SPO+ epoch times")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.target:
        print(target(seed=args.seed))
        return 0
    if not HAS_PYEPO:
        print("pyepo is not installed (pip install pyepo): apportion's rows only", file=sys.stderr)
    size = dict(train_days=200, test_days=200, epochs=2, pyepo_epochs=2) if args.quick else \
        dict(train_days=1000, test_days=1000, epochs=5, pyepo_epochs=5)
    print(f"{size['train_days']} training days, {size['test_days']} test days, 100 tasks x 4 "
          f"tiers, seed {args.seed}")
    print(table(run(seed=args.seed, **size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
