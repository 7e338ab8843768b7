"""The benchmark generator (apportion.benchmark): how it measures, and that --quick writes the
stamped document. No timing is asserted: only counts, labels and the document's structure."""

import os

import pytest

from apportion import benchmark


class Counted:
    """A call that counts itself and returns its call number."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.calls


def test_measure_warms_up_untimed_then_times_at_least_repeats():
    call = Counted()
    t = benchmark.measure(call, repeats=3, min_time=0.0)
    assert call.calls == 4 and t.calls == 3  # one untimed warm-up call, three timed
    assert t.answer == 4 and not t.limited
    assert 0 <= t.cpu and 0 <= t.wall


def test_measure_takes_the_median_of_the_solvers_own_times():
    call = Counted()
    own = {2: 5.0, 3: 1.0, 4: 3.0, 5: 100.0, 6: 2.0}  # call number -> reported seconds
    t = benchmark.measure(call, repeats=5, min_time=0.0, own_time=lambda n: {"wall": own[n]})
    assert t.calls == 5 and t.own == {"wall": 3.0}


def test_measure_does_not_repeat_a_call_that_hit_the_limit():
    call = Counted()
    t = benchmark.measure(call, repeats=3, min_time=0.0, hit_limit=lambda n: n >= 2)
    assert call.calls == 2 and t.calls == 1 and t.limited


def test_measure_stops_at_max_calls(monkeypatch):
    monkeypatch.setattr(benchmark, "MAX_CALLS", 7)
    call = Counted()
    t = benchmark.measure(call, repeats=3, min_time=1e9)
    assert t.calls == 7 and call.calls == 8


@pytest.mark.parametrize("option", [["--peers", "foo"], ["--methods", "bogus"],
                                    ["--peers", "milp,nope"], ["--instances", "0"],
                                    ["--repeats", "0"], ["--peer-limit", "0"],
                                    ["--out", "/nonexistent/folder/x.md"]])  # (before the run: it exited 1 after it)
def test_bad_options_exit_2(option, capsys):
    with pytest.raises(SystemExit) as exc:
        benchmark.main(["--quick", *option])
    assert exc.value.code == 2
    assert option[0] in capsys.readouterr().err


TINY = {
    "lagrangian": [benchmark.Case("routing", 12, 3),
                   benchmark.Case("routing", 12, 3, batch=5, peers=("milp",))],
    "exact": [benchmark.Case("weakly", 12, 3, R=50, ours=("exact", "dp"),
                             peers=("cpsat", "milp"), threads=1)],
    "grid": [benchmark.Case("strongly", 12, 3, R=50, ours=("exact",), peers=(), threads=1)],
    "threads": [benchmark.Case("uncorrelated", 12, 3, batch=4, ours=("exact",), peers=(),
                               threads=t) for t in (1, 2)],
}


def test_quick_run_writes_the_stamped_document(tmp_path, monkeypatch, capsys):
    pytest.importorskip("ortools")
    pytest.importorskip("scipy")
    pytest.importorskip("cvxpy")
    for name, cases in TINY.items():
        monkeypatch.setitem(benchmark.QUICK, name, cases)
    out = tmp_path / "benchmarks.md"
    argv = ["--quick", "--repeats", "1", "--min-time", "0", "--out", str(out), "--note", "tiny"]
    assert benchmark.main(argv) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out
    for field in ("- Date: ", "- CPU: ", "logical CPUs", "default thread count", "- Software: ",
                  "- Note: tiny"):
        assert field in text
    assert ("- Load average (1 min) at the start and the end" in text) == hasattr(os, "getloadavg")
    assert "- Command: `apportion bench --quick --repeats 1 --min-time 0 --out " in text
    for suite in benchmark.SUITES.values():
        assert f"## {suite.title}" in text
    lines = text.splitlines()
    row = lines.index(next(l for l in lines if l.startswith("| routing N=12,K=3 |")))
    assert [l.split("|")[2].strip() for l in lines[row:row + 4]] == ["lagrangian", "cpsat",
                                                                     "milp", "lp"]
    cpsat = lines[row + 1].split("|")
    assert "(wall)" in cpsat[5] and "(user)" in cpsat[5]  # CP-SAT's own clocks
    assert lines[row + 2].split("|")[5].strip() == ""  # scipy's milp reports none
    batch = next(l for l in lines if l.startswith("|  | milp | est. ")).split("|")
    assert "(5 x " in batch[3] and batch[4].strip().startswith("est. ")
    assert batch[6].strip().startswith("est. ")  # the ratio is an estimate too
    assert "DISAGREE" not in text and "n/a" not in text
    assert "| weakly N=12,K=3,R=50, 1 thread | exact |" in text
    assert "| uncorrelated N=12,K=3,B=4,R=1000, 2 threads | exact |" in text


# -- sections added by the caller (bench/report.py adds bench/bench_limits.py's) --------------

def _bench_limits():
    """bench/bench_limits.py of this checkout, imported by path (bench/ is not a package)."""
    import importlib.util
    import sys

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                        "bench_limits.py")
    spec = importlib.util.spec_from_file_location("bench_limits_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_extra_sections_run_with_their_suite_or_all(tmp_path, capsys):
    seen = []

    def limits(quick):
        seen.append(quick)
        return "## Limits\n\nmeasured\n"

    out = tmp_path / "doc.md"
    argv = ["--quick", "--suite", "limits", "--out", str(out)]
    assert benchmark.main(argv, sections={"limits": limits}) == 0
    text = out.read_text()
    assert seen == [True] and text.endswith("## Limits\n\nmeasured\n")
    assert not any(f"## {s.title}" in text for s in benchmark.SUITES.values())
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # without the section, --suite limits is unknown
        benchmark.main(["--suite", "limits"])
    assert exc.value.code == 2


def test_limits_section_says_so_without_a_compiler(monkeypatch):
    limits = _bench_limits()
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    text = limits.section(quick=True)
    assert text.startswith(limits.SECTION_TITLE) and "Not measured: no C++ compiler" in text


def test_limits_section_tiny_run_checks_the_yardsticks(monkeypatch):
    limits = _bench_limits()
    if limits.native().lib is None:
        pytest.skip(limits.native().reason)
    tiny = limits.Sizes(routing_large=2000, batch=3, online_requests=3000, runs=1, min_run=0.0)
    monkeypatch.setattr(limits, "QUICK", tiny)
    text = limits.section(quick=True)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + 10  # the header and every case
    assert f"| lagrangian routing 1000 x 8 f64, {limits.TURNS} instances in turn, 1 thread |" in text
    assert f"| lagrangian routing 2e3 x 8 f32, mean of seeds 0-{limits.TURNS - 1}, 1 thread |" in text
    assert "| dp 300 x 4, 8001 cells, 1 thread |" in text and "(dp_loop)" in text
    assert text.count("(online_loop)") == 2 and "ns/decision" in text
