"""examples/uncertainty_study.py: one change per variant against the reference setting, the reuse of
finished runs, and the tables it writes (the training itself is the Trainer's, tested elsewhere)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from uncertainty_rrsis.models import get_preset
from uncertainty_rrsis.training import build_model_config

from helpers.examples import load_example

study = load_example("uncertainty_study")


class _Recorder:
    """Stands in for the Trainer: records each config and writes the files a finished run has."""

    configs: list = []

    def __init__(self, cfg):
        self.cfg = cfg

    def fit(self):
        _Recorder.configs.append(self.cfg)
        folder = Path(self.cfg.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text("{}")


def _args(tmp_path):
    """The parsed arguments of a study run into ``tmp_path``."""
    return argparse.Namespace(max_steps=300, batch_size=16, synthetic_train=3000, train_data_seed=0, heldout_seed=7,
                              heldout_test=600, cache_dir=str(tmp_path / "cache"),
                              output_dir=str(tmp_path / "study"), device="cpu", progress=False, text_weights=None)


def test_every_variant_changes_one_thing_against_the_reference(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "build_trainer", _Recorder)
    _Recorder.configs = []
    args = _args(tmp_path)
    for variant in study.VARIANTS:
        study.train_one(args, variant, 1, tmp_path / "study")
    by_name = {Path(c.output_dir).name: c for c in _Recorder.configs}
    reference = by_name["reference-seed1"]
    model = {name: build_model_config(cfg) for name, cfg in by_name.items()}
    assert model["reference-seed1"].score_level == -1  # the paper's level, not the tiny preset's
    assert get_preset("tiny").score_level == 1
    assert (reference.max_steps, reference.seed, reference.batch_size) == (300, 1, 16)
    assert by_name["longer-seed1"].max_steps == 600 and model["input256-seed1"].image_size == 256
    assert model["score_stride8-seed1"].score_level == 1 and model["refine_input-seed1"].refine_at == "input"
    assert by_name["lambda_unc_3-seed1"].lambda_unc == 3.0 and reference.lambda_unc == 1.0
    assert by_name["no_pixel_weight-seed1"].unc_pixel_weighting is False and reference.unc_pixel_weighting is True
    ignore = {"output_dir", "model", "max_steps"}
    for name, cfg in by_name.items():
        variant = name.rsplit("-seed", 1)[0]
        _, train_changes, model_changes, _ = study.VARIANTS[variant]
        differs = {k for k, v in cfg.to_dict().items() if k not in ignore and reference.to_dict()[k] != v}
        assert differs == set(train_changes), variant
        ref_model, this_model = model["reference-seed1"].to_dict(), model[name].to_dict()
        assert {k for k in this_model if this_model[k] != ref_model[k]} == set(model_changes), variant


def test_text_weights_put_a_frozen_pretrained_encoder_in_every_variant(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "build_trainer", _Recorder)
    _Recorder.configs = []
    args = _args(tmp_path)
    args.text_weights = "org/encoder"
    for variant in ("reference", "score_stride8"):
        study.train_one(args, variant, 0, tmp_path / "study")
    for cfg in _Recorder.configs:
        text = build_model_config(cfg).text
        assert (text.name, text.pretrained, text.freeze, cfg.lr_warmup_steps) == ("org/encoder", True, True, 0)
    assert build_model_config(_Recorder.configs[1]).score_level == 1  # the variant's own change stays


def test_finished_runs_are_read_back_not_trained_again(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "build_trainer", _Recorder)
    _Recorder.configs = []
    args = _args(tmp_path)
    folder = study.train_one(args, "reference", 0, tmp_path / "study")
    assert study.train_one(args, "reference", 0, tmp_path / "study") == folder
    assert len(_Recorder.configs) == 1
    (folder / "heldout.json").write_text(json.dumps({"mIoU": 0.5}))
    assert study.heldout_eval(args, folder) == {"mIoU": 0.5}  # no checkpoint needed when the result exists


def _result(auroc, miou, fail_u, fail_m):
    return {"unc/AUROC": auroc, "mIoU": miou, "unc/failure/u_mask/AUROC": fail_u, "unc/failure/margin/AUROC": fail_m,
            "breakdown": {"thin=true": {"mIoU": miou}},
            "unc_breakdown": {"dense=true": {"failure/count": 10.0, "failure/rate": 0.5, "failure/u_mask/AUROC": fail_u,
                                             "failure/margin/AUROC": fail_m, "failure/u_mask/mean": 0.7}}}


def test_tables_give_the_mean_and_std_over_seeds_and_a_dash_for_missing_columns():
    results = {"reference": [_result(0.8, 0.40, 0.4, 0.8), _result(0.6, 0.44, 0.6, 0.9)]}
    lines = study.table(results).splitlines()
    assert lines[0].split(" | ")[2:4] == ["px AUROC U^p", "px AUROC margin"]
    row = [c.strip() for c in lines[2].strip("|").split("|")]
    columns = [c[0] for c in study.COLUMNS]
    assert row[0] == "reference"
    assert row[2 + columns.index("px AUROC U^p")] == "0.700 ± 0.141"
    assert row[2 + columns.index("mIoU")] == "42.0 ± 2.8"
    assert row[2 + columns.index("mIoU thin")] == "42.0 ± 2.8"  # from the breakdown
    assert row[2 + columns.index("px AUROC margin")] == "—"
    tags = study.tag_table(results, "reference", ["dense=true", "query=size"]).splitlines()
    assert len(tags) == 3 and tags[2].startswith("| dense=true | 10 | 50.0 ± 0.0 % | 0.500 ± 0.141 | 0.850 ± 0.071")


def test_main_writes_study_md_and_json_from_the_runs(tmp_path, monkeypatch):
    runs = iter([_result(0.8, 0.40, 0.4, 0.8), _result(0.9, 0.41, 0.5, 0.8)])
    monkeypatch.setattr(study, "train_one", lambda args, variant, seed, out: out / f"{variant}-seed{seed}")
    monkeypatch.setattr(study, "heldout_eval", lambda args, folder: next(runs))
    out = tmp_path / "study"
    text = study.main(["--variants", "reference", "score_stride8", "--seeds", "0", "--output-dir", str(out)])
    assert (out / "study.md").read_text() == text
    assert "| reference |" in text and "| score_stride8 |" in text and "Per tag, reference setting" in text
    saved = json.loads((out / "study.json").read_text())
    assert saved["args"]["max_steps"] == 300 and saved["results"]["score_stride8"][0]["unc/AUROC"] == 0.9


def test_list_names_every_variant(capsys):
    text = study.main(["--list"])
    assert [line.split()[0] for line in text.splitlines()] == list(study.VARIANTS)
    with pytest.raises(SystemExit):
        study.main(["--variants", "no_such_variant"])
