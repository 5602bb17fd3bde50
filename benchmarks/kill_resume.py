"""Kill -9 every kind of run at several moments, resume, compare with an untouched run.

    python benchmarks/kill_resume.py            # six kinds, kills at 5 moments each
    python benchmarks/kill_resume.py --kinds search train --fractions 0.4 0.8

For each kind of run (search, train, search-rnn, train-rnn, search-fbnet, train-fbnet)
at a tiny size, one run goes to its end untouched; then, for each fraction f, a run is
started in a fresh folder as its own process and sent SIGKILL (kill -9: no handler,
no cleanup) f x the untouched run's wall time after its start. The folder is read as
the killed process left it: the history.json on disk must not be behind the
checkpoint's history (the loop writes history and the kind's files before the
checkpoint). The run is then started again (with resume when a checkpoint exists,
fresh otherwise) until it is done, and its folder is compared with the untouched
one's: every JSON file (times left out), the checkpoint's history and every model
tensor. Prints one row per kill; the last line is exactly `kills=<n> consistent=<n>
identical=<n>`.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

DIGITS = dict(dataset="digits", epochs=6, batch_size=16, max_steps_per_epoch=4,
              device="cpu", verbose=False, seed=3)
TEXT = dict(dataset="pydoc", max_vocab=100, emsize=6, batch_size=8, bptt=6,
            eval_batch_size=16, max_steps_per_epoch=4, device="cpu", verbose=False,
            epochs=6, seed=3)
SETTINGS = {
    "search": dict(DIGITS, init_channels=2, layers=3, steps=2),
    "train": dict(DIGITS, init_channels=4, layers=3, cutout_length=4,
                  genotype="DARTS_V2"),
    "search-rnn": dict(TEXT, steps=3),
    "train-rnn": dict(TEXT, test_batch_size=16, genotype="DARTS_V1"),
    "search-fbnet": dict(DIGITS, timing_warmup=0, timing_repeats=1, clock="wall",
                         latency_batch=2),
    "train-fbnet": dict(DIGITS, architecture="fbnet_a"),
}
RUN = """
import sys, json, torch
torch.set_num_threads(1)
import darts_lit
from darts_lit.core.loop import fit, kind_named
kind = kind_named(sys.argv[1])
settings = json.loads(sys.argv[2])
fit(kind, kind.config_class(**settings))
"""


def start(kind: str, settings: dict) -> subprocess.Popen:
    """The run as its own process (one thread), its output discarded."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", RUN, kind, json.dumps(settings)],
                            env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def run_to_end(kind: str, settings: dict, out: Path) -> None:
    """Start (or resume, when the folder holds a checkpoint) until the run is done."""
    resume = (out / "checkpoint.pt").exists()
    proc = start(kind, dict(settings, out_dir=str(out), resume=resume))
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{kind}: the run failed:\n{err.decode()[-2000:]}")


def timeless(obj):
    """`obj` without its `seconds` entries (times differ from run to run)."""
    if isinstance(obj, list):
        return [timeless(v) for v in obj]
    if isinstance(obj, dict):
        return {k: timeless(v) for k, v in obj.items() if k != "seconds"}
    return obj


def folder(path: Path) -> dict:
    """What a run folder says: its JSON files (times left out) and its checkpoint."""
    files = {p.name: timeless(json.loads(p.read_text())) for p in sorted(
        path.glob("*.json")) if p.name != "latency_table.json"}
    state = torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=False)
    return {"files": files, "history": timeless(state["history"]),
            "model": state["model"]}


def same(a: dict, b: dict) -> bool:
    """Whether two folders hold the same files, history and model tensors."""
    return (a["files"] == b["files"] and a["history"] == b["history"]
            and a["model"].keys() == b["model"].keys()
            and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]))


def consistent_after_kill(out: Path) -> tuple[int | None, int | None, bool]:
    """(epochs in the checkpoint, epochs in history.json, history not behind)."""
    ckpt = out / "checkpoint.pt"
    if not ckpt.exists():
        return None, None, True  # killed before the first epoch was saved
    saved = len(torch.load(ckpt, map_location="cpu", weights_only=False)["history"])
    hist = out / "history.json"
    on_disk = len(json.loads(hist.read_text())) if hist.exists() else 0
    return saved, on_disk, on_disk >= saved


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    p.add_argument("--fractions", nargs="+", type=float,
                   default=[0.5, 0.6, 0.7, 0.8, 0.9])
    args = p.parse_args(argv)
    kills = consistent = identical = 0
    print(f"{'kind':13s} {'kill at':>8s} {'ckpt ep':>7s} {'hist ep':>7s} "
          f"{'not behind':>10s} {'resumed = untouched':>19s}")
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp, "table.json")  # one table for every search-fbnet run
        for kind in args.kinds:
            settings = dict(SETTINGS[kind])
            if kind == "search-fbnet":
                settings["latency_table"] = str(table)
            t0 = time.perf_counter()
            run_to_end(kind, settings, Path(tmp, kind, "untouched"))
            wall = time.perf_counter() - t0
            reference = folder(Path(tmp, kind, "untouched"))
            for f in args.fractions:
                out = Path(tmp, kind, f"killed-{f}")
                proc = start(kind, dict(settings, out_dir=str(out)))
                time.sleep(f * wall)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                saved, on_disk, ok = consistent_after_kill(out)
                run_to_end(kind, settings, out)
                equal = same(folder(out), reference)
                kills, consistent, identical = (kills + 1, consistent + ok,
                                                identical + equal)
                shown = ["-" if v is None else v for v in (saved, on_disk)]
                print(f"{kind:13s} {f * wall:7.1f}s {shown[0]:>7} {shown[1]:>7} "
                      f"{str(ok):>10s} {str(equal):>19s}", flush=True)
    print(f"kills={kills} consistent={consistent} identical={identical}")


if __name__ == "__main__":
    main()
