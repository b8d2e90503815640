"""Resize-and-normalise transform of the LAVT family.

The image is resized to ``image_size`` ignoring its aspect ratio and normalised with the
ImageNet mean/std; the mask is resized with nearest neighbour. There are no flips: they
would break "left"/"right" in the sentences.

Resize backends:

* ``"pil"`` (default): ``PIL.Image.resize(..., BILINEAR)`` on the 8-bit image. This is
  exactly what LAVT/RMSIN/CroBIM do (``torchvision.transforms.functional.resize`` on a PIL
  image calls PIL). When shrinking (800 -> 480 for RRSIS-D) PIL widens its bilinear
  kernel, which acts as an antialiasing filter; keeping it reproduces the field's inputs.
* ``"torch"``: ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)`` on
  the float image: plain two-tap bilinear, antialias off.

Masks always use PIL ``NEAREST`` (pixel-centre sampling, the same as torch
``"nearest-exact"``), as LAVT does.

Shapes:
    image in: PIL RGB (W x H)        -> (3, S_h, S_w) float32, normalised
    mask in:  (H, W) bool ndarray    -> (S_h, S_w) bool
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ResizeNormalize"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class ResizeNormalize:
    """Resize (no aspect ratio) + ImageNet normalisation for an image/mask pair.

    Args:
        image_size: S (square S x S) or (S_h, S_w). Default 480, the field's setting.
        mean, std: per-channel normalisation of the [0, 1] image.
        backend: ``"pil"`` (LAVT-exact, default) or ``"torch"`` (antialias off); see the
            module docstring.
    """

    def __init__(
        self,
        *,
        image_size: int | Sequence[int] = 480,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        backend: Literal["pil", "torch"] = "pil",
    ) -> None:
        size: tuple[int, ...]
        if isinstance(image_size, int):
            size = (image_size, image_size)
        else:
            size = tuple(int(v) for v in image_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"image_size must be a positive int or (height, width); got {image_size!r}")
        if backend not in ("pil", "torch"):
            raise ValueError(f"backend must be 'pil' or 'torch'; got {backend!r}")
        self.size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.backend = backend

    def resize_image(self, image: Image.Image) -> torch.Tensor:
        """PIL RGB image -> (3, S_h, S_w) float in [0, 1] (not yet normalised)."""
        height, width = self.size
        if self.backend == "pil":
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            arr = np.asarray(image, dtype=np.uint8)
            return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
        arr = np.asarray(image, dtype=np.uint8)
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
        if tuple(x.shape[-2:]) != (height, width):
            x = F.interpolate(
                x[None], size=(height, width), mode="bilinear", align_corners=False, antialias=False
            )[0]
        return x

    def resize_mask(self, mask: np.ndarray) -> torch.Tensor:
        """(H, W) bool -> (S_h, S_w) bool, nearest neighbour."""
        height, width = self.size
        if mask.shape != (height, width):
            img = Image.fromarray(mask.astype(np.uint8) * 255)
            mask = np.asarray(img.resize((width, height), Image.Resampling.NEAREST)) > 127
        return torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) in [0, 1] -> normalised with ``mean``/``std``."""
        return (image - self.mean) / self.std

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.normalize(self.resize_image(image)), self.resize_mask(mask)

    def __repr__(self) -> str:
        return f"ResizeNormalize(image_size={self.size}, backend={self.backend!r})"
