"""Tests of darts_lit.cnn.collapse and its use in the search: λ_max, the reduced
spaces, the skip cap, DARTS-ES, DARTS+, SDARTS-RS, and benchmarks/collapse.py."""

import json
import math
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from _helpers import TINY_SEARCH, strip_time
from torch.func import functional_call
from torch.nn import functional as F

from darts_lit.cnn.collapse import (
    SPACES,
    cap_skips,
    capped_genotype,
    cell_stats,
    edge_entropy,
    fixed_batches,
    hessian_eigenvalue,
    lanczos_max,
)
from darts_lit.cnn.early_stop import darts_es_stop, darts_plus_stop, op_ranking
from darts_lit.cnn.model_search import Network, derive_cell
from darts_lit.cnn.ops import PRIMITIVES
from darts_lit.cnn.search import early_stop_epoch, search, search_result
from darts_lit.cnn.smoothing import random_smoothing
from darts_lit.core.config import ConfigError
from darts_lit.perf.pc_darts import PCNetwork, edge_weights

TINY = TINY_SEARCH


def _tiny_net(primitives=PRIMITIVES, seed=0):
    torch.manual_seed(seed)
    net = Network(2, 3, 3, steps=2, multiplier=2, stem_multiplier=1, in_channels=1,
                  primitives=primitives).double()
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_(0, 0.5)
    batches = [(torch.randn(3, 1, 6, 6, dtype=torch.float64), torch.randint(3, (3,)))
               for _ in range(2)]
    return net, batches


def _dense_hessian(net, batches):
    n_normal = net.alphas_normal.numel()

    def loss_of(flat):
        params = {"alphas_normal": flat[:n_normal].view_as(net.alphas_normal),
                  "alphas_reduce": flat[n_normal:].view_as(net.alphas_reduce)}
        return sum(F.cross_entropy(functional_call(net, params, (x,)), y)
                   for x, y in batches) / len(batches)

    flat = torch.cat([a.detach().flatten() for a in net.arch_parameters()])
    return torch.autograd.functional.hessian(loss_of, flat, vectorize=True)


@pytest.mark.parametrize("space", ["darts", "s2"])
def test_lambda_max_equals_the_dense_hessians_largest_eigenvalue(space):
    net, batches = _tiny_net(SPACES[space])
    dense = _dense_hessian(net, batches)
    assert dense.shape == (2 * 5 * len(SPACES[space]),) * 2
    torch.testing.assert_close(dense, dense.T)  # a Hessian: symmetric
    exact = torch.linalg.eigvalsh(dense)[-1].item()
    lam = hessian_eigenvalue(net, batches, iters=80, tol=1e-10)
    assert math.isclose(lam, exact, rel_tol=1e-4)
    # the default budget (20 products, tolerance 1e-4) is already close
    assert math.isclose(hessian_eigenvalue(net, batches), exact, rel_tol=1e-3)


def test_lanczos_finds_the_largest_not_the_largest_in_magnitude():
    g = torch.Generator().manual_seed(1)
    U, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    d = torch.linspace(-10.0, 1.5, 40, dtype=torch.float64)  # |−10| > 1.5
    A = U @ torch.diag(d) @ U.T
    lam, used = lanczos_max(lambda v: A @ v, 40, iters=40, tol=1e-12, generator=g)
    assert math.isclose(lam, 1.5, rel_tol=1e-9) and used <= 40


def test_hessian_eigenvalue_leaves_model_and_random_state_unchanged():
    net, batches = _tiny_net(SPACES["s4"])  # noise draws random numbers
    net.eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    hessian_eigenvalue(net, batches)
    assert not net.training
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_fixed_batches_are_fixed_and_leave_the_random_state_alone():
    from darts_lit.core.data import get_dataset, search_loaders

    data, _ = get_dataset("digits", None, train=True, verbose=False)
    _, valid = search_loaders(data, 16, 0.5, seed=3)
    rng = torch.get_rng_state()
    a, b = fixed_batches(valid, 2, seed=7), fixed_batches(valid, 2, seed=7)
    assert torch.equal(torch.get_rng_state(), rng)
    assert len(a) == 2 and all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b,
                                                                           strict=True))
    c = fixed_batches(valid, 2, seed=8)
    assert not torch.equal(a[0][0], c[0][0])


