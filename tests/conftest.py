import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """Real CIFAR-10/PTB subsets beside the checkout (../shared/data/README.md)."""
    root = Path(os.environ.get("DARTS_DATA", SHARED_DATA))
    if not (root / "cifar-10-batches-py").is_dir():
        pytest.skip(f"no shared data at {root}")
    return root


@pytest.fixture
def one_thread():
    """torch on one CPU thread (so that clock='cpu' is allowed), restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- no test leaves process-wide state changed ---------------------------------------
# Variables that pytest and the libraries set for themselves, once: pytest names the
# running test, torch's compiler points its cache at a folder the first time a test
# reaches it, scikit-learn sets OpenMP's two on import.
OWN_VARIABLES = {"PYTEST_CURRENT_TEST", "TORCHINDUCTOR_CACHE_DIR",
                 "KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK"}


def process_state() -> dict:
    """The process-wide settings a test could leave changed, as comparable values."""
    return {
        "torch.get_num_threads()": torch.get_num_threads(),
        "torch.get_default_dtype()": torch.get_default_dtype(),
        "torch.is_grad_enabled()": torch.is_grad_enabled(),
        "torch.are_deterministic_algorithms_enabled()":
            torch.are_deterministic_algorithms_enabled(),
        "os.getcwd()": os.getcwd(),
        "os.environ": {k: v for k, v in os.environ.items() if k not in OWN_VARIABLES},
        "torch.distributed.is_initialized()": (torch.distributed.is_available()
                                               and torch.distributed.is_initialized()),
    }


def restore(state: dict) -> None:
    """Put back the settings of `process_state()`."""
    torch.set_num_threads(state["torch.get_num_threads()"])
    torch.set_default_dtype(state["torch.get_default_dtype()"])
    torch.set_grad_enabled(state["torch.is_grad_enabled()"])
    torch.use_deterministic_algorithms(
        state["torch.are_deterministic_algorithms_enabled()"])
    os.chdir(state["os.getcwd()"])
    if (torch.distributed.is_available() and torch.distributed.is_initialized()
            and not state["torch.distributed.is_initialized()"]):
        torch.distributed.destroy_process_group()  # a process group left behind
    env = state["os.environ"]
    for k in set(os.environ) - set(env) - OWN_VARIABLES:
        del os.environ[k]
    os.environ.update(env)


def leaks(before: dict, after: dict) -> list[str]:
    """What differs between two `process_state()`s, one line each."""
    out = []
    for key, was in before.items():
        now = after[key]
        if key == "os.environ":
            out += [f"os.environ[{k!r}]: {was.get(k)!r} -> {now.get(k)!r}"
                    for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)]
        elif now != was:
            out.append(f"{key}: {was!r} -> {now!r}")
    return out


def guard_state(where: str):
    """Check, around a test or a module, that process-wide state is left as it was:
    the random generators are put back (tests seed them on purpose); a change to the
    other settings is put back and fails the test that made it, naming it."""
    before = process_state()
    rng = (torch.get_rng_state(), random.getstate(), np.random.get_state())
    yield
    torch.set_rng_state(rng[0])
    random.setstate(rng[1])
    np.random.set_state(rng[2])
    changed = leaks(before, process_state())
    if changed:
        restore(before)
        pytest.fail(f"{where} left process-wide state changed (restore it, e.g. with "
                    "monkeypatch or a fixture):\n  " + "\n  ".join(changed),
                    pytrace=False)


@pytest.fixture(autouse=True)
def _no_leaked_state(request):
    """A test leaves threads, dtype, grad mode, environment, cwd and the process group
    (none) as it found them."""
    yield from guard_state(f"test {request.node.nodeid}")


@pytest.fixture(autouse=True, scope="module")
def _no_leaked_state_by_module(request):
    """The same for module-scoped fixtures (torn down after the module's last test)."""
    yield from guard_state(f"a module-scoped fixture of {request.node.nodeid}")
