"""`darts-lit search-fbnet` and `train-fbnet`: FBNet's latency-aware search of its
layer-wise space, and training a network of that space from scratch.

    darts-lit search-fbnet --dataset digits --epochs 6 --out runs/fb1
    darts-lit search-fbnet --out runs/fb1 --resume
    darts-lit search-fbnet --objective additive --latency-weight 0.5 --out runs/fb2
    darts-lit search-fbnet --space paper --dataset imagenet100 --latency-batch 1 ...
    darts-lit train-fbnet --architecture runs/fb1/architecture.json --out runs/t1
    darts-lit train-fbnet --architecture fbnet_b --dataset cifar10 --out runs/b

Hand-written (not generated from the book); listed by `darts_lit.cli`. The options
are generated from `FBNetSearchConfig` and `FBNetTrainConfig`; what the commands run is
explained in the chapters *FBNet* (`darts_lit.fbnet.space`), *Searching FBNet's space*
(`darts_lit.fbnet.search`), *FBNet at the paper's scale* (`darts_lit.fbnet.models`)
and *Training FBNet networks* (`darts_lit.fbnet.train`).
"""

from darts_lit.cli.base import add_run_command, config_from_cli

def register_search_fbnet(subparsers) -> None:
    """`darts-lit search-fbnet`: search FBNet's space (darts_lit.fbnet.search)."""
    from darts_lit.fbnet.search import FBNetSearchConfig

    add_run_command(
        subparsers, "search-fbnet", FBNetSearchConfig, run_search_fbnet,
        help="search FBNet's layer-wise space against measured latency",
        description="FBNet's search (Wu et al., CVPR 2019): per epoch, the weights on "
        "one part of the training set, then θ on the other against the cross-entropy "
        "and the expected latency from a lookup table measured on this machine. "
        "Writes latency_table.json on the first start, checkpoint.pt, history.json "
        "and architecture.json (the derived network and --samples networks sampled "
        "from θ) after every epoch, sample_N.json and latency.png at the end, and "
        "prints the derived network.")


def run_search_fbnet(args) -> int:
    """Run `darts-lit search-fbnet`; return the exit status."""
    import matplotlib

    matplotlib.use("Agg")
    from darts_lit.fbnet.search import FBNetSearchConfig, search_fbnet

    config = config_from_cli(FBNetSearchConfig, args, "search-fbnet")
    _, history = search_fbnet(config, stop_after_epoch=args.stop_after)
    if history:
        from darts_lit.cli.outputs import save_fbnet_plots

        save_fbnet_plots(history, config.out_dir)
        last = history[-1]
        print(f"derived network ({last['derived_lat']:.3f} ms): "
              f"{' '.join(last['derived'])}")
    print(f"run folder: {config.out_dir} (epoch {len(history)}/{config.epochs})")
    return 0


def register_train_fbnet(subparsers) -> None:
    """`darts-lit train-fbnet`: train an FBNet network (darts_lit.fbnet.train)."""
    from darts_lit.fbnet.train import FBNetTrainConfig

    add_run_command(
        subparsers, "train-fbnet", FBNetTrainConfig, run_train_fbnet,
        help="train FBNet-A/B/C or a searched FBNet architecture from scratch",
        description="Train a network of FBNet's space from scratch: FBNet-A, -B or -C "
        "by name, or the architecture.json (or sample_N.json) of a search-fbnet run; "
        "the data set decides the input channels, classes and image size. Writes "
        "checkpoint.pt, history.json and architecture.json after every epoch and "
        "training.png at the end, then prints the test accuracy; darts-lit test "
        "reads the checkpoint.")


def run_train_fbnet(args) -> int:
    """Run `darts-lit train-fbnet`; return the exit status."""
    from darts_lit.fbnet.train import (
        FBNetTrainConfig,
        evaluate_fbnet_checkpoint,
        train_fbnet,
    )

    config = config_from_cli(FBNetTrainConfig, args, "train-fbnet")
    history = train_fbnet(config, stop_after_epoch=args.stop_after)
    if config.out_dir is None:
        return 0
    if history:
        import matplotlib

        matplotlib.use("Agg")
        from darts_lit.cli.outputs import save_train_plots

        save_train_plots(history, None, config.out_dir)
    from darts_lit.cli.cnn import format_test_result

    res = evaluate_fbnet_checkpoint(f"{config.out_dir}/checkpoint.pt",
                                    device=config.device, verbose=False)
    print(f"run folder: {config.out_dir} (epoch {res['epoch']}/{config.epochs})")
    print(format_test_result(res))
    return 0


COMMANDS = (register_search_fbnet, register_train_fbnet)
