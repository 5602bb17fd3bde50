"""FBNet at the paper's scale: its space, FBNet-A/B/C against hand counts and the
paper, blocks against a hand computation, architecture files, sampling from θ,
single-level search, ImageNet-100, and search-fbnet → train-fbnet → test from the
command line (digits and a fake ImageNet-100)."""

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from darts_lit.cli import main as cli_main
from darts_lit.cnn.ops import count_parameters
from darts_lit.evaluation.model import count_macs
from darts_lit.fbnet import space as fbnet
from darts_lit.fbnet.models import (
    FBNET_ARCHS,
    PAPER_COUNTS,
    fbnet_reference,
    fbnet_space,
    load_architecture,
    paper_space,
    sample_architectures,
    save_architecture,
    space_from_dict,
)
from darts_lit.fbnet.search import FBNetSearchConfig, search_fbnet_epoch
from darts_lit.latency.objective import arch_weights

QUICK = ["--timing-warmup", "0", "--timing-repeats", "1", "--quiet"]


# ---- blocks against a hand computation ----------------------------------------------
def _bn(x, bn):
    """Eval-mode BatchNorm by its formula."""
    shape = (1, -1, 1, 1)
    return ((x - bn.running_mean.view(shape)) / (bn.running_var.view(shape)
            + bn.eps).sqrt() * bn.weight.view(shape) + bn.bias.view(shape))


def _randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    for name, t in module.state_dict().items():
        if t.is_floating_point():
            t.copy_(torch.rand(t.shape, generator=g) + 0.5 if "var" in name
                    else torch.randn(t.shape, generator=g) * 0.3)


