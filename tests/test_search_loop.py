"""Tests of darts_lit.cnn.search: the loop, checkpoints, bit-exact resume, NaN
handling."""

import json
import math
from dataclasses import replace

import pytest
import torch
from _helpers import TINY_SEARCH, same

from darts_lit.cnn.genotypes import load_genotype
from darts_lit.cnn.model_search import Network
from darts_lit.cnn.search import (
    SearchConfig,
    build_search,
    search,
    search_epoch,
)
from darts_lit.core.config import ConfigError
from darts_lit.core.data import get_dataset
from darts_lit.core.runs import CHECKPOINT, RunError
from darts_lit.core.utils import NonFiniteLossError, load_checkpoint

TINY = TINY_SEARCH


def test_defaults_are_the_papers():
    c = SearchConfig()
    assert (c.learning_rate, c.learning_rate_min, c.momentum, c.weight_decay) == (
        0.025, 0.001, 0.9, 3e-4)
    assert (c.grad_clip, c.batch_size, c.epochs, c.init_channels, c.layers) == (
        5.0, 64, 50, 16, 8)
    assert (c.train_portion, c.arch_learning_rate, c.arch_weight_decay) == (
        0.5, 3e-4, 1e-3)
    assert (c.steps, c.multiplier or c.steps, c.unrolled, c.hvp) == (4, 4, False,
                                                          "finite_difference")
    assert (c.dataset, c.device, c.out_dir, c.resume) == ("auto", "auto", None, False)
    assert c.warmup_epochs == 0  # DARTS: α steps from the first epoch


def test_a_warmup_trains_w_alone_then_alpha_moves():
    """PC-DARTS's warm-up: in its epochs α (and Adam's state) stay as they started,
    the weights train, no architecture loss is recorded; then α steps."""
    from darts_lit.core import utils

    cfg = replace(TINY, epochs=3, warmup_epochs=2)
    seen = []

    def keep(record, run):
        seen.append(([a.detach().clone() for a in run.model.arch_parameters()],
                     [w.detach().clone() for w in run.model.weights()],
                     len(run.optimizers["arch"].state)))

    history = search(cfg, on_epoch_end=keep).history
    utils.seed_everything(cfg.seed)  # as the loop does before it builds the search
    start = build_search(cfg).model
    for epoch, (alphas, weights, adam_state) in enumerate(seen):
        warm = epoch < 2
        assert all(torch.equal(a, s) for a, s in zip(
            alphas, start.arch_parameters(), strict=True)) == warm, epoch
        assert (adam_state == 0) == warm
        assert not torch.equal(weights[0], start.weights()[0])  # w trained throughout
    assert [r["arch_loss"] is None for r in history] == [True, True, False]


PC = dict(partial_channels=2, edge_normalization=True)


COLLAPSE = dict(space="s3", hessian_batches=1, max_skips=1, sdarts_epsilon=0.3)


@pytest.mark.parametrize("settings", [dict(unrolled=False), dict(unrolled=True),
                                      dict(single_level=True), PC,
                                      dict(PC, unrolled=True), COLLAPSE,
                                      dict(PC, space="s4", hessian_batches=1),
                                      dict(PC, warmup_epochs=1)])
def test_resume_is_bit_exact(tmp_path, settings):
    cfg = replace(TINY, **settings)
    straight = search(cfg, out_dir=str(tmp_path / "a")).history
    search(cfg, out_dir=str(tmp_path / "b"), stop_after_epoch=1)
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT)["epoch"] == 1
    resumed = search(cfg, out_dir=str(tmp_path / "b"), resume=True).history
    a = load_checkpoint(tmp_path / "a" / CHECKPOINT)
    b = load_checkpoint(tmp_path / "b" / CHECKPOINT)
    assert a["epoch"] == b["epoch"] == 2
    for k in ("alphas_normal", "alphas_reduce"):
        assert torch.equal(a["model"][k], b["model"][k])
    assert same(a["model"], b["model"])  # every weight and BatchNorm buffer
    assert same(a["optimizers"], b["optimizers"])  # SGD momentum, Adam moments
    assert same(a["schedulers"], b["schedulers"]) and same(a["rng"], b["rng"])
    for r, s in zip(straight, resumed, strict=True):
        assert {**r, "seconds": 0} == {**s, "seconds": 0}
    # the weights did move: the comparison is not between two untouched networks
    fresh = load_checkpoint(tmp_path / "b" / CHECKPOINT)["model"]["alphas_normal"]
    assert not torch.equal(fresh, torch.zeros_like(fresh))


