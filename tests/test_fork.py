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


def _run(code, what):
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=HANG_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{what}: no answer within {HANG_TIMEOUT_S} s")
    return proc.returncode, out, err


def test_daemon_threads_inside_native_calls_at_exit_do_not_abort_the_process():
    # Found by a fuzzing helper: Python ends a daemon thread that asks for the GIL back while the
    # interpreter exits by pthread_exit, whose forced unwind passed through NativeCall's noexcept
    # destructor: std::terminate, SIGABRT, in 10 runs of 10 (exit status 134).
    rc, out, err = _run("""
        import threading, time
        import numpy as np, apportion
        v = np.random.default_rng(0).random((10, 4)); c = np.arange(4.0)
        big = np.random.default_rng(1).random((20000, 8))
        alloc = apportion.OnlineAllocator(1e12, 10**12)
        calls = [lambda: apportion.solve(v, c, 15.0, method="lagrangian"),
                 lambda: apportion.solve(v, c, 15.0, method="exact"),
                 lambda: apportion.simulate_online(v[None], c, 15.0, threads=1),
                 lambda: alloc.decide(big, np.arange(8.0))]
        def loop(call):
            while True:
                call()
        for call in calls:
            threading.Thread(target=loop, args=(call,), daemon=True).start()
        time.sleep(0.3)
        print("exiting", flush=True)
    """, "daemon threads at exit")
    assert rc == 0 and "exiting" in out, f"exit status {rc}\n{err[-2000:]}"


def test_allocator_in_a_child_forked_while_another_thread_decides_refuses_rather_than_hangs():
    # Found by a fuzzing helper: decide() holds the allocator's lock with the GIL released, and a
    # child forked meanwhile kept that lock held forever: .prices hung in 10 children of 10.
    # Now such a child gets a RuntimeError; a child forked while no thread decides goes on.
    rc, out, err = _run("""
        import os, signal, threading, time, warnings
        import numpy as np, apportion
        warnings.simplefilter("ignore", DeprecationWarning)
        alloc = apportion.OnlineAllocator(1e12, 10**12)
        vals, costs = np.random.default_rng(0).random((200000, 8)), np.arange(8.0)
        def child():
            signal.alarm(20)
            try:
                alloc.prices
                alloc.decide(vals[:3], costs)
                os._exit(0)
            except RuntimeError as exc:
                os._exit(5 if "forked while another thread was inside" in str(exc) else 6)
        pid = os.fork()  # no other thread yet: the child's allocator works
        if pid == 0:
            child()
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        stop = False
        def feeder():
            while not stop:
                alloc.decide(vals, costs)
        t = threading.Thread(target=feeder); t.start()
        codes = []
        for _ in range(6):
            time.sleep(0.02)
            pid = os.fork()
            if pid == 0:
                child()
            codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        stop = True; t.join()
        assert set(codes) <= {0, 5} and 5 in codes, codes
        print("ok", codes, flush=True)
    """, "fork while deciding")
    assert rc == 0 and "ok" in out, f"exit status {rc}\n{out}\n{err[-2000:]}"
