"""Regenerates docs/benchmarks.md, every table: `python bench/report.py [--quick]`.

The same generator as `apportion bench` (apportion.benchmark, which lists the options), plus
the section of bench/bench_limits.py (`--suite limits`: each solver against the read limit
and the native yardsticks, which need a C++ compiler at bench time). Here the document goes to
docs/benchmarks.md of this checkout unless --out says otherwise.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_limits, beside this file

from apportion.benchmark import main  # noqa: E402
from bench_limits import section as limits_section  # noqa: E402

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "benchmarks.md")

if __name__ == "__main__":
    sys.exit(main(prog="python bench/report.py", default_out=os.path.relpath(DOC),
                  sections={"limits": limits_section}))
