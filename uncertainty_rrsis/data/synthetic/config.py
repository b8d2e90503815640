"""What the synthetic generator is asked for and what it returns: the configuration and one sample.

:class:`SyntheticConfig` fixes every sample (with the split and the index) and is the cache key of
:func:`~uncertainty_rrsis.data.ensure_synthetic`; :data:`GENERATOR_VERSION` is part of both, so a
change to the pictures or sentences gives new seeds and a new cache folder. :class:`SyntheticSample`
is one rendered sample, as :func:`~uncertainty_rrsis.data.render_sample` returns it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["GENERATOR_VERSION", "SyntheticConfig", "SyntheticSample"]

#: Bumped whenever the pictures or sentences change; part of the cache key.
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. Every field is part of the cache key of :func:`ensure_synthetic`.

    Attributes:
        seed: base seed; sample ``(split, i)`` depends only on ``(seed, split, i)``.
        image_size: side of the square images in pixels (64-128 is the intended range).
        n_train, n_val, n_test: samples per split.
        dense_fraction: share of compact-target scenes with 5-8 same-category distractors.
        max_clutter: at most this many objects of other categories per scene.
        noise: std of the Gaussian pixel noise added to the picture (0-255 scale).
        min_target_pixels: smallest visible target area accepted.
        object_scale: multiplies the size of every compact object (buildings, vehicles,
            tanks, ships, sports fields); above 1 makes the task easier at low resolution.
    """

    seed: int = 0
    image_size: int = 96
    n_train: int = 4000
    n_val: int = 500
    n_test: int = 1000
    dense_fraction: float = 0.15
    max_clutter: int = 3
    noise: float = 5.0
    min_target_pixels: int = 8
    object_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32 pixels; got {self.image_size}")
        if min(self.n_train, self.n_val, self.n_test) < 0:
            raise ValueError("split sizes must be >= 0")
        if not 0.5 <= self.object_scale <= 2.0:
            raise ValueError(f"object_scale must be in [0.5, 2]; got {self.object_scale}")
        if not 0.0 <= self.dense_fraction <= 1.0:
            raise ValueError(f"dense_fraction must be in [0, 1]; got {self.dense_fraction}")

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "generator_version": GENERATOR_VERSION}

    def fingerprint(self) -> str:
        """12 hex digits identifying this configuration and generator version."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


@dataclass
class SyntheticSample:
    """One rendered sample.

    Attributes:
        image: (S, S, 3) uint8 picture.
        mask: (S, S) bool, the target's visible pixels.
        sentence: the referring expression.
        query: what the sentence means (see :func:`resolve`).
        objects: every object with its ``id``, ``category``, ``colour``, measured ``area``,
            centroid ``cx``/``cy`` (fractions of the image) and ``on_road``.
        target: id of the referred object (``objects[target - 1]``).
        tags: per-sample tags (the package docstring lists them).
    """

    image: np.ndarray
    mask: np.ndarray
    sentence: str
    query: dict[str, Any]
    objects: list[dict[str, Any]]
    target: int
    tags: dict[str, Any] = field(default_factory=dict)
