"""Unit tests of darts_lit.evaluation.train: the loop, checkpoints, bit-exact resume."""

import math
from dataclasses import replace

import pytest
import torch
from _helpers import strip_time

from darts_lit.cnn.genotypes import DARTS_V1, save_genotype
from darts_lit.core.utils import NonFiniteLossError, load_checkpoint
from darts_lit.evaluation import train as T

TINY = T.TrainConfig(dataset="digits", epochs=2, init_channels=4, layers=3,
                     batch_size=32, max_steps_per_epoch=3, cutout_length=4,
                     verbose=False)


def test_resume_is_bit_exact(tmp_path):
    """2 epochs straight == 1 epoch, stop, resume for 1 more: identical weights."""
    straight = T.train(replace(TINY, out_dir=str(tmp_path / "a"))).history
    first = T.train(replace(TINY, out_dir=str(tmp_path / "b")),
                    stop_after_epoch=1).history
    assert len(first) == 1
    resumed = T.train(replace(TINY, out_dir=str(tmp_path / "b"), resume=True)).history
    assert strip_time(resumed) == strip_time(straight)
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    bufs_a = a["optimizers"]["weights"]["state"]
    bufs_b = b["optimizers"]["weights"]["state"]
    for i in bufs_a:
        assert torch.equal(bufs_a[i]["momentum_buffer"], bufs_b[i]["momentum_buffer"])
    # the drop-path ramp was active in the second epoch (random masks were drawn)
    assert straight[1]["drop_path_prob"] == pytest.approx(0.1)


def test_history_rows_and_schedule():
    history = T.train(replace(TINY, epochs=3, max_steps_per_epoch=1)).history
    assert [r["epoch"] for r in history] == [1, 2, 3]
    for row in history:
        assert {"train_loss", "train_top1", "test_loss", "test_top1",
                "test_top5"} <= row.keys()
        assert 0 <= row["test_top1"] <= row["test_top5"] <= 100
    lrs = [r["lr"] for r in history]
    expected = [0.025 * (1 + math.cos(math.pi * t / 3)) / 2 for t in range(3)]
    assert lrs == pytest.approx(expected)
    ramp = [r["drop_path_prob"] for r in history]
    assert ramp == pytest.approx([0, 0.2 / 3, 0.4 / 3])


def test_run_folder_files_and_checkpoint_test(tmp_path):
    out = tmp_path / "run"
    history = T.train(replace(TINY, out_dir=str(out), epochs=1)).history
    assert {p.name for p in out.iterdir()} >= {"checkpoint.pt", "history.json",
                                               "genotype.json"}
    res = T.evaluate_checkpoint(out / "checkpoint.pt", verbose=False)
    assert res["epoch"] == 1
    assert res["test_top1"] == pytest.approx(history[-1]["test_top1"])
    assert res["parameters"] > 0


def test_existing_run_is_not_overwritten_and_settings_must_match(tmp_path):
    cfg = replace(TINY, out_dir=str(tmp_path / "run"), epochs=2)
    T.train(cfg, stop_after_epoch=1)
    with pytest.raises(ValueError, match="already holds a run; continue it with "):
        T.train(cfg)
    with pytest.raises(ValueError, match="layers: checkpoint 3, now 4"):
        T.train(replace(cfg, resume=True, layers=4))
    with pytest.raises(ValueError, match="genotype"):
        T.train(replace(cfg, resume=True, genotype="DARTS_V1"))
    # settings in RESUMABLE may change
    T.train(cfg, resume=True, verbose=False, num_workers=0, deterministic=False)


def test_resume_needs_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="holds no checkpoint"):
        T.train(replace(TINY, out_dir=str(tmp_path / "none"), resume=True))
    with pytest.raises(ValueError, match="out_dir"):
        T.train(replace(TINY, resume=True))


