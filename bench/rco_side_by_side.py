"""apportion.torch side by side with the published RCO code (IST-DASLab/RCO, src/manifold.py).

    APPORTION_RCO_SRC=/path/to/RCO python bench/rco_side_by_side.py [--part all|loop|speed] [--rounds 7]

APPORTION_RCO_SRC is a local clone of the RCO repository; its src/manifold.py is loaded by file
(it needs only torch) and nothing of it is copied here. Without it the script says so and
exits 0. Everything runs on the CPU with torch.set_num_threads(1) and threads=1.

Parts:
  loop   End to end on RCO's setting: 224 groups x 7 bit widths, weights = parameter fractions,
         a non-separable objective (below), float32 logits, lr 0.1, 200 steps, 6 seeds x target
         average bits 3 and 4. RCO's loop (torch Adam on the projected gradient, their
         retraction at their tolerance 1e-4 and their transport) against `apportion.torch.RCO`
         on each curve, and RCO's loop with our retraction in place of theirs. All start from
         the same logits (-beta * bits, RCO's init, on the budget). Reported: the relaxed loss
         at the end (float64) and |E - target|.
  speed  CPU time per call (process_time, medians over alternating rounds):
         budget_normal and the tangent projection (ours against RCO's, float32, RCO's weights
         form) and their error against float64; the retraction of 1e6 logits with shared
         against per-item costs; round_to_budget and retract at 224 x 7, with the torch ops
         they run (none should be a softmax: a small torch softmax waits on torch's thread
         pool when the cores are busy).
"""

import argparse
import importlib.util
import os
import statistics
import sys
import time

import numpy as np
import torch

import apportion.torch as at

BITS = [2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 16.0]


