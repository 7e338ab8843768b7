"""apportion.torch: the budget retraction, RCO, rounding and sampling (skipped without torch)."""

import math
import subprocess
import sys
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
at = pytest.importorskip("apportion.torch")

import apportion  # noqa: E402


def random_problem(rng, B, N, K, form):
    z = torch.from_numpy(rng.normal(0, 2, (B, N, K)))
    if form == "shared":
        costs, weights = np.sort(rng.uniform(0, 10, K)), None
    elif form == "weights":
        costs, weights = np.sort(rng.uniform(0, 10, K)), rng.uniform(0.5, 3, (B, N))
    else:
        costs, weights = rng.uniform(0, 10, (B, N, K)), None
    dense = np.broadcast_to(costs if weights is None else costs * weights[:, :, None], (B, N, K))
    lo, hi = dense.min(-1).sum(-1), dense.max(-1).sum(-1)
    budget = lo + rng.uniform(0.02, 0.98, B) * (hi - lo)
    return z, costs, weights, budget


def rel_err(e, budget):
    e = np.asarray(e.detach() if isinstance(e, torch.Tensor) else e, dtype=np.float64)
    return np.abs(e - budget) / np.abs(budget)


@pytest.mark.parametrize("form", ["shared", "weights", "full"])
@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0])
def test_retract_is_exact_over_random_problems(form, tau):
    rng = np.random.default_rng(zlib.crc32(f"{form}-{tau}".encode()))  # not hash(): salted per process
    for N, K in [(1, 2), (7, 3), (50, 8), (3000, 5)]:
        z, costs, weights, budget = random_problem(rng, 6, N, K, form)
        out, info = at.retract(z, costs, budget, weights, tau, return_info=True)
        assert (info.status == "converged").all()
        assert rel_err(at.expected_cost(out, costs, weights, tau), budget).max() <= 1e-9
        # The torch iteration (used off the CPU) finds the same shift. Both stop at a relative
        # budget error of 1e-9; where the expected cost is flat in the shift, that pins the shift
        # less tightly (some random problems differ by a few 1e-6 relative).
        shift_t = at._retract_torch(z.clone(), at._Costs(costs, weights, tuple(z.shape), True), budget, tau,
                                    1e-9, 200)[0]
        np.testing.assert_allclose(shift_t, info.shift, rtol=1e-4, atol=1e-7)
        # The retraction moves along the cost vector: z' - z = -t w.
        dense = np.broadcast_to(costs if weights is None else costs * weights[:, :, None], z.shape)
        np.testing.assert_allclose((out - z).numpy(), -info.shift[:, None, None] * dense, atol=1e-9)


def test_retract_large_instance_threads_and_float32():
    rng = np.random.default_rng(1)
    z, costs, _, budget = random_problem(rng, 1, 40000, 8, "shared")
    a = at.retract(z, costs, budget, threads=1)
    b = at.retract(z, costs, budget)
    assert torch.equal(a, b)  # deterministic whatever the thread count
    assert rel_err(at.expected_cost(a, costs), budget).max() <= 1e-9
    z32 = z.to(torch.float32)
    out = at.retract(z32, costs, budget)
    assert out.dtype == torch.float32
    assert rel_err(at.expected_cost(out, costs), budget).max() <= 1e-6


def test_retract_unbatched_inplace_and_inf_logits():
    z = torch.tensor([[0.0, 1.0, -float("inf")], [2.0, 0.5, 0.1]], dtype=torch.float64)
    costs = [1.0, 2.0, 5.0]
    out, info = at.retract(z, costs, 4.0, return_info=True)
    assert isinstance(info.shift, float) and info.status == "converged"
    assert out[0, 2] == -float("inf")
    assert abs(float(at.expected_cost(out, costs)) - 4.0) <= 4e-9
    same = at.retract(z, costs, 4.0, inplace=True)
    assert same is z and torch.equal(z, out)


def test_retract_errors_name_the_argument():
    z = torch.zeros(2, 3, 4, dtype=torch.float64)
    costs = [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="budget: instance 1"):
        at.retract(z, costs, [3.0, 10.0])
    with pytest.raises(ValueError, match="budget"):
        at.retract(z, costs, [3.0, float("nan")])
    bad = z.clone()
    bad[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="logits: instance 0, item 1"):
        at.retract(bad, costs, 3.0)
    with pytest.raises(ValueError, match="costs"):
        at.retract(z, [0.0, 1.0], 3.0)
    with pytest.raises(ValueError, match="costs"):
        at.retract(z, [0.0, -1.0, 1.0, 2.0], 3.0)
    with pytest.raises(ValueError, match="weights"):
        at.retract(z, costs, 3.0, weights=np.ones(5))
    with pytest.raises(TypeError, match="logits"):
        at.retract(np.zeros((3, 4)), costs, 3.0)
    with pytest.raises(ValueError, match="temperature"):
        at.retract(z, costs, 3.0, temperature=0.0)
    with pytest.raises(ValueError, match="inplace"):
        at.retract(z.clone().requires_grad_(), costs, 3.0, inplace=True)


