"""Latency tables timed in the deployment runtime (darts_lit.latency.table's runtimes,
darts_lit.fbnet.runtimes): same function in every runtime, the runtime in the table's
key, refusals in one line, end-to-end validation, the CLI and the searches."""

import json
import sys

import pytest
import torch
from torch import nn

from darts_lit.cli import main as cli_main
from darts_lit.cnn.ops import OPS, PRIMITIVES
from darts_lit.core.data import UserError
from darts_lit.fbnet import runtimes as R
from darts_lit.fbnet import space as fbnet
from darts_lit.fbnet import validation
from darts_lit.fbnet.search import FBNetSearchConfig, search_fbnet
from darts_lit.latency import table as LT
from darts_lit.latency import timing as LTM

FAST = dict(warmup=1, repeats=2)
RUNTIMES = ("eager", "torchscript", "onnxruntime")


def _specs():
    return [LT.OpSpec("sep_conv_3x3", 4, 4, 6, 6, 1, 1),
            LT.OpSpec("max_pool_3x3", 4, 4, 6, 6, 2, 1)]


def _make(spec):
    return OPS[spec.op](spec.c_in, spec.stride, False)


# ---- the runtimes compute the same function ------------------------------------------
@pytest.mark.parametrize("runtime", ["torchscript", "onnxruntime"])
def test_every_candidate_runs_the_same_function_in_each_runtime(runtime):
    g = torch.Generator().manual_seed(0)
    modules = [(op, OPS[op](6, stride, True)) for op in PRIMITIVES if op != "none"
               for stride in (1, 2)]
    modules += [(b, fbnet.make_block(b, 8, 16, 2)) for b in fbnet.FBNET_BLOCKS]
    for name, module in modules:
        with torch.no_grad():  # train-mode statistics first, so that eval differs
            module.train()(torch.randn(4, module_in(module), 9, 9, generator=g))
        module.eval()
        x = torch.randn(2, module_in(module), 9, 9, generator=g)
        with torch.no_grad():
            expected = module(x)
            got = torch.as_tensor(LTM.runtime_named(runtime).compile(module, x)(x))
        assert got.shape == expected.shape, name
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=name)


def module_in(module: nn.Module) -> int:
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else 6  # pools and identity: C = 6


# ---- the runtime in the table's key --------------------------------------------------
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_table_records_its_runtime_version_and_threads(tmp_path, runtime):
    path = tmp_path / "t.json"
    table = LT.load_or_measure(path, _specs(), _make, runtime=runtime, **FAST)
    data = json.loads(path.read_text())
    assert data["runtime"] == runtime == table.runtime
    version = __import__("onnxruntime").__version__ if runtime == "onnxruntime" \
        else torch.__version__
    assert data["runtime_version"] == version
    assert data["threads"] == torch.get_num_threads()
    assert LT.LatencyTable.load(path, runtime=runtime) == table
    for other in set(RUNTIMES) - {runtime}:
        with pytest.raises(LT.StaleTableError) as e:
            LT.LatencyTable.load(path, runtime=other)
        msg = str(e.value)
        assert "\n" not in msg
        assert f"runtime {runtime!r} (this run: {other!r})" in msg
        with pytest.raises(LT.StaleTableError):  # and nothing is re-measured into it
            LT.load_or_measure(path, _specs(), _make, runtime=other, **FAST)
        assert json.loads(path.read_text()) == data


def test_a_table_of_another_thread_count_is_refused(tmp_path):
    path = tmp_path / "t.json"
    LT.load_or_measure(path, _specs(), _make, **FAST)
    data = json.loads(path.read_text())
    data["threads"] += 3
    path.write_text(json.dumps(data))
    with pytest.raises(LT.StaleTableError, match=f"threads {data['threads']}"):
        LT.LatencyTable.load(path)


def test_a_table_written_before_runtimes_is_read_as_eager(tmp_path):
    path = tmp_path / "t.json"
    table = LT.load_or_measure(path, _specs(), _make, **FAST)
    data = json.loads(path.read_text())
    for key in ("runtime", "runtime_version", "threads"):
        del data[key]
    path.write_text(json.dumps(data))
    assert LT.LatencyTable.load(path) == table
    with pytest.raises(LT.StaleTableError, match="runtime 'eager'"):
        LT.LatencyTable.load(path, runtime="torchscript")


# ---- refusals ------------------------------------------------------------------------
class Eigenvalues(nn.Module):
    def forward(self, x):
        return torch.linalg.eigvalsh(x @ x.transpose(-1, -2))


