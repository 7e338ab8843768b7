"""Regenerates docs/benchmarks.md, every table: `python bench/report.py [--quick]`.

The same generator as `apportion bench` (apportion.benchmark, which lists the options); here
the document goes to docs/benchmarks.md of this checkout unless --out says otherwise.
"""

import os
import sys

from apportion.benchmark import main

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "benchmarks.md")

if __name__ == "__main__":
    sys.exit(main(prog="python bench/report.py", default_out=os.path.relpath(DOC)))
