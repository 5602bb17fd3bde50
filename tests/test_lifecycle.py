"""The run lifecycle from the command line: every bad option and input gives one line
naming it, a non-zero exit and nothing written; checkpoints know their kind; run folders
survive a killed writer; files are shared-readable; history is strict JSON."""

import json
import os
import pickle
import stat
from dataclasses import fields
from pathlib import Path

import pytest

from darts_lit.cli import main
from darts_lit.cnn.search import SearchConfig
from darts_lit.core.config import flag_of, option_meta
from darts_lit.evaluation.recipe import TrainConfig
from darts_lit.fbnet.search import FBNetSearchConfig
from darts_lit.fbnet.train import FBNetTrainConfig
from darts_lit.rnn.search import RNNSearchConfig
from darts_lit.rnn.train import RNNTrainConfig

COMMANDS = {"search": SearchConfig, "train": TrainConfig,
            "search-rnn": RNNSearchConfig, "train-rnn": RNNTrainConfig,
            "search-fbnet": FBNetSearchConfig, "train-fbnet": FBNetTrainConfig}
TINY = ["--dataset", "digits", "--epochs", "2", "--batch-size", "16",
        "--init-channels", "2", "--layers", "3", "--nodes", "2",
        "--max-steps-per-epoch", "2", "--seed", "3", "--device", "cpu", "--quiet"]


def bad_values(meta: dict, tp) -> list[str]:
    """Values just outside a field's range (and a NaN for a float)."""
    out = []
    if meta.get("ge") is not None:
        out.append(meta["ge"] - 1)
    if meta.get("gt") is not None:
        out.append(meta["gt"])
    if meta.get("le") is not None:
        out.append(meta["le"] + 1)
    if meta.get("lt") is not None:
        out.append(meta["lt"])
    values = [str(int(v)) if tp is int else str(v) for v in out]
    return values + (["nan"] if tp is float else [])


def cases():
    for command, cls in COMMANDS.items():
        for f in fields(cls):
            meta = option_meta(f)
            tp = {"int": int, "float": float}.get(getattr(f.type, "__name__", ""))
            if tp is None and "int" in str(f.type):
                tp = int
            if not meta.get("cli") or tp is None:
                continue
            for value in bad_values(meta, tp):
                yield pytest.param(command, flag_of(cls, f.name), value,
                                   id=f"{command}{flag_of(cls, f.name)}={value}")


CASES = list(cases())


def test_every_numeric_option_has_cases():
    """The table covers every numeric option of every run command (≥ 60 cases)."""
    flags = {(c.values[0], c.values[1]) for c in CASES}
    assert ("search", "--epochs") in flags and ("train-rnn", "--nonmono") in flags
    assert ("search-rnn", "--bptt") in flags and ("train", "--drop-path-prob") in flags
    assert len(CASES) >= 60, len(CASES)


