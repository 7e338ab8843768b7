"""Every ```python block of README.md runs as written, each on its own.

A block runs in a fresh namespace, so it must define everything it uses; a block that needs
Ray runs as a process of its own, as a user's script would (see `_run_as_script`). A block
that needs something a machine may lack says so in an HTML comment on the line before its
fence, visible in the README's source:

    <!-- readme-test: needs torch -->

`needs` takes importable module names, or `cuda` for a usable GPU; the block is skipped
(with that reason) where one is missing and runs where all are present.
"""

import contextlib
import dataclasses
import importlib.util
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
NEEDS = re.compile(r"<!--\s*readme-test:\s*needs\s+([\w ,.]+?)\s*-->")


def python_blocks(text: str) -> list:
    """(first line number, needed things, source) of each ```python fence of `text`."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i + 1
            end = start
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if end == len(lines):
                raise ValueError(f"README.md:{i + 1}: a ```python fence is never closed")
            marker = NEEDS.search(lines[i - 1]) if i > 0 else None
            needs = tuple(re.split(r"[ ,]+", marker.group(1))) if marker else ()
            blocks.append((start + 1, needs, "\n".join(lines[start:end]) + "\n"))
            i = end
        i += 1
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def missing(need: str) -> bool:
    if need == "cuda":
        import apportion

        return not apportion.cuda_available()
    return importlib.util.find_spec(need) is None


def test_readme_has_its_python_blocks():
    # Quickstart, frontier, scheduler, online, torch: fewer means the extraction broke.
    assert len(BLOCKS) >= 5


def test_extraction_reads_markers_and_fences():
    text = "x\n```python\na = 1\n```\n<!-- readme-test: needs torch, cuda -->\n```python\nb = 2\n```\n"
    assert python_blocks(text) == [(3, (), "a = 1\n"), (7, ("torch", "cuda"), "b = 2\n")]
    with pytest.raises(ValueError, match="never closed"):
        python_blocks("```python\na = 1\n")


def test_a_stalled_block_is_run_again_with_a_warning_that_shows_its_stacks(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "_STALL_SECONDS", 10)
    ran = tmp_path / "ran"
    source = (f"import pathlib, time\nran = pathlib.Path({str(ran)!r})\n"
              "if not ran.exists():\n    ran.write_text('once')\n    time.sleep(600)\n")
    # Under this project's own filter (warnings are errors): the stall's warning must not raise.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("error")
        _run_as_script(7, source, tmp_path)
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert re.search(r"(?s)README.md:7 stalled for 10 s.*File \"README.md:7\", line 5", str(caught[0].message))


def test_a_block_that_stalls_twice_fails_even_where_it_exited_0(tmp_path, monkeypatch):
    # The block exits 0 at once, but a process it leaves behind (in another session, which the
    # kill does not reach) holds its output open: a stall, twice, is a failure all the same.
    monkeypatch.setattr(sys.modules[__name__], "_STALL_SECONDS", 2)
    source = ("import subprocess, sys\n"
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(5)'], start_new_session=True)\n")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with pytest.raises(AssertionError, match=r"README.md:9 stalled for 2 s"):
            _run_as_script(9, source, tmp_path)


def test_a_block_whose_ray_did_not_start_is_run_again_with_a_warning(tmp_path):
    ran = tmp_path / "ran"
    source = (f"import pathlib\nran = pathlib.Path({str(ran)!r})\n"
              "if not ran.exists():\n    ran.write_text('once')\n"
              f"    raise Exception({_RAY_DID_NOT_START!r} + '. This could happen because ...')\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("error")
        _run_as_script(11, source, tmp_path)
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert "README.md:11 found that Ray did not start and was run again" in str(caught[0].message)


def test_a_block_whose_ray_does_not_start_twice_fails(tmp_path):
    source = f"raise Exception({_RAY_DID_NOT_START!r})\n"
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with pytest.raises(AssertionError, match=r"README.md:12 exited with 1"):
            _run_as_script(12, source, tmp_path)


def test_a_failing_block_fails_at_once_with_its_output(tmp_path):
    runs = tmp_path / "runs"
    source = f"import sys\nopen({str(runs)!r}, 'a').write('run\\n')\nprint('said this')\nsys.exit(3)\n"
    with pytest.raises(AssertionError, match=r"(?s)README.md:8 exited with 3.*said this"):
        _run_as_script(8, source, tmp_path)
    assert runs.read_text() == "run\n"  # not run again


def test_a_block_runs_as_the_main_module(tmp_path):
    # As under `python -c`: a class it defines pickles by reference to __main__.
    _run_as_script(10, "import pickle\nclass A:\n    pass\npickle.dumps(A())\n", tmp_path)


@pytest.mark.parametrize("line, needs, source", BLOCKS, ids=[f"README.md:{b[0]}" for b in BLOCKS])
def test_readme_block_runs(line, needs, source, tmp_path):
    absent = [n for n in needs if missing(n)]
    if absent:
        pytest.skip(f"README.md:{line} needs {', '.join(absent)}, which is not present here")
    code = compile(source, f"README.md:{line}", "exec")
    if "ray" in needs:
        _run_as_script(line, source, tmp_path)
        return
    with _one_torch_thread("torch" in needs):
        exec(code, {"__name__": f"readme_block_{line}"})


def _run_as_script(line: int, source: str, cwd: pathlib.Path) -> None:
    """Runs a block in a child interpreter (the same environment: a sanitizer run's preloaded
    runtimes and PYTHONPATH carry over) and fails with its output if it exits non-zero.

    CI once died of SIGABRT in the torch block, the first block after the Ray Data block, in
    the same process after ray.shutdown() had returned; Ray's driver installs its own handler
    of fatal signals (so faulthandler printed nothing) and what it wrote went to pytest's
    capture of fd 2, lost with the process. In a process of its own, whatever Ray leaves
    running after shutdown ends with that process, as for a user's script, and a failure
    shows what the block printed.

    A block that stalls is run once more, and the stall is reported as a warning; a failure
    is never retried. CI once saw the Ray Data block print nothing for 600 s after "Started a
    local Ray instance" (it takes 8 s alone here, 75-85 s with both cores busy, and never
    stalled in 11 runs); it stalled in Ray's machinery, before Ray Data logged its first
    execution, and left nothing else to read. A stall now leaves the driver's Python stacks and
    the ends of Ray's own logs.

    A block whose local Ray instance did not start is run once more too, with a warning: in
    its pass under the sanitizers, CI once saw `ray.init` give up after 30 s ("The current node
    timed out during startup", "Failed to get node info: Deadline Exceeded") before the block
    ran anything of ours; the run before it, of the same tests, had passed."""
    run = _run_child(line, source, cwd, timeout=_STALL_SECONDS)
    if run.stalled or run.ray_did_not_start:
        what = "stalled" if run.stalled else "found that Ray did not start"
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # shown in the summary, not raised as an error
            warnings.warn(f"README.md:{line} {what} and was run again\n{run.report}", stacklevel=2)
        run = _run_child(line, source, cwd, timeout=_STALL_SECONDS)
    assert not run.stalled and run.returncode == 0, run.report


# 8 s alone, 75-85 s on a machine whose two cores are both busy (measured on the Ray Data block).
_STALL_SECONDS = 300

# The block runs in the real __main__ module, as under `python -c` (a class it defines pickles
# by reference), with the child's stacks dumped some seconds before it is killed: Ray's
# fatal-signal handlers do not stop faulthandler's watchdog thread from writing to fd 2.
_CHILD = (
    "import __main__, faulthandler, sys\n"
    "faulthandler.dump_traceback_later(float(sys.argv[1]), exit=False)\n"
    "name = sys.argv[2]\n"
    "sys.argv = ['-c']\n"
    "exec(compile(sys.stdin.read(), name, 'exec'), __main__.__dict__)\n")


# What Ray raises when the local instance that ray.init starts does not come up in time.
_RAY_DID_NOT_START = "The current node timed out during startup"


@dataclasses.dataclass
class _ChildRun:
    returncode: int
    stalled: bool
    report: str
    ray_did_not_start: bool = False  # it exited non-zero with Ray's startup timeout


def _run_child(line: int, source: str, cwd: pathlib.Path, timeout: float) -> _ChildRun:
    """One run of a block's source in a child that leads a process group of its own, with
    Ray's files in a directory of its own (short: Ray's socket paths must fit 107 bytes),
    which is read back into the report and removed. On a stall, or on anything raised here
    (an interrupt included), the child's process group is killed; Ray's workers, in groups of
    their own, end with the raylet they hang on. The output is then read for at most 20 s
    more: a process outside the group may still hold the pipes."""
    ray_dir = tempfile.mkdtemp(prefix="ray")
    try:
        env = dict(os.environ, RAY_TMPDIR=ray_dir)
        dump_after = timeout - min(30.0, timeout / 2)
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(dump_after), f"README.md:{line}"],
            cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, errors="replace", start_new_session=True)
        stalled = False
        try:
            stdout, stderr = child.communicate(source, timeout=timeout)
        except subprocess.TimeoutExpired:
            stalled = True
            _kill_group(child)
            stdout, stderr = _read_rest(child)
        except BaseException:
            _kill_group(child)
            child.wait()
            raise
        logs = "" if child.returncode == 0 and not stalled else _ray_log_tails(ray_dir)
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    state = f"stalled for {timeout:.0f} s" if stalled else f"exited with {child.returncode}"
    report = (f"README.md:{line} {state} (exit code {child.returncode})\n--- stdout (end) ---\n"
              f"{stdout[-3000:]}\n--- stderr (end) ---\n{stderr[-8000:]}{logs}")
    did_not_start = not stalled and child.returncode != 0 and _RAY_DID_NOT_START in stderr
    return _ChildRun(child.returncode, stalled, report, did_not_start)


def _kill_group(child: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)


def _read_rest(child: subprocess.Popen) -> tuple:
    """(stdout, stderr) of a killed child: what it wrote, read for at most 20 s (a process
    outside its group may hold the pipes open), then the pipes are closed and it is reaped."""
    try:
        return child.communicate(timeout=20)
    except subprocess.TimeoutExpired as partial:
        for pipe in (child.stdout, child.stderr):
            with contextlib.suppress(OSError):
                pipe.close()
        child.wait()
        as_text = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        return as_text(partial.stdout), as_text(partial.stderr) + "\n(the pipes stayed open after the kill)"


def _ray_log_tails(ray_dir: str, lines: int = 15, limit: int = 12000) -> str:
    """The last `lines` lines of each of Ray's logs under `ray_dir` that are not empty, the
    newest first, at most `limit` characters in all."""
    files = [f for f in pathlib.Path(ray_dir).glob("**/logs/**/*")
             if f.is_file() and f.suffix in (".log", ".out", ".err") and f.stat().st_size]
    files.sort(key=lambda f: f.stat().st_mtime, reverse=True)
    parts = []
    for f in files:
        tail = f.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"\n--- {f.relative_to(ray_dir)} (end) ---\n" + "\n".join(tail))
    return "".join(parts)[:limit]


@contextlib.contextmanager
def _one_torch_thread(active: bool):
    """torch's intra-op threads, limited to one while a block runs. On a loaded 2-core CI
    machine two of them spin against each other: the torch block took 17-19 s of CPU time on
    two threads against 1.9 s on one."""
    if not active:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
