"""A user's own data: folder data sets and CIFAR-100, in Python and through the CLI."""

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from darts_lit.cli import main
from darts_lit.core import data, folder_data, imagenet_cifar100
from darts_lit.core.utils import load_checkpoint

CLASSES = ("ant", "bee", "cow")


def write_folder(root, per_class=4, sizes=((20, 24), (36, 30)), splits=("train", "val"),
                 grey=False):
    """`root/<split>/<class>/<i>.png|jpg`: a few random images of two sizes per class.

    The class shifts the brightness, so a tiny network can learn something."""
    rng = np.random.default_rng(0)
    for split in splits:
        for k, cls in enumerate(CLASSES):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                h, w = sizes[i % len(sizes)]
                shape = (h, w) if grey else (h, w, 3)
                px = np.clip(rng.normal(60 + 70 * k, 30, shape), 0, 255)
                px = px.astype(np.uint8)
                ext = "png" if i % 2 == 0 else "jpg"
                Image.fromarray(px).save(root / split / cls / f"{i}.{ext}")
    return root


def test_folder_infers_classes_channels_size_and_statistics(tmp_path):
    write_folder(tmp_path, grey=True)
    ds, info = data.get_dataset("folder", tmp_path, augment=False, verbose=False)
    assert info.classes == CLASSES and info.num_classes == 3
    assert info.in_channels == 1  # every image grey
    assert info.image_size == 25  # median of the shorter sides 20, 30, 20, 30
    assert len(ds) == 12 and ds.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # statistics: of the resized squares, computed independently with PIL
    squares = []
    for cls in CLASSES:
        for path in sorted((tmp_path / "train" / cls).iterdir()):
            im = Image.open(path).convert("L")
            w, h = im.size
            s = 25 / min(w, h)
            im = im.resize((round(w * s), round(h * s)), Image.BILINEAR)
            left, top = (im.size[0] - 25) // 2, (im.size[1] - 25) // 2
            squares.append(np.asarray(im.crop((left, top, left + 25, top + 25))))
    x = np.stack(squares).astype(np.float64) / 255
    assert ds.images.shape == (12, 1, 25, 25)
    assert info.mean[0] == pytest.approx(x.mean(), abs=2e-3)
    assert info.std[0] == pytest.approx(x.std(), abs=2e-3)
    assert np.abs(ds.images[:, 0].numpy() / 255 - x).mean() < 2 / 255
    # normalised with those statistics: mean 0, std 1 over the unaugmented set
    xs = torch.stack([ds[i][0] for i in range(len(ds))]).double()
    assert xs.mean().item() == pytest.approx(0, abs=1e-4)
    assert xs.std(unbiased=False).item() == pytest.approx(1, abs=1e-4)


def test_folder_colour_large_images_and_evaluation_split(tmp_path):
    write_folder(tmp_path, sizes=((90, 120),))
    (tmp_path / "val" / "cow").rename(tmp_path / "cow_elsewhere")  # val lacks a class
    train, info = folder_data.read_folder(tmp_path, train=True, image_size=80)
    test, test_info = folder_data.read_folder(tmp_path, train=False, image_size=80)
    assert isinstance(train, folder_data.ImageFileDataset) and info.in_channels == 3
    x, y = train[5]
    assert x.shape == (3, 80, 80) and y == 1
    assert len(test) == 8 and {label for _, label in test.samples} == {0, 1}
    assert test_info.mean == info.mean  # both splits: train/'s statistics
    given, given_info = folder_data.read_folder(tmp_path, image_size=80, augment=False,
                                         stats=((0.5,) * 3, (0.25,) * 3))
    assert given_info.mean == (0.5,) * 3 and given_info.std == (0.25,) * 3
    plain = given.transform(folder_data.load_image(given.samples[0][0], 3))
    from torchvision.transforms import v2  # evaluation: resize to 256/224, centre crop

    crop = v2.Compose([v2.PILToTensor(), v2.Resize(91, antialias=True),
                       v2.CenterCrop(80)])
    raw = crop(folder_data.load_image(given.samples[0][0], 3))
    torch.testing.assert_close(plain, (raw.float() / 255 - 0.5) / 0.25)
    with pytest.raises(ValueError, match="give 3 means"):
        folder_data.read_folder(tmp_path, stats=((0.5,), (0.25,)))
    (tmp_path / "val" / "yak").mkdir()
    Image.new("RGB", (9, 9)).save(tmp_path / "val" / "yak" / "a.png")
    with pytest.raises(data.DataError, match="yak are not in train/"):
        folder_data.read_folder(tmp_path, train=False)


