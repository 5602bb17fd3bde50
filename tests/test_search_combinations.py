"""Every pair of the search's variant and remedy options, run together: each pair is
either refused by `validate` with a ConfigError naming one of its options, or runs a
tiny search whose records are sound. A combination that was never run together
(`--edge-normalization` with SDARTS-ADV crashed in `supernet_logits`) fails here."""

import itertools
import math
from dataclasses import replace

import pytest

from darts_lit.cnn.genotypes import genotype_from_dict
from darts_lit.cnn.search import SPACES, SearchConfig, search
from darts_lit.core.config import ConfigError, validate

TINY = SearchConfig(dataset="digits", epochs=1, batch_size=8, init_channels=4,
                    layers=3, steps=2, multiplier=2, max_steps_per_epoch=1, seed=1,
                    device="cpu", verbose=False)
OPTIONS = {
    "unrolled": dict(unrolled=True),
    "exact_hvp": dict(unrolled=True, hvp="exact"),
    "single_level": dict(single_level=True),
    "partial_channels": dict(partial_channels=2),
    "edge_normalization": dict(edge_normalization=True),
    "latency_weight": dict(latency_weight=0.5),
    "darts_es": dict(hessian_batches=1, early_stop="darts_es", epochs=2),
    "darts_plus": dict(early_stop="darts_plus", early_stop_min_epochs=1, epochs=2),
    "max_skips": dict(max_skips=1),
    "sdarts_rs": dict(sdarts_epsilon=0.3),
    "sdarts_adv": dict(sdarts_epsilon=0.3, sdarts_attack_steps=2),
    "space_s3": dict(space="s3"),
    "space_s4": dict(space="s4"),
    "recompute_cells": dict(recompute_cells=True),
    "amp": dict(amp=True),
}
PAIRS = list(itertools.combinations(OPTIONS, 2))


def flag_names(name: str) -> set:
    """The settings an entry of OPTIONS sets (what a refusal may name)."""
    return set(OPTIONS[name]) - {"epochs"}


@pytest.mark.parametrize("a,b", PAIRS, ids=[f"{a}+{b}" for a, b in PAIRS])
def test_option_pair_runs_or_is_refused(a, b, tmp_path, one_thread):
    config = replace(TINY, **{**OPTIONS[a], **OPTIONS[b]}, out_dir=str(tmp_path))
    try:
        validate(config)
    except ConfigError as e:  # a combination without meaning: refused, by name
        named = str(e).split(":")[0]
        assert named in flag_names(a) | flag_names(b) | {"space"}, str(e)
        return
    history = search(config).history
    assert 1 <= len(history) <= config.epochs
    ops = set(SPACES[config.space]) - {"none"}
    for record in history:
        genotype = genotype_from_dict(record["genotype"], validate=False)
        assert {op for op, _ in genotype.normal + genotype.reduce} <= ops
        for part in ("normal", "reduce"):
            for row in record["alphas"][part]:  # softmax(α): a distribution per edge
                assert math.isclose(sum(row), 1.0, rel_tol=1e-5)
        assert math.isfinite(record["train_loss"])
        if config.max_skips is not None:
            assert sum(op == "skip_connect" for op, _ in genotype.normal) <= 1
        if config.hessian_batches:
            assert record["lambda_max"] > 0
