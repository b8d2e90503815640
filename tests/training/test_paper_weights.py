"""``--preset paper`` (and ``CroBIMU(get_preset("paper"))`` in Python) refuses to build ConvNeXt-B from random
initialisation unless asked to."""

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


def test_random_weights_on_purpose_pass_the_check_and_other_cases_too(tmp_path):
    cfg = TrainConfig(preset="paper", model={"vision": {"weights": "none"}})
    check_vision_weights(cfg, get_preset("paper", vision={"weights": "none"}))  # the model warns when built
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


def test_the_python_path_refuses_and_warns_as_the_command_line_does():
    pytest.importorskip("timm")
    import torch

    from uncertainty_rrsis.models import CroBIMU

    text = {"pretrained": False, "hf_config": {"model_type": "bert", "num_hidden_layers": 1}}
    with pytest.raises(ValueError, match=r"meant to start from pretrained weights.*vision=\{'weights': 'none'\}"):
        CroBIMU(get_preset("paper", text=text))
    with torch.device("meta"), pytest.warns(RuntimeWarning, match="from random initialisation"):
        CroBIMU(get_preset("paper", text=text, vision={"weights": "none"}))


def test_a_checkpoint_of_such_a_model_loads_without_a_word(tiny_config, tmp_path):
    pytest.importorskip("timm")
    import warnings

    from uncertainty_rrsis.models import CroBIMU

    with pytest.warns(RuntimeWarning, match="from random initialisation"):
        model = CroBIMU(tiny_config.replace(vision={"requires_weights": True, "weights": "none"}))
    model.save_pretrained(tmp_path / "ckpt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = CroBIMU.from_pretrained(tmp_path / "ckpt")  # the weights come with the checkpoint
    assert not loaded.config.vision.requires_weights
