"""One training step of the evaluation network: which cell, layout and precision pay?

    python benchmarks/eval_step.py                       # paper size, batch 32, CPU
    python benchmarks/eval_step.py --batch-size 96 --repeats 9
    python benchmarks/eval_step.py --device cuda --batch-size 96

Times a full training step (forward with drop path and the auxiliary head, backward,
gradient clipping, SGD) of NetworkCIFAR(DARTS_V2) at the paper's size (C=36, 20 cells)
in several variants, interleaved in one process so that the machine's drift hits them
alike, and prints the median time of each and its ratio to the plain network:

- plain: the network chapter 9 teaches (`impl="plain"`, NCHW tensors);
- channels_last: the same plain cells in NHWC memory;
- fast: the fast cells of the chapter "The fast evaluation network" (`impl="fast"`) in
  NHWC memory, what `darts-lit train` runs by default;
- fast_bf16: also under bfloat16 autocast (`--amp`);
- compiled (with `--compile MODE`): what `darts-lit train --compile MODE` runs, the
  plain cells in NHWC memory under `torch.compile` (Inductor fuses them itself).

The last line is `eval_step_ratio=<fast / plain> channels_last_ratio=<...>
bf16_ratio=<fast_bf16 / plain>`, followed with `--compile` by `compiled_ratio=<...>
compile_seconds=<first step - median>`.
"""

import argparse
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

from darts_lit.cnn.genotypes import DARTS_V2
from darts_lit.core import speedups
from darts_lit.evaluation.model import NetworkCIFAR

VARIANTS = ("plain", "channels_last", "fast", "fast_bf16")


def make_step(variant: str, device, batch: int, layers: int, channels: int,
              compile_mode: str = "off", recompute: bool = False):
    """A training step of the variant's network on a fixed random batch, as
    `darts_lit.evaluation.train.train_epoch` takes it (`speedups.autocast` is `--amp`,
    `speedups.compile_model` is `--compile`, `recompute` is `--recompute-cells`)."""
    torch.manual_seed(0)
    fmt = torch.contiguous_format if variant == "plain" else torch.channels_last
    impl = "plain" if variant in ("plain", "channels_last", "compiled") else "fast"
    model = NetworkCIFAR(channels, 10, layers, True, DARTS_V2, impl=impl)
    model = model.to(device, memory_format=fmt).train()
    model.drop_path_prob = 0.2
    model.recompute_cells = recompute
    mode = compile_mode if variant == "compiled" else "off"
    net = speedups.compile_model(model, mode)
    opt = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with speedups.autocast(variant.endswith("bf16"), device):
            logits, logits_aux = net(x)
            loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(logits_aux, y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    return step


def timed(step, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--init-channels", type=int, default=36)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--compile", default="off", choices=speedups.COMPILE_MODES,
                   help="also time the channels-last network under torch.compile in "
                        "this mode (variant 'compiled'; compile time reported)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    variants = VARIANTS + (("compiled",) if args.compile != "off" else ())
    steps = {v: make_step(v, device, args.batch_size, args.layers, args.init_channels,
                          args.compile) for v in variants}
    first = {}
    for v, step in steps.items():  # warm-up: allocations, kernel selection, compiling
        first[v] = timed(step, device)
        step()  # a second warm-up step: a compiled step may settle only on it
    times = {v: [] for v in variants}
    for _ in range(args.repeats):
        for v, step in steps.items():  # interleaved: drift hits every variant
            times[v].append(timed(step, device))
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({torch.get_num_threads()} threads)")
    print(f"NetworkCIFAR(DARTS_V2) C={args.init_channels}, {args.layers} cells, batch "
          f"{args.batch_size}, {name}, torch {torch.__version__}, median of "
          f"{args.repeats}")
    median = {v: statistics.median(t) for v, t in times.items()}
    for v in variants:
        print(f"{v:20s} {median[v]:9.4f} s   ratio {median[v] / median['plain']:.3f}")
    last = (f"eval_step_ratio={median['fast'] / median['plain']:.3f} "
            f"channels_last_ratio={median['channels_last'] / median['plain']:.3f} "
            f"bf16_ratio={median['fast_bf16'] / median['plain']:.3f}")
    if "compiled" in variants:
        print(f"compiling ({args.compile}): first step {first['compiled']:.1f} s")
        last += (f" compiled_ratio={median['compiled'] / median['plain']:.3f} "
                 f"compile_seconds={first['compiled'] - median['compiled']:.1f}")
    print(last)


if __name__ == "__main__":
    main()