@pytest.mark.parametrize(("breakage", "words"), [
    ("no_train", "train: no such folder"),
    ("no_classes", "train: no class folders"),
    ("empty_class", "train/cow: no images"),
    ("broken", "train/bee/1.jpg: cannot read this image"),
    ("no_val", "no val/ or test/ folder"),
])
def test_bad_folders_name_the_path(tmp_path, breakage, words):
    write_folder(tmp_path)
    if breakage == "no_train":
        (tmp_path / "train").rename(tmp_path / "training")
    elif breakage == "no_classes":
        for cls in CLASSES:
            for f in (tmp_path / "train" / cls).iterdir():
                f.unlink()
            (tmp_path / "train" / cls).rmdir()
    elif breakage == "empty_class":
        for f in (tmp_path / "train" / "cow").iterdir():
            f.unlink()
    elif breakage == "broken":
        (tmp_path / "train" / "bee" / "1.jpg").write_bytes(b"\xff\xd8 truncated")
    elif breakage == "no_val":
        (tmp_path / "val").rename(tmp_path / "holdout")
    with pytest.raises((data.DataError, data.DataNotFoundError)) as e:
        folder_data.read_folder(tmp_path, train=breakage != "no_val")
    assert words in str(e.value), str(e.value)


def test_broken_image_in_a_large_folder_stops_when_read(tmp_path):
    write_folder(tmp_path, sizes=((90, 120),))
    ds, _ = folder_data.read_folder(tmp_path, image_size=70)
    path, _ = ds.samples[3]
    path.write_bytes(b"GIF89a nonsense")  # after the headers were looked at
    with pytest.raises(data.DataError, match=f"{path.name}: cannot read"):
        ds[3]


def write_cifar100(root, n_train=30, n_test=10):
    folder = root / imagenet_cifar100.CIFAR100_FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    sets = {}
    for name, n in (("train", n_train), ("test", n_test)):
        sets[name] = (rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                      rng.integers(0, 100, n).tolist())
        with open(folder / name, "wb") as f:
            pickle.dump({"data": sets[name][0], "fine_labels": sets[name][1],
                         "coarse_labels": [0] * n}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)
    return sets


def test_cifar100_official_format(tmp_path):
    sets = write_cifar100(tmp_path)
    ds, info = data.get_dataset("cifar100", tmp_path, train=False, augment=False,
                                verbose=False)
    assert info.num_classes == 100 and info.classes[7] == "c7" and len(ds) == 10
    x, y = sets["test"]
    assert torch.equal(ds.images, torch.as_tensor(x.reshape(-1, 3, 32, 32)))
    assert ds.labels.tolist() == y
    # statistics from the training images, red channel = first 1024 bytes of a row
    red = sets["train"][0][:, :1024].astype(np.float64) / 255
    assert info.mean[0] == pytest.approx(red.mean(), rel=1e-12)
    assert info.std[0] == pytest.approx(red.std(), rel=1e-12)
    folder = tmp_path / imagenet_cifar100.CIFAR100_FOLDER
    (folder / "test").write_bytes(b"\x80\x04truncated")
    with pytest.raises(data.DataError, match="test: not a CIFAR-100 file"):
        data.get_dataset("cifar100", tmp_path, train=False, verbose=False)
    with pytest.raises(data.DataNotFoundError, match="CIFAR-100 not found"):
        data.get_dataset("cifar100", tmp_path / "nowhere", verbose=False)


TINY = ["--epochs", "1", "--batch-size", "4", "--init-channels", "4", "--layers", "3",
        "--seed", "1", "--device", "cpu", "--quiet"]


