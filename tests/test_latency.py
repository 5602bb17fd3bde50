"""Unit tests of darts_lit.latency.objective and darts_lit.fbnet.space (the latency
objective)."""

import json
import math

import pytest
import torch
from torch.nn import functional as F

from darts_lit.cli import main as cli_main
from darts_lit.cnn.genotypes import DARTS_V2
from darts_lit.cnn.model_search import Network
from darts_lit.cnn.ops import OPS, PRIMITIVES
from darts_lit.core.data import DatasetInfo
from darts_lit.fbnet import space as fbnet
from darts_lit.fbnet import validation
from darts_lit.fbnet.search import FBNetSearchConfig, search_fbnet
from darts_lit.latency import darts as LD
from darts_lit.latency import objective as L
from darts_lit.latency import table as LT
from darts_lit.latency import timing as LTM

FAST = dict(warmup=1, repeats=3)


# ---- expected latency and the losses -------------------------------------------------
def test_expected_latency_is_the_weighted_sum_and_its_gradient_is_exact():
    g = torch.Generator().manual_seed(0)
    lat = torch.rand(5, 9, generator=g, dtype=torch.float64)
    alpha = torch.randn(5, 9, generator=g, dtype=torch.float64, requires_grad=True)
    p = alpha.softmax(-1)
    E = L.expected_latency(p, lat, fixed=0.25)
    manual = sum(p[r, i].item() * lat[r, i].item() for r in range(5) for i in range(9))
    assert abs(E.item() - (manual + 0.25)) < 1e-12
    assert torch.autograd.gradcheck(lambda a: L.expected_latency(a.softmax(-1), lat),
                                    (alpha,))
    E.backward()
    eps = 1e-6
    for idx in [(0, 0), (3, 4), (4, 8)]:
        d = torch.zeros_like(alpha)
        d[idx] = eps
        f = lambda a: L.expected_latency(a.softmax(-1), lat).item()
        fd = (f(alpha.detach() + d) - f(alpha.detach() - d)) / (2 * eps)
        assert abs(alpha.grad[idx].item() - fd) < 1e-8


def test_expected_latency_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        L.expected_latency(torch.ones(3, 8), torch.ones(3, 9))


def test_discrete_latency_is_the_sum_of_chosen_entries():
    lat = torch.arange(12.0).reshape(3, 4)
    assert L.discrete_latency([1, 0, 3], lat) == 1 + 4 + 11
    assert L.discrete_latency([1, 0, 3], lat, fixed=0.5) == 16.5
    onehot = F.one_hot(torch.tensor([1, 0, 3]), 4).float()
    assert L.expected_latency(onehot, lat).item() == 16.0


def test_lambda_zero_gives_the_plain_gradient():
    g = torch.Generator().manual_seed(1)
    lat = torch.rand(4, 8, generator=g, dtype=torch.float64)
    w_ce = torch.randn(4, 8, generator=g, dtype=torch.float64)
    alpha0 = torch.randn(4, 8, generator=g, dtype=torch.float64)

    def grad(loss_fn):
        a = alpha0.clone().requires_grad_()
        p = a.softmax(-1)
        loss_fn((p * w_ce).sum().exp(), L.expected_latency(p, lat)).backward()
        return a.grad

    plain = grad(lambda ce, lat_: ce)
    assert torch.equal(grad(lambda ce, lat_: L.additive_loss(ce, lat_, 0.0)), plain)
    lat_only = grad(lambda ce, lat_: lat_)
    torch.testing.assert_close(grad(lambda ce, lat_: L.additive_loss(ce, lat_, 2.0)),
                               plain + 2.0 * lat_only)


def test_fbnet_loss_formula_and_domain():
    ce, lat = torch.tensor(1.3), torch.tensor(2500.0)
    expected = 1.3 * 0.2 * math.log(2500.0) ** 0.6
    assert abs(L.fbnet_loss(ce, lat).item() - expected) < 1e-5
    with pytest.raises(ValueError, match="LAT > 1"):
        L.fbnet_loss(ce, torch.tensor(0.5))


