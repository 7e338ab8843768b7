"""Decision-focused learning (apportion.torch: allocate, regret, spo_plus_loss,
fenchel_young_loss, perturbed_allocation) against brute force, finite differences and PyEPO."""

import importlib.util
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import apportion  # noqa: E402
from apportion import learn  # noqa: E402
from apportion.torch import (allocate, fenchel_young_loss, perturbed_allocation, regret,  # noqa: E402
                             spo_plus_loss)

HAS_PYEPO = importlib.util.find_spec("pyepo") is not None

COSTS = np.array([0.0, 1.0, 3.0])


def _instances(B, N, K, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    true = torch.rand(B, N, K, generator=g, dtype=dtype)
    pred = torch.rand(B, N, K, generator=g, dtype=dtype)
    return pred, true


def _brute(values, costs, budget, sense):
    """Best objective over all K^N allocations within the budget (one instance)."""
    N, K = values.shape
    c = np.broadcast_to(costs, (N, K))
    best = None
    for pick in itertools.product(range(K), repeat=N):
        if sum(c[i, k] for i, k in enumerate(pick)) <= budget:
            obj = sum(values[i, k] for i, k in enumerate(pick))
            if best is None or (obj > best if sense == "max" else obj < best):
                best = obj
    return best


# --------------------------------------------------------------------------- allocate, regret


def test_allocate_is_the_solvers_choice():
    pred, _ = _instances(6, 7, 3, 0)
    info = {}
    x = allocate(pred, COSTS, 5.0, info=info)
    sol = apportion.solve(pred.numpy(), COSTS, 5.0, method="exact")
    assert x.shape == (6, 7, 3) and x.dtype == pred.dtype
    assert torch.equal(x.argmax(-1), torch.from_numpy(sol.choice))
    assert torch.equal(x.sum(-1), torch.ones(6, 7, dtype=pred.dtype))
    assert info["solves"] == 6 and info["optimal"] == 6 and info["method"] == "exact"
    assert allocate(pred[0], COSTS, 5.0).shape == (7, 3)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), N=st.integers(1, 4), K=st.integers(1, 3),
       sense=st.sampled_from(["max", "min"]), frac=st.floats(0.0, 1.0))
def test_regret_and_spo_plus_against_brute_force(seed, N, K, sense, frac):
    pred, true = _instances(3, N, K, seed)
    rng = np.random.default_rng(seed)
    costs = rng.integers(0, 4, size=(3, N, K)).astype(np.float64)
    budget = costs.min(axis=2).sum(axis=1) + frac * (costs.max(axis=2) - costs.min(axis=2)).sum(axis=1)
    lost = regret(pred, true, costs, budget, sense=sense)
    spo = spo_plus_loss(pred, true, costs, budget, sense=sense, reduction="none")
    x_pred = allocate(pred, costs, budget, sense=sense)
    s = 1.0 if sense == "max" else -1.0
    for b in range(3):
        best = _brute(true[b].numpy(), costs[b], budget[b], sense)
        got = float((true[b] * x_pred[b]).sum())
        assert float(lost[b]) == pytest.approx(s * (best - got), abs=1e-12)
    assert bool((lost >= -1e-12).all())
    # SPO+ bounds the regret from above and vanishes at the truth.
    assert bool((spo >= lost - 1e-12).all())
    assert float(spo_plus_loss(true, true, costs, budget, sense=sense, reduction="sum")) == \
        pytest.approx(0.0, abs=1e-12)
    assert float(regret(true, true, costs, budget, sense=sense).abs().max()) <= 1e-12


