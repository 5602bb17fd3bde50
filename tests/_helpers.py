"""Helpers shared by the test modules (pytest puts this folder on sys.path)."""

import torch

from darts_lit.search import SearchConfig

# a search of seconds: 2 epochs of 2 steps on the digits, a 3-cell supernet of 2 nodes
TINY_SEARCH = SearchConfig(dataset="digits", epochs=2, batch_size=16, init_channels=2,
                           layers=3, steps=2, multiplier=2, max_steps_per_epoch=2,
                           seed=5, device="cpu", verbose=False)


def same(a, b) -> bool:
    """Bit-for-bit equality of nested tensors, dicts, lists and plain values."""
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def strip_time(history: list) -> list:
    """A run's history without the measured seconds, the one field that varies."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]
