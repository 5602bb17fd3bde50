"""DARTS's collapse and its remedies, side by side on the same budget, over seeds.

    python benchmarks/collapse.py                          # S2 on the 8x8 digits
    python benchmarks/collapse.py --space s3 --seeds 1 2 3 4
    python benchmarks/collapse.py --dataset cifar10 --methods darts sdarts
    python benchmarks/collapse.py --methods l2 --add-to benchmarks/results/FILE.json

For every seed, one search per method in a space where DARTS tends to collapse
(R-DARTS's S2 by default: skip connection or 3x3 separable convolution on each edge),
with the same settings and budget (`SearchConfig`, the method's settings changed), λ_max
of the validation loss's Hessian in α recorded after every epoch on --hessian-batches
fixed validation batches (chapter *When the search collapses*):

- darts: vanilla first-order DARTS;
- darts_es: DARTS-ES, stopped when the smoothed λ_max grows (R-DARTS, T = 0.75,
  window and lag 5: it cannot fire before the end of epoch 10);
- darts_plus: DARTS+, stopped at 2 skip connections or a stable ranking (10 epochs);
- darts_plus_min8: DARTS+ allowed to stop after 8 epochs at the earliest
  (--early-stop-min-epochs 8; the papers' rule may stop after the first);
- pdarts_cap: P-DARTS's cap of 2 skip connections at derivation;
- sdarts: SDARTS-RS, weight steps on softmax(α) + U[-ε, ε], ε rising to 0.3;
- sdarts_adv: SDARTS-ADV, weight steps on softmax(α) + the δ in that box found by 7
  steps of sign-gradient ascent of the training loss (9 more forward passes and 7
  more backward passes per weight step);
- l2: R-DARTS's stronger weight decay on w, 9 times the default (27e-4).

The result of each search (`search_result`: with early stopping, the epoch the rule
chose) is trained from scratch briefly (a small `NetworkCIFAR`) and tested. Per method
and seed the table lists the epochs run, the skip connections of the result's normal
cell and its parameter-free operations (skip, pooling, noise, none), λ_max at the first
and last epoch, and the test accuracy; then per method the
means (and the accuracy's standard deviation) over seeds. The last line is exactly
`<method>_acc=<mean> ... <method>_skips=<mean> ... <method>_free=<mean> ...
<method>_lam=<mean last λ_max> ...`
for the methods run, in the order of --methods (the means are
`darts_lit.collapse_figures.remedy_summary`'s). --add-to adds the methods run to a file
written by --json before, refusing (before it searches) one with other settings or with
one of these methods already in it.
"""

import argparse
import json
from pathlib import Path

import torch
from search_variants import check_run_args, run_all, run_parser, train_cell

from darts_lit.collapse import PARAMETER_FREE, SPACES
from darts_lit.collapse_figures import merge_results, remedy_summary
from darts_lit.search import SearchConfig, search, search_result
from darts_lit.utils import save_json

METHODS = {"darts": {}, "darts_es": {"early_stop": "darts_es"},
           "darts_plus": {"early_stop": "darts_plus"},
           "darts_plus_min8": {"early_stop": "darts_plus", "early_stop_min_epochs": 8},
           "pdarts_cap": {"max_skips": 2},
           "sdarts": {"sdarts_epsilon": 0.3},
           "sdarts_adv": {"sdarts_epsilon": 0.3, "sdarts_attack_steps": 7},
           "l2": {"weight_decay": 27e-4}}


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    p = run_parser(__doc__, METHODS, search_epochs=16, steps_per_epoch=10)
    p.add_argument("--space", default="s2", choices=tuple(SPACES))
    p.add_argument("--hessian-batches", type=int, default=1)
    p.add_argument("--json", metavar="FILE", default=None,
                   help="also write every result (λ_max, skips and parameter-free ops "
                   "per epoch, cells, accuracies) and the settings to FILE")
    p.add_argument("--add-to", metavar="FILE", default=None,
                   help="add this run's methods to the results in FILE (written by "
                   "--json), which must have the same settings and not these methods")
    args = p.parse_args(argv)
    check_run_args(p, args)
    if args.hessian_batches < 1:
        p.error("--hessian-batches must be ≥ 1")
    if args.add_to:  # refuse now, not after hours of searching
        try:
            merge_results(read_results(p, args.add_to), empty_results(args))
        except ValueError as e:
            p.error(f"--add-to {args.add_to}: {e}")
    return args


