"""`python -m darts_lit`: the `darts-lit` command line (see darts_lit/cli.py)."""

import sys

from darts_lit.cli import main

if __name__ == "__main__":
    sys.exit(main())
