"""`darts-lit latency`: measure the latency lookup table of a search space.

    darts-lit latency --space fbnet --dataset digits --table runs/fbnet_table.json
    darts-lit latency --space darts --device cuda --batch-size 64 --table t.json
    darts-lit latency --space paper --batch-size 1 --threads 1 --runtime onnxruntime \
        --validate 20

Hand-written (not generated from the book); listed by `darts_lit.cli`. The table and
its use are explained in the chapters *Measuring latency* (`darts_lit.latency.timing`,
`darts_lit.latency.table`), *The latency objective* (`darts_lit.latency.objective`),
*FBNet* (`darts_lit.fbnet.space`) and *Latency where the network runs*
(`darts_lit.fbnet.runtimes`: the runtimes and `--validate`).
"""

import time
from pathlib import Path

from darts_lit.cli.base import fail, int_at_least, positive_int, run_command
from darts_lit.core.data import UserError

SHAPES = {"cifar10": (3, 32), "digits": (1, 8)}  # (in_channels, image_size)


def add_timing_options(p) -> None:
    """The options of how latencies are timed (shared with benchmarks/)."""
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (default: torch's; part of the key)")
    p.add_argument("--clock", choices=("auto", "wall", "cpu"), default="auto",
                   help="wall time, or the CPU time of the one torch thread (needs "
                   "one thread; robust on a machine shared with other processes); "
                   "auto (default): cpu on the CPU with one torch thread, else wall")
    p.add_argument("--runtime", default="eager", metavar="RUNTIME",
                   help="what runs each timed op: 'eager' (default, PyTorch), "
                   "'torchscript' (the traced module) or 'onnxruntime' (its ONNX "
                   "graph in ONNX Runtime, CPU); part of the table's key")
    p.add_argument("--warmup", type=int_at_least(0), default=5,
                   help="untimed runs (default: 5)")
    p.add_argument("--repeats", type=positive_int, default=20,
                   help="timed runs; the median is kept (default: 20)")


def timing_from_args(args) -> dict:
    """Apply `--threads`; the warmup, repeats and clock keywords of a timing."""
    import torch

    from darts_lit.core.utils import resolve_device
    from darts_lit.latency.timing import auto_clock, check_clock

    if args.threads:
        torch.set_num_threads(args.threads)
    clock = auto_clock(args.device) if args.clock == "auto" else args.clock
    try:  # the options' mistakes, before any timing
        check_clock(clock, resolve_device(args.device))
    except ValueError as e:
        raise UserError(f"--clock: {e}") from None
    from darts_lit.latency.timing import runtime_named

    dtype = getattr(torch, getattr(args, "dtype", "float32"))
    runtime_named(args.runtime).check(args.device, dtype)  # known, installed, fits
    return dict(warmup=args.warmup, repeats=args.repeats, clock=clock,
                runtime=args.runtime)


def register_latency(subparsers) -> None:
    """`darts-lit latency`: build (or reuse) a latency lookup table and summarise it."""
    p = subparsers.add_parser(
        "latency", help="measure the latency lookup table of a search space",
        description="Time every candidate op at every shape where it runs in the "
        "search space (warm-up runs, then the median of timed runs) and print a "
        "summary. With --table, a matching saved table is reused and completed; one "
        "measured on another device, torch version, dtype, clock, runtime or thread "
        "count is refused.")
    p.add_argument("--space", choices=("darts", "fbnet", "paper"), default="fbnet",
                   help="FBNet's layer-wise space at --dataset's shapes, FBNet's "
                   "paper space (Table 1, 22 layers, at --image-size) or the DARTS "
                   "cell space (default: fbnet)")
    p.add_argument("--image-size", type=int_at_least(16), default=224,
                   help="paper: the input side in pixels (default: 224)")
    p.add_argument("--dataset", choices=tuple(SHAPES), default="cifar10",
                   help="input shape: cifar10 = 3x32x32, digits = 1x8x8 "
                   "(default: cifar10)")
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="batch of every timed forward pass (default: 8)")
    p.add_argument("--init-channels", type=positive_int, default=16,
                   help="darts: initial channels C (default: 16, the paper's)")
    p.add_argument("--layers", type=positive_int, default=8,
                   help="darts: cells of the search network (default: 8, the paper's)")
    p.add_argument("--device", default="cpu",
                   help="'cpu' (default), 'cuda', 'cuda:N' or 'auto'")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                   default="float32")
    add_timing_options(p)
    p.add_argument("--table", metavar="PATH", default=None,
                   help="JSON file to reuse and update (default: not saved)")
    p.add_argument("--rebuild", action="store_true",
                   help="re-measure even if --table holds a table for another device")
    p.add_argument("--validate", type=int_at_least(2), default=None, metavar="N",
                   help="fbnet/paper: time N networks from fast to slow and N drawn "
                   "uniformly, whole, in --runtime, twice each, and report how well "
                   "the table predicts them (Spearman ρ, the measurement's own "
                   "test-retest ρ, measured/predicted with a fitted overhead)")
    p.set_defaults(func=lambda args: run_command("darts-lit latency", run_latency,
                                                 args))


