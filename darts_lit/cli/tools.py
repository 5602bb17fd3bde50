"""`darts-lit test`, `plot` and `export`: what comes after a run.

    darts-lit test --checkpoint runs/train/checkpoint.pt
    darts-lit plot runs/search --format svg
    darts-lit plot --genotype DARTS_V2 --out darts_v2.pdf
    darts-lit export --checkpoint runs/train/checkpoint.pt --out exported/net

Hand-written (not generated from the book); listed by `darts_lit.cli`. Each reads the
registry of kinds of run (`darts_lit.core.loop.KINDS`) instead of naming kinds: `test`
runs the `evaluate` of the kind that wrote the checkpoint, `plot` its figures,
`export` its `load_network`. What `plot` and `export` do is explained in the chapter
*After the run* (`darts_lit.cli.outputs`).
"""

from pathlib import Path

from darts_lit.cli.base import run_command
from darts_lit.core.data import UserError

def _kinds_with(attribute: str) -> list[str]:
    """The names of the kinds of run whose description has `attribute`."""
    import darts_lit  # noqa: F401  (the chapters that register the kinds)
    from darts_lit.core.loop import KINDS

    return [name for name, kind in KINDS.items() if getattr(kind, attribute, None)]


def register_test(subparsers) -> None:
    """`darts-lit test`: test accuracy of a trained network's checkpoint."""
    testable = " or ".join(f"`darts-lit {k}`" for k in _kinds_with("evaluate"))
    p = subparsers.add_parser(
        "test", help="test accuracy of a trained network's checkpoint",
        description=f"Rebuild the network saved by {testable} and print its top-1 "
        "(and top-5) accuracy on the test split of its data set.")
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help=f"checkpoint.pt in a {testable} run folder")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="folder holding the data set (default: the one used in "
                   "training, else $DARTS_DATA)")
    p.add_argument("--device", default="auto",
                   help="'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'")
    p.set_defaults(func=lambda args: run_command("darts-lit test", run_test, args))


def run_test(args) -> int:
    """Run `darts-lit test` with the parsed `args`; return the exit status."""
    from darts_lit.core.loop import KINDS
    from darts_lit.core.runs import read_checkpoint
    from darts_lit.core.utils import resolve_device
    from darts_lit.evaluation.train import format_test_result

    try:
        resolve_device(args.device)
    except RuntimeError as e:
        raise UserError(f"--device: {str(e).split(';')[0]}") from None
    testable = _kinds_with("evaluate")
    if not Path(args.checkpoint).is_file():
        named = " or ".join(f"`darts-lit {k}`" for k in testable)
        raise FileNotFoundError(f"--checkpoint: no checkpoint at {args.checkpoint}; "
                                f"give the checkpoint.pt of a {named} run folder")
    whole = ("Test the checkpoint.pt of a run that wrote it whole (darts_lit replaces "
             "it atomically after every epoch).")
    kind = KINDS[read_checkpoint(args.checkpoint, testable, advice=whole)["kind"]]
    res = kind.evaluate(args.checkpoint, data_dir=args.data_dir, device=args.device,
                        verbose=False)
    print(format_test_result(res))
    return 0


def register_plot(subparsers) -> None:
    """`darts-lit plot`: redraw a run folder's figures, or draw a genotype."""
    p = subparsers.add_parser(
        "plot", help="redraw a run folder's figures, or draw a genotype",
        description="Draw every figure of a run folder again from its checkpoint "
        "(search, train, search-rnn, train-rnn, search-fbnet), or draw one genotype "
        "(a reference name or a genotype file) into --out; the suffix of --out "
        "(.png, .svg, .pdf) sets the format.")
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR",
                   help="a run folder holding checkpoint.pt")
    p.add_argument("--format", default="png", choices=("png", "svg", "pdf"),
                   help="format of the redrawn run figures (default: png)")
    p.add_argument("--genotype", metavar="NAME|FILE",
                   help="draw this genotype instead of a run folder: a reference "
                   "name (DARTS_V2, ...) or a genotype file, convolutional or "
                   "recurrent")
    p.add_argument("--out", metavar="FILE",
                   help="with --genotype: the picture to write, e.g. cell.svg")
    p.add_argument("--recurrent", action="store_true",
                   help="with --genotype: a recurrent cell (DARTS, DARTS_V1 and "
                   "DARTS_V2 name a convolutional and a recurrent cell; without this "
                   "flag, the convolutional one)")
    p.set_defaults(func=lambda args: run_command("darts-lit plot", run_plot, args))


