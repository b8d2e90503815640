"""Keep the result tables quoted in the docs equal to the result files they come from.

A page quotes a result file between two markers::

    <!-- result: wrapper_overhead -->
    ...the body of benchmarks/results/wrapper_overhead.md (everything after its title)...
    <!-- /result -->

``python -m benchmarks.docs_results`` rewrites every such block in ``README.md`` and
``docs/*.md`` from the current result files; ``--check`` changes nothing and exits 1 naming the
blocks that differ (the test suite runs the same check).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"(<!-- result: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /result -->)", re.S)


def pages(root: Path = ROOT) -> list[Path]:
    """The Markdown files that may quote results: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def quoted(name: str, results: Path = RESULTS) -> str:
    """What a block quoting ``name`` must hold: ``results/<name>.md`` without its title line."""
    path = results / f"{name}.md"
    if not path.is_file():
        raise FileNotFoundError(f"a docs block quotes {name!r}, but {path} does not exist")
    lines = path.read_text().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join(lines).strip() + "\n"


def sync(page: Path, results: Path = RESULTS) -> tuple[str, list[str]]:
    """``(new text of page, names of the blocks that changed)``."""
    changed: list[str] = []

    def replace(match: re.Match) -> str:
        body = quoted(match["name"], results)
        if match["body"] != body:
            changed.append(match["name"])
        return f"{match.group(1)}{body}{match.group(4)}"

    return BLOCK.sub(replace, page.read_text()), changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    args = parser.parse_args(argv)
    stale = []
    for page in pages():
        text, changed = sync(page)
        if changed:
            stale += [f"{page.relative_to(ROOT)}: {name}" for name in changed]
            if not args.check:
                page.write_text(text)
    verb = "stale" if args.check else "updated"
    for line in stale:
        print(f"{verb}: {line}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
