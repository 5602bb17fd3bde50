"""Helpers shared by the test modules (pytest puts this folder on sys.path)."""

import torch

from darts_lit.cnn.search import SearchConfig

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


def assert_as_close_as_plain(fast, plain, ref, names=None, factor=4.0, floor=1e-5):
    """float32 agreement against the noise floor: each tensor of `fast` (the path under
    test) lies no further from its float64 reference in `ref` than the plain float32
    path's tensor does, times `factor`, plus `factor` × the plain path's relative error
    over all tensors together (its round-off level on this case) and `floor` (float32
    round-off of a well-conditioned sum), both relative to the reference's size. An
    ill-conditioned case (a batch of 4 under BatchNorm) raises the plain path's error,
    and so the allowance, where a fixed rtol would sit on the noise floor and fail with
    another machine's kernels; a wrong fast path stays far outside it."""
    fast, plain, ref = list(fast), list(plain), list(ref)
    names = list(names) if names is not None else [str(i) for i in range(len(ref))]
    assert len(fast) == len(plain) == len(ref) == len(names)

    def err(a, r):
        return (a.double() - r.double()).norm().item()

    size = sum(r.double().norm().item() ** 2 for r in ref) ** 0.5
    level = sum(err(p, r) ** 2 for p, r in zip(plain, ref, strict=True)) ** 0.5
    level /= max(size, 1e-300)  # the plain path's relative error, all tensors
    for n, f, p, r in zip(names, fast, plain, ref, strict=True):
        assert f.shape == r.shape and f.dtype == p.dtype, n
        scale = r.double().norm().item()
        allowed = factor * (err(p, r) + level * scale) + floor * scale + 1e-12
        assert err(f, r) <= allowed, (
            f"{n}: |fast - float64| = {err(f, r):.3g} > {allowed:.3g} allowed "
            f"(|plain - float64| = {err(p, r):.3g}, |float64| = {scale:.3g})")
