"""A new dataset, a new preset and a new loss, each added from outside the package in one place,
then used by name by a training run (``build_trainer`` + ``fit``), as a user's own module would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from uncertainty_rrsis.data import Record, ReferringDataset, join_name, read_phrase_file, register_dataset, registry
from uncertainty_rrsis.losses import BCEDiceLoss, register_loss
from uncertainty_rrsis.losses import registry as loss_registry
from uncertainty_rrsis.models import get_preset, register_preset
from uncertainty_rrsis.models import presets as preset_module
from uncertainty_rrsis.training import TrainConfig, build_trainer

from helpers.tiny import tiny_model_overrides

# --------------------------------------------------------------------------------------------
# what a user's module would hold: one reader, one preset, one loss, each registered once
# --------------------------------------------------------------------------------------------

READS: list[str] = []
LOSS_CALLS: list[int] = []


class TileFolder(ReferringDataset):
    """``<root>/tiles/<name>.png`` with ``<root>/labels/<name>.png`` and ``<root>/<split>.txt`` lines
    ``<name> <sentence>``: a layout none of the built-in readers knows."""

    name = "tiles"
    layout = "<root>/tiles/<name>.png, <root>/labels/<name>.png, <root>/<split>.txt"

    def build_records(self) -> list[Record]:
        records = []
        for line, name, sentence in read_phrase_file(self.root / f"{self.split}.txt", layout=self.layout):
            image, problem = join_name(self.root / "tiles", f"{name}.png", what="tile", where=f"line {line}")
            records.append(Record(name, image, (sentence,), self.root / "labels" / f"{name}.png", f"line {line}",
                                  problem=problem))
        return records

    def read_mask(self, record: Record) -> np.ndarray:
        READS.append(record.id)
        return np.asarray(Image.open(record.mask_source)) > 0


class CountingLoss(nn.Module):
    """BCE + Dice that counts its calls (a user's own ``L_seg``)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = BCEDiceLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        LOSS_CALLS.append(1)
        return self.inner(logits, target)


def write_tiles(root: Path, *, count: int = 8, size: int = 64) -> None:
    rng = np.random.default_rng(0)
    (root / "tiles").mkdir(parents=True)
    (root / "labels").mkdir()
    for split in ("train", "val", "test"):
        lines = []
        for i in range(count):
            name = f"{split}{i}"
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "tiles" / f"{name}.png")
            label = np.zeros((size, size), np.uint8)
            label[8 + i : 30 + i, 10:40] = 255
            Image.fromarray(label).save(root / "labels" / f"{name}.png")
            lines.append(f"{name} the white roof near the road")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture()
def registered(monkeypatch, tiny_bert_dir):
    """The three registrations, undone after the test."""
    monkeypatch.setattr(registry, "_READERS", dict(registry._READERS))
    monkeypatch.setattr(preset_module, "_PRESETS", dict(preset_module._PRESETS))
    monkeypatch.setattr(loss_registry, "_LOSSES", dict(loss_registry._LOSSES))
    register_dataset("tiles", TileFolder)
    overrides = tiny_model_overrides(tiny_bert_dir)
    register_preset("tiny-test", lambda: get_preset("tiny").replace(**overrides),
                    recipe={"lr": 3e-3, "epochs": 1, "batch_size": 4, "model": {"image_size": 64}})
    register_loss("counting", CountingLoss)
    READS.clear()
    LOSS_CALLS.clear()


@pytest.mark.slow
def test_a_run_trains_on_a_registered_dataset_preset_and_loss(registered, tmp_path):
    write_tiles(tmp_path / "tiles")
    cfg = TrainConfig(dataset="tiles", data_root=str(tmp_path / "tiles"), preset="tiny-test", seg_loss="counting",
                      output_dir=str(tmp_path / "run"), progress=False, tensorboard=False, panels=0, device="cpu")
    assert (cfg.lr, cfg.epochs, cfg.batch_size) == (3e-3, 1, 4)  # the preset's recipe
    trainer = build_trainer(cfg)
    assert isinstance(trainer.datasets["train"], TileFolder)
    assert isinstance(trainer.criterion.seg_loss, CountingLoss)
    assert trainer.model.config.image_size == 64 and trainer.model.config.dim == 32
    results = trainer.fit()
    assert trainer.step == 2 and LOSS_CALLS and any(r.startswith("train") for r in READS)
    assert results["test"]["count"] == 8


def test_the_names_are_accepted_by_the_settings_before_any_run(registered, tmp_path):
    cfg = TrainConfig(dataset="tiles", data_root=str(tmp_path), preset="tiny-test", seg_loss="counting")
    cfg.validate()
    with pytest.raises(ValueError, match=r"--seg-loss: unknown loss 'focal'; known losses: bce_dice, counting"):
        TrainConfig(seg_loss="focal").validate()
    with pytest.raises(ValueError, match=r"--preset: unknown preset 'huge'"):
        TrainConfig(preset="huge")