def test_same_seed_same_run_different_seed_different_run():
    h1 = search(TINY, epochs=1).history
    h2 = search(TINY, epochs=1).history
    h3 = search(TINY, epochs=1, seed=6).history
    assert h1[0]["alphas"] == h2[0]["alphas"]
    assert h1[0]["alphas"] != h3[0]["alphas"]


def test_history_files_and_schedule(tmp_path):
    cfg = replace(TINY, epochs=3, out_dir=str(tmp_path))
    history = search(cfg).history
    assert json.loads((tmp_path / "history.json").read_text()) == history
    g = load_genotype(tmp_path / "genotype.json")
    assert [list(p) for p in g.normal] == history[-1]["genotype"]["normal"]
    keys = {"epoch", "lr", "train_loss", "train_acc", "arch_loss", "valid_loss",
            "valid_acc", "seconds", "genotype", "alphas"}
    assert all(keys <= set(r) for r in history)
    for r in history:  # cosine annealing from 0.025 to 0.001 over `epochs`
        t = r["epoch"] - 1
        want = 0.001 + (0.025 - 0.001) * (1 + math.cos(math.pi * t / 3)) / 2
        assert r["lr"] == pytest.approx(want, rel=1e-12)
        assert 0 <= r["train_acc"] <= 100 and 0 <= r["valid_acc"] <= 100
        for part in ("normal", "reduce"):
            w = torch.tensor(r["alphas"][part])
            assert w.shape == (5, 8)
            torch.testing.assert_close(w.sum(-1), torch.ones(5, dtype=w.dtype))


def test_architecture_step_comes_first_on_a_validation_batch():
    parts = build_search(TINY)
    events = []
    arch_step, w_step = parts.architect.step, parts.w_optimizer.step

    def record_arch(x, y, xv, yv, *, eta, w_optimizer, unrolled, hvp=None):
        events.append(("arch", eta, x.data_ptr() != xv.data_ptr()))
        return arch_step(x, y, xv, yv, eta=eta, w_optimizer=w_optimizer,
                         unrolled=unrolled, hvp=hvp)

    def record_weights(*a, **k):
        events.append(("weights",))
        return w_step(*a, **k)

    parts.architect.step, parts.w_optimizer.step = record_arch, record_weights
    search_epoch(parts, TINY, epoch=0, lr=0.0123)
    assert events == [("arch", 0.0123, True), ("weights",)] * 2


def test_nan_stops_with_message_and_keeps_checkpoint(tmp_path, monkeypatch):
    cfg = replace(TINY, out_dir=str(tmp_path))
    search(cfg, stop_after_epoch=1)
    good = load_checkpoint(tmp_path / CHECKPOINT)
    forward = Network.forward
    monkeypatch.setattr(Network, "forward", lambda self, x: forward(self, x) * math.nan)
    with pytest.raises(NonFiniteLossError) as e:
        search(cfg, resume=True)
    msg = str(e.value)
    assert "validation loss (architecture step) is nan at epoch 2, step 1" in msg
    assert "learning rate" in msg and str(tmp_path / CHECKPOINT) in msg
    assert "lower learning_rate" in msg  # the Python spelling, outside the CLI
    kept = load_checkpoint(tmp_path / CHECKPOINT)
    assert kept["epoch"] == 1 and same(kept["model"], good["model"])
    assert json.loads((tmp_path / "history.json").read_text()) == good["history"]


