"""What every `darts-lit` command shares: error handling, run options, and the one
builder of the commands that run a kind of run.

Hand-written (not generated from the book). Each kind of run (`search`, `train`,
`search-rnn`, ...) is described once, by its chapter, in the registry
`darts_lit.core.loop.KINDS`: its settings class, `help`, `description`, extra options,
what it prints at the end. `add_kind_command` turns one such description into a
command (options generated from the settings class by
`darts_lit.core.config.add_config_options`), and `run_kind` runs it through the loop
(`darts_lit.core.loop.fit`); errors are handled once (`run_command`). The other
commands (`test`, `plot`, `export`, `latency`) are `register_<name>(subparsers)`
functions in `tools` and `latency`. Nothing here imports `darts_lit.cli`, so there is
no import circle. Heavy modules are imported inside the functions.
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


BUG_STATUS = 70  # sysexits' EX_SOFTWARE: an internal error, not the user's


def user_errors() -> tuple:
    """The exceptions that are a user's mistake or a bad input: one line, no trace.
    `UserError`: every error of darts_lit for a mistake in a setting, a file, a folder
    or the data; `OSError`: what the system says of a file or folder (missing, not
    readable, disk full), which the user fixes too. Anything else is a bug."""
    from darts_lit.core.data import UserError

    return (UserError, OSError)


def run_command(prog: str, body, args) -> int:
    """`body(args)` with messages in the command line's words; a user's error →
    status 1 and one line; Ctrl-C → 130; anything else is a bug → `BUG_STATUS`."""
    from darts_lit.core.config import cli_spelling

    with cli_spelling():
        try:
            return body(args)
        except user_errors() as e:
            return fail(prog, e)
        except KeyboardInterrupt:  # Ctrl-C: where the run stands, not a traceback
            return interrupted(prog, getattr(args, "run_folder", None))
        except Exception as e:  # noqa: BLE001  (a bug: said so, traceback kept)
            return bug(prog, e, args)


def bug(prog: str, err: Exception, args) -> int:
    """Report an internal error: one line that says it is a bug in darts_lit, the
    traceback in a file, what the run folder still holds; exit status `BUG_STATUS`."""
    folder, argv = getattr(args, "run_folder", None), getattr(args, "argv", None)
    import tempfile
    import traceback

    from darts_lit import __version__
    from darts_lit.core import runs

    command = " ".join(map(shlex.quote, sys.argv[1:] if argv is None else argv))
    text = (f"darts-lit {command}\n"
            f"darts_lit {__version__}, Python {sys.version.split()[0]}\n\n"
            + "".join(traceback.format_exception(err)))
    fd, path = tempfile.mkstemp(prefix="darts-lit-bug-", suffix=".txt")
    with open(fd, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"{prog}: this is a bug in darts_lit, not a mistake in your input "
          f"({type(err).__name__}: {err}). The traceback is in {path}: please "
          "report the bug to darts_lit's maintainers with that file, which starts "
          "with the command that failed.", file=sys.stderr)
    if folder is not None and (Path(folder) / runs.CHECKPOINT).is_file():
        print(f"{prog}: {folder} holds the run up to its last finished epoch: once "
              f"fixed, continue it with `{prog} --out {shlex.quote(str(folder))} "
              "--resume`", file=sys.stderr)
    return BUG_STATUS


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


def add_kind_command(subparsers, kind) -> argparse.ArgumentParser:
    """The command of a kind of run (a `RunKind` of the registry): its options are the
    fields of its settings class, plus `--stop-after`, `--quiet` and its own."""
    from darts_lit.core.config import add_config_options

    p = subparsers.add_parser(kind.name, help=kind.help, description=kind.description)
    add_config_options(p, kind.config_class)
    add_run_extras(p)
    if kind.options is not None:
        kind.options(p)
    p.set_defaults(func=lambda args: run_command(
        f"darts-lit {kind.name}", lambda a: run_kind(kind, a), args))
    return p


def run_kind(kind, args) -> int:
    """Run `kind` with the parsed `args` through the loop (under torchrun too, when
    the kind has a data-parallel form): figures and the kind's report at the end."""
    import matplotlib

    matplotlib.use("Agg")
    from darts_lit.core import distributed, runs
    from darts_lit.core.loop import draw_plots, fit

    base = kind.defaults(args) if kind.defaults is not None else None
    config = config_from_cli(kind.config_class, args, kind.name, base)
    distributed.init_from_env(config.device)  # under torchrun: join the group
    config.out_dir = distributed.broadcast_object(config.out_dir)  # rank 0 names it
    result = fit(kind, config, stop_after_epoch=args.stop_after)
    if not distributed.is_main():
        return 0
    if result.out_dir is not None and result.history:
        state = runs.read_checkpoint(result.out_dir / runs.CHECKPOINT, kind.name)
        draw_plots(state, result.out_dir)
    for line in kind.report(result):
        print(line)
    return 0