def test_regret_normalized_and_precomputed_solution():
    pred, true = _instances(5, 6, 3, 1)
    x_true = allocate(true, COSTS, 4.0)
    plain = regret(pred, true, COSTS, 4.0)
    assert torch.equal(regret(pred, true, COSTS, 4.0, true_solution=x_true), plain)
    assert torch.equal(regret(pred, true, COSTS, 4.0, true_solution=x_true.argmax(-1)), plain)
    best = (true * x_true).sum(dim=(1, 2))
    assert torch.allclose(regret(pred, true, COSTS, 4.0, normalized=True), plain / best)
    with pytest.raises(ValueError, match="normalized"):
        regret(pred, torch.zeros_like(true), COSTS, 4.0, normalized=True)
    # A string is truthy: "False" gave the normalised regret (found by a fuzzing helper).
    for flag in ("False", 1, None):
        with pytest.raises(TypeError, match="normalized: expected True or False"):
            regret(pred, true, COSTS, 4.0, normalized=flag)


def test_per_instance_costs_and_budgets():
    pred, true = _instances(4, 5, 3, 2)
    rng = np.random.default_rng(2)
    costs = rng.uniform(0, 2, size=(4, 5, 3))
    budget = costs.min(axis=2).sum(axis=1) + np.array([0.0, 0.5, 2.0, 9.0])
    whole = spo_plus_loss(pred, true, costs, budget, reduction="none")
    noise = torch.randn(4, 6, 5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fy = fenchel_young_loss(pred, true, costs, budget, noise=noise, n_samples=6, reduction="none")
    e = perturbed_allocation(pred, costs, budget, noise=noise, n_samples=6)
    for b in range(4):
        one = spo_plus_loss(pred[b], true[b], costs[b], budget[b], reduction="none")
        assert float(one) == pytest.approx(float(whole[b]), abs=1e-12)
        one = fenchel_young_loss(pred[b], true[b], costs[b], budget[b], noise=noise[b:b + 1],
                                 n_samples=6, reduction="none")
        assert float(one) == pytest.approx(float(fy[b]), abs=1e-12)
        assert torch.equal(perturbed_allocation(pred[b], costs[b], budget[b], noise=noise[b:b + 1],
                                                n_samples=6), e[b])


# --------------------------------------------------------------------------- gradients


def _central_difference(f, x, h):
    grad = torch.zeros_like(x)
    flat = grad.view(-1)
    for j in range(x.numel()):
        e = torch.zeros_like(x).view(-1)
        e[j] = h
        e = e.view_as(x)
        flat[j] = (f(x + e) - f(x - e)) / (2 * h)
    return grad


@pytest.mark.parametrize("sense", ["max", "min"])
def test_spo_plus_gradient_matches_finite_differences(sense):
    # SPO+ is piecewise linear; at a random point no breakpoint lies within h.
    pred, true = _instances(3, 4, 3, 3)
    pred.requires_grad_(True)
    spo_plus_loss(pred, true, COSTS, 4.0, sense=sense, reduction="sum").backward()
    fd = _central_difference(
        lambda p: float(spo_plus_loss(p, true, COSTS, 4.0, sense=sense, reduction="sum")),
        pred.detach(), 1e-6)
    assert torch.allclose(pred.grad, fd, atol=1e-6)
    assert pred.grad.abs().max() > 0  # a real check: the decision moves somewhere


@pytest.mark.parametrize("sense", ["max", "min"])
def test_fenchel_young_gradient_matches_finite_differences(sense):
    # With the draws fixed, the estimate of F is piecewise linear too.
    pred, true = _instances(2, 4, 3, 4)
    noise = torch.randn(2, 5, 4, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def loss(p):
        return fenchel_young_loss(p, true, COSTS, 4.0, sense=sense, sigma=0.3, n_samples=5,
                                  noise=noise, reduction="sum")

    pred.requires_grad_(True)
    loss(pred).backward()
    fd = _central_difference(lambda p: float(loss(p)), pred.detach(), 1e-6)
    assert torch.allclose(pred.grad, fd, atol=1e-6)
    # The gradient is the perturbed allocation minus the target.
    y = allocate(true, COSTS, 4.0, sense=sense)
    e = perturbed_allocation(pred.detach(), COSTS, 4.0, sense=sense, sigma=0.3, n_samples=5,
                             noise=noise)
    assert torch.allclose(pred.grad, (1.0 if sense == "max" else -1.0) * (e - y), atol=1e-12)


def test_fenchel_young_nonnegative_up_to_sampling():
    pred, true = _instances(8, 5, 3, 5)
    loss = fenchel_young_loss(pred, true, COSTS, 4.0, n_samples=2000, sigma=0.5, reduction="none",
                              generator=torch.Generator().manual_seed(5))
    assert bool((loss > -1e-2).all())


@pytest.mark.parametrize("variance_reduction", [True, False])
def test_perturbed_allocation_jacobian_matches_finite_differences(variance_reduction):
    # The expected allocation is smooth; its finite differences with common random numbers
    # (large steps, many draws) against the estimator E[x* Z^T] / sigma.
    values = torch.tensor([[[0.0, 0.6, 1.0], [0.0, 0.5, 1.3]]], dtype=torch.float64)
    costs, budget, sigma, S = np.array([0.0, 1.0, 2.0]), 2.0, 0.5, 100_000
    noise = torch.randn(1, S, 2, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    def expected(v):
        return perturbed_allocation(v, costs, budget, sigma=sigma, n_samples=S, noise=noise,
                                    variance_reduction=variance_reduction)

    v = values.clone().requires_grad_(True)
    out = expected(v)
    jac = torch.stack([torch.autograd.grad(out.view(-1)[j], v, retain_graph=True)[0].view(-1)
                       for j in range(out.numel())])
    h = 0.2
    fd = torch.stack([((expected(values + h * e.view_as(values)) - expected(values - h * e.view_as(values)))
                       / (2 * h)).view(-1) for e in torch.eye(values.numel(), dtype=torch.float64)], dim=1)
    assert jac.abs().max() > 0.1
    assert torch.allclose(jac, fd, atol=0.05)
    # Each item's probabilities sum to 1, so its rows of the Jacobian sum to 0: exactly with
    # the baseline (it removes the reward common to all options), up to the mean of the draws
    # (Z-bar / sigma, about 0.005 here) without it.
    row_sums = jac.view(2, 3, 6).sum(dim=1).abs().max()
    assert row_sums <= (1e-12 if variance_reduction else 0.02)


# --------------------------------------------------------------------------- solver choice, errors


def test_lagrangian_reports_its_gap():
    pred, true = _instances(16, 30, 4, 7)
    costs = np.array([0.0, 1.0, 2.5, 4.0])
    info = {}
    loss = spo_plus_loss(pred, true, costs, 20.0, method="lagrangian", info=info)
    assert info["method"] == "lagrangian" and info["solves"] == 32
    assert 0 <= info["max_gap"] and 0 <= info["max_relative_gap"] < 0.1
    exact = spo_plus_loss(pred, true, costs, 20.0)
    # Each solve is within its gap of the optimum: loss within 3 gaps.
    assert abs(float(loss) - float(exact)) <= 3 * info["max_gap"] + 1e-12


def test_bad_input_names_the_argument():
    pred, true = _instances(2, 3, 3, 8)
    with pytest.raises(ValueError, match="true_values"):
        spo_plus_loss(pred, true[:1], COSTS, 3.0)
    with pytest.raises(ValueError, match="pred_values"):
        regret(pred * np.nan, true, COSTS, 3.0)
    with pytest.raises(TypeError, match="pred_values"):
        regret(pred.numpy(), true, COSTS, 3.0)
    with pytest.raises(ValueError, match="costs"):
        allocate(pred, np.ones(4), 3.0)
    with pytest.raises(ValueError, match="budget"):
        allocate(pred, COSTS + 1, 1.0)  # below the cheapest allocation (3 units)
    with pytest.raises(ValueError, match="budget"):
        allocate(pred, COSTS, np.ones(3))
    with pytest.raises(ValueError, match="method"):
        allocate(pred, COSTS, 3.0, method="dp")
    with pytest.raises(ValueError, match="sense"):
        allocate(pred, COSTS, 3.0, sense="maximise")
    with pytest.raises(ValueError, match="reduction"):
        spo_plus_loss(pred, true, COSTS, 3.0, reduction="avg")
    with pytest.raises(ValueError, match="noise"):
        perturbed_allocation(pred, COSTS, 3.0, n_samples=2, noise=torch.zeros(2, 3, 3, 3))
    with pytest.raises(ValueError, match="n_samples"):
        perturbed_allocation(pred, COSTS, 3.0, n_samples=0)
    with pytest.raises(ValueError, match="sigma"):
        fenchel_young_loss(pred, true, COSTS, 3.0, sigma=-1.0)
    with pytest.raises(ValueError, match="true_solution"):
        fenchel_young_loss(pred, None, COSTS, 3.0, true_solution=torch.full((2, 3, 3), 0.5))
    with pytest.raises(ValueError, match="true_values"):
        fenchel_young_loss(pred, None, COSTS, 3.0)
    # Found by a fuzzing helper: NaN noise was named "values" by the solver, a non-Generator
    # failed inside torch, and an overflowing sigma was blamed on the values.
    noise = torch.zeros(2, 2, 3, 3, dtype=pred.dtype)
    noise[1, 0, 2, 1] = np.nan
    with pytest.raises(ValueError, match="noise: holds NaN"):
        fenchel_young_loss(pred, true, COSTS, 3.0, n_samples=2, noise=noise)
    with pytest.raises(TypeError, match="generator"):
        perturbed_allocation(pred, COSTS, 3.0, generator=5)
    with pytest.raises(ValueError, match="sigma: values \\+ sigma \\* noise overflow"):
        perturbed_allocation(pred, COSTS, 3.0, sigma=1e308)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")
def test_cuda_tensors_give_the_cpu_answers():
    # The solves run on the host; losses, gradients and allocations come back on the device.
    pred, true = _instances(4, 6, 3, 10)
    noise = torch.randn(4, 3, 6, 3, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    answers = []
    for device in ("cpu", "cuda"):
        p = pred.to(device).requires_grad_(True)
        spo = spo_plus_loss(p, true.to(device), COSTS, 4.0)
        fy = fenchel_young_loss(p, true.to(device), COSTS, 4.0, n_samples=3, noise=noise.to(device))
        (spo + fy).backward()
        assert p.grad.device.type == device
        answers.append([float(spo), float(fy), p.grad.cpu()])
    assert answers[0][:2] == pytest.approx(answers[1][:2], abs=1e-12)
    assert torch.allclose(answers[0][2], answers[1][2], atol=1e-12)


# --------------------------------------------------------------------------- PyEPO


def _flat(x):
    return x.reshape(x.shape[0], -1)


@pytest.mark.skipif(not HAS_PYEPO, reason="pyepo is not installed (pip install pyepo)")
@pytest.mark.parametrize("sense", ["min", "max"])
def test_same_losses_and_gradients_as_pyepo(sense):
    import pyepo

    B, N, K, budget, seed, S = 6, 5, 3, 6.0, 11, 7
    costs = np.array([1.0, 2.0, 4.0])
    pred, true = _instances(B, N, K, 9)
    model = learn.pyepo_model(costs, budget, N, sense=sense)
    x_true = allocate(true, costs, budget, sense=sense)
    z_true = (true * x_true).sum(dim=(1, 2)).unsqueeze(1)

    # SPO+
    ours = pred.clone().requires_grad_(True)
    loss = spo_plus_loss(ours, true, costs, budget, sense=sense, reduction="none")
    loss.sum().backward()
    theirs = _flat(pred).clone().requires_grad_(True)
    ref = pyepo.func.SPOPlus(model, reduction="none")(theirs, _flat(true), _flat(x_true), z_true)
    ref.sum().backward()
    assert torch.allclose(loss, ref.to(loss.dtype), atol=1e-9)
    assert torch.allclose(_flat(ours.grad), theirs.grad, atol=1e-9)
    assert ours.grad.abs().max() > 0

    # perturbed Fenchel-Young, the same draws (PyEPO's generator seeded as ours)
    ours = pred.clone().requires_grad_(True)
    loss = fenchel_young_loss(ours, None, costs, budget, true_solution=x_true, sense=sense,
                              n_samples=S, sigma=0.4, reduction="none",
                              generator=torch.Generator().manual_seed(seed))
    loss.sum().backward()
    theirs = _flat(pred).clone().requires_grad_(True)
    ref = pyepo.func.perturbedFenchelYoung(model, n_samples=S, sigma=0.4, seed=seed,
                                           reduction="none")(theirs, _flat(x_true))
    ref.sum().backward()
    assert torch.allclose(loss, ref.to(loss.dtype), atol=1e-9)
    assert torch.allclose(_flat(ours.grad), theirs.grad, atol=1e-9)

    # the perturbed allocation and its Jacobian estimate
    w = torch.rand(B, N, K, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours = pred.clone().requires_grad_(True)
    e = perturbed_allocation(ours, costs, budget, sense=sense, n_samples=S, sigma=0.4,
                             generator=torch.Generator().manual_seed(seed))
    (e * w).sum().backward()
    theirs = _flat(pred).clone().requires_grad_(True)
    ref = pyepo.func.perturbedOpt(model, n_samples=S, sigma=0.4, seed=seed)(theirs)
    (ref * _flat(w)).sum().backward()
    assert torch.allclose(_flat(e), ref.to(e.dtype), atol=1e-9)
    assert torch.allclose(_flat(ours.grad), theirs.grad, atol=1e-9)


# --------------------------------------------------------------------------- the worked example


def test_worked_example_short():
    out = learn.run_example(train_days=96, test_days=64, tasks=20, epochs=3, seed=0)
    assert set(out) == {"no features (mean per tier)", *learn.METHODS}
    for row in out.values():
        assert 0.0 <= row["regret"] < 1.0
    # Every trained predictor routes better than one that ignores the features.
    base = out["no features (mean per tier)"]["regret"]
    for method in learn.METHODS:
        assert out[method]["regret"] < base


def test_example_data_is_optimal_on_the_truth():
    data = learn.make_data(3, 6, seed=4)
    for b in range(3):
        best = _brute(data.losses[b].double().numpy(), data.costs, data.budget, "min")
        assert float(data.optimum[b]) == pytest.approx(best, rel=1e-12)


def test_cli_example_learn(monkeypatch, capsys):
    from apportion import cli

    monkeypatch.setattr(learn, "EXAMPLE_QUICK", dict(train_days=32, test_days=16, tasks=10, epochs=1))
    assert cli.main(["example", "learn", "--quick", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "32 training days of 10 tasks" in out and "seed 3" in out
    for name in (learn.BASELINE, *learn.METHODS):
        assert f"| {name} |" in out
    assert cli.main(["example", "forecast"]) == 2


def test_learn_is_a_lazy_submodule():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import apportion\nprint(callable(apportion.learn.train))"],
                         check=True, capture_output=True, text=True).stdout
    assert out.strip() == "True"


def test_learn_train_names_bad_arguments():
    # Found by a fuzzing helper: raw torch errors for batch_size and torch_threads, and a bad
    # solver named "method" (train's method is the loss).
    data = learn.make_data(8, 10, seed=0)
    for kwargs, name in ((dict(batch_size=0), "batch_size"), (dict(batch_size=-1), "batch_size"),
                         (dict(torch_threads=0), "torch_threads"), (dict(epochs=1.5), "epochs"),
                         (dict(solver="dp"), "solver")):
        with pytest.raises(ValueError, match=f"^{name}: "):
            learn.train("spo+", data, epochs=kwargs.pop("epochs", 1), **kwargs)
