"""Memory and time of a PC-DARTS search step for K = 1, 2, 4, 8, side by side.

    python benchmarks/pc_darts.py                       # CPU, the paper's search size
    python benchmarks/pc_darts.py --device cuda --batch-size 64 --budget-mib 10240
    python benchmarks/pc_darts.py --threads 1 --clock cpu --ks 1 4

For each K and each cell (--impls: PC-DARTS's plain cell, edge by edge, and its fast
cell, which shares the candidates' work between the edges leaving a node), a
`PCNetwork` (chapter *Partial channels: PC-DARTS*; with edge normalisation unless
--no-edge-norm) takes first-order search steps (an architecture step with the
`Architect`, then a weight step, as `search_epoch` takes them) on the same seeded random
batch; `K=1 plain` without edge normalisation is DARTS's plain network, and the row
`darts` is the library's fast DARTS cell for reference. The repeats of all rows are
interleaved and their medians reported. Peak memory is that of one first-order step
above what was allocated before it (`darts_lit.perf.timing.peak_memory`), measured at
the batch size and at half of it; a straight line through the two gives the largest
batch whose step fits --budget-mib, an estimate labelled as such. Sizes default to the
paper's search (C=16, 8 cells, 32×32). The last line is exactly
`memory_ratio_k4=<K4/K1> time_ratio_k4=<K4/K1> max_batch_k1=<n> max_batch_k4=<n>`
(K = 4 with the last cell of --impls against K = 1 plain, for the K values run).
"""

import argparse
import functools
import math

import torch

from darts_lit.perf.pc_darts import PCNetwork
from darts_lit.perf.timing import (
    StepSetup,
    build_setup,
    measure_steps,
    peak_memory,
    search_step,
)

def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="'cpu', 'cuda', 'cuda:N'")
    p.add_argument("--batch-size", type=int, default=32, help="default: 32")
    p.add_argument("--init-channels", type=int, default=16, help="paper size: 16")
    p.add_argument("--layers", type=int, default=8, help="paper size: 8 cells")
    p.add_argument("--image-size", type=int, default=32, help="paper size: 32")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8],
                   help="the K values to compare (each must divide --init-channels)")
    p.add_argument("--impls", nargs="+", choices=("plain", "fast"),
                   default=["plain", "fast"], help="the PC-DARTS cells to compare")
    p.add_argument("--no-edge-norm", action="store_true",
                   help="without edge normalisation (K > 1 only)")
    p.add_argument("--budget-mib", type=float, default=4096.0,
                   help="memory budget for the largest-batch estimate")
    p.add_argument("--repeats", type=int, default=2, help="timed steps; median kept")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time, or this process's CPU time (needs --threads 1)")
    args = p.parse_args(argv)
    bad = [k for k in args.ks if k < 1 or args.init_channels % k]
    if bad:
        p.error(f"--ks: each K must be ≥ 1 and divide --init-channels "
                f"{args.init_channels}; got {bad}")
    if args.batch_size < 2 or args.repeats < 1 or args.budget_mib <= 0:
        p.error("--batch-size must be ≥ 2, --repeats ≥ 1, --budget-mib > 0")
    if args.clock == "cpu" and (args.threads != 1 or args.device != "cpu"):
        p.error("--clock cpu needs --threads 1 and --device cpu")
    return args


def setup(name: str, k: int, impl: str, batch: int, args, seed: int = 0) -> StepSetup:
    """The seeded network of row `name`, its optimizers and one random batch."""
    pc = None if name == "darts" else functools.partial(
        PCNetwork, k=k, edge_norm=k > 1 and not args.no_edge_norm, impl=impl)
    return build_setup("fast", args.init_channels, args.layers, batch, args.image_size,
                       args.device, seed=seed, network=pc)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {f"K={k} {impl}": (k, impl) for k in args.ks for impl in args.impls}
    rows["darts"] = (1, "fast")
    setups = {n: setup(n, *row, args.batch_size, args) for n, row in rows.items()}
    res = measure_steps(setups, {}, repeats=args.repeats, warmup=args.warmup,
                        device=args.device, orders=(False,), memory=True,
                        clock=args.clock)
    budget = args.budget_mib * 2**20
    print(f"C={args.init_channels}, {args.layers} cells, {args.image_size}x"
          f"{args.image_size}, batch {args.batch_size}, first-order steps, "
          f"device {args.device}, torch {torch.__version__}")
    print(f"{'row':10s} {'step (s)':>9s} {'peak MiB':>9s} {'MiB/sample':>10s} "
          f"{'max batch in budget (est.)':>27s}")
    for name, row in rows.items():
        half = setup(name, *row, args.batch_size // 2, args)
        m_half = peak_memory(lambda s=half: search_step(
            s.model, s.architect, s.w_optimizer, s.batch, False, 0.025), args.device)
        m_full = res[name]["memory"]
        per_sample = (m_full - m_half) / (args.batch_size - args.batch_size // 2)
        fixed = m_full - per_sample * args.batch_size
        res[name]["max_batch"] = (math.floor((budget - fixed) / per_sample)
                                  if per_sample > 0 else 0)
        print(f"{name:10s} {res[name]['first']:9.2f} {m_full / 2**20:9.1f} "
              f"{per_sample / 2**20:10.2f} {res[name]['max_batch']:27d}")
    impl = args.impls[-1]  # the last cell named (fast by default)
    base, k4 = res.get("K=1 plain"), res.get(f"K=4 {impl}")
    if base and k4:
        print(f"memory_ratio_k4={k4['memory'] / base['memory']:.3f} "
              f"time_ratio_k4={k4['first'] / base['first']:.3f} "
              f"max_batch_k1={base['max_batch']} max_batch_k4={k4['max_batch']}")


if __name__ == "__main__":
    main()
