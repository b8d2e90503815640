"""What a query means: the objects a query may refer to, by the generator's own rules.

A query is a dict: ``category`` (required), optional ``colour``, ``region`` (a quadrant: "upper
left", "upper right", "lower left", "lower right"), ``on_road`` (True) and ``extreme`` ("leftmost",
"rightmost", "topmost", "bottommost", "largest", "smallest"). :func:`resolve` lists the visible
objects that fit it, :func:`regions_of` the quadrants an object may be said to lie in. Objects are
the dicts of ``SyntheticSample.objects``: centroids ``cx``, ``cy`` are fractions of the image side,
``area`` is in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["regions_of", "resolve"]

_REGIONS = ("upper left", "upper right", "lower left", "lower right")
_EXTREMES_POS = ("leftmost", "rightmost", "topmost", "bottommost")
_REGION_MARGIN = 0.06  # centroids this close to a midline belong to both halves
_POSITION_MARGIN = 0.10  # fraction of the image between the extreme and the runner-up
_SIZE_RATIO = 1.5


def regions_of(obj: dict[str, Any]) -> set[str]:
    """The quadrants ("upper left", ...) an object's centroid may be said to lie in.

    One quadrant, or two or four when the centroid lies within 0.06 of the image side of a
    midline (it then counts for both halves). A region query picks its target only when the
    target lies in that one quadrant alone (``regions_of(target) == {query["region"]}``).
    """
    xs = (
        {"left"}
        if obj["cx"] < 0.5 - _REGION_MARGIN
        else {"right"}
        if obj["cx"] > 0.5 + _REGION_MARGIN
        else {"left", "right"}
    )
    ys = (
        {"upper"}
        if obj["cy"] < 0.5 - _REGION_MARGIN
        else {"lower"}
        if obj["cy"] > 0.5 + _REGION_MARGIN
        else {"upper", "lower"}
    )
    return {f"{y} {x}" for y in ys for x in xs}


def _extreme_key(extreme: str) -> tuple[Callable[[dict[str, Any]], float], float]:
    """(score where larger = more extreme, required margin)."""
    keys: dict[str, tuple[Callable[[dict[str, Any]], float], float]] = {
        "leftmost": (lambda o: -o["cx"], _POSITION_MARGIN),
        "rightmost": (lambda o: o["cx"], _POSITION_MARGIN),
        "topmost": (lambda o: -o["cy"], _POSITION_MARGIN),
        "bottommost": (lambda o: o["cy"], _POSITION_MARGIN),
        "largest": (lambda o: math.log(max(o["area"], 1)), math.log(_SIZE_RATIO)),
        "smallest": (lambda o: -math.log(max(o["area"], 1)), math.log(_SIZE_RATIO)),
    }
    return keys[extreme]


def resolve(query: dict[str, Any], objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """All visible objects that ``query`` may refer to (exactly one for a valid sample).

    ``query`` keys: ``category`` (required), optional ``colour``, ``region`` (one of
    "upper left", ...), ``on_road`` (True) and ``extreme`` ("leftmost", "rightmost",
    "topmost", "bottommost", "largest", "smallest"). An object whose centroid is near a
    midline counts for both halves; a superlative whose runner-up is within the margin
    (0.1 of the image for positions, area ratio 1.5 for sizes) returns both candidates.
    """
    cands = [o for o in objects if o["category"] == query["category"] and o["area"] > 0]
    if query.get("colour") is not None:
        cands = [o for o in cands if o["colour"] == query["colour"]]
    if query.get("on_road"):
        cands = [o for o in cands if o["on_road"]]
    if query.get("region") is not None:
        cands = [o for o in cands if query["region"] in regions_of(o)]
    if query.get("extreme") is not None and len(cands) > 1:
        score, margin = _extreme_key(query["extreme"])
        ranked = sorted(cands, key=score, reverse=True)
        if score(ranked[0]) - score(ranked[1]) < margin:
            return ranked[:2]
        return ranked[:1]
    return cands


def _is_unique(query: dict[str, Any], objects: list[dict[str, Any]], target: int) -> bool:
    """Whether ``query`` picks object ``target`` (an id) alone, off every midline for a region."""
    found = resolve(query, objects)
    if len(found) != 1 or found[0]["id"] != target:
        return False
    if query.get("region") is not None:  # the target itself must not sit on a midline
        return regions_of(found[0]) == {query["region"]}
    return True
