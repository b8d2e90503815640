"""How much to trust each answer, for users: a model with the risk head gives every prediction a
predicted IoU and a failure probability; examples/predict.py prints and writes them, sorts by them
and flags the answers to check by hand; a model without the head falls back to the mean margin."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("timm")
pytest.importorskip("transformers")

from uncertainty_rrsis.inference import ReferringPrediction, rank_by_risk  # noqa: E402
from uncertainty_rrsis.models import CroBIMU  # noqa: E402

from helpers.examples import load_example


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_config, tiny_tokenizer) -> Path:
    torch.manual_seed(0)
    model = CroBIMU(tiny_config.replace(risk_head=True)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # the zero-initialised head answers something else than 0.5
    return model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "best", tokenizer=tiny_tokenizer)


def _prediction(probability: torch.Tensor, failure: float | None = None) -> ReferringPrediction:
    return ReferringPrediction(sentence="a car", image=np.zeros((*probability.shape, 3), np.uint8),
                               mask=probability > 0.5, probability=probability, uncertainty=None, refine_mask=None,
                               failure_probability=failure, predicted_iou=None if failure is None else 1 - failure)


def test_risk_score_is_the_failure_probability_or_else_the_mean_margin():
    sure = torch.zeros(4, 4)
    sure[:2] = 0.99
    unsure = torch.zeros(4, 4)
    unsure[:2] = 0.6
    assert _prediction(sure).risk_score == pytest.approx(0.02) and _prediction(unsure).risk_score == pytest.approx(0.8)
    assert _prediction(unsure, failure=0.1).risk_score == 0.1
    ranked = rank_by_risk([_prediction(sure), _prediction(unsure), _prediction(sure, failure=0.9)], flag_above=0.5)
    assert [round(p.risk_score, 2) for p, _ in ranked] == [0.9, 0.8, 0.02]
    assert [flag for _, flag in ranked] == [True, True, False]
    assert not any(flag for _, flag in rank_by_risk([_prediction(unsure)]))


def test_predict_writes_sorts_and_flags_by_the_predicted_quality(checkpoint, tmp_path, capsys):
    predict = load_example("predict")
    image = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(image)
    sentences = ["the red car", "the white roof", "a small ship near the pier"]
    out = tmp_path / "out"
    argv = [str(checkpoint), "--image", str(image), "--output-dir", str(out), "--device", "cpu", "--no-progress",
            "--sort-by", "risk"]
    for sentence in sentences:
        argv += ["--sentence", sentence]
    first = predict.main(argv)
    middle = sorted(r["failure_probability"] for r in first)[1]
    rows = predict.main([*argv, "--flag-above", str(middle)])
    printed = capsys.readouterr().out
    assert all(0 < r["predicted_iou"] < 1 and 0 < r["failure_probability"] < 1 for r in rows)
    assert [r["risk_score"] for r in rows] == sorted((r["failure_probability"] for r in rows), reverse=True)
    assert [r["flagged"] for r in rows] == [True, False, False]
    assert printed.count("predicted IoU") >= 3 and printed.count("[check by hand]") >= 1
    with (out / "predictions.csv").open(encoding="utf-8", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [float(r["predicted_iou"]) for r in table] == pytest.approx([r["predicted_iou"] for r in rows])
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert lines == rows == json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert all(Path(r["panel"]).is_file() for r in rows)


# ------------------------------------------------------------------ inputs that would be silently wrong


def test_a_small_png_that_declares_a_huge_size_is_refused_before_decoding(checkpoint, tmp_path):
    from uncertainty_rrsis.inference import ReferringSegmenter

    huge = tmp_path / "huge.png"
    Image.new("L", (12_000, 12_000)).save(huge, optimize=True)  # a few hundred KB on disk
    assert huge.stat().st_size < 2_000_000
    segmenter = ReferringSegmenter.from_pretrained(checkpoint, device="cpu")
    with pytest.raises(ValueError, match=r"declares 12000 x 12000 pixels.*pixel budget of 100,000,000.*max_pixels"):
        segmenter.load(huge)
    small = ReferringSegmenter.from_pretrained(checkpoint, device="cpu", max_pixels=1000)
    picture = tmp_path / "small.png"
    Image.new("RGB", (40, 40)).save(picture)
    with pytest.raises(ValueError, match="pixel budget of 1,000"):
        small.load(picture)  # the budget is a setting
    assert ReferringSegmenter.from_pretrained(checkpoint, device="cpu").load(picture).size == (40, 40)


def test_predict_given_a_run_folder_or_a_weights_file_says_what_to_give(checkpoint, tmp_path, capsys):
    from uncertainty_rrsis.inference import ReferringSegmenter

    run = checkpoint.parent.parent / "run"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"is a training run folder, not a checkpoint"):
        ReferringSegmenter.from_pretrained(run)
    weights = tmp_path / "model.pth"
    weights.write_bytes(b"not a folder")
    with pytest.raises(ValueError, match=r"model.pth is a file; expected a checkpoint folder"):
        ReferringSegmenter.from_pretrained(weights)