def test_edge_entropy_against_a_direct_sum():
    alpha = torch.randn(14, 8, dtype=torch.float64)
    p = alpha.softmax(-1)
    want = torch.tensor([-sum(pi * math.log(pi) for pi in row) for row in p.tolist()],
                        dtype=torch.float64)
    torch.testing.assert_close(edge_entropy(alpha), want)
    assert torch.allclose(edge_entropy(torch.zeros(3, 8)), torch.full((3,), math.log(8),
                                                                      dtype=torch.float64))


# ---- P-DARTS's skip cap -------------------------------------------------------
def _skips(cell):
    return [op for op, _ in cell].count("skip_connect")


@pytest.mark.parametrize("trial", range(30))
def test_cap_skips_properties_on_random_alpha(trial):
    rng = random.Random(trial)
    torch.manual_seed(trial)
    alpha = torch.randn(14, 8)
    alpha[:, PRIMITIVES.index("skip_connect")] += rng.uniform(0, 3)  # many skips
    plain, m = derive_cell(alpha, 4), rng.randint(0, 3)
    capped = cap_skips(alpha, 4, m)
    assert _skips(capped) <= m
    if _skips(plain) <= m:
        assert capped == plain
    else:  # the skips that stay are the strongest of the plain cell's skips
        w = alpha.softmax(-1)[:, PRIMITIVES.index("skip_connect")]
        starts = [0, 2, 5, 9]

        def skip_weights(cell):
            return sorted(w[starts[n // 2] + j].item() for n, (op, j) in
                          enumerate(cell) if op == "skip_connect")

        kept = skip_weights(capped)
        assert kept == skip_weights(plain)[len(skip_weights(plain)) - len(kept):]


def test_cap_skips_on_a_hand_built_pc_darts_cell():
    # node 2: both inputs skips, 0→2 (0.9) stronger than 1→2 (0.6); β favours them
    alpha = torch.full((5, 8), -4.0)
    s, c = PRIMITIVES.index("skip_connect"), PRIMITIVES.index("dil_conv_3x3")
    alpha[0, s], alpha[0, c] = 2.0, 0.0
    alpha[1, s], alpha[1, c] = 1.0, 0.6
    alpha[2:, c] = 1.0  # node 3: convolutions
    beta = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0])
    assert derive_cell(alpha, 2, edge_weights=edge_weights(beta, 2))[:2] == [
        ("skip_connect", 0), ("skip_connect", 1)]
    capped = cap_skips(alpha, 2, 1, edge_weights=edge_weights(beta, 2))
    assert capped[:2] == [("skip_connect", 0), ("dil_conv_3x3", 1)]

    net = PCNetwork(4, 10, 3, steps=2, multiplier=2, in_channels=1, k=2)
    with torch.no_grad():
        net.alphas_normal.copy_(alpha)
        net.betas_normal.copy_(beta)
    g = capped_genotype(net, 1)
    assert g.normal == capped and g.reduce == net.genotype().reduce


