"""Find machine-dependent figures typed into the book's prose.

    python tools/lint_figures.py            # every file of _toc.yml; exit 1 on findings
    python tools/lint_figures.py FILE ...   # these files only

A timing, a memory size, a speed-up or a percentage typed into a chapter's text goes
stale on the next machine, the next torch, the next data set. The book's rule
(CONTRIBUTING, "Figures in the prose"): such a number either comes from a cell, shown
with MyST-NB's `{glue:text}` role, or the paragraph that holds it is marked, on the
line just above it, with a MyST comment that says where the number comes from:

    % figures: paper (DARTS, Table 1)             quoted from a paper or its code
    % figures: measured on <device>, 2026-11-30   a lab-log entry, dated
    % figures: exact (a setting, not a measurement)   fixed by definition

A paragraph is a run of non-blank lines (a table, a list, a caption). The scan covers
the prose of every page, the text inside directives (admonitions, figures) and the
`caption:` and `alt:` of figure cells; it skips code cells, code blocks, math and
inline code.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

UNITS = (r"ns|µs|us|ms|s|sec|seconds|min|minutes|h|hours|days|GPU-days?|GPU-hours?"
         r"|B|KiB|MiB|GiB|TiB|kB|KB|MB|GB|TB|%|×")
FIGURE = re.compile(r"(?<![\w.\-/])\d+(?:[.,]\d+)*(?:\s?[–-]\s?\d+(?:[.,]\d+)*)?"
                    r"\s?(?:" + UNITS + r")(?![\w])")
FIX = ("compute it in a cell and show it with {glue:text}, or mark the paragraph "
       "('% figures: paper|measured on DEVICE, DATE|exact' on the line above it)")
MARKER = re.compile(r"^%\s*figures:\s*(paper|measured on|exact)\b(.*)$")
DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
SKIPPED = [re.compile(p) for p in (
    r"\{glue(?::\w+)?\}`[^`]*`",   # glued values: computed by a cell
    r"``.*?``|`[^`]*`",            # inline code
    r"\$\$.*?\$\$|\$[^$]*\$",      # inline math
    r"\]\([^)]*\)",                # link targets
    r"https?://\S+",
)]


def prose_lines(text: str):
    """(line number, text) of every line of `text` that is prose.

    Skipped: the front matter, code cells (apart from the `caption:` and `alt:` of
    their figure options), fenced code blocks, `$$` math blocks, directive options."""
    lines = text.split("\n")
    i, n = 0, len(lines)
    if lines and lines[0].strip() == "---":  # front matter
        i = next((k for k in range(1, n) if lines[k].strip() == "---"), n - 1) + 1
    fences = []  # open fences: (marker, is_prose)
    in_math = False
    in_options = False  # inside a code cell's yaml header
    while i < n:
        line, s = lines[i], lines[i].strip()
        i += 1
        fence = re.match(r"^(`{3,}|:{3,})(.*)$", s)
        if fence:
            mark, info = fence.group(1), fence.group(2).strip()
            if (fences and info == "" and mark[0] == fences[-1][0][0]
                    and len(mark) >= len(fences[-1][0])):
                fences.pop()  # the innermost open fence closes
                continue
            if not fences or fences[-1][1]:  # a fence opens in prose
                cell = info.startswith("{code-cell}")
                fences.append((mark, info.startswith("{") and not cell))
                if cell and i < n and lines[i].strip() == "---":
                    in_options = True
                    i += 1
                continue
        if fences and not fences[-1][1]:  # code: only a figure cell's texts are prose
            if in_options:
                if s == "---":
                    in_options = False
                elif re.match(r"^(caption|alt):", s) or (
                        line.startswith("      ") and not re.match(r"^\w+:", s)):
                    yield i, s
            continue
        if s.startswith("$$"):
            if s == "$$" or not (s.endswith("$$") and len(s) > 2):
                in_math = not in_math
            continue
        if in_math or s.startswith("%") or (fences and re.match(r"^:\w[\w-]*:", s)):
            continue  # math, a MyST comment, a directive's option
        yield i, line


def findings(path: Path) -> list[str]:
    """One message per typed figure of `path` outside glue and marked paragraphs."""
    text = path.read_text()
    lines = text.split("\n")
    out = []
    for number, line in prose_lines(text):
        bare = line
        for pattern in SKIPPED:
            bare = pattern.sub(" ", bare)
        figures = [m.group(0) for m in FIGURE.finditer(bare)]
        if not figures:
            continue
        marker = _marker_above(lines, number - 1)
        if marker:
            out.append(f"{path.name}:{number}: {marker}")
        elif marker is None:
            out.extend(f"{path.name}:{number}: typed figure {f!r}: {FIX}"
                       for f in figures)
    return out


def _marker_above(lines: list[str], index: int):
    """None: the paragraph of line `index` is unmarked; "": marked properly; else the
    reason the marker above it is not accepted."""
    k = index
    while k > 0 and lines[k - 1].strip() and not lines[k - 1].startswith("%"):
        k -= 1
    if k == 0 or not lines[k - 1].startswith("%"):
        return None
    m = MARKER.match(lines[k - 1].strip())
    if m is None:
        return None
    kind, rest = m.group(1), m.group(2).strip(" (),:—-")
    if not rest:
        return f"the '% figures: {kind}' marker needs its source or reason"
    if kind == "measured on" and not DATE.search(rest):
        return "the '% figures: measured on' marker needs a date (YYYY-MM-DD)"
    return ""


def main(argv: list[str]) -> int:
    from chapters import toc_files

    files = [Path(a) for a in argv] or toc_files()
    problems = [p for f in files for p in findings(f)]
    print("\n".join(problems) or f"no typed figures in {len(files)} files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
