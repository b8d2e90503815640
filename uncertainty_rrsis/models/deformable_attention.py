"""Multi-scale deformable attention in pure PyTorch (``F.grid_sample``), no compiled op.

Each query predicts, per head, level and point, a sampling offset (in pixels of that level)
around its reference point and an attention weight (softmax over levels and points). The
projected value map of every level is sampled bilinearly at those locations (zeros outside
the map, ``align_corners=False``), the samples are summed with the weights, and the heads are
merged by an output projection.

The sampling and the weighting run in float32 (float64 for float64 inputs) even under
``torch.autocast``: sampling locations in bfloat16 would be off by up to a pixel on a 64-px
map. Only the value and output projections follow autocast.

Axis legend
    b: batch   q: queries   n: value tokens (sum of y * x over levels)   d: width (``dim``)
    h: attention heads   c: per-head width (d / h)   l: levels   p: sampling points per level
    y, x: rows / columns of one level   xy: a normalised (x, y) coordinate pair
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .._contracts import check_channels, check_rank, check_same_batch, checks_enabled

__all__ = ["MultiScaleDeformableAttention"]


class MultiScaleDeformableAttention(nn.Module):
    """Multi-scale deformable attention (Deformable DETR), sampling with ``F.grid_sample``.

    The ``value`` tokens are the flattened levels (row-major, ``(y x)``) concatenated in the
    order of ``spatial_shapes``. A reference point is a normalised (x, y) location in
    [0, 1] x [0, 1] (pixel centre ``(i + 0.5) / size``), the same at every level (the levels
    cover the same unpadded image). Offsets are in pixels of the sampled level.

    Initialisation follows Deformable DETR: offset weights zero and biases pointing each head
    in its own direction, ``k`` pixels for point ``k`` (1-based); attention weights zero
    (uniform at first); Xavier value and output projections.

    Args:
        dim: width ``D``; must be divisible by ``num_heads``.
        num_heads: attention heads ``h``.
        num_levels: feature levels ``l``.
        num_points: sampling points per head and level ``p``.
        device, dtype: factory arguments.

    Attributes:
        dim, num_heads, num_levels, num_points, head_dim (int).

    Shapes:
        - query: (B, Q, D)
        - reference_points: (B, Q, 2) or (1, Q, 2), normalised (x, y)
        - value: (B, N, D) with ``N = sum(H_l * W_l)``
        - spatial_shapes: ``num_levels`` pairs of Python ints ``(H_l, W_l)``
        - output: (B, Q, D)
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 8,
        num_levels: int = 3,
        num_points: int = 4,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.check_inputs = True  # False when a composite checked the inputs (trust_inputs)
        if dim % num_heads != 0:
            raise ValueError(
                f"MultiScaleDeformableAttention: dim={dim} must be divisible by num_heads={num_heads}; "
                f"choose num_heads among the divisors of {dim}."
            )
        if num_levels < 1 or num_points < 1:
            raise ValueError(
                f"MultiScaleDeformableAttention: num_levels and num_points must be >= 1; "
                f"got num_levels={num_levels}, num_points={num_points}."
            )
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.dim = int(dim)
        self.num_heads = int(num_heads)
        self.num_levels = int(num_levels)
        self.num_points = int(num_points)
        self.head_dim = self.dim // self.num_heads
        samples = self.num_heads * self.num_levels * self.num_points
        self.sampling_offsets = nn.Linear(self.dim, samples * 2, **factory)
        self.attention_weights = nn.Linear(self.dim, samples, **factory)
        self.value_proj = nn.Linear(self.dim, self.dim, **factory)
        self.output_proj = nn.Linear(self.dim, self.dim, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR initialisation (see the class docstring)."""
        nn.init.zeros_(self.sampling_offsets.weight)
        with torch.no_grad():
            angles = torch.arange(self.num_heads, dtype=torch.float64) * (2.0 * math.pi / self.num_heads)
            directions = torch.stack((angles.cos(), angles.sin()), dim=-1)  # (h, xy)
            # Put each direction on the unit square, so the first point lands on a neighbour pixel.
            directions = directions / directions.abs().amax(dim=-1, keepdim=True)
            steps = torch.arange(1, self.num_points + 1, dtype=torch.float64)  # (p,)
            bias = directions[:, None, None, :] * steps[None, None, :, None]  # (h, 1, p, xy)
            bias = bias.expand(self.num_heads, self.num_levels, self.num_points, 2)
            self.sampling_offsets.bias.copy_(rearrange(bias, "h l p xy -> (h l p xy)"))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def _check(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
    ) -> None:
        owner = type(self).__name__
        check_rank(owner, "query", query, "(B, Q, D)")
        check_rank(owner, "value", value, "(B, N, D)")
        check_rank(owner, "reference_points", reference_points, "(B, Q, 2)")
        check_channels(owner, "query", query, self.dim, dim=2, layout="(B, Q, D)")
        check_channels(owner, "value", value, self.dim, dim=2, layout="(B, N, D)")
        check_channels(owner, "reference_points", reference_points, 2, dim=2, layout="(B, Q, 2)")
        check_same_batch(owner, [("query", query), ("value", value)])
        if reference_points.shape[0] not in (1, query.shape[0]) or reference_points.shape[1] != query.shape[1]:
            raise ValueError(
                f"{owner}: `reference_points` must have shape (B, Q, 2) or (1, Q, 2) = "
                f"({query.shape[0]} or 1, {query.shape[1]}, 2) to match `query`; "
                f"got {tuple(reference_points.shape)}."
            )
        if len(spatial_shapes) != self.num_levels:
            raise ValueError(
                f"{owner}: `spatial_shapes` must list {self.num_levels} (H, W) pairs, one per level; "
                f"got {len(spatial_shapes)}."
            )
        tokens = sum(int(h) * int(w) for h, w in spatial_shapes)
        if tokens != value.shape[1]:
            raise ValueError(
                f"{owner}: `value` has {value.shape[1]} tokens but `spatial_shapes` {list(spatial_shapes)} "
                f"sum to {tokens}. Concatenate the flattened levels in the order of `spatial_shapes`."
            )

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
    ) -> torch.Tensor:
        """Attend from ``query`` (B, Q, D) to the levels in ``value`` (B, N, D); returns (B, Q, D)."""
        if checks_enabled(self):
            self._check(query, reference_points, value, spatial_shapes)
        value = self.value_proj(value)  # follows autocast
        out_dtype = value.dtype
        compute = torch.float64 if query.dtype == torch.float64 else torch.float32
        # autocast off for the sampling; the meta device (shape-only runs) has no autocast to turn off
        meta = query.device.type == "meta"
        with contextlib.nullcontext() if meta else torch.autocast(device_type=query.device.type, enabled=False):
            q = query.to(compute)
            offsets = F.linear(
                q, self.sampling_offsets.weight.to(compute), self.sampling_offsets.bias.to(compute)
            )
            logits = F.linear(
                q, self.attention_weights.weight.to(compute), self.attention_weights.bias.to(compute)
            )
            offsets = rearrange(
                offsets, "b q (h l p xy) -> b q h l p xy",
                h=self.num_heads, l=self.num_levels, p=self.num_points, xy=2,
            )
            weights = rearrange(logits, "b q (h lp) -> b q h lp", h=self.num_heads).softmax(dim=-1)
            weights = rearrange(weights, "b q h (l p) -> (b h) q l p", l=self.num_levels)
            ref = reference_points.to(compute)
            ref_x = rearrange(ref[..., 0], "b q -> b q 1 1")
            ref_y = rearrange(ref[..., 1], "b q -> b q 1 1")
            sizes = [int(h) * int(w) for h, w in spatial_shapes]
            levels = value.to(compute).split(sizes, dim=1)
            out = None
            for lvl, (height, width) in enumerate(spatial_shapes):
                v = rearrange(
                    levels[lvl], "b (y x) (h c) -> (b h) c y x", y=height, x=width, h=self.num_heads
                )
                loc_x = ref_x + offsets[:, :, :, lvl, :, 0] / width  # (b, q, h, p), in [0, 1] inside
                loc_y = ref_y + offsets[:, :, :, lvl, :, 1] / height
                grid = torch.stack((2.0 * loc_x - 1.0, 2.0 * loc_y - 1.0), dim=-1)
                grid = rearrange(grid, "b q h p xy -> (b h) q p xy")
                sampled = F.grid_sample(
                    v, grid, mode="bilinear", padding_mode="zeros", align_corners=False
                )  # ((b h), c, q, p)
                term = torch.einsum("ncqp,nqp->ncq", sampled, weights[:, :, lvl])
                out = term if out is None else out + term
            assert out is not None
            out = rearrange(out, "(b h) c q -> b q (h c)", h=self.num_heads).to(out_dtype)
        return self.output_proj(out)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, num_levels={self.num_levels}, "
            f"num_points={self.num_points}"
        )
