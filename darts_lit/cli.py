"""The `darts-lit` command line (also `python -m darts_lit`).

    darts-lit search --dataset digits --epochs 2 --out runs/s1
    darts-lit search --unrolled --exact-hvp --out runs/s2
    darts-lit search --out runs/s1 --resume
    darts-lit <command> --help

Hand-written (not generated from the book). Each subcommand is a function
`register_<name>(subparsers)` decorated with `@command`: it adds its parser and sets
`func` (called with the parsed arguments, returns the exit status). To add a command
(`train`, `test`, `latency`, `search-rnn`, `train-rnn`, ...), write such a function in
this file, or in its own module imported at the bottom of this file (keep the import
of matplotlib and of the book's heavier modules inside the `run_*` functions).
"""

import argparse
import os
import sys
import time
from pathlib import Path

COMMANDS = []  # register functions, in the order of `darts-lit --help`
DISTRIBUTED = ("search", "train")  # commands that run data-parallel under torchrun


def command(register):
    """Add a `register(subparsers)` function to the command line."""
    COMMANDS.append(register)
    return register


def fail(prog: str, err: BaseException) -> int:
    """Print an error the way argparse does and return exit status 1."""
    print(f"{prog}: error: {err}", file=sys.stderr)
    return 1


# ---- search --------------------------------------------------------------------------
@command
def register_search(subparsers) -> None:
    """`darts-lit search`: a DARTS architecture search (darts_lit.search)."""
    from darts_lit.search import SearchConfig

    d = SearchConfig()  # the paper's defaults, shown in --help
    p = subparsers.add_parser(
        "search", help="search a convolutional cell with DARTS",
        description="Search a convolutional cell with DARTS (Liu et al., ICLR 2019). "
        "Every default is the paper's setting (CIFAR-10, §3.1.2). Writes "
        "checkpoint.pt, history.json, genotype.json and PNG plots into --out, and "
        "prints the final genotype.")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=("auto", "cifar10", "digits"),
                      default=d.dataset,
                      help="'auto': CIFAR-10 if found, else scikit-learn's 8x8 digits "
                      f"(default: {d.dataset}; paper: cifar10)")
    data.add_argument("--data-dir", metavar="DIR", default=d.data_dir,
                      help="folder holding cifar-10-batches-py/ (default: $DARTS_DATA, "
                      "else ~/.cache/darts_lit)")
    data.add_argument("--train-portion", type=float, default=d.train_portion,
                      metavar="P",
                      help="share of the training set that trains the weights; the "
                      f"rest trains α (paper: {d.train_portion})")
    data.add_argument("--batch-size", type=int, default=d.batch_size, metavar="B",
                      help=f"batch size (paper: {d.batch_size})")
    data.add_argument("--num-workers", type=int, default=d.num_workers, metavar="N",
                      help=f"data loader worker processes (default: {d.num_workers})")

    net = p.add_argument_group("network")
    net.add_argument("--init-channels", type=int, default=d.init_channels,
                     metavar="C", help=f"channels of the first cell (paper: "
                     f"{d.init_channels})")
    net.add_argument("--layers", type=int, default=d.layers, metavar="L",
                     help=f"number of cells (paper: {d.layers})")
    net.add_argument("--nodes", type=int, default=d.steps, metavar="N",
                     help=f"intermediate nodes per cell (paper: {d.steps})")

    w = p.add_argument_group("weights w (SGD with cosine schedule)")
    w.add_argument("--epochs", type=int, default=d.epochs, metavar="N",
                   help=f"search epochs (paper: {d.epochs})")
    w.add_argument("--learning-rate", type=float, default=d.learning_rate, metavar="LR",
                   help=f"initial learning rate (paper: {d.learning_rate})")
    w.add_argument("--learning-rate-min", type=float, default=d.learning_rate_min,
                   metavar="LR",
                   help=f"final learning rate of the cosine schedule (paper: "
                   f"{d.learning_rate_min})")
    w.add_argument("--momentum", type=float, default=d.momentum, metavar="M",
                   help=f"SGD momentum (paper: {d.momentum})")
    w.add_argument("--weight-decay", type=float, default=d.weight_decay, metavar="WD",
                   help=f"SGD weight decay (paper: {d.weight_decay})")
    w.add_argument("--grad-clip", type=float, default=d.grad_clip, metavar="NORM",
                   help=f"gradient norm clipping (paper: {d.grad_clip})")

    a = p.add_argument_group("architecture α (Adam)")
    a.add_argument("--arch-learning-rate", type=float, default=d.arch_learning_rate,
                   metavar="LR",
                   help=f"Adam learning rate for α (paper: {d.arch_learning_rate})")
    a.add_argument("--arch-weight-decay", type=float, default=d.arch_weight_decay,
                   metavar="WD",
                   help=f"Adam weight decay for α (paper: {d.arch_weight_decay})")
    a.add_argument("--unrolled", action="store_true",
                   help="second-order gradient through a virtual SGD step (paper eq. "
                   "7, 'DARTS (second order)'); default: first order, as the "
                   "paper's code")
    a.add_argument("--exact-hvp", action="store_true",
                   help="with --unrolled: exact Hessian-vector product by double "
                   "backward instead of the paper's finite difference (eq. 8)")
    a.add_argument("--latency-weight", type=float, default=d.latency_weight,
                   metavar="KAPPA",
                   help="hardware-aware search (FBNet's latency term): add "
                   "KAPPA * E[LAT] / E[LAT at uniform alpha] to the validation loss, "
                   "E[LAT] from a lookup table measured on --device and kept in "
                   "RUN_DIR/latency_table.json (default: 0, plain DARTS)")

    run = p.add_argument_group("run")
    run.add_argument("--seed", type=int, default=d.seed, metavar="S",
                     help=f"random seed (default: {d.seed}, as the paper's code)")
    run.add_argument("--device", default=d.device,
                     help="'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N' "
                     f"(default: {d.device})")
    run.add_argument("--out", metavar="RUN_DIR", default=None,
                     help="run folder for checkpoint, history, genotype and plots "
                     "(default: runs/search-<date>-<time>)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its last checkpoint "
                     "(bit-exact on CPU); the settings must be the same")
    run.add_argument("--max-steps-per-epoch", type=int, default=None, metavar="N",
                     help="cut every epoch to N batches, for quick trials (default: "
                     "the whole split, as the paper)")
    run.add_argument("--stop-after", type=int, default=None, metavar="EPOCHS",
                     help="stop (with a checkpoint) once this many epochs are done; "
                     "continue later with --resume")
    run.add_argument("--quiet", action="store_true",
                     help="no per-epoch lines")
    p.set_defaults(func=run_search)


