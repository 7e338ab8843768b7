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
import importlib.util
import pathlib
import re
import subprocess
import sys

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
    shows what the block printed."""
    result = subprocess.run([sys.executable, "-c", source], cwd=cwd, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, (
        f"README.md:{line} exited with {result.returncode}\n"
        f"--- stdout (end) ---\n{result.stdout[-3000:]}\n--- stderr (end) ---\n{result.stderr[-6000:]}")


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
