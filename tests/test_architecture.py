"""The package's layers import only what they may (the rules of the Architecture docs page).

Read from the source with ``ast`` (nothing is imported), so a forbidden import fails here even
when it sits in a branch no test runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "uncertainty_rrsis"
BASE = {"_version", "_contracts", "_ops", "_attention"}  # the base layer, next to the package root
LOW = {"modules", "losses", "wrapper", "adapters", "recipes"} | BASE  # torch + einops only
HEAVY = ("timm", "transformers")


def imports(path: Path, package_root: Path) -> list[str]:
    """Absolute dotted names of what ``path`` imports (relative imports resolved; for
    ``from X import y`` both ``X`` and ``X.y``, since ``y`` may be a module)."""
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    package = parts[:-1]
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]
    return names


def violations(path: Path, package_root: Path) -> list[str]:
    """The rules broken by one file of the package, each once: ``"<rule> (<first import>)"``."""
    layer = path.relative_to(package_root).parts[0].removesuffix(".py")
    found: dict[str, str] = {}
    for name in imports(path, package_root):
        parts = name.split(".")
        if parts[0] in ("examples", "benchmarks", "tests"):
            found.setdefault("the package never imports examples/, benchmarks/ or tests/", name)
        if parts[0] in HEAVY and layer in LOW:
            found.setdefault("no timm / transformers below models/", name)
        if parts[0] != package_root.name:
            continue
        inner = parts[1:]
        if inner[:1] == ["cli"] and layer != "cli":
            found.setdefault("nothing in the package imports the commands (cli/)", name)
        if inner == ["__version__"] or (not inner and path != package_root / "__init__.py"):
            found.setdefault("the package root (take __version__ from _version)", name)
        if not inner:
            continue
        if layer in BASE and inner[0] not in BASE and inner[0] != "__version__":
            found.setdefault("the base layer imports only the base layer", name)
        if layer in LOW and inner[0] in ("models", "data", "training", "metrics", "viz", "inference"):
            found.setdefault("modules, losses and the wrapper stay below models/ and data/", name)
        if layer in ("data", "metrics", "viz", "geo") and inner[0] in ("models", "training", "inference", "scenes"):
            found.setdefault("data/, metrics and viz never import the model or training", name)
        if inner[0] != layer and inner[0] not in BASE and len(inner) > 1 and inner[1].startswith("_") \
                and not inner[1].startswith("__"):
            found.setdefault("another package's private module", name)
    return sorted(f"{rule} ({name})" for rule, name in found.items())


FILES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_layer_rules(path: Path) -> None:
    assert violations(path, PACKAGE) == []


def test_the_rules_find_each_kind_of_violation(tmp_path: Path) -> None:
    """A rule that sees nothing cannot fail: plant one file per violation in a copy of the layout."""
    root = tmp_path / "uncertainty_rrsis"
    planted = {
        "modules/bad.py": "import timm\nfrom ..models import CroBIMU\n",
        "_ops.py": "from .data import collate\n",
        "data/bad.py": "from ..models.text import TextEncoder\n",
        "training/bad.py": "from ..models._checkpoint import strip_wrapper_prefixes\nfrom .. import __version__\n",
        "inference.py": "from uncertainty_rrsis.data._io import read_image\nimport benchmarks\n",
        "training/fine.py": ("from .._ops import resize_logits\nfrom ._private import x\n"
                             "from ..data import read_image\n"),
        "scenes/bad.py": "from ..cli import run\n",
    }
    for name, text in planted.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    found = {name: violations(root / name, root) for name in planted}
    assert [len(found[n]) for n in planted] == [2, 2, 1, 2, 2, 0, 1], found
    assert "another package's private module" in found["training/bad.py"][0] + found["training/bad.py"][1]


def test_examples_use_only_public_names() -> None:
    for path in sorted((REPO / "examples").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            else:
                continue
            for module in modules:
                private = [p for p in module.split(".") if p.startswith("_") and not p.startswith("__")]
                assert not private, f"{path.name} imports {module}"


# --------------------------------------------------------------------------------------------
# no import circle
# --------------------------------------------------------------------------------------------


def module_name(path: Path, package_root: Path) -> str:
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package_root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in the file (also inside functions).

    A package's ``__init__`` only re-exports what its modules define, so an import of the package
    itself counts as an import of the module that defines the name when ``from pkg import name``
    names a module; otherwise as the package.
    """
    paths = sorted(package_root.rglob("*.py"))
    modules = {module_name(p, package_root): p for p in paths}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports(path, package_root):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles between modules that are not packages' ``__init__`` files (which only re-export)."""
    packages = {name for name in graph if any(other.startswith(name + ".") for other in graph)}
    edges = {m: {t for t in ts if t not in packages} for m, ts in graph.items() if m not in packages}
    found, seen = [], set()
    for start in sorted(edges):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    circle = path + [start]
                    key = frozenset(path)
                    if key not in seen:
                        seen.add(key)
                        found.append(circle)
                elif nxt not in path and nxt > start:
                    stack.append((nxt, path + [nxt]))
    return found


def test_no_module_of_the_package_imports_itself_through_others() -> None:
    assert circles(import_graph(PACKAGE)) == []


def test_the_circle_check_finds_a_circle(tmp_path: Path) -> None:
    root = tmp_path / "uncertainty_rrsis"
    (root / "training").mkdir(parents=True)
    (root / "training" / "__init__.py").write_text("from .config import A\n")
    (root / "training" / "config.py").write_text("def f():\n    from .setup import g\n")
    (root / "training" / "setup.py").write_text("from .config import TrainConfig\n")
    (root / "training" / "other.py").write_text("from .setup import g\n")
    assert circles(import_graph(root)) == [["uncertainty_rrsis.training.config", "uncertainty_rrsis.training.setup",
                                            "uncertainty_rrsis.training.config"]]
