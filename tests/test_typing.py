"""`mypy --strict` on the package: the annotations, the Literal types and the _core stubs stay
checked (skipped where mypy is not installed: pip install "apportion[test]")."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("mypy")

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python",
                       "apportion")

# Modules typed against an optional dependency: checked where it is installed (CI installs
# both), left out of the run where it is not, since their types come from it.
NEEDS = {"ray.py": "ray", "torch.py": "torch", "_decision.py": "torch", "learn.py": "torch"}


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory):
    """{file name: [error lines]} of one `mypy --strict` run over the package."""
    if not os.path.isdir(PACKAGE):
        pytest.skip("the package sources are not beside the tests")
    cache = tmp_path_factory.mktemp("mypy")
    absent = [name for name, module in NEEDS.items() if importlib.util.find_spec(module) is None]
    exclude = ["--exclude", "|".join(re.escape(name) + "$" for name in absent)] if absent else []
    p = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                        "--cache-dir", str(cache), *exclude, PACKAGE],
                       capture_output=True, text=True, timeout=600)
    errors = {}
    for line in p.stdout.splitlines():
        m = re.match(r"(.+?):\d+: error:", line)
        if m:
            errors.setdefault(os.path.basename(m.group(1)), []).append(line)
    assert p.returncode == 0 or errors, p.stdout + p.stderr  # mypy itself failed
    return errors


def test_mypy_strict_is_clean(mypy_errors):
    found = [e for lines in mypy_errors.values() for e in lines]
    assert not found, "\n".join(found)
