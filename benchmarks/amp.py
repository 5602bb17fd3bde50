"""Mixed precision (`--amp`): the accuracy and time of training with and without it.

    python benchmarks/amp.py                    # CIFAR-10 from DARTS_DATA, 3 epochs
    python benchmarks/amp.py --epochs 5 --seeds 1 2 3
    python benchmarks/amp.py --dataset digits   # offline, seconds

For every seed, trains the same small evaluation network (`TrainConfig`: DARTS_V2,
auxiliary head, drop path, Cutout, the paper's optimizer) twice from the same start,
once in float32 and once with `amp=True` (bfloat16 autocast of the forward passes), and
tests both in float32. Prints, per seed and precision, the test top-1 accuracy, the
final training loss and the seconds per epoch; then the mean and standard deviation
over seeds. The last line is exactly
`fp32_acc=<mean> amp_acc=<mean> acc_difference=<amp - fp32> time_ratio=<amp / fp32>`.
"""

import argparse
import statistics
import tempfile

import torch

from darts_lit.evaluation.recipe import TrainConfig
from darts_lit.evaluation.train import train

def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cifar10", choices=("cifar10", "digits"))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--init-channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-steps-per-epoch", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if min(args.epochs, args.init_channels, args.batch_size) < 1 or args.layers < 3:
        p.error("--epochs, --init-channels and --batch-size must be ≥ 1, --layers ≥ 3")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {False: [], True: []}
    for seed in args.seeds:
        for amp in (False, True):
            with tempfile.TemporaryDirectory() as out:
                config = TrainConfig(
                    dataset=args.dataset, epochs=args.epochs, seed=seed, amp=amp,
                    init_channels=args.init_channels, layers=args.layers,
                    batch_size=args.batch_size, device="cpu", verbose=False,
                    cutout_length=4 if args.dataset == "digits" else 16,
                    max_steps_per_epoch=args.max_steps_per_epoch, out_dir=out)
                history = train(config).history
            last = history[-1]
            seconds = statistics.fmean(r["seconds"] for r in history)
            rows[amp].append((last["test_top1"], seconds))
            print(f"seed {seed}  {'amp ' if amp else 'fp32'}  test_top1 "
                  f"{last['test_top1']:6.2f}  train_loss {last['train_loss']:.4f}  "
                  f"{seconds:7.1f} s/epoch", flush=True)
    summary = {}
    for amp, name in ((False, "fp32"), (True, "amp")):
        acc = [a for a, _ in rows[amp]]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        summary[name] = (statistics.fmean(acc),
                         statistics.fmean(s for _, s in rows[amp]))
        print(f"{name:5} test_top1 {summary[name][0]:6.2f} ± {sd:.2f} over "
              f"{len(acc)} seeds, {summary[name][1]:.1f} s/epoch")
    (a32, t32), (a16, t16) = summary["fp32"], summary["amp"]
    print(f"fp32_acc={a32:.2f} amp_acc={a16:.2f} acc_difference={a16 - a32:.2f} "
          f"time_ratio={t16 / t32:.3f}")


if __name__ == "__main__":
    main()