@pytest.mark.parametrize("dtype, big", [(torch.float32, 3.3e38), (torch.float16, 6.0e4)])
def test_retract_refuses_a_shift_past_the_dtype_range(dtype, big):
    """Regression: float32 logits near 3e38 whose budget needs the cheap option lowered against
    the dear ones: the double shift took them past the float32 range and inf logits were
    written (E NaN) with a success status. Now the instance is left unchanged and retract
    raises, naming logits. float16 on the CPU takes the torch path of the same iteration."""
    z = torch.tensor([[big, 0.9 * big, 0.5 * big]] * 2, dtype=dtype)
    before = z.clone()
    with pytest.raises(ValueError, match=f"logits: instance 0: .*largest {dtype}.*left unchanged"):
        at.retract(z, [1.0, 2.0, 3.0], 5.0, inplace=True)
    assert torch.equal(z, before)
    # Subtracting each item's largest logit (the advice) leaves softmax alone and retracts.
    centred = (z.double() - z.double().amax(-1, keepdim=True)).to(dtype)
    out, info = at.retract(centred, [1.0, 2.0, 3.0], 5.0, return_info=True)
    assert torch.isfinite(out).all() and info.status in ("converged", "precision")
    # In a batch only the instance that overflows is refused: the error names it.
    batch = torch.stack([torch.zeros(2, 3, dtype=dtype), z])
    with pytest.raises(ValueError, match="logits: instance 1"):
        at.retract(batch, [1.0, 2.0, 3.0], 5.0)


def test_rco_refuses_a_step_off_the_manifold():
    """Regression: RCO(lr=1e300) took a step after which no shift reaches the budget (softmax is
    one-hot); the retraction's status was ignored and E sat at 8 against a budget of 10. Now the
    step raises, naming lr, and leaves the parameter and the optimizer state as they were."""
    torch.manual_seed(0)
    costs = [1.0, 2.0, 3.0]
    logits = torch.nn.Parameter(torch.zeros(5, 3, dtype=torch.float64))
    W = torch.randn(5, 3, dtype=torch.float64)
    opt = at.RCO([logits], costs, 10.0, lr=1e300)
    opt.zero_grad()
    (logits.softmax(-1) * W).sum().backward()
    before = logits.detach().clone()
    with pytest.raises(ValueError, match="lr: .*left unchanged"):
        opt.step()
    assert torch.equal(logits.detach(), before) and opt.state[logits].get("step", 0) == 0
    assert float(opt.expected_costs()[0]) == pytest.approx(10.0, rel=1e-9)
    # A sane step size from the same point works.
    for group in opt.param_groups:
        group["lr"] = 0.1
    opt.step()
    assert float(opt.expected_costs()[0]) == pytest.approx(10.0, rel=1e-9)
    with pytest.raises(ValueError, match="lr"):
        at.RCO([logits], costs, 10.0, lr=float("inf"))


def test_rounding_names_logits_and_temperature():
    """Regression (found by a fuzzing helper): an item whose logits are all -inf was refused
    by round_to_budget naming `mask`, which it does not take, and a temperature so small that
    the logits overflow was reported as NaN or +inf logits."""
    z = torch.tensor([[-math.inf] * 3, [0.0, 1.0, 2.0]], dtype=torch.float64)
    for call in (lambda: at.round_to_budget(z, [0.0, 1.0, 2.0], 2.0),
                 lambda: at.gumbel_sample(z, [0.0, 1.0, 2.0], 2.0, hard=False)):
        with pytest.raises(ValueError, match="logits: .*no finite logit"):
            call()
    with pytest.raises(ValueError, match="temperature: .*overflow"):
        at.round_to_budget(z[1:], [0.0, 1.0, 2.0], 2.0, temperature=1e-310)


def test_rco_checks_each_param_group_and_names_a_bad_gradient():
    """Regressions (found by a fuzzing helper): a param group's own lr, betas and eps went
    unchecked (lr=-1 climbed the loss every step), and a NaN gradient was refused as if lr were
    too large."""
    costs = [1.0, 2.0, 3.0]
    good = torch.nn.Parameter(torch.zeros(5, 3, dtype=torch.float64))
    for option, bad in (("lr", -1.0), ("betas", (2.0, 3.0)), ("eps", -5.0), ("temperature", 0.0),
                        ("curve", "straight")):
        other = torch.nn.Parameter(torch.zeros(5, 3, dtype=torch.float64))
        with pytest.raises(ValueError, match=option):
            at.RCO([{"params": [good]}, {"params": [other], option: bad}], costs, 10.0)
        opt = at.RCO([good], costs, 10.0)
        with pytest.raises(ValueError, match=option):
            opt.add_param_group({"params": [other], option: bad})
        assert len(opt.param_groups) == 1  # the refused group is not left behind
    opt = at.RCO([good], costs, 10.0)
    good.grad = torch.ones_like(good)
    good.grad[2, 1] = math.nan
    before = good.detach().clone()
    with pytest.raises(ValueError, match="params: the gradient holds NaN"):
        opt.step()
    assert torch.equal(good.detach(), before)


