"""What the paper's full-scale runs cost on this machine, extrapolated from timed steps.

Times the library's own training steps at the paper's sizes on synthetic data (the cost
of a step does not depend on the pixel values) and multiplies the median step time by
the number of steps of each phase:

- CIFAR-10 search (§3.1.2): supernet C=16, 8 cells, batch 64, 25,000 training images
  (half of the training set) → 391 steps × 50 epochs; first and second order.
- CIFAR-10 evaluation (§3.3): NetworkCIFAR(DARTS_V2) C=36, 20 cells, auxiliary head,
  batch 96, 50,000 images → 521 steps × 600 epochs.
- ImageNet evaluation (mobile setting): NetworkImageNet(DARTS_V2) C=48, 14 cells,
  batch 128, 224×224, 1,281,167 images → 10,010 steps × 250 epochs.
- PTB: recurrent search (batch 256, bptt 35, 300 units, first order) → 104 steps × 50
  epochs, and evaluation training (batch 64, bptt 35, 850 units) → 415 steps × 8,000
  epochs (the reference code's default; the paper stops earlier when converged).
- FBNet search (Wu et al. 2019, §4.1): the 22-layer supernet of Table 1 at 224×224 on
  ImageNet-100 (about 128,000 training images: 80 % train w, 20 % train θ), batch 64
  (--fbnet-batch: a θ step through all nine blocks of every layer at batch 64 needs
  tens of GB), 90 epochs. One timed unit is four single-path w steps and one θ step
  (soft Gumbel samples through every block), the 80/20 ratio → 25,600 / batch units ×
  90 epochs.
- FBNet-B training on ImageNet, batch 128: this project does not reproduce the paper's
  ImageNet recipe, so the phase counts DARTS's 250 epochs (10,010 steps each) for
  comparison; scale the hours to your schedule.

Usage (from the repository root; needs only torch and numpy besides the package):
  PYTHONPATH=. python benchmarks/paper_cost.py --device cuda
  python benchmarks/paper_cost.py --device cpu --phases cifar_search_1st --repeats 2
The last line is `cost_gpu_hours=<phase>:<hours>,...` (device hours, one device).
"""

import argparse
import statistics

import torch
from torch import nn
from torch.nn import functional as F

from darts_lit.cnn.architect import Architect
from darts_lit.cnn.genotypes import DARTS_V2
from darts_lit.cnn.model_search import Network
from darts_lit.evaluation.model import NetworkCIFAR, NetworkImageNet
from darts_lit.fbnet import models as fbnet_models
from darts_lit.fbnet import space as fbnet
from darts_lit.fbnet.search import search_fbnet_epoch
from darts_lit.perf.timing import search_step, step_time
from darts_lit.rnn.model import DARTS_V2 as RNN_DARTS_V2
from darts_lit.rnn.model import RNNModel, RNNModelSearch

PTB_TRAIN_TOKENS, PTB_VOCAB = 929_589, 10_000


def median_step_time(step, device, warmup: int, repeats: int) -> float:
    """Median wall-clock seconds of `step()` after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    return statistics.median(step_time(step, device) for _ in range(repeats))


def cifar_search(device, unrolled: bool):
    """One search step (α step, then w step) of the paper's supernet, batch 64."""
    model = Network(16, 10, 8).to(device)
    w_opt = torch.optim.SGD(model.weights(), 0.025, momentum=0.9, weight_decay=3e-4)
    architect = Architect(model)
    batch = (torch.randn(64, 3, 32, 32, device=device),
             torch.randint(0, 10, (64,), device=device),
             torch.randn(64, 3, 32, 32, device=device),
             torch.randint(0, 10, (64,), device=device))
    steps = 391 * 50
    return lambda: search_step(model, architect, w_opt, batch, unrolled, 0.025), steps


