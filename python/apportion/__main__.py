"""`python -m apportion`: the `apportion` command line (see `apportion.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
