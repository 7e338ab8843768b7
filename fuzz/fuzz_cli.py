#!/usr/bin/env python3
"""Fuzzes the problem-file reader of the command line: apportion.cli.load_problem and
`apportion solve FILE`.

The fuzz bytes are the file: a .json file, and also a .npz file when they start like a zip.
The CLI promises exit code 0 (3: an instance without an allocation within its budget), or 2
with a one-line reason for bad input; load_problem returns
a dict or raises UsageError. Exit code 1 (internal error), any other exception escaping, a
crash or a hang (-timeout) is a finding.

    python fuzz/fuzz_cli.py [libFuzzer flags] [CORPUS_DIR...]   (seeds: fuzz/corpus_cli)
"""

import contextlib
import io
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    import apportion.api
    from apportion import cli

# DP tables up to 256 MB, not the default quarter of RAM, so that a small file cannot make one
# input take the machine's memory and minutes (a ValueError, exit code 2, past it).
apportion.api.default_max_memory = lambda: 1 << 28

# Problem files are written here. libFuzzer ends the process without Python's atexit, so
# run.sh passes a folder it removes afterwards; alone, a fresh temporary one is used.
WORKDIR = os.environ.get("APPORTION_FUZZ_WORKDIR") or tempfile.mkdtemp(prefix="apportion-fuzz-cli-")


class Finding(Exception):
    """The CLI broke its promise."""


def check(data, ext):
    path = os.path.join(WORKDIR, "problem" + ext)
    with open(path, "wb") as f:
        f.write(data)
    try:
        cli.load_problem(path)
    except cli.UsageError:
        pass
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = cli.main(["solve", path])
    if rc not in (cli.EXIT_OK, cli.EXIT_NO_ALLOCATION, cli.EXIT_USAGE):
        raise Finding(f"apportion solve {ext}: exit code {rc}: {err.getvalue().strip()}")


def TestOneInput(data):
    check(data, ".json")
    if data.startswith(b"PK"):
        check(data, ".npz")


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
