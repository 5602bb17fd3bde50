"""DARTS's search variants side by side on the same budget, over several seeds.

    python benchmarks/search_variants.py                    # the 8x8 digits, 3 seeds
    python benchmarks/search_variants.py --methods first single --seeds 1 2
    python benchmarks/search_variants.py --dataset cifar10 --search-epochs 10

For every seed, one search per method with the same settings and budget
(`SearchConfig`, one setting changed): first-order bilevel, second-order bilevel
(`unrolled`), single-level (`single_level`: w and α on the same training batches, no
split) and PC-DARTS (`partial_channels=4` with `edge_normalization`, first order).
Each derived cell is then trained from scratch for a few epochs (`train`, a small
`NetworkCIFAR`) and tested. The table lists, per method and seed, the skip
connections and parameter-free operations of the derived normal cell and the test
accuracy; then the mean and standard deviation over seeds. The last line is exactly
`<method>_acc=<mean> ... <method>_skips=<mean> ...` for the methods run, in the
order of `--methods`.
"""

import argparse
import statistics

import torch

from darts_lit.cnn.collapse import PARAMETER_FREE
from darts_lit.cnn.search import SearchConfig, search, search_result
from darts_lit.evaluation.recipe import TrainConfig
from darts_lit.evaluation.train import train

METHODS = {"first": {}, "second": {"unrolled": True}, "single": {"single_level": True},
           "pc": {"partial_channels": 4, "edge_normalization": True}}


def run_parser(doc: str, methods: dict, search_epochs: int,
               steps_per_epoch: int) -> argparse.ArgumentParser:
    """The options of the comparison benchmarks: data, methods, seeds, budget, sizes."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--dataset", default="digits", choices=("digits", "cifar10"))
    p.add_argument("--methods", nargs="+", choices=tuple(methods),
                   default=list(methods))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--search-epochs", type=int, default=search_epochs)
    p.add_argument("--steps-per-epoch", type=int, default=steps_per_epoch,
                   help="batches per search epoch (0: the whole split)")
    p.add_argument("--train-epochs", type=int, default=3)
    p.add_argument("--train-layers", type=int, default=None,
                   help="cells of the network each result is trained in (default: "
                   "--layers)")
    p.add_argument("--train-channels", type=int, default=None,
                   help="its initial channels (default: --init-channels)")
    p.add_argument("--init-channels", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    return p


def check_run_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One line naming the options out of range (argparse's error, exit status 2)."""
    channels = [args.init_channels] + [args.train_channels] * (
        args.train_channels is not None)
    layers = [args.layers] + [args.train_layers] * (args.train_layers is not None)
    if min(args.search_epochs, args.train_epochs, *channels) < 1 or min(layers) < 3 \
            or args.steps_per_epoch < 0:
        p.error("epochs, --init-channels and --train-channels must be ≥ 1, --layers "
                "and --train-layers ≥ 3, --steps-per-epoch ≥ 0")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    p = run_parser(__doc__, METHODS, search_epochs=4, steps_per_epoch=20)
    args = p.parse_args(argv)
    check_run_args(p, args)
    return args


def run(method: str, seed: int, args) -> dict:
    """Search with `method`, train the derived cell briefly; skips and accuracy."""
    cfg = SearchConfig(dataset=args.dataset, epochs=args.search_epochs,
                       batch_size=args.batch_size, init_channels=args.init_channels,
                       layers=args.layers, seed=seed, verbose=False, device="cpu",
                       max_steps_per_epoch=args.steps_per_epoch or None,
                       **METHODS[method])
    genotype = search_result(search(cfg).history)
    ops = [op for op, _ in genotype["normal"]]
    return {"skips": ops.count("skip_connect"),
            "free": sum(op in PARAMETER_FREE for op in ops),
            "acc": train_cell(genotype, seed, args), "normal": ops}


def train_cell(genotype: dict, seed: int, args) -> float:
    """Test accuracy (%) of a genotype's small `NetworkCIFAR`, trained from scratch
    for `args.train_epochs` epochs (at the search's width and depth unless
    --train-channels / --train-layers say otherwise)."""
    from darts_lit.cnn.genotypes import genotype_from_dict

    history = train(TrainConfig(genotype=genotype_from_dict(genotype),
                                dataset=args.dataset, epochs=args.train_epochs,
                                batch_size=args.batch_size,
                                init_channels=args.train_channels or args.init_channels,
                                layers=args.train_layers or args.layers,
                                auxiliary=False, seed=seed, verbose=False,
                                cutout_length=4 if args.dataset == "digits" else 16,
                                device="cpu")).history
    return history[-1]["test_top1"]


def run_all(run, args, describe) -> dict:
    """`run(method, seed, args)` for every method and seed, each row printed (with
    `describe(result)`) as soon as it is measured; method → results in seed order."""
    results = {m: [] for m in args.methods}
    for m in args.methods:
        for seed in args.seeds:
            results[m].append(r := run(m, seed, args))
            print(f"{m:10s} seed {seed}: {describe(r)}", flush=True)
    return results


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.dataset}: search {args.search_epochs} epochs x "
          f"{args.steps_per_epoch or 'all'} steps, C={args.init_channels}, "
          f"{args.layers} cells; derived cells trained {args.train_epochs} epochs")
    results = run_all(run, args, lambda r: (
        f"skips {r['skips']}, parameter-free {r['free']}, test acc {r['acc']:5.1f}%  "
        f"{' '.join(r['normal'])}"))
    means = {}
    for m, rows in results.items():
        accs, skips = [r["acc"] for r in rows], [r["skips"] for r in rows]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        means[m] = (statistics.mean(accs), statistics.mean(skips))
        print(f"{m:7s} mean test acc {means[m][0]:5.1f} ± {sd:4.1f}%, mean skips "
              f"{means[m][1]:.2f}")
    print(" ".join(f"{m}_acc={means[m][0]:.2f}" for m in args.methods) + " "
          + " ".join(f"{m}_skips={means[m][1]:.2f}" for m in args.methods))


if __name__ == "__main__":
    main()
