"""The model card README.md that save_pretrained writes next to the weights."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("timm")
pytest.importorskip("transformers")

from uncertainty_rrsis._version import __version__  # noqa: E402
from uncertainty_rrsis.models import CroBIMU, write_model_card  # noqa: E402


@pytest.fixture(scope="module")
def model(tiny_config):
    torch.manual_seed(0)
    return CroBIMU(tiny_config).eval()


def test_card_describes_the_model(model, tmp_path):
    folder = model.save_pretrained(tmp_path / "ckpt")
    card = (folder / "README.md").read_text(encoding="utf-8")
    front, body = card.split("---\n", 2)[1:]
    assert card.startswith("---\n") and body.lstrip("\n").startswith("# CroBIM-U (Full)")
    assert "library_name: uncertainty-rrsis" in front and 'license: "apache-2.0"' in front
    assert "| variant | Full (RUS yes, UGF yes, UDLR yes) |" in card
    assert "| vision encoder | convnext_atto |" in card and "| width C | 32 |" in card
    assert "| input size | 64 x 64 |" in card
    assert f"| library version | {__version__} |" in card
    assert f"| parameters | {model.num_parameters()['total']:,} " in card
    assert "Not recorded: this checkpoint was saved outside a training run folder" in card
    config = json.loads(card.split("## Config\n\n```json\n", 1)[1].split("\n```", 1)[0])
    assert config == model.saved_config().to_dict()  # the config as saved in config.json
    base = CroBIMU(model.config.replace(use_fusion=False, use_refinement=False))
    base_card = (base.save_pretrained(tmp_path / "base") / "README.md").read_text()
    assert "| variant | Base (RUS no, UGF no, UDLR no) |" in base_card


def test_card_mapping_is_written_and_ignored_when_loading(model, tmp_path):
    card = {"preset": "tiny", "data": "The synthetic benchmark, 3,000 training samples.",
            "training": {"steps": 935, "batch_size": 16, "lr": 0.001},
            "metrics": {"test": {"mIoU": 0.6506, "oIoU": 0.6602, "Pr@0.5": 0.73, "count": 600}},
            "notes": "Trained on a CPU.", "licence": "Apache-2.0"}
    folder = model.save_pretrained(tmp_path / "ckpt", card=card)
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert "| preset | tiny |" in text and "The synthetic benchmark, 3,000 training samples." in text
    assert "| steps | 935 |" in text and "| lr | 0.001 |" in text
    assert "| split | mIoU | oIoU | Pr@0.5 | count |" in text and "| test | 0.6506 | 0.6602 | 0.73 | 600 |" in text
    assert "## Notes\n\nTrained on a CPU." in text and "| licence | Apache-2.0 |" in text
    (folder / "README.md").write_text("not a card {", encoding="utf-8")  # from_pretrained never reads it
    loaded = CroBIMU.from_pretrained(folder)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_card_of_a_training_run_checkpoint(model, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    train = {"dataset": "synthetic", "preset": "tiny", "max_steps": 300, "batch_size": 16, "lr": 0.001, "seed": 3,
             "output_dir": "somewhere"}
    (run / "config.json").write_text(json.dumps({"train": train, "model": {}}), encoding="utf-8")
    folder = model.save_pretrained(run / "checkpoints" / "best.tmp")  # the trainer saves, then renames
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert "| preset | tiny |" in text and "From the training run's `config.json`" in text
    assert "| dataset | synthetic |" in text and "| max_steps | 300 |" in text and "| seed | 3 |" in text
    assert "output_dir" not in text  # a path of the training machine stays out
    assert "## Metrics\n\nNot recorded when this card was written" in text
    metrics = {"checkpoint": "best (val mIoU)", "resolution": "64x64", "steps": 300, "protocol": "per-sample IoU",
               "results": {"test": {"mIoU": 0.5, "oIoU": 0.4, "Pr@0.5": 0.45, "unc/AUROC": 0.8, "count": 7,
                                    "breakdown": {}}}}
    (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    write_model_card(folder)  # once the run has its metrics
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert "| split | mIoU | oIoU | Pr@0.5 | unc/AUROC | count |" in text
    assert "| test | 0.5 | 0.4 | 0.45 | 0.8 | 7 |" in text
    assert "checkpoint: best (val mIoU); resolution: 64x64; steps: 300." in text
    outside = model.save_pretrained(tmp_path / "checkpoints" / "best")  # no run config two levels up
    assert "Not recorded: this checkpoint" in (outside / "README.md").read_text()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        write_model_card(tmp_path / "nothing")


def test_front_matter_is_what_the_hub_reads(model, tmp_path):
    """The Hub's own parser reads the front matter: licence, library, task, tags and datasets."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    folder = model.save_pretrained(tmp_path / "ckpt", card={
        "license": "cc-by-4.0", "datasets": ["someone/rrsis-d"], "tags": ["ships", "remote-sensing"],
        "data": "the synthetic benchmark"})
    data = huggingface_hub.ModelCard.load(folder / "README.md").data
    assert data.library_name == "uncertainty-rrsis" and data.license == "cc-by-4.0"
    assert data.pipeline_tag == "image-segmentation" and data.datasets == ["someone/rrsis-d"]
    assert data.tags[:2] == ["referring-image-segmentation", "remote-sensing"] and data.tags[-1] == "ships"
    assert data.tags.count("remote-sensing") == 1
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert "## Other" not in text  # the Hub keys are not repeated in the body
    plain = huggingface_hub.ModelCard.load(model.save_pretrained(tmp_path / "plain") / "README.md").data
    assert plain.license == "apache-2.0" and plain.datasets is None
