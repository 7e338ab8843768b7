"""Prints the peer comparison as a markdown table: `python bench/report.py --suite all`.
The same as `apportion bench`; see apportion.benchmark for the options."""

import sys

from apportion.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
