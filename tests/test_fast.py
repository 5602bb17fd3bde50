"""The fast search cell (darts_lit.perf.fast_cell, built from darts_lit.perf.fast)
against the plain one (eq. 1 as written)."""

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _helpers import assert_as_close_as_plain
from torch.func import functional_call

from darts_lit.cnn.architect import arch_gradient
from darts_lit.cnn.mixed_op import MixedOp
from darts_lit.cnn.model_search import Cell, Network, num_edges
from darts_lit.perf.fast import Optimizations, optimizations, pointwise_bn, weighted_bn
from darts_lit.perf.fast_cell import edge_index
from darts_lit.perf.timing import (
    build_setup,
    measure_steps,
    passes_quotient,
    peak_memory,
    search_step,
)

ROOT = Path(__file__).resolve().parents[1]
SWITCHES = list(Optimizations.__dataclass_fields__)


def twins(C=3, layers=3, steps=3, seed=0, dtype=torch.float64):
    """A fast supernet and a plain copy with the same parameters and buffers."""
    torch.manual_seed(seed)
    fast = Network(C, 5, layers, steps=steps, multiplier=steps).to(dtype)
    plain = copy.deepcopy(fast)
    plain.impl = "plain"
    assert (fast.impl, plain.impl) == ("fast", "plain")
    return fast, plain


def batch(n=4, size=8, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, size, size, generator=g, dtype=dtype),
            torch.randint(5, (n,), generator=g))