def test_argument_errors_name_the_argument():
    """Integers that cross into the core are range-checked first (pybind11 said "incompatible
    function arguments" for threads=2**40); meta tensors, NaN logits and non-bool flags are
    refused naming the argument (they gave torch internals, blamed the mask, or were taken)."""
    z = torch.zeros(3, 2, dtype=torch.float64)
    c = [1.0, 2.0]
    for call in (lambda: at.retract(z, c, 4.5, threads=2**40), lambda: at.round_to_budget(z, c, 4.5, threads=2**40),
                 lambda: at.RCO([torch.nn.Parameter(z.clone())], c, 4.5, threads=2**40),
                 lambda: at.gumbel_sample(z, c, 4.5, threads=2**40)):
        with pytest.raises(ValueError, match="threads"):
            call()
    with pytest.raises(TypeError, match="threads"):
        at.retract(z, c, 4.5, threads=2.0)
    with pytest.raises(ValueError, match="max_iter"):
        at.retract(z, c, 4.5, max_iter=2**40)
    with pytest.raises(ValueError, match="rtol"):
        at.retract(z, c, 4.5, rtol=float("inf"))
    meta = torch.zeros(3, 2, device="meta")
    for call in (lambda: at.retract(meta, c, 4.5), lambda: at.round_to_budget(meta, c, 4.5),
                 lambda: at.gumbel_sample(meta, c, 4.5)):
        with pytest.raises(ValueError, match="logits: a tensor on the meta device"):
            call()
    with pytest.raises(ValueError, match="params: a tensor on the meta device"):
        at.RCO([torch.nn.Parameter(meta)], c, 4.5)
    with pytest.raises(ValueError, match="costs: a tensor on the meta device"):
        at.retract(z, torch.ones(2, device="meta"), 4.5)
    with pytest.raises(ValueError, match="budget: a tensor on the meta device"):
        at.round_to_budget(z, c, torch.tensor(4.5, device="meta"))
    nan = z.clone()
    nan[1, 0] = float("nan")
    for call in (lambda: at.round_to_budget(nan, c, 4.5), lambda: at.gumbel_sample(nan, c, 4.5)):
        with pytest.raises(ValueError, match="logits: hold NaN"):
            call()
    for flag in ("exact_spend", "exact", "return_solution"):
        with pytest.raises(TypeError, match=flag):
            at.round_to_budget(z, c, 4.5, **{flag: "no"})
    with pytest.raises(TypeError, match="hard"):
        at.gumbel_sample(z, c, 4.5, hard=1)
    with pytest.raises(TypeError, match="return_info"):
        at.retract(z, c, 4.5, return_info="yes")


def test_normal_is_the_gradient_and_projection_is_tangent():
    rng = np.random.default_rng(2)
    z, costs, weights, budget = random_problem(rng, 3, 20, 5, "weights")
    zz = z.clone().requires_grad_()
    at.expected_cost(zz, costs, weights, 0.7).sum().backward()
    n = at.budget_normal(z, costs, weights, 0.7)
    torch.testing.assert_close(n, zz.grad)
    g = torch.randn_like(z)
    pg = at.project_tangent(g, z, costs, weights, 0.7)
    assert (pg * n).sum(dim=(1, 2)).abs().max() <= 1e-10 * (g.norm() * n.norm())
    torch.testing.assert_close(at.project_tangent(pg, z, costs, weights, 0.7), pg)  # idempotent
    torch.testing.assert_close(at.transport(pg, z, costs, weights, 0.7), pg)


def pairwise_loss(p, v, Q):
    """sum_i <p_i, v_i> + sum_ij p_i^T Q_ij p_j: choices interact pairwise."""
    return (p * v).sum() + torch.einsum("ik,ijkl,jl->", p, Q, p)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rco_holds_the_budget_after_every_step(dtype):
    rng = np.random.default_rng(3)
    for trial in range(4):
        form = ["shared", "weights", "full", "shared"][trial]
        z, costs, weights, budget = random_problem(rng, 2, 12, 4, form)
        v = torch.from_numpy(rng.normal(size=(2, 12, 4)))
        logits = torch.nn.Parameter(z.to(dtype))
        opt = at.RCO([logits], costs, budget, lr=0.2, weights=weights, temperature=[1.0, 0.5][trial % 2])
        tol = 1e-9 if dtype == torch.float64 else 1e-6
        assert rel_err(opt.expected_costs()[0], budget).max() <= tol
        for _ in range(25):
            opt.zero_grad()
            p = opt.probs()[0]
            loss = ((p * v).sum(-1) ** 2).sum()
            loss.backward()
            opt.step()
            assert rel_err(opt.expected_costs()[0], budget).max() <= tol


