"""`darts-lit plot` and `darts-lit export`: figures and exported networks after a run.

    darts-lit plot runs/search --format svg
    darts-lit plot --genotype DARTS_V2 --out darts_v2.pdf
    darts-lit export --checkpoint runs/train/checkpoint.pt --out exported/net

Hand-written (not generated from the book); listed by `darts_lit.cli`. What the
commands do is explained in the chapter *After the run* (`darts_lit.cli.outputs`).
"""

from pathlib import Path

from darts_lit.cli.base import run_command

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
            raise ValueError("give a RUN_DIR to redraw, or --genotype NAME|FILE with "
                             "--out FILE to draw a genotype")
        for path in outputs.redraw_run(args.run_dir, args.format):
            print(path)
        return 0
    if args.run_dir is not None or args.out is None:
        raise ValueError("--genotype draws one genotype into --out FILE (.png, .svg or "
                         ".pdf); give no RUN_DIR with it")
    suffix = Path(args.out).suffix.lstrip(".").lower()
    if suffix not in outputs.FORMATS:
        raise ValueError(f"--out: the file name must end in .png, .svg or .pdf, got "
                         f"{args.out}")
    if problem := unwritable(Path(args.out).parent):  # before the drawing
        raise ValueError(f"--out: {problem}")
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
        raise ValueError(f"--batch-size: must be an integer ≥ 1, got {args.batch_size}")
    if not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"--checkpoint: no checkpoint at {args.checkpoint}; "
                                "give the checkpoint.pt of a `darts-lit train` or "
                                "`train-fbnet` run folder")
    if problem := unwritable(Path(args.out).parent):  # before the network is built
        raise ValueError(f"--out: {problem}")
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


COMMANDS = (register_plot, register_export)