def read_results(p: argparse.ArgumentParser, path: str) -> dict:
    """The results stored in `path`, or a parser error naming the file."""
    try:
        stored = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        p.error(f"--add-to {path}: cannot read it ({e})")
    if not (isinstance(stored, dict) and isinstance(stored.get("settings"), dict)
            and isinstance(stored.get("results"), dict)):
        p.error(f"--add-to {path}: not a results file written by --json (it needs "
                "'settings' and 'results')")
    return stored


def empty_results(args) -> dict:
    """This run's settings with no results yet (what --json would write)."""
    return {"settings": vars(args), "results": {m: [] for m in args.methods}}


def run(method: str, seed: int, args) -> dict:
    """Search with `method`, train its result briefly; epochs, skips, λ_max, acc."""
    cfg = SearchConfig(dataset=args.dataset, space=args.space,
                       epochs=args.search_epochs, batch_size=args.batch_size,
                       init_channels=args.init_channels,
                       layers=args.layers, seed=seed, verbose=False, device="cpu",
                       max_steps_per_epoch=args.steps_per_epoch or None,
                       hessian_batches=args.hessian_batches, **METHODS[method])
    history = search(cfg)
    genotype = search_result(history)
    ops = [op for op, _ in genotype["normal"]]
    return {"epochs": len(history), "skips": ops.count("skip_connect"),
            "free": sum(op in PARAMETER_FREE for op in ops),
            "lam": [r["lambda_max"] for r in history],
            "skips_per_epoch": [r["skips"] for r in history],
            "free_per_epoch": [r["parameter_free"] for r in history],
            "valid_acc": [r["valid_acc"] for r in history],
            "stop": (history[-1].get("early_stop") or {}).get("genotype_epoch"),
            "acc": train_cell(genotype, seed, args), "normal": ops}


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.dataset}, space {args.space}: search {args.search_epochs} epochs x "
          f"{args.steps_per_epoch or 'all'} steps, C={args.init_channels}, "
          f"{args.layers} cells, λ_max on {args.hessian_batches} batch(es); results "
          f"trained {args.train_epochs} epochs")
    results = run_all(run, args, lambda r: (
        f"{r['epochs']:2d} epochs"
        + (f", result of epoch {r['stop']}" if r["stop"] else "")
        + f", skips {r['skips']}, parameter-free {r['free']}, "
        f"λ_max {r['lam'][0]:.4f} -> {r['lam'][-1]:.4f}, "
        f"test acc {r['acc']:5.1f}%  {' '.join(r['normal'])}"))
    run_results = {"settings": vars(args), "results": results}
    if args.json:
        save_json(run_results, args.json)
    if args.add_to:
        stored = json.loads(Path(args.add_to).read_text(encoding="utf-8"))
        save_json(merge_results(stored, run_results), args.add_to)
    means = remedy_summary(results)
    for m, s in means.items():
        print(f"{m:10s} mean: skips {s['skips']:.2f}, parameter-free {s['free']:.2f}, "
              f"last λ_max {s['lam1']:.4f}, test acc {s['acc']:5.1f} ± {s['sd']:4.1f}%")
    print(" ".join(f"{m}_acc={means[m]['acc']:.2f}" for m in args.methods) + " "
          + " ".join(f"{m}_skips={means[m]['skips']:.2f}" for m in args.methods) + " "
          + " ".join(f"{m}_free={means[m]['free']:.2f}" for m in args.methods) + " "
          + " ".join(f"{m}_lam={means[m]['lam1']:.4f}" for m in args.methods))


if __name__ == "__main__":
    main()
