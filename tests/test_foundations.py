"""Unit tests of darts_lit.core.data, darts_lit.cnn.ops and darts_lit.cnn.mixed_op."""

import numpy as np
import pytest
import torch

from darts_lit.cnn.mixed_op import MixedOp
from darts_lit.cnn.ops import OPS, PRIMITIVES, count_parameters, make_op
from darts_lit.core import data

# ---- data -------------------------------------------------------------------------
def test_cifar10_reader_on_real_subset(shared_data):
    folder = data.find_cifar10(shared_data)
    x, y = data.read_cifar10(folder, train=True)
    assert x.shape == (5 * 932, 3, 32, 32) and x.dtype.name == "uint8"
    assert sorted(set(y.tolist())) == list(range(10))
    xt, yt = data.read_cifar10(folder, train=False)
    assert xt.shape == (932, 3, 32, 32) and len(yt) == 932


def test_get_dataset_resolution_order(shared_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DARTS_DATA", str(shared_data))
    ds, info = data.get_dataset("auto")
    assert info.name == "cifar10" and len(ds) == 4660
    assert "cifar10" in capsys.readouterr().out  # says which data set it used
    # an explicit directory wins over DARTS_DATA, and is not silently replaced
    with pytest.raises(data.DataNotFoundError, match="data_dir argument"):
        data.get_dataset("cifar10", data_dir=tmp_path)
    _, info = data.get_dataset("auto", data_dir=tmp_path, verbose=False)
    assert info.name == "digits"


def test_missing_cifar_error_names_places_and_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("DARTS_DATA", str(tmp_path))
    with pytest.raises(data.DataNotFoundError) as e:
        data.get_dataset("cifar10")
    msg = str(e.value)
    assert str(tmp_path) in msg and "download=True" in msg and "digits" in msg


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        data.get_dataset("mnist")


def test_cifar_transforms_normalise_with_paper_stats(shared_data):
    ds, info = data.get_dataset("cifar10", shared_data, augment=False, verbose=False)
    img = ds.images[0].float() / 255
    mean = torch.tensor(info.mean)[:, None, None]
    std = torch.tensor(info.std)[:, None, None]
    torch.testing.assert_close(ds[0][0], (img - mean) / std)


def test_augmentation_crops_with_padding_4_and_flips():
    torch.manual_seed(0)
    tf = data.image_transforms(True, (0.0,), (1.0,), 8, padding=4)
    img = torch.full((1, 8, 8), 255, dtype=torch.uint8)
    zero_rows = [int((tf(img)[0] == 0).all(1).sum()) for _ in range(100)]
    assert max(zero_rows) > 0 and max(zero_rows) <= 4  # padding shows, at most 4 rows


def test_search_split_is_disjoint_and_complete():
    tr, va = data.search_split(101, 0.5, seed=3)
    assert len(tr) == 50 and len(va) == 51 and not set(tr) & set(va)
    assert data.search_split(101, 0.5, seed=3) == (tr, va)  # seeded
    with pytest.raises(ValueError):
        data.search_split(10, 1.5)


def test_search_loaders_draw_from_their_own_part():
    ds, _ = data.get_dataset("digits", verbose=False)
    tq, vq = data.search_loaders(ds, batch_size=50, train_portion=0.5, seed=0)
    tr, va = data.search_split(len(ds), 0.5, 0)
    assert sorted(tq.sampler.indices) == sorted(tr)
    assert sorted(vq.sampler.indices) == sorted(va)


# ---- ops --------------------------------------------------------------------------
def test_primitives_in_reference_order():
    assert PRIMITIVES == ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                          "sep_conv_3x3", "sep_conv_5x5",
                          "dil_conv_3x3", "dil_conv_5x5"]
    assert set(PRIMITIVES) | {"sep_conv_7x7", "conv_7x1_1x7", "noise"} == set(OPS)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", sorted(OPS))
def test_op_shapes(name, stride):
    x = torch.randn(2, 6, 10, 10)
    assert make_op(name, 6, stride)(x).shape == (2, 6, 10 // stride, 10 // stride)


def test_param_counts_closed_form_c16():
    C = 16
    expect = {"sep_conv_3x3": 2 * (9 * C + C * C + 2 * C),
              "sep_conv_5x5": 2 * (25 * C + C * C + 2 * C),
              "dil_conv_3x3": 9 * C + C * C + 2 * C,
              "dil_conv_5x5": 25 * C + C * C + 2 * C,
              "conv_7x1_1x7": 14 * C * C + 2 * C,
              "max_pool_3x3": 0, "avg_pool_3x3": 0, "none": 0, "skip_connect": 0}
    for name, n in expect.items():
        assert count_parameters(make_op(name, C, 1)) == n, name
    assert count_parameters(make_op("skip_connect", C, 2)) == C * C + 2 * C


def test_avg_pool_excludes_padding():
    x = torch.ones(1, 1, 4, 4)
    assert torch.equal(make_op("avg_pool_3x3", 1, 1)(x), x)  # corners average 4 ones


def test_dil_conv_dilation_and_none_stride():
    op = make_op("dil_conv_5x5", 4, 1)
    assert op.op[1].dilation == (2, 2) and op.op[1].groups == 4
    z = make_op("none", 4, 2)(torch.randn(1, 4, 6, 6))
    assert z.shape == (1, 4, 3, 3) and not z.any()


def test_sepconv_is_applied_twice_with_stride_on_first():
    op = make_op("sep_conv_3x3", 4, 2)
    convs = [m for m in op.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2), (1, 1), (1, 1), (1, 1)]
    assert [c.groups for c in convs] == [4, 1, 4, 1]


