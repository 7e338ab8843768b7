"""The package surface: lazy submodules, a light `import apportion`, `warmup`."""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

import apportion

# Optional packages that `import apportion` must not load: each costs a second or more to
# import, and most users never need them.
HEAVY = ("torch", "ortools", "scipy", "cvxpy", "matplotlib", "pandas")

# Submodule -> a name it defines, reached as an attribute after `import apportion` alone.
SUBMODULES = {
    "reference": "cpsat",
    "workloads": "instance",
    "schedule": "route",
    "cli": "main",
    "benchmark": "main",
    "torch": "RCO",
}


def _fresh_python(code: str) -> str:
    """stdout of `code` run in a new interpreter (this one has imported everything already)."""
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True).stdout


def test_import_apportion_loads_no_heavy_package():
    out = _fresh_python("import sys, apportion\n"
                        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    assert out.strip() == ""


@pytest.mark.parametrize("name, attribute", sorted(SUBMODULES.items()))
def test_submodule_resolves_after_import_apportion(name, attribute):
    if name == "torch" and importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    out = _fresh_python(f"import apportion\nprint(callable(apportion.{name}.{attribute}))")
    assert out.strip() == "True"


def test_lazy_torch_without_torch_names_the_install_command():
    out = _fresh_python("import sys; sys.modules['torch'] = None\n"
                        "import apportion\n"
                        "try:\n    apportion.torch\nexcept ImportError as e:\n    print(e)\n")
    assert 'pip install "apportion[torch]"' in out


def test_lazy_submodule_is_the_imported_module():
    import apportion.workloads as workloads

    assert apportion.workloads is workloads
    assert sys.modules["apportion.workloads"] is workloads


def test_unknown_attribute_raises_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="no_such_thing"):
        apportion.no_such_thing  # noqa: B018
    assert not hasattr(apportion, "DESIGN")


def test_dir_lists_submodules_and_public_api():
    names = dir(apportion)
    for name in list(SUBMODULES) + apportion.__all__:
        assert name in names


def test_all_names_exist():
    for name in apportion.__all__:
        assert hasattr(apportion, name), name


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_warmup_returns_pool_size_and_is_idempotent(threads):
    pool = apportion.warmup(threads=threads)
    assert pool == apportion._core.num_threads() >= 1
    assert apportion.warmup(threads) == pool


def test_warmup_does_not_change_answers():
    rng = np.random.default_rng(5)
    values = rng.uniform(0, 10, size=(8, 300, 4))
    costs = np.array([0.0, 1.0, 2.5, 6.0])
    budget = np.full(8, 300.0)
    before = [apportion.solve(values, costs, budget, method=m) for m in ("lagrangian", "exact")]
    apportion.warmup(threads=2)
    after = [apportion.solve(values, costs, budget, method=m) for m in ("lagrangian", "exact")]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(b.choice, a.choice)
        np.testing.assert_array_equal(b.value, a.value)
        np.testing.assert_array_equal(b.bound, a.bound)


@pytest.mark.parametrize("threads, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError),
                                            (True, TypeError), ("2", TypeError)])
def test_warmup_rejects_bad_threads_naming_them(threads, error):
    with pytest.raises(error, match="threads"):
        apportion.warmup(threads=threads)


# --- packaging metadata (pyproject.toml, LICENSE) ---

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_file_is_the_declared_apache_license():
    project = _pyproject()["project"]
    assert project["license"] == "Apache-2.0"  # an SPDX expression (PEP 639), not a table
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text


def test_extras_build_on_each_other_instead_of_copying():
    from packaging.requirements import Requirement

    extras = _pyproject()["project"]["optional-dependencies"]
    parsed = {name: [Requirement(r) for r in reqs] for name, reqs in extras.items()}

    def expand(name: str) -> list:
        """The requirement names of extra `name`, with the extras it includes expanded."""
        names = []
        for req in parsed[name]:
            if req.name == "apportion":
                for inner in req.extras:
                    names += expand(inner)
            else:
                names.append(req.name)
        return names

    listed = [req.name for reqs in parsed.values() for req in reqs if req.name != "apportion"]
    # Each package is written in one extra only; the others include that extra.
    assert len(listed) == len(set(listed)), listed
    for name in parsed:
        names = expand(name)
        assert len(names) == len(set(names)), (name, names)
    assert {"ortools", "scipy", "cvxpy", "matplotlib", "pytest", "hypothesis"} <= set(expand("test"))


def test_torch_requirement_admits_the_ci_build():
    from packaging.requirements import Requirement

    (torch_req,) = [Requirement(r) for r in _pyproject()["project"]["optional-dependencies"]["torch"]]
    assert torch_req.specifier.contains("2.13.0")  # .ci/run installs torch==2.13.0


def test_pointers_into_architecture_md_name_its_sections():
    """Docstrings and comments cite docs/architecture.md by section title: each title exists."""
    import re

    headings = {line.lstrip("#").strip() for line in
                (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines()
                if line.startswith("#")}
    cited = []
    for path in sorted((ROOT / "python").rglob("*.py")) + sorted((ROOT / "cpp").glob("*.[ch]pp")):
        # A citation may wrap: join lines, dropping comment markers.
        text = re.sub(r"\s*\n\s*(?://|#)?\s*", " ", path.read_text(encoding="utf-8"))
        cited += [(path.name, m) for m in re.findall(r'docs/architecture\.md,\s*"([^"]+)"', text)]
    assert cited  # torch.py, online.py, retraction.hpp, online.hpp cite it today
    assert [c for c in cited if c[1] not in headings] == []
