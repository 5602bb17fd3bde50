"""Turn the book's chapters into notebooks that the test suite executes.

    python tools/chapters.py prepare OUT_DIR [NAME ...] # for `pytest --nbval-lax`
    python tools/chapters.py golden [NAME ...] # (re)record the checked outputs

`prepare` reads every chapter listed in `_toc.yml` with jupytext, injects the CI-size
parameters of `tests/chapter_params.json` with papermill (after the cell tagged
`parameters`), and copies the recorded outputs of every cell tagged
`nbval-check-output` from `tests/golden/<chapter>.json` into the notebook. nbval then
executes the notebook and compares those cells' fresh outputs with the recorded ones.

`golden` executes the chapters with papermill at the same parameters and records the
outputs of the tagged cells. Run it when a checked output changes on purpose, and review
the diff of `tests/golden/` like any other change.
"""

import hashlib
import json
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml
from papermill.parameterize import parameterize_notebook

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "tests" / "chapter_params.json"
GOLDEN = ROOT / "tests" / "golden"
CHECK_TAG = "nbval-check-output"


def toc_files() -> list[Path]:
    """Every file listed in `_toc.yml` (root first), as paths of `.md` files."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))

    for part in toc.get("parts", [{"chapters": toc.get("chapters")}]):
        walk(part.get("chapters"))
    return [ROOT / f"{f}.md" for f in files]


def chapters() -> list[Path]:
    """The notebook chapters of the book: toc files with a jupytext kernel header."""
    return [p for p in toc_files()
            if "kernelspec:" in p.read_text().split("\n---", 1)[0]]


def cell_key(cell) -> str:
    """A stable name for a cell: the hash of its source."""
    return hashlib.sha1(cell.source.encode()).hexdigest()[:12]


def load_chapter(path: Path):
    """The chapter as a notebook with its CI-size parameters injected."""
    nb = jupytext.read(path)
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])
    params = json.loads(PARAMS.read_text()).get(path.stem, {})
    if params:
        nb.metadata["papermill"] = nbformat.NotebookNode()
        nb = parameterize_notebook(nb, params)
    nb.metadata.pop("papermill", None)
    return nb


def checked_cells(nb):
    """Code cells whose outputs nbval compares."""
    return [c for c in nb.cells
            if c.cell_type == "code" and CHECK_TAG in c.metadata.get("tags", [])]


def prepare(out_dir: Path, names=()) -> int:
    """Write one notebook per chapter into `out_dir`, recorded outputs filled in."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.ipynb"):
        old.unlink()
    problems = []
    selected = [p for p in chapters() if not names or p.stem in names]
    if names and len(selected) != len(set(names)):
        print(f"not all of {names} are chapters listed in _toc.yml", file=sys.stderr)
        return 1
    for path in selected:
        nb = load_chapter(path)
        golden_file = GOLDEN / f"{path.stem}.json"
        golden = json.loads(golden_file.read_text()) if golden_file.exists() else {}
        for cell in checked_cells(nb):
            key = cell_key(cell)
            if key not in golden:
                problems.append(f"{path.name}: no recorded output for checked cell "
                                f"{key} ({cell.source.splitlines()[0][:50]!r})")
                continue
            cell.outputs = [nbformat.from_dict(o) for o in golden[key]]
            cell.execution_count = 1  # nbval only compares cells that look run
        nb_id = nbformat.v4.new_notebook()  # fresh, valid cell ids for nbformat 4.5
        nb.nbformat_minor = nb_id.nbformat_minor
        for i, cell in enumerate(nb.cells):
            cell["id"] = f"cell-{i}"
        nbformat.write(nb, out_dir / f"{path.stem}.ipynb")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        print("Record them with `make golden` and review the diff.", file=sys.stderr)
        return 1
    print(f"prepared {len(selected)} chapters in {out_dir}")
    return 0


def text_outputs(outputs) -> list[dict]:
    """The comparable part of cell outputs: streams and plain-text results."""
    kept = []
    for o in outputs:
        if o["output_type"] == "stream":
            kept.append({"output_type": "stream", "name": o["name"], "text": o["text"]})
        elif o["output_type"] == "execute_result" and "text/plain" in o["data"]:
            text = o["data"]["text/plain"]
            kept.append({"output_type": "execute_result", "execution_count": None,
                         "metadata": {}, "data": {"text/plain": text}})
    return kept


def golden(names: list[str]) -> int:
    """Execute chapters with papermill and record their checked cells' outputs."""
    import tempfile

    import papermill

    GOLDEN.mkdir(parents=True, exist_ok=True)
    for path in chapters():
        if names and path.stem not in names:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / f"{path.stem}.ipynb"
            nbformat.write(load_chapter(path), src)
            done = papermill.execute_notebook(str(src), str(src), cwd=str(path.parent),
                                              progress_bar=False)
        record = {cell_key(c): text_outputs(c.outputs) for c in checked_cells(done)}
        out = GOLDEN / f"{path.stem}.json"
        if record:
            out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
            print(f"recorded {len(record)} checked cells of {path.name}")
        elif out.exists():
            out.unlink()
    return 0


if __name__ == "__main__":
    cmd, *rest = sys.argv[1:] or ["help"]
    if cmd == "prepare" and rest:
        sys.exit(prepare(Path(rest[0]), rest[1:]))
    if cmd == "golden":
        sys.exit(golden(rest))
    sys.exit(__doc__)