def test_absurd_learning_rate_stops(tmp_path):
    cfg = replace(TINY, epochs=3, max_steps_per_epoch=3, learning_rate=1e30,
                  learning_rate_min=1e30, out_dir=str(tmp_path))
    with pytest.raises(NonFiniteLossError, match="learning rate"):
        search(cfg)
    if (tmp_path / CHECKPOINT).exists():  # any checkpoint left is a finite one
        state = load_checkpoint(tmp_path / CHECKPOINT)
        assert all(torch.isfinite(t).all() for t in state["model"].values()
                   if t.is_floating_point())


def test_refusals(tmp_path):
    with pytest.raises(ConfigError, match="resume: needs out_dir"):
        search(TINY, resume=True)
    with pytest.raises(RunError, match="holds no checkpoint.pt"):
        search(TINY, out_dir=str(tmp_path / "none"), resume=True)
    search(TINY, epochs=1, out_dir=str(tmp_path / "run"))
    with pytest.raises(RunError, match="already holds a run; continue it with resume"):
        search(TINY, epochs=1, out_dir=str(tmp_path / "run"))
    with pytest.raises(RunError, match="init_channels: checkpoint 2, now 4"):
        search(TINY, epochs=1, init_channels=4, out_dir=str(tmp_path / "run"),
               resume=True)
    with pytest.raises(ConfigError, match="hvp: must be one of"):
        search(TINY, hvp="fd")


def test_exact_hvp_search_runs():
    history = search(TINY, epochs=1, unrolled=True, hvp="exact").history
    assert math.isfinite(history[0]["arch_loss"])


def test_on_epoch_end_adds_to_the_record(tmp_path):
    def add(record, run):
        record["n_alpha"] = sum(a.numel() for a in run.model.arch_parameters())

    history = search(TINY, epochs=1, out_dir=str(tmp_path), on_epoch_end=add).history
    assert history[0]["n_alpha"] == 80
    assert json.loads((tmp_path / "history.json").read_text())[0]["n_alpha"] == 80


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_search_on_cuda(tmp_path):
    history = search(TINY, device="cuda", unrolled=True, out_dir=str(tmp_path),
                     stop_after_epoch=1).history
    assert math.isfinite(history[0]["train_loss"])
    resumed = search(TINY, device="cuda", unrolled=True, out_dir=str(tmp_path),
                     resume=True).history
    assert len(resumed) == 2


def test_checkpoint_from_before_a_new_setting_resumes(tmp_path):
    """A checkpoint without a setting added later resumes if the setting is default."""
    out = tmp_path / "run"
    search(TINY, epochs=2, out_dir=str(out), stop_after_epoch=1)
    state = torch.load(out / CHECKPOINT, weights_only=False)
    del state["config"]["latency_weight"]  # as written before latency_weight existed
    torch.save(state, out / CHECKPOINT)
    history = search(TINY, epochs=2, out_dir=str(out), resume=True).history
    assert [r["epoch"] for r in history] == [1, 2]
    with pytest.raises(ValueError, match="latency_weight: checkpoint 0.0, now 1.0"):
        search(TINY, epochs=2, out_dir=str(out), resume=True, latency_weight=1.0)


def test_single_level_trains_w_and_alpha_on_the_whole_training_set(tmp_path):
    """No split: one loader over every training image, no validation metrics, and α's
    loss is the training loss of the same batches (no latency objective)."""
    cfg = replace(TINY, single_level=True)
    parts = build_search(cfg)
    assert parts.valid_loader is None
    whole = len(get_dataset("digits", train=True, verbose=False)[0])
    assert len(parts.train_loader.sampler) == whole  # every training image
    alpha0 = parts.model.alphas_normal.detach().clone()
    stats = search_epoch(parts, cfg, epoch=0, lr=0.025)
    assert stats["arch_loss"] == stats["train_loss"]
    assert not torch.equal(parts.model.alphas_normal, alpha0)  # α did move
    history = search(cfg, out_dir=str(tmp_path / "run")).history
    assert all(r["valid_loss"] is None and r["valid_acc"] is None for r in history)
    saved = json.loads((tmp_path / "run" / "history.json").read_text())
    assert saved == history
    with pytest.raises(ConfigError, match="single_level: has no virtual step: it "
                       "cannot be combined with unrolled"):
        search(cfg, unrolled=True)



