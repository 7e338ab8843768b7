"""The `apportion` command line, end to end in subprocesses, plus in-process checks of the
exit codes that need a patched module."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import apportion
from apportion import cli

VALUES = [[0.0, 5.0, 6.0], [0.0, 3.0, 8.0], [1.0, 2.0, 9.0], [0.0, 4.0, 4.5]]
COSTS = [0.0, 1.0, 3.0]


def run(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("APPORTION_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "apportion", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def one_line(stderr):
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_demo_writes_its_plot(tmp_path):
    plot = tmp_path / "demo.png"
    p = run("demo", "--quick", "--plot", str(plot))
    assert p.returncode == 0, p.stderr
    assert plot.is_file() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {plot}" in p.stdout.replace("\n", "")
    for word in ("published setting", "general setting", "difficulty", "consequence",
                 "priority", "uniform", "268.25", "179.75"):
        assert word in p.stdout, word


def test_demo_bad_plot_path(tmp_path):
    p = run("demo", "--quick", "--plot", str(tmp_path / "nowhere" / "x.png"))
    assert p.returncode == 2 and "does not exist" in one_line(p.stderr)
    p = run("demo", "--quick", "--plot", str(tmp_path / "x.jpg"))
    assert p.returncode == 2 and ".png" in one_line(p.stderr)


def test_solve_json_round_trip(tmp_path):
    problem = tmp_path / "p.json"
    problem.write_text(json.dumps({"values": VALUES, "costs": COSTS, "budget": 6.0}))
    out = tmp_path / "sol.json"
    p = run("solve", str(problem), "--out", str(out))
    assert p.returncode == 0, p.stderr
    sol = json.loads(out.read_text())
    ref = apportion.solve(VALUES, COSTS, 6.0)
    assert sol["choice"] == ref.choice.tolist() and sol["value"] == ref.value
    assert sol["status"] == "optimal" and sol["cost"] <= 6.0
    assert set(sol) >= {"bound", "gap", "shadow_price", "min_budget", "method", "seconds"}
    # stdout, the same answer
    p = run("solve", str(problem))
    assert p.returncode == 0 and json.loads(p.stdout)["choice"] == sol["choice"]


def test_solve_npz_batch_with_mask_and_sense(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.random((3, 5, 4))
    costs = np.array([0.0, 1.0, 2.0, 4.0])
    budget = np.array([3.0, 6.0, 0.0])
    mask = rng.random((3, 5, 4)) < 0.8
    mask[..., 0] = True
    problem = tmp_path / "p.npz"
    np.savez(problem, values=values, costs=costs, budget=budget, mask=mask, sense=np.array("min"))
    p = run("solve", str(problem))
    assert p.returncode == 0, p.stderr
    sol = json.loads(p.stdout)
    ref = apportion.solve(values, costs, budget, mask=mask, sense="min")
    assert sol["choice"] == ref.choice.tolist() and sol["sense"] == "min"
    np.testing.assert_allclose(sol["value"], ref.value)


def test_solve_infeasible_is_valid_json(tmp_path):
    problem = tmp_path / "p.json"
    problem.write_text(json.dumps({"values": VALUES, "costs": [1.0, 2.0, 3.0], "budget": 1.0}))
    p = run("solve", str(problem))
    assert p.returncode == 0, p.stderr
    sol = json.loads(p.stdout)
    assert sol["status"] == "infeasible" and sol["bound"] is None and sol["min_budget"] == 4.0


@pytest.mark.parametrize("name, content, message", [
    ("missing.json", None, "no such file"),
    ("p.txt", "{}", "expected a .json or .npz file"),
    ("p.json", "{not json", "is not valid JSON"),
    ("p.json", "[1, 2]", "must hold a JSON object"),
    ("p.json", json.dumps({"values": VALUES, "budget": 6}), "missing field(s) 'costs'"),
    ("p.json", json.dumps({"values": VALUES, "costs": COSTS}), "missing field(s) 'budget'"),
    ("p.json", json.dumps({"values": VALUES, "costs": COSTS, "budget": 6, "cost": 1}),
     "unknown field(s) 'cost'"),
    ("p.json", json.dumps({"values": VALUES, "costs": [1.0, 2.0], "budget": 6}), "costs: shape"),
    ("p.json", json.dumps({"values": VALUES, "costs": [-1.0, 1, 2], "budget": 6}), "costs"),
    ("p.json", json.dumps({"values": [[1, 2], [3]], "costs": [1, 2], "budget": 6}), "values"),
    ("p.json", json.dumps({"values": VALUES, "costs": COSTS, "budget": "6"}), "budget"),
    ("p.json", json.dumps({"values": VALUES, "costs": COSTS, "budget": 6, "method": "magic"}),
     "method"),
    ("p.npz", b"not a zip", "not a readable .npz"),
])
def test_solve_bad_input_exits_2(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    p = run("solve", str(path))
    assert p.returncode == 2, (p.stdout, p.stderr)
    line = one_line(p.stderr)
    assert line.startswith("apportion: error:") and message in line, line
    assert p.stdout == ""


@pytest.mark.parametrize("content, message", [
    # exit 1 ("internal error") before: OverflowError, RecursionError
    ('{"values": %s, "costs": [0, 1, 3], "budget": %s}' % (json.dumps(VALUES), "9" * 400),
     "budget: the number is too large"),
    ('{"values": %s, "costs": [0, 1, 3], "budget": %s}' % (json.dumps(VALUES), "9" * 5000),
     "is not valid JSON"),  # past Python's limit on digits of an int
    ('{"values": ' + "[" * 100_000 + "]" * 100_000 + ', "costs": [0], "budget": 1}',
     "nested too deeply"),
    ('{"values": [[0, %s]], "costs": [0, 1], "budget": 1}' % ("9" * 400), "values: a number is "
     "too large"),
    (json.dumps({"values": VALUES, "costs": COSTS, "budget": True}), "budget: expected numbers"),
    (json.dumps({"values": 5, "costs": [[0]], "budget": [1], "method": "mirror"}),
     "values: expected shape"),
], ids=["budget-400-digits", "budget-5000-digits", "nested-100000", "values-400-digits",
        "budget-bool", "mirror-scalar-values"])  # short ids: PYTEST_CURRENT_TEST goes to the child
def test_solve_bad_numbers_exit_2(tmp_path, content, message):
    path = tmp_path / "p.json"
    path.write_text(content)
    p = run("solve", str(path))
    assert p.returncode == 2, (p.stdout, p.stderr)
    line = one_line(p.stderr)
    assert line.startswith("apportion: error: PROBLEM:") and message in line, line


def test_unreadable_problem_exits_2(tmp_path, monkeypatch, capsys):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"values": VALUES, "costs": COSTS, "budget": 6.0}))

    def no_access(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli, "open", no_access, raising=False)  # exit 1 before
    assert cli.main(["solve", str(path)]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("seed", ["-5", "x"])
def test_demo_bad_seed_exits_2(seed, capsys):
    # -5: numpy's ValueError from default_rng, exit 1, before
    assert cli.main(["demo", "--quick", "--no-plot", "--seed", seed]) == 2
    err = capsys.readouterr().err
    assert "--seed" in err and "integer >= 0" in err


def test_npz_missing_field(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, values=np.ones((2, 2)), budget=np.array(1.0))
    p = run("solve", str(path))
    assert p.returncode == 2 and "missing field(s) 'costs'" in one_line(p.stderr)


@pytest.mark.parametrize("args, message", [
    ((), "a command is needed"),
    (("frobnicate",), "invalid choice"),
    (("solve",), "PROBLEM"),
    (("demo", "--bogus"), "unrecognized arguments"),
])
def test_bad_usage_exits_2(args, message):
    p = run(*args)
    assert p.returncode == 2
    assert message in p.stderr.strip().splitlines()[-1]


def test_version_and_help():
    p = run("--version")
    assert p.returncode == 0 and p.stdout.startswith("apportion ")
    p = run("--help")
    assert p.returncode == 0 and "demo" in p.stdout and "solve" in p.stdout


def test_console_script_installed():
    script = os.path.join(os.path.dirname(sys.executable), "apportion")
    if not os.path.exists(script):
        pytest.skip("the apportion console script is not next to this interpreter")
    p = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "apportion" in p.stdout


def test_bench_compares_with_a_peer_end_to_end(tmp_path):
    out = tmp_path / "bench.md"
    p = run("bench", "--suite", "lagrangian", "--quick", "--instances", "1", "--peers", "milp",
            "--peer-limit", "30", "--repeats", "1", "--min-time", "0", "--out", str(out))
    assert p.returncode == 0, p.stderr
    table = out.read_text()
    assert "| routing N=300,K=4 | lagrangian |" in table and "| milp |" in table
    assert "DISAGREE" not in table


def test_bench_bad_option_exits_2():
    p = run("bench", "--instances", "0")
    assert p.returncode == 2


def test_bench_passes_its_arguments_on(monkeypatch):
    seen = {}

    def fake_main(argv):
        seen["argv"] = argv
        return 3

    monkeypatch.setitem(sys.modules, "apportion.benchmark",
                        types.SimpleNamespace(main=fake_main))
    assert cli.main(["bench", "--quick", "-k", "x"]) == 3
    assert seen["argv"] == ["--quick", "-k", "x"]


def test_internal_error_exits_1(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("kaput")

    monkeypatch.setitem(cli.COMMANDS, "example", boom)
    monkeypatch.delenv("APPORTION_DEBUG", raising=False)
    assert cli.main(["example"]) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: kaput" in err


def test_example_runs(capsys):
    assert cli.main(["example"]) == 0
    assert "relative gap" in capsys.readouterr().out
