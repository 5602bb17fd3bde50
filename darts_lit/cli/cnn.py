"""`darts-lit search`, `train` and `test`: convolutional cells.

    darts-lit search --dataset digits --epochs 2 --out runs/s1
    darts-lit search --unrolled --hvp exact --out runs/s2
    darts-lit search --out runs/s1 --resume
    darts-lit train --genotype runs/s1/genotype.json --out runs/e1
    darts-lit test --checkpoint runs/e1/checkpoint.pt

Hand-written (not generated from the book). The options are generated from
`SearchConfig` and `TrainConfig` (chapters *Searching* and *Training the final
network*); what the commands run is explained there.
"""

from pathlib import Path

from darts_lit.cli.base import add_run_command, config_from_cli, run_command

def run_data_parallel(run, config, stop_after: int | None):
    """`run(config)`, under torchrun too (rank 0 names the run folder): the history
    on rank 0, None on the other ranks or when no epoch was left to run."""
    from darts_lit.core import distributed

    distributed.init_from_env(config.device)  # under torchrun: join the group
    config.out_dir = distributed.broadcast_object(config.out_dir)
    history = run(config, stop_after_epoch=stop_after)
    if not distributed.is_main():
        return None
    if not history:
        print(f"{config.out_dir}: nothing to do, all {config.epochs} epochs are done")
        return None
    return history


def register_search(subparsers) -> None:
    """`darts-lit search`: a DARTS architecture search (darts_lit.cnn.search)."""
    from darts_lit.cnn.search import SearchConfig

    add_run_command(
        subparsers, "search", SearchConfig, run_search,
        help="search a convolutional cell with DARTS",
        description="Search a convolutional cell with DARTS (Liu et al., ICLR 2019). "
        "Every default is the paper's setting (CIFAR-10, §3.1.1 and appendix A.1.1). "
        "Writes "
        "checkpoint.pt, history.json, genotype.json and PNG plots into --out, and "
        "prints the final genotype. With --resume, options not given keep the run's "
        "settings.")


def run_search(args) -> int:
    """Run `darts-lit search` with the parsed `args`; return the exit status."""
    import matplotlib

    matplotlib.use("Agg")
    from darts_lit.cnn.genotypes import genotype_from_dict
    from darts_lit.cnn.search import SearchConfig, search, search_result
    from darts_lit.cnn.search_figures import save_search_plots

    config = config_from_cli(SearchConfig, args, "search")
    history = run_data_parallel(search, config, args.stop_after)
    if history is None:
        return 0
    save_search_plots(history, config.out_dir)
    genotype = genotype_from_dict(search_result(history), validate=False)
    print(f"run folder: {config.out_dir} (epoch {history[-1]['epoch']}/"
          f"{config.epochs})")
    if stop := history[-1].get("early_stop"):
        print(f"stopped early by {stop['rule']}: the result is the genotype of epoch "
              f"{stop['genotype_epoch']}")
    print(f"genotype: {genotype}")
    return 0


def register_train(subparsers) -> None:
    """`darts-lit train`: train a genotype's evaluation network
    (darts_lit.evaluation.train)."""
    from darts_lit.evaluation.train import TrainConfig

    p = add_run_command(
        subparsers, "train", TrainConfig, run_train,
        help="train a genotype's evaluation network from scratch",
        description="Train the evaluation network of a genotype from scratch and test "
        "it (Liu et al., ICLR 2019, §3.2). Every default is the paper's CIFAR-10 "
        "setting; --imagenet switches to its ImageNet settings. Writes checkpoint.pt, "
        "history.json and genotype.json into --out after every epoch, training.png "
        "and cell.png at the end. With --resume, "
        "options not given keep the run's settings.")
    p.add_argument("--imagenet", action="store_true",
                   help="the paper's ImageNet settings: NetworkImageNet, 48 channels, "
                   "14 cells, lr 0.1 ×0.97 per epoch, weight decay 3e-5, label "
                   "smoothing 0.1, batch 128, 250 epochs (needs RGB data)")


def train_config_from_args(args):
    """The TrainConfig of `darts-lit train`: defaults (or the resumed run's settings)
    updated by the options given on the command line."""
    from darts_lit.evaluation.train import TrainConfig

    base = TrainConfig.imagenet() if args.imagenet else None
    return config_from_cli(TrainConfig, args, "train", base)


def run_train(args) -> int:
    """Run `darts-lit train` with the parsed `args`; return the exit status."""
    from darts_lit.evaluation.train import evaluate_checkpoint, train

    config = train_config_from_args(args)
    history = run_data_parallel(train, config, args.stop_after)
    if history is None:
        return 0
    if config.out_dir:
        import matplotlib

        matplotlib.use("Agg")
        from darts_lit.cli.outputs import save_train_plots
        from darts_lit.cnn.genotypes import resolve_genotype

        save_train_plots(history, resolve_genotype(config.genotype), config.out_dir)
    res = evaluate_checkpoint(Path(config.out_dir) / "checkpoint.pt",
                              device=config.device, verbose=False)
    print(f"run folder: {config.out_dir} (epoch {res['epoch']}/{config.epochs})")
    print(format_test_result(res))
    return 0


def format_test_result(res: dict) -> str:
    """One line: test top-1 (top-5), loss, epoch and parameters of a checkpoint."""
    top5 = f"  top-5 {res['test_top5']:.2f}%" if "test_top5" in res else ""
    return (f"test top-1 {res['test_top1']:.2f}%{top5}  loss {res['test_loss']:.4f}  "
            f"(epoch {res['epoch']}, {res['parameters'] / 1e6:.3f}M parameters)")


def register_test(subparsers) -> None:
    """`darts-lit test`: test accuracy of a `train` or `train-fbnet` checkpoint."""
    p = subparsers.add_parser(
        "test", help="test accuracy of a trained network's checkpoint",
        description="Rebuild the network saved by `darts-lit train` or `darts-lit "
        "train-fbnet` and print its top-1 (and top-5) accuracy on the test split of "
        "its data set.")
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="checkpoint.pt in a `darts-lit train` or `train-fbnet` run "
                   "folder")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="folder holding the data set (default: the one used in "
                   "training, else $DARTS_DATA)")
    p.add_argument("--device", default="auto",
                   help="'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'")
    p.set_defaults(func=lambda args: run_command("darts-lit test", run_test, args))


def run_test(args) -> int:
    """Run `darts-lit test` with the parsed `args`; return the exit status."""
    from darts_lit.core.runs import read_checkpoint
    from darts_lit.core.utils import resolve_device
    from darts_lit.evaluation.train import evaluate_checkpoint

    try:
        resolve_device(args.device)
    except RuntimeError as e:
        raise ValueError(f"--device: {str(e).split(';')[0]}") from None
    if not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"--checkpoint: no checkpoint at {args.checkpoint}; "
                                "give the checkpoint.pt of a `darts-lit train` or "
                                "`train-fbnet` run folder")
    evaluate = evaluate_checkpoint
    if read_checkpoint(args.checkpoint, ("train", "train-fbnet"))["kind"] != "train":
        from darts_lit.fbnet.train import evaluate_fbnet_checkpoint as evaluate
    res = evaluate(args.checkpoint, data_dir=args.data_dir, device=args.device,
                   verbose=False)
    print(format_test_result(res))
    return 0


COMMANDS = (register_search, register_train, register_test)
