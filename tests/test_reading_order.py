"""The book's order is the import order: a chapter's module imports only modules of
chapters that come before it in `_toc.yml` (imports inside functions included)."""

import ast
import re

import chapters
import export

DEFAULT_EXP = re.compile(r"^#\|\s*default_exp\s+(\S+)", re.M)

# Backward edges allowed for now, each waiting for its seam: the earlier chapter
# defines a parameter, registry or hook, and the later one plugs into it. The set may
# only shrink: an edge fixed must leave it, a new one fails the test. It is empty.
KNOWN_BACKWARD: set = set()


def chapter_modules() -> list[str]:
    """The modules of the book's chapters, in the order of `_toc.yml`."""
    out = []
    for path in chapters.chapters():
        m = DEFAULT_EXP.search(path.read_text(encoding="utf-8"))
        if m:
            out.append(m.group(1))
    return out


def imported_modules(source: str, module: str, known: set[str]) -> set[str]:
    """The package modules (dotted, without `darts_lit.`) that `source`, the text of
    `darts_lit.<module>`, imports anywhere: absolute or relative, at the top or
    inside a function, `from pkg import module` included."""
    package = ["darts_lit", *module.split(".")[:-1]]
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            bases = [a.name for a in node.names]
            names = [[]] * len(bases)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            bases = [".".join(base + ([node.module] if node.module else []))]
            names = [[a.name for a in node.names]]
        else:
            continue
        for b, ns in zip(bases, names, strict=True):
            if not b.startswith("darts_lit."):
                b_rel = None if b != "darts_lit" else ""
            else:
                b_rel = b[len("darts_lit."):]
            if b_rel is None:
                continue
            if not ns:  # import darts_lit.x.y
                out.update({b_rel} & known)
            for n in ns:  # a submodule of b_rel, or a name that b_rel itself defines
                sub = f"{b_rel}.{n}".lstrip(".")
                out.update({sub if sub in known else b_rel} & known)
    return out


def backward_edges(sources: dict[str, str], order: list[str]) -> set[tuple[str, str]]:
    """(importer, imported) pairs where the imported module's chapter comes later."""
    rank = {m: i for i, m in enumerate(order)}
    return {(m, dep) for m, src in sources.items()
            for dep in imported_modules(src, m, set(order)) if rank[dep] > rank[m]}


def package_sources(order: list[str]) -> dict[str, str]:
    return {m: (export.LIB / f"{m.replace('.', '/')}.py").read_text(encoding="utf-8")
            for m in order}


def test_imports_follow_the_books_order():
    order = chapter_modules()
    found = backward_edges(package_sources(order), order)
    new = sorted(found - KNOWN_BACKWARD)
    assert not new, ("a chapter's module imports a later chapter's module (define a "
                     "seam in the earlier one instead): "
                     + ", ".join(f"{a} -> {b}" for a, b in new))
    fixed = sorted(KNOWN_BACKWARD - found)
    assert not fixed, ("these backward edges are gone; remove them from "
                       "KNOWN_BACKWARD: " + ", ".join(f"{a} -> {b}" for a, b in fixed))


def test_a_backward_import_is_found_in_every_form():
    """The check fails on a deliberately added backward import, whichever way it is
    written: absolute, relative, `from package import module`, inside a function."""
    order = chapter_modules()
    sources = package_sources(order)
    assert ("cnn.ops", "perf.fast") not in backward_edges(sources, order)
    for line in ("from darts_lit.perf.fast import optimizations",
                 "from ..perf.fast import optimizations",
                 "from ..perf import fast",
                 "import darts_lit.perf.fast",
                 "def f():\n    from darts_lit.perf import fast\n"):
        changed = {**sources, "cnn.ops": sources["cnn.ops"] + "\n" + line + "\n"}
        assert ("cnn.ops", "perf.fast") in backward_edges(changed, order), line
    # an earlier chapter's module is no backward edge
    earlier = sources["cnn.ops"] + "\nfrom ..core import utils\n"
    changed = {**sources, "cnn.ops": earlier}
    assert not {e for e in backward_edges(changed, order) if e[0] == "cnn.ops"}


def test_import_darts_lit_plugs_every_later_chapter_into_its_seam():
    """The seams are filled by the package's own objects once `import darts_lit` ran,
    each in its place (a later chapter's module registers itself on import)."""
    import darts_lit  # noqa: F401
    from darts_lit.cnn import (
        collapse,
        collapse_figures,
        early_stop,
        search,
        search_config,
        single_level,
        smoothing,
    )
    from darts_lit.core.utils import HOOKS
    from darts_lit.fbnet import runtimes
    from darts_lit.latency import darts as latency_darts
    from darts_lit.latency.timing import EAGER, RUNTIMES
    from darts_lit.perf import fast_cell, fast_model, pc_darts, recompute

    assert HOOKS == {"fast_search_cell": fast_cell.fast_cell_forward,
                     "fast_eval_cell": fast_model.fast_eval_forward,
                     "recompute": recompute.recomputed,
                     "pc_darts_network": pc_darts.PCNetwork,
                     "search_latency_objective": latency_darts.search_latency_objective,
                     "collapse_figure": collapse_figures.collapse_figure,
                     "fbnet_latency_validation": runtimes.save_validation}
    assert RUNTIMES == {"eager": EAGER, "torchscript": runtimes.TORCHSCRIPT,
                        "onnxruntime": runtimes.ONNXRUNTIME}
    assert dict(search_config.REMEDIES) == {
        "CollapseDiagnostics": collapse.CollapseDiagnostics,
        "SkipCap": collapse.SkipCap, "EarlyStop": early_stop.EarlyStop,
        "SDARTS": smoothing.SDARTS, "SingleLevel": single_level.SingleLevel}
    assert list(search_config.SPACES) == ["darts", "s2", "s3", "s4"]
    assert search.SPACES is collapse.SPACES is search_config.SPACES  # one registry
    from darts_lit.cli import outputs
    from darts_lit.cnn import search_figures
    from darts_lit.core.loop import KINDS, PLOTS
    from darts_lit.evaluation.train import TrainKind
    from darts_lit.fbnet.search import FBNetSearchKind
    from darts_lit.fbnet.train import FBNetTrainKind
    from darts_lit.rnn.search import RNNSearchKind
    from darts_lit.rnn.train import RNNTrainKind

    assert {n: type(k) for n, k in KINDS.items()} == {
        "search": search.SearchKind, "train": TrainKind, "search-rnn": RNNSearchKind,
        "train-rnn": RNNTrainKind, "search-fbnet": FBNetSearchKind,
        "train-fbnet": FBNetTrainKind}
    assert set(PLOTS) == set(KINDS)  # every kind draws its figures
    assert PLOTS["train"] is outputs._train_figures
    assert PLOTS["search"].__module__ == search_figures.__name__