def test_rco_and_rounding_reach_the_exact_optimum_on_a_separable_objective():
    rng = np.random.default_rng(4)
    N, K = 40, 4
    values = rng.uniform(0, 10, (N, K))
    costs = np.array([0.0, 1.0, 2.5, 4.0])
    budget = 1.5 * N
    exact = apportion.solve(values, costs, budget, method="exact")
    logits = torch.nn.Parameter(torch.zeros(N, K, dtype=torch.float64))
    opt = at.RCO([logits], costs, budget, lr=0.1, temperature=0.5)
    v = torch.from_numpy(values)
    for _ in range(300):
        opt.zero_grad()
        (-(opt.probs()[0] * v).sum()).backward()
        opt.step()
    choice = opt.round()[0].numpy()
    got = values[np.arange(N), choice].sum()
    assert costs[choice].sum() <= budget + 1e-9
    assert got >= exact.value - 0.02 * abs(exact.value)


def test_rco_beats_penalty_and_random_search_on_a_pairwise_objective():
    rng = np.random.default_rng(5)
    N, K, steps = 16, 4, 200
    v = torch.from_numpy(rng.normal(0, 1, (N, K)))
    Q = torch.from_numpy(rng.normal(0, 0.5, (N, N, K, K)))
    Q = 0.5 * (Q + Q.permute(1, 0, 3, 2))
    costs = np.array([1.0, 2.0, 3.0, 4.0])
    budget = 2.2 * N

    def discrete(choice):
        return float(pairwise_loss(torch.nn.functional.one_hot(torch.as_tensor(choice), K).double(), v, Q))

    logits = torch.nn.Parameter(torch.zeros(N, K, dtype=torch.float64))
    opt = at.RCO([logits], costs, budget, lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        pairwise_loss(opt.probs()[0], v, Q).backward()
        opt.step()
    assert rel_err(opt.expected_costs()[0], budget) <= 1e-9
    rco = discrete(opt.round()[0])

    pen = torch.nn.Parameter(torch.zeros(N, K, dtype=torch.float64))
    adam = torch.optim.Adam([pen], lr=0.1)
    c = torch.from_numpy(costs)
    for _ in range(steps):
        adam.zero_grad()
        p = torch.softmax(pen, -1)
        (pairwise_loss(p, v, Q) + 1.0 * ((p * c).sum() - budget) ** 2).backward()
        adam.step()
    # The penalty method drifts off the budget; rounded to a feasible allocation it is worse.
    assert rel_err(at.expected_cost(pen, costs), budget) > 1e-4
    penalty = discrete(at.round_to_budget(pen, costs, budget))

    best_random = np.inf
    for _ in range(steps):
        choice = rng.integers(0, K, N)
        if costs[choice].sum() <= budget:
            best_random = min(best_random, discrete(choice))
    assert rco < penalty and rco < best_random


def test_autograd_and_budgeted_gumbel_samples():
    rng = np.random.default_rng(6)
    z, costs, weights, budget = random_problem(rng, 3, 10, 4, "weights")
    logits = z.clone().requires_grad_()
    gen = torch.Generator().manual_seed(0)
    y = at.gumbel_sample(logits, costs, budget, weights, 0.5, generator=gen)
    assert set(y.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(y.detach().sum(-1), torch.ones(3, 10, dtype=y.dtype))
    dense = costs * weights[:, :, None]
    spent = (y.detach().numpy() * dense).sum(axis=(1, 2))
    assert (spent <= budget + 1e-9).all()
    (y * torch.from_numpy(rng.normal(size=y.shape))).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    soft = at.gumbel_sample(z, costs, budget, weights, hard=False)
    torch.testing.assert_close(soft.sum(-1), torch.ones(3, 10, dtype=soft.dtype))


def test_round_to_budget_is_the_exact_answer_and_has_an_equality_form():
    rng = np.random.default_rng(7)
    z = torch.from_numpy(rng.normal(size=(2, 30, 5)))
    costs = np.array([0.0, 1.3, 2.1, 3.7, 5.2])
    budget = np.array([40.0, 70.0])
    choice, sol = at.round_to_budget(z, costs, budget, return_solution=True)
    assert choice.shape == (2, 30) and choice.dtype == torch.int64
    assert (np.asarray(sol.status) == "optimal").all()
    ref = apportion.solve(torch.log_softmax(z, -1).numpy(), costs, budget, method="exact")
    np.testing.assert_allclose(sol.value, ref.value)
    assert (costs[choice.numpy()].sum(-1) <= budget + 1e-9).all()
    eq = at.round_to_budget(z[0], [0, 1, 2, 3, 5], 37, exact_spend=True)
    assert int(np.array([0, 1, 2, 3, 5])[eq.numpy()].sum()) == 37
    with pytest.raises(ValueError, match="budget"):
        at.round_to_budget(z, costs, [-1.0, 5.0])


def quantise(w, bits):
    """Symmetric uniform quantisation of a tensor to `bits` bits (per tensor scale)."""
    levels = 2 ** (bits - 1) - 1 if bits > 1 else 1
    scale = w.abs().max() / levels
    return torch.round(w / scale).clamp(-levels, levels) * scale


def test_bit_allocation_for_a_small_mlp_beats_uniform_bits():
    from apportion.torch import RCO

    torch.manual_seed(0)
    X = torch.randn(512, 16)
    Y = torch.sin(X @ torch.randn(16, 1)) + 0.1 * torch.randn(512, 1)
    net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                              torch.nn.Linear(64, 1))
    train = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):
        train.zero_grad()
        torch.nn.functional.mse_loss(net(X), Y).backward()
        train.step()
    layers = [m for m in net if isinstance(m, torch.nn.Linear)]
    weights = [m.weight.detach() for m in layers]
    bits = [2, 3, 4, 8]
    sizes = np.array([w.numel() for w in weights], dtype=np.float64)
    avg_bits = 3.5
    budget = avg_bits * sizes.sum()
    qs = [torch.stack([quantise(w, b) for b in bits]) for w in weights]  # (K, out, in) per layer

    def loss_with(onehot_or_probs):
        h = X
        for li, (m, q) in enumerate(zip(layers, qs)):
            w = torch.einsum("k,koi->oi", onehot_or_probs[li], q)
            h = torch.nn.functional.linear(h, w, m.bias.detach())
            if li < len(layers) - 1:
                h = torch.tanh(h)
        return torch.nn.functional.mse_loss(h, Y)

    logits = torch.nn.Parameter(torch.zeros(len(layers), len(bits), dtype=torch.float64))
    opt = RCO([logits], costs=bits, budget=budget, weights=sizes, lr=0.3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        opt.zero_grad()
        sample = opt.sample(generator=gen)[0]   # budget-feasible one-hot, straight-through
        loss_with(sample.float()).backward()    # the loss of the real quantised model
        opt.step()
    choice = opt.round()[0]
    chosen_bits = np.array(bits)[choice.numpy()]
    assert (chosen_bits * sizes).sum() <= budget
    onehot = torch.nn.functional.one_hot(choice, len(bits)).float()
    # Uniform bits at the same budget: the widest width every layer can take (3 bits here).
    uniform_bits = max(b for b in bits if b * sizes.sum() <= budget)
    uniform = torch.nn.functional.one_hot(torch.full((len(layers),), bits.index(uniform_bits)), len(bits)).float()
    with torch.no_grad():
        assert float(loss_with(onehot)) < float(loss_with(uniform))


def test_import_apportion_works_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import apportion\n"
            "try:\n    import apportion.torch\nexcept ImportError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "apportion[torch]"' in out


# --------------------------------------------------------------------------- the two curves


def reference_shift(z, costs, weights, budget, tau, curve):
    """Bisection in float64 numpy for the shift t with E(z - t d) = budget on the curve (d = w
    for "weighted", d = c for "costs"), to adjacent doubles; independent of the core."""
    z = np.asarray(z, dtype=np.float64)
    B = z.shape[0]
    c = np.broadcast_to(np.asarray(costs, dtype=np.float64), z.shape)
    s = np.ones(z.shape[:2]) if weights is None else np.broadcast_to(np.asarray(weights, dtype=np.float64),
                                                                     z.shape[:2])
    w = s[:, :, None] * c
    d = w if curve == "weighted" else c
    shifts = np.empty(B)
    for b in range(B):
        def expected(t):
            x = (z[b] - t * d[b]) / tau
            x = x - x.max(-1, keepdims=True)
            p = np.exp(x)
            return float((p / p.sum(-1, keepdims=True) * w[b]).sum())

        lo, hi = -1.0, 1.0  # E falls in t: E(lo) >= budget >= E(hi)
        while expected(lo) < budget[b]:
            lo *= 2
        while expected(hi) > budget[b]:
            hi *= 2
        for _ in range(2000):
            mid = 0.5 * (lo + hi)
            if not lo < mid < hi:
                break
            if expected(mid) > budget[b]:
                lo = mid
            else:
                hi = mid
        shifts[b] = 0.5 * (lo + hi)
    return shifts, d


@pytest.mark.parametrize("form", ["shared", "weights", "full", "full-weights"])
@pytest.mark.parametrize("curve", ["weighted", "costs"])
def test_both_curves_land_where_a_reference_bisection_does(form, curve):
    """The landing point z - t d equals the one of a float64 bisection on the same curve to
    1e-9 (logits, and probabilities), for every cost form and both curves."""
    rng = np.random.default_rng(zlib.crc32(f"curve-{form}-{curve}".encode()))
    for N, K, tau in [(1, 2, 1.0), (7, 3, 0.5), (224, 7, 1.0), (3000, 5, 2.0)]:
        base = "full" if form.startswith("full") else form
        z, costs, weights, budget = random_problem(rng, 3, N, K, base)
        if form == "full-weights":
            weights = rng.uniform(0.5, 3, (3, N))
            dense = costs * weights[:, :, None]
            lo, hi = dense.min(-1).sum(-1), dense.max(-1).sum(-1)
            budget = lo + rng.uniform(0.05, 0.95, 3) * (hi - lo)
        out, info = at.retract(z, costs, budget, weights, tau, curve=curve, rtol=1e-13, return_info=True)
        assert (info.status == "converged").all()
        t_ref, d = reference_shift(z.numpy(), costs, weights, budget, tau, curve)
        want = z.numpy() - t_ref[:, None, None] * d
        np.testing.assert_allclose(out.numpy(), want, rtol=0, atol=1e-9 * max(1.0, np.abs(want).max()))
        p_out = torch.softmax(out / tau, -1).numpy()
        p_ref = torch.softmax(torch.from_numpy(want) / tau, -1).numpy()
        np.testing.assert_allclose(p_out, p_ref, rtol=0, atol=1e-9)
        # At the default rtol the budget holds to 1e-9, and the torch iteration (used off the CPU)
        # takes the same curve.
        out9 = at.retract(z, costs, budget, weights, tau, curve=curve)
        assert rel_err(at.expected_cost(out9, costs, weights, tau), budget).max() <= 1e-9
        zt = z.clone()
        at._retract_torch(zt, at._Costs(costs, weights, tuple(z.shape), True), budget, tau, 1e-13, 200, curve)
        np.testing.assert_allclose(zt.numpy(), want, rtol=0, atol=1e-8 * max(1.0, np.abs(want).max()))


def test_the_curves_differ_with_weights_and_agree_without():
    rng = np.random.default_rng(11)
    z, costs, weights, budget = random_problem(rng, 2, 224, 7, "weights")
    a = at.retract(z, costs, budget, weights, curve="weighted")
    b = at.retract(z, costs, budget, weights, curve="costs")
    assert (a - b).abs().max() > 1e-3
    # z' - z is -t w on one curve and -t c on the other (one t per instance).
    ta = ((z - a) / torch.from_numpy(costs * weights[:, :, None]))[..., -1]
    tb = ((z - b) / torch.from_numpy(np.broadcast_to(costs, z.shape).copy()))[..., -1]
    assert (ta - ta[:, :1]).abs().max() < 1e-9 and (tb - tb[:, :1]).abs().max() < 1e-9
    _, _, _, budget1 = random_problem(rng, 2, 224, 7, "shared")
    torch.testing.assert_close(at.retract(z, costs, budget1, curve="weighted"),
                               at.retract(z, costs, budget1, curve="costs"), rtol=0, atol=0)
    with pytest.raises(ValueError, match="curve"):
        at.retract(z, costs, budget, weights, curve="rco")
    with pytest.raises(ValueError, match="curve"):
        at.RCO([torch.nn.Parameter(z.clone())], costs, budget, weights=weights, curve=None)


def test_per_item_directions_near_underflow_match_the_reference():
    """Logits hundreds apart, so that the factorised weights of some items underflow at the shift
    found and the core evaluates them directly; per-item costs and weights, both curves."""
    rng = np.random.default_rng(12)
    B, N, K = 2, 500, 6
    z = torch.from_numpy(rng.normal(0, 1, (B, N, K)) * rng.choice([1.0, 300.0], (B, N, 1)))
    costs = rng.uniform(0, 10, (B, N, K))
    weights = rng.uniform(0.1, 5, (B, N))
    dense = costs * weights[:, :, None]
    budget = dense.min(-1).sum(-1) + 0.3 * (dense.max(-1).sum(-1) - dense.min(-1).sum(-1))
    for curve in ("weighted", "costs"):
        out, info = at.retract(z, costs, budget, weights, curve=curve, rtol=1e-13, return_info=True)
        t_ref, d = reference_shift(z.numpy(), costs, weights, budget, 1.0, curve)
        assert (info.status == "converged").all()
        np.testing.assert_allclose(info.shift, t_ref, rtol=1e-9)
        np.testing.assert_allclose(torch.softmax(out, -1).numpy(),
                                   torch.softmax(z - torch.from_numpy(t_ref[:, None, None] * d), -1).numpy(),
                                   rtol=0, atol=1e-9)


@pytest.mark.parametrize("curve", ["weighted", "costs"])
def test_float32_retraction_reports_the_budget_of_the_written_logits(curve):
    """float32 logits are written rounded; the info's E is that of the logits as written
    (checked in float64), and "converged" is claimed only where it meets rtol."""
    rng = np.random.default_rng(13)
    seen = set()
    for form in ("shared", "weights", "full"):
        z, costs, weights, budget = random_problem(rng, 16, 224, 7, form)
        for native in (True, False):
            z32 = z.to(torch.float32)
            if native:
                out, info = at.retract(z32, costs, budget, weights, curve=curve, return_info=True)
                status, expected = info.status, info.expected
            else:
                out = z32.clone()
                _, expected, _, codes = at._retract_torch(out, at._Costs(costs, weights, tuple(z.shape), True),
                                                          budget, 1.0, 1e-9, 200, curve)
                status = np.array(at._STATUS)[codes]
            e = at.expected_cost(out, costs, weights).numpy()  # float64 sums of the float32 logits
            np.testing.assert_allclose(expected, e, rtol=1e-12)
            err = rel_err(e, budget)
            assert ((status == "converged") == (err <= 1e-9)).all()
            assert (np.isin(status, ["converged", "rounded"])).all()
            assert err.max() <= 1e-6
            seen.update(status.tolist())
    assert seen == {"converged", "rounded"}


@pytest.mark.parametrize("native", [True, False])
def test_float64_retraction_of_large_logits_reports_the_budget_of_the_written_logits(native):
    """Regression (found by a fuzzing helper): float64 logits with a common offset of 1e12 or
    more were claimed "converged", with `expected` the budget, while the logits as written, each
    rounded by half an ulp of 1e12, put E 1e-5 (1e15: 8e-3) relative off it. Where the write's
    rounding could move E past rtol, E of the written logits is measured and reported, as for
    float32; small logits are not measured again (their answers unchanged)."""
    costs = [0.0, 1.0, 2.0, 3.0]
    for offset in (0.0, 1e12, 1e15):
        z = torch.full((2, 3, 4), offset, dtype=torch.float64)
        if native:
            out, info = at.retract(z, costs, 4.0, return_info=True)
            status, expected = info.status, info.expected
        else:
            out = z.clone()
            _, expected, _, codes = at._retract_torch(out, at._Costs(costs, None, tuple(z.shape), True),
                                                      np.full(2, 4.0), 1.0, 1e-9, 200, "weighted")
            status = np.array(at._STATUS)[codes]
        e = at.expected_cost(out, costs).numpy()
        np.testing.assert_allclose(expected, e, rtol=1e-12)
        assert ((status == "converged") == (rel_err(e, 4.0) <= 1e-9)).all()
        if offset == 0.0:
            assert (status == "converged").all()
        else:  # (the torch path's own sums round z - t d too: its search may end at "precision")
            assert np.isin(status, ["rounded"] if native else ["rounded", "precision"]).all()


def test_retraction_tolerance_has_no_absolute_floor_below_the_costs():
    """Regression: the tolerance's floor near a budget of 0 had an absolute term of 1e-300,
    so costs of 1e-305 and less met any rtol at t = 0 ("converged" 30% off). Now costs of
    1e-305 converge to rtol, and smaller ones need a shift past the float64 range (refused)."""
    z = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    costs = np.array([0.0, 1.0, 2.0, 3.0]) * 1e-305
    out, info = at.retract(z, costs, 6.0 * 1e-305, return_info=True)
    assert info.status == "converged" and rel_err(at.expected_cost(out, costs).numpy(), 6e-305) <= 1e-9
    with pytest.raises(ValueError, match="rescale costs and budget"):
        at.retract(z, costs * 1e-5, 6.0 * 1e-310)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])  # float16: the torch path
