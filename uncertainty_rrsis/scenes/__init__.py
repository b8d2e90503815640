"""Segment scenes larger than the model's input: coarse to fine.

A referring expression speaks about the whole scene ("the leftmost ship"), so cutting the scene
into tiles and segmenting each on its own is wrong: every tile would find *its* leftmost ship.
:class:`SceneSegmenter` keeps the scene-level reading and adds detail:

1. **Whole-scene pass.** The scene is resized to the model's input side exactly as in training
   (this is the single-pass prediction of :class:`~uncertainty_rrsis.inference.ReferringSegmenter`)
   and gives logits ``L_c`` and the uncertainty ``U_c``.
2. **Region.** The referent's pixels ``L_c > 0`` together with the uncertain pixels connected to
   them that still give them a chance (``U^p_c > uncertainty_threshold`` and foreground
   probability ``> min_probability``): where the whole-scene pass is unsure of the referent's
   extent, the region widens. It then grows by ``margin`` native pixels: the region ``D``, whose
   connected parts are the candidate objects.
3. **Window pass.** Square windows of ``window_size`` native pixels (default: ``1 / zoom`` of the
   scene's longer side, ``zoom`` = 2, and never less than the model's input side; set
   ``window_size`` to the input side for native resolution) on a grid with ``overlap`` (default
   0.5); the windows that touch ``D`` are resized to the input side and segmented with the same
   sentence, in batches of ``window_batch``. Their logits (and uncertainty logits) are blended with
   a 2-D Hann weight ``w(y, x) = sin^2(pi (y + 0.5) / h) sin^2(pi (x + 0.5) / w)`` normalised by
   the sum of the weights: exactly one window's value at the scene border, a partition of unity
   inside it at 50 % overlap.
4. **Combination** (``combine``). Each window sees only a crop, and answers the sentence *about the
   crop* ("the leftmost ship" of the crop). ``"components"`` (default) lets the windows redraw a
   candidate object only where they agree with the whole-scene pass about it: inside each connected
   part of ``D`` the windows' logits replace the whole-scene logits when the IoU of the two masks
   there is at least ``agreement`` (0.3), and the whole-scene logits stay otherwise; so the windows
   sharpen the outline of the object the whole scene picked, and can neither add nor drop an
   object. ``"gate"`` takes the windows' logits everywhere inside ``D``; ``"gate_mean"`` averages
   windows and whole scene (in logit space) inside ``D``; ``"mean"`` averages them wherever windows
   ran; ``"windows"`` keeps the windows' logits wherever they ran (tiling inside the region).

Everything outside the windows' reach is the whole-scene pass, and a scene no larger than one
window in both dimensions gets the single-pass prediction unchanged.

Two ways out. :meth:`SceneSegmenter.__call__` returns a
:class:`~uncertainty_rrsis.inference.ReferringPrediction` with the scene's maps in memory (besides
them and the picture, the blending keeps one window's height of rows across the region).
:meth:`SceneSegmenter.segment_file` reads a raster by windows and writes the mask, ``U^p`` and the
panel band by band (:mod:`.files`), returning a :class:`SceneResult` with the answer's figures: no
scene-sized map is ever held, so a scene larger than memory works.

``benchmarks/large_scenes.py`` measures the modes and window sizes against the single pass, and
``benchmarks/large_rasters.py`` the time and memory of a large GeoTIFF; the docs page "Segmenting
real scenes" has the tables and why the default is what it is.

Modules: :mod:`.grid` (window offsets, the Hann weight, connected parts, the whole-scene logits
at native resolution one band at a time), :mod:`.window_pass` (the windows, blended band by band
onto a canvas), :mod:`.segmenter` (:class:`SceneSegmenter`: the region, the plan, the scene in
memory), :mod:`.files` (a raster file in, GeoTIFFs out).

Axis legend
    s: the model's input side   H, W: the scene's rows / columns   h, w: a window's
"""

from .files import SceneResult
from .grid import connected_components, hann_window, window_starts
from .segmenter import COMBINE_MODES, SceneSegmenter

__all__ = ["COMBINE_MODES", "SceneResult", "SceneSegmenter", "connected_components", "hann_window", "window_starts"]
