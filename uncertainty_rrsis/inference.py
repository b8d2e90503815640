"""Segment new images from sentences with a trained CroBIM-U model.

The model's input pipeline is applied exactly as in training and evaluation (resize to the
model's ``image_size`` ignoring the aspect ratio, ImageNet normalisation, 20-token cut), and every
map is brought back to the image's own size: the mask and the foreground probability from the
final logits, the uncertainty ``U^p`` from the scorer's logits (resized as logits, then the
sigmoid), and UDLR's refinement mask ``M``::

    from uncertainty_rrsis.inference import ReferringSegmenter

    segmenter = ReferringSegmenter.from_pretrained("runs/default/checkpoints/best")
    result = segmenter("harbour.png", "the small white ship at the left end of the pier")
    result.mask           # (H, W) bool at the image's size
    result.uncertainty    # (H, W) float in [0, 1]: where the model expects to be wrong
    result.save("out/harbour")   # out/harbour_mask.png, _uncertainty.png, _panel.png

Images are read strictly (:func:`uncertainty_rrsis.data.read_image`): a truncated or damaged
file, a 16-bit picture or NaN / infinite pixels are errors that name the image. A large JPEG
(at least four times the model's input side in both dimensions) is decoded at a reduced scale
(libjpeg's 1/2, 1/4 or 1/8 DCT scaling, keeping at least twice the input side) and then
resized to the input side exactly as in training; pass ``reduce_large_images=False`` to decode
every file in full.

Axis legend
    b: batch   h, w: the image's own rows / columns   s: the model's input side
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ._ops import resize_logits
from .data import ResizeNormalize, image_to_rgb, read_image, tokenize
from .viz import heat_colormap, render_panel

__all__ = ["ReferringPrediction", "ReferringSegmenter"]

ImageLike = str | Path | Image.Image | np.ndarray

#: Default side of a panel tile: panels of larger images are drawn at this size.
PANEL_TILE = 1024
_HEAT_ROWS = 512  # rows of the uncertainty heat map coloured at a time (bounds the memory)


@dataclass(frozen=True)
class ReferringPrediction:
    """What the model says about one (image, sentence) pair, at the image's own size.

    Attributes:
        sentence: the referring expression.
        image: (h, w, 3) uint8, the picture as decoded, for pictures: (H, W) for an image given in
            memory or decoded in full; smaller for a large JPEG decoded at a reduced scale.
        mask: (H, W) bool, the referred object (final logits > 0, i.e. probability > 0.5).
        probability: (H, W) float32 in [0, 1], the final foreground probability (after UDLR when
            the model has it).
        uncertainty: (H, W) float32 in [0, 1], ``U^p = sigmoid(U)``: where the model expects its
            mask to be wrong; None for a model without the scorer (the Base row).
        refine_mask: (H, W) float32 in [0, 1], UDLR's soft mask ``M`` (where the refinement head
            acted); None without UDLR.
    """

    sentence: str
    image: np.ndarray
    mask: torch.Tensor
    probability: torch.Tensor
    uncertainty: torch.Tensor | None
    refine_mask: torch.Tensor | None

    def panel(self, *, tile_size: int | None = None) -> Image.Image:
        """The picture of :func:`uncertainty_rrsis.viz.render_panel`: image, prediction, ``U^p``, ``M``.

        ``tile_size`` defaults to the image's longer side, at most :data:`PANEL_TILE` (1024) pixels;
        the image and the maps are shrunk to the tile before drawing.
        """
        height, width = self.mask.shape
        side = tile_size or max(128, min(max(height, width), PANEL_TILE))
        scale = min(1.0, side / max(height, width))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))

        def shrink(x: torch.Tensor | None, *, binary: bool = False) -> torch.Tensor | None:
            if x is None or tuple(x.shape) == size:
                return x
            if binary:
                return F.interpolate(x[None, None].float(), size=size, mode="nearest-exact")[0, 0] > 0.5
            return F.interpolate(x[None, None].float(), size=size, mode="bilinear", align_corners=False,
                                 antialias=True)[0, 0]

        picture = self.image
        if picture.shape[:2] != size:
            picture = np.asarray(Image.fromarray(picture).resize((size[1], size[0]), Image.BILINEAR))
        return render_panel(image=picture, sentence=self.sentence, prediction=shrink(self.mask, binary=True),
                            uncertainty_prob=shrink(self.uncertainty), refine_mask=shrink(self.refine_mask),
                            tile_size=side)

    def save(self, prefix: str | Path) -> dict[str, Path]:
        """Write ``<prefix>_mask.png`` (0 / 255), ``<prefix>_uncertainty.png`` (heat map, when there is
        an uncertainty map) and ``<prefix>_panel.png``; returns the paths by kind."""
        prefix = Path(prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        paths = {"mask": prefix.with_name(prefix.name + "_mask.png")}
        Image.fromarray(self.mask.numpy().astype(np.uint8) * 255).save(paths["mask"])
        if self.uncertainty is not None:
            paths["uncertainty"] = prefix.with_name(prefix.name + "_uncertainty.png")
            values = self.uncertainty.numpy()
            heat = np.empty((*values.shape, 3), dtype=np.uint8)
            for row in range(0, values.shape[0], _HEAT_ROWS):  # in bands: the colour map works in float64
                heat[row : row + _HEAT_ROWS] = heat_colormap(values[row : row + _HEAT_ROWS])
            Image.fromarray(heat).save(paths["uncertainty"])
        paths["panel"] = prefix.with_name(prefix.name + "_panel.png")
        self.panel().save(paths["panel"])
        return paths


class ReferringSegmenter:
    """Image + sentence -> :class:`ReferringPrediction`, batched, without gradients.

    Args:
        model: a :class:`~uncertainty_rrsis.models.CroBIMU` (any ablation row); put in eval mode.
        tokenizer: the Hugging Face tokenizer the model was trained with.
        image_size: the model's input side (default: ``model.config.image_size``, 480 for the
            paper preset).
        batch_size: pairs per forward pass.
        device: where the model runs (default: where its parameters are).
        amp: bf16 autocast on CUDA.
        resize_backend: ``"pil"`` (the field's resize, default) or ``"torch"``, as in the datasets.
        reduce_large_images: decode a JPEG file at least four times the input side (both
            dimensions) at a reduced scale, keeping at least twice the input side, before the
            training resize (module docstring). The model's input then differs from that of a full
            decode by a few grey levels at most; images of ordinary size are not affected.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        image_size: int | None = None,
        batch_size: int = 8,
        device: torch.device | str | None = None,
        amp: bool = False,
        resize_backend: str = "pil",
        reduce_large_images: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        config = getattr(model, "config", None)
        self.image_size = int(image_size or getattr(config, "image_size", 480))
        self.max_tokens = int(config.text.max_tokens) if config is not None else 20
        self.batch_size = int(batch_size)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        self.amp = bool(amp)
        self.transform = ResizeNormalize(image_size=self.image_size, backend=resize_backend)
        self.reduce_large_images = bool(reduce_large_images)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        tokenizer: Any | None = None,
        device: torch.device | str | None = None,
        **kwargs: Any,
    ) -> ReferringSegmenter:
        """Load a checkpoint folder written by training or ``CroBIMU.save_pretrained`` (``config.json``,
        ``model.safetensors`` and, unless ``tokenizer`` is given, ``tokenizer/``)."""
        from .models import CroBIMU

        directory = Path(directory)
        if tokenizer is None:
            tokenizer_dir = directory / "tokenizer"
            if not tokenizer_dir.is_dir():
                raise FileNotFoundError(
                    f"ReferringSegmenter.from_pretrained: no tokenizer/ folder in {directory}; training writes one "
                    "next to the weights. Pass tokenizer= (the tokenizer the model was trained with)."
                )
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        model = CroBIMU.from_pretrained(directory, device=device)
        return cls(model, tokenizer, device=device, **kwargs)

    def _image(self, image: ImageLike, index: int) -> tuple[Image.Image, tuple[int, int]]:
        """The RGB picture the model input is made from, and the image's own (H, W)."""
        if isinstance(image, (str, Path)):
            side = 2 * self.image_size
            picture = read_image(Path(image), layout="any image file PIL can read (PNG, JPEG, TIFF, ...)",
                                 min_size=(side, side) if self.reduce_large_images else None)
            width, height = picture.info.get("full_size", picture.size)
            return picture, (height, width)
        if isinstance(image, Image.Image):
            picture = image_to_rgb(image, source=f"image {index}")
            return picture, (picture.height, picture.width)
        if isinstance(image, np.ndarray):
            if image.dtype.kind == "f" and not np.isfinite(image).all():
                raise ValueError(f"image {index} holds NaN or infinite values; give an (H, W, 3) uint8 picture")
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image {index}: an array must be (H, W, 3) uint8; got {image.shape} {image.dtype}")
            return Image.fromarray(image), (image.shape[0], image.shape[1])
        raise TypeError(f"image {index}: expected a path, a PIL image or an (H, W, 3) uint8 array; "
                        f"got {type(image).__name__}")

    @torch.no_grad()
    def __call__(
        self, images: ImageLike | Sequence[ImageLike], sentences: str | Sequence[str]
    ) -> ReferringPrediction | list[ReferringPrediction]:
        """Segment what each sentence refers to.

        One image and one sentence give one prediction; one image and several sentences, or as
        many images as sentences, give a list (pair ``i`` is ``images[i]``, ``sentences[i]``).
        """
        single = isinstance(sentences, str) and not isinstance(images, (list, tuple))
        sentences = [sentences] if isinstance(sentences, str) else list(sentences)
        images = list(images) if isinstance(images, (list, tuple)) else [images] * len(sentences)
        if len(images) != len(sentences):
            raise ValueError(f"got {len(images)} images and {len(sentences)} sentences; give one image for all "
                             "sentences or one image per sentence")
        for i, sentence in enumerate(sentences):
            if not isinstance(sentence, str) or not sentence.strip():
                raise ValueError(f"sentence {i} is empty; a referring expression is needed")
        loaded: dict[int, tuple[Image.Image, tuple[int, int]]] = {}
        for i, image in enumerate(images):  # the same object given for several sentences is read once
            if id(image) not in loaded:
                loaded[id(image)] = self._image(image, i)
        results: list[ReferringPrediction] = []
        for start in range(0, len(sentences), self.batch_size):
            stop = min(start + self.batch_size, len(sentences))
            pil = [loaded[id(images[i])] for i in range(start, stop)]
            results += self._batch(pil, sentences[start:stop])
        return results[0] if single else results

    def _batch(self, images: list[tuple[Image.Image, tuple[int, int]]], sentences: list[str]
               ) -> list[ReferringPrediction]:
        x = torch.stack([self.transform.normalize(self.transform.resize_image(im)) for im, _ in images])
        tokens = [tokenize(self.tokenizer, s, max_tokens=self.max_tokens) for s in sentences]
        ids = torch.stack([t[0] for t in tokens]).to(self.device)
        pad = torch.stack([t[1] for t in tokens]).to(self.device)
        use_amp = self.amp and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = self.model(x.to(self.device), ids, text_padding_mask=pad)
        side = (self.image_size, self.image_size)
        unc = None if out.uncertainty is None else self.model.to_image_size(out.uncertainty.float(), side)
        ref = None if out.refine_mask is None else self.model.to_image_size(out.refine_mask.float(), side)
        results = []
        for b, ((image, size), sentence) in enumerate(zip(images, sentences, strict=True)):
            logits = _at_size(out.logits[b : b + 1], size)  # (h, w)
            mask = logits > 0
            results.append(ReferringPrediction(  # in place: one full-size float map per kind
                sentence=sentence,
                image=np.asarray(image, dtype=np.uint8),
                mask=mask,
                probability=logits.sigmoid_(),
                uncertainty=None if unc is None else _at_size(unc[b : b + 1], size).sigmoid_(),
                refine_mask=None if ref is None else _at_size(ref[b : b + 1], size).clamp_(0, 1),
            ))
        return results


def _at_size(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, 1, s, s) logits -> a new (H, W) float32 CPU tensor (never a view of ``x``)."""
    x = x.float()
    y = resize_logits(x, size)
    if y is x:
        y = y.clone()
    return y[0, 0].cpu()