@pytest.mark.parametrize("name", [b for b in fbnet.FBNET_BLOCKS if b != "skip"])
@pytest.mark.parametrize("c_in,c_out,stride", [(8, 8, 1), (8, 12, 2), (6, 10, 1)])
def test_block_matches_hand_computation(name, c_in, c_out, stride):
    k, e, g = fbnet.parse_block(name)
    block = fbnet.make_block(name, c_in, c_out, stride).double().eval()
    _randomise(block)
    x = torch.randn(2, c_in, 7, 7, dtype=torch.float64)
    convs = [m for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    mid = e * c_in
    h = F.relu(_bn(F.conv2d(x, convs[0].weight, groups=g), bns[0]))  # 1×1 expand
    if g > 1:  # channel c of group j moves to position c·g + j
        order = [j * (mid // g) + c for c in range(mid // g) for j in range(g)]
        h = h[:, order]
    h = F.relu(_bn(F.conv2d(h, convs[1].weight, stride=stride, padding=k // 2,
                            groups=mid), bns[1]))  # k×k depthwise
    y = _bn(F.conv2d(h, convs[2].weight, groups=g), bns[2])  # 1×1 project
    residual = stride == 1 and c_in == c_out
    if residual:
        y = y + x
    assert block.residual == residual
    assert y.shape == (2, c_out, (7 - 1) // stride + 1, (7 - 1) // stride + 1)
    torch.testing.assert_close(block(x), y, rtol=1e-12, atol=1e-12)


def test_skip_is_identity_only_where_shapes_allow():
    assert isinstance(fbnet.make_block("skip", 16, 16, 1), torch.nn.Identity)
    for c_in, c_out, stride in ((16, 24, 1), (16, 16, 2)):
        block = fbnet.make_block("skip", c_in, c_out, stride)
        conv = block[0]
        assert (conv.in_channels, conv.out_channels, conv.stride) == (
            c_in, c_out, (stride, stride))


# ---- the paper's space and FBNet-A/B/C ---------------------------------------------
def _hand_counts(space, choices) -> tuple[int, int]:
    """Parameters and multiply-adds of an FBNet network from the block formulas."""
    s = space.image_size // 2  # the stride-2 stem
    params = 3 * 16 * 9 + 2 * 16
    macs = s * s * 3 * 16 * 9
    for k_idx, (c_in, c_out, h, stride) in zip(choices, space.layer_shapes(),
                                                strict=True):
        name, out = space.blocks[k_idx], (h - 1) // stride + 1
        if name == "skip":
            if stride != 1 or c_in != c_out:
                params += c_in * c_out + 2 * c_out
                macs += out * out * c_in * c_out
            continue
        k, e, g = fbnet.parse_block(name)
        mid = e * c_in
        params += (c_in * mid // g + mid * k * k + mid * c_out // g
                   + 2 * (2 * mid + c_out))  # three convolutions, three BatchNorms
        macs += h * h * c_in * mid // g + out * out * mid * (k * k + c_out // g)
    c, size = space.out_shape()
    params += c * space.head + 2 * space.head + space.head * 1000 + 1000
    macs += size * size * c * space.head + space.head * 1000
    return params, macs


@pytest.mark.parametrize("name", list(FBNET_ARCHS))
def test_fbnet_counts_match_hand_formula_and_paper(name):
    space, choices = fbnet_reference(name)
    net = fbnet.fbnet_network(space, choices)
    params, macs = count_parameters(net), count_macs(net, (3, 224, 224))
    assert (params, macs) == _hand_counts(space, choices)
    assert (params, macs) == {"fbnet_a": (4321464, 249921848),
                              "fbnet_b": (4863288, 306210888),
                              "fbnet_c": (5572200, 384960160)}[name]
    paper_params, paper_macs = PAPER_COUNTS[name]
    if name != "fbnet_b":  # B: the book explains why no head matches its parameters
        assert abs(params / paper_params - 1) < 0.03
        assert abs(macs / paper_macs - 1) < 0.03
    narrow = fbnet.fbnet_network(paper_space(), choices)  # Table 1's 1504 head
    assert abs(count_macs(narrow, (3, 224, 224)) / paper_macs - 1) < 0.01


def test_paper_space_shapes_and_supernet_forward():
    space = paper_space()
    assert [s[:2] for s in space.layer_shapes()][:6] == [
        (16, 16), (16, 24), (24, 24), (24, 24), (24, 24), (24, 32)]
    assert sum(n for _, n, _ in space.stages) == 22 and space.out_shape() == (352, 7)
    torch.manual_seed(0)
    supernet = fbnet.FBNetSupernet(space).eval()
    assert supernet.theta.shape == (22, 9)
    _, choices = fbnet_reference("fbnet_a")  # the 1504 head: the paper space itself
    one_hot = F.one_hot(torch.tensor(choices), 9).float()
    derived = fbnet.fbnet_network(space, choices).eval()
    derived[0].load_state_dict(supernet.stem.state_dict())
    for layer, k in enumerate(choices):
        derived[1 + layer].load_state_dict(supernet.layers[layer].candidates[k]
                                           .state_dict())
    derived[-1].load_state_dict(supernet.head.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        mixed = supernet(x)  # all nine blocks of all 22 layers
        torch.testing.assert_close(supernet(x, one_hot), derived(x))
    assert mixed.shape == (1, 1000) and torch.isfinite(mixed).all()


def test_space_presets_and_files(tmp_path):
    assert fbnet_space("paper", 1, 10, 32) == paper_space(1, 10, 32)
    assert fbnet_space("cpu", 3, 10, 32) == fbnet.FBNetSpace.for_images(3, 10, 32)
    with pytest.raises(ValueError, match="neither a preset"):
        fbnet_space(str(tmp_path / "missing.json"), 3, 10, 32)
    with pytest.raises(ValueError, match="unknown field"):
        space_from_dict({"stages": [[8, 1, 1]], "depth": 3})
    with pytest.raises(ValueError, match="unknown block"):
        space_from_dict({"blocks": ["k7_e6"]})
    with pytest.raises(ValueError, match="triples"):
        space_from_dict({"stages": [[8, 0, 1]]})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not readable as JSON"):
        fbnet_space(str(bad), 3, 10, 32)


def test_architecture_files_round_trip_and_refuse(tmp_path):
    space, choices = fbnet_reference("fbnet_c")
    path = save_architecture(tmp_path / "c.json", space, choices, note="x")
    assert load_architecture(path) == (space, choices)
    record = json.loads(path.read_text())
    assert record["blocks"] == list(FBNET_ARCHS["fbnet_c"][1]) and record["note"] == "x"
    record["blocks"] = record["blocks"][:-1]
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="one block per layer"):
        load_architecture(path)
    path.write_text(json.dumps({"blocks": []}))
    with pytest.raises(ValueError, match="not an FBNet architecture file"):
        load_architecture(path)


def test_sampling_from_theta_is_seeded_and_follows_softmax():
    g = torch.Generator().manual_seed(5)
    theta = torch.randn(4, 9, generator=g) * 2
    a = sample_architectures(theta, 50, seed=7)
    assert a == sample_architectures(theta, 50, seed=7)
    assert a != sample_architectures(theta, 50, seed=8)
    draws = torch.tensor(sample_architectures(theta, 40_000, seed=1))
    freq = F.one_hot(draws, 9).double().mean(0)
    p = theta.double().softmax(-1)
    assert ((freq - p).abs() <= 4 * (p * (1 - p) / 40_000).sqrt() + 1e-12).all()


# ---- single-level search: one batch steps w and θ on θ's loss ----------------------
def test_single_level_step_moves_w_and_theta_on_the_same_loss():
    space = fbnet.FBNetSpace.for_images(1, 10, 8)
    torch.manual_seed(0)
    model = fbnet.FBNetSupernet(space)
    twin = fbnet.FBNetSupernet(space)
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        model.theta.normal_(generator=torch.Generator().manual_seed(1))
        twin.theta.copy_(model.theta)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    lat = torch.rand(len(space.layer_shapes()), 9, dtype=torch.float64)
    objective = lambda ce, e_lat: ce + 0.1 * e_lat  # noqa: E731

    def optimizers(m):
        return (torch.optim.Adam([m.theta], lr=0.01),
                torch.optim.SGD(m.weights(), lr=0.1))

    theta_opt, w_opt = optimizers(model)
    stem_before, theta_before = model.stem[0].weight.clone(), model.theta.clone()
    torch.manual_seed(3)
    search_fbnet_epoch(model, [(x, y)], theta_opt, w_optimizer=w_opt, tau=5.0,
                       train_theta=True, objective=objective, lat=lat)
    # by hand: the same Gumbel sample, one loss, both optimizers stepped
    theta_opt, w_opt = optimizers(twin)
    torch.manual_seed(3)
    m = arch_weights(twin.theta, "gumbel", 5.0, False)
    e_lat = (m.double() * lat).sum()
    objective(F.cross_entropy(twin(x, m), y), e_lat).backward()
    theta_opt.step()
    w_opt.step()
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)
    assert not torch.equal(model.stem[0].weight, stem_before)  # w moved
    assert not torch.equal(model.theta, theta_before)  # and θ


def test_amp_theta_step_autocasts_the_supernet_only():
    """--amp in FBNet's search: the supernet's convolutions run in bfloat16, θ and its
    gradient stay float32, close to a float32 step's gradient from the same Gumbel
    sample (cosine > 0.9) but not equal to it."""
    space = fbnet.FBNetSpace.for_images(1, 10, 8)
    torch.manual_seed(0)
    model = fbnet.FBNetSupernet(space)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    lat = torch.rand(len(space.layer_shapes()), 9, dtype=torch.float64)
    seen = []
    model.stem[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    grads = {}

    class Keep(torch.optim.SGD):  # records θ's gradient and sample, changes nothing
        def step(self, closure=None):
            grads[amp] = model.theta.grad.clone()

    for amp in (False, True):
        torch.manual_seed(3)  # the same Gumbel sample
        search_fbnet_epoch(model, [(x, y)], Keep([model.theta], lr=0.0), tau=5.0,
                           train_theta=True, objective=lambda ce, e: ce * e ** 0.1,
                           lat=lat, amp=amp)
    assert seen == [torch.float32, torch.bfloat16]
    assert grads[True].dtype == torch.float32
    assert not torch.equal(grads[True], grads[False])
    assert F.cosine_similarity(grads[True].flatten(), grads[False].flatten(), 0) > 0.9


# ---- the command line ----------------------------------------------------------------
def test_search_train_test_on_digits(tmp_path, capsys, one_thread):
    s, t = tmp_path / "s", tmp_path / "t"
    assert cli_main(["search-fbnet", "--dataset", "digits", "--epochs", "2",
                     "--batch-size", "32", "--max-steps-per-epoch", "2", "--samples",
                     "3", "--single-level", "--latency-device", "cpu", "--out", str(s),
                     *QUICK]) == 0
    assert json.loads((s / "latency_table.json").read_text())["device"].startswith(
        "cpu")
    arch = json.loads((s / "architecture.json").read_text())
    history = json.loads((s / "history.json").read_text())
    assert "valid_loss" not in history[1] and "expected_lat" in history[1]
    assert len(arch["samples"]) == 3 and (s / "sample_3.json").is_file()
    assert not (s / "sample_4.json").exists()
    assert json.loads((s / "sample_2.json").read_text())["blocks"] == \
        arch["samples"][1]["blocks"]
    capsys.readouterr()
    args = ["train-fbnet", "--architecture", str(s / "sample_2.json"), "--dataset",
            "digits", "--epochs", "2", "--max-steps-per-epoch", "3", "--batch-size",
            "32", "--out", str(t), "--quiet"]
    assert cli_main(args) == 0
    trained = capsys.readouterr().out
    assert cli_main(["test", "--checkpoint", str(t / "checkpoint.pt")]) == 0
    tested = capsys.readouterr().out.strip()
    assert tested in trained and "epoch 2" in tested
    top1 = json.loads((t / "history.json").read_text())[-1]["test_top1"]
    assert f"test top-1 {top1:.2f}%" in tested
    record = json.loads((t / "architecture.json").read_text())
    assert record["blocks"] == arch["samples"][1]["blocks"]
    assert (t / "training.png").stat().st_size > 0
    assert cli_main(["plot", str(t), "--format", "svg"]) == 0
    assert "<svg" in (t / "training.svg").read_text()


def test_train_fbnet_resume_is_bit_exact(tmp_path, one_thread):
    from darts_lit.core.runs import read_checkpoint

    args = ["train-fbnet", "--architecture", "fbnet_a", "--dataset", "digits",
            "--epochs", "2", "--max-steps-per-epoch", "2", "--batch-size", "16",
            "--quiet"]
    assert cli_main([*args, "--out", str(tmp_path / "a")]) == 0
    assert cli_main([*args, "--out", str(tmp_path / "b"), "--stop-after", "1"]) == 0
    assert cli_main(["train-fbnet", "--out", str(tmp_path / "b"), "--resume",
                     "--quiet"]) == 0
    a, b = (read_checkpoint(tmp_path / r / "checkpoint.pt", "train-fbnet")
            for r in "ab")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]
    assert a["architecture"]["blocks"] == list(FBNET_ARCHS["fbnet_a"][1])
    assert cli_main([*args[:2], "fbnet_b", *args[3:], "--out", str(tmp_path / "b"),
                     "--resume"]) == 1  # another architecture


def _fake_imagenet(root, classes=("n01", "n02", "n03", "n04"), per_class=4):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / "imagenet" / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / "imagenet" / split / c / f"{i}.jpg")
    return root


def test_search_train_test_on_fake_imagenet100(tmp_path, capsys, one_thread):
    data = _fake_imagenet(tmp_path / "data")
    listed = tmp_path / "classes.txt"
    listed.write_text("n04\nn02\nn01\n")
    common = ["--dataset", "imagenet100", "--data-dir", str(data), "--classes",
              str(listed), "--image-size", "32", "--batch-size", "4"]
    s, t = tmp_path / "s", tmp_path / "t"
    assert cli_main(["search-fbnet", *common, "--epochs", "2", "--space", "paper",
                     "--max-steps-per-epoch", "2", "--out", str(s), *QUICK]) == 0
    space, choices = load_architecture(s / "architecture.json")
    assert space.num_classes == 3 and len(choices) == 22 and space.image_size == 32
    assert cli_main(["train-fbnet", *common, "--architecture",
                     str(s / "architecture.json"), "--epochs", "1",
                     "--max-steps-per-epoch", "2", "--out", str(t), "--quiet"]) == 0
    capsys.readouterr()
    assert cli_main(["test", "--checkpoint", str(t / "checkpoint.pt")]) == 0
    out = capsys.readouterr().out
    assert "test top-1" in out and "top-5" not in out  # 3 classes: no top-5
    state = torch.load(t / "checkpoint.pt", weights_only=False)
    assert state["config"]["classes"] == str(listed)
    assert state["model"]["23.5.weight"].shape == (3, 1504)  # the classifier
    assert state["architecture"]["space"]["num_classes"] == 3


def test_imagenet100_and_option_errors_leave_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli_main(["search-fbnet", "--dataset", "imagenet100", "--data-dir",
                     str(tmp_path / "none"), "--out", str(run), *QUICK]) == 1
    err = capsys.readouterr().err
    assert "ImageNet-100" in err and "--data-dir" in err and not run.exists()
    data = _fake_imagenet(tmp_path / "data", per_class=1)
    assert cli_main(["train-fbnet", "--dataset", "imagenet100", "--data-dir",
                     str(data), "--classes", "9", "--out", str(run), "--quiet"]) == 1
    assert "--classes 9: choose 2 to 4" in capsys.readouterr().err
    assert cli_main(["search-fbnet", "--dataset", "digits", "--samples", "0",
                     "--out", str(run), *QUICK]) == 1
    assert "--samples: must be an integer ≥ 1, got 0" in capsys.readouterr().err
    assert cli_main(["search-fbnet", "--dataset", "imagenet100", "--classes",
                     "missing.txt", "--out", str(run), *QUICK]) == 1
    assert "--classes: 'missing.txt' is neither a number of classes nor a file" in (
        capsys.readouterr().err)
    assert cli_main(["search-fbnet", "--dataset", "digits", "--classes", "3",
                     "--out", str(run), *QUICK]) == 1
    assert "--classes: picks the classes of --dataset imagenet100 only" in (
        capsys.readouterr().err)
    assert cli_main(["search-fbnet", "--latency-device", "gpu", "--out", str(run),
                     *QUICK]) == 1
    assert "--latency-device: " in capsys.readouterr().err
    assert cli_main(["search-fbnet", "--space", "huge", "--out", str(run),
                     *QUICK]) == 1
    assert "--space: 'huge' is neither a preset (cpu, paper)" in capsys.readouterr().err
    assert not run.exists()
    cfg = FBNetSearchConfig()
    assert (cfg.space, cfg.samples, cfg.single_level) == ("cpu", 6, False)