@pytest.mark.parametrize("cost", [0.1, 3.7, 1.0])
def test_constant_costs_give_a_zero_normal_and_leave_the_gradient_alone(dtype, cost):
    """Regression (found by a fuzzing helper): costs all 0.1 gave a normal of rounding noise
    (1e-17) where it is 0, and project_tangent divided that noise by itself, moving the gradient
    by 0.6 where the docstring promises it unchanged."""
    z = torch.tensor([[0.3, -1.2, 0.7], [1.5, 0.1, -0.4]], dtype=dtype)
    g = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.8, -1.0]], dtype=dtype)
    costs = [cost] * 3
    assert (at.budget_normal(z, costs) == 0).all()
    assert torch.equal(at.project_tangent(g, z, costs), g)
    # One item of constant cost beside one that varies: the first's normal is exactly 0.
    n = at.budget_normal(z, [[cost] * 3, [0.0, 1.0, 2.0]])
    assert (n[0] == 0).all() and (n[1] != 0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])  # float16: the torch path
@pytest.mark.parametrize("bad", [math.nan, math.inf, "all -inf"])
def test_normal_and_projection_refuse_logits_that_retract_refuses(dtype, bad):
    """Regression (found by a fuzzing helper): a NaN logit was read as an option never taken by
    the native pass (finite normal, finite projection), while float16 gave NaN and retract
    refused it. Now all three name logits."""
    z = torch.tensor([[0.0, 0.5, 1.0], [0.5, 0.2, 0.1]], dtype=dtype)
    if bad == "all -inf":
        z[1] = -math.inf
    else:
        z[1, 1] = bad
    costs = [0.0, 1.0, 2.0]
    for call in (lambda: at.budget_normal(z, costs), lambda: at.project_tangent(torch.ones_like(z), z, costs),
                 lambda: at.retract(z, costs, 1.5)):
        with pytest.raises(ValueError, match="logits: .*NaN or \\+inf, or .*no finite logit"):
            call()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("form", ["shared", "weights", "full"])
