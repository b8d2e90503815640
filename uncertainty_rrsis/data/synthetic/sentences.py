"""The sentence grammar of the synthetic benchmark: a query, worded as a referring expression.

:func:`describe_query` picks one of a few phrasings per query kind with the generator's random
stream (the phrase tables below), so a sample's sentence is as deterministic as its picture.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["describe_query"]

_REGION_WORDS = {
    "upper left": ("upper left", "top left"),
    "upper right": ("upper right", "top right"),
    "lower left": ("lower left", "bottom left"),
    "lower right": ("lower right", "bottom right"),
}
_EXTREME_PHRASE = {
    "leftmost": "furthest to the left",
    "rightmost": "furthest to the right",
    "topmost": "closest to the top",
    "bottommost": "closest to the bottom",
}


def describe_query(query: dict[str, Any], kind: str, *, rng: np.random.Generator) -> str:
    """The sentence that words ``query`` (see :func:`resolve`) for its query ``kind``.

    ``kind`` is one of "category" ("the storage tank"), "colour" ("the red building", "the
    building with the red roof"), "region" ("the ship in the upper left"), "colour_region" ("the
    white vehicle at the bottom right"), "position" ("the leftmost ship", "the road closest to the
    bottom"), "size" ("the largest building") and "on_road" ("the vehicle on the road"); ``query``
    holds what that kind needs (``colour``, ``region``, ``extreme``). ``rng`` chooses among the
    phrasings, so the same query, kind and random stream give the same sentence.
    """
    cat = query["category"]
    col = query.get("colour")
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    if kind == "category":
        return pick([f"the {cat}", f"the {cat} in the image"])
    if kind == "colour":
        options = [f"the {col} {cat}"]
        if cat == "building":
            options.append(f"the building with the {col} roof")
        return pick(options)
    if kind in ("region", "colour_region"):
        where = pick(_REGION_WORDS[query["region"]])
        noun = f"{col} {cat}" if kind == "colour_region" else cat
        return pick([f"the {noun} in the {where}", f"the {noun} at the {where}"])
    if kind == "position":
        ext = query["extreme"]
        return pick([f"the {ext} {cat}", f"the {cat} {_EXTREME_PHRASE[ext]}"])
    if kind == "size":
        if query["extreme"] == "largest":
            return pick([f"the largest {cat}", f"the biggest {cat}"])
        return f"the smallest {cat}"
    return pick([f"the {cat} on the road", f"the {cat} driving on the road"])
