"""How band values become the model's 0-255 (:class:`Stretch`), and the command-line forms of bands
and windows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Stretch", "parse_bands", "parse_window"]


@dataclass(frozen=True)
class Stretch:
    """How each band's values become the 0-255 of the model's picture (module docstring).

    Attributes:
        kind: ``"auto"`` (``none`` for 8-bit data, else ``percentile``), ``"none"``,
            ``"percentile"`` or ``"minmax"``.
        low, high: the percentiles of ``percentile`` (default 2 and 98).
        ranges: ``minmax``: one ``(lo, hi)`` for every band, or one per selected band.

    :meth:`parse` reads the command-line form: ``auto``, ``none``, ``percentile`` (2-98),
    ``percentile:1,99``, ``minmax:0,3000`` or ``minmax:0,3000/0,2800/0,2500`` (one range per band,
    in the order of the selected bands).
    """

    kind: str = "auto"
    low: float = 2.0
    high: float = 98.0
    ranges: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "none", "percentile", "minmax"):
            raise ValueError(f"stretch kind must be auto, none, percentile or minmax; got {self.kind!r}")
        if self.kind == "percentile" and not 0.0 <= self.low < self.high <= 100.0:
            raise ValueError(f"percentile stretch needs 0 <= low < high <= 100; got {self.low:g}, {self.high:g}")
        if self.kind == "minmax":
            if not self.ranges:
                raise ValueError("minmax stretch needs ranges: (lo, hi) for every band, or one per band")
            for lo, hi in self.ranges:
                if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
                    raise ValueError(f"minmax stretch range ({lo:g}, {hi:g}) must be finite with lo < hi")

    @classmethod
    def parse(cls, text: str | Stretch | None) -> Stretch:
        """A :class:`Stretch` from its command-line form (class docstring); None gives ``auto``."""
        if text is None:
            return cls()
        if isinstance(text, Stretch):
            return text
        spec = str(text).strip().lower()
        kind, _, args = spec.partition(":")
        try:
            if kind in ("auto", "none") and not args:
                return cls(kind)
            if kind == "percentile":
                if not args:
                    return cls("percentile")
                low, high = (float(v) for v in args.split(","))
                return cls("percentile", low=low, high=high)
            if kind == "minmax" and args:
                ranges = []
                for part in args.split("/"):
                    lo, hi = (float(v) for v in part.split(","))
                    ranges.append((lo, hi))
                return cls("minmax", ranges=tuple(ranges))
        except ValueError as err:
            if "stretch" in str(err):
                raise
        raise ValueError(
            f"cannot read the stretch {text!r}: use auto, none, percentile, percentile:LOW,HIGH (e.g. 2,98), "
            "minmax:LO,HI (every band) or minmax:LO1,HI1/LO2,HI2/LO3,HI3 (one range per selected band)"
        )

    def describe(self) -> str:
        """The command-line form."""
        if self.kind == "percentile":
            return f"percentile:{self.low:g},{self.high:g}"
        if self.kind == "minmax":
            return "minmax:" + "/".join(f"{lo:g},{hi:g}" for lo, hi in self.ranges)
        return self.kind


def parse_bands(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"3,2,1"`` (or a sequence) -> ``(3, 2, 1)``: one or three 1-based band numbers."""
    if text is None:
        return None
    try:
        bands = tuple(int(v) for v in (text.split(",") if isinstance(text, str) else text))
    except (TypeError, ValueError):
        raise ValueError(f"bands must be one or three band numbers such as 3,2,1; got {text!r}") from None
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise ValueError(f"bands must be one or three band numbers (1-based, as in GDAL) such as 3,2,1; got {text!r}")
    return bands


def parse_window(text: str | Sequence[int] | None) -> tuple[int, int, int, int] | None:
    """``"col_off,row_off,width,height"`` (or a sequence) -> a 4-tuple of ints (GDAL's ``-srcwin``)."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in (text.split(",") if isinstance(text, str) else text))
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or values[0] < 0 or values[1] < 0 or values[2] < 1 or values[3] < 1:
        raise ValueError(f"a window is col_off,row_off,width,height in pixels (offsets >= 0, sizes >= 1); got {text!r}")
    return values


