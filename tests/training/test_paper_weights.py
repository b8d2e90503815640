"""``--preset paper`` refuses to train ConvNeXt-B from random initialisation unless asked to."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from uncertainty_rrsis.models import get_preset
from uncertainty_rrsis.training import SettingsError, TrainConfig, check_vision_weights

REPO = Path(__file__).resolve().parents[2]


def test_paper_without_weights_is_an_error_naming_the_flag():
    cfg = TrainConfig(preset="paper")
    with pytest.raises(SettingsError, match=r"--vision-weights FILE.*convnext_base.fb_in22k_ft_in1k_384.*"
                                            r"load_foreign_checkpoint.*--vision-weights none"):
        check_vision_weights(cfg, get_preset("paper"))


def test_random_weights_on_purpose_only_warn_and_other_cases_pass(tmp_path):
    cfg = TrainConfig(preset="paper", model={"vision": {"weights": "none"}})
    with pytest.warns(RuntimeWarning, match="from random initialisation"):
        check_vision_weights(cfg, get_preset("paper", vision={"weights": "none"}))
    check_vision_weights(TrainConfig(preset="paper", resume=True), get_preset("paper"))  # weights from the run
    check_vision_weights(TrainConfig(preset="tiny"), get_preset("tiny"))  # tiny trains from scratch by design
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    check_vision_weights(TrainConfig(preset="paper"), get_preset("paper", vision={"weights": str(weights)}))


@pytest.mark.slow
def test_the_script_exits_non_zero_within_seconds(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "train.py"), "--preset", "paper", "--max-steps", "1",
         "--output-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--vision-weights" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_vision_encoder_takes_none_as_random_initialisation():
    pytest.importorskip("timm")
    from uncertainty_rrsis.models import VisionEncoder

    from helpers.tiny import TINY_CONVNEXT

    encoder = VisionEncoder("convnext_atto", 16, weights="none", model_kwargs=dict(TINY_CONVNEXT))
    assert len(encoder.strides) == 4
    with pytest.raises(FileNotFoundError, match="'none' for random init"):
        VisionEncoder("convnext_atto", 16, weights="missing.pth", model_kwargs=dict(TINY_CONVNEXT))
