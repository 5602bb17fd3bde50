"""DARTS's collapse and its remedies, side by side on the same budget, over seeds.

    python benchmarks/collapse.py                          # S2 on the 8x8 digits
    python benchmarks/collapse.py --space s3 --seeds 1 2 3 4
    python benchmarks/collapse.py --dataset cifar10 --methods darts sdarts
    python benchmarks/collapse.py --methods l2 --add-to benchmarks/results/FILE.json
    python benchmarks/collapse.py --merge A.json B.json --json AB.json

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
- sdarts: SDARTS-RS as this book first ran it, weight steps on softmax(α) +
  U[-ε, ε], ε rising to 0.3, the noise not clipped (--no-sdarts-clip; the stored
  results of benchmarks/results/ were measured with it);
- sdarts_clip: SDARTS-RS as its public code runs it: each perturbed row clamped to
  [0, 1] and rescaled to sum to 1;
- sdarts_adv: SDARTS-ADV, weight steps on softmax(α) + the δ in that box found by 7
  steps of sign-gradient ascent of the training loss (9 more forward passes and 7
  more backward passes per weight step);
- l2: R-DARTS's stronger weight decay on w, 27e-4 (9 times the paper's 3e-4,
  whatever --weight-decay gives the other methods).

darts_es, darts_plus, darts_plus_min8 and pdarts_cap follow vanilla DARTS's
trajectory and only stop it early or derive its cell differently. When `darts` has
searched the same seed earlier in the run (put it first in --methods), they are derived
from its history (`derived_history`) instead of searched again: the same records as
their own searches, which tests/test_collapse.py checks.

The result of each search (`search_result`: with early stopping, the epoch the rule
chose) is trained from scratch briefly (a small `NetworkCIFAR`) and tested, once
per cell and seed in a run (`trained_accuracy`). Per method
and seed the table lists the epochs run, the skip connections of the result's normal
cell and its parameter-free operations (skip, pooling, noise, none), λ_max at the first
and last epoch, and the test accuracy; then per method the
means (and the accuracy's standard deviation) over seeds. The last line is exactly
`<method>_acc=<mean> ... <method>_skips=<mean> ... <method>_free=<mean> ...
<method>_lam=<mean last λ_max> ...`
for the methods run, in the order of --methods (the means are
`darts_lit.cnn.remedies.remedy_summary`'s). --add-to adds the methods run to a file
written by --json before, refusing (before it searches) one with other settings or with
one of these methods already in it. --merge joins such files, written by runs in
parallel with the same settings and different methods, into the --json file, and
searches nothing.
"""

import argparse
import functools
import json
from pathlib import Path

import torch
from search_variants import check_run_args, run_all, run_parser, train_cell

from darts_lit.cnn.collapse import PARAMETER_FREE, SPACES, cap_skips
from darts_lit.cnn.remedies import merge_results, remedy_summary
from darts_lit.cnn.search import SearchConfig, early_stop_epoch, search, search_result
from darts_lit.core.utils import save_json

METHODS = {"darts": {}, "darts_es": {"early_stop": "darts_es"},
           "darts_plus": {"early_stop": "darts_plus"},
           "darts_plus_min8": {"early_stop": "darts_plus", "early_stop_min_epochs": 8},
           "pdarts_cap": {"max_skips": 2},
           "sdarts": {"sdarts_epsilon": 0.3, "sdarts_clip": False},
           "sdarts_clip": {"sdarts_epsilon": 0.3},
           "sdarts_adv": {"sdarts_epsilon": 0.3, "sdarts_attack_steps": 7},
           "l2": {"weight_decay": 27e-4}}


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    p = run_parser(__doc__, METHODS, search_epochs=16, steps_per_epoch=10)
    p.add_argument("--space", default="s2", choices=tuple(SPACES))
    p.add_argument("--hessian-batches", type=int, default=1)
    p.add_argument("--weight-decay", type=float, default=3e-4,
                   help="weight decay of w (every method but l2)")
    p.add_argument("--arch-learning-rate", type=float, default=3e-4,
                   help="Adam learning rate of α")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="also write every result (λ_max, skips and parameter-free ops "
                   "per epoch, cells, accuracies) and the settings to FILE")
    p.add_argument("--add-to", metavar="FILE", default=None,
                   help="add this run's methods to the results in FILE (written by "
                   "--json), which must have the same settings and not these methods")
    p.add_argument("--merge", metavar="FILE", nargs="+", default=None,
                   help="search nothing: join these files (written by --json, with "
                   "the same settings and different methods) into the --json file")
    args = p.parse_args(argv)
    if args.merge:
        given = [k for k, v in vars(args).items()
                 if k not in ("merge", "json") and v != p.get_default(k)]
        if not args.json or given:
            named = ", ".join("--" + k.replace("_", "-") for k in given) or "none"
            p.error("--merge needs --json (the file to write) and no other option "
                    f"(given: {named})")
        try:
            args.merged = functools.reduce(merge_results, [
                read_results(p, f, "--merge") for f in args.merge])
        except ValueError as e:
            p.error(f"--merge: {e}")
        return args
    check_run_args(p, args)
    if args.hessian_batches < 1:
        p.error("--hessian-batches must be ≥ 1")
    if args.weight_decay < 0 or args.arch_learning_rate <= 0:
        p.error("--weight-decay must be ≥ 0 and --arch-learning-rate > 0")
    if args.add_to:  # refuse now, not after hours of searching
        try:
            merge_results(read_results(p, args.add_to, "--add-to"),
                          empty_results(args))
        except ValueError as e:
            p.error(f"--add-to {args.add_to}: {e}")
    return args


