"""Tests of darts_lit.cnn.architect on a tiny real search network, in float64."""

import copy

import pytest
import torch
from _helpers import same

from darts_lit.cnn.architect import (
    Architect,
    arch_gradient,
    functional_loss,
    hessian_vector_product,
    momentum_buffers,
    split_parameters,
    virtual_step,
)
from darts_lit.cnn.model_search import Network

ETA, MU, WD = 0.05, 0.9, 3e-4


def tiny(dtype=torch.float64, seed=0):
    """A 3-cell network (normal, reduce, reduce) with 2 nodes per cell on 8×8 inputs."""
    torch.manual_seed(seed)
    model = Network(2, 3, 3, steps=2, multiplier=2, in_channels=1).to(dtype)
    xt, xv = torch.randn(2, 6, 1, 8, 8, dtype=dtype)
    yt, yv = torch.randint(3, (2, 6))
    return model, (xt, yt, xv, yv)


def sgd_with_momentum(model):
    """The search's weight optimizer, after one step that fills its momentum buffers."""
    opt = torch.optim.SGD(model.weights(), lr=ETA, momentum=MU, weight_decay=WD)
    g = torch.Generator().manual_seed(1)
    for p in model.weights():
        p.grad = 1e-3 * torch.randn(p.shape, generator=g, dtype=p.dtype)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return opt


def brute_force(model, batches, eta, opt):
    """dL_val(w'(α), α)/dα by autograd through the virtual step (create_graph=True)."""
    xt, yt, xv, yv = batches
    params, alphas = split_parameters(model)
    w = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    lt = functional_loss(model, {**w, **alphas}, xt, yt)
    dw = torch.autograd.grad(lt, list(w.values()), create_graph=True,
                             materialize_grads=True)
    buf = momentum_buffers(opt, params)
    w1 = {n: w[n] - eta * (MU * buf[n] + g + WD * w[n])
          for n, g in zip(w, dw, strict=True)}
    lv = functional_loss(model, {**w1, **alphas}, xv, yv)
    return torch.autograd.grad(lv, list(alphas.values()), materialize_grads=True)


def rel(a, b):
    num = sum(((x - y) ** 2).sum() for x, y in zip(a, b, strict=True))
    return float((num / sum((y ** 2).sum() for y in b)).sqrt())


def test_exact_second_order_matches_brute_force():
    model, batches = tiny()
    opt = sgd_with_momentum(model)
    got, _ = arch_gradient(model, *batches, eta=ETA, w_optimizer=opt, momentum=MU,
                           weight_decay=WD, unrolled=True,
                           hvp="exact")
    want = brute_force(model, batches, ETA, opt)
    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-14)
    # the correction term is not negligible, so the check has teeth
    first, _ = arch_gradient(model, *batches, unrolled=False)
    assert rel(first, want) > 1e-4