# ---- early stopping -----------------------------------------------------------------
def test_darts_es_on_synthetic_sequences():
    assert darts_es_stop([]) is None and darts_es_stop([1.0] * 40) is None
    assert darts_es_stop([-1.0] * 10 + [-0.1] * 10) is None  # no ratio of signs
    slow = [1.0 + 0.01 * t for t in range(40)]  # grows, but less than 1/0.75 in 5
    assert all(darts_es_stop(slow[:t]) is None for t in range(41))
    jump = [1.0] * 10 + [3.0] * 10
    fired = [darts_es_stop(jump[:t]) for t in range(1, 21)]
    t = next(i for i, e in enumerate(fired, 1) if e is not None)
    # after 11 epochs the newest centred mean is that of 0-based epoch 8,
    # (1 + 1 + 1 + 1 + 3) / 5 = 1.4 ≥ 1/0.75; five epochs earlier (0-based 3) λ̄ = 1:
    # the result is the 4th epoch. After 10 epochs every mean is 1.
    assert (t, fired[t - 1]) == (11, 4)
    # a window of 1 and k = 1: a plain ratio of consecutive values
    assert darts_es_stop([1.0, 1.0, 2.0], window=1, k=1) == 2
    assert darts_es_stop([1.0, 1.0, 1.3], window=1, k=1) is None


def test_darts_plus_on_synthetic_sequences():
    assert darts_plus_stop([0, 1, 2], [[(1,)]] * 3)
    assert not darts_plus_stop([0, 1, 1], [[(1,)], [(2,)], [(1,)]])
    assert darts_plus_stop([0, 1], [[(1,)]] * 2, max_skips=1)
    ranks = [[(1, 2)]] * 3 + [[(2, 1)]] * 10
    assert not darts_plus_stop([0] * 12, ranks[:12])
    assert darts_plus_stop([0] * 13, ranks)
    assert op_ranking([[0.5, 0.1, 0.2, 0.3]], SPACES["s3"] + ["sep_conv_5x5"]) == [
        (3, 2)]


def test_early_stop_epoch_and_search_result_pick_the_rules_epoch():
    cfg = replace(TINY, hessian_batches=1, early_stop="darts_es")
    history = [{"epoch": e + 1, "lambda_max": lam, "genotype": {"e": e + 1}}
               for e, lam in enumerate([1.0] * 10 + [3.0] * 2)]
    assert early_stop_epoch(history[:10], cfg) is None
    assert early_stop_epoch(history[:11], cfg) == 4  # see the test above
    assert early_stop_epoch(history, cfg) == 5
    assert early_stop_epoch(history, replace(cfg, early_stop="none")) is None
    history[-1]["early_stop"] = {"rule": "darts_es", "genotype_epoch": 5}
    assert search_result(history) == {"e": 5}
    assert search_result(history[:11]) == {"e": 11}


def test_early_stop_min_epochs_delays_the_rule_and_nothing_else():
    cfg = replace(TINY, epochs=20, hessian_batches=1, early_stop="darts_es")
    history = [{"epoch": e + 1, "lambda_max": lam, "genotype": {"e": e + 1}}
               for e, lam in enumerate([1.0] * 10 + [3.0] * 2)]
    late = replace(cfg, early_stop_min_epochs=12)  # at least 12 epochs
    assert early_stop_epoch(history[:11], cfg) == 4
    assert early_stop_epoch(history[:11], late) is None
    assert early_stop_epoch(history, late) == early_stop_epoch(history, cfg) == 5
    # a minimum of 1 is the rule's own: no rule stops before its first epoch
    for n in range(1, 13):
        assert early_stop_epoch(history[:n], replace(cfg, early_stop_min_epochs=1)) \
            == early_stop_epoch(history[:n], cfg)


def test_darts_plus_stops_where_the_skips_reach_two_and_stays_stopped(tmp_path):
    cfg = replace(TINY, space="s2", epochs=4)
    free = search(cfg).history  # the same search without the rule: it runs every epoch
    first = next(r["epoch"] for r in free if r["skips"] >= 2)  # S2 does collapse here
    assert 1 < first < 4
    stopped = search(cfg, early_stop="darts_plus", out_dir=str(tmp_path)).history
    assert len(stopped) == first
    assert stopped[-1]["early_stop"] == {"rule": "darts_plus", "genotype_epoch": first}
    for r, s in zip(free, stopped, strict=False):  # the rule changes nothing else
        s = {k: v for k, v in s.items() if k != "early_stop"}
        assert {**r, "seconds": 0} == {**s, "seconds": 0}
    saved = json.loads((tmp_path / "genotype.json").read_text())
    assert saved == search_result(stopped) == free[first - 1]["genotype"]
    assert search(cfg, early_stop="darts_plus", out_dir=str(tmp_path),
                  resume=True).history == stopped  # a stopped run stays stopped


