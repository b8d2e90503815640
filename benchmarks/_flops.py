"""FLOP counting for the benchmarks: ``torch.utils.flop_counter.FlopCounterMode`` plus formulas.

Conventions (the same as ``FlopCounterMode``'s built-in formulas):

* one multiply-add = **2 FLOPs**;
* counted: matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``, einsum through them),
  convolutions (forward and backward), attention -- always through the **math** SDPA path
  (``sdpa_kernel(SDPBackend.MATH)``), so attention shows up as its two batched matmuls whatever
  kernel the timed run uses -- and ``grid_sample`` with the formula below;
* not counted: element-wise ops, activations, softmax, normalisation, interpolation, reductions,
  the optimizer update (they are memory-bound; FLOP totals do not describe their cost).

``grid_sample`` formula (registered here, ``FlopCounterMode`` has none): for an output of
``N x C x Ho x Wo`` elements,

* forward, bilinear: each output element reads 4 neighbours and blends them with 4 weights:
  4 multiply-adds -> ``2 * 4 * N*C*Ho*Wo`` FLOPs (nearest: 1 tap, bicubic: 16 taps);
* backward: the gradient w.r.t. the input scatters the same 4 products
  (``2 * 4 * N*C*Ho*Wo``), the gradient w.r.t. the grid needs the x- and y-derivatives of the 4
  weights times the 4 neighbours (``2 * 8 * N*C*Ho*Wo``); each is counted when it is computed
  (``output_mask``).

The computation of the bilinear weights from the grid (a few FLOPs per sampling location, not
per channel) is left out, as FlopCounterMode leaves out element-wise work.

``convolution_backward`` is replaced too: the built-in formula ignores ``groups`` for the weight
gradient, which overcounts a depthwise convolution's backward by its number of groups. Here the
input gradient and the weight gradient each cost exactly what the forward costs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "FLOP_CONVENTION",
    "convolution_backward_flop",
    "count_flops",
    "grid_sampler_backward_flop",
    "grid_sampler_flop",
]

aten = torch.ops.aten

FLOP_CONVENTION = (
    "FLOPs: torch.utils.flop_counter.FlopCounterMode, 2 FLOPs per multiply-add; matmul, conv, attention "
    "(math SDPA path) and grid_sample (bilinear: 4 multiply-adds per output element forward; backward 4 for "
    "grad_input + 8 for grad_grid); convolution backward: the forward's cost per computed gradient (groups "
    "respected); element-wise ops, norms, softmax, interpolation not counted."
)

_TAPS = {0: 4, 1: 1, 2: 16}  # interpolation_mode: bilinear, nearest, bicubic


def _numel(shape: Any) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


def grid_sampler_flop(input_shape, grid_shape, interpolation_mode, *args, out_shape=None, **kwargs) -> int:
    """``aten.grid_sampler_2d``: ``2 * taps * N*C*Ho*Wo`` (taps 4 for bilinear)."""
    n, c = int(input_shape[0]), int(input_shape[1])
    ho, wo = int(grid_shape[1]), int(grid_shape[2])
    return 2 * _TAPS.get(int(interpolation_mode), 4) * n * c * ho * wo


def grid_sampler_backward_flop(
    grad_output_shape, input_shape, grid_shape, interpolation_mode, padding_mode, align_corners,
    output_mask, *args, out_shape=None, **kwargs,
) -> int:
    """``aten.grid_sampler_2d_backward``: ``2 * taps`` (grad_input) + ``2 * 2 * taps`` (grad_grid) per output
    element."""
    taps = _TAPS.get(int(interpolation_mode), 4)
    elements = _numel(grad_output_shape)
    flops = 0
    if output_mask[0]:
        flops += 2 * taps * elements
    if output_mask[1]:
        flops += 2 * 2 * taps * elements
    return flops


def convolution_backward_flop(
    grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed, output_padding, groups,
    output_mask, *args, out_shape=None, **kwargs,
) -> int:
    """``aten.convolution_backward``, grouped convolutions counted right.

    Each of the input gradient and the weight gradient costs what the forward costs:
    ``2 * (elements on the large side) * prod(w_shape[1:])``, where ``w_shape[1]`` is already the
    per-group input width. (FlopCounterMode's built-in formula treats the weight gradient of a grouped
    convolution as dense and overcounts a depthwise convolution by its number of groups -- ConvNeXt's 7x7
    depthwise convolutions would dominate the training FLOPs.)
    """
    big = x_shape if transposed else grad_out_shape
    per = 2 * _numel(big) * _numel(w_shape[1:])
    return per * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _custom_mapping() -> dict[Any, Callable[..., int]]:
    mapping: dict[Any, Callable[..., int]] = {
        aten.grid_sampler_2d: grid_sampler_flop,
        aten.grid_sampler_2d_backward: grid_sampler_backward_flop,
        aten.convolution_backward: convolution_backward_flop,
    }
    # cuDNN's sampler (align_corners=True, bilinear, zeros) has the same cost; take it when it exists.
    if hasattr(aten, "cudnn_grid_sampler"):
        mapping[aten.cudnn_grid_sampler] = lambda x, grid, *a, out_shape=None, **k: grid_sampler_flop(x, grid, 0)
    return mapping


@contextlib.contextmanager
def _counting() -> Iterator[FlopCounterMode]:
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as counter:
        yield counter


def count_flops(fn: Callable[[], Any], *, prefixes: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``fn()`` once under ``FlopCounterMode`` (math SDPA) and return the counts.

    Args:
        fn: the work to count (a forward, or forward + backward).
        prefixes: ``{label: module path}`` whose sub-totals to report, e.g.
            ``{"udlr": "CroBIMU.decoder.refinement"}`` (paths as FlopCounterMode names modules:
            the class name of the root, then attribute names).

    Returns:
        ``{"total": int, "by_op": {op: int}, "by_module": {label: int}}``; a label whose module did
        not run is 0.
    """
    with _counting() as counter:
        fn()
    counts = counter.get_flop_counts()
    total = int(counter.get_total_flops())
    glob = counts.get("Global", {})
    out: dict[str, Any] = {
        "total": total,
        "by_op": {str(op).replace("aten.", ""): int(v) for op, v in glob.items()},
        "by_module": {},
    }
    for label, path in (prefixes or {}).items():
        out["by_module"][label] = int(sum(counts.get(path, {}).values()))
    return out
