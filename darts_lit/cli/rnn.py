"""`darts-lit search-rnn` and `darts-lit train-rnn`: recurrent cells on PTB.

    darts-lit search-rnn --dataset pydoc --epochs 3 --out runs/rnn-s1
    darts-lit search-rnn --out runs/rnn-s1 --epochs 3 --resume
    darts-lit train-rnn --genotype runs/rnn-s1/genotype.json --dataset ptb --out runs/r1

Hand-written (not generated from the book); listed by `darts_lit.cli`. The options
are generated from `RNNSearchConfig` and `RNNTrainConfig`; what the commands run is
explained in the chapters on recurrent cells (`darts_lit.rnn.data`,
`darts_lit.rnn.model`, `darts_lit.rnn.search`, `darts_lit.rnn.train`).
"""

from darts_lit.cli.base import add_run_command, config_from_cli

def register_search_rnn(subparsers) -> None:
    """`darts-lit search-rnn`: search a recurrent cell (darts_lit.rnn.search)."""
    from darts_lit.rnn.search import RNNSearchConfig

    add_run_command(
        subparsers, "search-rnn", RNNSearchConfig, run_search_rnn,
        help="search a recurrent cell with DARTS (language modelling)",
        description="Search a recurrent cell with DARTS on Penn Treebank (Liu et al., "
        "ICLR 2019, §3.1.2). Every default is the paper's setting. Writes "
        "checkpoint.pt, history.json and genotype.json into --out after every epoch, "
        "perplexity.png and cell.png at the end, and prints the final genotype.")


def run_search_rnn(args) -> int:
    """Run `darts-lit search-rnn`; return the exit status."""
    import matplotlib

    matplotlib.use("Agg")
    from darts_lit.rnn.search import RNNSearchConfig, search_rnn

    config = config_from_cli(RNNSearchConfig, args, "search-rnn")
    model, history = search_rnn(config, stop_after_epoch=args.stop_after)
    if history:
        from darts_lit.cli.outputs import save_rnn_plots

        save_rnn_plots(history, model.genotype(), config.out_dir)
    print(f"run folder: {config.out_dir} (epoch {len(history)}/{config.epochs})")
    print(f"genotype: {model.genotype()}")
    return 0


def register_train_rnn(subparsers) -> None:
    """`darts-lit train-rnn`: train a recurrent genotype (darts_lit.rnn.train)."""
    from darts_lit.rnn.train import RNNTrainConfig

    add_run_command(
        subparsers, "train-rnn", RNNTrainConfig, run_train_rnn,
        help="train a recurrent cell's language model from scratch",
        description="Train the language model of a recurrent genotype from scratch: "
        "SGD, then averaged SGD once the validation loss stalls; reports validation "
        "and test perplexity (Liu et al., ICLR 2019, §3.2). Every default is the "
        "paper's setting. Writes checkpoint.pt and history.json after every epoch, "
        "model.pt, result.json, perplexity.png and cell.png at the end.")


def run_train_rnn(args) -> int:
    """Run `darts-lit train-rnn`; return the exit status."""
    from darts_lit.rnn.model import resolve_rnn_genotype
    from darts_lit.rnn.train import RNNTrainConfig, train_rnn

    config = config_from_cli(RNNTrainConfig, args, "train-rnn")
    genotype = resolve_rnn_genotype(config.genotype)
    _, result = train_rnn(config, stop_after_epoch=args.stop_after)
    if result["epochs"] and config.out_dir:
        import matplotlib

        matplotlib.use("Agg")
        from darts_lit.cli.outputs import save_rnn_plots

        save_rnn_plots(result["epochs"], genotype, config.out_dir)
    done = len(result["epochs"])
    print(f"run folder: {config.out_dir} (epoch {done}/{config.epochs})")
    print(f"genotype: {genotype}")
    if "test_ppl" in result:
        print(f"valid perplexity {result['valid_ppl']:.2f}  test perplexity "
              f"{result['test_ppl']:.2f}  ({result['params']:,} parameters)")
    return 0


COMMANDS = (register_search_rnn, register_train_rnn)
