"""`darts-lit search-fbnet`: FBNet's latency-aware search of its layer-wise space.

    darts-lit search-fbnet --dataset digits --epochs 6 --out runs/fb1
    darts-lit search-fbnet --out runs/fb1 --resume
    darts-lit search-fbnet --objective additive --latency-weight 0.5 --out runs/fb2

Hand-written (not generated from the book); listed by `darts_lit.cli`. The options
are generated from `FBNetSearchConfig`; what the command runs is explained in the
chapters *FBNet* (`darts_lit.fbnet`) and *Searching FBNet's space*
(`darts_lit.fbnet_search`).
"""

from darts_lit.cli_base import add_run_command, config_from_cli

def register_search_fbnet(subparsers) -> None:
    """`darts-lit search-fbnet`: search FBNet's space (darts_lit.fbnet_search)."""
    from darts_lit.fbnet_search import FBNetSearchConfig

    add_run_command(
        subparsers, "search-fbnet", FBNetSearchConfig, run_search_fbnet,
        help="search FBNet's layer-wise space against measured latency",
        description="FBNet's search (Wu et al., CVPR 2019): per epoch, the weights on "
        "one part of the training set, then θ on the other against the cross-entropy "
        "and the expected latency from a lookup table measured on this machine. "
        "Writes latency_table.json on the first start, checkpoint.pt, history.json "
        "and architecture.json after every epoch, latency.png at the end, and prints "
        "the derived network.")


def run_search_fbnet(args) -> int:
    """Run `darts-lit search-fbnet`; return the exit status."""
    import matplotlib

    matplotlib.use("Agg")
    from darts_lit.fbnet_search import FBNetSearchConfig, fbnet_search

    cfg = config_from_cli(FBNetSearchConfig, args, "search-fbnet")
    _, history = fbnet_search(cfg, stop_after_epoch=args.stop_after)
    if history:
        from darts_lit.outputs import save_fbnet_plots

        save_fbnet_plots(history, cfg.out_dir)
        last = history[-1]
        print(f"derived network ({last['derived_lat']:.3f} ms): "
              f"{' '.join(last['derived'])}")
    print(f"run folder: {cfg.out_dir} (epoch {len(history)}/{cfg.epochs})")
    return 0


COMMANDS = (register_search_fbnet,)