def test_darts_plus_with_a_minimum_fires_at_the_first_collapse_after_it():
    cfg = replace(TINY, space="s2", epochs=6)
    free = search(cfg).history
    first = next(r["epoch"] for r in free if r["skips"] >= 2)
    assert first < 4  # so a minimum of first + 1 leaves epochs to stop in
    later = next((r["epoch"] for r in free[first:] if r["skips"] >= 2), None)
    delayed = search(cfg, early_stop="darts_plus",
                     early_stop_min_epochs=first + 1).history
    assert len(delayed) == (later or 6)
    if later is not None:
        assert delayed[-1]["early_stop"] == {"rule": "darts_plus",
                                             "genotype_epoch": later}
    assert all("early_stop" not in r for r in delayed[:-1])
    for r, s in zip(free, delayed, strict=False):  # the same search until it stops
        s = {k: v for k, v in s.items() if k != "early_stop"}
        assert {**r, "seconds": 0} == {**s, "seconds": 0}


# ---- the search with the new settings -----------------------------------------
def test_diagnostics_do_not_change_the_search():
    plain = search(TINY, space="s4").history  # noise ops draw random numbers
    watched = search(TINY, space="s4", hessian_batches=1).history
    for p, w in zip(plain, watched, strict=True):
        assert p["lambda_max"] is None and isinstance(w["lambda_max"], float)
        assert {**p, "seconds": 0, "lambda_max": 0} == {**w, "seconds": 0,
                                                        "lambda_max": 0}


def test_records_hold_the_diagnostics_of_the_space():
    history = search(TINY, space="s3", max_skips=0).history
    for r in history:
        assert r["primitives"] == SPACES["s3"]
        assert torch.tensor(r["alphas"]["normal"]).shape == (5, 3)
        assert all(op in ("skip_connect", "sep_conv_3x3") for op, _ in
                   r["genotype"]["normal"])
        assert "skip_connect" not in [op for op, _ in r["genotype"]["normal"]]
        assert 0 <= r["skips"] <= r["parameter_free"] <= 4  # counted before the cap
        want = edge_entropy(torch.tensor(r["alphas"]["normal"]).log())
        torch.testing.assert_close(torch.tensor(r["entropy"]["normal"],
                                                dtype=torch.float64), want, rtol=1e-5,
                                   atol=1e-6)


def test_sdarts_perturbs_the_weight_step_only():
    base = replace(TINY, epochs=1, max_steps_per_epoch=1)
    plain, smooth = search(base).history, search(base, sdarts_epsilon=0.5).history
    # one step: the α step comes first, from the same weights, so α is the same ...
    assert plain[0]["alphas"] == smooth[0]["alphas"]
    # ... while the weight step saw perturbed architecture weights
    assert plain[0]["train_loss"] != smooth[0]["train_loss"]
    two = replace(base, max_steps_per_epoch=2)
    noisy = search(two, sdarts_epsilon=0.5).history
    assert search(two).history[0]["alphas"] != noisy[0]["alphas"]


def test_sdarts_adv_perturbs_the_weight_step_only():
    """SDARTS-ADV: α after one step as without it (the α step comes first); the
    weight step saw another loss than SDARTS-RS's and than no perturbation."""
    base = replace(TINY, epochs=1, max_steps_per_epoch=1)
    plain = search(base).history
    adv = search(base, sdarts_epsilon=0.5, sdarts_attack_steps=3).history
    rs = search(base, sdarts_epsilon=0.5).history
    assert plain[0]["alphas"] == adv[0]["alphas"]
    assert len({plain[0]["train_loss"], adv[0]["train_loss"], rs[0]["train_loss"]}) == 3


