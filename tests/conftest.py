import os
import sys
from pathlib import Path

import pytest

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