def assert_same_state(fast, plain, grads=True):
    for (n, p), q in zip(fast.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=n)
        if grads:
            torch.testing.assert_close(p.grad, q.grad, msg=f"grad of {n}")
    for (n, b), c in zip(fast.named_buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(b, c, msg=n)


# C=8: channels-last cells; 16×16: stride-1 dilated convs run on pixel phases
@pytest.mark.parametrize("C,steps,size", [(3, 3, 8), (8, 2, 8), (8, 2, 16)])
@pytest.mark.parametrize("off", [None, *SWITCHES])
def test_training_outputs_grads_and_bn_stats_agree(off, C, steps, size):
    fast, plain = twins(C=C, steps=steps)
    x, y = batch(size=size)
    with optimizations(**({off: False} if off else {})):
        for _ in range(2):
            losses = []
            for m in (fast, plain):
                m.zero_grad()
                loss = m.loss(x, y)
                loss.backward()
                losses.append(loss)
            torch.testing.assert_close(*losses)
    assert_same_state(fast, plain)
    assert fast.alphas_normal.grad.abs().sum() > 0  # the check is not vacuous


# (not S4: its noise ops draw in a different order, source by source vs edge by edge)
@pytest.mark.parametrize("k,edge_norm,space,size", [
    (2, True, "darts", 16), (4, False, "darts", 16), (4, True, "s3", 16),
    (2, True, "s2", 16), (4, True, "darts", 7), (2, False, "darts", 9)])
def test_pc_darts_fast_cell_agrees_with_its_plain_cell(k, edge_norm, space, size):
    """Partial channels on the fast path: outputs, every gradient (α, β, weights) and
    BatchNorm statistics over two steps, under SDARTS's perturbation too; at odd sizes
    (7 → 4 → 2, 9 → 5 → 3) the bypass pools to the candidates' ⌈H/2⌉."""
    from darts_lit.cnn.collapse import SPACES
    from darts_lit.perf.pc_darts import PCNetwork

    torch.manual_seed(0)
    fast = PCNetwork(8, 5, 3, steps=3, multiplier=3, k=k, edge_norm=edge_norm,
                     primitives=SPACES[space]).double()
    plain = copy.deepcopy(fast)
    plain.impl = "plain"
    assert (fast.impl, plain.impl) == ("fast", "plain")
    x, y = batch(size=size)
    for step in range(2):
        losses = []
        for m in (fast, plain):
            m.zero_grad()
            out = m(x, perturb=(lambda w: w + 0.05 * w.flip(-1)) if step else None)
            loss = torch.nn.functional.cross_entropy(out, y)
            loss.backward()
            losses.append(loss)
        torch.testing.assert_close(*losses)
        assert_same_state(fast, plain)
    assert all(a.grad.abs().sum() > 0 for a in fast.arch_parameters())


@pytest.mark.parametrize("C", [3, 8])
def test_eval_mode_uses_each_edges_own_statistics(C):
    fast, plain = twins(C=C, steps=2)
    x, y = batch()
    for m in (fast, plain):  # move the running statistics away from their init
        m.loss(x, y).backward()
    # give every BatchNorm different statistics, so per-edge sharing would show
    for b1, b2 in zip(fast.buffers(), plain.buffers(), strict=True):
        if b1.is_floating_point():
            noise = torch.rand_like(b1)
            b1.add_(noise), b2.add_(noise)
    fast.eval(), plain.eval()
    torch.testing.assert_close(fast(x), plain(x))


def float32_cell_twins(C_prev, C, reduction, batch, size):
    """A float32 paper cell (4 nodes), its plain copy, two inputs and edge weights."""
    torch.manual_seed(0)
    fast = Cell(4, 4, C_prev, C_prev, C, reduction=reduction, reduction_prev=False)
    plain = copy.deepcopy(fast)
    plain.impl = "plain"
    s0, s1 = torch.randn(2, batch, C_prev, size, size)
    return fast, plain, s0, s1, torch.softmax(torch.randn(14, 8), -1)


def test_float32_paper_cell_agrees():
    """The fast cell's float32 output: as close to a float64 run as the plain's."""
    fast, plain, s0, s1, w = float32_cell_twins(48, 16, True, batch=8, size=16)
    ref = copy.deepcopy(plain).double()
    outs = [m(*(t.to(dtype) for t in (s0, s1, w)))
            for m, dtype in ((fast, torch.float32), (plain, torch.float32),
                             (ref, torch.float64))]
    assert_as_close_as_plain(*([o] for o in outs), names=["cell output"])


def test_float32_normal_cell_gradients_agree():
    """oneDNN's float32 kernels, channels-last and dilated convs on phases, backward:
    each weight gradient as close to a float64 run as the plain cell's."""
    fast, plain, s0, s1, w = float32_cell_twins(16, 16, False, batch=4, size=16)
    ref = copy.deepcopy(plain).double()
    g = torch.randn(4, 64, 16, 16)
    for m, dtype in ((fast, torch.float32), (plain, torch.float32),
                     (ref, torch.float64)):
        (m(*(t.to(dtype) for t in (s0, s1, w))) * g.to(dtype)).sum().backward()
    names = [n for n, _ in fast.named_parameters()]
    assert_as_close_as_plain(*([p.grad for p in m.parameters()]
                               for m in (fast, plain, ref)), names=names)


@pytest.mark.parametrize("unrolled,hvp,C,size", [(False, "finite_difference", 3, 8),
                                                 (True, "finite_difference", 3, 8),
                                                 (True, "exact", 3, 8),
                                                 (True, "exact", 8, 16)])
def test_architecture_gradient_agrees(unrolled, hvp, C, size):
    fast, plain = twins(C=C)
    x, y = batch(seed=1, size=size)
    xv, yv = batch(seed=2, size=size)
    grads = []
    for m in (fast, plain):
        opt = torch.optim.SGD(m.weights(), 0.05, momentum=0.9, weight_decay=3e-4)
        buffers = {n: b.clone() for n, b in m.named_buffers()}
        g, loss = arch_gradient(m, x, y, xv, yv, eta=0.05, w_optimizer=opt,
                                unrolled=unrolled, hvp=hvp, buffers=buffers)
        grads.append((g, loss, buffers))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    for n in grads[0][2]:  # the substituted buffers moved alike
        torch.testing.assert_close(grads[0][2][n], grads[1][2][n], msg=n)
    assert_same_state(fast, plain, grads=False)  # the modules' own: untouched


def test_functional_call_updates_the_substituted_buffers_only():
    fast, _ = twins()
    x, _y = batch()
    before = {n: b.clone() for n, b in fast.named_buffers()}
    subst = {n: b.clone() for n, b in fast.named_buffers()}
    functional_call(fast, subst, (x,))
    for n, b in fast.named_buffers():
        assert torch.equal(b, before[n]), n
    moved = [n for n in subst if not torch.equal(subst[n], before[n])]
    assert len(moved) == len(subst)  # every statistic and counter moved


def test_other_candidates_run_as_modules():
    torch.manual_seed(0)
    prims = ["none", "skip_connect", "max_pool_3x3", "sep_conv_7x7", "conv_7x1_1x7"]
    fast = Cell(2, 2, 4, 4, 4, reduction=True, reduction_prev=False).double()
    # edges 0, 1 (node 2) and 2, 3 (node 3 from the inputs) stride 2, edge 4 stride 1
    for e in range(5):
        fast._ops[e] = MixedOp(4, 2 if e < 4 else 1, prims).double()
    plain = copy.deepcopy(fast)
    plain.impl = "plain"
    s0, s1 = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64)
    w = torch.softmax(torch.randn(5, len(prims), dtype=torch.float64), -1)
    torch.testing.assert_close(fast(s0, s1, w), plain(s0, s1, w))