def test_genotype_from_json_file(tmp_path):
    path = save_genotype(DARTS_V1, tmp_path / "searched.json")
    out = tmp_path / "run"
    T.train(TINY, genotype=str(path), epochs=1, max_steps_per_epoch=1,
            out_dir=str(out))
    state = load_checkpoint(out / "checkpoint.pt")
    assert T.genotypes.genotype_from_dict(state["genotype"]) == DARTS_V1
    with pytest.raises(ValueError, match="neither a reference genotype"):
        T.resolve_genotype(str(tmp_path / "missing.json"))


def test_nonfinite_loss_stops_training(monkeypatch):
    real = T.training_loss

    def nan_loss(output, target, criterion, auxiliary_weight=0.4):
        loss, logits = real(output, target, criterion, auxiliary_weight)
        return loss * float("nan"), logits

    monkeypatch.setattr(T, "training_loss", nan_loss)
    with pytest.raises(NonFiniteLossError, match="training loss"):
        T.train(replace(TINY, epochs=1, max_steps_per_epoch=1))


def test_imagenet_settings_on_cifar_subset(shared_data):
    """The ImageNet network, exponential schedule and label smoothing run end to end."""
    cfg = T.TrainConfig.imagenet(dataset="cifar10", data_dir=str(shared_data),
                                 epochs=2, init_channels=8, layers=3, batch_size=16,
                                 max_steps_per_epoch=2, verbose=False)
    history = T.train(cfg).history
    assert [r["lr"] for r in history] == pytest.approx([0.1, 0.097])
    assert all(math.isfinite(r["train_loss"]) for r in history)


def test_imagenet_network_needs_rgb():
    with pytest.raises(ValueError, match="3-channel"):
        T.train(T.TrainConfig.imagenet(dataset="digits", epochs=1, init_channels=4,
                                       layers=3, verbose=False))