def test_single_level_under_torchrun_is_refused_before_the_data_is_loaded(monkeypatch):
    """Several processes: one message naming single_level, and no data set read."""
    from darts_lit.cnn import search as search_module
    from darts_lit.core import distributed

    def no_data(*args, **kwargs):
        raise AssertionError("the data set was loaded before the refusal")

    monkeypatch.setattr(distributed, "init_from_env", lambda dev: torch.device("cpu"))
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(search_module, "get_dataset", no_data)
    with pytest.raises(ConfigError, match="^single_level: runs on one process; start "
                       "it without torchrun"):
        build_search(replace(TINY, single_level=True))

def test_pc_darts_settings(tmp_path):
    """PC-DARTS builds its network, records β, and refuses settings it cannot honour."""
    parts = build_search(replace(TINY, **PC))
    assert type(parts.model).__name__ == "PCNetwork" and parts.model.k == 2
    assert len(parts.model.arch_parameters()) == 4  # α and β of both cell types
    history = search(replace(TINY, **PC), epochs=1).history
    for part in ("normal", "reduce"):
        ew = torch.tensor(history[-1]["betas"][part])
        assert torch.allclose(ew[:2].sum(), torch.tensor(1.0))  # node 2's two edges
    assert "betas" not in search(TINY, epochs=1).history[-1]
    with pytest.raises(ConfigError, match="partial_channels: must divide the 2 "
                       "initial channels, got 3"):
        search(TINY, partial_channels=3)
    with pytest.raises(ConfigError, match="edge_normalization: cannot be combined with "
                       "latency_weight"):
        search(TINY, edge_normalization=True, latency_weight=1.0)


@pytest.mark.parametrize("unrolled", [False, True])
def test_amp_autocasts_the_weight_step_only(unrolled):
    """--amp: the weight step's forward runs in bfloat16 and the architecture step
    (its finite differences included) in float32, so after one step α is bit-identical
    to a float32 run's and the weights are close to, but not equal to, its weights."""
    import copy

    from darts_lit.core import utils

    cfg = replace(TINY, max_steps_per_epoch=1, unrolled=unrolled)
    torch.manual_seed(0)
    parts = build_search(cfg)
    twin, rng = copy.deepcopy(parts), utils.get_rng_state()
    dtypes = {}
    for amp, p in ((False, parts), (True, twin)):
        seen = dtypes[amp] = []
        p.model.stem[0].register_forward_hook(lambda m, i, o, seen=seen:
                                              seen.append(o.dtype))
        utils.set_rng_state(rng)
        search_epoch(p, replace(cfg, amp=amp), epoch=0, lr=0.025)
    n_arch = len(dtypes[False]) - 1  # forward passes of the architecture step
    assert n_arch == (4 if unrolled else 1)  # unrolled: w', then w⁺ and w⁻
    assert dtypes[False] == [torch.float32] * (n_arch + 1)
    assert dtypes[True] == [torch.float32] * n_arch + [torch.bfloat16]
    for a, b in zip(parts.model.arch_parameters(), twin.model.arch_parameters(),
                    strict=True):
        assert torch.equal(a, b)
    w32 = torch.cat([w.flatten() for w in parts.model.weights()])
    w16 = torch.cat([w.flatten() for w in twin.model.weights()])
    w0 = torch.cat([w.flatten() for w in build_search(cfg).model.weights()])
    assert not torch.equal(w32, w16)
    step32, step16 = w32 - w0, w16 - w0  # the weight step itself, in both precisions
    assert torch.nn.functional.cosine_similarity(step32, step16, dim=0) > 0.95