def load_rco():
    """RCO's manifold module from $APPORTION_RCO_SRC/src/manifold.py, or None."""
    root = os.environ.get("APPORTION_RCO_SRC")
    path = os.path.join(root, "src", "manifold.py") if root else ""
    if not root or not os.path.isfile(path):
        return None
    spec = importlib.util.spec_from_file_location("rco_manifold", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- the end-to-end runs


class Problem:
    """224 groups (layers) x 7 bit widths. Group i has a size (parameter fraction f_i) and a
    sensitivity; its expected distortion is D_i = sum_k p_ik e_ik with e_ik = sens_i 4^-b_k
    (times a little noise). The loss couples the groups through a shared downstream map M:
    loss = sum_i D_i + ||M^T D||^2, scaled so that both terms are equal at the start."""

    def __init__(self, seed: int, n: int = 224):
        g = torch.Generator().manual_seed(seed)
        bits = torch.tensor(BITS, dtype=torch.float64)
        sizes = torch.exp(3.0 * torch.rand(n, generator=g, dtype=torch.float64))
        self.fracs = sizes / sizes.sum()
        sens = torch.exp(torch.randn(n, generator=g, dtype=torch.float64))
        noise = 1.0 + 0.2 * torch.rand(n, len(BITS), generator=g, dtype=torch.float64)
        self.err = sens[:, None] * 4.0 ** (-bits) * noise
        m = torch.randn(n, 8, generator=g, dtype=torch.float64)
        d0 = self.err.mean(-1)
        self.m = m * torch.sqrt(d0.sum() / ((d0 @ m) ** 2).sum())
        self.bits = bits

    def loss(self, p: torch.Tensor) -> torch.Tensor:
        err = self.err.to(p.dtype)
        d = (p * err).sum(-1)
        return d.sum() + ((d @ self.m.to(p.dtype)) ** 2).sum()

    def start(self, target: float) -> torch.Tensor:
        """RCO's init: every group at -beta * bits with E = target (float32)."""
        z = torch.zeros(len(self.fracs), len(BITS), dtype=torch.float64)
        at.retract(z, BITS, target, self.fracs.numpy(), curve="costs", inplace=True, threads=1)
        return z.to(torch.float32)

    def relaxed(self, z: torch.Tensor, target: float) -> tuple:
        """(relaxed loss, |E - target|) in float64."""
        p = torch.softmax(z.detach().double(), -1)
        e = float((p * self.bits).sum(-1) @ self.fracs)
        return float(self.loss(p)), abs(e - target)


def run_rco_loop(rco, prob: Problem, target: float, steps: int, lr: float, our_curve=None) -> torch.Tensor:
    """RCO's loop (src/search/quant.py, optimize_projected_gumbel, on the relaxed probabilities):
    project the gradient, Adam step, retract, transport. With our_curve, our retraction (in
    place, threads=1) replaces theirs."""
    alpha = prob.start(target).requires_grad_()
    bits = prob.bits.to(torch.float32)
    fracs = prob.fracs.to(torch.float32)
    opt = torch.optim.Adam([alpha], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        prob.loss(torch.softmax(alpha, -1)).backward()
        rco.project_gradient(alpha, bits, fracs)
        opt.step()
        if our_curve is None:
            rco.retraction(alpha, bits, target, weights=fracs, tol=1e-4)
        else:
            with torch.no_grad():
                at.retract(alpha, BITS, target, prob.fracs.numpy(), curve=our_curve, inplace=True, threads=1)
        rco.vector_transport(opt, alpha, bits, fracs)
    return alpha.detach()


def run_ours(prob: Problem, target: float, steps: int, lr: float, curve: str) -> torch.Tensor:
    logits = torch.nn.Parameter(prob.start(target))
    opt = at.RCO([logits], BITS, target, lr=lr, weights=prob.fracs.numpy(), curve=curve, threads=1)
    for _ in range(steps):
        opt.zero_grad()
        prob.loss(torch.softmax(logits, -1)).backward()
        opt.step()
    return logits.detach()


def part_loop(rco, seeds: int, steps: int, lr: float) -> None:
    variants = [
        ("RCO loop", lambda p, t: run_rco_loop(rco, p, t, steps, lr)),
        ("RCO loop + our retract (costs)", lambda p, t: run_rco_loop(rco, p, t, steps, lr, "costs")),
        ("RCO loop + our retract (weighted)", lambda p, t: run_rco_loop(rco, p, t, steps, lr, "weighted")),
        ("ours, curve=costs", lambda p, t: run_ours(p, t, steps, lr, "costs")),
        ("ours, curve=weighted", lambda p, t: run_ours(p, t, steps, lr, "weighted")),
    ]
    print(f"\n### End to end: 224 x 7, float32, lr {lr}, {steps} steps (relaxed loss at the end; "
          "in brackets: relative to RCO's loop)\n")
    print("| target | seed | " + " | ".join(name for name, _ in variants) + " |")
    print("|---|---|" + "---|" * len(variants))
    rel = {name: [] for name, _ in variants[1:]}
    budget_err = {name: [] for name, _ in variants}
    for target in (3.0, 4.0):
        for seed in range(seeds):
            prob = Problem(seed)
            cells, base = [], None
            for name, run in variants:
                loss, err = prob.relaxed(run(prob, target), target)
                budget_err[name].append(err)
                if base is None:
                    base = loss
                    cells.append(f"{loss:.6g}")
                else:
                    rel[name].append(loss / base - 1)
                    cells.append(f"{loss:.6g} ({100 * (loss / base - 1):+.2f}%)")
            print(f"| {target:g} | {seed} | " + " | ".join(cells) + " |")
    print("\n| variant | lower loss than RCO's loop | median vs RCO's loop | range | max abs(E - target) |")
    print("|---|---|---|---|---|")
    print(f"| RCO loop | | | | {max(budget_err['RCO loop']):.2g} |")
    for name, r in rel.items():
        wins = sum(x < 0 for x in r)
        print(f"| {name} | {wins} of {len(r)} | {100 * statistics.median(r):+.2f}% | "
              f"{100 * min(r):+.2f}% .. {100 * max(r):+.2f}% | {max(budget_err[name]):.2g} |")


# --------------------------------------------------------------------------- CPU times


def cpu_times(fns: dict, rounds: int, budget_s: float = 0.05) -> dict:
    """Median CPU seconds per call of each function, timed in alternating rounds (each round
    times every function once, over enough calls to take about budget_s)."""
    reps = {}
    for name, fn in fns.items():
        fn()
        t0 = time.process_time()
        n = 0
        while time.process_time() - t0 < budget_s / 5 and n < 10000:
            fn()
            n += 1
        per = (time.process_time() - t0) / n
        reps[name] = max(1, min(10000, int(budget_s / max(per, 1e-7))))
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.process_time()
            for _ in range(reps[name]):
                fn()
            samples[name].append((time.process_time() - t0) / reps[name])
    return {name: statistics.median(s) for name, s in samples.items()}


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} us"


def torch_ops(fn) -> list:
    """Names of the torch (aten) ops that fn runs."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sorted({e.key for e in prof.key_averages() if e.key.startswith("aten::")})


def part_speed(rco, rounds: int) -> None:
    g = torch.Generator().manual_seed(0)
    print("\n### budget_normal and the tangent projection, float32, weights (N,), 1 thread\n")
    print("| logits (N x K) | RCO budget_normal | ours | RCO/ours | RCO project_gradient | ours project_tangent "
          "| RCO/ours | normal error RCO | ours |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, k in [(224, 7), (1250, 8), (12500, 8), (125000, 8)]:
        z = torch.randn(n, k, generator=g, dtype=torch.float32)
        costs = torch.tensor(BITS + [12.0][: k - 7], dtype=torch.float32)[:k]
        weights = torch.rand(n, generator=g, dtype=torch.float32) / n
        alpha = z.clone().requires_grad_()
        alpha.grad = torch.randn(n, k, generator=g, dtype=torch.float32)
        grad = alpha.grad.clone()
        c64, w64 = costs.double().numpy(), weights.double().numpy()
        t = cpu_times({
            "rco_n": lambda: rco.budget_normal(z, costs, weights),
            "ours_n": lambda: at.budget_normal(z, costs, weights),
            "rco_p": lambda: rco.project_gradient(alpha, costs, weights),
            "ours_p": lambda: at.project_tangent(grad, z, costs, weights),
        }, rounds)
        ref = at.budget_normal(z.double(), c64, w64)  # float64 arithmetic on the same float32 inputs
        scale = float(ref.abs().max())
        err_rco = float((rco.budget_normal(z, costs, weights).double() - ref).abs().max()) / scale
        err_ours = float((at.budget_normal(z, costs, weights).double() - ref).abs().max()) / scale
        print(f"| {n * k:,} ({n} x {k}) | {fmt(t['rco_n'])} | {fmt(t['ours_n'])} | {t['rco_n'] / t['ours_n']:.2f}x | "
              f"{fmt(t['rco_p'])} | {fmt(t['ours_p'])} | {t['rco_p'] / t['ours_p']:.2f}x | {err_rco:.2g} | "
              f"{err_ours:.2g} |")
    print("\n(error: max |n - n64| / max |n64|, n64 the normal in float64 from the same float32 logits)")

    print("\n### Retraction of 1e6 logits (N = 125,000, K = 8), shared against per-item costs, 1 thread\n")
    print("| dtype | shared (K,) | per-item (N,K) | per-item / shared | weights (N,), curve=weighted "
          "| / shared | weights (N,), curve=costs | / shared |")
    print("|---|---|---|---|---|---|---|---|")
    n, k = 125_000, 8
    rng = np.random.default_rng(0)
    c8 = np.array([2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 16.0])
    full = np.ascontiguousarray(np.broadcast_to(c8, (n, k)) * rng.uniform(0.5, 1.5, (n, k)))
    weights = rng.uniform(0.5, 2.0, n)
    for dtype in (torch.float64, torch.float32):
        z = torch.from_numpy(rng.normal(size=(n, k))).to(dtype)
        forms = {"shared": (c8, None, "weighted"), "full": (full, None, "weighted"),
                 "weighted": (c8, weights, "weighted"), "costs": (c8, weights, "costs")}
        calls = {}
        for name, (c, w, curve) in forms.items():
            budget = 0.8 * float(at.expected_cost(z, c, w))
            calls[name] = (lambda c=c, w=w, curve=curve, budget=budget:
                           at.retract(z, c, budget, w, curve=curve, threads=1))
        t = cpu_times(calls, rounds, budget_s=0.2)
        print(f"| {str(dtype).replace('torch.', '')} | {fmt(t['shared'])} | {fmt(t['full'])} | "
              f"{t['full'] / t['shared']:.2f}x | {fmt(t['weighted'])} | {t['weighted'] / t['shared']:.2f}x | "
              f"{fmt(t['costs'])} | {t['costs'] / t['shared']:.2f}x |")

    print("\n### Small calls at 224 x 7 (float32 logits, weights), 1 thread\n")
    prob = Problem(0)
    z = prob.start(3.0) + 0.3 * torch.randn(224, 7, generator=g)
    fr = prob.fracs.numpy()
    calls = {
        "round_to_budget": lambda: at.round_to_budget(z, BITS, 3.0, fr),
        "retract": lambda: at.retract(z, BITS, 3.0, fr, curve="costs", threads=1),
    }
    t = cpu_times(calls, rounds)
    print("| call | CPU time | torch ops it runs |")
    print("|---|---|---|")
    for name, fn in calls.items():
        print(f"| {name} | {fmt(t[name])} | {', '.join(torch_ops(fn)) or 'none'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["all", "loop", "speed"], default="all")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()
    rco = load_rco()
    if rco is None:
        print("APPORTION_RCO_SRC does not point to a clone of IST-DASLab/RCO (src/manifold.py); skipped")
        return
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads 1")
    if args.part in ("all", "loop"):
        part_loop(rco, args.seeds, args.steps, args.lr)
    if args.part in ("all", "speed"):
        part_speed(rco, args.rounds)


if __name__ == "__main__":
    sys.exit(main())