def test_an_op_the_runtime_cannot_export_is_named_and_nothing_is_written(tmp_path):
    path = tmp_path / "t.json"
    spec = LT.OpSpec("eigvalsh", 2, 2, 4, 4, 1, 1)
    with pytest.raises(LTM.ExportFailedError) as e:
        LT.load_or_measure(path, [*_specs(), spec],
                           lambda s: Eigenvalues() if s is spec else _make(s),
                           runtime="onnxruntime", where=lambda s: "layer 3", **FAST)
    msg = str(e.value)
    assert "\n" not in msg and "\x1b" not in msg
    for part in ("onnxruntime", "eigvalsh|2->2|4x4|s1|b1", "layer 3", "_linalg_eigh"):
        assert part in msg, (part, msg)
    assert not path.exists()
    # eager takes it
    assert LT.load_or_measure(path, [spec], lambda s: Eigenvalues(), **FAST)[spec] > 0


def test_fbnet_table_names_the_layers_of_an_op_that_fails(monkeypatch):
    space = fbnet.FBNetSpace.for_images(1, 10, 8)
    real = fbnet.make_block

    def make(name, *args):  # k5_e6 cannot be exported in this test
        return Eigenvalues() if name == "k5_e6" else real(name, *args)

    monkeypatch.setattr(fbnet, "make_block", make)
    with pytest.raises(LTM.ExportFailedError) as e:
        fbnet.fbnet_table(space, 1, runtime="onnxruntime", warmup=0, repeats=1)
    layers = [i for i, (c_in, c_out, h, s) in enumerate(space.layer_shapes())
              if (c_in, c_out, h, s) == space.layer_shapes()[0]]
    assert f"layer {', '.join(map(str, layers))}" in str(e.value)
    assert "k5_e6" in str(e.value)


def test_cli_latency_refuses_bad_runtimes_in_one_line(tmp_path, capsys, monkeypatch):
    base = ["latency", "--space", "fbnet", "--dataset", "digits", "--warmup", "0",
            "--repeats", "1", "--table", str(tmp_path / "t.json")]
    assert cli_main([*base, "--runtime", "tvm"]) == 1
    err = capsys.readouterr().err
    assert "unknown latency runtime 'tvm'; choose from eager, torchscript, " \
        "onnxruntime" in err and len(err.strip().splitlines()) == 1
    assert cli_main([*base, "--runtime", "onnxruntime", "--dtype", "float16"]) == 1
    err = capsys.readouterr().err
    assert "onnxruntime runtime times float32 on cpu here, not float16" in err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    assert cli_main([*base, "--runtime", "onnxruntime"]) == 1
    err = capsys.readouterr().err
    assert "pip install 'darts_lit[export]'" in err and "'onnxruntime'" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t.json").exists()
    assert cli_main(["latency", "--space", "darts", "--validate", "3"]) == 1
    assert "--validate samples networks of FBNet's space" in capsys.readouterr().err