def test_unknown_op_lists_valid_names():
    with pytest.raises(KeyError, match="valid op names: none, avg_pool_3x3"):
        make_op("conv_3x3", 4, 1)


# ---- MixedOp ----------------------------------------------------------------------
def test_mixed_op_matches_manual_sum_float64():
    torch.manual_seed(0)
    m = MixedOp(3, 1).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    alpha = torch.randn(len(PRIMITIVES), dtype=torch.float64, requires_grad=True)
    w = alpha.softmax(-1)
    out = m(x, w)
    manual = sum(w[k] * op(x) for k, op in enumerate(m._ops))
    torch.testing.assert_close(out, manual)
    # d out / d alpha by finite differences on a linear loss
    G = torch.randn_like(out)
    (out * G).sum().backward()
    eps, fd = 1e-6, torch.zeros_like(alpha)
    with torch.no_grad():
        for k in range(len(alpha)):
            d = torch.zeros_like(alpha)
            d[k] = eps
            lp = (m(x, (alpha + d).softmax(-1)) * G).sum()
            lm = (m(x, (alpha - d).softmax(-1)) * G).sum()
            fd[k] = (lp - lm) / (2 * eps)
    torch.testing.assert_close(alpha.grad, fd, rtol=1e-5, atol=1e-7)


def test_mixed_op_pooling_followed_by_non_affine_bn():
    m = MixedOp(4, 1)
    pool = m._ops[PRIMITIVES.index("max_pool_3x3")]
    assert isinstance(pool[1], torch.nn.BatchNorm2d) and not pool[1].affine
    expected = sum(count_parameters(make_op(p, 4, 1, False)) for p in PRIMITIVES)
    assert count_parameters(m) == expected


def test_mixed_op_rejects_wrong_weight_shape():
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        MixedOp(2, 1)(torch.randn(1, 2, 4, 4), torch.ones(2, 8))


def _fake_imagenet(root, classes=("n01440764", "n01443537", "n01484850"), per_class=2):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in classes:
            folder = root / "imagenet" / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (120 + 10 * i, 90, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.JPEG")


def test_imagenet_folder_layout_shapes_and_labels(tmp_path):
    _fake_imagenet(tmp_path)
    train_set, info = data.get_dataset("imagenet", tmp_path, train=True, verbose=False)
    val_set, _ = data.get_dataset("imagenet", tmp_path, train=False, verbose=False)
    assert (info.name, info.num_classes, info.in_channels, info.image_size) == (
        "imagenet", 3, 3, 224)
    assert info.classes == ("n01440764", "n01443537", "n01484850")
    assert len(train_set) == len(val_set) == 6
    x, y = val_set[5]
    assert x.shape == (3, 224, 224) and y == 2  # sorted class folders → labels
    # eval transform is deterministic: the same image twice gives the same tensor
    torch.testing.assert_close(val_set[0][0], val_set[0][0])
    # normalised with ImageNet statistics: undoing them lands back in [0, 1]
    mean = torch.tensor(info.mean).view(3, 1, 1)
    std = torch.tensor(info.std).view(3, 1, 1)
    raw = x * std + mean
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_imagenet_missing_names_layout_and_fix(tmp_path):
    from darts_lit.core.data import DataNotFoundError

    with pytest.raises(DataNotFoundError, match=r"imagenet/train/.*DARTS_DATA"):
        data.get_dataset("imagenet", tmp_path, verbose=False)


def test_imagenet_training_end_to_end(tmp_path):
    from darts_lit.evaluation.recipe import TrainConfig
    from darts_lit.evaluation.train import train

    _fake_imagenet(tmp_path)
    history = train(TrainConfig.imagenet(
        dataset="imagenet", data_dir=str(tmp_path), epochs=1, batch_size=3,
        init_channels=4, layers=3, auxiliary=False, device="cpu",
        verbose=False)).history
    (row,) = history
    # 3 classes, 6 validation images: the accuracy is a multiple of 1/6
    assert round(row["test_top1"] * 6 / 100, 6) == round(row["test_top1"] * 6 / 100)
    assert np.isfinite(row["train_loss"])
