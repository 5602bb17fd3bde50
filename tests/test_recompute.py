"""--recompute-cells (chapter 14_recompute): the runs recompute their cells (FBNet's
supernet: its layers), with the results of runs that keep everything; a bad combination
is refused before anything is written."""

from dataclasses import replace

import pytest
import torch
from _helpers import strip_time

from darts_lit.cli import main
from darts_lit.cnn import search as S
from darts_lit.core.config import validate
from darts_lit.core.data import DatasetInfo
from darts_lit.core.utils import load_checkpoint
from darts_lit.evaluation import train as T
from darts_lit.fbnet import space as fbnet
from darts_lit.fbnet.search import FBNetSearchConfig, search_fbnet
from darts_lit.perf import recompute

SEARCH = S.SearchConfig(dataset="digits", epochs=1, batch_size=16, init_channels=2,
                        layers=3, steps=2, multiplier=2, max_steps_per_epoch=2,
                        seed=5, device="cpu", verbose=False)
TRAIN = T.TrainConfig(dataset="digits", epochs=2, init_channels=4, layers=3,
                      batch_size=32, max_steps_per_epoch=2, cutout_length=4,
                      verbose=False)


@pytest.fixture
def recomputed_cells(monkeypatch):
    """The number of cells run through `checkpoint` (the second runs not counted)."""
    calls = []
    real = recompute.checkpoint

    def counting(fn, *args, **kwargs):
        calls.append(fn)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(recompute, "checkpoint", counting)
    return calls


@pytest.mark.parametrize("settings", [dict(), dict(unrolled=True),
                                      dict(unrolled=True, hvp="exact",
                                           hessian_batches=1),
                                      dict(partial_channels=2, edge_normalization=True),
                                      dict(amp=True), dict(sdarts_epsilon=0.3)])
def test_search_with_recomputed_cells_is_bit_exact(tmp_path, recomputed_cells,
                                                   settings):
    """Same history (losses, α, genotype, λ_max) and the same weights and running
    statistics, with every cell of every training pass recomputed."""
    run = replace(SEARCH, **settings)
    keep = S.search(replace(run, out_dir=str(tmp_path / "keep"))).history
    assert recomputed_cells == []
    again = S.search(replace(run, out_dir=str(tmp_path / "again"),
                             recompute_cells=True)).history
    assert len(recomputed_cells) >= 2 * 3  # ≥ one weight and one α pass of 3 cells
    assert strip_time(again) == strip_time(keep)
    a = load_checkpoint(tmp_path / "keep" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "again" / "checkpoint.pt")
    assert b["config"]["recompute_cells"] is True
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_training_with_recomputed_cells(tmp_path, recomputed_cells):
    """The evaluation network with drop path and the auxiliary head: the same
    training to float32 round-off (a recomputing fast cell sums the gradient of a
    cell output in another order), bit-exact on resume."""
    keep = T.train(replace(TRAIN, out_dir=str(tmp_path / "keep"))).history
    run = replace(TRAIN, recompute_cells=True)
    again = T.train(replace(run, out_dir=str(tmp_path / "again"))).history
    assert len(recomputed_cells) >= 2 * 2 * 3  # 2 epochs × 2 steps × 3 cells
    for k, r in zip(keep, again, strict=True):
        for key in ("train_loss", "train_top1", "test_loss", "test_top1"):
            assert r[key] == pytest.approx(k[key], rel=1e-5, abs=1e-6), key
    T.train(replace(run, out_dir=str(tmp_path / "b")), stop_after_epoch=1)
    resumed = T.train(replace(run, out_dir=str(tmp_path / "b"), resume=True)).history
    assert strip_time(resumed) == strip_time(again)


def test_no_recomputation_without_gradients(recomputed_cells):
    """Evaluation (no_grad) has nothing to keep: the cells run once, as usual."""
    from darts_lit.cnn.genotypes import DARTS_V2
    from darts_lit.evaluation.model import NetworkCIFAR

    net = NetworkCIFAR(4, 10, 3, False, DARTS_V2).eval()
    net.recompute_cells = True
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        net(x)
    assert recomputed_cells == []
    net(x).sum().backward()
    assert len(recomputed_cells) == 3


def test_recompute_with_compile_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--dataset", "digits", "--epochs", "1", "--recompute-cells",
                 "--compile", "aot_eager", "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "--recompute-cells: cannot be combined with --compile" in err
    assert "Traceback" not in err
    assert not out.exists()
    with pytest.raises(ValueError, match="recompute_cells: cannot be combined with "
                                         "compile"):
        validate(replace(TRAIN, recompute_cells=True, compile="aot_eager"))


def test_fbnet_search_with_recomputed_layers_is_bit_exact(tmp_path, recomputed_cells):
    """FBNet's supernet recomputes each searchable layer: the same history and the
    same θ, weights and statistics, bit for bit, over a warm-up epoch (weights only)
    and an epoch that also trains θ through the Gumbel samples."""
    space = fbnet.FBNetSpace(1, 10, 8, stages=((8, 1, 1), (16, 1, 2)), head=16)
    table = tmp_path / "fb.json"
    fbnet.fbnet_table(space, 8, path=table, warmup=1, repeats=1)
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 1, 8, 8, generator=g),
                                          torch.randint(0, 10, (32,), generator=g))
    loader = torch.utils.data.DataLoader(data, 8)
    info = DatasetInfo("noise", 10, 1, 8, tuple("0123456789"), (0.0,), (1.0,), "")
    runs = {}
    for recompute_cells in (False, True):
        cfg = FBNetSearchConfig(epochs=2, warmup_epochs=1, latency_table=str(table),
                                latency_batch=8, clock="wall", timing_warmup=0,
                                timing_repeats=1, verbose=False,
                                recompute_cells=recompute_cells)
        result = search_fbnet(cfg, data=(loader, loader, info), space=space)
        runs[recompute_cells] = result.model, result.history
        assert bool(recomputed_cells) == recompute_cells
    (a, ha), (b, hb) = runs[False], runs[True]
    assert strip_time(ha) == strip_time(hb)
    assert len(recomputed_cells) >= 2 * 4 * len(a.layers)  # ≥ 2 epochs × 4 batches
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(),
                              strict=True):
        assert torch.equal(x, y), k
