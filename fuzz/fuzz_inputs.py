#!/usr/bin/env python3
"""Fuzzes the input layer: apportion.solve (every method) and apportion.frontier.

Allowed outcomes: an answer that passes the invariants below, or ValueError / TypeError (the
documented bad-input errors). Any other exception, a crash or a hang (-timeout) is a finding.

    python fuzz/fuzz_inputs.py [libFuzzer flags] [CORPUS_DIR...]
    python fuzz/fuzz_inputs.py --write-seeds fuzz/corpus_inputs   # regenerate the seed corpus

Byte layout (missing bytes read as 0): method, flags, shape, batch, then values, costs,
budget(s), mask, and the optional cost_resolution, threads, time_limit and `at` fields.
Each float is a tag byte: an index into SPECIALS, a small integer, 1e12 + a small integer, or
255 followed by 8 raw little-endian bytes.
"""

import math
import os
import struct
import sys

import atheris
import numpy as np

with atheris.instrument_imports():
    import apportion

METHODS = ("auto", "lagrangian", "exact", "dp", "mirror", "frontier")
SPECIALS = (0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 3.0, 1e308, 1.7e308, -1e308, -1.7e308, 1e-300,
            -1e-300, 5e-324, 1e-323, 2.2250738585072014e-308, math.inf, -math.inf, math.nan,
            1e30, 9.3e18, 1e10, 1e12, 1e-10, 2.0**53, 2.0**63, 1e12 + 0.5)
SMALL, OFFSET, RAW = len(SPECIALS), 128, 255  # tag ranges: small ints, then 1e12 + int, raw
THREADS = (None, 1, 2, 0, -1, 2**40, True, 2.5)
TIME_LIMITS = (1.0, 0.5, 0.0, -1.0, math.nan)
F_MIN, F_MASK, F_ITEM_COSTS, F_RESOLUTION, F_THREADS, F_EXACT_SPEND, F_HUGE_BUDGET, F_AT = (
    1 << i for i in range(8))
STATUSES = ("optimal", "feasible", "infeasible", "unknown")


class Finding(Exception):
    """An answer that breaks an invariant."""


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def byte(self):
        self.pos += 1
        return self.data[self.pos - 1] if self.pos <= len(self.data) else 0

    def float(self):
        t = self.byte()
        if t < SMALL:
            return SPECIALS[t]
        if t < OFFSET:
            return float(t - SMALL)
        if t < RAW:
            return 1e12 + (t - OFFSET)
        raw = bytes(self.byte() for _ in range(8))
        return struct.unpack("<d", raw)[0]

    def floats(self, n):
        return [self.float() for _ in range(n)]


class Writer:
    """The inverse of Reader, for the seed corpus."""

    def __init__(self):
        self.out = bytearray()

    def byte(self, b):
        self.out.append(b)

    def float(self, x):
        packed = struct.pack("<d", x)
        for i, s in enumerate(SPECIALS):
            if struct.pack("<d", s) == packed:
                return self.byte(i)
        self.byte(RAW)
        self.out += packed