def test_adversarial_smoothing_finds_a_worse_delta_than_noise():
    """On a tiny supernet: the ascent's δ raises the (evaluation-mode) training loss
    above δ = 0 and above every one of 20 random δ of the same radius; the perturbed
    rows stay distributions and the |δ| before renormalisation is within ε; nothing
    of the network changes."""
    from torch.nn import functional as F

    from darts_lit.cnn.model_search import Network
    from darts_lit.cnn.smoothing import adversarial_smoothing

    torch.manual_seed(0)
    net = Network(4, 10, 3, steps=2, multiplier=2, in_channels=1)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(10, (16,))
    net(x)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    adv = adversarial_smoothing(net, x, y, 0.2, steps=5)
    assert net.training and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    net.eval()
    with torch.no_grad():
        clean = F.cross_entropy(net(x), y)
        attacked = F.cross_entropy(net(x, perturb=adv), y)
        noisy = torch.stack([F.cross_entropy(net(x, perturb=random_smoothing(0.2)), y)
                             for _ in range(20)])
    assert attacked > clean and attacked > noisy.max()
    for a, p in zip(net.arch_parameters(), adv, strict=True):
        base = F.softmax(a, -1)
        w = p(base)
        assert ((w >= 0) & (w <= 1)).all()
        torch.testing.assert_close(w.sum(-1), torch.ones(len(w)))
        assert not torch.equal(w, base)


def public_clip(rows: torch.Tensor) -> torch.Tensor:
    """SmoothDARTS's `clip()`, written as its loop writes it, row by row: clamp to
    [0, 1], a row of zeros gets 1 at its largest entry, divide by the row's sum."""
    rows = rows.clone()
    for line in rows:
        top = line.argmax()
        line.clamp_(0, 1)
        if line.sum() == 0.0:
            line[top] = 1.0
        line.div_(line.sum())
    return rows


def test_random_smoothing_projects_each_row_as_the_public_code():
    """SDARTS-RS's noise, then `public_clip`."""
    g = torch.Generator().manual_seed(3)
    w = F.softmax(3 * torch.randn(300, 8, generator=g, dtype=torch.float64), -1)
    w[:5] = -1.0  # rows whose every entry the noise leaves below 0
    torch.manual_seed(1)
    seen = random_smoothing(0.3)(w)
    torch.manual_seed(1)
    expected = public_clip(w + torch.empty_like(w).uniform_(-0.3, 0.3))
    torch.testing.assert_close(seen, expected, rtol=0, atol=1e-15)
    assert ((seen >= 0) & (seen <= 1)).all()
    torch.testing.assert_close(seen.sum(-1), torch.ones(300, dtype=torch.float64))
    assert (seen == 1.0).any(), "no row was all below 0: the last case is untested"


def test_adversarial_projection_is_the_public_codes_box_then_clip():
    """One PGD projection of SDARTS-ADV as `Linf_PGD_alpha` writes it: the parameters
    reset to base + clamp(p − base, −ε, ε), then `public_clip`. `_project` returns the
    δ that reaches that point."""
    from darts_lit.cnn.smoothing import _project

    g = torch.Generator().manual_seed(5)
    base = F.softmax(torch.randn(200, 8, generator=g, dtype=torch.float64), -1)
    delta = 0.6 * torch.rand(200, 8, generator=g, dtype=torch.float64) - 0.45
    base[:4] = F.softmax(0.1 * torch.randn(4, 8, generator=g, dtype=torch.float64), -1)
    delta[:4] = -0.4  # beyond the box: clamped to −0.3, so every entry goes below 0
    assert (base[:4] + delta[:4].clamp(-0.3, 0.3) < 0).all()
    expected = public_clip(base + delta.clamp(-0.3, 0.3))
    seen = _project(base, delta, 0.3) + base
    torch.testing.assert_close(seen, expected, rtol=0, atol=1e-15)
    assert (seen[:4].argmax(-1) == base[:4].argmax(-1)).all()  # the largest before
    assert (seen[:4].max(-1).values == 1.0).all()
    torch.testing.assert_close(seen.sum(-1), torch.ones(200, dtype=torch.float64))


