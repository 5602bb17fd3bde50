"""The README's code example runs and does what its comments say; CLI lines parse."""

import re
import shlex
from pathlib import Path

import pytest
import torch

from darts_lit.cli import build_parser
from darts_lit.cnn.genotypes import load_genotype, validate_genotype

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(lang: str) -> list[str]:
    """The fenced code blocks of the README in language `lang`."""
    return re.findall(rf"^```{lang}\n(.*?)^```$", README.read_text(encoding="utf-8"),
                      flags=re.S | re.M)


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    (code,) = blocks("python")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(code, str(README), "exec"), ns)
    net, genotype = ns["net"], ns["genotype"]
    # the architect stepped α away from its 1e-3·randn start, with a gradient in α.grad
    assert all(a.grad is not None and a.grad.abs().sum() > 0
               for a in net.arch_parameters())
    # the saved genotype is the supernet's derivation and a valid cell
    saved = load_genotype(tmp_path / "my_cell.json")
    assert saved == genotype == net.genotype()
    validate_genotype(saved)
    # one epoch of training, with the keys the comment names
    (row,) = ns["history"]
    assert row["epoch"] == 1 and 0 <= row["test_top1"] <= 100
    assert torch.isfinite(torch.tensor(row["train_loss"]))
    assert re.search(r"\d\.\d\dM parameters", capsys.readouterr().out)


@pytest.mark.parametrize("line", [
    line.split("#")[0].strip()
    for block in blocks("bash") for line in block.splitlines()
    if line.startswith("darts-lit ")])
def test_readme_cli_lines_parse(line):
    for cmd in line.split("&&"):
        argv = shlex.split(cmd)[1:]
        if "--help" in argv:
            continue
        args = build_parser().parse_args(argv)
        assert callable(args.func)
