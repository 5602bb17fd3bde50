"""Tests of the `darts-lit` command line, run in-process with tiny sizes."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from darts_lit.cli import build_parser, main
from darts_lit.cnn.genotypes import load_genotype
from darts_lit.cnn.model_search import Network

TINY = ["--dataset", "digits", "--epochs", "2", "--batch-size", "16",
        "--init-channels", "2", "--layers", "3", "--nodes", "2",
        "--max-steps-per-epoch", "2", "--seed", "3", "--device", "cpu"]


def test_search_writes_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "genotype: Genotype(normal=[" in printed and "epoch 2/2" in printed
    names = {p.name for p in out.iterdir()}
    assert {"checkpoint.pt", "history.json", "genotype.json", "accuracy.png",
            "alphas_normal.png", "alphas_reduce.png", "cell_normal.png",
            "cell_reduce.png"} <= names
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 2
    assert str(load_genotype(out / "genotype.json")) in printed



def test_ctrl_c_says_what_was_saved_and_how_to_continue(tmp_path, capsys,
                                                         monkeypatch):
    """An interruption (KeyboardInterrupt) in epoch 1 or epoch 2: one line on stderr,
    exit status 130, no traceback; the epoch-1 checkpoint resumes to the end."""
    from darts_lit.cnn import search as search_module

    epoch_of = search_module.search_epoch
    out = str(tmp_path / "run")
    prog = "darts-lit search"
    for stop_in in (0, 1):  # 0-based epoch in which Ctrl-C is pressed

        def interrupted(parts, config, epoch, lr, _stop=stop_in):
            if epoch == _stop:
                raise KeyboardInterrupt
            return epoch_of(parts, config, epoch, lr)

        monkeypatch.setattr(search_module, "search_epoch", interrupted)
        assert main(["search", *TINY, "--out", out]) == 130
        err = capsys.readouterr().err
        saved = (f"{prog}: interrupted; {out} holds the run up to its last finished "
                 f"epoch: continue it with `{prog} --out {out} --resume`\n")
        nothing = (f"{prog}: interrupted before the first epoch ended; there is no "
                   "checkpoint to continue from: start the run again\n")
        assert err == (nothing if stop_in == 0 else saved), err
    monkeypatch.setattr(search_module, "search_epoch", epoch_of)
    assert main(["search", "--out", out, "--resume"]) == 0
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 2

def test_an_internal_error_is_reported_as_a_bug_and_the_run_resumes(
        tmp_path, capsys, monkeypatch):
    """An exception that is no user's mistake (here a ValueError from inside the
    epoch): one line that says it is a bug, the traceback in a file, exit status 70,
    and the checkpoint of the last finished epoch continues to the end."""
    import re
    import tempfile

    from darts_lit.cli.base import BUG_STATUS
    from darts_lit.cnn import search as search_module

    epoch_of = search_module.search_epoch

    def broken(parts, config, epoch, lr):
        if epoch == 1:
            raise ValueError("an internal mistake")
        return epoch_of(parts, config, epoch, lr)

    monkeypatch.setattr(search_module, "search_epoch", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the traceback's file
    out = str(tmp_path / "run")
    assert main(["search", *TINY, "--out", out]) == BUG_STATUS == 70
    first, second = capsys.readouterr().err.splitlines()
    assert first.startswith("darts-lit search: this is a bug in darts_lit, not a "
                            "mistake in your input (ValueError: an internal "
                            "mistake). The traceback is in "), first
    report = Path(re.search(r"The traceback is in (\S+): please", first).group(1))
    text = report.read_text()
    assert text.startswith("darts-lit search --dataset digits --epochs 2")
    assert "darts_lit 0." in text
    assert "Traceback (most recent call last)" in text and "in broken" in text
    assert second == (f"darts-lit search: {out} holds the run up to its last finished "
                      f"epoch: once fixed, continue it with `darts-lit search --out "
                      f"{out} --resume`")
    monkeypatch.setattr(search_module, "search_epoch", epoch_of)
    assert main(["search", "--out", out, "--resume"]) == 0
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 2


def test_stop_and_resume(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["search", *TINY, "--out", out, "--stop-after", "1"]) == 0
    assert "epoch 1/2" in capsys.readouterr().out
    assert main(["search", *TINY, "--out", out, "--resume"]) == 0
    assert "epoch 2/2" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 2


def test_second_order_exact(tmp_path):
    out = tmp_path / "run"
    args = ["search", *TINY, "--epochs", "1", "--unrolled", "--hvp", "exact", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    ckpt = __import__("torch").load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["config"]["unrolled"] and ckpt["config"]["hvp"] == "exact"


def test_single_level_search(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", *TINY, "--single-level", "--out", str(out)]) == 0
    assert "valid_acc None" in capsys.readouterr().out
    ckpt = __import__("torch").load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["config"]["single_level"] is True
    assert (out / "accuracy.png").stat().st_size > 0  # drawn without validation
    assert main(["search", *TINY, "--single-level", "--unrolled", "--out",
                 str(tmp_path / "bad")]) == 1
    assert "--single-level: has no virtual step" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def _search_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["search"]


def test_help_documents_every_option_with_the_papers_default(capsys):
    with pytest.raises(SystemExit) as e:
        main(["search", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    helps = {a.option_strings[-1]: " ".join(a.help.split())
             for a in _search_parser()._actions if a.option_strings}
    assert all(h for h in helps.values())  # every option is documented
    assert all(h in text for h in helps.values())  # ... in --help
    paper = {"--epochs": "paper: 50", "--batch-size": "paper: 64",
             "--init-channels": "paper: 16", "--layers": "paper: 8",
             "--nodes": "paper: 4", "--learning-rate": "paper: 0.025",
             "--learning-rate-min": "paper: 0.001", "--momentum": "paper: 0.9",
             "--weight-decay": "paper: 0.0003", "--grad-clip": "paper: 5.0",
             "--train-portion": "paper: 0.5", "--arch-learning-rate": "paper: 0.0003",
             "--arch-weight-decay": "paper: 0.001", "--seed": "default: 2",
             "--dataset": "paper: cifar10", "--unrolled": "first order"}
    for option, words in paper.items():
        assert words in helps[option], (option, helps[option])
    for option in ("--data-dir", "--hvp", "--out", "--resume", "--device",
                   "--max-steps-per-epoch", "--stop-after", "--quiet"):
        assert option in helps


def test_errors_are_reported_not_raised(tmp_path, capsys, monkeypatch):
    assert main(["search", *TINY, "--hvp", "exact", "--out", str(tmp_path / "x")]) == 1
    assert ("--hvp: 'exact' needs the second-order search (--unrolled)"
            in capsys.readouterr().err)
    assert main(["search", *TINY, "--resume"]) == 1
    assert "--resume: needs --out" in capsys.readouterr().err
    out = str(tmp_path / "run")
    assert main(["search", *TINY, "--out", out, "--stop-after", "1", "--quiet"]) == 0
    assert main(["search", *TINY, "--out", out, "--quiet"]) == 1
    assert "already holds a run; continue it with --resume" in capsys.readouterr().err
    forward = Network.forward
    monkeypatch.setattr(Network, "forward", lambda self, x: forward(self, x) * math.nan)
    assert main(["search", *TINY, "--out", out, "--resume", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "is nan at epoch 2, step 1" in err and "checkpoint.pt" in err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "search" in capsys.readouterr().out


def test_python_dash_m():
    r = subprocess.run([sys.executable, "-m", "darts_lit", "--version"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "darts_lit" in r.stdout


def test_collapse_options_in_help_and_in_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "collapse: diagnostics and remedies:" in text
    for flag in ("--space {darts,s2,s3,s4}", "--hessian-batches N",
                 "--early-stop RULE", "--max-skips M", "--sdarts-epsilon EPS"):
        assert flag in text, flag
    out = tmp_path / "run"
    assert main(["search", *TINY, "--space", "s3", "--hessian-batches", "1",
                 "--max-skips", "0", "--sdarts-epsilon", "0.3", "--out",
                 str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    assert all(isinstance(r["lambda_max"], float) for r in history)
    g = load_genotype(out / "genotype.json")
    assert {op for op, _ in g.normal} <= {"sep_conv_3x3"}  # S3, no skips: conv only
    assert (out / "collapse.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["search", *TINY, "--early-stop", "darts_es", "--out",
                 str(tmp_path / "bad")]) == 1
    assert ("--early-stop: 'darts_es' watches λ_max: give --hessian-batches ≥ 1"
            in capsys.readouterr().err)
    assert not (tmp_path / "bad").exists()