def test_random_smoothing_distribution():
    torch.manual_seed(0)
    w = torch.full((400, 500), 0.25)
    d = random_smoothing(0.2, clip=False)(w) - w  # the noise alone
    assert d.abs().max() <= 0.2 + 1e-7
    assert abs(d.mean().item()) < 2e-3 and abs(d.var().item() - 0.04 / 3) < 5e-4
    hist = torch.histc(d, bins=4, min=-0.2, max=0.2) / d.numel()  # uniform: 1/4 each
    assert torch.allclose(hist, torch.full((4,), 0.25), atol=5e-3)


@pytest.mark.parametrize("bad, words", [
    (dict(early_stop="darts_es"), "early_stop: 'darts_es' watches λ_max: give "
     "hessian_batches ≥ 1"),
    (dict(sdarts_epsilon=1.0), "sdarts_epsilon: must be a number ≥ 0 and < 1, got 1.0"),
    (dict(sdarts_epsilon=0.3, single_level=True), "sdarts_epsilon: perturbs the "
     "weight step"),
    (dict(sdarts_attack_steps=7), "sdarts_attack_steps: needs the radius of the box: "
     "give sdarts_epsilon > 0"),
    (dict(space="s9"), "space: must be one of darts, s2, s3, s4, got 's9'"),
    (dict(space="s2", latency_weight=0.1), "space: must be 'darts' with "
     "latency_weight"),
    (dict(max_skips=-1), "max_skips: must be an integer ≥ 0, got -1"),
    (dict(hessian_batches=-2), "hessian_batches: must be an integer ≥ 0, got -2"),
    (dict(early_stop_min_epochs=1), "early_stop_min_epochs: delays an early-stopping "
     "rule: give early_stop darts_es or darts_plus"),
    (dict(early_stop="darts_plus", early_stop_min_epochs=2), "early_stop_min_epochs: "
     "must be below epochs (2), or the rule could never stop the search; got 2"),
    (dict(early_stop="darts_plus", early_stop_min_epochs=-1), "early_stop_min_epochs: "
     "must be an integer ≥ 0, got -1"),
])
def test_bad_collapse_settings_name_the_option(bad, words):
    with pytest.raises(ConfigError) as e:
        search(TINY, **bad)
    assert str(e.value).startswith(words), str(e.value)


def test_darts_es_can_fire_first_after_the_tenth_epoch():
    """Window 5 and lag 5: the newest centred mean is of epoch n − 2, the one it is
    compared with of epoch n − 7, whose window starts at epoch n − 9 ≥ 1."""
    lams = [2.0 ** n for n in range(20)]
    fired = [darts_es_stop(lams[:n]) for n in range(1, 21)]
    assert fired[:9] == [None] * 9
    assert fired[9] == 3  # after 10 epochs: returns the architecture of epoch 3


