"""Helpers shared by the test modules (pytest puts this folder on sys.path)."""

import torch

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