def run_search(args) -> int:
    """Run `darts-lit search` with the parsed `args`; return the exit status."""
    import matplotlib

    matplotlib.use("Agg")
    from darts_lit.data import DataNotFoundError
    from darts_lit.genotypes import genotype_from_dict
    from darts_lit.search import SearchConfig, save_search_plots, search
    from darts_lit.utils import CheckpointError, NonFiniteLossError, resolve_device

    prog = "darts-lit search"
    if args.exact_hvp and not args.unrolled:
        return fail(prog, ValueError("--exact-hvp needs --unrolled (the first-order "
                                     "search has no Hessian-vector product)"))
    if args.resume and args.out is None:
        return fail(prog, ValueError("--resume needs --out RUN_DIR, the run to "
                                     "continue"))
    from darts_lit import distributed

    try:
        resolve_device(args.device)
        distributed.init_from_env(args.device)  # under torchrun: join the group
    except RuntimeError as e:
        return fail(prog, e)
    out = args.out or str(Path("runs") / time.strftime("search-%Y%m%d-%H%M%S"))
    out = distributed.broadcast_object(out)  # rank 0's name on every process
    config = SearchConfig(
        dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        learning_rate_min=args.learning_rate_min, momentum=args.momentum,
        weight_decay=args.weight_decay, grad_clip=args.grad_clip,
        init_channels=args.init_channels, layers=args.layers, steps=args.nodes,
        multiplier=args.nodes, train_portion=args.train_portion,
        arch_learning_rate=args.arch_learning_rate,
        arch_weight_decay=args.arch_weight_decay, unrolled=args.unrolled,
        hvp="exact" if args.exact_hvp else "finite_difference", seed=args.seed,
        device=args.device, out_dir=out, resume=args.resume,
        max_steps_per_epoch=args.max_steps_per_epoch, num_workers=args.num_workers,
        verbose=not args.quiet, latency_weight=args.latency_weight)
    try:
        history = search(config, stop_after_epoch=args.stop_after)
    except (NonFiniteLossError, DataNotFoundError, CheckpointError, FileNotFoundError,
            FileExistsError, ValueError) as e:
        return fail(prog, e)
    if not distributed.is_main():
        return 0
    if not history:
        print(f"{out}: nothing to do, all {config.epochs} epochs are done")
        return 0
    save_search_plots(history, out)
    genotype = genotype_from_dict(history[-1]["genotype"], validate=False)
    done = history[-1]["epoch"]
    print(f"run folder: {out} (epoch {done}/{config.epochs})")
    print(f"genotype: {genotype}")
    return 0


