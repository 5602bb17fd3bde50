"""The one run loop (darts_lit.core.loop): every kind of run writes the same checkpoint
layout and numbers its epochs the same way, an older checkpoint is refused in one line,
and a kind without a data-parallel form is refused under torchrun with its reason."""

import json
import os
from pathlib import Path

import pytest
import torch

import darts_lit  # noqa: F401  (registers the kinds)
from darts_lit.core import distributed, runs
from darts_lit.core.loop import KINDS, RunResult, fit, kind_named
from darts_lit.core.utils import load_checkpoint

DIGITS = dict(dataset="digits", epochs=2, batch_size=16, max_steps_per_epoch=1,
              device="cpu", verbose=False, seed=3)
TEXT = dict(dataset="pydoc", max_vocab=100, emsize=6, batch_size=8, bptt=6,
            eval_batch_size=16, max_steps_per_epoch=1, device="cpu", verbose=False,
            epochs=2, seed=3)
SETTINGS = {
    "search": dict(DIGITS, init_channels=2, layers=3, steps=2),
    "train": dict(DIGITS, init_channels=4, layers=3, cutout_length=4,
                  genotype="DARTS_V2"),
    "search-rnn": dict(TEXT, steps=3),  # 2 nodes: the validation loss overflows
    "train-rnn": dict(TEXT, test_batch_size=16, genotype="DARTS_V1"),
    "search-fbnet": dict(DIGITS, timing_warmup=0, timing_repeats=1, clock="wall",
                         latency_batch=2),
    "train-fbnet": dict(DIGITS, architecture="fbnet_a"),
}
ROLES = {"search": {"weights", "arch"}, "train": {"weights"},
         "search-rnn": {"weights", "arch"}, "train-rnn": {"weights"},
         "search-fbnet": {"weights", "arch"}, "train-fbnet": {"weights"}}
EXTRA = {"search": {"classes"}, "train": {"genotype", "classes"},
         "train-rnn": {"optimizer_kind", "best"}, "search-fbnet": {"classes"},
         "train-fbnet": {"architecture", "classes"}}
COMMON = {"version", "kind", "config", "world_size", "epoch", "history", "model",
          "optimizers", "schedulers", "rng"}


def test_every_kind_is_covered():
    assert set(SETTINGS) == set(KINDS)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_one_checkpoint_layout_and_epoch_numbering(name, tmp_path, one_thread):
    kind = kind_named(name)
    config = kind.config_class(**SETTINGS[name], out_dir=str(tmp_path / "run"))
    result = fit(kind, config, stop_after_epoch=1)
    assert isinstance(result, RunResult) and result.kind == name
    assert result.summary == {}  # stopped before its last epoch: nothing found yet
    state = load_checkpoint(tmp_path / "run" / runs.CHECKPOINT)
    assert set(state) == COMMON | EXTRA.get(name, set()), name
    assert state["kind"] == name and state["epoch"] == 1
    assert set(state["optimizers"]) == ROLES[name]
    assert set(state["schedulers"]) <= {"weights"}
    assert [r["epoch"] for r in state["history"]] == [1]
    resumed = fit(kind, config.__class__(**{**SETTINGS[name], "resume": True,
                                             "out_dir": str(tmp_path / "run")}))
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.history[0] == state["history"][0]  # kept as it was saved
    assert resumed.done == 2


def test_a_checkpoint_of_the_earlier_format_is_refused_in_one_line(tmp_path):
    config = kind_named("search").config_class(**SETTINGS["search"],
                                               out_dir=str(tmp_path))
    old = {"version": 2, "kind": "search", "config": {}, "epoch": 1, "history": [],
           "optimizers": {"weights": {}, "arch": {}}, "scheduler": None}
    torch.save(old, tmp_path / runs.CHECKPOINT)
    with pytest.raises(runs.RunError, match=r"format version 2; this darts_lit reads "
                       r"version 3\. Start the run again"):
        fit("search", config.__class__(**{**SETTINGS["search"], "resume": True,
                                           "out_dir": str(tmp_path)}))


