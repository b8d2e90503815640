"""The shared blur and resize helpers of ``uncertainty_rrsis._ops``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from uncertainty_rrsis._ops import gaussian_blur, gaussian_taps, resize_logits


def conv_blur(x: torch.Tensor, taps) -> torch.Tensor:
    """Reference: the same separable blur as two grouped convolutions on the replicate-padded map."""
    k, c = len(taps), x.shape[1]
    kernel = torch.tensor(taps, dtype=x.dtype)
    x = F.pad(x, (k // 2,) * 4, mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, kernel.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kernel_size", [3, 5, 7])
@pytest.mark.parametrize("shape", [(2, 1, 9, 7), (1, 3, 1, 1), (1, 2, 2, 5)])
def test_blur_equals_grouped_convolution(kernel_size, shape):
    x = torch.randn(*shape, dtype=torch.float64)
    taps = gaussian_taps(kernel_size)
    assert torch.allclose(gaussian_blur(x, taps), conv_blur(x, taps), atol=1e-12, rtol=0)


def test_blur_keeps_constants_and_identity_kernel():
    ones = torch.ones(2, 1, 5, 6)
    assert torch.allclose(gaussian_blur(ones, gaussian_taps(5)), ones, atol=1e-6)
    x = torch.randn(1, 1, 4, 4)
    assert gaussian_blur(x, gaussian_taps(1)) is x


def test_blur_taps_are_not_rounded_to_bfloat16():
    x = torch.rand(1, 1, 16, 16)
    exact = gaussian_blur(x.double(), gaussian_taps(3))
    in_bf16 = gaussian_blur(x.bfloat16(), gaussian_taps(3)).double()
    # only rounding of the inputs and the result remains (bf16 has 8 bits of mantissa)
    assert (in_bf16 - exact).abs().max() < 2e-2
    assert in_bf16.dtype == torch.float64 and gaussian_blur(x.bfloat16(), gaussian_taps(3)).dtype == torch.bfloat16


def test_blur_builds_no_tensor_from_host_data():
    """A kernel made with ``torch.tensor(..., device=cuda)`` on every call is a blocking host-to-device
    copy that synchronises the stream; the blur must not create tensors from Python data."""
    x = torch.randn(2, 1, 8, 8)
    with _Ops() as ops:
        gaussian_blur(x, gaussian_taps(3))
    assert "lift_fresh" not in ops.names and "_to_copy" not in ops.names and "copy_" not in ops.names, ops.names


def test_blur_gradient_matches_reference():
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    taps = gaussian_taps(3)
    grad = torch.randn(1, 2, 6, 5, dtype=torch.float64)
    (g1,) = torch.autograd.grad(gaussian_blur(x, taps), x, grad)
    (g2,) = torch.autograd.grad(conv_blur(x, taps), x, grad)
    assert torch.allclose(g1, g2, atol=1e-12)


def test_resize_logits_returns_input_at_same_size_and_resizes_otherwise():
    x = torch.randn(1, 1, 4, 4)
    assert resize_logits(x, (4, 4)) is x
    up = resize_logits(x, (8, 6))
    assert up.shape == (1, 1, 8, 6)
    torch.testing.assert_close(up, F.interpolate(x, size=(8, 6), mode="bilinear", align_corners=False))
    # bilinear, align_corners=False: doubling the height puts output row 1 a quarter of the way
    # from input row 0 to input row 1 (pixel centres at 0.75 and 0.25 / 1.25)
    column = resize_logits(torch.tensor([[[[0.0], [4.0]]]]), (4, 1))
    assert column.flatten().tolist() == [0.0, 1.0, 3.0, 4.0]