def test_native_normal_and_projection_match_float64_torch(dtype, form):
    rng = np.random.default_rng(zlib.crc32(f"normal-{dtype}-{form}".encode()))
    z, costs, weights, _ = random_problem(rng, 3, 300, 7, form)
    z[0, 5, 2] = -float("inf")
    tau = 0.7
    w = torch.from_numpy(np.broadcast_to(costs if weights is None else costs * weights[:, :, None], z.shape).copy())
    p = torch.softmax(z / tau, -1)
    ref = p * (w - (p * w).sum(-1, keepdim=True)) / tau
    n = at.budget_normal(z.to(dtype), costs, weights, tau)
    assert n.dtype == dtype and n[0, 5, 2] == 0
    # float32: the logits are rounded on the way in, then one rounding of the float64 result.
    zr = z.to(dtype).double()
    pr = torch.softmax(zr / tau, -1)
    ref_r = pr * (w - (pr * w).sum(-1, keepdim=True)) / tau
    # float32: within half an ulp (one rounding) of the float64 value; float64: both sides' own
    # rounding, relative to the largest entry (w - wbar cancels).
    half_ulp = 2.0 ** -24 if dtype == torch.float32 else 0.0
    assert ((n.double() - ref_r).abs() <= half_ulp * ref_r.abs() + 1e-13 * ref_r.abs().max()).all()
    g = torch.from_numpy(rng.normal(size=z.shape))
    for gd in (torch.float32, torch.float64):
        out = at.project_tangent(g.to(gd), z.to(dtype), costs, weights, tau)
        assert out.dtype == gd
        coef = (g.to(gd).double() * ref_r).sum((1, 2), keepdim=True) / (ref_r * ref_r).sum((1, 2), keepdim=True)
        want = g.to(gd).double() - coef * ref_r
        tol = (2.0 ** -23 if gd == torch.float32 else 1e-13) * want.abs().max()
        assert (out.double() - want).abs().max() <= tol
    # Unbatched and non-contiguous input.
    zt = z[0].t().contiguous().t()
    c0 = costs[0] if np.ndim(costs) == 3 else costs
    w0 = None if weights is None else weights[0]
    assert not zt.is_contiguous()
    torch.testing.assert_close(at.budget_normal(zt, c0, w0, tau), ref[0])
    torch.testing.assert_close(at.project_tangent(g[0].t().contiguous().t(), zt, c0, w0, tau),
                               at.project_tangent(g[0], z[0], c0, w0, tau))


