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
file, a 16-bit picture or NaN / infinite pixels are errors that name the image. GeoTIFFs, and any
file when ``bands``, ``window`` or ``stretch`` is given, are read with rasterio
(:func:`uncertainty_rrsis.geo.read_raster`, extra ``geo``): band selection, a stated stretch of
16-bit or float data to 8 bits, nodata; their predictions are saved as GeoTIFFs on the input's
grid. For scenes much larger than the model's input, see
:class:`uncertainty_rrsis.scenes.SceneSegmenter` (coarse to fine). A large JPEG
(at least four times the model's input side in both dimensions) is decoded at a reduced scale
(libjpeg's 1/2, 1/4 or 1/8 DCT scaling, keeping at least twice the input side) and then
resized to the input side exactly as in training; pass ``reduce_large_images=False`` to decode
every file in full.

Axis legend
    b: batch   h, w: the image's own rows / columns   s: the model's input side
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, cast

import numpy as np
import torch
from PIL import Image

from ._ops import resize_logits
from .data import DEFAULT_MAX_PIXELS, ResizeNormalize, image_to_rgb, read_image, tokenize
from .geo import (
    RasterInfo,
    Stretch,
    is_geotiff,
    parse_bands,
    parse_window,
    read_raster,
    require_rasterio,
)
from .prediction import PANEL_TILE, ReferringPrediction, rank_by_risk

if TYPE_CHECKING:
    from .models import CroBIMU

__all__ = ["PANEL_TILE", "LoadedImage", "ModelMaps", "ReferringPrediction", "ReferringSegmenter", "rank_by_risk"]


@dataclass(frozen=True)
class LoadedImage:
    """An image as :meth:`ReferringSegmenter.load` read it; pass it back as an image to predict on.

    Attributes:
        picture: the 8-bit RGB picture the model input is made from (smaller than ``size`` for a
            large JPEG decoded at a reduced scale).
        size: the image's own ``(H, W)``: the size of every map of the prediction.
        raster: where a raster came from (CRS, geotransform, bands, stretch); None for pictures.
        valid: (H, W) bool, False at nodata pixels of a raster; None when every pixel is valid.
        name: how errors and progress name it (the path, or ``"image <i>"``).
    """

    picture: Image.Image
    size: tuple[int, int]
    raster: RasterInfo | None = None
    valid: np.ndarray | None = None
    name: str = "image"


ImageLike = str | Path | Image.Image | np.ndarray | LoadedImage

class ModelMaps(NamedTuple):
    """What :meth:`ReferringSegmenter.logits` returns for a batch (see there)."""

    logits: torch.Tensor
    uncertainty: torch.Tensor | None
    refine_mask: torch.Tensor | None
    failure: torch.Tensor | None
    quality: torch.Tensor | None


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
        bands, window, stretch: how to read rasters (:func:`uncertainty_rrsis.geo.read_raster`):
            1-based bands (``"3,2,1"``), a pixel window ``(col_off, row_off, width, height)`` and a
            :class:`~uncertainty_rrsis.geo.Stretch` (``"percentile:2,98"``, ``"minmax:0,3000"``).
            GeoTIFFs are always read this way; with any of the three given, every file is (extra
            ``geo``).
        max_pixels: refuse a picture that would decode to more pixels than this (after a JPEG's
            reduced-scale decode), before decoding it (default
            :data:`~uncertainty_rrsis.data.DEFAULT_MAX_PIXELS`, 100 million; None: no limit).
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
        resize_backend: Literal["pil", "torch"] = "pil",
        reduce_large_images: bool = True,
        bands: Sequence[int] | str | None = None,
        window: Sequence[int] | str | None = None,
        stretch: Stretch | str | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        config = getattr(model, "config", None)
        self.image_size = int(image_size) if image_size else int(getattr(config, "image_size", 480))
        self.max_tokens = int(config.text.max_tokens) if config is not None else 20
        self.batch_size = int(batch_size)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        self.amp = bool(amp)
        self.transform = ResizeNormalize(image_size=self.image_size, backend=resize_backend)
        self.reduce_large_images = bool(reduce_large_images)
        self.bands = parse_bands(bands)
        self.window = parse_window(window)
        self.stretch = None if stretch is None else Stretch.parse(stretch)
        self.max_pixels = max_pixels

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        tokenizer: Any | None = None,
        device: torch.device | str | None = None,
        hub: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> ReferringSegmenter:
        """Load a checkpoint folder written by training or ``CroBIMU.save_pretrained`` (``config.json``,
        ``model.safetensors`` and, unless ``tokenizer`` is given, ``tokenizer/``), or a Hugging Face Hub
        model id whose repository holds one.

        ``hub`` takes ``revision``, ``cache_dir``, ``local_files_only``, ``token`` and ``force_download``
        for a Hub id; ``kwargs`` go to the constructor."""
        from .models import CroBIMU, resolve_pretrained

        folder = resolve_pretrained(directory, caller="ReferringSegmenter.from_pretrained", **(hub or {}))
        if folder.is_file() or ((folder / "checkpoints").is_dir() and not (folder / "model.safetensors").is_file()):
            CroBIMU.from_pretrained(folder)  # raises the error that says what to give instead
        if tokenizer is None:
            tokenizer_dir = folder / "tokenizer"
            if not tokenizer_dir.is_dir():
                raise FileNotFoundError(
                    f"ReferringSegmenter.from_pretrained: no tokenizer/ folder in {folder}; training writes one "
                    "next to the weights. Pass tokenizer= (the tokenizer the model was trained with)."
                )
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        model = CroBIMU.from_pretrained(folder, device=device)
        return cls(model, tokenizer, device=device, **kwargs)

    @property
    def reads_rasters(self) -> bool:
        """True when ``bands``, ``window`` or ``stretch`` was given: every file is read with rasterio."""
        return self.bands is not None or self.window is not None or self.stretch is not None

    def load(self, image: ImageLike, *, index: int = 0, reduce: bool | None = None) -> LoadedImage:
        """Read an image the way predictions do (pass the result back as an image).

        Args:
            image: a path, a PIL image, an (H, W, 3) uint8 array or a :class:`LoadedImage`
                (returned as is).
            index: its position in a call, for messages about images given in memory.
            reduce: decode a large JPEG at a reduced scale (default: ``reduce_large_images``).

        Raises:
            ValueError: the file is missing, unreadable or empty, a band or window is out of
                range, the pixels cannot be used (16-bit without a stretch, NaN, ...): the
                message names the file.
            ImportError: a GeoTIFF (or raster options) without rasterio; the message names the
                ``geo`` extra.
        """
        if isinstance(image, LoadedImage):
            return image
        if isinstance(image, (str, Path)):
            path = Path(image)
            if self.reads_rasters or is_geotiff(path):
                if not path.is_file():
                    raise FileNotFoundError(f"image file not found: {path}")
                what = "a GeoTIFF" if is_geotiff(path) else "a raster read with bands, window or stretch"
                require_rasterio(f"{path} is {what}; reading it")
                raster = read_raster(path, bands=self.bands, window=self.window, stretch=self.stretch)
                size = (raster.info.height, raster.info.width)
                return LoadedImage(Image.fromarray(raster.rgb), size, raster.info, raster.valid, str(path))
            reduce = self.reduce_large_images if reduce is None else reduce
            side = 2 * self.image_size
            picture = read_image(path, layout="any image file PIL can read (PNG, JPEG, TIFF, ...)",
                                 min_size=(side, side) if reduce else None, max_pixels=self.max_pixels)
            width, height = picture.info.get("full_size", picture.size)
            return LoadedImage(picture, (height, width), name=str(path))
        if isinstance(image, Image.Image):
            picture = image_to_rgb(image, source=f"image {index}")
            return LoadedImage(picture, (picture.height, picture.width), name=f"image {index}")
        if isinstance(image, np.ndarray):
            if image.dtype.kind == "f" and not np.isfinite(image).all():
                raise ValueError(f"image {index} holds NaN or infinite values; give an (H, W, 3) uint8 picture")
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image {index}: an array must be (H, W, 3) uint8; got {image.shape} {image.dtype}")
            return LoadedImage(Image.fromarray(image), (image.shape[0], image.shape[1]), name=f"image {index}")
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
        # one image (a str is a path) or a list / tuple of them
        images = list(images) if isinstance(images, (list, tuple)) else [cast(ImageLike, images)] * len(sentences)
        if len(images) != len(sentences):
            raise ValueError(f"got {len(images)} images and {len(sentences)} sentences; give one image for all "
                             "sentences or one image per sentence")
        check_sentences(sentences, images)
        loaded: dict[int, LoadedImage] = {}
        for i, image in enumerate(images):  # the same object given for several sentences is read once
            if id(image) not in loaded:
                loaded[id(image)] = self.load(image, index=i)
        results: list[ReferringPrediction] = []
        for start in range(0, len(sentences), self.batch_size):
            stop = min(start + self.batch_size, len(sentences))
            results += self._batch([loaded[id(images[i])] for i in range(start, stop)], sentences[start:stop])
        return results[0] if single else results

    def tokens(self, sentences: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and padding masks (True = padding) of ``sentences``, (B, L) each, on the device."""
        tokens = [tokenize(self.tokenizer, s, max_tokens=self.max_tokens) for s in sentences]
        ids = torch.stack([t[0] for t in tokens]).to(self.device)
        pad = torch.stack([t[1] for t in tokens]).to(self.device)
        return ids, pad

    @torch.no_grad()
    def logits(self, pixels: torch.Tensor, tokens: tuple[torch.Tensor, torch.Tensor]) -> ModelMaps:
        """The model on normalised pixels: final logits, uncertainty logits and UDLR's mask, all
        (B, 1, h, w) float32 at the pixels' size (the latter two None when the model has no such map),
        and the risk head's failure probabilities and predicted IoUs, (B,) each (None without it).

        Args:
            pixels: (B, 3, h, w), normalised as :attr:`transform` does.
            tokens: from :meth:`tokens`, (B, L) each or (1, L) each (one sentence for every image).
        """
        ids, pad = tokens
        if ids.shape[0] != pixels.shape[0]:
            ids, pad = ids.expand(pixels.shape[0], -1), pad.expand(pixels.shape[0], -1)
        use_amp = self.amp and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = self.model(pixels.to(self.device), ids, text_padding_mask=pad)
        side = (int(pixels.shape[-2]), int(pixels.shape[-1]))
        to_image_size = cast("CroBIMU", self.model).to_image_size
        unc = None if out.uncertainty is None else to_image_size(out.uncertainty.float(), side)
        ref = None if out.refine_mask is None else to_image_size(out.refine_mask.float(), side)
        failure = None if out.risk is None else torch.sigmoid(out.risk.float())
        quality = None if out.quality is None else torch.sigmoid(out.quality.float())
        return ModelMaps(out.logits.float(), unc, ref, failure, quality)

    def _batch(self, images: list[LoadedImage], sentences: list[str]) -> list[ReferringPrediction]:
        x = torch.stack([self.transform.normalize(self.transform.resize_image(im.picture)) for im in images])
        logits_s, unc, ref, failure, quality = self.logits(x, self.tokens(sentences))
        results = []
        for b, (image, sentence) in enumerate(zip(images, sentences, strict=True)):
            logits = _at_size(logits_s[b : b + 1], image.size)  # (h, w)
            valid = None if image.valid is None else torch.from_numpy(image.valid)
            if valid is not None:
                logits.masked_fill_(~valid, -torch.inf)  # nodata: mask 0, probability 0
            mask = logits > 0
            results.append(ReferringPrediction(  # in place: one full-size float map per kind
                sentence=sentence,
                image=np.asarray(image.picture, dtype=np.uint8),
                mask=mask,
                probability=logits.sigmoid_(),
                uncertainty=None if unc is None else _at_size(unc[b : b + 1], image.size).sigmoid_(),
                refine_mask=None if ref is None else _at_size(ref[b : b + 1], image.size).clamp_(0, 1),
                valid=valid,
                raster=image.raster,
                failure_probability=None if failure is None else float(failure[b]),
                predicted_iou=None if quality is None else float(quality[b]),
            ))
        return results


def check_sentences(sentences: Sequence[Any], images: Sequence[Any] | None = None) -> None:
    """Raise a ``ValueError`` for an empty sentence (or one that is not a string), naming its image."""
    for i, sentence in enumerate(sentences):
        if not isinstance(sentence, str) or not sentence.strip():
            image = images[i] if images is not None and i < len(images) else None
            name = image.name if isinstance(image, LoadedImage) else image if isinstance(image, (str, Path)) else None
            where = f" (image {name})" if name is not None else ""
            raise ValueError(f"sentence {i} is empty{where}; a referring expression is needed")


def _at_size(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, 1, s, s) logits -> a new (H, W) float32 CPU tensor (never a view of ``x``)."""
    x = x.float()
    y = resize_logits(x, size)
    if y is x:
        y = y.clone()
    return y[0, 0].cpu()
