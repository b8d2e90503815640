"""The synthetic referring remote-sensing benchmark (runs anywhere, generated in seconds).

Each sample is an overhead scene (textured field / water / urban / soil ground) with
objects of seven categories drawn from above: buildings (rectangles with roof colours),
vehicles (tiny rectangles), storage tanks (circles), ships (pointed oriented hulls),
sports fields (courts with white lines), roads and rivers (thin, long, curved). The
sentence refers to exactly one object through a *query*:

==================  ==========================================  =============================
query kind          example                                     what tells the target apart
==================  ==========================================  =============================
``category``        "the storage tank"                          only object of its category
``colour``          "the red building"                          colour among same category
``region``          "the ship in the upper left"                quadrant
``colour_region``   "the white vehicle in the lower right"      colour and quadrant
``position``        "the leftmost storage tank"                 extreme centroid (margin)
``size``            "the largest building"                      extreme area (ratio >= 1.5)
``on_road``         "the vehicle on the road"                   lies on a road
==================  ==========================================  =============================

Same-category distractors are placed so that the text is needed; the generator then
re-checks every query against the rendered label map (:func:`resolve`) and re-draws the
scene until exactly one visible object matches. Hard cases come on purpose: dense
distractors (``dense_fraction``), thin targets (roads, rivers), tiny targets (vehicles)
and a large scale range (size queries).

Everything is deterministic from ``(seed, split, index)`` (NumPy ``SeedSequence``), so
the same configuration writes byte-identical files. On disk the benchmark uses the
RISBench layout (read it with :class:`~uncertainty_rrsis.data.RISBench`)::

    <root>/img_rgb/<split>_<index>.png      RGB, image_size x image_size
    <root>/mask/<split>_<index>.png         "L" PNG, 0 / 255
    <root>/output_phrase_<split>.txt        "<split>_<index>.png <sentence>"
    <root>/tags_<split>.jsonl               {"name": ..., "tags": {...}} per sample
    <root>/synthetic.json                   the configuration and generator version

Tags per sample: ``category``, ``query`` (kind), ``distractors`` (same-category
objects besides the target), ``objects`` (all objects), ``thin``, ``tiny`` (< 1 % of the
image), ``dense`` (>= 4 distractors), ``size`` (tiny/small/medium/large),
``background``.

Submodules (everything public is importable from here):

* ``config``: :class:`SyntheticConfig`, :class:`SyntheticSample` and :data:`GENERATOR_VERSION`;
* ``query``: what a query means, :func:`resolve` and :func:`regions_of`;
* ``scene``: the scene model (placing, measuring) and :data:`CATEGORIES`;
* ``sampling``: one sample from its seed, :func:`render_sample`;
* ``sentences``: the sentence grammar, :func:`describe_query`;
* ``rendering``: textures, shapes and the drawing of a scene (:data:`BACKGROUNDS`, :func:`texture`);
* ``cache``: writing to disk, :func:`generate_synthetic`, :func:`ensure_synthetic` and
  :func:`clean_stale_temporaries`;
* ``reader``: :class:`SyntheticBenchmark`, the reader registered as ``synthetic`` (generated on
  first use).
"""

from .cache import clean_stale_temporaries, ensure_synthetic, generate_synthetic
from .config import GENERATOR_VERSION, SyntheticConfig, SyntheticSample
from .query import regions_of, resolve
from .reader import SyntheticBenchmark
from .rendering import BACKGROUNDS, texture
from .sampling import render_sample
from .scene import CATEGORIES
from .sentences import describe_query

__all__ = [
    "GENERATOR_VERSION",
    "CATEGORIES",
    "SyntheticConfig",
    "SyntheticSample",
    "render_sample",
    "resolve",
    "regions_of",
    "describe_query",
    "BACKGROUNDS",
    "texture",
    "generate_synthetic",
    "ensure_synthetic",
    "clean_stale_temporaries",
    "SyntheticBenchmark",
]
