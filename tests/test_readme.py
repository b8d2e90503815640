"""The Python examples of the README and of the docs run as written, so they never rot.

How the blocks run: every fenced block tagged ``python`` in a file is executed, in order, in
**one namespace per file**, like a reader pasting them one after another into a single Python
session. A later block may use names an earlier block of the same file defined; files never
share a namespace. To keep a block out of the test, put the line ``<!-- test: skip -->``
right above its opening fence.

The README must also open with its two set-up-and-run commands (main job, tests), which this
file checks verbatim, followed by the everyday test command (the tests not marked ``slow``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Files whose ```python blocks are executed. Add a docs page here to test its examples too.
FILES = ["README.md", "docs/quickstart.md"]

SKIP_MARK = "<!-- test: skip -->"
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\n`]*)$")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, source) of each ```python block, skipped blocks left out."""
    blocks: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group("fence"), m.group("info").strip()
        language = info.split()[0].strip("{}") if info else ""
        start = i + 1
        j = start
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        previous = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        if language in ("python", "py") and previous != SKIP_MARK:
            indent = len(m.group("indent"))
            body = "\n".join(line[indent:] for line in lines[start:j])
            blocks.append((start + 1, body))
        i = j + 1
    return blocks


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    out = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M):
        out.append((m.group(1), m.group(2).strip()))
    return out


@pytest.mark.parametrize("relpath", FILES)
def test_python_blocks_run(relpath: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = ROOT / relpath
    blocks = python_blocks(path.read_text(encoding="utf-8"))
    assert blocks, f"{relpath} has no ```python block to run"
    monkeypatch.chdir(tmp_path)  # a block that writes files writes them here
    namespace: dict[str, object] = {"__name__": "__main__"}
    for lineno, source in blocks:
        code = compile(source, f"{relpath}:{lineno}", "exec")
        try:
            exec(code, namespace)
        except Exception as err:
            raise AssertionError(f"the ```python block at {relpath}:{lineno} failed: {err!r}") from err


def test_readme_opens_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_two = fenced_blocks(text)[:2]
    assert first_two == [
        (
            "bash",
            'python -m venv .venv && .venv/bin/pip install -e ".[examples]" && .venv/bin/python examples/train.py',
        ),
        ("bash", 'python -m venv .venv && .venv/bin/pip install -e ".[dev]" && .venv/bin/python -m pytest'),
    ]
    before = text.split("```", 1)[0]
    assert before.count("\n## ") == 0, "the two commands must come before any section"


def test_readme_gives_the_everyday_command_after_the_two() -> None:
    """The fast command follows the two set-up-and-run commands and uses a registered marker."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert fenced_blocks(text)[2] == ("bash", '.venv/bin/python -m pytest -m "not slow"')
    assert '"slow: ' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")


def test_block_parser() -> None:
    text = "\n".join(
        [
            "```python",
            "a = 1",
            "```",
            "<!-- test: skip -->",
            "```python",
            "raise SystemExit",
            "```",
            "````{code-block} python",
            "b = 2",
            "````",
            "```bash",
            "ls",
            "```",
        ]
    )
    assert python_blocks(text) == [(2, "a = 1")]
