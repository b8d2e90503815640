r"""Keep the results quoted in the docs equal to the result files they come from.

A page quotes a whole result file between two markers::

    <!-- result: wrapper_overhead -->
    ...the body of benchmarks/results/wrapper_overhead.md (everything after its title)...
    <!-- /result -->

and a single number in a sentence between two others::

    the run took <!-- value: default_run::wall_text -->7 min 12 s<!-- /value --> on ...
    mIoU <!-- value: default_run::own_test::test/mIoU|x100:.2f -->67.32<!-- /value -->

``NAME::key::key...`` walks ``benchmarks/results/NAME.json`` (keys may hold ``/`` and ``.``; a number
key indexes a list; ``*`` takes every element, e.g. every seed of a study); after ``|`` comes the
format: a Python format spec (``.3f``, ``,.0f``), after optional prefixes: a scale, ``x100:`` (a
share shown in %) or ``/1e9:`` (FLOPs in G), and, for ``*``, ``mean:``, ``std:`` or ``meanstd:``
(``0.954 ± 0.002``, the sample standard deviation), or ``count:`` (how many elements, e.g. of a
list of recorded ops). A string value is quoted as it is. Inside a Markdown table write the
separator as ``\|`` (a bare ``|`` would end the cell).

A number derived from recorded ones is computed in the marker, never typed: before the format, in
place of ``NAME::key...``, one of

- ``ratio(A, B)``: A / B, e.g. Full over Base, or a share in % with ``x100:``;
- ``diff(A, B)``: A − B, e.g. what the modules add;
- ``mean(A, B, ...)``: their mean, e.g. the test mIoU of one run per seed, each in its own file;
- ``paired(A, B)::key``: A and B are lists of per-round times of two variants timed interleaved;
  the median, ``p25``, ``p75``, bootstrap 95 % interval (``ci95_low``, ``ci95_high``) and ``n`` of
  the per-round ratios A[i] / B[i], as ``benchmarks/_report.py`` computes them for the result
  tables (imports torch);

where A and B are ``NAME::key...`` paths or such forms again::

    Full/Base <!-- value: ratio(run::rows::1::ms, run::rows::0::ms)|.3f -->1.034<!-- /value -->
    paired <!-- value: paired(run::rows::1::times_ms, run::rows::0::times_ms)::median|.3f -->1.029<!-- /value -->
    <!-- value: ratio(diff(run::full::params, run::base::params), run::base::params)|x100:.2f -->0.34<!-- /value --> %

``python -m benchmarks.docs_results`` rewrites every block and value in ``README.md``,
``CHANGELOG.md`` and ``docs/*.md`` from the current result files; ``--check`` changes nothing and
exits 1 naming the ones that differ (the test suite runs the same check).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"(<!-- result: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /result -->)", re.S)
VALUE = re.compile(r"(<!-- value: (?P<spec>[^>]*?) -->)(?P<body>[^<]*)(<!-- /value -->)")


def pages(root: Path = ROOT) -> list[Path]:
    """The Markdown files that may quote results: README.md, CHANGELOG.md and docs/*.md."""
    return [root / "README.md", root / "CHANGELOG.md", *sorted((root / "docs").glob("*.md"))]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _walk(data: Any, keys: list[str], spec: str, where: str) -> Any:
    for i, key in enumerate(keys):
        if key == "*":  # every element of a list (or every value of a dict)
            items = data if isinstance(data, list) else list(data.values())
            return [_walk(item, keys[i + 1 :], spec, where) for item in items]
        try:
            data = data[int(key)] if isinstance(data, list) else data[key]
        except (KeyError, IndexError, ValueError, TypeError):
            raise KeyError(f"the docs value {spec!r}: {where} has no {key!r} there") from None
    return data


def _paired(a: list[float], b: list[float]) -> dict[str, float]:
    from benchmarks._report import paired_ratio  # imports torch (the bootstrap), so only when asked

    result = paired_ratio({"latency": {"times_ms": a}}, {"latency": {"times_ms": b}})
    if result is None:
        raise ValueError("paired(A, B) needs two lists of per-round times of the same length")
    return result


DERIVED = {"ratio": lambda a, b: a / b, "diff": lambda a, b: a - b, "paired": _paired,
           "mean": lambda *a: statistics.fmean(a)}
CALL = re.compile(r"(?P<func>\w+)\((?P<args>.*)\)(?P<keys>(?:::[^()]*)?)", re.S)


def _arguments(text: str) -> list[str]:
    """``text`` split at the commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def _data(path_spec: str, spec: str, results: Path) -> Any:
    """What ``NAME::key...`` or a derived form such as ``ratio(A, B)`` stands for (module docstring)."""
    path_spec = path_spec.strip()
    call = CALL.fullmatch(path_spec)
    if call:
        if call["func"] not in DERIVED:
            raise ValueError(f"the docs value {spec!r}: no derived form {call['func']!r} (one of {', '.join(DERIVED)})")
        args = [_data(arg, spec, results) for arg in _arguments(call["args"])]
        keys = [part.strip() for part in call["keys"].split("::")[1:]]
        return _walk(DERIVED[call["func"]](*args), keys, spec, f"{call['func']}(...)")
    name, *keys = [part.strip() for part in path_spec.split("::")]
    path = results / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"a docs value quotes {name!r}, but {path} does not exist")
    return _walk(json.loads(path.read_text()), keys, spec, f"{name}.json")


def value(spec: str, results: Path = RESULTS) -> str:
    """The text a value marker ``NAME::key::...|format`` must hold (module docstring)."""
    path_spec, _, fmt = spec.replace("\\|", "|").partition("|")  # `\|` inside a table cell
    data = _data(path_spec, spec, results)
    if isinstance(data, str):
        return data
    fmt = fmt.strip()
    scale, aggregate = 1.0, None
    while True:
        head, sep, rest = fmt.partition(":")
        if not sep:
            break
        if head in ("mean", "std", "meanstd", "count"):
            aggregate = head
        elif head[:1] in ("x", "/") and _is_number(head[1:]):
            scale = scale * float(head[1:]) if head[0] == "x" else scale / float(head[1:])
        else:
            break
        fmt = rest
    if aggregate is None:
        return format(scale * data, fmt)
    if aggregate == "count":
        return format(len(data), fmt)
    values = [scale * v for v in data if v is not None]
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    if aggregate == "mean":
        return format(mean, fmt)
    if aggregate == "std":
        return format(std, fmt)
    return f"{format(mean, fmt)} ± {format(std, fmt)}"


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
    """``(new text of page, names of the blocks and values that changed)``."""
    changed: list[str] = []

    def replace(match: re.Match) -> str:
        body = quoted(match["name"], results)
        if match["body"] != body:
            changed.append(match["name"])
        return f"{match.group(1)}{body}{match.group(4)}"

    def replace_value(match: re.Match) -> str:
        body = value(match["spec"], results)
        if match["body"] != body:
            changed.append(f"{match['spec']} ({match['body']!r} -> {body!r})")
        return f"{match.group(1)}{body}{match.group(4)}"

    return VALUE.sub(replace_value, BLOCK.sub(replace, page.read_text())), changed


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
