"""`darts-lit search-rnn` and `darts-lit train-rnn`: recurrent cells on PTB.

    darts-lit search-rnn --dataset pydoc --epochs 3 --out runs/rnn-s1
    darts-lit search-rnn --out runs/rnn-s1 --epochs 3 --resume
    darts-lit train-rnn --genotype runs/rnn-s1/genotype.json --dataset ptb --out runs/r1

Hand-written (not generated from the book); listed by `darts_lit.cli`. The options
are generated from `RNNSearchConfig` and `RNNTrainConfig`; what the commands run is
explained in the chapters on recurrent cells (`darts_lit.rnn_data`, `darts_lit.rnn`,
`darts_lit.rnn_search`, `darts_lit.rnn_train`).
"""

from pathlib import Path

from darts_lit.cli_base import add_run_command, config_from_cli

def register_search_rnn(subparsers) -> None:
    """`darts-lit search-rnn`: search a recurrent cell (darts_lit.rnn_search)."""
    from darts_lit.rnn_search import RNNSearchConfig

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
    from darts_lit.rnn_search import RNNSearchConfig, search_rnn

    cfg = config_from_cli(RNNSearchConfig, args, "search-rnn")
    model, history = search_rnn(cfg, stop_after_epoch=args.stop_after)
    if history:
        save_rnn_search_plots(history, cfg.out_dir)
    print(f"run folder: {cfg.out_dir} (epoch {len(history)}/{cfg.epochs})")
    print(f"genotype: {model.genotype()}")
    return 0


def save_rnn_search_plots(history, out) -> None:
    """`perplexity.png` (validation perplexity per epoch) and `cell.png` in `out`."""
    import matplotlib.pyplot as plt

    from darts_lit.rnn import plot_rnn_cell, rnn_genotype_from_dict
    from darts_lit.runs import save_figure

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([h["epoch"] for h in history], [h["valid_ppl"] for h in history], "o-")
    ax.set(xlabel="epoch", ylabel="validation perplexity", yscale="log")
    fig.tight_layout()
    save_figure(fig, Path(out) / "perplexity.png", dpi=100)
    ax = plot_rnn_cell(rnn_genotype_from_dict(history[-1]["genotype"]),
                       title=f"epoch {history[-1]['epoch']}")
    save_figure(ax.figure, Path(out) / "cell.png", dpi=100)


def register_train_rnn(subparsers) -> None:
    """`darts-lit train-rnn`: train a recurrent genotype (darts_lit.rnn_train)."""
    from darts_lit.rnn_train import RNNTrainConfig

    add_run_command(
        subparsers, "train-rnn", RNNTrainConfig, run_train_rnn,
        help="train a recurrent cell's language model from scratch",
        description="Train the language model of a recurrent genotype from scratch: "
        "SGD, then averaged SGD once the validation loss stalls; reports validation "
        "and test perplexity (Liu et al., ICLR 2019, §3.2). Every default is the "
        "paper's setting. Writes checkpoint.pt and history.json after every epoch, "
        "model.pt and result.json at the end.")


def run_train_rnn(args) -> int:
    """Run `darts-lit train-rnn`; return the exit status."""
    from darts_lit.rnn import resolve_rnn_genotype
    from darts_lit.rnn_train import RNNTrainConfig, train_rnn

    cfg = config_from_cli(RNNTrainConfig, args, "train-rnn")
    genotype = resolve_rnn_genotype(cfg.genotype)
    _, result = train_rnn(cfg, stop_after_epoch=args.stop_after)
    print(f"run folder: {cfg.out_dir} (epoch {len(result['epochs'])}/{cfg.epochs})")
    print(f"genotype: {genotype}")
    if "test_ppl" in result:
        print(f"valid perplexity {result['valid_ppl']:.2f}  test perplexity "
              f"{result['test_ppl']:.2f}  ({result['params']:,} parameters)")
    return 0


COMMANDS = (register_search_rnn, register_train_rnn)