# ---- command line ------------------------------------------------------------------
def test_cli_train_resume_and_test(tmp_path, capsys):
    from darts_lit.cli import main

    out = str(tmp_path / "run")
    args = ["train", "--genotype", "DARTS_V1", "--dataset", "digits", "--epochs", "2",
            "--init-channels", "4", "--layers", "3", "--batch-size", "32",
            "--max-steps-per-epoch", "2", "--cutout-length", "4", "--auxiliary",
            "--cutout", "--out", out, "--quiet"]
    assert main(args + ["--stop-after", "1"]) == 0
    assert "epoch 1/2" in capsys.readouterr().out
    assert main(["train", "--out", out, "--resume", "--quiet"]) == 0  # saved settings
    printed = capsys.readouterr().out
    assert "epoch 2/2" in printed and "test top-1" in printed
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["epoch"] == 2 and state["config"]["layers"] == 3
    assert state["config"]["genotype"] == "DARTS_V1"
    assert main(["test", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt")]) == 0
    line = capsys.readouterr().out
    assert "test top-1" in line and "top-5" in line and "parameters" in line


def test_cli_errors_are_one_line(tmp_path, capsys):
    from darts_lit.cli import main

    assert main(["train", "--resume"]) == 1
    assert "--resume: needs --out" in capsys.readouterr().err
    assert main(["train", "--genotype", "NOPE", "--dataset", "digits",
                 "--out", str(tmp_path / "r")]) == 1
    assert "neither a reference genotype" in capsys.readouterr().err
    assert main(["test", "--checkpoint", str(tmp_path / "missing.pt")]) == 1
    assert "no checkpoint" in capsys.readouterr().err


def test_channels_last_trains_the_same_network(tmp_path):
    """NHWC memory (the default) and NCHW train to the same numbers, up to float32
    round-off, and the checkpoint of either loads into the other layout."""
    runs = {}
    for layout in (True, False):
        out = tmp_path / str(layout)
        history = T.train(replace(TINY, epochs=2, max_steps_per_epoch=3,
                                  channels_last=layout, out_dir=str(out))).history
        state = torch.load(out / "checkpoint.pt", weights_only=False)
        runs[layout] = (history, state["model"])
    (h_nhwc, w_nhwc), (h_nchw, w_nchw) = runs[True], runs[False]
    assert w_nhwc["stem.0.weight"].is_contiguous(memory_format=torch.channels_last)
    assert w_nchw["stem.0.weight"].is_contiguous()
    for a, b in zip(h_nhwc, h_nchw, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4
        assert abs(a["test_loss"] - b["test_loss"]) < 1e-4
    for k in w_nchw:
        torch.testing.assert_close(w_nhwc[k], w_nchw[k], rtol=1e-3, atol=1e-4)


NHWC_SCRIPT = """
import torch
from darts_lit.cnn import genotypes
from darts_lit.fbnet.space import make_block
from darts_lit.evaluation.model import NetworkCIFAR, NetworkImageNet
torch.manual_seed(0)
cases = [(NetworkImageNet(4, 10, 5, True, genotypes.DARTS_V2), 224),
         (NetworkCIFAR(2, 10, 5, True, genotypes.DARTS_V1), 64),
         (NetworkCIFAR(4, 10, 5, True, genotypes.AmoebaNet), 64),
         (make_block("skip", 4, 8, 2), 56)]
for net, size in cases:
    net = net.to(memory_format=torch.channels_last).train()
    c = net[0].in_channels if isinstance(net, torch.nn.Sequential) else 3
    x = torch.randn(2, c, size, size).contiguous(memory_format=torch.channels_last)
    for _ in range(2):
        out = net(x)
        sum(o.sum() for o in (out if isinstance(out, tuple) else (out,))).backward()
print("ok")
"""


def test_channels_last_networks_with_few_channels_run():
    """torch 2.14's oneDNN corrupts memory in the backward of strided 1×1 convolutions
    on NHWC tensors with few channels; FactorizedReduce and FBNet's strided skip avoid
    that kernel. These networks crashed the process before (run in a subprocess, so
    that a crash fails this test instead of killing the test run)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", NHWC_SCRIPT], cwd=root,
                          capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(root), "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_strided_pointwise_equals_the_strided_convolution():
    """The subsample-then-1×1 form equals nn.Conv2d's stride-2 1×1 convolution in both
    layouts, odd sizes and non-contiguous views (FactorizedReduce's shifted input)
    included, and keeps nn.Conv2d's state-dict names."""
    from torch.nn import functional as F

    from darts_lit.cnn.ops import StridedPointwise

    torch.manual_seed(0)
    conv = StridedPointwise(6, 4, stride=2).double()
    assert list(conv.state_dict()) == ["weight"] and conv.stride == (2, 2)
    for size in (8, 7):
        x = torch.randn(3, 6, size, size, dtype=torch.float64)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        for inp in (x, shifted, x.contiguous(memory_format=torch.channels_last),
                    F.pad(x.contiguous(memory_format=torch.channels_last),
                          (0, 1, 0, 1))[:, :, 1:, 1:]):
            ref = F.conv2d(inp.contiguous(), conv.weight, stride=2)
            torch.testing.assert_close(conv(inp), ref, rtol=1e-12, atol=1e-12)


def test_amp_step_is_within_bfloat16_tolerance_of_float32():
    """One training step's loss and gradients under --amp (bfloat16 autocast) against
    float32 from the same weights and batch: the loss within 0.5 %, the gradient of all
    parameters at cosine similarity > 0.93 (measured over seeds 0-4: loss within
    6e-4, cosine 0.956-0.960); the convolutions ran in bfloat16, the weights stayed
    float32."""
    from darts_lit.cnn.genotypes import DARTS_V2
    from darts_lit.core import speedups
    from darts_lit.evaluation.model import NetworkCIFAR

    torch.manual_seed(0)
    net = NetworkCIFAR(8, 10, 5, True, DARTS_V2).train()
    net.drop_path_prob = 0.0
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    seen = []
    net.stem[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    results = {}
    for amp in (False, True):
        net.zero_grad()
        with speedups.autocast(amp, "cpu"):
            loss, _ = T.training_loss(net(x), y, torch.nn.CrossEntropyLoss(), 0.4)
        loss.backward()
        results[amp] = loss.item(), torch.cat([p.grad.flatten()
                                                for p in net.parameters()])
    assert seen == [torch.float32, torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in net.parameters())
    (l32, g32), (l16, g16) = results[False], results[True]
    assert l16 != l32 and abs(l16 - l32) / l32 < 0.005
    assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.93


@pytest.mark.parametrize("settings", [dict(amp=True), dict(compile="aot_eager")])
def test_amp_and_compiled_runs_resume_bit_exactly(tmp_path, settings):
    """--amp and --compile are run settings like any other: recorded in the
    checkpoint, bit-exact on resume. A run under --amp differs from the float32 run; a
    traced (aot_eager) run equals the eager one to float32 round-off until drop path
    starts."""
    run = replace(TINY, **settings)
    straight = T.train(replace(run, out_dir=str(tmp_path / "a"))).history
    T.train(replace(run, out_dir=str(tmp_path / "b")), stop_after_epoch=1)
    resumed = T.train(replace(run, out_dir=str(tmp_path / "b"), resume=True)).history
    assert strip_time(resumed) == strip_time(straight)
    plain = T.train(replace(TINY, out_dir=str(tmp_path / "c"))).history
    state = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    eager = load_checkpoint(tmp_path / "c" / "checkpoint.pt")
    for k, v in settings.items():
        assert state["config"][k] == v
    assert list(state["model"]) == list(eager["model"])  # no compile wrapper's prefix
    if "amp" in settings:
        assert plain[-1]["train_loss"] != straight[-1]["train_loss"]
        assert abs(plain[-1]["train_loss"] - straight[-1]["train_loss"]) < 0.1
    else:  # epoch 1 has no drop path: the traced step is the eager one
        for k in ("train_loss", "test_loss"):
            assert plain[0][k] == pytest.approx(straight[0][k], rel=1e-5, abs=1e-6)
        # epoch 2 drops paths, with a tensor probability: other masks, close losses
        assert plain[1]["train_loss"] != straight[1]["train_loss"]
        assert abs(plain[1]["train_loss"] - straight[1]["train_loss"]) < 0.1


def test_compiled_training_is_not_retraced_every_epoch(monkeypatch, tmp_path):
    """The drop-path probability grows every epoch; a compiled run passes it as a
    tensor, so 4 epochs trace no more graphs than 2 (a float would add one per
    epoch)."""
    import torch._dynamo

    from darts_lit.core import speedups

    def counting(traced):
        def backend(gm, inputs):
            traced.append(gm)
            return gm.forward
        return lambda model, mode: torch.compile(model, backend=backend)

    graphs = {}
    for epochs in (2, 4):
        torch._dynamo.reset()
        traced = graphs[epochs] = []
        monkeypatch.setattr(speedups, "compile_model", counting(traced))
        T.train(replace(TINY, epochs=epochs, compile="aot_eager", max_steps_per_epoch=1,
                        out_dir=str(tmp_path / str(epochs))))
    assert len(graphs[2]) > 0 and len(graphs[4]) == len(graphs[2])


def _bench(*args):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, *args], cwd=root, capture_output=True,
                          text=True, timeout=600,
                          env={"PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()


def test_eval_step_benchmark_prints_its_ratios():
    """benchmarks/eval_step.py at a tiny size: each printed ratio is the variant's
    median over the plain one, and the last line holds them, the compiled one too."""
    import re

    lines = _bench("benchmarks/eval_step.py", "--layers", "3", "--init-channels", "4",
                   "--batch-size", "2", "--repeats", "1", "--threads", "1",
                   "--compile", "aot_eager")
    median = {m[1]: float(m[2]) for line in lines
              if (m := re.fullmatch(r"(\w+)\s+([\d.]+) s\s+ratio [\d.]+", line))}
    assert set(median) == {"plain", "channels_last", "fast", "fast_bf16", "compiled"}
    m = re.fullmatch(r"eval_step_ratio=([\d.]+) channels_last_ratio=([\d.]+) "
                     r"bf16_ratio=([\d.]+) "
                     r"compiled_ratio=([\d.]+) compile_seconds=(-?[\d.]+)", lines[-1])
    assert m, lines[-1]
    half = 5e-5  # the medians are printed to 4 decimals
    plain = median["plain"]
    for value, variant in zip(m.groups()[:4], ("fast", "channels_last", "fast_bf16",
                                               "compiled"), strict=True):
        v = median[variant]  # the ratio lies between the extremes the rounding allows
        low, high = (v - half) / (plain + half), (v + half) / (plain - half)
        assert low - 5e-4 <= float(value) <= high + 5e-4, (variant, value, v, plain)


def test_amp_benchmark_summary_matches_its_rows():
    """benchmarks/amp.py on the digits: the summary line is the mean of the rows."""
    import re
    import statistics

    lines = _bench("benchmarks/amp.py", "--dataset", "digits", "--epochs", "1",
                   "--init-channels", "4", "--layers", "3", "--seeds", "1", "2",
                   "--max-steps-per-epoch", "3")
    rows = {"fp32": [], "amp": []}
    for line in lines:
        if m := re.match(r"seed \d+\s+(fp32|amp)\s+test_top1\s+([\d.]+)", line):
            rows[m[1]].append(float(m[2]))
    assert [len(v) for v in rows.values()] == [2, 2]
    m = re.fullmatch(r"fp32_acc=([\d.]+) amp_acc=([\d.]+) acc_difference=(-?[\d.]+) "
                     r"time_ratio=([\d.]+)", lines[-1])
    assert m, lines[-1]
    fp32, amp = statistics.fmean(rows["fp32"]), statistics.fmean(rows["amp"])
    # rows and means are printed to 2 decimals: each rounding moves a value ≤ 0.005
    assert float(m[1]) == pytest.approx(fp32, abs=0.0101)
    assert float(m[2]) == pytest.approx(amp, abs=0.0101)
    assert float(m[3]) == pytest.approx(amp - fp32, abs=0.0201)


def test_recompute_benchmark_prints_its_ratios():
    """benchmarks/recompute.py at a tiny size: the last line holds the quotients of the
    printed rows, and recomputed cells need less memory."""
    import re

    lines = _bench("benchmarks/recompute.py", "--search-size", "4", "5",
                   "--eval-size", "4", "6", "--search-batch", "4", "--eval-batch", "4",
                   "--repeats", "1", "--warmup", "1", "--threads", "1")
    rows = [(float(m[1]), float(m[2])) for line in lines
            if (m := re.fullmatch(r"\s+recompute_cells=\w+\s+([\d.]+) s\s+([\d.]+) MiB "
                                  r"peak", line))]
    assert len(rows) == 4, lines
    m = re.fullmatch(r"search_memory_ratio=([\d.]+) search_time_ratio=([\d.]+) "
                     r"eval_memory_ratio=([\d.]+) eval_time_ratio=([\d.]+)", lines[-1])
    assert m, lines[-1]
    (st0, sm0), (st1, sm1), (et0, em0), (et1, em1) = rows
    for printed, (a, b) in zip(map(float, m.groups()), [(sm1, sm0), (st1, st0),
                                                         (em1, em0), (et1, et0)],
                               strict=True):  # rows rounded to 0.1 MiB and 0.1 ms
        assert printed == pytest.approx(a / b, rel=0.05, abs=0.01)
    assert float(m[1]) < 1.0 and float(m[3]) < 1.0
