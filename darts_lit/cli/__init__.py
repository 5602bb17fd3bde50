"""The `darts-lit` command line (also `python -m darts_lit`).

    darts-lit search --dataset digits --epochs 2 --out runs/s1
    darts-lit search --out runs/s1 --resume
    darts-lit <command> --help

Hand-written (not generated from the book), and only the entry point. The commands
that run something (`search`, `train`, `search-rnn`, `train-rnn`, `search-fbnet`,
`train-fbnet`, and any kind a chapter adds) come from the registry of kinds of run
(`darts_lit.core.loop.KINDS`), one command per kind, built by
`darts_lit.cli.base.add_kind_command`; a new kind needs nothing here. The other
commands are `register_<name>(subparsers)` functions of `latency` and `tools`, listed
in `COMMANDS` below. Errors are handled once (`darts_lit.cli.base.run_command`).
"""

import argparse
import os
import sys

from darts_lit.cli import latency as cli_latency
from darts_lit.cli import tools as cli_tools
from darts_lit.cli.base import add_kind_command, fail

COMMANDS = (*cli_tools.COMMANDS, *cli_latency.COMMANDS)  # besides the kinds of run


def kinds() -> dict:
    """The registry of kinds of run, filled by the chapters' modules."""
    import darts_lit  # noqa: F401  (imports every chapter that registers a kind)
    from darts_lit.core.loop import KINDS

    return KINDS


def build_parser() -> argparse.ArgumentParser:
    """The `darts-lit` parser with every registered subcommand."""
    from darts_lit import __version__

    parser = argparse.ArgumentParser(
        prog="darts-lit",
        description="DARTS (Liu et al., ICLR 2019), literate and tested. "
        "Run `darts-lit <command> --help` for the options of a command.")
    parser.add_argument("--version", action="version",
                        version=f"darts_lit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="command")
    for kind in kinds().values():
        add_kind_command(subparsers, kind)
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv=None) -> int:
    """Parse `argv` (default: sys.argv[1:]) and run the command; return exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # what a bug report shows
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    parallel = [n for n, kind in kinds().items() if kind.data_parallel is None]
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and args.command not in parallel:
        kind = kinds().get(args.command)
        why = f": {kind.data_parallel}" if kind is not None else ""
        return fail(f"darts-lit {args.command}", RuntimeError(
            f"this command runs as one process{why}; start it without torchrun "
            f"(only {' and '.join(parallel)} run data-parallel)"))
    try:
        return args.func(args)
    finally:
        from darts_lit.core.distributed import teardown

        teardown()  # leave the process group of a torchrun launch