def test_cpu_paths_run_no_torch_softmax():
    """Regression (issue 15, point 4): a small torch softmax waits on torch's thread pool when
    the cores are busy (round_to_budget at 224 x 7 took 8 ms instead of 0.2 ms). The CPU paths
    of round_to_budget, retract, budget_normal, project_tangent and RCO.step run none: their
    softmax sums are native (or numpy)."""
    rng = np.random.default_rng(14)
    z = torch.from_numpy(rng.normal(size=(224, 7))).float()
    costs = [2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 16.0]
    weights = rng.uniform(0.1, 1.0, 224)
    budget = 4.0 * weights.sum()
    logits = torch.nn.Parameter(z.clone())
    opt = at.RCO([logits], costs, budget, weights=weights)
    logits.grad = torch.randn_like(logits)
    calls = {
        "round_to_budget": lambda: at.round_to_budget(z, costs, budget, weights),
        "retract": lambda: at.retract(z, costs, budget, weights),
        "budget_normal": lambda: at.budget_normal(z, costs, weights),
        "project_tangent": lambda: at.project_tangent(logits.grad, z, costs, weights),
        "RCO.step": opt.step,
    }
    for name, call in calls.items():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            call()
        ops = {e.key for e in prof.key_averages()}
        assert any(op.startswith("aten::") for op in ops) or name != "RCO.step"  # the profiler saw torch ops
        assert not [op for op in ops if "softmax" in op], (name, sorted(ops))


