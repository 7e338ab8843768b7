"""The `apportion` command line, end to end in subprocesses, plus in-process checks of the
exit codes that need a patched module."""

import base64
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
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
    assert f"plot: {plot}" in p.stderr.replace("\n", "") and "plot:" not in p.stdout
    for word in ("published setting", "general setting", "difficulty", "consequence",
                 "priority", "lagrangian", "uniform", "268.25", "179.75", "-23.3%", "-33.0%"):
        assert word in p.stdout, word
    assert max(len(line) for line in p.stdout.splitlines()) <= cli.DEMO_WIDTH


def test_demo_bad_plot_path(tmp_path):
    p = run("demo", "--quick", "--plot", str(tmp_path / "nowhere" / "x.png"))
    assert p.returncode == 2 and "does not exist" in one_line(p.stderr)
    p = run("demo", "--quick", "--plot", str(tmp_path / "x.jpg"))
    assert p.returncode == 2 and ".png, .svg, .pdf" in one_line(p.stderr)


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
    assert p.returncode == cli.EXIT_NO_ALLOCATION == 3, p.stderr
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


# --------------------------------------------------------------------------------------------
# solve: stdin, options, output form, --stream (in-process: stdin and stdout patched)


def solve_in_process(monkeypatch, capsys, argv, stdin=b""):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    rc = cli.main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def problem_text(**fields):
    return json.dumps({"values": VALUES, "costs": COSTS, "budget": 6.0, **fields})


def test_solve_reads_stdin_and_writes_one_line(monkeypatch, capsys):
    rc, out, err = solve_in_process(monkeypatch, capsys, ["solve", "-"],
                                    problem_text(id="job-7").encode())
    assert rc == 0, err
    assert out.count("\n") == 1 and out.endswith("\n")
    answer = json.loads(out)
    ref = apportion.solve(VALUES, COSTS, 6.0)
    assert answer["id"] == "job-7" and list(answer)[0] == "id"
    assert answer["choice"] == ref.choice.tolist() and answer["value"] == ref.value
    assert answer == {"id": "job-7", **ref.to_dict(timings=False), "seconds": answer["seconds"]}


def test_solve_reads_npz_from_stdin(monkeypatch, capsys):
    buf = io.BytesIO()
    np.savez(buf, values=np.array(VALUES), costs=np.array(COSTS), budget=np.array(6.0),
             method=np.array("dp"), exact_spend=np.array(True), threads=np.array(1))
    rc, out, err = solve_in_process(monkeypatch, capsys, ["solve", "-"], buf.getvalue())
    assert rc == 0, err
    ref = apportion.solve(VALUES, COSTS, 6.0, method="dp", exact_spend=True)
    assert json.loads(out)["choice"] == ref.choice.tolist() and ref.cost == 6.0


def test_large_answer_is_one_compact_line(monkeypatch, capsys):
    rng = np.random.default_rng(1)
    values = rng.random((2000, 8)).round(3)
    problem = {"values": values.tolist(), "costs": list(range(8)), "budget": 5000}
    rc, out, err = solve_in_process(monkeypatch, capsys, ["solve", "-"], json.dumps(problem).encode())
    assert rc == 0, err
    assert out.count("\n") == 1 and ", " not in out and ": " not in out
    assert len(json.loads(out)["choice"]) == 2000


def test_no_negative_zero_and_no_timings(monkeypatch, capsys):
    # sense "min" on zero losses gives value -0.0 inside; the answer says 0.0
    text = json.dumps({"values": [[0.0, 1.0], [0.0, 2.0]], "costs": [0, 1], "budget": 1,
                       "sense": "min"}).encode()
    rc, first, _ = solve_in_process(monkeypatch, capsys, ["solve", "-", "--no-timings"], text)
    rc2, second, _ = solve_in_process(monkeypatch, capsys, ["solve", "-", "--no-timings"], text)
    assert rc == rc2 == 0 and first == second
    assert "-0.0" not in first and '"seconds"' not in first
    assert json.loads(first)["value"] == 0.0


