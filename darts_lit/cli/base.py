"""What every `darts-lit` command shares: its error handling and its run options.

Hand-written (not generated from the book). A command module (`cli_cnn`, `cli_rnn`,
`cli_latency`) defines `register_<name>(subparsers)` functions that add a parser built
from a config dataclass (`darts_lit.core.config.add_config_options`) and set `func`;
`darts_lit.cli` lists them. Nothing here imports `darts_lit.cli`, so there is no import
circle. Heavy modules (torch, matplotlib, the book's modules) are imported inside the
functions, so that `darts-lit --help` stays fast.
"""

import argparse
import shlex
import sys
import time
from dataclasses import fields
from pathlib import Path

def fail(prog: str, err: BaseException) -> int:
    """Print an error the way argparse does and return exit status 1."""
    print(f"{prog}: error: {err}", file=sys.stderr)
    return 1


def user_errors() -> tuple:
    """The exceptions that are a user's mistake or a bad input: one line, no trace."""
    from darts_lit.core.utils import CheckpointError, NonFiniteLossError

    # ValueError: ConfigError, RunError, GenotypeError, DataError, a bad value;
    # OSError: DataNotFoundError, a missing or unreadable file
    return (ValueError, OSError, CheckpointError, NonFiniteLossError)


def run_command(prog: str, body, args) -> int:
    """`body(args)` with messages in the command line's words; errors → status 1."""
    from darts_lit.core.config import cli_spelling

    with cli_spelling():
        try:
            return body(args)
        except user_errors() as e:
            return fail(prog, e)
        except KeyboardInterrupt:  # Ctrl-C: where the run stands, not a traceback
            return interrupted(prog, getattr(args, "run_folder", None))


def interrupted(prog: str, folder) -> int:
    """Say what an interrupted command left behind; exit status 130 (SIGINT)."""
    from darts_lit.core import runs

    if folder is None:
        print(f"{prog}: interrupted", file=sys.stderr)
    elif (Path(folder) / runs.CHECKPOINT).is_file():  # written atomically, per epoch
        print(f"{prog}: interrupted; {folder} holds the run up to its last finished "
              f"epoch: continue it with `{prog} --out {shlex.quote(str(folder))} "
              "--resume`", file=sys.stderr)
    else:
        print(f"{prog}: interrupted before the first epoch ended; there is no "
              "checkpoint to continue from: start the run again", file=sys.stderr)
    return 130


def int_at_least(low: int):
    """An argparse type: an integer ≥ `low` (the message names the range)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be an integer ≥ {low}, got "
                                             f"{text!r}")
        return value

    return parse


positive_int = int_at_least(1)


def add_run_extras(p) -> None:
    """`--stop-after` and `--quiet`: how a command runs, not what it computes."""
    run = next(g for g in p._action_groups if g.title == "run")
    run.add_argument("--stop-after", type=positive_int, default=None, metavar="EPOCHS",
                     help="stop (with a checkpoint) once this many epochs are done; "
                     "continue later with --resume")
    run.add_argument("--quiet", action="store_true", help="no per-epoch lines")


def config_from_cli(cls, args, kind: str, base=None):
    """The config of a command: defaults (or, with --resume, the saved run's
    settings), then the options typed on the command line."""
    from darts_lit.core import runs
    from darts_lit.core.config import config_from_args, validate

    out = getattr(args, "out_dir", None)
    path = Path(out or ".") / runs.CHECKPOINT
    if getattr(args, "resume", False) and out is not None and path.is_file():
        saved = runs.read_checkpoint(path, kind)["config"]
        names = {f.name for f in fields(cls)}
        base = cls(**{k: v for k, v in saved.items() if k in names})
    config = config_from_args(cls, args, base)
    if getattr(args, "quiet", False):
        config.verbose = False
    if config.out_dir is None and not config.resume:  # runs.open_run refuses resume
        config.out_dir = str(Path("runs") / time.strftime(f"{kind}-%Y%m%d-%H%M%S"))
    config = validate(config)
    args.run_folder = config.out_dir  # what an interruption reports (run_command)
    return config


def add_run_command(subparsers, name: str, cls, run, help: str, description: str):
    """A command whose options are the fields of config class `cls`; `run(args)`."""
    from darts_lit.core.config import add_config_options

    p = subparsers.add_parser(name, help=help, description=description)
    add_config_options(p, cls)
    add_run_extras(p)
    p.set_defaults(func=lambda args: run_command(f"darts-lit {name}", run, args))
    return p