def test_wrong_weights_shape_is_a_clear_error():
    fast, _ = twins()
    cell = fast.cells[0]
    with pytest.raises(ValueError, match=r"weights of shape \(9, 8\)"):
        cell(torch.randn(1, 9, 8, 8), torch.randn(1, 9, 8, 8), torch.ones(14, 8))


def test_unknown_impl_lists_the_choices():
    with pytest.raises(ValueError, match="impl must be one of"):
        Network(2, 3, 3, impl="turbo")
    fast, _ = twins()
    with pytest.raises(ValueError, match="impl must be one of"):
        fast.impl = "turbo"


def test_edge_index_is_the_cells_order():
    for steps in (1, 2, 4, 5):
        order = [(i, j) for i in range(steps) for j in range(2 + i)]
        assert [edge_index(i, j) for i, j in order] == list(range(num_edges(steps)))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_weighted_bn_is_w_times_bn(momentum):
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(4, affine=False, momentum=momentum).double()
    twin = copy.deepcopy(bn)
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last)
    w = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    w2 = w.detach().clone().requires_grad_()
    a, b = weighted_bn(bn, x, w), w2 * twin(x)
    torch.testing.assert_close(a, b)
    a.pow(2).sum().backward(), b.pow(2).sum().backward()
    torch.testing.assert_close(w.grad, w2.grad)
    for t1, t2 in zip(bn.buffers(), twin.buffers(), strict=True):
        torch.testing.assert_close(t1, t2)


def test_measure_steps_applies_each_setups_switches():
    off = dict.fromkeys(SWITCHES, False)
    setups = {name: build_setup(impl, 4, 3, 2, 8, "cpu")
              for name, impl in (("plain", "plain"), ("off", "fast"), ("on", "fast"))}
    res = measure_steps(setups, {"off": off}, repeats=1, warmup=0, orders=(False,))
    mem = {name: r["memory"] for name, r in res.items()}
    assert mem["off"] == pytest.approx(mem["plain"], rel=0.1)  # the same tensors kept
    assert mem["on"] < 0.8 * mem["off"]


def test_passes_quotient_by_hand():
    # second order: 2 weight passes (2 s each), 1 of both (3 s), 2 of α (1 s) = 9 s;
    # first order: 1 of α and 1 of the weights = 3 s
    assert passes_quotient({"alpha": 1.0, "weights": 2.0, "alpha+weights": 3.0}) == 3.0


def test_peak_memory_of_known_allocations():
    def f():
        a = torch.ones(250_000)  # 1 MB
        b = torch.ones(500_000)  # 2 MB: 3 MB live
        del a, b
        c = torch.ones(500_000)  # 2 MB
        return float(c[0])

    assert peak_memory(f, "cpu") == 3_000_000


def test_benchmark_prints_the_ratios_line():
    cmd = [sys.executable, "benchmarks/search_step.py", "--sizes", "paper",
           "--init-channels", "2", "--layers", "3", "--batch-size", "2",
           "--image-size", "8", "--repeats", "1", "--warmup", "0", "--threads", "1",
           "--clock", "cpu"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}).stdout
    lines = out.strip().splitlines()
    m = re.fullmatch(r"first_order_ratio=([\d.]+) second_over_first=([\d.]+) "
                     r"memory_ratio=([\d.]+)", lines[-1])
    assert m, lines[-1]
    rows = {}
    for line in lines:
        r = re.search(r"(plain|library)\s+first_order=\s*([\d.]+)s "
                      r"second_order=\s*([\d.]+)s peak_memory=\s*([\d.]+)MiB", line)
        if r:
            rows[r[1]] = [float(v) for v in r.groups()[1:]]
    (pf, _, pm), (lf, ls, lm) = rows["plain"], rows["library"]
    passes = [re.search(r"passes: alpha=([\d.]+)s weights=([\d.]+)s "
                        r"alpha\+weights=([\d.]+)s "
                        r"second_over_first_of_passes=([\d.]+)", line)
              for line in lines]
    a, w, both, quotient = (float(v) for v in next(m for m in passes if m).groups())
    assert quotient == pytest.approx(2 + both / (a + w), abs=0.1)  # printed rounded
    assert float(m[1]) == pytest.approx(lf / pf, rel=0.02, abs=2e-3)
    assert float(m[2]) == pytest.approx(ls / lf, rel=0.02, abs=2e-3)
    assert float(m[3]) == pytest.approx(lm / pm, rel=0.02, abs=2e-3)
    assert float(m[3]) < 1  # the fast cell keeps fewer tensors for the backward pass