@pytest.mark.parametrize("fields, flags, expect", [
    (dict(method="dp", cost_resolution=0.5), [], dict(method="dp")),
    (dict(method="dp"), ["--cost-resolution", "0.5"], dict(method="dp")),
    (dict(method="dp", exact_spend=True, cost_resolution=0.5), [], dict(cost=4.5)),
    ({}, ["--method", "dp", "--exact-spend", "--cost-resolution", "0.5"], dict(cost=4.5)),
    (dict(time_limit=5, max_states=1000, threads=1), [], dict(method="exact")),
    ({}, ["--time-limit", "5", "--threads", "1", "--method", "exact"], dict(method="exact")),
    (dict(method="lagrangian"), ["--method", "exact"], dict(method="exact")),  # flag wins
    (dict(sense="min"), [], dict(value=1.0)),
    (dict(sense="max"), ["--sense", "min"], dict(value=1.0)),
    (dict(mask=[True, True, False]), [], dict(value=8.0)),
    ({}, ["--mask", "[true, true, false]"], dict(value=8.0)),
    (dict(time_limit=None, threads=None, mask=None), [], dict(value=13.0)),  # null = default
], ids=lambda x: json.dumps(x)[:40])
def test_options_as_file_fields_and_flags(monkeypatch, capsys, fields, flags, expect):
    costs = [0.0, 1.5, 3.0]
    text = json.dumps({"values": [[0, 5, 6], [1, 3, 8]], "costs": costs, "budget": 4.5,
                       **fields}).encode()
    rc, out, err = solve_in_process(monkeypatch, capsys, ["solve", "-", *flags], text)
    assert rc == 0, err
    answer = json.loads(out)
    assert answer["cost"] <= 4.5
    for key, want in expect.items():
        assert answer[key] == want, (key, answer)


@pytest.mark.parametrize("fields, message", [
    (dict(method="dp"), "cost_resolution"),  # real costs: the error names the field it offers
    (dict(threads=0), "threads"),
    (dict(threads=1.5), "threads"),
    (dict(time_limit=-1, method="exact"), "time_limit"),
    (dict(time_limit=1, method="lagrangian"), "time_limit"),
    (dict(exact_spend="yes", method="dp"), "exact_spend"),
    (dict(cost_resolution=0, method="dp"), "cost_resolution"),
    (dict(mask=[False, False, False]), "mask"),
    (dict(sense=1), "field 'sense' must be a string"),
    (dict(values={"dtype": "float64", "shape": [2, 3], "data": "AAAA"}), "bytes of data"),
    (dict(values={"dtype": "complex128", "shape": [1], "data": ""}), "dtype must be one of"),
    (dict(values={"dtype": "float64", "shape": [-1], "data": ""}), "shape must be"),
    (dict(values={"dtype": "float64", "shape": [1]}), "exactly 'dtype', 'shape' and 'data'"),
])
def test_bad_options_exit_2(monkeypatch, capsys, fields, message):
    text = json.dumps({"values": [[0, 5, 6], [1, 3, 8]], "costs": [0.0, 1.5, 3.0], "budget": 4.5,
                       **fields}).encode()
    rc, out, err = solve_in_process(monkeypatch, capsys, ["solve", "-"], text)
    assert rc == 2 and out == ""
    assert err.startswith("apportion: error: PROBLEM:") and message in err, err


def encoded(x, dtype="float64"):
    arr = np.ascontiguousarray(x, dtype=np.dtype(dtype).newbyteorder("<"))
    return {"dtype": dtype, "shape": list(arr.shape), "data": base64.b64encode(arr.tobytes()).decode()}


def test_encoded_arrays_give_the_same_answers(monkeypatch, capsys):
    rng = np.random.default_rng(2)
    values, costs = rng.random((3, 40, 5)), np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    budget, mask = np.array([1.0, 5.0, 9.0]), rng.random((40, 5)) < 0.9
    mask[:, 0] = True
    plain = {"values": values.tolist(), "costs": costs.tolist(), "budget": budget.tolist(),
             "mask": mask.tolist()}
    packed = {"values": encoded(values), "costs": encoded(costs, "float32"),
              "budget": encoded(budget), "mask": encoded(mask, "bool")}
    outs = []
    for problem in (plain, packed):
        rc, out, err = solve_in_process(monkeypatch, capsys, ["solve", "-", "--no-timings"],
                                        json.dumps(problem).encode())
        assert rc == 0, err
        outs.append(json.loads(out))
    ref = apportion.solve(values, costs, budget, mask=mask)
    assert outs[0]["choice"] == ref.choice.tolist()
    assert outs[1] == outs[0]  # the costs are exact in float32