def _darts_table(args, in_channels, image_size, **kw):
    from darts_lit.cnn.model_search import Network
    from darts_lit.latency import darts as LD
    from darts_lit.latency import table as LT

    net = Network(args.init_channels, 10, args.layers, in_channels=in_channels)
    shapes = LD.darts_edge_shapes(net, image_size)
    table = LT.load_or_measure(args.table, LD.darts_specs(shapes, args.batch_size),
                              LD.make_darts_op, **kw)
    lat_n, lat_r = LD.darts_latency_matrices(shapes, table, args.batch_size)
    k = lat_n.shape[1]
    uniform = (lat_n.sum() + lat_r.sum()).item() / k
    return table, [f"{len(shapes)} edges in {args.layers} cells",
                   f"E[LAT] of the supernet at uniform α: {uniform:.3f} ms"]


def _fbnet_table(args, in_channels, image_size, **kw):
    from darts_lit.fbnet import space as fbnet
    from darts_lit.fbnet.models import paper_space

    space = (paper_space(image_size=args.image_size) if args.space == "paper"
             else fbnet.FBNetSpace.for_images(in_channels, 10, image_size))
    table = fbnet.fbnet_table(space, args.batch_size, path=args.table, **kw)
    lat, fixed = fbnet.fbnet_latency(space, table, args.batch_size)
    args.fbnet_space = space  # for --validate
    return table, [
        f"{len(lat)} searchable layers x {lat.shape[1]} blocks; stem + head "
        f"{fixed:.3f} ms",
        f"fastest network {lat.min(1).values.sum().item() + fixed:.3f} ms, "
        f"slowest {lat.max(1).values.sum().item() + fixed:.3f} ms, "
        f"uniform supernet E[LAT] {lat.mean(1).sum().item() + fixed:.3f} ms"]


def run_latency(args) -> int:
    """Run `darts-lit latency` with the parsed `args`; return the exit status."""
    import torch

    from darts_lit.core.runs import unwritable
    from darts_lit.latency.table import StaleTableError

    if args.table is not None:  # before minutes of timing, not after
        table_path = Path(args.table)
        if table_path.is_dir():
            raise UserError(f"--table: {table_path} is a folder; give the JSON file "
                            "to reuse or write")
        if problem := unwritable(table_path.parent):
            raise UserError(f"--table: {problem}")
    if args.validate and args.space == "darts":
        raise UserError("--validate samples networks of FBNet's space: use --space "
                        "fbnet or paper (the DARTS cell space has no whole-network "
                        "sampler here)")
    in_channels, image_size = SHAPES[args.dataset]
    try:
        timing = timing_from_args(args)
    except RuntimeError as e:  # no such device
        return fail("darts-lit latency", e)
    kw = dict(device=args.device, dtype=getattr(torch, args.dtype),
              rebuild=args.rebuild, **timing)
    build = _darts_table if args.space == "darts" else _fbnet_table
    t0 = time.perf_counter()
    try:
        table, lines = build(args, in_channels, image_size, **kw)
    except StaleTableError as e:  # a UserError, said before the summary
        return fail("darts-lit latency", e)
    shapes = (f"{args.image_size}x{args.image_size}" if args.space == "paper"
              else f"{args.dataset} shapes")
    print(f"latency table: {len(table.entries)} entries ({args.space} space, "
          f"{shapes}, batch {args.batch_size}) in {time.perf_counter() - t0:.1f} s")
    print(f"device: {table.device}; torch {table.torch}; {table.dtype}; "
          f"{table.clock} clock; runtime {table.runtime} {table.runtime_version}")
    for line in lines:
        print(line)
    by_op = {}
    for key, ms in table.entries.items():
        by_op.setdefault(key.split("|")[0], []).append(ms)
    for op, values in sorted(by_op.items(), key=lambda kv: sum(kv[1])):
        mean_us = 1e3 * sum(values) / len(values)
        print(f"  {op:14s} {len(values):3d} shapes  mean {mean_us:9.1f} µs")
    if args.table:
        print(f"saved: {args.table}")
    if args.validate:
        from darts_lit.fbnet.runtimes import format_validation, validate_runtime

        report = validate_runtime(args.fbnet_space, table, args.validate,
                                  args.batch_size, args.device, warmup=args.warmup,
                                  repeats=args.repeats)
        print("validation, whole networks against the table's sums:")
        for line in format_validation(report):
            print(line)
    return 0


COMMANDS = (register_latency,)
