"""The `darts-lit` command line (also `python -m darts_lit`).

    darts-lit search --dataset digits --epochs 2 --out runs/s1
    darts-lit search --out runs/s1 --resume
    darts-lit <command> --help

Hand-written (not generated from the book), and only the entry point: each command is a
`register_<name>(subparsers)` function in a command module of this package
(`cnn`, `rnn`, `latency`, `fbnet`, `tools`), whose options are generated from the run's
config dataclass (`darts_lit.core.config.add_config_options`) and whose errors are
handled once (`darts_lit.cli.base.run_command`). To add a command, write such a function
and list it in `COMMANDS` below.
"""

import argparse
import os

from darts_lit.cli import cnn as cli_cnn
from darts_lit.cli import fbnet as cli_fbnet
from darts_lit.cli import latency as cli_latency
from darts_lit.cli import rnn as cli_rnn
from darts_lit.cli import tools as cli_tools
from darts_lit.cli.base import fail

COMMANDS = (*cli_cnn.COMMANDS, *cli_latency.COMMANDS, *cli_rnn.COMMANDS,
            *cli_fbnet.COMMANDS, *cli_tools.COMMANDS)
DISTRIBUTED = ("search", "train")  # commands that run data-parallel under torchrun


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
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv=None) -> int:
    """Parse `argv` (default: sys.argv[1:]) and run the command; return exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and args.command not in DISTRIBUTED:
        return fail(f"darts-lit {args.command}", RuntimeError(
            f"this command runs as one process; start it without torchrun (only "
            f"{' and '.join(DISTRIBUTED)} run data-parallel)"))
    try:
        return args.func(args)
    finally:
        from darts_lit.core.distributed import teardown

        teardown()  # leave the process group of a torchrun launch