def test_encoded_arrays_refuse_junk_base64_and_shapes_numpy_cannot_make(monkeypatch, capsys):
    # Found by a fuzzing helper: the lenient decoder skipped junk ("#!*", trailing text) and
    # solved the rest; a shape with a 0 beside dimensions numpy cannot index gave numpy's own
    # message, naming no field. Large integer and longdouble costs are refused (exact_in_float64).
    good = encoded(np.array([[0.0, 5.0]]))
    junk = [good["data"][:4] + "#!*" + good["data"][4:], good["data"] + "garbage", "@@@" + good["data"]]
    for data in junk:
        problem = {"values": dict(good, data=data), "costs": [0, 1], "budget": 1}
        rc, out, err = solve_in_process(monkeypatch, capsys, ["solve", "-"], json.dumps(problem).encode())
        assert rc == 2 and "field 'values': data is not valid base64" in err
    for shape in ([0, 2**62, 2**62], [0, 2**63], [2**40, 2**40, 0]):
        problem = {"values": {"dtype": "float64", "shape": shape, "data": ""}, "costs": [0, 1], "budget": 1}
        rc, out, err = solve_in_process(monkeypatch, capsys, ["solve", "-"], json.dumps(problem).encode())
        assert rc == 2 and f"field 'values': shape {shape} cannot be made" in err
    problem = {"values": [[0, 1]], "costs": [[0, 2**53 + 1]], "budget": 2**53}
    rc, out, err = solve_in_process(monkeypatch, capsys, ["solve", "-"], json.dumps(problem).encode())
    assert rc == 2 and "costs: the integer 9007199254740993 has no exact float64" in err


def test_stream_answers_each_line_in_order(monkeypatch, capsys):
    rng = np.random.default_rng(3)
    problems = [{"values": rng.random((30, 4)).tolist(), "costs": [0, 1, 2, 5],
                 "budget": float(b), "id": i} for i, b in enumerate((10, 40, 0, 70))]
    problems[2]["costs"] = [1, 1, 2, 5]  # budget 0 < 30: infeasible, still answered
    lines = [json.dumps(p) for p in problems]
    lines.insert(2, "")  # blank lines are skipped
    lines.insert(3, '{"values": [[1, 2]], "costs": [0, 1], "budget": 1, "id": "x", "bogus": 1}')
    lines.insert(4, "{not json")
    rc, out, err = solve_in_process(monkeypatch, capsys, ["solve", "--stream", "--no-timings"],
                                    ("\n".join(lines) + "\n").encode())
    assert rc == 0 and err == ""
    answers = [json.loads(line) for line in out.splitlines()]
    assert len(answers) == 6
    assert "unknown field(s) 'bogus'" in answers[2]["error"] and answers[2]["id"] == "x"
    assert "not valid JSON" in answers[3]["error"] and set(answers[3]) == {"error"}
    solved = [a for a in answers if "error" not in a]
    for p, a in zip(problems, solved):
        ref = apportion.solve(np.array(p["values"]), np.array(p["costs"], dtype=float), p["budget"])
        assert a == {"id": p["id"], **ref.to_dict(timings=False)}
    assert solved[2]["status"] == "infeasible"


@pytest.mark.parametrize("bad_id", ["NaN", "[Infinity]", '{"a": -Infinity}'])
def test_an_id_json_cannot_hold_is_refused_and_the_stream_goes_on(monkeypatch, capsys, bad_id):
    # Python's json reads NaN and Infinity, which JSON does not allow: echoed in the answer,
    # such an id made the encoder fail, an internal error that ended the stream (found by a
    # fuzzing helper). It is refused, naming the field; the next line is answered.
    bad = '{"id": %s, "values": [[0, 5, 6], [0, 3, 8]], "costs": [0, 1, 3], "budget": 4}' % bad_id
    rc, out, err = solve_in_process(monkeypatch, capsys, ["solve", "-", "--no-timings"], bad.encode())
    assert rc == 2 and out == "" and "field 'id' holds NaN or Infinity" in err
    good = '{"id": 2, "values": [[0, 5, 6], [0, 3, 8]], "costs": [0, 1, 3], "budget": 4}'
    rc, out, err = solve_in_process(monkeypatch, capsys, ["solve", "--stream", "--no-timings"],
                                    (bad + "\n" + good + "\n").encode())
    answers = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and err == "" and len(answers) == 2
    assert set(answers[0]) == {"error"} and "field 'id'" in answers[0]["error"]
    assert answers[1]["id"] == 2 and answers[1]["value"] == 13.0


def test_stream_applies_the_flags_to_every_line(monkeypatch, capsys):
    text = (problem_text() + "\n") * 3
    rc, out, _ = solve_in_process(monkeypatch, capsys,
                                  ["solve", "--stream", "--method", "lagrangian", "--sense", "min"],
                                  text.encode())
    answers = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and len(answers) == 3
    assert all(a["method"] == "lagrangian" and a["sense"] == "min" for a in answers)