def test_finite_difference_converges_to_exact_product():
    model, (xt, yt, _, _) = tiny()
    params, alphas = split_parameters(model)
    w = {n: p.detach() for n, p in params.items()}
    torch.manual_seed(3)
    v = {n: torch.randn_like(t) for n, t in w.items()}
    norm = torch.cat([t.flatten() for t in v.values()]).norm().item()
    exact = hessian_vector_product(model, w, alphas, v, xt, yt, "exact")
    errs = {s: rel(hessian_vector_product(model, w, alphas, v, xt, yt, eps=s / norm),
                   exact) for s in (1e-4, 1e-5, 1e-6, 1e-7)}
    assert min(errs.values()) < 1e-7, errs
    # default ε is the paper's 0.01 / ‖v‖
    default = hessian_vector_product(model, w, alphas, v, xt, yt)
    paper = hessian_vector_product(model, w, alphas, v, xt, yt, eps=0.01 / norm)
    for a, b in zip(default, paper, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_first_order_is_plain_validation_gradient():
    model, (xt, yt, xv, yv) = tiny()
    got, loss = arch_gradient(model, xt, yt, xv, yv, unrolled=False)
    model.zero_grad()
    ref = model.loss(xv, yv)
    ref.backward()
    assert torch.equal(loss, ref.detach())
    for g, a in zip(got, model.arch_parameters(), strict=True):
        torch.testing.assert_close(g, a.grad, rtol=1e-12, atol=1e-16)
        assert g.abs().sum() > 0


def test_xi_zero_is_first_order():
    model, batches = tiny()
    opt = sgd_with_momentum(model)
    first, _ = arch_gradient(model, *batches, unrolled=False)
    for hvp in ("exact", "finite_difference"):
        z, _ = arch_gradient(model, *batches, eta=0.0, w_optimizer=opt, unrolled=True,
                             hvp=hvp)
        for a, b in zip(z, first, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("filled", [False, True])
def test_virtual_step_is_sgds_next_step(filled):
    torch.manual_seed(0)
    w = {"a": torch.randn(3, 4, dtype=torch.float64),
         "b": torch.randn(5, dtype=torch.float64)}
    g = {n: torch.randn_like(t) for n, t in w.items()}
    p = {n: t.clone().requires_grad_() for n, t in w.items()}
    opt = torch.optim.SGD(p.values(), lr=ETA, momentum=MU, weight_decay=WD)
    if filled:
        for t in p.values():
            t.grad = torch.randn_like(t)
        opt.step()
    start = {n: t.detach().clone() for n, t in p.items()}
    buf = {n: None if b is None else b.clone()
           for n, b in momentum_buffers(opt, p).items()}
    for n, t in p.items():
        t.grad = g[n]
    opt.step()
    w1 = virtual_step(start, g, buf, ETA, MU, WD)
    for n in w:
        torch.testing.assert_close(w1[n], p[n].detach(), rtol=1e-13, atol=1e-15)


def test_momentum_and_weight_decay_terms_separately():
    w = {"a": torch.tensor([1.0, -2.0], dtype=torch.float64)}
    zero = {"a": torch.zeros(2, dtype=torch.float64)}
    m = {"a": torch.tensor([0.5, 4.0], dtype=torch.float64)}
    only_m = virtual_step(w, zero, m, eta=0.1, momentum=0.9, weight_decay=0.0)
    torch.testing.assert_close(only_m["a"], w["a"] - 0.1 * 0.9 * m["a"])
    only_wd = virtual_step(w, zero, {}, eta=0.1, momentum=0.9, weight_decay=0.01)
    torch.testing.assert_close(only_wd["a"], w["a"] * (1 - 0.1 * 0.01))
    no_buf = virtual_step(w, zero, {"a": None}, eta=0.1, momentum=0.9,
                          weight_decay=0.0)
    assert torch.equal(no_buf["a"], w["a"])


def _everything_but_alpha(model, opt):
    state = {n: t.clone() for n, t in model.state_dict().items() if "alphas" not in n}
    grads = [None if p.grad is None else p.grad.clone() for p in model.weights()]
    return state, copy.deepcopy(opt.state_dict()), grads


@pytest.mark.parametrize("unrolled,hvp", [(False, None), (True, "finite_difference"),
                                          (True, "exact")])
def test_step_changes_alpha_and_nothing_else(unrolled, hvp):
    model, batches = tiny()
    opt = sgd_with_momentum(model)
    for p in model.weights():  # a gradient already present must survive too
        p.grad = torch.ones_like(p)
    arch = Architect(model)
    # (a direct call without `buffers` updates BatchNorm statistics: do it first)
    expected, _ = arch_gradient(model, *batches, eta=ETA, w_optimizer=opt, momentum=MU,
                                weight_decay=WD, unrolled=unrolled,
                                hvp=hvp or "finite_difference")
    before = _everything_but_alpha(model, opt)
    running = [b.clone() for n, b in model.named_buffers() if "running" in n]
    assert running, "the network should have BatchNorm running statistics"
    alpha0 = [a.detach().clone() for a in model.arch_parameters()]
    loss = arch.step(*batches, eta=ETA, w_optimizer=opt, unrolled=unrolled, hvp=hvp)
    assert torch.isfinite(loss) and loss.ndim == 0
    assert same(_everything_but_alpha(model, opt), before)
    assert all(torch.equal(b, r) for b, r in zip(
        [b for n, b in model.named_buffers() if "running" in n], running, strict=True))
    for a, a0, g in zip(model.arch_parameters(), alpha0, expected, strict=True):
        torch.testing.assert_close(a.grad, g, rtol=1e-12, atol=1e-16)
        assert not torch.equal(a.detach(), a0)


def test_objective_lambda_zero_and_positive():
    model, batches = tiny()
    opt = sgd_with_momentum(model)

    def penalty(alphas):
        return sum((a.softmax(-1) * torch.arange(a.shape[-1], dtype=a.dtype)).sum()
                   for a in alphas)

    def objective(lam):
        return lambda ce, alphas: ce + lam * penalty(alphas)

    for unrolled in (False, True):
        base, _ = arch_gradient(model, *batches, eta=ETA, w_optimizer=opt,
                                unrolled=unrolled, hvp="exact")
        zero, _ = arch_gradient(model, *batches, eta=ETA, w_optimizer=opt,
                                unrolled=unrolled, hvp="exact",
                                objective=objective(0.0))
        for b, z in zip(base, zero, strict=True):
            assert torch.equal(b, z)
        lam = 0.3
        got, _ = arch_gradient(model, *batches, eta=ETA, w_optimizer=opt,
                               unrolled=unrolled, hvp="exact", objective=objective(lam))
        alphas = model.arch_parameters()
        d_pen = torch.autograd.grad(penalty(alphas), alphas)
        # the penalty depends on α only: it adds λ ∇ penalty, in both orders
        for g, b, d in zip(got, base, d_pen, strict=True):
            torch.testing.assert_close(g, b + lam * d, rtol=1e-10, atol=1e-14)
    # the objective reaches the Architect as well
    first, _ = arch_gradient(model, *batches, unrolled=False, objective=objective(0.3))
    arch = Architect(model, arch_objective=objective(0.3))
    arch.step(*batches, eta=ETA, w_optimizer=opt, unrolled=False)
    for a, g in zip(model.arch_parameters(), first, strict=True):
        torch.testing.assert_close(a.grad, g)


def test_float32_agrees_with_float64():
    m64, b64 = tiny(torch.float64)
    m32, _ = tiny(torch.float32)
    m32.load_state_dict({k: v.float() if v.is_floating_point() else v
                         for k, v in m64.state_dict().items()})
    b32 = [t.float() if t.is_floating_point() else t for t in b64]
    g64, _ = arch_gradient(m64, *b64, eta=ETA, unrolled=True, hvp="exact")
    g32, _ = arch_gradient(m32, *b32, eta=ETA, unrolled=True, hvp="exact")
    assert all(g.dtype == torch.float32 for g in g32)
    assert rel([g.double() for g in g32], g64) < 1e-3


def test_bad_hvp_name():
    model, batches = tiny()
    with pytest.raises(ValueError, match="finite_difference"):
        Architect(model, hvp="fd")
    with pytest.raises(ValueError, match="exact"):
        arch_gradient(model, *batches, eta=ETA, unrolled=True, hvp="fd")
