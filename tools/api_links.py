"""Link the exported names in each chapter's summary to the API reference.

Every chapter ends with a `## Summary` that names what it added to the package. This
script turns each inline-code name there that the chapter's module exports (its
`__all__`) into a MyST role, `{py:obj}`~darts_lit.module.name``, which the built book
renders as a link to the name's entry on the API reference page (book/api.md).

Exported names the summary's prose does not mention are listed in a closing sentence,
"Also exported: ...", so that every public name of the package is reachable from the
chapter that explains it.

Usage: python tools/api_links.py [--check] [CHAPTER_STEM ...]
  --check  change nothing; fail if a summary would change.
"""

import argparse
import ast
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from chapters import chapters  # noqa: E402

DEFAULT_EXP = re.compile(r"^#\|\s*default_exp\s+(\S+)", re.M)
CODE = re.compile(r"(?<![`}])`([A-Za-z_][A-Za-z0-9_]*)`(?!`)")


def exported(module: str) -> list[str]:
    """The `__all__` of the generated module `darts_lit.<module>`."""
    path = ROOT / "darts_lit" / f"{module.replace('.', '/')}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []


def role(module: str, name: str) -> str:
    """The MyST cross-reference to `darts_lit.<module>.<name>`, shown as `name`."""
    return f"{{py:obj}}`~darts_lit.{module}.{name}`"


def link_summary(text: str, module: str, names: list[str]) -> tuple[str, list[str]]:
    """(text with the summary's exported names linked, the names it had left out)."""
    start = text.find("\n## Summary")
    if start < 0:
        raise SystemExit(f"a chapter exporting darts_lit.{module} has no '## Summary'")
    head, summary = text[:start], text[start:]
    wanted = set(names)

    def link(m):
        name = m.group(1)
        return role(module, name) if name in wanted else m.group(0)

    summary = CODE.sub(link, summary)
    linked = set(re.findall(rf"{{py:obj}}`~darts_lit\.{re.escape(module)}\.(\w+)`",
                            summary))
    missing = [n for n in names if n not in linked]
    if missing:
        also = textwrap.fill("Also exported: " + ", ".join(
            role(module, n) for n in missing) + ".", 88, break_long_words=False,
            break_on_hyphens=False)
        summary = summary.rstrip("\n") + f"\n\n{also}\n"
    return head + summary, missing


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true")
    p.add_argument("stems", nargs="*", help="only these chapters (default: all)")
    args = p.parse_args(argv)
    problems = []
    for path in chapters():
        if args.stems and path.stem not in args.stems:
            continue
        text = path.read_text(encoding="utf-8")
        m = DEFAULT_EXP.search(text)
        if not m:
            continue
        module = m.group(1)
        new, _ = link_summary(text, module, exported(module))
        if new != text:
            if args.check:
                problems.append(f"{path.name}: summary names not linked (run "
                                "`python tools/api_links.py`)")
            else:
                path.write_text(new, encoding="utf-8")
                print(f"linked the summary of {path.name}")
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