def test_bad_input_error_names_the_first_bad_instance_whatever_the_threads():
    # Every instance is bad: the error must name instance 0 on any thread timing (the pool
    # used to rethrow whichever chunk failed first in time).
    z = torch.zeros(256, 30, 4, dtype=torch.float64)
    weights = [1.0] * 29 + [float("nan")]
    for _ in range(50):
        with pytest.raises(ValueError, match="weights: instance 0, item 29"):
            at.retract(z, [0.0, 1.0, 2.0, 3.0], 3.0, weights=weights, threads=2)


def test_native_paths_refuse_bad_costs_and_weights_naming_them():
    """The CPU retraction, normal and projection check costs and weights in the core (not in
    numpy per call): NaN, infinite or negative entries raise ValueError naming the argument."""
    z = torch.zeros(2, 3, 4, dtype=torch.float64)
    c = [0.0, 1.0, 2.0, 3.0]
    for dtype in (torch.float64, torch.float32):
        zz = z.to(dtype)
        for bad in (float("nan"), float("inf"), -1.0):
            calls = [lambda: at.retract(zz, c, 3.0, weights=[1.0, bad, 1.0]),
                     lambda: at.budget_normal(zz, c, weights=[1.0, 1.0, bad]),
                     lambda: at.project_tangent(zz, zz, c, weights=[bad, 1.0, 1.0])]
            for call in calls:
                with pytest.raises(ValueError, match="weights: instance 0, item"):
                    call()
            costs = np.array([[0.0, 1.0, 2.0, 3.0]] * 3)
            costs[2, 1] = bad
            calls = [lambda: at.retract(zz, costs, 3.0), lambda: at.budget_normal(zz, costs),
                     lambda: at.project_tangent(zz, zz, costs), lambda: at.retract(zz, costs[2], 3.0)]
            for call in calls:
                with pytest.raises(ValueError, match="costs: instance 0, item"):
                    call()
