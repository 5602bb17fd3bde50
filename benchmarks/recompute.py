"""What does --recompute-cells save in memory, and what does it cost in time?

    python benchmarks/recompute.py                      # CPU, the sizes below
    python benchmarks/recompute.py --device cuda --search-batch 64 --eval-batch 96

Measures two steps with and without recomputed cells (chapter "Recomputing cells"):

- a first-order search step of the fast supernet (an α step, then a weight step:
  `darts_lit.perf.timing.measure_steps`), by default at the paper's search size (C=16,
  8 cells, 32×32; batch 32 here);
- a training step of the fast evaluation network NetworkCIFAR(DARTS_V2), by default at
  the paper's size (C=36, 20 cells, auxiliary head, drop path 0.2; batch 32 here), in
  channels-last memory as `darts-lit train` runs it.

The two variants of each are interleaved in one process and the medians reported. Peak
memory is that of one step above what was allocated before it
(`darts_lit.perf.timing.peak_memory`: on the CPU, the profiler's allocation events).
The last line is `search_memory_ratio=<recomputed / kept> search_time_ratio=<...>
eval_memory_ratio=<...> eval_time_ratio=<...>`.
"""

import argparse
import statistics

import torch
from eval_step import make_step  # benchmarks/eval_step.py: the training step it times

from darts_lit.perf.timing import build_setup, measure_steps, peak_memory, step_time

def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--search-batch", type=int, default=32)
    p.add_argument("--eval-batch", type=int, default=32)
    p.add_argument("--search-size", type=int, nargs=2, default=(16, 8),
                   metavar=("C", "CELLS"), help="the supernet (paper: 16 8)")
    p.add_argument("--eval-size", type=int, nargs=2, default=(36, 20),
                   metavar=("C", "CELLS"), help="the evaluation network (paper: 36 20)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed steps first (the kept variant settles slowly)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({torch.get_num_threads()} threads)")
    print(f"{name}, torch {torch.__version__}, medians of {args.repeats}")

    (sc, sl), (ec, el) = args.search_size, args.eval_size
    setups = {r: build_setup("fast", sc, sl, args.search_batch, 32, device)
              for r in (False, True)}
    setups[True].model.recompute_cells = True
    s = measure_steps(setups, {}, repeats=args.repeats, warmup=args.warmup,
                      device=device, orders=(False,))
    print(f"search step (C={sc}, {sl} cells, batch {args.search_batch}, first order)")
    for r in (False, True):
        print(f"  recompute_cells={r!s:5}  {s[r]['first']:8.4f} s  "
              f"{s[r]['memory'] / 2**20:8.1f} MiB peak")

    steps = {r: make_step("fast", device, args.eval_batch, el, ec, recompute=r)
             for r in (False, True)}
    times = {r: [] for r in steps}
    for i in range(args.warmup + args.repeats):
        for r, step in steps.items():  # interleaved
            t = step_time(step, device)
            if i >= args.warmup:
                times[r].append(t)
    e = {r: (statistics.median(times[r]), peak_memory(steps[r], device)) for r in steps}
    print(f"evaluation step (C={ec}, {el} cells, batch {args.eval_batch})")
    for r in (False, True):
        print(f"  recompute_cells={r!s:5}  {e[r][0]:8.4f} s  "
              f"{e[r][1] / 2**20:8.1f} MiB peak")
    print(f"search_memory_ratio={s[True]['memory'] / s[False]['memory']:.3f} "
          f"search_time_ratio={s[True]['first'] / s[False]['first']:.3f} "
          f"eval_memory_ratio={e[True][1] / e[False][1]:.3f} "
          f"eval_time_ratio={e[True][0] / e[False][0]:.3f}")


if __name__ == "__main__":
    main()