def read_results(p: argparse.ArgumentParser, path: str, option: str) -> dict:
    """The results stored in `path`, or a parser error naming `option` and the file."""
    try:
        stored = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        p.error(f"{option} {path}: cannot read it ({e})")
    if not (isinstance(stored, dict) and isinstance(stored.get("settings"), dict)
            and isinstance(stored.get("results"), dict)):
        p.error(f"{option} {path}: not a results file written by --json (it needs "
                "'settings' and 'results')")
    return stored


def empty_results(args) -> dict:
    """This run's settings with no results yet (what --json would write)."""
    return {"settings": vars(args), "results": {m: [] for m in args.methods}}


def method_config(method: str, seed: int, args) -> SearchConfig:
    """The search of `method` for `seed` with the benchmark's settings."""
    return SearchConfig(dataset=args.dataset, space=args.space,
                        epochs=args.search_epochs, batch_size=args.batch_size,
                        init_channels=args.init_channels,
                        layers=args.layers, seed=seed, verbose=False, device="cpu",
                        max_steps_per_epoch=args.steps_per_epoch or None,
                        hessian_batches=args.hessian_batches,
                        **{"weight_decay": args.weight_decay,
                           "arch_learning_rate": args.arch_learning_rate,
                           **METHODS[method]})  # l2 sets its own weight decay


# the methods that only stop vanilla DARTS's search early or cap its derived cell
DERIVED = tuple(m for m, settings in METHODS.items() if settings and set(settings)
                <= {"early_stop", "early_stop_min_epochs", "max_skips"})


def derived_history(history: list, config: SearchConfig) -> list:
    """The history `config`'s search would record, from the history of the same search
    without its early-stopping rule and skip cap (vanilla DARTS, same seed)."""
    def capped(r):  # P-DARTS's cap on one epoch's normal cell
        alpha = torch.tensor(r["alphas"]["normal"], dtype=torch.float64).log()
        normal = cap_skips(alpha, len(r["genotype"]["normal"]) // 2, config.max_skips,
                           r["primitives"])  # softmax(log softmax(α)) = softmax(α)
        return {**r, "genotype": {**r["genotype"], "normal": [list(e) for e in normal]}}

    if config.max_skips is not None:
        history = [capped(r) for r in history]
    if config.early_stop == "none":
        return history
    for n in range(1, len(history) + 1):  # the epoch after which the rule fires
        if (chosen := early_stop_epoch(history[:n], config)) is not None:
            return history[:n - 1] + [{**history[n - 1], "early_stop": {
                "rule": config.early_stop, "genotype_epoch": chosen}}]
    return history


VANILLA = {}  # seed → the history of `darts` searched earlier in this process
TRAINED = {}  # (genotype, seed) → its test accuracy, trained earlier in this process


def trained_accuracy(genotype: dict, seed: int, args) -> float:
    """`train_cell`, once per genotype and seed: training is deterministic on the CPU,
    so a derived method whose result is vanilla DARTS's cell (a rule that did not fire,
    a cap with nothing to cap) gets the accuracy already measured (tested)."""
    key = (json.dumps(genotype, sort_keys=True), seed)
    if key not in TRAINED:
        TRAINED[key] = train_cell(genotype, seed, args)
    return TRAINED[key]


def run(method: str, seed: int, args) -> dict:
    """Search with `method` (or derive its search from vanilla DARTS's, see
    `derived_history`), train its result briefly; epochs, skips, λ_max, acc."""
    cfg = method_config(method, seed, args)
    if method in DERIVED and seed in VANILLA:
        history = derived_history(VANILLA[seed], cfg)
    else:
        history = search(cfg).history
    if method == "darts":
        VANILLA[seed] = history
    genotype = search_result(history)
    ops = [op for op, _ in genotype["normal"]]
    return {"epochs": len(history), "skips": ops.count("skip_connect"),
            "free": sum(op in PARAMETER_FREE for op in ops),
            "lam": [r["lambda_max"] for r in history],
            "skips_per_epoch": [r["skips"] for r in history],
            "free_per_epoch": [r["parameter_free"] for r in history],
            "valid_acc": [r["valid_acc"] for r in history],
            "stop": (history[-1].get("early_stop") or {}).get("genotype_epoch"),
            "acc": trained_accuracy(genotype, seed, args), "normal": ops}


def summarise(methods: list, results: dict) -> None:
    """Print each method's means over seeds, then the machine-readable line."""
    means = remedy_summary(results)
    for m, s in means.items():
        print(f"{m:10s} mean: skips {s['skips']:.2f}, parameter-free {s['free']:.2f}, "
              f"last λ_max {s['lam1']:.4f}, test acc {s['acc']:5.1f} ± {s['sd']:4.1f}%")
    print(" ".join(f"{m}_acc={means[m]['acc']:.2f}" for m in methods) + " "
          + " ".join(f"{m}_skips={means[m]['skips']:.2f}" for m in methods) + " "
          + " ".join(f"{m}_free={means[m]['free']:.2f}" for m in methods) + " "
          + " ".join(f"{m}_lam={means[m]['lam1']:.4f}" for m in methods))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.merge:
        merged = args.merged
        merged["settings"]["json"] = args.json
        save_json(merged, args.json)
        summarise(merged["settings"]["methods"], merged["results"])
        return
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
    summarise(args.methods, results)


if __name__ == "__main__":
    main()
