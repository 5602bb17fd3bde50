"""`darts-lit search-rnn` and `darts-lit train-rnn`: recurrent cells on PTB.

    darts-lit search-rnn --corpus pydoc --epochs 3 --out runs/rnn-s1
    darts-lit search-rnn --out runs/rnn-s1 --epochs 3 --resume
    darts-lit train-rnn --genotype runs/rnn-s1/genotype.json --corpus ptb --out runs/r1

Hand-written (not generated from the book); registered by `darts_lit.cli`. What the
commands run is explained in the chapters on recurrent cells (`darts_lit.rnn_data`,
`darts_lit.rnn`, `darts_lit.rnn_search`).
"""

import time
from pathlib import Path

from darts_lit.cli import command, fail

CORPORA = ("auto", "ptb", "pydoc")


def _add_common(p, d, paper_emsize: int) -> None:
    """Options shared by both commands; `d` holds the defaults (the paper's)."""
    data = p.add_argument_group("data")
    data.add_argument("--corpus", choices=CORPORA, default=d.corpus,
                      help="'auto': Penn Treebank if found, else CPython's own "
                      f"documentation (pydoc_data) (default: {d.corpus}; paper: ptb)")
    data.add_argument("--data-dir", metavar="DIR", default=d.data_dir,
                      help="folder holding ptb/ or ptb.{train,valid,test}.txt "
                      "(default: $DARTS_DATA, else ~/.cache/darts_lit)")
    data.add_argument("--max-vocab", type=int, default=d.max_vocab, metavar="N",
                      help=f"vocabulary cap of the offline corpus (default: "
                      f"{d.max_vocab}; PTB has its own 10,000)")
    data.add_argument("--batch-size", type=int, default=d.batch_size, metavar="B",
                      help=f"parallel text columns (paper: {d.batch_size})")
    data.add_argument("--bptt", type=int, default=d.bptt, metavar="T",
                      help=f"truncated-backpropagation window (paper: {d.bptt})")
    net = p.add_argument_group("model")
    net.add_argument("--emsize", type=int, default=d.emsize, metavar="N",
                     help="embedding = hidden size, tied decoder (paper: "
                     f"{paper_emsize})")
    for name in ("dropout", "dropouth", "dropoutx", "dropouti", "dropoute"):
        net.add_argument(f"--{name}", type=float, default=getattr(d, name),
                         metavar="P", help=f"paper: {getattr(d, name)}")
    opt = p.add_argument_group("weights (SGD)")
    opt.add_argument("--epochs", type=int, default=d.epochs, metavar="N",
                     help=f"paper: {d.epochs}")
    opt.add_argument("--lr", type=float, default=d.lr, help=f"paper: {d.lr}")
    opt.add_argument("--wdecay", type=float, default=d.wdecay, metavar="WD",
                     help=f"weight decay (paper: {d.wdecay})")
    opt.add_argument("--clip", type=float, default=d.clip, metavar="NORM",
                     help=f"gradient norm clipping (paper: {d.clip})")
    opt.add_argument("--beta", type=float, default=d.beta,
                     help=f"temporal activation regularisation (paper: {d.beta})")


def _add_run(p, d, kind: str) -> None:
    run = p.add_argument_group("run")
    run.add_argument("--seed", type=int, default=d.seed, metavar="S",
                     help=f"random seed (default: {d.seed}, as the paper's code)")
    run.add_argument("--device", default=d.device,
                     help="'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N' "
                     f"(default: {d.device})")
    run.add_argument("--out", metavar="RUN_DIR", default=None,
                     help=f"run folder (default: runs/{kind}-<date>-<time>)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its last checkpoint "
                     "(bit-exact on CPU); the settings must be the same")
    run.add_argument("--max-steps-per-epoch", type=int, default=None, metavar="N",
                     help="cut every epoch to N windows, for quick trials")
    run.add_argument("--stop-after", type=int, default=None, metavar="EPOCHS",
                     help="stop (with a checkpoint) once this many epochs are done; "
                     "continue later with --resume")
    run.add_argument("--quiet", action="store_true", help="no per-epoch lines")


