"""How well does a latency lookup table predict the latency of whole networks?

    python benchmarks/latency_table.py                      # CPU, CIFAR-size inputs
    python benchmarks/latency_table.py --device cuda --batch-size 64 --networks 20
    python benchmarks/latency_table.py --dataset digits --threads 1 --clock cpu
    python benchmarks/latency_table.py --space paper --batch-size 1 --threads 1
    PYTHONPATH=. python3 benchmarks/latency_table.py --device cuda  # not installed

Needs only torch (numpy comes with it); darts_lit is imported from the repository root
when it is on PYTHONPATH, and tqdm, if present, only adds a progress bar.

Measures the lookup table of FBNet's layer-wise space (darts_lit.fbnet.space, scaled
down as in the book; `--space paper`: the paper's 22-layer space at 224x224, FBNet-A/B/C
included), samples `--networks` derived networks from mostly fast to mostly slow
blocks, times each end to end, and compares with the table's prediction (the sum of
the chosen blocks' entries plus stem and head). Prints one line per network, then the
Spearman rank correlation and the mean relative error; the last line is exactly
`spearman=<rho> mean_relative_error=<e> networks=<n>`.
"""

import argparse
import time

from darts_lit.cli.latency import SHAPES, add_timing_options, timing_from_args
from darts_lit.fbnet.models import FBNET_ARCHS, validate_paper_space
from darts_lit.fbnet.space import FBNetSpace, fbnet_latency, fbnet_table
from darts_lit.fbnet.validation import sample_choices, validate_table

def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="'cpu', 'cuda', 'cuda:N', 'auto'")
    p.add_argument("--batch-size", type=int, default=8,
                   help="batch of the table and of the end-to-end timings")
    p.add_argument("--networks", type=int, default=12,
                   help="derived networks to time end to end (at least 2)")
    p.add_argument("--dataset", choices=tuple(SHAPES), default="cifar10",
                   help="input shape: cifar10 = 3x32x32, digits = 1x8x8")
    p.add_argument("--space", choices=("cpu", "paper"), default="cpu",
                   help="the book's CPU-sized space, or the paper's (Table 1) at "
                   "--image-size pixels with FBNet-A/B/C added to the networks")
    p.add_argument("--image-size", type=int, default=224,
                   help="input side of --space paper (default 224)")
    add_timing_options(p)
    p.add_argument("--table", default=None, metavar="PATH",
                   help="reuse/save the table as JSON (refused if from another device)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled networks")
    args = p.parse_args(argv)
    if args.networks < 2:
        p.error("--networks must be at least 2 for a rank correlation")
    return args


def main(argv=None) -> None:
    """Build the table, time the sampled networks, print the comparison."""
    args = parse_args(argv)
    timing = timing_from_args(args)
    if args.space == "paper":
        return paper(args, timing)
    in_channels, size = SHAPES[args.dataset]
    space = FBNetSpace.for_images(in_channels, 10, size)
    t0 = time.perf_counter()
    table = fbnet_table(space, args.batch_size, args.device, path=args.table, **timing)
    lat, fixed = fbnet_latency(space, table, args.batch_size)
    print(f"table: {len(table.entries)} entries on {table.device} "
          f"(torch {table.torch}, {table.dtype}, {table.clock} clock), "
          f"batch {args.batch_size}, "
          f"{args.dataset} shapes, {time.perf_counter() - t0:.1f} s")
    choices = sample_choices(lat, args.networks, args.seed)
    report = validate_table(space, lat, fixed, choices, args.batch_size, args.device,
                            **timing)
    print(f"{'network':>7s} {'predicted ms':>12s} {'measured ms':>11s} "
          f"{'rel. err':>8s}  blocks")
    for i, (c, p, m) in enumerate(zip(choices, report["predicted"], report["measured"],
                                      strict=True)):
        blocks = " ".join(space.blocks[k] for k in c)
        print(f"{i:7d} {p:12.3f} {m:11.3f} {abs(p - m) / m:8.1%}  {blocks}")
    print(f"spearman={report['spearman']:.4f} "
          f"mean_relative_error={report['mean_relative_error']:.4f} "
          f"networks={args.networks}")


def paper(args, timing) -> None:
    """The paper's space: sampled networks and FBNet-A/B/C, table vs end to end."""
    r = validate_paper_space(args.image_size, args.batch_size, args.networks,
                             args.seed, args.device, path=args.table, **timing)
    side = args.image_size
    print(f"table: {r['table_entries']} entries, built in {r['table_seconds']:.1f} s "
          f"(paper space, {side}x{side}, batch {args.batch_size})")
    rows = [(f"sample {i}", p, m) for i, (p, m) in enumerate(
        zip(r["predicted"], r["measured"], strict=True))]
    rows += [(name, r[name]["predicted"], r[name]["measured"]) for name in FBNET_ARCHS]
    print(f"{'network':>9s} {'predicted ms':>12s} {'measured ms':>11s} "
          f"{'rel. err':>8s}")
    for name, p, m in rows:
        print(f"{name:>9s} {p:12.3f} {m:11.3f} {abs(p - m) / m:8.1%}")
    print(f"spearman={r['spearman_all']:.4f} "
          f"mean_relative_error={r['mean_relative_error_all']:.4f} "
          f"networks={r['networks']}")


if __name__ == "__main__":
    main()