def test_small_channels_at_large_sizes_do_not_crash():
    """torch 2.14's oneDNN crashed (segfault or abort) in the backward of a strided 1×1
    convolution of NHWC tensors with few channels: a 4-channel search at 56×56 died.
    The fast cell now computes those convolutions as matrix products of every second
    pixel. Run in a subprocess, so that a crash fails this test, not the test run."""
    code = ("import torch; from torch.nn import functional as F; "
            "from darts_lit.cnn.model_search import Network; torch.manual_seed(0); "
            "m = Network(4, 10, 5); x = torch.randn(3, 3, 56, 56); "
            "F.cross_entropy(m(x), torch.tensor([0, 1, 2])).backward(); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-500:]


def test_recomputed_products_lower_the_peak_of_a_step():
    """C=8, 16×16: channels-last cells, where `recompute_1x1` keeps a pointwise
    convolution's input instead of its product too."""
    s = build_setup("fast", 8, 3, 4, 16, "cpu")

    def step():
        search_step(s.model, s.architect, s.w_optimizer, s.batch, False, 0.025)

    with optimizations(recompute_1x1=False):
        kept = peak_memory(step, "cpu")
    recomputed = peak_memory(step, "cpu")
    assert recomputed < 0.85 * kept


def test_products_are_recomputed_only_where_the_weights_need_gradients():
    conv = torch.nn.Conv2d(8, 8, 1, bias=False)
    bn = torch.nn.BatchNorm2d(8, affine=False)
    x = torch.randn(2, 8, 4, 4, requires_grad=True).contiguous(
        memory_format=torch.channels_last)
    assert type(pointwise_bn(conv, bn, x).grad_fn).__name__ == "PointwiseBNBackward"
    conv.weight.requires_grad_(False)  # as in an α pass: no ∂L/∂W wanted
    assert type(pointwise_bn(conv, bn, x).grad_fn).__name__ != "PointwiseBNBackward"
    conv.weight.requires_grad_(True)
    with optimizations(recompute_1x1=False):
        assert type(pointwise_bn(conv, bn, x).grad_fn).__name__ != "PointwiseBNBackward"
    bn.eval()  # running statistics normalise: the module's own path
    assert type(pointwise_bn(conv, bn, x).grad_fn).__name__ != "PointwiseBNBackward"


def test_every_nhwc_batchnorm_backward_gets_an_nhwc_gradient():
    from torch.utils._python_dispatch import TorchDispatchMode

    nhwc = torch.channels_last

    class Layouts(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.dense = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if (func is torch.ops.aten.native_batch_norm_backward.default
                    and args[1].is_contiguous(memory_format=nhwc)):
                self.dense.append(args[0].is_contiguous(memory_format=nhwc))
            return func(*args, **(kwargs or {}))

    def layouts(dense_grads):
        torch.manual_seed(0)
        net = Network(8, 10, 3)
        x, y = torch.randn(2, 3, 32, 32), torch.randint(10, (2,))
        with optimizations(dense_grads=dense_grads), Layouts() as mode:
            net.loss(x, y).backward()
        return mode.dense

    on, off = layouts(True), layouts(False)
    assert len(on) == len(off) > 100
    assert all(on) and sum(off) < 0.8 * len(off)


# --- the fast evaluation network (darts_lit.perf.fast_model) ---

def eval_twins(network, C=16, layers=5, genotype=None):
    """A fast evaluation network in NHWC memory and a plain copy, float32."""
    from darts_lit.cnn.genotypes import DARTS_V2
    from darts_lit.evaluation.model import NetworkCIFAR, NetworkImageNet
    torch.manual_seed(0)
    if network == "cifar":
        fast = NetworkCIFAR(C, 10, layers, True, genotype or DARTS_V2)
    else:
        fast = NetworkImageNet(C, 10, layers, True, genotype or DARTS_V2)
    fast = fast.to(memory_format=torch.channels_last)
    plain = copy.deepcopy(fast)
    plain.impl = "plain"
    fast.drop_path_prob = plain.drop_path_prob = 0.2
    return fast, plain


def grouped_widths(monkeypatch) -> list:
    """The widths of the BatchNorms that GroupedBatchNorm computes from now on."""
    from darts_lit.perf import fast_model
    widths = []
    apply = fast_model.GroupedBatchNorm.apply
    monkeypatch.setattr(fast_model.GroupedBatchNorm, "apply",
                        lambda *a: widths.append(a[0].shape[1]) or apply(*a))
    return widths


@pytest.mark.parametrize("network,size,C", [("cifar", 32, 16), ("imagenet", 128, 16),
                                            ("cifar", 32, 36), ("imagenet", 128, 12)])
def test_fast_evaluation_network_agrees_in_channels_last_float32(network, size, C,
                                                                 monkeypatch):
    """Two training steps and an evaluation, each quantity (loss, every gradient and
    running statistic, the logits) as close to a float64 run of the same network as
    the plain float32 network's. A fixed rtol sat on the noise floor here: batch 4,
    the auxiliary head's BatchNorm sees 4 values a channel, and the plain float32
    gradients are themselves about 2e-3 off float64 with some kernels."""
    # 32x32 (CIFAR) and 128x128 (ImageNet: cells at 16x16 to 4x4): NHWC paths taken;
    # 36 (the paper's width) and 12 channels: BatchNorms as GroupedBatchNorm
    grouped = grouped_widths(monkeypatch)
    fast, plain = eval_twins(network, C=C)
    ref = copy.deepcopy(plain).double()
    x = torch.randn(4, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(10, (4,))
    nets = (fast, plain, ref)
    for step in range(2):
        losses = []
        for m in nets:
            m.zero_grad()
            torch.manual_seed(10 + step)  # the same drop-path masks
            logits, aux = m(x.to(next(m.parameters()).dtype))
            loss = (torch.nn.functional.cross_entropy(logits, y)
                    + 0.4 * torch.nn.functional.cross_entropy(aux, y))
            loss.backward()
            losses.append([loss.detach()])
        assert_as_close_as_plain(*losses, names=[f"loss of step {step}"])
    assert_as_close_as_plain(*([p.grad for p in m.parameters()] for m in nets),
                             names=[f"grad of {n}" for n, _ in fast.named_parameters()])
    for (n, b), c in zip(fast.named_buffers(), plain.buffers(), strict=True):
        if not b.is_floating_point():
            assert torch.equal(b, c), n  # num_batches_tracked
    floating = [[b for b in m.buffers() if b.is_floating_point()] for m in nets]
    assert_as_close_as_plain(*floating, names=[n for n, b in fast.named_buffers()
                                               if b.is_floating_point()])
    for m in nets:
        m.eval()
    with torch.no_grad():
        assert_as_close_as_plain(*([m(x.to(next(m.parameters()).dtype))] for m in nets),
                                 names=["logits in eval mode"])
    widths = {c for c in (C, 2 * C, 4 * C) if c % 16}  # the stages' widths
    assert set(grouped) == widths  # grouped exactly where 16 does not divide


def test_fast_evaluation_network_has_the_plain_parameters_and_a_checked_impl():
    fast, plain = eval_twins("cifar", C=8)
    assert list(fast.state_dict()) == list(plain.state_dict())
    assert (fast.impl, plain.impl) == ("fast", "plain")
    with pytest.raises(ValueError, match="impl must be one of"):
        fast.impl = "quick"


def test_training_builds_the_fast_evaluation_network():
    from dataclasses import replace

    from darts_lit.cnn.genotypes import DARTS_V2
    from darts_lit.evaluation.recipe import TrainConfig, build_model
    info = type("Info", (), {"num_classes": 10, "in_channels": 3})()
    for config in (TrainConfig(init_channels=8, layers=5), TrainConfig.imagenet(
            init_channels=8, layers=5)):
        assert build_model(config, DARTS_V2, info).impl == "fast"
        # a compiled step compiles the plain cells, which Inductor fuses better
        compiled = replace(config, compile="default")
        assert build_model(compiled, DARTS_V2, info).impl == "plain"



def test_grouped_bn_switch_and_scope(monkeypatch):
    # off: torch's kernel everywhere; outside the fast cell's forward: bn(x) itself
    from darts_lit.perf import fast, fast_model
    grouped = grouped_widths(monkeypatch)
    net, _ = eval_twins("cifar", C=36, layers=3)
    x = torch.randn(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    with optimizations(grouped_bn=False):
        net(x)
    assert grouped == []
    net(x)
    assert set(grouped) == {36, 72}
    bn = torch.nn.BatchNorm2d(36)
    y = torch.randn(2, 36, 4, 4).contiguous(memory_format=torch.channels_last)
    y.requires_grad_()
    assert "Grouped" not in type(fast.batch_norm(bn, y).grad_fn).__name__
    with fast.eval_batch_norm(fast_model.grouped_batch_norm):
        assert "Grouped" in type(fast.batch_norm(bn, y).grad_fn).__name__
