"""Private helpers shared by the segmentation and the uncertainty-quality metrics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _groups(tags: Mapping[str, Any]) -> Iterable[str]:
    """The breakdown groups of one sample: ``"<key>=<value>"`` for every str, int or bool tag
    (bools written ``true`` / ``false``); other values are skipped."""
    for key, value in tags.items():
        if isinstance(value, bool):
            yield f"{key}={str(value).lower()}"
        elif isinstance(value, (str, int)):
            yield f"{key}={value}"