def test_search_train_test_on_a_folder_through_the_cli(tmp_path, capsys):
    root = write_folder(tmp_path / "pets")
    search_out, train_out = tmp_path / "search", tmp_path / "train"
    assert main(["search", "--dataset", "folder", "--data-dir", str(root),
                 "--image-size", "12", "--nodes", "2", *TINY,
                 "--out", str(search_out)]) == 0
    genotype = json.loads((search_out / "genotype.json").read_text())
    assert len(genotype["normal"]) == 4  # 2 nodes x 2 edges
    assert main(["train", "--dataset", "folder", "--data-dir", str(root),
                 "--image-size", "12", "--genotype", str(search_out / "genotype.json"),
                 "--cutout-length", "4", *TINY, "--out", str(train_out)]) == 0
    state = load_checkpoint(train_out / "checkpoint.pt")
    assert state["config"]["dataset"] == "folder"
    assert state["config"]["image_size"] == 12
    assert main(["test", "--checkpoint", str(train_out / "checkpoint.pt")]) == 0
    assert "test top-1" in capsys.readouterr().out
    weights = state["model"]  # 3 classes out, 3 channels in
    assert weights["classifier.weight"].shape[0] == 3
    assert weights["stem.0.weight"].shape[1] == 3
    # export (the input is 3x12x12, read from the checkpoint) and redraw
    prefix = tmp_path / "exported" / "pets"
    assert main(["export", "--checkpoint", str(train_out / "checkpoint.pt"), "--out",
                 str(prefix), "--formats", "export"]) == 0
    net = torch.export.load(f"{prefix}.pt2").module()
    assert net(torch.zeros(2, 3, 12, 12)).shape == (2, 3)
    (train_out / "training.png").unlink()
    assert main(["plot", str(train_out)]) == 0
    assert (train_out / "training.png").stat().st_size > 0


@pytest.mark.parametrize(("argv", "words"), [
    (["search", "--dataset", "folder"], "--dataset: 'folder' reads DIR/train/"),
    (["search", "--dataset", "digits", "--image-size", "16"],
     "--image-size: resizes the images of a folder data set or ImageNet-100 only"),
    (["train", "--dataset", "folder", "--data-dir", "/nonexistent/pets"],
     "--data-dir /nonexistent/pets: no such folder"),
    (["search", "--dataset", "folder", "--image-size", "2", "--data-dir", "x"],
     "--image-size: must be an integer ≥ 4"),
])
def test_folder_option_errors_are_one_line(argv, words, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists()


def test_one_class_is_refused(tmp_path):
    """Every label the same: the loss is 0 and nothing is learned."""
    write_folder(tmp_path)
    for cls in CLASSES[1:]:
        for split in ("train", "val"):
            for f in (tmp_path / split / cls).iterdir():
                f.unlink()
            (tmp_path / split / cls).rmdir()
    with pytest.raises(data.DataError, match="train: one class folder \\(ant\\); a "
                       "classifier needs at least two: add a folder per class"):
        folder_data.read_folder(tmp_path)
    assert "--classes 1: choose 2 to 3" in str(pytest.raises(
        data.DataError, folder_data.select_classes, list(CLASSES), 1).value)


def test_sixteen_bit_grey_images_are_scaled_not_clipped(tmp_path):
    """A 16-bit PNG (0..65535) becomes 0..255 by /257; PIL's convert('L') would clip
    every value above 255 to white."""
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for k, cls in enumerate(CLASSES):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                px = rng.integers(0, 20000 + 20000 * k, (10, 10)).astype(np.uint16)
                Image.fromarray(px).save(tmp_path / split / cls / f"{i}.png")
    with Image.open(tmp_path / "train" / "ant" / "0.png") as im:
        assert im.mode == "I;16"
        raw = np.asarray(im).astype(np.float64)
    loaded = np.asarray(folder_data.load_image(tmp_path / "train" / "ant" / "0.png", 1))
    assert np.array_equal(loaded, np.rint(raw / 257).astype(np.uint8))
    _, info = folder_data.read_folder(tmp_path)
    assert info.in_channels == 1 and 0.05 < info.mean[0] < 0.5  # clipped: about 1.0


def test_resume_after_a_class_folder_was_added_is_refused_by_name(tmp_path, capsys):
    root = write_folder(tmp_path / "pets")
    out = tmp_path / "run"
    argv = ["train", "--dataset", "folder", "--data-dir", str(root), "--image-size",
            "12", "--genotype", "DARTS_V2", "--cutout-length", "4", *TINY,
            "--epochs", "2", "--out", str(out)]
    assert main([*argv, "--stop-after", "1"]) == 0
    write_folder(tmp_path / "more", splits=("train",))
    (tmp_path / "more" / "train" / "ant").rename(root / "train" / "yak")
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "the data's classes changed since the run started (added: yak)" in err, err
    assert err.count("\n") == 1