# ---- benchmarks/collapse.py ------------------------------------------------------
def _collapse_bench(*args, tiny=True):
    """benchmarks/collapse.py with `args`, after the options of a tiny run if `tiny`."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    small = ["--seeds", "1", "--search-epochs", "2", "--steps-per-epoch", "2",
             "--train-epochs", "1", "--init-channels", "2", "--layers", "3",
             "--batch-size", "8", "--threads", "1"] if tiny else []
    return subprocess.run(
        [sys.executable, "benchmarks/collapse.py", *small, *args],
        cwd=root, capture_output=True, text=True, timeout=600,
        env={"PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"})


def test_collapse_benchmark_adds_methods_to_stored_results(tmp_path):
    """--json writes a run, --add-to merges another run's methods into it; the last
    line is remedy_summary of the results; other settings or a stored method are
    refused before any search, naming the file, and leave it as it was."""
    from darts_lit.cnn.remedies import remedy_summary

    file = tmp_path / "results.json"
    first = _collapse_bench("--methods", "darts", "--json", str(file))
    assert first.returncode == 0, first.stderr[-2000:]
    stored = json.loads(file.read_text())
    assert list(stored["results"]) == ["darts"]
    second = _collapse_bench("--methods", "darts_plus", "--add-to", str(file))
    assert second.returncode == 0, second.stderr[-2000:]
    merged = json.loads(file.read_text())
    assert merged["settings"]["methods"] == list(merged["results"]) == [
        "darts", "darts_plus"]
    assert merged["results"]["darts"] == stored["results"]["darts"]
    last = dict(kv.split("=") for kv in second.stdout.strip().splitlines()[-1].split())
    s = remedy_summary(merged["results"])["darts_plus"]
    assert float(last["darts_plus_acc"]) == pytest.approx(s["acc"], abs=0.005)
    assert float(last["darts_plus_lam"]) == pytest.approx(s["lam1"], abs=5e-5)
    before = file.read_text()
    for extra, words in [(("--methods", "l2", "--seeds", "2"), "seeds [1] there, [2] "
                          "here"), (("--methods", "darts"), "already stored: darts")]:
        bad = _collapse_bench(*extra[:2], "--add-to", str(file), *extra[2:])
        assert bad.returncode == 2 and f"--add-to {file}: " in bad.stderr, bad.stderr
        assert words in bad.stderr and "Traceback" not in bad.stderr
        assert file.read_text() == before
    missing = _collapse_bench("--methods", "l2", "--add-to", str(tmp_path / "no.json"))
    assert missing.returncode == 2 and "cannot read it" in missing.stderr
    other = tmp_path / "other.json"
    other.write_text('{"results": {}}')
    wrong = _collapse_bench("--methods", "l2", "--add-to", str(other))
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert "not a results file written by --json" in wrong.stderr


def test_collapse_benchmark_merges_runs_made_in_parallel(tmp_path):
    """--merge joins files of different methods (same settings) into --json without
    searching, prints their summary; a method in two files, a missing --json or a file
    that is not a result are refused with one line, nothing written."""
    from darts_lit.cnn.remedies import merge_results, remedy_summary

    a, b, ab = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "ab.json"
    for file, method in ((a, "darts"), (b, "l2")):
        done = _collapse_bench("--methods", method, "--json", str(file),
                               "--train-layers", "4", "--train-channels", "3")
        assert done.returncode == 0, done.stderr[-2000:]
    joined = _collapse_bench("--merge", str(a), str(b), "--json", str(ab), tiny=False)
    assert joined.returncode == 0, joined.stderr[-2000:]
    assert "search" not in joined.stdout  # no search header: nothing was run
    merged = json.loads(ab.read_text())
    expected = merge_results(json.loads(a.read_text()), json.loads(b.read_text()))
    assert merged["results"] == expected["results"]
    assert merged["settings"]["methods"] == ["darts", "l2"]
    assert merged["settings"]["train_layers"] == 4
    last = dict(kv.split("=") for kv in joined.stdout.strip().splitlines()[-1].split())
    s = remedy_summary(merged["results"])
    assert list(last) == ["darts_acc", "l2_acc", "darts_skips", "l2_skips",
                          "darts_free", "l2_free", "darts_lam", "l2_lam"]
    assert float(last["l2_lam"]) == pytest.approx(s["l2"]["lam1"], abs=5e-5)
    for extra, words in [((str(a), str(a), "--json", str(tmp_path / "x.json")),
                          "already stored: darts"), ((str(a), str(b)), "needs --json"),
                         ((str(a), str(b), "--json", str(tmp_path / "x.json"),
                           "--methods", "l2"), "no other option (given: --methods"),
                         ((str(a), str(tmp_path / "no.json"), "--json",
                           str(tmp_path / "x.json")), "cannot read it")]:
        bad = _collapse_bench("--merge", *extra, tiny=False)
        assert bad.returncode == 2 and words in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
    assert not (tmp_path / "x.json").exists()


def _collapse_module(monkeypatch):
    """benchmarks/collapse.py imported as a module."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(root / "benchmarks"))
    spec = importlib.util.spec_from_file_location("collapse_bench",
                                                  root / "benchmarks" / "collapse.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_collapse_benchmark_trains_each_cell_once_per_seed(monkeypatch):
    """Training a cell twice (same seed) gives the same accuracy to the last bit, which
    is what lets `trained_accuracy` reuse it; it trains once per cell and seed."""
    bench = _collapse_module(monkeypatch)
    args = bench.parse_args(["--train-epochs", "1", "--init-channels", "2",
                             "--layers", "3", "--batch-size", "8"])
    cell = {"normal": [["skip_connect", 0], ["sep_conv_3x3", 1]] * 4,
            "normal_concat": [2, 3, 4, 5],
            "reduce": [["sep_conv_3x3", 0], ["skip_connect", 1]] * 4,
            "reduce_concat": [2, 3, 4, 5]}
    other = {**cell, "normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]] * 4}
    first, again = (bench.train_cell(cell, 1, args) for _ in range(2))
    assert first == again
    calls = []  # from here on, "training" returns the number of trainings so far
    monkeypatch.setattr(bench, "train_cell",
                        lambda g, seed, a: float(len(calls.append((g, seed)) or calls)))
    assert [bench.trained_accuracy(g, seed, args) for g, seed in [
        (cell, 1), (dict(reversed(cell.items())), 1), (other, 1), (cell, 2),
        (other, 1)]] == [1.0, 1.0, 2.0, 3.0, 2.0]
    assert calls == [(cell, 1), (other, 1), (cell, 2)]


def test_collapse_benchmark_derives_stopping_and_capping_from_vanillas_search(
        monkeypatch):
    """DARTS-ES, DARTS+ (with and without a minimum) and the skip cap, derived from
    vanilla DARTS's history by the benchmark, give the records their own searches
    give, bit for bit (but the seconds); DARTS-ES also where it fires, on a λ_max
    made to grow by half each epoch."""
    from darts_lit.cnn import collapse

    bench = _collapse_module(monkeypatch)
    args = bench.parse_args(["--space", "s2", "--search-epochs", "12",
                             "--steps-per-epoch", "1", "--init-channels", "2",
                             "--layers", "3", "--batch-size", "8", "--weight-decay",
                             "0", "--arch-learning-rate", "3e-2"])

    def both(method):
        cfg = bench.method_config(method, 1, args)
        derived = bench.derived_history(vanilla, cfg)
        assert strip_time(derived) == strip_time(search(cfg).history), method
        return derived

    vanilla = search(bench.method_config("darts", 1, args)).history
    assert max(r["skips"] for r in vanilla) > 2  # so the cap has work to do
    capped = both("pdarts_cap")
    assert all(cell_stats(r["genotype"]["normal"])["skips"] <= 2 for r in capped)
    assert capped[-1]["genotype"] != vanilla[-1]["genotype"]
    for method in ("darts_plus", "darts_plus_min8"):
        assert "early_stop" in both(method)[-1]  # each rule fires here
    assert len(both("darts_es")) == 12  # the real λ_max does not grow enough

    calls = []
    monkeypatch.setattr(collapse, "hessian_eigenvalue",
                        lambda *a, **k: 1.5 ** len(calls.append(0) or calls))
    vanilla = search(bench.method_config("darts", 1, args)).history
    calls.clear()
    stopped = both("darts_es")
    assert len(stopped) == 10 and stopped[-1]["early_stop"]["genotype_epoch"] == 3
