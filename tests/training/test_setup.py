"""Run setup: the dataset registry, datasets sized by the model config, the synthetic data root."""

from __future__ import annotations

from pathlib import Path

import pytest

from uncertainty_rrsis.data import (
    RRSISD,
    RISBench,
    SyntheticBenchmark,
    get_dataset_class,
    list_datasets,
    register_dataset,
    registry,
)
from uncertainty_rrsis.models import get_preset
from uncertainty_rrsis.training import TrainConfig, build_dataset, environment_info, prepare_data_root

REPO = Path(__file__).resolve().parents[2]


class Recorder(RISBench):
    """Records the keywords a reader is built with instead of reading a folder."""

    def __init__(self, root, split, **kwargs):
        self.root, self.split, self.kwargs = root, split, kwargs


# ------------------------------------------------------------------ the registry


def test_registry_knows_the_builtin_datasets():
    assert {"synthetic", "rrsisd", "refsegrs", "risbench"} <= set(list_datasets())
    assert get_dataset_class("synthetic") is SyntheticBenchmark and get_dataset_class("rrsisd") is RRSISD
    assert issubclass(SyntheticBenchmark, RISBench)  # the synthetic benchmark is written in RISBench's layout


def test_generated_on_first_use_is_a_property_of_the_reader():
    assert SyntheticBenchmark.generated and not RISBench.generated and not RRSISD.generated
    with pytest.raises(NotImplementedError, match="reads a dataset folder"):
        RISBench.generate("/tmp", image_size=64, sizes={"train": 1, "val": 1, "test": 1}, seed=0)


def test_register_dataset_works_as_a_class_decorator(monkeypatch):
    monkeypatch.setattr(registry, "_READERS", dict(registry._READERS))

    @register_dataset("decorated")
    class Decorated(RISBench):
        pass

    assert get_dataset_class("decorated") is Decorated


def test_unknown_dataset_lists_the_known_names():
    with pytest.raises(ValueError, match=r"unknown dataset 'rrsis'; known datasets: refsegrs, risbench, rrsisd, "
                                         r"synthetic .*register_dataset"):
        get_dataset_class("rrsis")


def test_register_dataset_adds_a_name_everywhere(monkeypatch):
    monkeypatch.setattr(registry, "_READERS", dict(registry._READERS))
    register_dataset("mybench", Recorder)
    assert get_dataset_class("mybench") is Recorder and "mybench" in list_datasets()
    TrainConfig(dataset="mybench", data_root="/somewhere").validate()  # training accepts it
    with pytest.raises(ValueError, match=r"'mybench' is already registered \(Recorder\).*overwrite=True"):
        register_dataset("mybench", RISBench)
    register_dataset("mybench", RISBench, overwrite=True)
    assert get_dataset_class("mybench") is RISBench
    with pytest.raises(TypeError, match="ReferringDataset subclass"):
        register_dataset("other", dict)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lower-case word"):
        register_dataset("My Bench", Recorder)


def test_the_check_tool_takes_registry_names(monkeypatch, capsys):
    from uncertainty_rrsis.data.check import main

    with pytest.raises(SystemExit):
        main(["--dataset", "nope", "--root", "."])
    assert "synthetic" in capsys.readouterr().err  # the choices come from the registry


# ------------------------------------------------------------------ datasets sized by the model config


def test_build_dataset_reads_image_size_and_tokens_from_the_model_config(monkeypatch):
    monkeypatch.setitem(registry._READERS, "recorder", Recorder)
    model_config = get_preset("tiny", image_size=96, text={"max_tokens": 12})
    dataset = build_dataset("recorder", "/data", "val", tokenizer="tok", model_config=model_config,
                            return_orig_mask=True)
    assert (dataset.root, dataset.split) == ("/data", "val")
    assert dataset.kwargs == {"tokenizer": "tok", "max_tokens": 12, "image_size": 96, "return_orig_mask": True,
                              "check_record": None}


def test_synthetic_data_root_is_generated_once_at_the_model_size(tmp_path):
    cfg = TrainConfig(cache_dir=str(tmp_path), synthetic_train=3, synthetic_val=2, synthetic_test=2, progress=False)
    root = prepare_data_root(cfg, image_size=48)
    assert prepare_data_root(cfg, image_size=48) == root  # cached
    assert prepare_data_root(cfg, image_size=64) != root  # another size, another folder
    dataset = build_dataset("synthetic", root, "test", tokenizer=None, model_config=get_preset("tiny", image_size=64))
    assert len(dataset) == 2 and tuple(dataset[0]["image"].shape) == (3, 64, 64)  # resized to the model's size


def test_a_real_dataset_needs_its_root():
    cfg = TrainConfig(dataset="rrsisd")
    with pytest.raises(ValueError, match="--dataset rrsisd needs --data-root"):
        prepare_data_root(cfg, image_size=64)
    assert prepare_data_root(TrainConfig(dataset="rrsisd", data_root="/data/rrsisd"), image_size=64) == Path(
        "/data/rrsisd")


def test_environment_info_names_the_versions():
    import torch

    info = environment_info()
    assert info["torch"] == torch.__version__ and "uncertainty_rrsis" in info and "python" in info