def _common_config(args) -> dict:
    return dict(corpus=args.corpus, data_dir=args.data_dir, max_vocab=args.max_vocab,
                batch_size=args.batch_size, bptt=args.bptt, emsize=args.emsize,
                nhid=args.emsize, dropout=args.dropout, dropouth=args.dropouth,
                dropoutx=args.dropoutx, dropouti=args.dropouti,
                dropoute=args.dropoute, epochs=args.epochs, lr=args.lr,
                wdecay=args.wdecay, clip=args.clip, beta=args.beta, seed=args.seed,
                device=args.device, max_batches=args.max_steps_per_epoch)


def _check_run_args(prog, args):
    """An error status for inconsistent run options, or None."""
    from darts_lit.utils import resolve_device

    if args.resume and args.out is None:
        return fail(prog, ValueError("--resume needs --out RUN_DIR, the run to "
                                     "continue"))
    try:
        resolve_device(args.device)
    except RuntimeError as e:
        return fail(prog, e)
    return None


def _errors():
    from darts_lit.data import DataNotFoundError
    from darts_lit.genotypes import GenotypeError
    from darts_lit.utils import CheckpointError, NonFiniteLossError

    return (NonFiniteLossError, DataNotFoundError, CheckpointError, GenotypeError,
            FileNotFoundError, FileExistsError, ValueError)


# ---- search-rnn ----------------------------------------------------------------------
@command
def register_search_rnn(subparsers) -> None:
    """`darts-lit search-rnn`: search a recurrent cell (darts_lit.rnn_search)."""
    from darts_lit.rnn_search import RNNSearchConfig

    d = RNNSearchConfig()
    p = subparsers.add_parser(
        "search-rnn", help="search a recurrent cell with DARTS (language modelling)",
        description="Search a recurrent cell with DARTS on Penn Treebank (Liu et al., "
        "ICLR 2019, §3.1.2). Every default is the paper's setting. Writes "
        "checkpoint.pt, history.json and genotype.json into --out after every epoch, "
        "perplexity.png and cell.png at the end, and prints the final genotype.")
    _add_common(p, d, d.emsize)
    net = p.add_argument_group("model")
    net.add_argument("--nodes", type=int, default=d.steps, metavar="N",
                     help=f"nodes after node 0 (paper: {d.steps})")
    a = p.add_argument_group("architecture α (Adam)")
    a.add_argument("--arch-lr", type=float, default=d.arch_lr, metavar="LR",
                   help=f"paper: {d.arch_lr}")
    a.add_argument("--arch-wdecay", type=float, default=d.arch_wdecay, metavar="WD",
                   help=f"paper: {d.arch_wdecay}")
    a.add_argument("--unrolled", action="store_true",
                   help="second-order gradient through a virtual SGD step (the "
                   "paper's DARTS_V2); default: first order")
    a.add_argument("--exact-hvp", action="store_true",
                   help="with --unrolled: exact Hessian-vector product by double "
                   "backward instead of the paper's finite difference")
    _add_run(p, d, "search-rnn")
    p.set_defaults(func=run_search_rnn)


def run_search_rnn(args) -> int:
    """Run `darts-lit search-rnn`; return the exit status."""
    import matplotlib

    matplotlib.use("Agg")
    from darts_lit.rnn_search import RNNSearchConfig, search_rnn

    prog = "darts-lit search-rnn"
    if args.exact_hvp and not args.unrolled:
        return fail(prog, ValueError("--exact-hvp needs --unrolled (the first-order "
                                     "search has no Hessian-vector product)"))
    status = _check_run_args(prog, args)
    if status is not None:
        return status
    out = Path(args.out or Path("runs") / time.strftime("search-rnn-%Y%m%d-%H%M%S"))
    cfg = RNNSearchConfig(**_common_config(args), steps=args.nodes,
                          arch_lr=args.arch_lr, arch_wdecay=args.arch_wdecay,
                          unrolled=args.unrolled,
                          hvp="exact" if args.exact_hvp else "finite_difference")
    try:
        model, history = search_rnn(cfg, out=out, resume=args.resume,
                                    verbose=not args.quiet, stop_after=args.stop_after)
    except _errors() as e:
        return fail(prog, e)
    if history:
        save_rnn_search_plots(history, out)
    print(f"run folder: {out} (epoch {len(history)}/{cfg.epochs})")
    print(f"genotype: {model.genotype()}")
    return 0