# ---- train, test (the evaluation network, darts_lit.train) ---------------------------
@command
def register_train(subparsers) -> None:
    """`darts-lit train`: train a genotype's evaluation network (darts_lit.train)."""
    from darts_lit.genotypes import GENOTYPES
    from darts_lit.train import TrainConfig

    d, S = TrainConfig(), argparse.SUPPRESS  # only options given override a resume
    p = subparsers.add_parser(
        "train", help="train a genotype's evaluation network from scratch",
        argument_default=S,
        description="Train the evaluation network of a genotype from scratch and test "
        "it (Liu et al., ICLR 2019, §3.2). Every default is the paper's CIFAR-10 "
        "setting; --imagenet switches to its ImageNet settings. Writes checkpoint.pt, "
        "history.json and genotype.json into --out after every epoch. With --resume, "
        "the run continues with its saved settings.")
    p.add_argument("--genotype", metavar="NAME|FILE",
                   help=f"a reference genotype ({', '.join(GENOTYPES)}) or a genotype "
                   f"JSON file written by `darts-lit search` (default: {d.genotype})")
    p.add_argument("--imagenet", action="store_true",
                   help="the paper's ImageNet settings: NetworkImageNet, 48 channels, "
                   "14 cells, lr 0.1 ×0.97 per epoch, weight decay 3e-5, label "
                   "smoothing 0.1, batch 128, 250 epochs (needs RGB data)")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=("auto", "cifar10", "digits", "imagenet"),
                      help="'auto': CIFAR-10 if found, else scikit-learn's 8x8 digits; "
                      "'imagenet': DIR/imagenet/{train,val}/<class>/ image folders "
                      f"(default: {d.dataset}; paper: cifar10, or imagenet)")
    data.add_argument("--data-dir", metavar="DIR",
                      help="folder holding cifar-10-batches-py/ (default: $DARTS_DATA, "
                      "else ~/.cache/darts_lit)")
    data.add_argument("--batch-size", type=int, help=f"paper: {d.batch_size}")
    data.add_argument("--cutout", action=argparse.BooleanOptionalAction,
                      help=f"Cutout augmentation (paper: on, length {d.cutout_length})")
    data.add_argument("--cutout-length", type=int,
                      help=f"side of the Cutout square (paper: {d.cutout_length})")
    data.add_argument("--num-workers", type=int,
                      help=f"data loader worker processes (default: {d.num_workers})")
    net = p.add_argument_group("network")
    net.add_argument("--init-channels", type=int, metavar="C",
                     help=f"channels of the first cell (paper: {d.init_channels})")
    net.add_argument("--layers", type=int, metavar="L",
                     help=f"number of cells (paper: {d.layers})")
    net.add_argument("--auxiliary", action=argparse.BooleanOptionalAction,
                     help="auxiliary head at 2/3 depth (paper: on)")
    net.add_argument("--auxiliary-weight", type=float,
                     help=f"weight of the auxiliary loss (paper: {d.auxiliary_weight})")
    net.add_argument("--drop-path-prob", type=float,
                     help=f"final drop-path probability (paper: {d.drop_path_prob})")
    opt = p.add_argument_group("optimisation (SGD)")
    opt.add_argument("--epochs", type=int, help=f"paper: {d.epochs}")
    opt.add_argument("--learning-rate", type=float, help=f"paper: {d.learning_rate}")
    opt.add_argument("--weight-decay", type=float, help=f"paper: {d.weight_decay}")
    opt.add_argument("--grad-clip", type=float, help=f"paper: {d.grad_clip}")
    opt.add_argument("--label-smoothing", type=float,
                     help="paper: 0 on CIFAR-10, 0.1 on ImageNet")
    run = p.add_argument_group("run")
    run.add_argument("--seed", type=int, help=f"random seed (default: {d.seed})")
    run.add_argument("--device", help="'auto' (CUDA if available), 'cpu', 'cuda' or "
                     f"'cuda:N' (default: {d.device})")
    run.add_argument("--out", metavar="RUN_DIR", dest="out_dir",
                     help="run folder (default: runs/train-<date>-<time>)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its last checkpoint")
    run.add_argument("--max-steps-per-epoch", type=int, metavar="N",
                     help="cut every epoch to N batches, for quick trials")
    run.add_argument("--stop-after", type=int, metavar="EPOCHS", dest="stop_after",
                     help="stop (with a checkpoint) once this many epochs are done")
    run.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.set_defaults(func=run_train)