def test_search_configs_check_the_runtime_before_anything_is_written(tmp_path,
                                                                     monkeypatch):
    from darts_lit.cnn.search import SearchConfig
    from darts_lit.core.config import ConfigError, validate

    with pytest.raises(ConfigError, match="latency_runtime: unknown latency runtime "
                       "'tvm'; choose from eager, torchscript, onnxruntime"):
        validate(FBNetSearchConfig(dataset="digits", latency_runtime="tvm"))
    with pytest.raises(ConfigError, match="latency_validate: must be 0"):
        validate(FBNetSearchConfig(dataset="digits", latency_validate=1))
    with pytest.raises(ConfigError, match="latency_runtime: times the table of "
                       "latency_weight"):
        validate(SearchConfig(dataset="digits", latency_runtime="torchscript"))
    with pytest.raises(ConfigError, match="unknown runtime 'tvm'"):
        validate(SearchConfig(dataset="digits", latency_weight=1.0,
                              latency_runtime="tvm"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    out = tmp_path / "run"
    assert cli_main(["search-fbnet", "--dataset", "digits", "--latency-runtime",
                     "onnxruntime", "--out", str(out)]) == 1
    assert not out.exists()


# ---- validation ----------------------------------------------------------------------
def test_uniform_choices_are_uniform_and_seeded():
    a = R.uniform_choices(22, 9, 2000, seed=3)
    assert a == R.uniform_choices(22, 9, 2000, seed=3) != R.uniform_choices(22, 9, 2000)
    counts = torch.bincount(torch.tensor(a).flatten(), minlength=9).double()
    expected = 22 * 2000 / 9
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 26.1  # χ²(8) at p = 0.001


def test_validate_runtime_fits_the_overhead_and_ranks(monkeypatch):
    """Networks that take exactly their table sum + 0.7 ms (two identical rounds): ρ 1,
    retest 1, overhead 0.7, fitted ratio 1; the samples are the two documented ones."""
    space = fbnet.FBNetSpace.for_images(1, 10, 8)
    g = torch.Generator().manual_seed(0)
    layers, fixed = fbnet.fbnet_specs(space, 1)
    table = LT.LatencyTable.empty()
    for spec in [s for row in layers for s in row] + fixed:
        table.entries[spec.key] = float(torch.rand((), generator=g)) + 0.1
    lat, fixed_ms = fbnet.fbnet_latency(space, table, 1)
    seen = {}

    def exact(space_, choices_list, batch, device, runtime, rounds, **kw):
        seen.setdefault("samples", []).append(choices_list)
        ms = [sum(float(lat[i, k]) for i, k in enumerate(c)) + fixed_ms + 0.7
              for c in choices_list]
        return torch.tensor([ms] * rounds, dtype=torch.float64)

    monkeypatch.setattr(R, "time_networks", exact)
    report = R.validate_runtime(space, table, networks=12, seed=5)
    spread, uniform = seen["samples"]
    assert spread == validation.sample_choices(lat, 12, 5)
    assert uniform == R.uniform_choices(*lat.shape, 12, 5)
    assert report["overhead_ms"] == pytest.approx(0.7, abs=1e-12)
    for name in ("spread", "uniform"):
        r = report[name]
        assert r["spearman"] == pytest.approx(1.0, abs=1e-12)
        assert r["retest_spearman"] == pytest.approx(1.0, abs=1e-12)
        assert r["median_ratio_fitted"] == pytest.approx(1.0, abs=1e-12)
        assert r["median_ratio"] > 1
        assert r["blocks"] == [[space.blocks[k] for k in c] for c in
                               (spread if name == "spread" else uniform)]
    with pytest.raises(UserError, match="at least 2"):
        R.validate_runtime(space, table, networks=1)


def test_time_networks_times_each_network_twice_and_leaves_the_seed(one_thread):
    space = fbnet.FBNetSpace.for_images(1, 10, 8)
    choices = R.uniform_choices(len(space.layer_shapes()), len(space.blocks), 3)
    state = torch.get_rng_state()
    times = R.time_networks(space, choices, 1, runtime="torchscript", rounds=2,
                            clock="cpu", **FAST)
    assert times.shape == (2, 3) and bool((times > 0).all())
    assert torch.equal(torch.get_rng_state(), state)


def test_cli_latency_validate_prints_both_samples(tmp_path, capsys, one_thread):
    path = tmp_path / "t.json"
    assert cli_main(["latency", "--space", "fbnet", "--dataset", "digits",
                     "--batch-size", "1", "--warmup", "0", "--repeats", "2",
                     "--runtime", "torchscript", "--validate", "3",
                     "--table", str(path)]) == 0
    out = capsys.readouterr().out
    assert "runtime torchscript" in out
    assert "spread   3 networks: ρ" in out and "uniform  3 networks: ρ" in out
    assert "test-retest ρ" in out and "with the overhead" in out
    assert json.loads(path.read_text())["runtime"] == "torchscript"


def test_search_fbnet_keeps_the_validation_and_resume_does_not_redo_it(tmp_path,
                                                                       one_thread,
                                                                       monkeypatch):
    out = tmp_path / "fb"
    config = FBNetSearchConfig(dataset="digits", epochs=2, batch_size=32,
                               max_steps_per_epoch=2, timing_warmup=0,
                               timing_repeats=1,
                               latency_batch=1, latency_runtime="torchscript",
                               latency_validate=3, verbose=False, out_dir=str(out))
    search_fbnet(config, stop_after_epoch=1)
    table = json.loads((out / "latency_table.json").read_text())
    report = json.loads((out / R.VALIDATION_FILE).read_text())
    assert table["runtime"] == report["runtime"] == "torchscript"
    assert report["networks"] == 3 and len(report["uniform"]["measured"]) == 2
    monkeypatch.setattr(R, "validate_runtime", lambda *a, **k: pytest.fail("again"))
    result = search_fbnet(config, resume=True)
    assert result.done == 2
    assert json.loads((out / R.VALIDATION_FILE).read_text()) == report


def test_darts_search_times_its_table_in_the_runtime(tmp_path):
    from darts_lit.cnn.search import SearchConfig, search

    config = SearchConfig(dataset="digits", epochs=1, batch_size=16, init_channels=4,
                          layers=3, max_steps_per_epoch=2, latency_weight=1.0,
                          latency_runtime="torchscript", device="cpu", seed=0,
                          verbose=False, out_dir=str(tmp_path / "s"))
    search(config)
    table = json.loads((tmp_path / "s" / "latency_table.json").read_text())
    assert table["runtime"] == "torchscript" and len(table["entries"]) > 0


def test_an_error_of_the_module_itself_is_not_dressed_as_an_export_failure():
    """Only the runtime's compile step (the export) becomes ExportFailedError, a user
    error; an error raised while timing is the module's own and stays what it is."""
    class Broken(nn.Module):
        def forward(self, x):
            raise ValueError("a bug in the module")

    with pytest.raises(ValueError, match="a bug in the module") as e:
        LTM.measure_latency(Broken(), (1, 2, 4, 4), **FAST)
    assert not isinstance(e.value, LTM.ExportFailedError)
