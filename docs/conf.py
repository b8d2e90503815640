"""Sphinx configuration of the uncertainty-rrsis documentation.

Build (offline, warnings are errors, as CI does)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Three things here keep the site from rotting:

* the ``{src}`` role and the ``paper-code`` directive (used by "The paper in code") find the
  source line of an equation by a code snippet at build time, so line numbers are never typed
  by hand, and a snippet that no longer exists is a build warning, i.e. an error under ``-W``;
* the API page documents the optional sub-packages (models, data, metrics, viz, training) only
  when they import, so a package that is still being written never breaks the build;
* the guide pages (datasets, training, ...) enter the index toctree only when their file exists.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.directives.code import LiteralInclude
from sphinx.util import logging

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
PACKAGE = ROOT / "uncertainty_rrsis"
sys.path.insert(0, str(ROOT))

import uncertainty_rrsis  # noqa: E402

logger = logging.getLogger("uncertainty_rrsis.docs")

# -- Project ------------------------------------------------------------------------------------

project = "uncertainty-rrsis"
author = "uncertainty-rrsis contributors"
copyright = "2026, uncertainty-rrsis contributors"
release = uncertainty_rrsis.__version__
version = ".".join(release.split(".")[:2])

# -- General ------------------------------------------------------------------------------------

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinxcontrib.katex",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Google-style docstrings; "Shapes:" is the library's own section (the shape contract).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
napoleon_use_rtype = False
napoleon_custom_sections = ["Shapes"]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = False
# nn.Module.forward's generic docstring says nothing about our modules.
autodoc_inherit_docstrings = False
# Core pages need nothing beyond torch and einops. The optional sub-packages are documented only
# when they import (see _optional_api below), so no import is mocked.
autodoc_mock_imports: list[str] = []

pygments_style = "sphinx"
pygments_dark_style = "monokai"

# -- HTML ---------------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"uncertainty-rrsis {release}"
html_static_path: list[str] = []

# -- Math, offline --------------------------------------------------------------------------------
# KaTeX, shipped inside sphinxcontrib-katex (no CDN), renders the formulas to MathML, which browsers
# draw natively with their own fonts: the pages show their equations without a network. The
# extension's default stylesheet link points to a CDN; the MathML output needs no stylesheet, so it
# is pointed at the extension's own local one.
katex_css_path = "katex-math.css"
katex_options = "output: 'mathml', throwOnError: false"
html_theme_options = {"navigation_with_keys": True}

# -- Optional pages and API sections --------------------------------------------------------------

# Pages of the index's first toctree, always present.
CORE_PAGES = ["quickstart", "conventions", "api", "paper_in_code"]
# Guides, in reading order; each enters the "Guides" toctree only when its file exists. Any other
# top-level page not listed here is appended after them, alphabetically.
GUIDE_PAGES = ["wrap_your_decoder", "reference_model", "datasets", "training", "uncertainty", "scenes", "performance",
               "architecture"]

# Sub-packages documented on the API page only when they import cleanly at build time.
OPTIONAL_API = [
    ("uncertainty_rrsis.models", "Reference model"),
    ("uncertainty_rrsis.data", "Datasets"),
    ("uncertainty_rrsis.metrics", "Metrics"),
    ("uncertainty_rrsis.inference", "Inference"),
    ("uncertainty_rrsis.scenes", "Large scenes"),
    ("uncertainty_rrsis.geo", "GeoTIFF input and output"),
    ("uncertainty_rrsis.viz", "Visualisation"),
    ("uncertainty_rrsis.training", "Training utilities"),
]

GUIDES_MARKER = "<!-- guides-toctree -->"
OPTIONAL_API_MARKER = "<!-- optional-api -->"


def _guide_pages(index_source: str) -> list[str]:
    present = {p.stem for p in DOCS.glob("*.md") if not p.name.startswith("_")}
    listed_in_index = {line.strip() for line in index_source.splitlines()}
    ordered = [p for p in GUIDE_PAGES if p in present]
    extra = sorted(present - set(GUIDE_PAGES) - set(CORE_PAGES) - {"index"})
    return [p for p in ordered + extra if p not in listed_in_index]


def _optional_api() -> str:
    sections = []
    for modname, title in OPTIONAL_API:
        try:
            module = importlib.import_module(modname)
        except Exception as err:  # a package being written, or an extra that is not installed
            logger.info(f"[api] skipping {modname}: {type(err).__name__}: {err}")
            continue
        if getattr(module, "__file__", None) is None:  # a folder without __init__.py yet
            logger.info(f"[api] skipping {modname}: namespace package (no __init__.py)")
            continue
        sections.append(
            f"## {title}\n\n"
            f"```{{eval-rst}}\n"
            f".. automodule:: {modname}\n"
            f"   :members:\n"
            f"   :show-inheritance:\n"
            f"```\n"
        )
    return "\n".join(sections)


def _on_source_read(app, docname: str, source: list[str]) -> None:
    text = source[0]
    if docname == root_doc and GUIDES_MARKER in text:
        pages = _guide_pages(text)
        block = ""
        if pages:
            block = "```{toctree}\n:caption: Guides\n:maxdepth: 2\n\n" + "\n".join(pages) + "\n```\n"
        source[0] = text.replace(GUIDES_MARKER, block)
    elif docname == "api" and OPTIONAL_API_MARKER in text:
        source[0] = text.replace(OPTIONAL_API_MARKER, _optional_api())


# -- "The paper in code": source lines found at build time ----------------------------------------


def _enclosing_objects(path: Path) -> list[tuple[int, int, str, bool]]:
    """(first line, last line, qualified name, documented) of every class and function in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, int, str, bool]] = []

    def visit(node: ast.AST, prefix: str, public: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                is_public = public and not child.name.startswith("_")
                documented = is_public and ast.get_docstring(child) is not None
                start = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                found.append((start, child.end_lineno or child.lineno, name, documented))
                visit(child, name + ".", is_public)

    visit(tree, "", True)
    return found


def _find_line(path: Path, pattern: str, obj: str | None) -> tuple[int | None, str]:
    """1-based line of the unique occurrence of ``pattern`` (inside ``obj`` when given)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    lo, hi = 1, len(lines)
    if obj is not None:
        spans = [(a, b) for a, b, name, _ in _enclosing_objects(path) if name == obj]
        if not spans:
            return None, f"no class or function {obj!r} in {path.name}"
        lo, hi = spans[0]
    hits = [i for i in range(lo, hi + 1) if pattern in lines[i - 1]]
    if len(hits) != 1:
        where = f"{path.name}" + (f" ({obj})" if obj else "")
        return None, f"{pattern!r} occurs {len(hits)} times in {where}; it must occur exactly once"
    return hits[0], ""


def _anchor(path: Path, line: int) -> str:
    """The viewcode anchor of the innermost documented object that contains ``line``."""
    best = ""
    best_span = None
    for start, end, name, documented in _enclosing_objects(path):
        if documented and start <= line <= end and (best_span is None or end - start < best_span):
            best, best_span = name, end - start
    return best


def src_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """``{src}`modules/scorer.py::Class.method::code snippet``` -> a link to that source line.

    The path is relative to the package folder; the object part is optional
    (``file.py::snippet``). The snippet must occur exactly once (within the object when given),
    otherwise the build warns, which ``-W`` turns into an error.
    """
    env = inliner.document.settings.env
    parts = [p.strip() for p in text.split("::")]
    if len(parts) == 2:
        rel, obj, pattern = parts[0], None, parts[1]
    elif len(parts) == 3:
        rel, obj, pattern = parts
    else:
        msg = inliner.reporter.warning(f"src role: expected 'file.py[::Object]::snippet', got {text!r}", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    path = PACKAGE / rel
    if not path.is_file():
        msg = inliner.reporter.warning(f"src role: no file {rel!r} in the package", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    env.note_dependency(str(path))
    line, why = _find_line(path, pattern, obj)
    if line is None:
        msg = inliner.reporter.warning(f"src role: {why}", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    module_page = "_modules/uncertainty_rrsis/" + rel[: -len(".py")].removesuffix("/__init__") + ".html"
    anchor = _anchor(path, line)
    depth = env.docname.count("/")
    uri = "../" * depth + module_page + (f"#{anchor}" if anchor else "")
    label = f"{rel}:{line}"
    node = nodes.reference(rawtext, "", refuri=uri, internal=True)
    node += nodes.literal(label, label)
    return [node], []


class PaperCode(LiteralInclude):
    """``literalinclude`` with ``:pyobject:``, file line numbers and lines marked by snippet.

    ``:mark: snippet one ;; snippet two`` highlights the lines that contain each snippet; each
    snippet must occur exactly once in the object, otherwise the build warns.
    """

    option_spec = {**LiteralInclude.option_spec, "mark": directives.unchanged}

    def run(self):
        marks = [m.strip() for m in self.options.pop("mark", "").split(";;") if m.strip()]
        self.options.setdefault("language", "python")
        self.options.setdefault("lineno-match", True)
        self.options.setdefault("dedent", None)
        obj = self.options.get("pyobject")
        if marks and obj:
            _, filename = self.env.relfn2path(self.arguments[0])
            path = Path(filename)
            spans = [(a, b) for a, b, name, _ in _enclosing_objects(path) if name == obj]
            if spans:
                start = spans[0][0]
                rel_lines = []
                for mark in marks:
                    line, why = _find_line(path, mark, obj)
                    if line is None:
                        logger.warning(f"paper-code: {why}", location=(self.env.docname, self.lineno))
                        continue
                    rel_lines.append(line - start + 1)
                if rel_lines:
                    self.options["emphasize-lines"] = ",".join(str(n) for n in sorted(set(rel_lines)))
        return super().run()


def _reread_generated_pages(app, env, added, changed, removed):
    """The index's guide toctree and the API page depend on which files exist: always re-read them."""
    return ["index", "api"]


def setup(app):
    app.connect("source-read", _on_source_read)
    app.connect("env-get-outdated", _reread_generated_pages)
    app.add_role("src", src_role)
    app.add_directive("paper-code", PaperCode)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