def decode(data):
    r = Reader(data)
    method = METHODS[r.byte() % len(METHODS)]
    flags = r.byte()
    shape = r.byte()
    n, k = 1 + shape % 6, 1 + (shape // 6) % 5
    batch = r.byte() % 4  # 0: one instance (N,K); else a batch of that many
    b = max(batch, 1)
    values = np.array(r.floats(b * n * k)).reshape((b, n, k) if batch else (n, k))
    costs = np.array(r.floats(n * k if flags & F_ITEM_COSTS else k))
    costs = costs.reshape(n, k) if flags & F_ITEM_COSTS else costs
    if flags & F_HUGE_BUDGET:  # a Python int of 2*byte nines (400 digits at 200)
        budgets = [int("9" * max(1, 2 * r.byte()))] * b
    else:
        budgets = r.floats(b)
    budget = budgets if batch else budgets[0]
    kw = {"sense": "min" if flags & F_MIN else "max"}
    if flags & F_MASK:
        kw["mask"] = np.array([r.byte() % 4 != 0 for _ in range(b * n * k)]).reshape(values.shape)
    if flags & F_RESOLUTION:
        kw["cost_resolution"] = r.float()
    if flags & F_THREADS:
        kw["threads"] = THREADS[r.byte() % len(THREADS)]
    if flags & F_EXACT_SPEND:
        kw["exact_spend"] = True
    if method == "exact":
        kw["time_limit"] = TIME_LIMITS[r.byte() % len(TIME_LIMITS)]
    if method in ("dp", "frontier", "auto"):
        kw["max_memory"] = 1 << 28  # a DP table the fuzzer asks for must not exhaust the machine
    if method == "frontier" and flags & F_AT:
        kw["at"] = r.floats(r.byte() % 4)
    return method, values, costs, budget, kw


def encode(method, values, costs, budget, *, sense="max", mask=None, cost_resolution=None,
           threads=None, exact_spend=False, time_limit=1.0, at=None, huge_budget_digits=None):
    """Bytes that decode() turns into this call (threads from THREADS; values (N,K) or (B,N,K))."""
    values, costs = np.asarray(values, float), np.asarray(costs, float)
    batch = values.shape[0] if values.ndim == 3 else 0
    n, k = values.shape[-2:]
    flags = ((sense == "min") * F_MIN | (mask is not None) * F_MASK | (costs.ndim == 2) * F_ITEM_COSTS
             | (cost_resolution is not None) * F_RESOLUTION | (threads is not None) * F_THREADS
             | exact_spend * F_EXACT_SPEND | (huge_budget_digits is not None) * F_HUGE_BUDGET
             | (at is not None) * F_AT)
    w = Writer()
    for byte in (METHODS.index(method), flags, (n - 1) + 6 * (k - 1), batch):
        w.byte(byte)
    for x in list(values.ravel()) + list(costs.ravel()):
        w.float(float(x))
    if huge_budget_digits is not None:
        w.byte(huge_budget_digits // 2)
    else:
        for x in np.atleast_1d(budget):
            w.float(float(x))
    if mask is not None:
        for m in np.asarray(mask).ravel():
            w.byte(1 if m else 0)
    if cost_resolution is not None:
        w.float(cost_resolution)
    if threads is not None:
        w.byte(THREADS.index(threads))
    if method == "exact":
        w.byte(TIME_LIMITS.index(time_limit))
    if at is not None:
        w.byte(len(at))
        for x in at:
            w.float(x)
    return bytes(w.out)


def _as_float(x):
    """A budget as the package reads it: float64, the nearest double (so a 300-digit int of
    nines reads as 1e308, a hair above it)."""
    try:
        return float(x)
    except OverflowError:
        return math.inf


def dense(values, costs, budget, kw):
    """values, costs, mask as (B,N,K) and budgets as (B,) floats."""
    v = np.asarray(values, float)
    v = v if v.ndim == 3 else v[None]
    c = np.broadcast_to(np.asarray(costs, float), v.shape)
    m = np.broadcast_to(np.asarray(kw.get("mask", True), bool), v.shape)
    return v, c, m, [_as_float(x) for x in np.atleast_1d(np.asarray(budget, dtype=object))]


def spend(c, choice):
    try:
        return math.fsum(float(c[i, x]) for i, x in enumerate(choice))
    except OverflowError:  # costs are >= 0: the sum is past the largest double
        return math.inf


def check_choice(choice, k, m, what):
    if not all(0 <= x < k and m[i, x] for i, x in enumerate(choice)):
        raise Finding(f"{what}: choice {list(choice)} outside the options or the mask")


def check_solution(sol, values, costs, budget, kw):
    v, c, m, budgets = dense(values, costs, budget, kw)
    sign = -1.0 if kw["sense"] == "min" else 1.0
    choice = np.asarray(sol.choice).reshape(v.shape[:2])
    status, value_, bound_ = (np.atleast_1d(np.asarray(x)) for x in (sol.status, sol.value, sol.bound))
    for b in range(v.shape[0]):
        st, value, bound = str(status[b]), float(value_[b]), float(bound_[b])
        what = f"instance {b}, status {st!r}, value {value!r}, bound {bound!r}"
        if st not in STATUSES:
            raise Finding(f"{what}: unknown status")
        if st in ("infeasible", "unknown"):
            continue
        check_choice(choice[b], v.shape[2], m[b], what)
        if math.isnan(value) or math.isnan(bound):
            raise Finding(f"{what}: NaN value or bound")
        total = spend(c[b], choice[b])
        if not total <= budgets[b]:
            raise Finding(f"{what}: allocation costs {total!r} > budget {budgets[b]!r}")
        if st == "optimal" and not (math.isfinite(value) and math.isfinite(bound)):
            raise Finding(f"{what}: 'optimal' with a non-finite value or bound")
        slack = 1e-9 * max(1.0, abs(value), abs(bound))
        if not sign * (bound - value) >= -slack:
            raise Finding(f"{what}: the bound is on the wrong side of the value")


def check_frontier(fr, values, costs, kw):
    v, c, m, _ = dense(values, costs, 0.0, kw)
    for j, at in enumerate(np.asarray(fr.at)):
        row = np.asarray(fr.choices)[j]
        if (row == -1).all():
            continue
        check_choice(row, v.shape[2], m[0], f"frontier at {at!r}")
        total = spend(c[0], row)
        if not total <= at:
            raise Finding(f"frontier at {at!r}: allocation costs {total!r}")
    if not kw.get("exact_spend"):
        best = np.asarray(fr.values, float)
        best = best[~np.isnan(best)] * (-1.0 if kw["sense"] == "min" else 1.0)
        if (np.diff(best) < 0).any():
            raise Finding("frontier: the optimum falls as the budget grows")


def run(method, values, costs, budget, kw):
    try:
        if method == "frontier":
            fr = apportion.frontier(values, costs, budget, **kw)
        else:
            sol = apportion.solve(values, costs, budget, method=method, **kw)
    except (ValueError, TypeError):
        return
    if method == "frontier":
        check_frontier(fr, values, costs, kw)
    else:
        check_solution(sol, values, costs, budget, kw)


def TestOneInput(data):
    method, values, costs, budget, kw = decode(data)
    try:
        run(method, values, costs, budget, kw)
    except Finding as exc:
        raise Finding(f"{exc}\n  call: {method} values={values.tolist()} costs={costs.tolist()} "
                      f"budget={budget!r} {kw}") from None


# The known bad cases of the reliability issue.
SEEDS = {
    "tiny_costs_exact": dict(method="exact", values=[[0, 1e10], [0, 1e10]], costs=[0, 1e-300], budget=1e-300),
    "minus_1e308": dict(method="auto", values=[[-1e308, 0], [-1e308, 0]], costs=[0, 1], budget=0.0),
    "denormal_costs_exact": dict(method="exact", values=[[0, 1, 2], [0, 1, 2]], costs=[0, 5e-324, 1e-323],
                                 budget=5e-324),
    "value_overflow": dict(method="auto", values=[[1e308, 1.7e308], [1e308, 1.7e308]], costs=[0, 1], budget=1.0),
    "budget_400_digits": dict(method="auto", values=[[0, 1], [0, 1]], costs=[0, 1], budget=0.0,
                              huge_budget_digits=400),
    "frontier_budget_1e30": dict(method="frontier", values=[[0, 1, 2], [0, 2, 3]], costs=[0, 1, 3], budget=1e30),
    "frontier_at_inf": dict(method="frontier", values=[[0, 1, 2], [0, 2, 3]], costs=[0, 1, 3], budget=4.0,
                            at=[math.inf]),
    "frontier_at_9e18": dict(method="frontier", values=[[0, 1, 2], [0, 2, 3]], costs=[0, 1, 3], budget=4.0,
                             at=[9.3e18]),
    "mirror_huge_costs": dict(method="mirror", values=[[0, 1, 2], [0, 2, 3]], costs=[1.7e308] * 3, budget=1e308),
    "resolution_1e10": dict(method="dp", values=[[0, 1, 2], [0, 2, 3]], costs=[0, 1, 3], budget=4.0,
                            cost_resolution=1e10),
    "threads_2_40": dict(method="lagrangian", values=[[[0, 1, 2], [0, 2, 3]]] * 2, costs=[0, 1, 3],
                         budget=[4.0, 4.0], threads=2**40),
}


def write_seeds(folder):
    os.makedirs(folder, exist_ok=True)
    for name, case in SEEDS.items():
        case = dict(case)
        args = (case.pop("method"), case.pop("values"), case.pop("costs"), case.pop("budget"))
        with open(os.path.join(folder, name), "wb") as f:
            f.write(encode(*args, **case))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write-seeds"]:
        write_seeds(sys.argv[2])
    else:
        atheris.Setup(sys.argv, TestOneInput)
        atheris.Fuzz()
