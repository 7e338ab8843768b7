"""Solving in a forked child after the parent has started the native thread pool.

The pool's workers do not exist in a child of fork(), so a child that dispatched to them would
wait forever. Each case runs in its own Python process, in its own session, so that a hang is a
timeout here (the whole process group is killed) rather than a stuck test run.
"""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import HAS_TORCH

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")

HANG_TIMEOUT_S = 120

# work() solves batches large enough to go through the pool (lagrangian, exact, dp, one large
# lagrangian instance, frontier, simulate_online; with torch, retract and round_to_budget too)
# and returns plain lists.
PRELUDE = textwrap.dedent("""
    import os, sys
    import numpy as np
    import apportion
    try:
        import torch
        import apportion.torch as at
    except ImportError:
        torch = None

    rng = np.random.default_rng(0)
    V = rng.random((64, 50, 4))
    C = np.array([0, 1, 2, 3.0])
    B = np.full(64, 40.0)
    V1 = rng.random((20000, 4))  # items split across threads

    def work(_=None):
        out = {}
        for method in ("lagrangian", "exact", "dp"):
            s = apportion.solve(V, C, B, method=method)
            out[method] = (s.choice.tolist(), np.asarray(s.value).tolist())
        s = apportion.solve(V1, C, 24000.0, method="lagrangian")
        out["large"] = (s.choice.tolist(), float(s.value))
        out["frontier"] = apportion.frontier(V[0], C, 40.0, at=[10.0, 40.0]).choices.tolist()
        out["online"] = np.asarray(apportion.simulate_online(V, C, 40.0).value).tolist()
        if torch is not None:
            z = torch.from_numpy(V)
            out["retract"] = at.retract(z, C, B).tolist()
            out["round"] = at.round_to_budget(z, C, B).tolist()
        return out

    def in_child():
        # torch's own OpenMP threads do not survive fork either: a child that runs a parallel
        # torch op hangs in libgomp, so children use one torch thread, as DataLoader workers do.
        if torch is not None:
            torch.set_num_threads(1)

    expected = work()  # starts the pool in the parent
""")

CASES = {
    "os.fork": """
        pid = os.fork()
        if pid == 0:
            in_child()
            os._exit(0 if work() == expected else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert work() == expected  # the parent's pool still works
    """,
    "multiprocessing": """
        import multiprocessing as mp
        with mp.get_context("fork").Pool(2, initializer=in_child) as pool:
            results = pool.map(work, range(4))
        assert all(r == expected for r in results)
    """,
    "dataloader": """
        from torch.utils.data import DataLoader, Dataset

        class Solves(Dataset):
            def __len__(self):
                return 4
            def __getitem__(self, i):
                return int(work() == expected)

        loader = DataLoader(Solves(), batch_size=None, num_workers=2, multiprocessing_context="fork")
        assert [int(x) for x in loader] == [1, 1, 1, 1]
    """,
}


@pytest.mark.parametrize("case", list(CASES))
def test_solve_in_forked_child(case):
    if case == "dataloader" and not HAS_TORCH:
        pytest.skip("torch is not installed")
    code = PRELUDE + textwrap.dedent(CASES[case])
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=HANG_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the forked children too
        proc.communicate()
        pytest.fail(f"{case}: no answer within {HANG_TIMEOUT_S} s (the forked child hangs)")
    assert proc.returncode == 0, f"{case}: exit code {proc.returncode}\n{out}\n{err}"
