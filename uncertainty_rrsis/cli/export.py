"""Export a CroBIM-U checkpoint's inference path to ONNX and check it against PyTorch with onnxruntime.

The exported graph is the full reference model, image + token ids + attention mask in, logits and
uncertainty out::

    images          (B, 3, S, S) float32, normalised (ImageNet mean / std), S = the model's input side
    input_ids       (B, L) int64, L = the model's token limit (20), padded
    attention_mask  (B, L) int64, 1 = token, 0 = padding
    -> logits       (B, 1, S, S) float32, the final foreground logits (mask = logits > 0)
    -> uncertainty  (B, 1, S, S) float32, the uncertainty logits U brought to the input size
                    (U^p = sigmoid(U)); absent for a model without the scorer (Base)

The batch axis B is dynamic; S and L are fixed at export (``--dynamic-size`` tries dynamic image
height and width). Tokenisation and the resize / normalisation of the picture stay in Python: the
tokenizer is saved under ``tokenizer/`` of the checkpoint, the input pipeline is
``uncertainty_rrsis.data.ResizeNormalize``. The export uses ``torch.onnx.export(..., dynamo=True)``
(needs onnx and onnxscript); the check runs the ONNX file with onnxruntime on a batch of a size
other than the export's and prints the largest absolute difference per output.

Examples::

    uncertainty-rrsis export runs/default/checkpoints/best --output model.onnx
    uncertainty-rrsis export CKPT --output model.onnx --check-batch 3 --tolerance 1e-4
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models import CroBIMU


class InferencePath(nn.Module):
    """``CroBIMU`` as (images, input_ids, attention_mask) -> (logits, uncertainty logits at the input size)."""

    def __init__(self, model: CroBIMU) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        out = self.model(images, input_ids, attention_mask)
        if out.uncertainty is None:
            return (out.logits,)
        return out.logits, self.model.to_image_size(out.uncertainty, (images.shape[-2], images.shape[-1]))


def example_inputs(model: CroBIMU, batch: int, *, seed: int = 0, size: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random normalised images and token ids of ``batch`` sentences of different lengths."""
    generator = torch.Generator().manual_seed(seed)
    side = size or model.config.image_size
    tokens = model.config.text.max_tokens
    vocab = int(model.text.hf_config_dict().get("vocab_size", 1000))
    images = torch.randn(batch, 3, side, side, generator=generator)
    ids = torch.randint(5, vocab, (batch, tokens), generator=generator)
    mask = torch.ones(batch, tokens, dtype=torch.int64)
    for b in range(batch):  # sentences of different lengths: padding at the end
        length = max(3, tokens - 4 * b)
        ids[b, length:] = 0
        mask[b, length:] = 0
    return images, ids, mask


def export(model: CroBIMU, path: str | Path, *, batch: int = 2, dynamic_size: bool = False,
           opset: int | None = None) -> tuple[Path, list[str]]:
    """Export ``model``'s inference path to ``path``; returns the path and the output names."""
    wrapper = InferencePath(model).eval()
    args = example_inputs(model, batch)
    outputs = ["logits"] if model.decoder.scorer is None else ["logits", "uncertainty"]
    b = torch.export.Dim("batch", min=1, max=1024)
    image_axes = {0: b}
    if dynamic_size:
        image_axes.update({2: torch.export.Dim("height", min=32, max=4096),
                           3: torch.export.Dim("width", min=32, max=4096)})
    kwargs: dict[str, Any] = {} if opset is None else {"opset_version": opset}
    with warnings.catch_warnings():  # the three inputs share the one batch axis: torch says so, and that is meant
        warnings.filterwarnings("ignore", message=r"# The axis name: batch will not be used")
        program = torch.onnx.export(wrapper, args, dynamo=True, verbose=False,
                                    dynamic_shapes=(image_axes, {0: b}, {0: b}),
                                    input_names=["images", "input_ids", "attention_mask"], output_names=outputs,
                                    **kwargs)
    if program is None:  # the dynamo exporter always returns a program; a None would mean another exporter ran
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no ONNX program")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    return path, outputs


def check(model: CroBIMU, path: str | Path, *, batch: int = 3, size: int | None = None) -> dict[str, float]:
    """Largest absolute difference per output between onnxruntime and PyTorch on a random batch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images, ids, mask = example_inputs(model, batch, seed=1, size=size)
    with torch.no_grad():
        expected = InferencePath(model)(images, ids, mask)
    got = session.run(None, {"images": images.numpy(), "input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    names = [o.name for o in session.get_outputs()]
    return {name: float(np.abs(g - e.numpy()).max()) for name, g, e in zip(names, got, expected, strict=True)}


def input_axes(path: str | Path) -> dict[str, list[int | str]]:
    """The ONNX file's input shapes: an int for a fixed axis, a name for a dynamic one."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}


def main(argv: list[str] | None = None, *, prog: str | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint folder (model.safetensors + config.json)")
    parser.add_argument("--output", default="crobimu.onnx", help="the ONNX file to write")
    parser.add_argument("--batch", type=int, default=2, help="batch of the example inputs of the export")
    parser.add_argument("--check-batch", type=int, default=3, help="batch of the onnxruntime check")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted absolute difference")
    parser.add_argument("--dynamic-size", action="store_true", help="also make the image height and width dynamic")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    args = parser.parse_args(argv)
    model = CroBIMU.from_pretrained(args.checkpoint).eval()
    start = time.perf_counter()
    path, outputs = export(model, args.output, batch=args.batch, dynamic_size=args.dynamic_size, opset=args.opset)
    print(f"exported {', '.join(outputs)} to {path} ({path.stat().st_size / 2**20:.1f} MB) in "
          f"{time.perf_counter() - start:.0f} s")
    axes = input_axes(path)
    print("input axes: " + ", ".join(f"{name} {shape}" for name, shape in axes.items()))
    sizes: list[int | None] = [None]
    if args.dynamic_size:
        if all(isinstance(v, int) for v in axes["images"][2:]):
            print("note: the image height and width did not stay dynamic (torch.export specialised them to the "
                  "export size); this file takes images of the export size only")
        else:
            sizes.append(model.config.image_size + 32)
    worst: dict[str, float] = {}
    for size in sizes:
        diffs = check(model, path, batch=args.check_batch, size=size)
        side = size or model.config.image_size
        print(f"onnxruntime vs PyTorch, batch {args.check_batch}, {side} x {side}: max abs difference "
              + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
        worst = {k: max(v, worst.get(k, 0.0)) for k, v in diffs.items()}
    if max(worst.values()) > args.tolerance:
        sys.exit(f"{parser.prog}: the ONNX model differs from PyTorch by more than {args.tolerance:g}: {worst}")
    return worst