def test_stream_over_a_pipe():
    """The way another program uses it: one process, a line in, a line out, before EOF."""
    proc = subprocess.Popen([sys.executable, "-m", "apportion", "solve", "--stream"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, bufsize=1)
    try:
        for budget in (2.0, 6.0):
            proc.stdin.write(problem_text(budget=budget) + "\n")
            proc.stdin.flush()
            answer = json.loads(proc.stdout.readline())  # answered before stdin closes
            assert answer["value"] == apportion.solve(VALUES, COSTS, budget).value
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("argv, message", [
    (["solve", "--stream", "p.json"], "--stream reads problems from stdin"),
    (["solve", "--stream", "--out", "x.json"], "--out does not apply"),
    (["solve", "-", "--method", "magic"], "invalid choice"),
    (["solve", "-", "--mask", "[true"], "expected a JSON array"),
])
def test_stream_and_flag_misuse_exits_2(monkeypatch, capsys, argv, message):
    rc, out, err = solve_in_process(monkeypatch, capsys, argv, problem_text().encode())
    assert rc == 2 and message in err, err


# --------------------------------------------------------------------------------------------
# the schemas


def test_schemas_ship_and_name_every_field():
    problem, answer = cli.problem_schema(), cli.answer_schema()
    assert set(problem["properties"]) == set(cli.PROBLEM_FIELDS + cli.OPTIONAL_FIELDS)
    assert set(problem["required"]) == set(cli.PROBLEM_FIELDS)
    assert set(problem["properties"]["method"]["enum"]) - {None} == set(apportion.api.METHODS)
    fields = set(apportion.solve(VALUES, COSTS, 6.0).to_dict()) | {"id", "info"}
    assert set(answer["$defs"]["answer"]["properties"]) == fields


def test_problems_and_answers_validate_against_the_schemas(monkeypatch, capsys):
    jsonschema = pytest.importorskip("jsonschema")
    check_problem = jsonschema.Draft202012Validator(cli.problem_schema())
    check_answer = jsonschema.Draft202012Validator(cli.answer_schema())
    rng = np.random.default_rng(4)
    problems = [
        json.loads(problem_text(id=1)),
        {"values": rng.random((2, 5, 3)).tolist(), "costs": [0, 1, 2], "budget": [1, 0.5],
         "sense": "min", "threads": 1},
        {"values": encoded(rng.random((5, 3))), "costs": encoded([1.0, 2, 3]), "budget": 4,
         "method": "exact", "time_limit": 1.5, "max_states": 100},
        {"values": rng.random((5, 3)).tolist(), "costs": rng.random((3, 2)).tolist(),
         "budget": [1.0, 1.0], "method": "mirror"},
        {"values": [[1, 2, 3]], "costs": [0, 1, 2], "budget": 1, "method": "dp",
         "exact_spend": True, "mask": [[True, True, False]], "cost_resolution": 1},
    ]
    text = "".join(json.dumps(p) + "\n" for p in problems) + '{"values": 1}\n'
    for p in problems:
        check_problem.validate(p)
    rc, out, _ = solve_in_process(monkeypatch, capsys, ["solve", "--stream"], text.encode())
    answers = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and len(answers) == len(problems) + 1 and "error" in answers[-1]
    for a in answers:
        check_answer.validate(a)
    assert not check_problem.is_valid({"values": [[1]], "costs": [1], "budget": 1, "x": 1})


# --------------------------------------------------------------------------------------------
# demo


@pytest.fixture(scope="module")
def quick_demo():
    return cli.run_demo(quick=True, seed=0, progress=False)


def test_demo_tables_fit_80_columns(quick_demo):
    from rich.console import Console

    console = Console(width=cli.DEMO_WIDTH, record=True, file=io.StringIO())
    for table in cli.demo_tables(quick_demo):
        console.print(table)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= cli.DEMO_WIDTH
    for word in ("consequence-aware", "priority-aware", "lagrangian", "268.25", "179.75"):
        assert word in text, word


def test_demo_without_matplotlib_prints_the_tables(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    run_demo = cli.run_demo
    monkeypatch.setattr(cli, "run_demo", lambda quick, seed: run_demo(quick, seed, False))
    assert cli.main(["demo", "--quick", "--plot", str(tmp_path / "d.svg")]) == 0
    out, err = capsys.readouterr()
    assert "general setting" in out and 'apportion[plot]' in err
    assert not (tmp_path / "d.svg").exists()


@pytest.mark.parametrize("ext, magic", [(".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_demo_plot_formats(quick_demo, tmp_path, ext, magic):
    pytest.importorskip("matplotlib")
    path = cli.demo_plot(quick_demo, str(tmp_path / f"demo{ext}"))
    with open(path, "rb") as f:
        assert f.read(5).startswith(magic)


def test_demo_default_plot_is_not_in_the_working_folder():
    assert os.path.dirname(cli.DEFAULT_PLOT) == tempfile.gettempdir()