def train_config_from_args(args):
    """The TrainConfig of `darts-lit train`: defaults (or the resumed run's settings)
    updated by the options given on the command line."""
    from darts_lit.genotypes import genotype_from_dict
    from darts_lit.train import TrainConfig, read_checkpoint, resolve_genotype

    given = {k: v for k, v in vars(args).items()
             if k not in ("func", "command", "imagenet", "quiet", "stop_after")}
    if getattr(args, "quiet", False):
        given["verbose"] = False
    base = TrainConfig.imagenet() if getattr(args, "imagenet", False) else TrainConfig()
    checkpoint = Path(given.get("out_dir", "")) / "checkpoint.pt"
    if given.get("resume") and checkpoint.is_file():
        state, base, _ = read_checkpoint(checkpoint)
        try:
            resolve_genotype(base.genotype)
        except ValueError:  # a genotype file that moved: use the saved cells
            base.genotype = genotype_from_dict(state["genotype"])
    config = TrainConfig(**{**vars(base), **given})
    if config.out_dir is None:
        config.out_dir = str(Path("runs") / time.strftime("train-%Y%m%d-%H%M%S"))
    return config


def run_train(args) -> int:
    """Run `darts-lit train` with the parsed `args`; return the exit status."""
    from darts_lit import distributed
    from darts_lit.data import DataNotFoundError
    from darts_lit.train import evaluate_checkpoint, train
    from darts_lit.utils import CheckpointError, NonFiniteLossError

    prog = "darts-lit train"
    if getattr(args, "resume", False) and getattr(args, "out_dir", None) is None:
        return fail(prog, ValueError("--resume needs --out RUN_DIR, the run to "
                                     "continue"))
    try:
        config = train_config_from_args(args)
        distributed.init_from_env(config.device)  # under torchrun: join the group
        config.out_dir = distributed.broadcast_object(config.out_dir)
        history = train(config, stop_after_epoch=getattr(args, "stop_after", None))
        if not distributed.is_main():
            return 0
        if not history:
            print(f"{config.out_dir}: nothing to do, no epoch was run")
            return 0
        res = evaluate_checkpoint(Path(config.out_dir) / "checkpoint.pt",
                                  device=config.device, verbose=False)
    except (NonFiniteLossError, DataNotFoundError, CheckpointError, FileNotFoundError,
            FileExistsError, ValueError, RuntimeError) as e:
        return fail(prog, e)
    print(f"run folder: {config.out_dir} (epoch {res['epoch']}/{config.epochs})")
    print(format_test_result(res))
    return 0


def format_test_result(res: dict) -> str:
    """One line: test top-1 (top-5), loss, epoch and parameters of a checkpoint."""
    top5 = f"  top-5 {res['test_top5']:.2f}%" if "test_top5" in res else ""
    return (f"test top-1 {res['test_top1']:.2f}%{top5}  loss {res['test_loss']:.4f}  "
            f"(epoch {res['epoch']}, {res['parameters'] / 1e6:.3f}M parameters)")


@command
def register_test(subparsers) -> None:
    """`darts-lit test`: test accuracy of a `darts-lit train` checkpoint."""
    p = subparsers.add_parser(
        "test", help="test accuracy of a trained network's checkpoint",
        description="Rebuild the network saved by `darts-lit train` and print its "
        "top-1 (and top-5) accuracy on the test split of its data set.")
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="checkpoint.pt in a `darts-lit train` run folder")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="folder holding cifar-10-batches-py/ (default: the one used "
                   "in training, else $DARTS_DATA)")
    p.add_argument("--device", default="auto",
                   help="'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'")
    p.set_defaults(func=run_test)


def run_test(args) -> int:
    """Run `darts-lit test` with the parsed `args`; return the exit status."""
    from darts_lit.data import DataNotFoundError
    from darts_lit.train import evaluate_checkpoint
    from darts_lit.utils import CheckpointError

    try:
        res = evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir,
                                  device=args.device, verbose=False)
    except (DataNotFoundError, CheckpointError, FileNotFoundError, ValueError,
            RuntimeError, KeyError) as e:
        return fail("darts-lit test", e)
    print(format_test_result(res))
    return 0


# ---- entry point ---------------------------------------------------------------------
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
        from darts_lit.distributed import teardown

        teardown()  # leave the process group of a torchrun launch


# commands defined in their own modules register themselves on import
from darts_lit import (  # noqa: E402
    cli_latency,  # noqa: F401
    cli_rnn,  # noqa: F401
)
