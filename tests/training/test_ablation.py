"""examples/ablation.py: the four Table V rows x seeds on the synthetic miniature (as before) or on any
config file, the Table V-style table (Markdown + JSON), and the reuse / resume of runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uncertainty_rrsis.training import TrainConfig, build_model_config

from helpers.examples import load_example
from helpers.tiny import tiny_train_config

REPO = Path(__file__).resolve().parents[2]
ablation = load_example("ablation")

MACHINE = ["--data-root", "/data/rrsisd", "--vision-weights", "/w/convnext_base.safetensors",
           "--text-weights", "/w/bert-base-uncased"]


def result(miou: float, oiou: float, *, auroc: float | None = None, tags: dict | None = None) -> dict:
    out = {"mIoU": miou, "oIoU": oiou, "count": 10}
    out.update({f"Pr@{t}": miou - (t - 0.5) for t in (0.5, 0.6, 0.7, 0.8, 0.9)})
    if auroc is not None:
        out["unc/AUROC"] = auroc
    if tags:
        out["breakdown"] = {tag: {"mIoU": value} for tag, value in tags.items()}
    return out


# ------------------------------------------------------------------ what an invocation runs


def test_without_a_config_the_runs_are_the_synthetic_miniature_as_before(tmp_path):
    todo = ablation.plan(["--output-dir", str(tmp_path)])
    assert list(todo.configs) == ["Base", "+UGF", "+UDLR", "Full"] and todo.seeds == [0, 1, 2]
    assert todo.split == "test" and todo.out == tmp_path
    # the base config the script built before config files were accepted
    before = TrainConfig(max_steps=250, epochs=1000, batch_size=16, device="auto", synthetic_train=3000,
                         progress=False, panels=0, tensorboard=False, checkpoint_every=10**9)
    no_risk_heads = {"risk_head": False, "pixel_risk_head": False}  # beyond the paper, off in every row
    for row, (fusion, refinement) in {"Base": (False, False), "+UGF": (True, False), "+UDLR": (False, True),
                                      "Full": (True, True)}.items():
        for seed, cfg in zip(todo.seeds, todo.configs[row], strict=True):
            folder = tmp_path / f"{row.replace('+', 'plus_')}-seed{seed}"
            assert cfg == before.replace(model={"use_fusion": fusion, "use_refinement": refinement, **no_risk_heads},
                                         seed=seed, output_dir=str(folder))


def test_flags_apply_to_every_run(tmp_path):
    todo = ablation.plan(["--rows", "Base", "Full", "--seeds", "4", "--max-steps", "935", "--batch-size", "8",
                          "--output-dir", str(tmp_path), "--progress"])
    assert list(todo.configs) == ["Base", "Full"]
    for cfg in (todo.configs["Base"][0], todo.configs["Full"][0]):
        assert (cfg.max_steps, cfg.batch_size, cfg.seed, cfg.progress, cfg.epochs) == (935, 8, 4, True, 1000)


def test_with_a_config_the_rows_apply_over_its_recipe():
    todo = ablation.plan(["--config", "rrsisd", *MACHINE, "--seeds", "0", "1"])
    assert todo.out == Path("runs/ablation-rrsisd") and todo.split == "test"
    for row, switches in {"Base": (False, False), "+UGF": (True, False), "+UDLR": (False, True),
                          "Full": (True, True)}.items():
        for seed, cfg in zip((0, 1), todo.configs[row], strict=True):
            assert (cfg.dataset, cfg.preset, cfg.lr, cfg.epochs, cfg.batch_size, cfg.max_steps) == (
                "rrsisd", "paper", 5e-5, 40, 32, None)  # the recipe, not the miniature's budget
            folder = Path("runs/ablation-rrsisd") / f"{row.replace('+', 'plus_')}-seed{seed}"
            assert cfg.seed == seed and cfg.output_dir == str(folder)
            model = build_model_config(cfg)
            assert (model.use_fusion, model.use_refinement) == switches and model.image_size == 480


def test_settings_that_cannot_work_are_refused_before_anything_runs(capsys):
    with pytest.raises(SystemExit):
        ablation.plan(["--config", "rrsisd"])  # no --data-root
    assert "needs --data-root" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ablation.plan(["--resume"])
    assert "resumes unfinished ones by itself" in capsys.readouterr().err


# ------------------------------------------------------------------ the table


def test_the_table_has_table_vs_columns_as_mean_and_std_over_seeds():
    results = {"Base": [result(0.30, 0.40), result(0.40, 0.50)], "Full": [result(0.50, 0.60), result(0.70, 0.60)]}
    text = ablation.table(results)
    lines = text.splitlines()
    assert lines[0] == "| row | Pr@0.5 | Pr@0.6 | Pr@0.7 | Pr@0.8 | Pr@0.9 | oIoU | mIoU |"
    assert lines[2] == ("| Base | 35.0 ± 7.1 | 25.0 ± 7.1 | 15.0 ± 7.1 | 5.0 ± 7.1 | -5.0 ± 7.1 | 45.0 ± 7.1 "
                        "| 35.0 ± 7.1 |")
    assert lines[3].startswith("| Full | 60.0 ± 14.1 |") and lines[3].endswith("| 60.0 ± 0.0 | 60.0 ± 14.1 |")
    summary = ablation.summary(results)
    assert summary["Full"]["mIoU"] == {"mean": pytest.approx(0.6), "std": pytest.approx(0.1414213562), "n": 2}
    assert "unc/AUROC" not in summary["Base"]


def test_uncertainty_and_tag_columns_appear_when_the_runs_report_them():
    results = {"Base": [result(0.3, 0.4, tags={"thin=true": 0.2})],
               "Full": [result(0.5, 0.6, auroc=0.8, tags={"thin=true": 0.4, "tiny=true": 0.1})]}
    lines = ablation.table(results).splitlines()
    assert lines[0].endswith("| oIoU | mIoU | U AUROC | mIoU thin | mIoU tiny |")
    assert lines[2].endswith("| — | 20.0 ± 0.0 | — |")
    assert lines[3].endswith("| 0.800 ± 0.000 | 40.0 ± 0.0 | 10.0 ± 0.0 |")


# ------------------------------------------------------------------ a real (tiny) ablation


@pytest.mark.slow
def test_a_tiny_ablation_writes_the_table_and_reuses_its_runs(tmp_path, tiny_bert_dir, monkeypatch):
    settings = tiny_train_config(tmp_path, tiny_bert_dir, epochs=1, panels=0).to_dict()
    for name in ("output_dir", "seed", "resume", "overwrite", "resume_with_changes"):
        settings.pop(name)
    (tmp_path / "tiny.json").write_text(json.dumps(settings))
    out = tmp_path / "ablation"
    argv = ["--config", str(tmp_path / "tiny.json"), "--rows", "Base", "Full", "--seeds", "0", "1",
            "--output-dir", str(out)]
    text = ablation.main(argv)
    assert text.startswith("Synthetic test split, best-on-val checkpoint (val mIoU), 1 epoch x batch 4")
    assert "| row | Pr@0.5 | Pr@0.6 | Pr@0.7 | Pr@0.8 | Pr@0.9 | oIoU | mIoU | U AUROC |" in text
    assert (out / "ablation.md").read_text() == text
    payload = json.loads((out / "ablation.json").read_text())
    assert payload["rows"] == ["Base", "Full"] and payload["seeds"] == [0, 1] and payload["split"] == "test"
    for row, fusion in (("Base", False), ("Full", True)):
        runs = payload["results"][row]
        assert len(runs) == 2 and all(r["count"] == 7 for r in runs)
        for seed, run in zip((0, 1), runs, strict=True):
            folder = out / f"{row}-seed{seed}"
            metrics = json.loads((folder / "metrics.json").read_text())
            assert metrics["results"]["test"]["mIoU"] == run["mIoU"] and metrics["seed"] == seed
            assert json.loads((folder / "config.json").read_text())["model"]["use_fusion"] is fusion
        assert payload["summary"][row]["mIoU"]["n"] == 2
    assert "unc/AUROC" not in payload["summary"]["Base"] and "unc/AUROC" in payload["summary"]["Full"]

    # run again: every run is read back, none trained
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    with monkeypatch.context() as patch:
        patch.setattr(ablation, "build_trainer", no_training)
        assert ablation.main(argv) == text
    # other settings in the same folder: refused, not mixed in
    with pytest.raises(SystemExit, match=r"holds a finished run with other settings:\n  lr: 0\.001 -> 0\.002"):
        ablation.main([*argv, "--lr", "0.002"])
    # an unfinished run (no metrics.json yet) resumes from its checkpoint
    (out / "Full-seed1" / "metrics.json").unlink()
    assert ablation.main(argv) == text
    log = [json.loads(line) for line in (out / "Full-seed1" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r.get("event") == "resumed"] == [4]