def _any_genotype(text: str, recurrent: bool = False):
    """A convolutional genotype, else a recurrent one, from a name or a file (only a
    recurrent one with `recurrent`)."""
    from darts_lit.cnn.genotypes import GenotypeError, resolve_genotype
    from darts_lit.rnn.model import resolve_rnn_genotype

    if recurrent:
        return resolve_rnn_genotype(text)
    try:
        return resolve_genotype(text)
    except (GenotypeError, ValueError) as cnn_error:
        try:
            return resolve_rnn_genotype(text)
        except (GenotypeError, ValueError):
            raise cnn_error from None


def run_plot(args) -> int:
    """Run `darts-lit plot`; return the exit status."""
    import matplotlib

    matplotlib.use("Agg")
    from darts_lit.cli import outputs
    from darts_lit.core.runs import save_figure, unwritable

    if args.genotype is None:
        if args.run_dir is None or args.out is not None:
            raise UserError("give a RUN_DIR to redraw, or --genotype NAME|FILE with "
                            "--out FILE to draw a genotype")
        for path in outputs.redraw_run(args.run_dir, args.format):
            print(path)
        return 0
    if args.run_dir is not None or args.out is None:
        raise UserError("--genotype draws one genotype into --out FILE (.png, .svg or "
                        ".pdf); give no RUN_DIR with it")
    suffix = Path(args.out).suffix.lstrip(".").lower()
    if suffix not in outputs.FORMATS:
        raise UserError(f"--out: the file name must end in .png, .svg or .pdf, got "
                        f"{args.out}")
    if problem := unwritable(Path(args.out).parent):  # before the drawing
        raise UserError(f"--out: {problem}")
    genotype = _any_genotype(args.genotype, args.recurrent)
    print(save_figure(outputs.plot_genotype(genotype, title=args.genotype), args.out))
    return 0


def register_export(subparsers) -> None:
    """`darts-lit export`: a trained network to TorchScript, torch.export and ONNX."""
    from darts_lit.cli.outputs import EXPORT_FORMATS

    p = subparsers.add_parser(
        "export", help="export a trained network (TorchScript, torch.export, ONNX)",
        description="Export the network of a `darts-lit train` or `train-fbnet` "
        "checkpoint: "
        "TorchScript (.torchscript.pt), torch.export (.pt2) and, with the onnx "
        "packages installed (pip install 'darts_lit[export]'), ONNX (.onnx). Each "
        "file is loaded back, checked to compute what the eager network computes on "
        "a random batch, and timed on this machine's CPU.")
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="checkpoint.pt of a `darts-lit train` or `train-fbnet` run")
    p.add_argument("--out", required=True, metavar="PREFIX",
                   help="file name prefix: writes PREFIX.torchscript.pt, PREFIX.pt2, "
                   "PREFIX.onnx")
    p.add_argument("--formats", nargs="+", choices=EXPORT_FORMATS, default=None,
                   help="formats to write (default: all, onnx when installed)")
    p.add_argument("--batch-size", type=int, default=1, metavar="N",
                   help="batch of the check and the timing (default 1, what a phone "
                   "sees)")
    p.set_defaults(func=lambda args: run_command("darts-lit export", run_export, args))


def run_export(args) -> int:
    """Run `darts-lit export`; return the exit status."""
    from darts_lit.cli import outputs
    from darts_lit.core.runs import unwritable

    if args.batch_size < 1:
        raise UserError(f"--batch-size: must be an integer ≥ 1, got {args.batch_size}")
    if not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"--checkpoint: no checkpoint at {args.checkpoint}; "
                                "give the checkpoint.pt of a `darts-lit train` or "
                                "`train-fbnet` run folder")
    if problem := unwritable(Path(args.out).parent):  # before the network is built
        raise UserError(f"--out: {problem}")
    formats = args.formats
    if formats is None:
        formats = [f for f in outputs.EXPORT_FORMATS
                   if f != "onnx" or outputs.onnx_available()]
        if "onnx" not in formats:
            print("onnx not installed: skipping ONNX (pip install 'darts_lit[export]')")
    for r in outputs.export_network(args.checkpoint, args.out, formats,
                                    batch_size=args.batch_size):
        size = f"{r['bytes'] / 1e6:8.2f} MB" if r["bytes"] else " " * 11
        print(f"{r['format']:12s}{size}  max |diff| {r['max_abs_diff']:.1e}  "
              f"{r['latency_ms']:8.2f} ms per batch of {args.batch_size}  "
              f"{r['path'] or '(the network in PyTorch)'}")
    return 0


COMMANDS = (register_test, register_plot, register_export)
