"""`python -m darts_lit`: the `darts-lit` command line (darts_lit/cli/__init__.py)."""

import sys

from darts_lit.cli import main

if __name__ == "__main__":
    sys.exit(main())
