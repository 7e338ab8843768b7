"""`mypy --strict` on the package: the annotations, the Literal types and the _core stubs stay
checked (skipped where mypy is not installed: pip install "apportion[test]")."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("mypy")

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python",
                       "apportion")


def test_mypy_strict_is_clean(tmp_path):
    if not os.path.isdir(PACKAGE):
        pytest.skip("the package sources are not beside the tests")
    p = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                        "--cache-dir", str(tmp_path), PACKAGE],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
