"""`mypy --strict` on the package: the annotations, the Literal types and the _core stubs stay
checked (skipped where mypy is not installed: pip install "apportion[test]")."""

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("mypy")

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python",
                       "apportion")

# Modules written in parallel with the typing work (issue 16: torch.py, rewritten for issue 15;
# _decision.py and learn.py, new for issue 19; ray.py, new for issue 18): strict once they are
# annotated. The test below
# is a strict xfail, so it fails as soon as they are all clean: then empty this.
NOT_YET_STRICT = ("torch.py", "_decision.py", "learn.py")


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory):
    """{file name: [error lines]} of one `mypy --strict` run over the package."""
    if not os.path.isdir(PACKAGE):
        pytest.skip("the package sources are not beside the tests")
    cache = tmp_path_factory.mktemp("mypy")
    p = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                        "--cache-dir", str(cache), PACKAGE],
                       capture_output=True, text=True, timeout=600)
    errors = {}
    for line in p.stdout.splitlines():
        m = re.match(r"(.+?):\d+: error:", line)
        if m:
            errors.setdefault(os.path.basename(m.group(1)), []).append(line)
    assert p.returncode == 0 or errors, p.stdout + p.stderr  # mypy itself failed
    return errors


def test_mypy_strict_is_clean(mypy_errors):
    found = [e for name, lines in mypy_errors.items() if name not in NOT_YET_STRICT for e in lines]
    assert not found, "\n".join(found)


@pytest.mark.xfail(reason="torch.py, _decision.py, learn.py and ray.py were written in parallel with "
                          "the typing work; annotate them, then empty NOT_YET_STRICT")
def test_mypy_strict_on_the_modules_not_yet_strict(mypy_errors):
    found = [e for name in NOT_YET_STRICT for e in mypy_errors.get(name, [])]
    assert not found, "\n".join(found)
