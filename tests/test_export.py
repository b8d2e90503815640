"""examples/export.py: the full model's inference path in ONNX, with a dynamic batch, matches PyTorch."""

from __future__ import annotations

import re

import pytest
import torch

pytest.importorskip("timm")
pytest.importorskip("transformers")


from helpers.examples import load_example
from helpers.tiny import perturbed_model

TOLERANCE = 1e-4  # largest absolute difference of logits and uncertainty logits, fp32 on the CPU


@pytest.mark.slow
@pytest.mark.onnx
def test_onnx_export_matches_pytorch(tmp_path, tiny_config, tiny_tokenizer, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    export = load_example("export")
    model = perturbed_model(tiny_config)
    checkpoint = model.save_pretrained(tmp_path / "ckpt", tokenizer=tiny_tokenizer)
    onnx_file = tmp_path / "model.onnx"
    worst = export.main([str(checkpoint), "--output", str(onnx_file), "--batch", "2", "--check-batch", "3",
                         "--tolerance", str(TOLERANCE)])
    printed = capsys.readouterr().out
    assert re.search(r"batch 3, 64 x 64: max abs difference logits \S+, uncertainty \S+", printed), printed
    assert set(worst) == {"logits", "uncertainty"} and max(worst.values()) < TOLERANCE
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images", "input_ids", "attention_mask"]
    for batch in (1, 5):  # the batch axis is dynamic
        images, ids, mask = export.example_inputs(model, batch, seed=batch)
        logits, uncertainty = session.run(None, {"images": images.numpy(), "input_ids": ids.numpy(),
                                                 "attention_mask": mask.numpy()})
        with torch.no_grad():
            out = model(images, ids, mask)
        expected_u = model.to_image_size(out.uncertainty, (64, 64))
        assert logits.shape == (batch, 1, 64, 64) and uncertainty.shape == (batch, 1, 64, 64)
        assert float((torch.from_numpy(logits) - out.logits).abs().max()) < TOLERANCE
        assert float((torch.from_numpy(uncertainty) - expected_u).abs().max()) < TOLERANCE