@pytest.mark.parametrize(("command", "flag", "value"), CASES)
def test_out_of_range_option_is_one_line(command, flag, value, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([command, flag, value, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"darts-lit {command}: error: {flag}: must be "), err
    assert "got" in err and "Traceback" not in err and err.count("\n") == 1
    assert not out.exists()  # nothing written


@pytest.mark.parametrize(("argv", "words"), [
    (["latency", "--batch-size", "0"], "--batch-size: must be an integer ≥ 1"),
    (["latency", "--repeats", "-3"], "--repeats: must be an integer ≥ 1"),
    (["latency", "--warmup", "-1"], "--warmup: must be an integer ≥ 0"),
    (["search", "--stop-after", "0"], "--stop-after: must be an integer ≥ 1"),
    (["search", "--epochs", "two"], "--epochs: invalid int value"),
])
def test_argparse_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_device_and_choices(tmp_path, capsys):
    assert main(["search", "--device", "gpu", "--out", str(tmp_path / "r")]) == 1
    assert capsys.readouterr().err.startswith("darts-lit search: error: --device: ")
    with pytest.raises(SystemExit):
        main(["train", "--schedule", "linear"])
    assert "--schedule: invalid choice" in capsys.readouterr().err




@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("under", [False, True], ids=["file", "under-a-file"])
def test_an_out_that_is_a_file_is_refused_before_any_work(command, under, tmp_path,
                                                          capsys):
    """--out naming a file (or a path below one): one line naming --out, before the
    data is read or an epoch is run, and the file is left as it was."""
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    out = blocker / "run" if under else blocker
    assert main([command, "--out", str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err == (f"darts-lit {command}: error: --out: {blocker} is a file, not a "
                   "folder; give the folder to write into\n")
    assert blocker.read_text() == "keep me"


def test_an_out_that_cannot_be_written_is_refused(tmp_path, capsys, monkeypatch):
    from darts_lit.core import runs

    monkeypatch.setattr(runs.os, "access", lambda path, mode: False)
    assert main(["search", "--out", str(tmp_path / "run"), "--device", "cpu"]) == 1
    assert capsys.readouterr().err == (f"darts-lit search: error: --out: cannot write "
                                       f"into {tmp_path}; give a folder this user may "
                                       "write into\n")

def test_corrupt_text_and_latency_table_name_the_file(tmp_path, capsys):
    ptb = tmp_path / "ptb"
    ptb.mkdir()
    for name in ("ptb.valid.txt", "ptb.test.txt"):
        (ptb / name).write_text("the cat sat <unk>\n")
    train = ptb / "ptb.train.txt"
    argv = ["search-rnn", "--dataset", "ptb", "--data-dir", str(tmp_path), "--out",
            str(tmp_path / "r")]
    for content, words in ((b"the cat \xff\xfe sat\n", "not UTF-8 text (byte 8)"),
                           (b"\n \n", "holds no words")):
        train.write_bytes(content)
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"{train}: {words}" in err and err.count("\n") == 1, err
        assert not (tmp_path / "r" / "checkpoint.pt").exists()
    train.write_text("the cat sat\n")  # no <unk>, and valid has a word train lacks
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{ptb}: '<unk>' is not in the vocabulary" in err, err
    table = tmp_path / "table.json"
    head = '{"format": "darts_lit latency table v1", '
    for content, words in ((head + '"entr', "not JSON"),
                           ("[1, 2]", "not a 'darts_lit latency table v1' file"),
                           (head + '"entries": {"k3_e1": "fast"}}',
                            "k3_e1 must be a finite number")):
        table.write_text(content)
        assert main(["latency", "--dataset", "digits", "--table", str(table)]) == 1
        err = capsys.readouterr().err
        assert f"latency table {table}: {words}" in err and err.count("\n") == 1, err
    for where, words in ((tmp_path, f"{tmp_path} is a folder; give the JSON file"),
                         (table / "t.json", f"{table} is a file, not a folder")):
        assert main(["latency", "--dataset", "digits", "--table", str(where)]) == 1
        out, err = capsys.readouterr()
        assert err.startswith(f"darts-lit latency: error: --table: {words}") and (
            err.count("\n") == 1 and out == ""), err  # refused before any timing


def test_auto_data_with_an_empty_data_dir_warns_even_when_quiet(tmp_path, capsys):
    auto = [("auto" if a == "digits" else a) for a in TINY]
    assert main(["search", *auto, "--data-dir", str(tmp_path), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"warning: no CIFAR-10 under --data-dir {tmp_path}" in err, err
    assert main(["search-rnn", "--dataset", "auto", "--data-dir", str(tmp_path),
                 "--max-vocab", "50", "--emsize", "4", "--batch-size", "4", "--bptt",
                 "4", "--epochs", "1", "--max-steps-per-epoch", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"warning: no Penn Treebank under --data-dir {tmp_path}" in err, err


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lifecycle") / "search"
    old = os.umask(0o022)
    try:
        assert main(["search", *TINY, "--out", str(out), "--stop-after", "1"]) == 0
    finally:
        os.umask(old)
    return out


def test_wrong_kind_of_checkpoint(search_run, tmp_path, capsys):
    assert main(["test", "--checkpoint", str(search_run / "checkpoint.pt")]) == 1
    err = capsys.readouterr().err
    assert "is a checkpoint of a 'search' run, read by darts-lit search --resume" in err
    assert "expected a 'train' or 'train-fbnet' checkpoint" in err
    assert "Traceback" not in err
    assert main(["search-rnn", "--out", str(search_run), "--resume"]) == 1
    assert "expected a 'search-rnn' checkpoint" in capsys.readouterr().err


def test_files_are_shared_readable_and_history_is_strict_json(search_run):
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in search_run.iterdir()}
    assert {"checkpoint.pt", "history.json", "accuracy.png"} <= set(modes)
    assert set(modes.values()) == {0o644}, modes

    def no_constants(word):
        raise ValueError(f"not strict JSON: {word}")

    history = json.loads((search_run / "history.json").read_text(),
                         parse_constant=no_constants)
    assert [r["epoch"] for r in history] == [1]


def test_killed_run_leaves_no_temporaries_after_resume(search_run, capsys):
    # what kill -9 during atomic_save leaves: a partial hidden temporary
    partial = search_run / ".checkpoint.pt.k1ll3d.tmp"
    partial.write_bytes((search_run / "checkpoint.pt").read_bytes()[:1000])
    (search_run / ".history.json.x.tmp").write_text("[{")
    assert main(["search", *TINY, "--out", str(search_run), "--resume"]) == 0
    assert "epoch 2/2" in capsys.readouterr().out
    assert not list(search_run.glob(".*.tmp"))
    assert len(json.loads((search_run / "history.json").read_text())) == 2


def test_resume_without_options_keeps_the_runs_settings(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["search", *TINY, "--out", str(out), "--stop-after", "1"]) == 0
    assert main(["search", "--out", str(out), "--resume", "--quiet"]) == 0
    assert "epoch 2/2" in capsys.readouterr().out
    assert main(["search", "--out", str(out), "--resume", "--layers", "4"]) == 1
    assert "--layers: checkpoint 3, now 4" in capsys.readouterr().err


def test_corrupt_inputs_name_the_file(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch = {"data": [[0] * 3072] * 4, "labels": [0, 1, 2, 3]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch)[:100])  # truncated
    assert main(["search", "--dataset", "cifar10", "--data-dir", str(tmp_path),
                 "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert f"{folder / 'data_batch_1'}: not a CIFAR-10 batch" in err
    assert err.count("\n") == 1
    bad = tmp_path / "cell.json"
    bad.write_text('{"normal": [["sep_conv_3x3", 0]')
    assert main(["train", "--genotype", str(bad), "--dataset", "digits",
                 "--out", str(tmp_path / "t")]) == 1
    assert f"genotype file {bad}:" in capsys.readouterr().err
    assert main(["train-rnn", "--genotype", str(bad),
                 "--out", str(tmp_path / "u")]) == 1
    assert f"genotype file {bad}:" in capsys.readouterr().err
    recurrent = tmp_path / "recurrent.json"  # what search-rnn writes, given to train
    recurrent.write_text('{"recurrent": [["tanh", 0]], "concat": [1]}')
    assert main(["train", "--genotype", str(recurrent), "--dataset", "digits",
                 "--out", str(tmp_path / "v")]) == 1
    assert capsys.readouterr().err == (
        f"darts-lit train: error: genotype file {recurrent}: convolutional genotype "
        "needs normal, normal_concat, reduce, reduce_concat; it has recurrent, concat "
        "instead\n")
    assert main(["train-fbnet", "--architecture", str(bad), "--dataset", "digits",
                 "--out", str(tmp_path / "f")]) == 1
    out, err = capsys.readouterr()
    assert err.startswith(f"darts-lit train-fbnet: error: --architecture: {bad}: not "
                          "an FBNet architecture file") and err.count("\n") == 1, err
    assert "digits" not in out  # refused before the data set was loaded
    for flag in ("--space", "--latency-table"):
        assert main(["search-fbnet", flag, str(bad), "--dataset", "digits",
                     "--out", str(tmp_path / "s")]) == 1
        out, err = capsys.readouterr()
        assert err.startswith(f"darts-lit search-fbnet: error: {flag}: ") and str(
            bad) in err and err.count("\n") == 1, err
        assert "digits" not in out


def test_no_import_cycles_between_modules():
    """No module of darts_lit imports, even late, one that imports it back."""
    from test_reading_order import imported_modules

    package = Path(__file__).resolve().parents[1] / "darts_lit"
    modules = {}  # dotted name below darts_lit (a subpackage by its name) -> file
    for p in package.rglob("*.py"):
        parts = p.relative_to(package).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name:  # darts_lit/__init__.py re-exports; nothing imports it by name
            modules[name] = p
    graph = {}
    for name, path in modules.items():
        where = f"{name}.__init__" if path.name == "__init__.py" else name
        deps = imported_modules(path.read_text(encoding="utf-8"), where, set(modules))
        graph[name] = {d for d in deps if d != name}
    # the scanner sees relative imports in and across subpackages, and the commands'
    assert graph["cnn.model_search"] >= {"cnn.genotypes", "core.utils"}
    assert graph["cli"] >= {"cli.tools", "cli.base"} and "perf.timing" in modules

    def cycle_from(start):
        todo = [(start, [start])]
        seen = set()
        while todo:
            node, path = todo.pop()
            for dep in graph[node]:
                if dep == start:
                    return [*path, dep]
                if dep not in seen:
                    seen.add(dep)
                    todo.append((dep, [*path, dep]))
        return None

    cycles = [c for c in map(cycle_from, sorted(graph)) if c]
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)


# ---- every file an option names: empty, binary, a folder ---------------------------
def _tiny_imagenet(root):
    from PIL import Image

    for split in ("train", "val"):
        for c in ("n01", "n02"):
            (root / "imagenet" / split / c).mkdir(parents=True)
            image = Image.new("RGB", (8, 8), (40, 80, 120))
            image.save(root / "imagenet" / split / c / "0.png")
    return root


def _file_options(tmp_path):
    """(argv before the file, argv after it, words the one line must hold)."""
    digits = ["--dataset", "digits"]
    return {
        "train --genotype": (["train", "--genotype"], digits, "genotype"),
        "train-rnn --genotype": (["train-rnn", "--genotype"], [], "genotype"),
        "train-fbnet --architecture": (["train-fbnet", "--architecture"], digits,
                                       "--architecture"),
        "search-fbnet --space": (["search-fbnet", "--space"], digits, "--space"),
        "search-fbnet --latency-table": (["search-fbnet", "--latency-table"], digits,
                                         "--latency-table"),
        "search-fbnet --classes": (["search-fbnet", "--dataset", "imagenet100",
                                    "--data-dir", str(_tiny_imagenet(tmp_path / "d")),
                                    "--classes"], [], "--classes"),
        "latency --table": (["latency", "--table"], digits, "table"),
    }


@pytest.mark.parametrize("option", ["train --genotype", "train-rnn --genotype",
                                    "train-fbnet --architecture",
                                    "search-fbnet --space",
                                    "search-fbnet --latency-table",
                                    "search-fbnet --classes", "latency --table"])
@pytest.mark.parametrize("content", ["empty", "binary", "folder"])
def test_a_file_option_refuses_an_empty_binary_or_folder_file(option, content,
                                                              tmp_path, capsys):
    """Each file option, given an empty file, a binary file or a folder: exit 1, one
    line naming the option or the file, no run folder."""
    before, after, words = _file_options(tmp_path)[option]
    path = tmp_path / "given.json"
    if content == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"" if content == "empty"
                         else b"PK\x03\x04\x00\x00\x08\x00\xff\xfe" * 20)
    out = tmp_path / "run"
    argv = [*before, str(path), *after]
    if before[0] != "latency":
        argv += ["--out", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert words in err and (str(path) in err or content == "folder"), err
    assert not out.exists()


def test_a_latency_table_of_another_runs_runtime_is_refused_in_one_line(tmp_path,
                                                                       capsys):
    """A table measured by one run, named by a second run that times another runtime
    (or on another thread count): one line saying what differs; the second run's
    folder is not created and the table is left as it was."""
    table = tmp_path / "shared.json"
    assert main(["latency", "--dataset", "digits", "--batch-size", "8", "--warmup",
                 "0", "--repeats", "1", "--table", str(table)]) == 0
    capsys.readouterr()
    kept = table.read_bytes()
    second = tmp_path / "second"
    assert main(["search-fbnet", "--dataset", "digits", "--latency-table", str(table),
                 "--latency-runtime", "torchscript", "--epochs", "2",
                 "--max-steps-per-epoch", "1", "--out", str(second), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runtime 'eager' (this run: 'torchscript')" in err
    assert not (second / "checkpoint.pt").exists() and table.read_bytes() == kept


def test_a_run_never_changes_a_latency_table_it_was_given(tmp_path, monkeypatch):
    """search-fbnet given another run's table that lacks entries for its space: the
    file is left byte for byte as it was; the run folder keeps a copy, completed with
    what the space lacks; a resume reads that copy and measures nothing."""
    from darts_lit.fbnet.search import FBNetSearchConfig, search_fbnet
    from darts_lit.fbnet.space import FBNetSpace, fbnet_specs, make_fbnet_module
    from darts_lit.latency import table as LT

    space = FBNetSpace.for_images(1, 10, 8)  # the digits' space
    given = tmp_path / "other_run_table.json"
    LT.load_or_measure(given, fbnet_specs(space, 2)[0][0],  # the first layer only
                       lambda s: make_fbnet_module(space, s), warmup=0, repeats=1)
    kept = given.read_bytes()
    config = FBNetSearchConfig(dataset="digits", epochs=2, batch_size=16,
                               max_steps_per_epoch=1, timing_warmup=0,
                               timing_repeats=1, clock="wall", latency_batch=2,
                               verbose=False, seed=3, latency_table=str(given),
                               out_dir=str(tmp_path / "run"))
    search_fbnet(config, stop_after_epoch=1)
    assert given.read_bytes() == kept
    theirs = json.loads(kept)["entries"]
    own = json.loads((tmp_path / "run" / "latency_table.json").read_text())["entries"]
    assert set(theirs) < set(own) and all(own[k] == v for k, v in theirs.items())
    monkeypatch.setattr(LT, "measure_latency", lambda *a, **k: pytest.fail("measured"))
    assert search_fbnet(config, resume=True).done == 2
    assert given.read_bytes() == kept


def test_a_checkpoint_of_random_bytes_is_one_line_for_every_reader(tmp_path, capsys):
    """test, export and a resume, given a checkpoint.pt of random bytes (torch's own
    error is a page of text): one line each, naming the file, exit 1."""
    run = tmp_path / "run"
    run.mkdir()
    bad = run / "checkpoint.pt"
    bad.write_bytes(bytes(range(256)) * 4)
    for argv in (["test", "--checkpoint", str(bad)],
                 ["export", "--checkpoint", str(bad), "--out", str(tmp_path / "x")],
                 ["search", "--out", str(run), "--resume"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"checkpoint {bad} cannot be read" in err, err
        assert "Traceback" not in err
