"""After the run: redrawn figures, drawn genotypes, exported networks, TensorBoard."""

import json
from pathlib import Path

import pytest
import torch

from darts_lit.cli import main, outputs
from darts_lit.core import runs

SEARCH = ["--dataset", "digits", "--epochs", "2", "--batch-size", "16",
          "--init-channels", "4", "--layers", "3", "--nodes", "2",
          "--max-steps-per-epoch", "2", "--seed", "3", "--device", "cpu", "--quiet"]
TRAIN = ["--dataset", "digits", "--epochs", "1", "--batch-size", "32",
         "--init-channels", "4", "--layers", "3", "--max-steps-per-epoch", "2",
         "--cutout-length", "4", "--device", "cpu", "--quiet"]
RNN = ["--dataset", "pydoc", "--max-vocab", "100", "--emsize", "6", "--batch-size", "8",
       "--bptt", "6", "--max-steps-per-epoch", "2", "--device", "cpu", "--quiet",
       "--nodes", "3", "--epochs", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny search and the training of its cell, through the CLI."""
    root = tmp_path_factory.mktemp("outputs")
    assert main(["search", *SEARCH, "--out", str(root / "search")]) == 0
    assert main(["train", *TRAIN, "--genotype", str(root / "search" / "genotype.json"),
                 "--out", str(root / "train")]) == 0
    return root


def test_train_writes_its_figures_and_plot_redraws_every_kind(trained, tmp_path,
                                                                capsys):
    assert (trained / "train" / "training.png").stat().st_size > 0
    assert (trained / "train" / "cell.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["plot", str(trained / "search"), "--format", "pdf"]) == 0
    printed = capsys.readouterr().out.split()
    names = sorted(p.split("/")[-1] for p in printed)
    assert names == sorted(["accuracy.pdf", "alpha_history_normal.pdf",
                            "alpha_history_reduce.pdf", "alphas_normal.pdf",
                            "alphas_reduce.pdf", "cell_normal.pdf", "cell_reduce.pdf",
                            "collapse.pdf"])
    assert (trained / "search" / "accuracy.pdf").read_bytes()[:5] == b"%PDF-"
    assert main(["plot", str(trained / "train"), "--format", "svg"]) == 0
    assert "<svg" in (trained / "train" / "training.svg").read_text()
    rnn = tmp_path / "rnn"
    assert main(["search-rnn", *RNN, "--out", str(rnn)]) == 0
    (rnn / "perplexity.png").unlink()
    capsys.readouterr()
    assert main(["plot", str(rnn)]) == 0
    assert (rnn / "perplexity.png").stat().st_size > 0 and (rnn / "cell.png").is_file()


def test_plot_a_genotype_in_each_format(tmp_path, capsys):
    magics = (("a.png", b"\x89PNG"), ("b.pdf", b"%PDF-"), ("c.svg", b"<?xml"))
    for name, magic in magics:
        out = str(tmp_path / name)
        assert main(["plot", "--genotype", "DARTS_V2", "--out", out]) == 0
        assert (tmp_path / name).read_bytes().lstrip()[:len(magic)] == magic
    rnn = str(tmp_path / "rnn.png")
    assert main(["plot", "--genotype", "DARTS", "--recurrent", "--out", rnn]) == 0
    assert (tmp_path / "rnn.png").stat().st_size > 0
    # names shared by both kinds are convolutional unless --recurrent; ENAS is recurrent
    from darts_lit.cli.tools import _any_genotype
    from darts_lit.cnn.genotypes import Genotype
    from darts_lit.rnn.model import RNNGenotype

    assert isinstance(_any_genotype("DARTS"), Genotype)
    assert isinstance(_any_genotype("DARTS", recurrent=True), RNNGenotype)
    assert isinstance(_any_genotype("ENAS"), RNNGenotype)
    capsys.readouterr()


@pytest.mark.parametrize(("argv", "words"), [
    (["plot"], "give a RUN_DIR to redraw, or --genotype"),
    (["plot", "nowhere"], "nowhere: no checkpoint.pt"),
    (["plot", "--genotype", "DARTS_V2"], "--genotype draws one genotype into --out"),
    (["plot", "--genotype", "DARTS_V2", "--out", "x.gif"], "must end in .png, .svg"),
    (["plot", "--genotype", "NOT_A_CELL", "--out", "x.png"], "NOT_A_CELL"),
    (["export", "--checkpoint", "missing.pt", "--out", "x"], "--checkpoint: no "
     "checkpoint at missing.pt; give the checkpoint.pt of a `darts-lit train` or "
     "`train-fbnet` run folder"),
    (["test", "--checkpoint", "missing.pt"], "--checkpoint: no checkpoint at "
     "missing.pt; give the checkpoint.pt of a `darts-lit train` or `darts-lit "
     "train-fbnet` run folder"),
    (["plot", "--genotype", "DARTS_V2", "--out", "a_file/cell.png"], "--out: a_file is "
     "a file, not a folder; give the folder to write into"),
])
def test_plot_export_and_test_errors_are_one_line(argv, words, tmp_path, monkeypatch,
                                             capsys):
    monkeypatch.chdir(tmp_path)
    Path("a_file").write_text("")  # an --out below a file cannot be written
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_export_of_a_search_checkpoint_is_refused(trained, capsys):
    assert main(["export", "--checkpoint", str(trained / "search" / "checkpoint.pt"),
                 "--out", str(trained / "x")]) == 1
    assert "expected a 'train' or 'train-fbnet' checkpoint" in capsys.readouterr().err


def test_export_below_a_file_is_refused_before_anything_is_written(trained, tmp_path,
                                                                   capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["export", "--checkpoint", str(trained / "train" / "checkpoint.pt"),
                 "--out", str(blocker / "net")]) == 1
    out, err = capsys.readouterr()
    assert err == (f"darts-lit export: error: --out: {blocker} is a file, not a "
                   "folder; give the folder to write into\n") and out == ""


def test_exported_networks_compute_what_the_eager_network_computes(trained, capsys):
    formats = ["torchscript", "export"] + (["onnx"] if outputs.onnx_available() else [])
    prefix = trained / "exported" / "net"
    assert main(["export", "--checkpoint", str(trained / "train" / "checkpoint.pt"),
                 "--out", str(prefix), "--batch-size", "3", "--formats", *formats]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == ["eager", *formats]
    # independently: load each file and compare with the network rebuilt by hand
    from darts_lit.cnn.genotypes import load_genotype
    from darts_lit.evaluation.model import NetworkCIFAR

    state = torch.load(trained / "train" / "checkpoint.pt", weights_only=False)
    cell = load_genotype(trained / "search" / "genotype.json")
    net = NetworkCIFAR(4, 10, 3, True, cell, in_channels=1)
    net.load_state_dict(state["model"])
    net.eval()
    x = torch.randn(5, 1, 8, 8)  # another batch size than the export's example
    with torch.no_grad():
        want = net(x)
        got = {"export": torch.export.load(f"{prefix}.pt2").module()(x)}
        with pytest.warns(FutureWarning):
            got["torchscript"] = torch.jit.load(f"{prefix}.torchscript.pt")(x)
    for fmt in ("export", "torchscript"):
        torch.testing.assert_close(got[fmt], want, rtol=1e-5, atol=1e-5)
    if "onnx" in formats:
        import onnxruntime

        session = onnxruntime.InferenceSession(f"{prefix}.onnx",
                                               providers=["CPUExecutionProvider"])
        x3 = x[:3]
        (out,) = session.run(None, {session.get_inputs()[0].name: x3.numpy()})
        torch.testing.assert_close(torch.from_numpy(out), want[:3], rtol=1e-5,
                                   atol=1e-5)


def test_export_without_onnx_says_how_to_install(trained, monkeypatch, capsys):
    monkeypatch.setattr(outputs, "onnx_available", lambda: False)
    assert main(["export", "--checkpoint", str(trained / "train" / "checkpoint.pt"),
                 "--out", str(trained / "n"), "--formats", "onnx"]) == 1
    assert "pip install 'darts_lit[export]'" in capsys.readouterr().err
    assert not (trained / "n.onnx").exists()


def test_tensorboard_logs_the_history(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    assert main(["search", *SEARCH, "--out", str(out), "--tensorboard",
                 "--stop-after", "1"]) == 0
    assert main(["search", *SEARCH, "--out", str(out), "--resume",
                 "--tensorboard"]) == 0
    runs._WRITERS.clear()  # close nothing; the events are flushed per epoch
    history = json.loads((out / "history.json").read_text())
    events = EventAccumulator(str(out / runs.TENSORBOARD_DIR))
    events.Reload()
    tags = events.Tags()["scalars"]
    for key in ("train_loss", "valid_acc", "lr"):
        assert key in tags, tags
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert logged == [(h["epoch"], pytest.approx(h[key], rel=1e-6))
                          for h in history]
    edge = "alphas/normal/0→2/sep_conv_3x3"
    col = history[-1]["primitives"].index("sep_conv_3x3")
    assert events.Scalars(edge)[-1].value == pytest.approx(
        history[-1]["alphas"]["normal"][0][col], rel=1e-6)
    assert "genotype/text_summary" in events.Tags()["tensors"]


def test_tensorboard_without_the_package_is_a_config_error(tmp_path, monkeypatch,
                                                           capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a:
                        None if name == "tensorboard" else real(name, *a))
    assert main(["train", *TRAIN, "--tensorboard", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "--tensorboard: needs the tensorboard package" in err, err
    assert not (tmp_path / "r").exists()
    from darts_lit.cnn.search import SearchConfig
    from darts_lit.core.config import ConfigError, validate

    with pytest.raises(ConfigError, match="tensorboard: writes into the run folder: "
                       "give out_dir"):
        validate(SearchConfig(tensorboard=True))


@pytest.mark.parametrize("command", ["export", "test"])
def test_a_truncated_checkpoint_gets_advice_for_the_command(command, trained, tmp_path,
                                                             capsys):
    """Not the advice of a run ('delete it to start afresh'): the checkpoint of a
    trained network is what the user wants to keep."""
    torn = tmp_path / "checkpoint.pt"
    torn.write_bytes((trained / "train" / "checkpoint.pt").read_bytes()[:100])
    extra = ["--out", str(tmp_path / "net")] if command == "export" else []
    assert main([command, "--checkpoint", str(torn), *extra]) == 1
    err = capsys.readouterr().err
    assert "it is corrupt or not a darts_lit checkpoint" in err and err.count("\n") == 1
    assert "start afresh" not in err
    advice = f"{command.capitalize()} the checkpoint.pt of a run that wrote it whole"
    assert advice in err
    assert not (tmp_path / "net.torchscript.pt").exists()


def test_a_genotype_with_noise_is_refused_by_train(tmp_path, capsys):
    from darts_lit.cnn.genotypes import Genotype, save_genotype

    cell = [("noise", 0), ("sep_conv_3x3", 1), ("noise", 0), ("skip_connect", 1)]
    path = save_genotype(Genotype(cell, [2, 3], cell, [2, 3]), tmp_path / "s4.json")
    assert main(["train", *TRAIN, "--genotype", str(path), "--out",
                 str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("darts-lit train: error: --genotype: its cells hold 'noise': "
                          "it replaces its input with random numbers"), err
    assert not (tmp_path / "run").exists()