def test_darts_objective_for_the_architect_adds_lambda_times_latency():
    lat_n = torch.rand(14, 8, dtype=torch.float64)
    lat_r = torch.rand(14, 8, dtype=torch.float64)
    an, ar = torch.randn(14, 8), torch.randn(14, 8)
    ce = torch.tensor(2.0)
    e = LD.darts_expected_latency(an, ar, lat_n, lat_r)
    zero = LD.latency_objective(lat_n, lat_r, lam=0.0)
    assert torch.equal(zero(ce, [an, ar]), ce + 0)
    out = LD.latency_objective(lat_n, lat_r, lam=0.5)(ce, [an, ar])
    torch.testing.assert_close(out, ce + 0.5 * e)
    out = LD.latency_objective(lat_n, lat_r, form="fbnet")(ce, [an, ar])
    torch.testing.assert_close(out, L.fbnet_loss(ce, 1e3 * e))
    with pytest.raises(ValueError, match="form"):
        LD.latency_objective(lat_n, lat_r, form="mul")


# ---- Gumbel-softmax ------------------------------------------------------------------
def test_gumbel_hard_samples_are_one_hot_with_soft_gradients():
    theta = torch.randn(50, 9, requires_grad=True)
    g = torch.Generator().manual_seed(3)
    m = L.gumbel_softmax(theta, 0.7, hard=True, generator=g)
    assert ((m == 0) | (m == 1)).all() and (m.sum(-1) == 1).all()
    w = torch.randn(9)
    (m * w).sum().backward()
    t2 = theta.detach().clone().requires_grad_()
    soft = L.gumbel_softmax(t2, 0.7, generator=torch.Generator().manual_seed(3))
    assert torch.equal(soft.argmax(-1), m.argmax(-1))
    (soft * w).sum().backward()
    torch.testing.assert_close(theta.grad, t2.grad)


