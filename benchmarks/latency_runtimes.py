"""Lookup tables timed in three runtimes, each checked against whole networks run there.

    python benchmarks/latency_runtimes.py --threads 1                 # paper space, 224
    python benchmarks/latency_runtimes.py --threads 1 --networks 40 --repeats 25 \
        --clock cpu --json benchmarks/results/latency_runtimes.json   # the stored run
    python benchmarks/latency_runtimes.py --image-size 64 --networks 6  # a quick look

For each runtime (eager PyTorch, traced TorchScript, ONNX Runtime; chapter
13_fbnet_runtimes), builds the lookup table of FBNet's paper space (Table 1, 22 layers)
at batch `--batch-size`, then times `--networks` networks from fast to slow and
`--networks` drawn uniformly from the space, each exported whole and timed twice (two
rounds), in the same runtime, and compares them with the table's sums: Spearman ρ, the
test-retest ρ of the measurement itself, the median measured/predicted ratio, raw and
with a fixed overhead fitted on the fast-to-slow sample. Also counts the layers whose
blocks change order between the eager and the ONNX Runtime table. The last line is
exactly `<runtime>_<sample>_rho=<ρ> <runtime>_<sample>_retest=<ρ>
<runtime>_<sample>_ratio=<r> ...` for every runtime and sample.
"""

import argparse
import json
import statistics
import time

import torch

import darts_lit  # noqa: F401  (registers the runtimes)
from darts_lit.cli.latency import add_timing_options, timing_from_args
from darts_lit.core.utils import save_json
from darts_lit.fbnet.models import paper_space
from darts_lit.fbnet.runtimes import format_validation, rank_changes, validate_runtime
from darts_lit.fbnet.space import fbnet_table
from darts_lit.latency.table import device_name

RUNTIMES = ("eager", "torchscript", "onnxruntime")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu",
                   help="'cpu' (ONNX Runtime times the CPU)")
    p.add_argument("--image-size", type=int, default=224,
                   help="input side (paper: 224)")
    p.add_argument("--batch-size", type=int, default=1, help="batch of every timing")
    p.add_argument("--networks", type=int, default=20,
                   help="networks per sample (at least 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled networks")
    p.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    p.add_argument("--json", default=None, metavar="PATH",
                   help="write every figure (and each network's times) here")
    add_timing_options(p)
    p.set_defaults(warmup=5, repeats=15)
    args = p.parse_args(argv)
    if args.networks < 2:
        p.error("--networks must be at least 2 for a rank correlation")
    return args


def main(argv=None) -> dict:
    """Build and validate the table of each runtime; print and return the figures."""
    args = parse_args(argv)
    timing = timing_from_args(args)
    clock = timing.pop("clock")
    timing.pop("runtime")
    space = paper_space(image_size=args.image_size)
    results = {"machine": f"{device_name(args.device)}, torch {torch.__version__}",
               "image_size": args.image_size, "batch": args.batch_size,
               "networks": args.networks, "clock": clock, "seed": args.seed,
               "warmup": timing["warmup"], "repeats": timing["repeats"],
               "runtimes": {}}
    tables = {}
    for name in args.runtimes:
        t0 = time.perf_counter()
        tables[name] = fbnet_table(space, args.batch_size, args.device, clock=clock,
                                   runtime=name, **timing)
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = validate_runtime(space, tables[name], args.networks, args.batch_size,
                                  args.device, args.seed, **timing)
        report |= {"table_seconds": built,
                   "validation_seconds": time.perf_counter() - t0,
                   "table_entries": len(tables[name].entries)}
        results["runtimes"][name] = report
        print(f"{name}: table of {len(tables[name].entries)} entries in {built:.0f} s, "
              f"validation in {report['validation_seconds']:.0f} s")
        for line in format_validation(report):
            print(line, flush=True)
    if {"eager", "onnxruntime"} <= set(tables):
        rows = rank_changes(space, tables["eager"], tables["onnxruntime"],
                            args.batch_size)
        results["rank_changes"] = {
            "layers_changed": sum(bool(r["moved"]) for r in rows),
            "median_layer_rho": statistics.median(r["spearman"] for r in rows),
            "fastest_changed": sum(r["fastest"][0] != r["fastest"][1] for r in rows),
            "layers": rows}
        rc = results["rank_changes"]
        print(f"eager vs onnxruntime: {rc['layers_changed']} of {len(rows)} layers "
              f"order their blocks differently (median per-layer ρ "
              f"{rc['median_layer_rho']:.2f}); the fastest block differs in "
              f"{rc['fastest_changed']}")
    if "onnxruntime" in results["runtimes"]:
        r = results["runtimes"]["onnxruntime"]
        targets = {"spread ρ ≥ 0.95": r["spread"]["spearman"] >= 0.95,
                   "uniform ρ ≥ its retest ρ": r["uniform"]["spearman"]
                   >= r["uniform"]["retest_spearman"],
                   "fitted ratio in [0.9, 1.1]": all(
                       0.9 <= r[s]["median_ratio_fitted"] <= 1.1
                       for s in ("spread", "uniform"))}
        results["onnxruntime_targets"] = targets
        print("onnxruntime targets: " + "; ".join(
            f"{k}: {'met' if v else 'NOT met'}" for k, v in targets.items()))
    if args.json:
        save_json(results, args.json)
    print(" ".join(f"{name}_{s}_{key}={r[s][field]:.4f}"
                   for name, r in results["runtimes"].items()
                   for s in ("spread", "uniform")
                   for key, field in (("rho", "spearman"),
                                      ("retest", "retest_spearman"),
                                      ("ratio", "median_ratio_fitted"))))
    return results


if __name__ == "__main__":
    json.dumps(main())  # the figures are JSON-clean