def save_rnn_search_plots(history, out) -> None:
    """`perplexity.png` (validation perplexity per epoch) and `cell.png` in `out`."""
    import matplotlib.pyplot as plt

    from darts_lit.rnn import plot_rnn_cell, rnn_genotype_from_dict

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([h["epoch"] for h in history], [h["valid_ppl"] for h in history], "o-")
    ax.set(xlabel="epoch", ylabel="validation perplexity", yscale="log")
    fig.tight_layout()
    fig.savefig(Path(out) / "perplexity.png", dpi=100)
    plt.close(fig)
    ax = plot_rnn_cell(rnn_genotype_from_dict(history[-1]["genotype"]),
                       title=f"epoch {history[-1]['epoch']}")
    ax.figure.savefig(Path(out) / "cell.png", dpi=100)
    plt.close(ax.figure)


# ---- train-rnn -----------------------------------------------------------------------
@command
def register_train_rnn(subparsers) -> None:
    """`darts-lit train-rnn`: train a recurrent genotype (darts_lit.rnn_search)."""
    from darts_lit.rnn import RNN_GENOTYPES
    from darts_lit.rnn_search import RNNTrainConfig

    d = RNNTrainConfig()
    p = subparsers.add_parser(
        "train-rnn", help="train a recurrent cell's language model from scratch",
        description="Train the language model of a recurrent genotype from scratch: "
        "SGD, then averaged SGD once the validation loss stalls; reports validation "
        "and test perplexity (Liu et al., ICLR 2019, §3.2). Every default is the "
        "paper's setting. Writes checkpoint.pt and history.json after every epoch, "
        "model.pt and result.json at the end.")
    p.add_argument("--genotype", metavar="NAME|FILE", default=d.genotype,
                   help=f"a reference cell ({', '.join(RNN_GENOTYPES)}) or a genotype "
                   f"file written by `darts-lit search-rnn` (default: {d.genotype})")
    _add_common(p, d, d.emsize)
    opt = p.add_argument_group("weights (SGD)")
    opt.add_argument("--nonmono", type=int, default=d.nonmono, metavar="N",
                     help="switch to ASGD when the validation loss is worse than the "
                     f"best before the last N epochs (paper: {d.nonmono})")
    ev = p.add_argument_group("evaluation")
    ev.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size,
                    metavar="B",
                    help=f"validation columns (paper: {d.eval_batch_size})")
    ev.add_argument("--test-batch-size", type=int, default=d.test_batch_size,
                    metavar="B", help=f"test columns (paper: {d.test_batch_size})")
    _add_run(p, d, "train-rnn")
    p.set_defaults(func=run_train_rnn)


def run_train_rnn(args) -> int:
    """Run `darts-lit train-rnn`; return the exit status."""
    from darts_lit.rnn_search import RNNTrainConfig, resolve_rnn_genotype, train_rnn

    prog = "darts-lit train-rnn"
    status = _check_run_args(prog, args)
    if status is not None:
        return status
    out = Path(args.out or Path("runs") / time.strftime("train-rnn-%Y%m%d-%H%M%S"))
    try:
        genotype = resolve_rnn_genotype(args.genotype)
        cfg = RNNTrainConfig(**_common_config(args), genotype=args.genotype,
                             nonmono=args.nonmono, eval_batch_size=args.eval_batch_size,
                             test_batch_size=args.test_batch_size)
        _, result = train_rnn(cfg, out=out, resume=args.resume,
                              verbose=not args.quiet, stop_after=args.stop_after)
    except _errors() as e:
        return fail(prog, e)
    print(f"run folder: {out} (epoch {len(result['epochs'])}/{cfg.epochs})")
    print(f"genotype: {genotype}")
    if "test_ppl" in result:
        print(f"valid perplexity {result['valid_ppl']:.2f}  test perplexity "
              f"{result['test_ppl']:.2f}  ({result['params']:,} parameters)")
    return 0
