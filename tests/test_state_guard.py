"""The autouse guard of conftest.py: a test that leaves process-wide state changed
fails, naming what it changed, and the next test finds the state as it was."""

from pathlib import Path

pytest_plugins = ["pytester"]

LEAKY = '''
import os
import torch


def test_leaks_threads():
    torch.set_num_threads(1 if torch.get_num_threads() != 1 else 2)


def test_leaks_env():
    os.environ["DARTS_LEAK_DEMO"] = "1"


def test_leaks_dtype():
    torch.set_default_dtype(torch.float64)


def test_leaks_cwd(tmp_path):
    os.chdir(tmp_path)


def test_leaks_a_process_group(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/pg",
                                         rank=0, world_size=1)


def test_seeds_on_purpose():
    torch.manual_seed(123)  # allowed: the random generators are put back


def test_state_is_back():
    assert torch.get_default_dtype() == torch.float32
    assert "DARTS_LEAK_DEMO" not in os.environ
    assert not torch.distributed.is_initialized()
'''


def test_a_leaking_test_fails_by_name(pytester):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_leaky=LEAKY)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=7, errors=5)
    out = result.stdout.str()
    for what in ("torch.get_num_threads()", "os.environ['DARTS_LEAK_DEMO']",
                 "torch.get_default_dtype()", "os.getcwd()",
                 "torch.distributed.is_initialized()"):
        assert what in out, what
    assert "test_seeds_on_purpose left" not in out