def image_train_step(model, device, batch: int, size: int, classes: int):
    opt = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    model.drop_path_prob = 0.2

    def step():
        opt.zero_grad(set_to_none=True)
        logits, logits_aux = model(x)
        loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(logits_aux, y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    return step


def cifar_eval(device):
    model = NetworkCIFAR(36, 10, 20, True, DARTS_V2).to(device).train()
    return image_train_step(model, device, 96, 32, 10), 521 * 600


def imagenet_eval(device):
    model = NetworkImageNet(48, 1000, 14, True, DARTS_V2).to(device).train()
    return image_train_step(model, device, 128, 224, 1000), 10_010 * 250


def lm_step(model, device, batch: int, arch: bool):
    params = list(model.weights() if arch else model.parameters())
    opt = torch.optim.SGD(params, 20.0, weight_decay=5e-7)
    x = torch.randint(0, PTB_VOCAB, (35, batch), device=device)
    y = torch.randint(0, PTB_VOCAB, (35 * batch,), device=device)
    hidden = model.init_hidden(batch)

    def one_pass():
        log_prob, _ = model(x, hidden)
        loss = F.nll_loss(log_prob.view(-1, log_prob.size(-1)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 0.25)
        opt.step()

    def step():
        if arch:  # first-order search: a validation pass for α, a training pass for w
            one_pass()
        one_pass()
    return step


def ptb_search(device):
    model = RNNModelSearch(PTB_VOCAB, 300, 300, 300).to(device).train()
    return lm_step(model, device, 256, arch=True), (PTB_TRAIN_TOKENS // (256 * 35)) * 50


def ptb_eval(device):
    model = RNNModel(PTB_VOCAB, 850, 850, 850, genotype=RNN_DARTS_V2).to(device).train()
    steps = (PTB_TRAIN_TOKENS // (64 * 35)) * 8000
    return lm_step(model, device, 64, arch=False), steps


def search_fbnet(device, batch: int = 64):
    """Four w steps (single path) and one θ step of the paper's FBNet supernet."""
    space = fbnet_models.paper_space(num_classes=100)
    model = fbnet.FBNetSupernet(space).to(device).train()
    w_opt = torch.optim.SGD(model.weights(), 0.1, momentum=0.9, weight_decay=1e-4)
    theta_opt = torch.optim.Adam(model.arch_parameters(), 0.01, weight_decay=5e-4)
    data = [(torch.randn(batch, 3, 224, 224, device=device),
             torch.randint(0, 100, (batch,), device=device))]
    lat = torch.rand(len(space.layer_shapes()), len(space.blocks), dtype=torch.float64)

    def step():
        for _ in range(4):
            search_fbnet_epoch(model, data, w_opt, tau=5.0, train_theta=False,
                               hard=True, device=device)
        search_fbnet_epoch(model, data, theta_opt, tau=5.0, train_theta=True,
                           objective=lambda ce, e_lat: ce + 0.1 * e_lat, lat=lat,
                           device=device)
    return step, 25_600 // batch * 90


def fbnet_b_train(device):
    space, choices = fbnet_models.fbnet_reference("fbnet_b")
    model = fbnet.fbnet_network(space, choices).to(device).train()
    opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=4e-5)
    x = torch.randn(128, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (128,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y, label_smoothing=0.1).backward()
        opt.step()
    return step, 10_010 * 250


PHASES = {
    "cifar_search_1st": lambda d: cifar_search(d, unrolled=False),
    "cifar_search_2nd": lambda d: cifar_search(d, unrolled=True),
    "cifar_eval": cifar_eval,
    "imagenet_eval": imagenet_eval,
    "ptb_search_1st": ptb_search,
    "ptb_eval": ptb_eval,
    "search_fbnet": search_fbnet,
    "fbnet_b_train": fbnet_b_train,
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--phases", default=",".join(PHASES),
                   help=f"comma-separated subset of {', '.join(PHASES)}")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--fbnet-batch", type=int, default=64,
                   help="batch of the search_fbnet phase (the paper's scale: 64)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    phases = [s.strip() for s in args.phases.split(",") if s.strip()]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        p.error(f"unknown phase(s) {unknown}; choose from {sorted(PHASES)}")
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({torch.get_num_threads()} threads)")
    print(f"device: {name}, torch {torch.__version__}")
    print(f"{'phase':<18}{'s/step':>10}{'steps':>12}{'hours':>10}")
    costs = []
    for phase in phases:
        step, steps = (search_fbnet(device, args.fbnet_batch) if phase == "search_fbnet"
                       else PHASES[phase](device))
        t = median_step_time(step, device, args.warmup, args.repeats)
        hours = t * steps / 3600
        costs.append(f"{phase}:{hours:.1f}")
        print(f"{phase:<18}{t:>10.4f}{steps:>12,}{hours:>10.1f}", flush=True)
        del step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print("cost_gpu_hours=" + ",".join(costs))


if __name__ == "__main__":
    main()
