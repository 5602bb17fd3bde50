"""How much faster is the library's search step than the plain one the book teaches?

    python benchmarks/search_step.py                          # CPU: CI size, paper size
    python benchmarks/search_step.py --device cuda --batch-size 64
    python benchmarks/search_step.py --sizes ci --threads 1   # the quick check

Times first-order and second-order DARTS search steps (an architecture step with the
`Architect`, then a weight step, as `search_epoch` takes them) of (a) the plain
implementation (`impl="plain"`: every edge computes every op, `none` as x·0, as the
paper's code) and (b) the library's fast path (`impl="fast"`, `darts_lit.perf.fast`), on
the same seeded network and random batch. The repeats of the two are interleaved, so a
slow spell of a shared machine hits both; the medians are reported. Peak memory is that
of a first-order step above what was allocated before it: on CUDA the allocator's peak,
on the CPU the peak of the running sum of the allocations and frees recorded by
torch.profiler (`darts_lit.perf.timing.peak_memory`). Sizes: `ci` (C=4, 5 cells, 16×16,
batch 8) and `paper` (the options below; the paper's search: C=16, 8 cells, 32×32, batch
32). For the library path it also times single network passes by what they differentiate
(`darts_lit.perf.timing.pass_times`: α, the weights, both): a second-order step is 2
weight passes, 1 of both and 2 of α, a first-order step 1 weight pass and 1 of α, and
the quotient of the two sums, printed as `second_over_first_of_passes`, is what the
second-order ratio cannot go below except by costs both steps share.
The last line is exactly
`first_order_ratio=<library/plain> second_over_first=<library 2nd/1st>
memory_ratio=<library/plain>`, of the last size run.
"""

import argparse

import torch

from darts_lit.perf.timing import (
    build_setup,
    measure_steps,
    pass_times,
    passes_quotient,
)

CI = {"init_channels": 4, "layers": 5, "batch_size": 8, "image_size": 16}


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="'cpu', 'cuda', 'cuda:N'")
    p.add_argument("--batch-size", type=int, default=32, help="paper size: 32")
    p.add_argument("--init-channels", type=int, default=16, help="paper size: 16")
    p.add_argument("--layers", type=int, default=8, help="paper size: 8 cells")
    p.add_argument("--image-size", type=int, default=32, help="paper size: 32")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed steps of each kind; the median is kept")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--sizes", nargs="+", choices=("ci", "paper"),
                   default=["ci", "paper"], help="which sizes to run, in order")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time, or this process's CPU time (with --threads 1: "
                   "robust on a machine shared with other processes)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.clock == "cpu" and (args.threads != 1 or args.device != "cpu"):
        p.error("--clock cpu needs --threads 1 and --device cpu")
    return args


def run_size(size: dict, args) -> dict:
    """Timings and memory of plain and library at one size; prints their table."""
    setups = {impl: build_setup(impl, size["init_channels"], size["layers"],
                                size["batch_size"], size["image_size"], args.device)
              for impl in ("plain", "fast")}
    res = measure_steps(setups, {}, args.repeats, args.warmup, args.device,
                        clock=args.clock)
    label = ("C={init_channels} layers={layers} {image_size}x{image_size} "
             "batch={batch_size}").format(**size)
    for impl, name in (("plain", "plain"), ("fast", "library")):
        r = res[impl]
        mib = r["memory"] / 2**20
        print(f"{label:36} {name:8} first_order={r['first']:8.3f}s "
              f"second_order={r['second']:8.3f}s peak_memory={mib:10.3f}MiB",
              flush=True)
    t = pass_times(setups["fast"], args.repeats, args.device, args.clock)
    print(f"{label:36} library  passes: alpha={t['alpha']:.3f}s "
          f"weights={t['weights']:.3f}s alpha+weights={t['alpha+weights']:.3f}s "
          f"second_over_first_of_passes={passes_quotient(t):.3f}", flush=True)
    return res


def main(argv=None) -> None:
    """Run the sizes asked for; the last line holds the ratios of the last one."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    paper = {"init_channels": args.init_channels, "layers": args.layers,
             "batch_size": args.batch_size, "image_size": args.image_size}
    print(f"device={args.device} torch={torch.__version__} "
          f"threads={torch.get_num_threads()} repeats={args.repeats} "
          f"clock={args.clock}", flush=True)
    for name in args.sizes:
        res = run_size(CI if name == "ci" else paper, args)
    plain, fast = res["plain"], res["fast"]
    print(f"first_order_ratio={fast['first'] / plain['first']:.3f} "
          f"second_over_first={fast['second'] / fast['first']:.3f} "
          f"memory_ratio={fast['memory'] / plain['memory']:.3f}")


if __name__ == "__main__":
    main()