@pytest.mark.parametrize("name", ["search-rnn", "train-rnn", "search-fbnet",
                                  "train-fbnet"])
def test_a_kind_without_a_data_parallel_form_is_refused_with_its_reason(
        name, monkeypatch, tmp_path):
    kind = kind_named(name)
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    with pytest.raises(runs.RunError, match=f"^{name} runs as one process: "
                       f"{kind.data_parallel}; start it without torchrun$"):
        fit(kind, kind.config_class(**SETTINGS[name], out_dir=str(tmp_path / "r")))
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_only_search_and_train_have_a_data_parallel_form():
    assert [n for n, k in KINDS.items() if k.data_parallel is None] == ["search",
                                                                         "train"]


def test_the_command_line_names_the_reason_under_torchrun(monkeypatch, capsys):
    from darts_lit.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["search-rnn", "--dataset", "pydoc"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("darts-lit search-rnn: error: this command runs as one "
                          f"process: {KINDS['search-rnn'].data_parallel}; start it")
    assert "(only search and train run data-parallel)" in err


# --- a run killed between two writes -------------------------------------------------
class Killed(BaseException):
    """Stands for kill -9: raised right after a file was written, caught by no one."""


def _folder(path: Path) -> dict:
    """What a run folder says: its JSON files (times left out) and its checkpoint."""
    def timeless(obj):
        if isinstance(obj, list):
            return [timeless(v) for v in obj]
        return {k: v for k, v in obj.items() if k != "seconds"} if isinstance(
            obj, dict) else obj

    files = {p.name: timeless(json.loads(p.read_text())) for p in sorted(
        path.glob("*.json")) if p.name != "latency_table.json"}
    state = load_checkpoint(path / runs.CHECKPOINT)
    return {"files": files, "history": timeless(state["history"]),
            "model": {k: v.clone() for k, v in state["model"].items()}}


def _same_folder(a: dict, b: dict) -> bool:
    return (a["files"] == b["files"] and a["history"] == b["history"]
            and a["model"].keys() == b["model"].keys()
            and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]))


@pytest.mark.parametrize("name", list(SETTINGS))
def test_a_run_killed_between_two_writes_resumes_to_the_same_folder(
        name, tmp_path, monkeypatch, one_thread):
    """Killed after each file it writes (every point between two writes, both epochs
    and the end): the folder is never behind its checkpoint, and the resumed run
    leaves every file as the run that was never killed."""
    kind, settings = kind_named(name), dict(SETTINGS[name])
    if name == "search-fbnet":  # one measured table for every run, so they agree
        settings["latency_table"] = str(tmp_path / "table.json")
    make = lambda folder, **kw: kind.config_class(  # noqa: E731
        **settings, out_dir=str(tmp_path / folder), **kw)
    writes, real_replace = [], os.replace

    def counting(src, dst):
        real_replace(src, dst)
        writes.append(Path(dst).name)

    monkeypatch.setattr(os, "replace", counting)
    fit(kind, make("whole"))
    whole = _folder(tmp_path / "whole")
    points = [w for w in writes if w != "table.json"]
    assert points.count(runs.CHECKPOINT) == 2 and points[-1] != "history.json"
    for k in range(1, len(points) + 1):
        seen = []

        def dying(src, dst, k=k, seen=seen):
            real_replace(src, dst)
            if Path(dst).name != "table.json":
                seen.append(Path(dst).name)
                if len(seen) == k:
                    raise Killed(Path(dst).name)

        monkeypatch.setattr(os, "replace", dying)
        with pytest.raises(Killed):
            fit(kind, make(f"k{k}"))
        folder = tmp_path / f"k{k}"
        held = (folder / runs.CHECKPOINT).exists()
        if held:  # never behind the checkpoint: its rows are the history's first ones
            saved = load_checkpoint(folder / runs.CHECKPOINT)["history"]
            shown = json.loads((folder / "history.json").read_text())
            assert shown[:len(saved)] == saved, (name, points[k - 1])
        monkeypatch.setattr(os, "replace", real_replace)
        fit(kind, make(f"k{k}", resume=held))
        assert _same_folder(_folder(folder), whole), (name, k, points[k - 1])