def test_gumbel_argmax_follows_the_softmax_and_low_tau_is_near_one_hot():
    theta = torch.tensor([0.5, -1.0, 1.5, 0.0])
    m = L.gumbel_softmax(theta.repeat(40000, 1), 1.0, hard=True,
                         generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(m.mean(0), theta.softmax(-1), atol=0.01, rtol=0)
    cold = L.gumbel_softmax(theta.repeat(100, 1), 0.01,
                            generator=torch.Generator().manual_seed(0))
    assert (cold.max(-1).values > 0.99).float().mean() > 0.95


def test_temperature_schedule_follows_fbnet():
    for e in range(0, 91, 7):
        assert L.temperature(e) == pytest.approx(5.0 * math.exp(-0.045 * e), rel=1e-12)
    assert L.temperature(1) / L.temperature(0) == pytest.approx(0.956, abs=1e-3)
    assert L.temperature(3, tau0=2.0, decay=0.1) == pytest.approx(2 * math.exp(-0.3))


def test_arch_weights_modes():
    a = torch.randn(14, 8)
    assert torch.equal(L.arch_weights(a), a.softmax(-1))
    h = L.arch_weights(a, "gumbel", tau=1.0, hard=True)
    assert (h.sum(-1) == 1).all()
    with pytest.raises(ValueError, match="mode"):
        L.arch_weights(a, "argmax")


# ---- the lookup table ----------------------------------------------------------------
def _specs(batch=2):
    return [LT.OpSpec("sep_conv_3x3", 4, 4, 6, 6, 1, batch),
            LT.OpSpec("max_pool_3x3", 4, 4, 6, 6, 2, batch)]


def _make(spec):
    return OPS[spec.op](spec.c_in, spec.stride, False)


def test_measure_latency_is_positive_and_restores_the_mode():
    m = OPS["sep_conv_3x3"](4, 1, False).train()
    ms = LTM.measure_latency(m, (2, 4, 6, 6), **FAST)
    assert ms > 0 and m.training


def test_table_json_round_trip_and_reuse(tmp_path, monkeypatch):
    path = tmp_path / "t.json"
    table = LT.load_or_measure(path, _specs(), _make, **FAST)
    assert set(table.entries) == {s.key for s in _specs()}
    data = json.loads(path.read_text())
    assert data["device"] == LT.device_name("cpu")
    assert data["torch"] == torch.__version__
    assert data["dtype"] == "float32" and data["clock"] == "wall"
    again = LT.LatencyTable.load(path)
    assert again == table
    # a matching table is reused: nothing is measured again
    monkeypatch.setattr(LT, "measure_latency",
                        lambda *a, **k: pytest.fail("re-measured"))
    assert LT.load_or_measure(path, _specs(), _make, **FAST) == table


def test_mismatched_table_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "t.json"
    LT.load_or_measure(path, _specs(), _make, **FAST)
    data = json.loads(path.read_text())
    data["device"] = "cuda: NVIDIA Imaginary 9000"
    path.write_text(json.dumps(data))
    with pytest.raises(LT.StaleTableError) as e:
        LT.LatencyTable.load(path)
    msg = str(e.value)
    assert "NVIDIA Imaginary 9000" in msg and LT.device_name("cpu") in msg
    assert "rebuild" in msg
    with pytest.raises(LT.StaleTableError):
        LT.load_or_measure(path, _specs(), _make, **FAST)
    table = LT.load_or_measure(path, _specs(), _make, rebuild=True, **FAST)
    assert LT.LatencyTable.load(path) == table  # re-measured and overwritten
    data = json.loads(path.read_text())
    data["torch"] = "1.0.0"
    path.write_text(json.dumps(data))
    with pytest.raises(LT.StaleTableError, match="torch"):
        LT.LatencyTable.load(path)


def test_cpu_clock_needs_one_thread(one_thread, tmp_path):
    m = OPS["sep_conv_3x3"](4, 1, False)
    assert LTM.measure_latency(m, (2, 4, 6, 6), clock="cpu", **FAST) > 0
    path = tmp_path / "t.json"
    LT.load_or_measure(path, _specs(), _make, clock="cpu", **FAST)
    with pytest.raises(LT.StaleTableError, match="clock"):
        LT.LatencyTable.load(path, clock="wall")
    torch.set_num_threads(2)
    with pytest.raises(ValueError, match="set_num_threads"):
        LTM.measure_latency(m, (2, 4, 6, 6), clock="cpu", **FAST)


def test_auto_clock_is_cpu_time_only_on_one_cpu_thread(one_thread):
    assert LTM.auto_clock("cpu") == "cpu"
    torch.set_num_threads(2)
    assert LTM.auto_clock("cpu") == "wall"
    assert LTM.auto_clock(torch.device("cuda")) == "wall"


# ---- the DARTS cell space ------------------------------------------------------------
@pytest.fixture(scope="module")
def darts_setup():
    torch.manual_seed(0)
    net = Network(4, 10, 5, in_channels=1)
    shapes = LD.darts_edge_shapes(net, 8)
    table = LT.measure_table(LT.LatencyTable.empty(), LD.darts_specs(shapes, 2),
                            LD.make_darts_op, **FAST)
    return net, shapes, table, *LD.darts_latency_matrices(shapes, table, 2)


def test_darts_edge_shapes_follow_the_network(darts_setup):
    net, shapes, *_ = darts_setup
    assert len(shapes) == 5 * 14
    for s in shapes:
        assert s.stride == (2 if s.reduction and s.edge in _input_edges() else 1)
    assert {s.c for s in shapes if s.cell == 0} == {4}
    assert net.training  # the probing forward pass left the mode alone


def _input_edges():
    """Edges leaving the two input nodes of a 4-step cell (j < 2)."""
    edges, offset = [], 0
    for i in range(4):
        edges += [offset, offset + 1]
        offset += 2 + i
    return edges


def test_darts_expected_latency_is_the_sum_over_cells(darts_setup):
    net, shapes, table, lat_n, lat_r = darts_setup
    an = torch.randn(14, 8, dtype=torch.float64)
    ar = torch.randn(14, 8, dtype=torch.float64)
    manual = 0.0
    for s in shapes:
        p = (ar if s.reduction else an).softmax(-1)[s.edge]
        for o, op in enumerate(PRIMITIVES):
            if op != "none":
                manual += p[o].item() * table[LT.OpSpec(op, s.c, s.c, s.h, s.w,
                                                       s.stride, 2)]
    e = LD.darts_expected_latency(an, ar, lat_n, lat_r).item()
    assert abs(e - manual) < 1e-9 * manual


def test_genotype_latency_is_the_sum_of_chosen_entries(darts_setup):
    _, shapes, table, lat_n, lat_r = darts_setup
    by_hand = 0.0
    for s in shapes:
        gene = DARTS_V2.reduce if s.reduction else DARTS_V2.normal
        for n, (op, j) in enumerate(gene):
            if s.edge == sum(2 + m for m in range(n // 2)) + j:
                by_hand += table[LT.OpSpec(op, s.c, s.c, s.h, s.w, s.stride, 2)]
    assert LD.genotype_latency(DARTS_V2, lat_n, lat_r) == pytest.approx(by_hand)


def test_architect_with_latency_objective_moves_alpha_to_cheap_ops(darts_setup,
                                                                   one_thread):
    from darts_lit.cnn.architect import Architect

    net, _, _, lat_n, lat_r = darts_setup
    torch.manual_seed(0)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    before = LD.darts_expected_latency(net.alphas_normal, net.alphas_reduce, lat_n,
                                      lat_r).item()
    arch = Architect(net, arch_lr=0.05,
                     arch_objective=LD.latency_objective(lat_n, lat_r, lam=100.0))
    arch.step(x, y, x, y, eta=0.01, w_optimizer=None, unrolled=False)
    after = LD.darts_expected_latency(net.alphas_normal, net.alphas_reduce, lat_n,
                                     lat_r).item()
    assert after < before


# ---- FBNet ---------------------------------------------------------------------------
SPACE = fbnet.FBNetSpace(1, 10, 8, stages=((8, 1, 1), (16, 1, 2)), head=16)


def test_fbnet_blocks_and_the_derived_network_match_the_supernet():
    torch.manual_seed(0)
    sup = fbnet.FBNetSupernet(SPACE).eval()
    choices = [2, 8]
    net = fbnet.fbnet_network(SPACE, choices).eval()
    net[0].load_state_dict(sup.stem.state_dict())
    for i, k in enumerate(choices):
        net[1 + i].load_state_dict(sup.layers[i].candidates[k].state_dict())
    net[-1].load_state_dict(sup.head.state_dict())
    x = torch.randn(3, 1, 8, 8)
    onehot = F.one_hot(torch.tensor(choices), 9).float()
    torch.testing.assert_close(sup(x, onehot), net(x))
    assert len(sup.weights()) + 1 == len(list(sup.parameters()))
    with pytest.raises(ValueError, match="unknown FBNet block"):
        fbnet.parse_block("k4_x")


def test_fbnet_derived_latency_is_the_sum_of_chosen_entries(one_thread):
    table = fbnet.fbnet_table(SPACE, 2, **FAST)
    lat, fixed = fbnet.fbnet_latency(SPACE, table, 2)
    layers, fixed_specs = fbnet.fbnet_specs(SPACE, 2)
    assert lat.shape == (2, 9)
    choices = [4, 8]
    expected = table[layers[0][4]] + table[layers[1][8]] + sum(table[s]
                                                              for s in fixed_specs)
    assert L.discrete_latency(choices, lat, fixed) == pytest.approx(expected)


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(15, generator=g), torch.rand(15, generator=g)
    expected = spearmanr(x, y).statistic
    assert validation.spearman(x, y) == pytest.approx(expected, abs=1e-12)
    ties = torch.tensor([0.7, 0.7, 0.7, 1.2, 2.0, 2.0, 3.5])  # identical networks
    y7 = y[:7]
    assert validation.spearman(ties, y7) == pytest.approx(
        spearmanr(ties, y7).statistic, abs=1e-12)
    assert validation.average_ranks(ties).tolist() == [1, 1, 1, 3, 4.5, 4.5, 6]


def test_validation_and_search_run(tmp_path):
    table = fbnet.fbnet_table(SPACE, 4, **FAST)
    lat, fixed = fbnet.fbnet_latency(SPACE, table, 4)
    choices = validation.sample_choices(lat, 4, seed=0)
    assert len(choices) == 4 and all(len(c) == 2 for c in choices)
    report = validation.validate_table(SPACE, lat, fixed, choices, 4, **FAST)
    assert -1 <= report["spearman"] <= 1 and report["mean_relative_error"] >= 0
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 1, 8, 8),
                                          torch.randint(0, 10, (32,), generator=g))
    loader = torch.utils.data.DataLoader(data, 16)
    info = DatasetInfo("noise", 10, 1, 8, tuple("0123456789"), (0.0,), (1.0,), "")
    table = tmp_path / "fb.json"
    fbnet.fbnet_table(SPACE, 2, path=table, **FAST)  # the batch 2 of the search below
    result = search_fbnet(
        FBNetSearchConfig(objective="additive", epochs=2, warmup_epochs=1,
                          latency_table=str(table), latency_batch=2, clock="wall",
                          timing_warmup=0, timing_repeats=1, verbose=False),
        data=(loader, loader, info), space=SPACE)
    model, hist = result.model, result.history
    assert result.summary == {"architecture": hist[-1]["derived"],
                              "latency_ms": hist[-1]["derived_lat"]}
    assert [h["tau"] for h in hist] == [L.temperature(0), L.temperature(1)]
    assert "expected_lat" in hist[1] and "expected_lat" not in hist[0]
    lat, fixed = fbnet.fbnet_latency(SPACE, LT.LatencyTable.load(table), 2)
    assert hist[-1]["derived_lat"] == L.discrete_latency(model.derive(), lat, fixed)


# ---- command line --------------------------------------------------------------------
def test_cli_latency_builds_reuses_and_refuses(tmp_path, capsys, one_thread):
    path = tmp_path / "fb.json"
    args = ["latency", "--space", "fbnet", "--dataset", "digits", "--warmup", "1",
            "--repeats", "2", "--table", str(path)]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "latency table: 56 entries" in out and path.is_file()
    data = json.loads(path.read_text())
    data["device"] = "cuda: elsewhere"
    path.write_text(json.dumps(data))
    assert cli_main(args) == 1
    assert "was measured with another device 'cuda: elsewhere'" in (
        capsys.readouterr().err)
    assert cli_main(args + ["--rebuild"]) == 0


def test_table_needs_no_tqdm(monkeypatch):
    def no_tqdm(*args, **kwargs):
        raise ImportError("No module named 'tqdm'")

    monkeypatch.setattr(LT, "progress", no_tqdm)
    table = LT.measure_table(LT.LatencyTable.empty(), _specs(), _make, **FAST)
    assert set(table.entries) == {s.key for s in _specs()}
    assert all(ms > 0 for ms in table.entries.values())


# ---- Gumbel samples in the DARTS supernet --------------------------------------------
def test_sampled_logits_softmax_is_the_forward_and_hard_runs_the_sample():
    torch.manual_seed(0)
    net = Network(4, 10, 3, in_channels=1).eval()
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(L.sampled_logits(net, x, "softmax"), net(x))
    out = L.sampled_logits(net, x, tau=0.5, hard=True,
                           generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    w_n = L.arch_weights(net.alphas_normal, "gumbel", 0.5, True, g).detach()
    w_r = L.arch_weights(net.alphas_reduce, "gumbel", 0.5, True, g).detach()
    assert ((w_n == 0) | (w_n == 1)).all() and (w_n.sum(-1) == 1).all()
    s0 = s1 = net.stem(x)
    for cell in net.cells:
        s0, s1 = s1, cell(s0, s1, w_r if cell.reduction else w_n)
    torch.testing.assert_close(out, net.classifier(net.global_pooling(s1).flatten(1)))
    out.sum().backward()  # straight-through: α receives a gradient
    assert net.alphas_normal.grad.abs().sum() > 0


# ---- a hardware-aware search from the search config ----------------------------------
def _small_search(out_dir, **kw):
    from darts_lit.cnn.search import SearchConfig, search

    config = SearchConfig(dataset="digits", epochs=2, batch_size=16, init_channels=4,
                          layers=3, max_steps_per_epoch=4, arch_learning_rate=0.05,
                          device="cpu", seed=0, verbose=False, out_dir=str(out_dir))
    return search(config, **kw).history


def _final_expected_latency(history, table):
    net = Network(4, 10, 3, in_channels=1)
    shapes = LD.darts_edge_shapes(net, 8)
    lat_n, lat_r = LD.darts_latency_matrices(shapes, table, 16)
    p = history[-1]["alphas"]
    return (L.expected_latency(torch.tensor(p["normal"], dtype=torch.float64), lat_n)
            + L.expected_latency(torch.tensor(p["reduce"], dtype=torch.float64),
                                 lat_r)).item()


def test_latency_weight_in_the_search_config_lowers_expected_latency(tmp_path,
                                                                   monkeypatch):
    plain = _small_search(tmp_path / "plain")
    assert not (tmp_path / "plain" / "latency_table.json").exists()
    fast = _small_search(tmp_path / "fast", latency_weight=20.0, stop_after_epoch=1)
    path = tmp_path / "fast" / "latency_table.json"
    table = LT.LatencyTable.load(path)
    assert len(table.entries) == 7 * len({(s.c, s.h, s.stride) for s in
                                          LD.darts_edge_shapes(
                                              Network(4, 10, 3, in_channels=1), 8)})
    # resuming reuses the run's table: nothing is measured again
    monkeypatch.setattr(LT, "measure_latency",
                        lambda *a, **k: pytest.fail("re-measured"))
    fast = _small_search(tmp_path / "fast", latency_weight=20.0, resume=True)
    assert len(fast) == 2
    assert (_final_expected_latency(fast, table)
            < 0.9 * _final_expected_latency(plain, table))
    with pytest.raises(ValueError, match="not both"):
        _small_search(tmp_path / "both", latency_weight=1.0,
                      arch_objective=lambda ce, a: ce)


def test_cli_search_fbnet_runs_resumes_and_plots(tmp_path, capsys, one_thread):
    out = tmp_path / "fb"
    args = ["search-fbnet", "--dataset", "digits", "--epochs", "2", "--batch-size",
            "32", "--max-steps-per-epoch", "2", "--timing-warmup", "0",
            "--timing-repeats", "1", "--out", str(out), "--quiet"]
    assert cli_main([*args, "--stop-after", "1"]) == 0
    assert "(epoch 1/2)" in capsys.readouterr().out
    table = json.loads((out / "latency_table.json").read_text())
    assert cli_main(["search-fbnet", "--out", str(out), "--resume", "--quiet"]) == 0
    printed = capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    arch = json.loads((out / "architecture.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and "expected_lat" in history[1]
    assert arch["blocks"] == history[-1]["derived"]
    assert " ".join(arch["blocks"]) in printed
    assert (out / "latency.png").stat().st_size > 0
    assert json.loads((out / "latency_table.json").read_text()) == table  # reused
    (out / "latency.png").unlink()  # darts-lit plot draws it again
    assert cli_main(["plot", str(out), "--format", "svg"]) == 0
    assert "<svg" in (out / "latency.svg").read_text()
    assert cli_main(["search-rnn", "--out", str(out), "--resume"]) == 1
    assert "a 'search-fbnet' run, read by darts-lit search-fbnet --resume" in (
        capsys.readouterr().err)
