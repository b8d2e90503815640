"""Training settings: one precedence order (flags > file > preset recipe > preset defaults) for
Python and the CLI, model settings in the model config, run folders' config.json fed back; and the
bundled config files (uncertainty_rrsis/configs/, given by name): each loads and resolves to its
dataset's recipe and the model of its Table V row, several --config files combine, a later one
winning."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

from uncertainty_rrsis.models import preset_recipe
from uncertainty_rrsis.training import (
    DEFAULT_RECIPE,
    TrainConfig,
    build_arg_parser,
    build_model_config,
    bundled_configs,
    config_from_args,
    load_config_file,
)


def cli(*flags: str) -> TrainConfig:
    return config_from_args(build_arg_parser().parse_args(list(flags)))


@pytest.fixture()
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ------------------------------------------------------------------ Python and CLI agree


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_python_and_cli_resolve_to_the_same_configs(preset, no_warnings):
    python = TrainConfig(preset=preset)
    command_line = cli("--preset", preset)
    assert python == command_line
    assert build_model_config(python) == build_model_config(command_line)


def test_paper_from_python_is_the_paper_recipe():
    cfg = TrainConfig(preset="paper")
    assert (cfg.lr, cfg.weight_decay, cfg.poly_power, cfg.epochs, cfg.batch_size) == (5e-5, 0.01, 0.9, 40, 32)
    assert (cfg.grad_clip, cfg.unc_warmup_steps, cfg.checkpoint_every, cfg.panels) == (None, 1000, 1000, 16)
    model = build_model_config(cfg)
    assert (model.image_size, model.text.max_tokens, model.text.freeze) == (480, 20, False)


def test_tiny_from_python_is_the_embedded_default_recipe():
    cfg = TrainConfig()
    assert {name: getattr(cfg, name) for name in DEFAULT_RECIPE} == {**DEFAULT_RECIPE, **preset_recipe("tiny")}
    assert cfg.lr_warmup_steps == preset_recipe("tiny")["lr_warmup_steps"] == 100  # the tiny recipe's warm-up
    text = build_model_config(cfg).text  # what `python examples/train.py` trains: a text encoder learnt from scratch
    assert (text.name, text.pretrained, text.freeze) == ("from-scratch", False, False)


# ------------------------------------------------------------------ each level wins over the next


def test_recipe_wins_over_preset_defaults():
    assert TrainConfig(preset="tiny").lr_warmup_steps == 100 != DEFAULT_RECIPE["lr_warmup_steps"]
    assert TrainConfig(preset="tiny", lr_warmup_steps=0).lr_warmup_steps == 0  # a keyword wins over the recipe
    assert TrainConfig(preset="paper").lr == preset_recipe("paper")["lr"] != DEFAULT_RECIPE["lr"]


def test_config_file_wins_over_recipe(tmp_path):
    (tmp_path / "run.yaml").write_text("preset: paper\nlr: 0.0001\nfreeze-text: true\nmodel:\n  dim: 128\n")
    cfg = cli("--config", str(tmp_path / "run.yaml"))
    assert cfg.lr == 1e-4 and cfg.epochs == 40  # the file's value, the recipe's value
    model = build_model_config(cfg)
    assert model.text.freeze is True and model.dim == 128 and model.image_size == 480


def test_file_shortcut_wins_over_the_tiny_recipe(tmp_path):
    (tmp_path / "run.toml").write_text("freeze_text = false\n[model.text]\nmax_tokens = 16\n")
    model = build_model_config(cli("--config", str(tmp_path / "run.toml")))
    assert model.text.freeze is False and model.text.max_tokens == 16


def test_flags_win_over_config_file(tmp_path):
    (tmp_path / "run.yaml").write_text(
        "preset: paper\nlr: 0.0001\nfreeze-text: true\nmodel:\n  dim: 128\n  text:\n    lr_multiplier: 0.1\n")
    cfg = cli("--config", str(tmp_path / "run.yaml"), "--lr", "2e-4", "--freeze-text", "false",
              "--model", '{"text": {"max_tokens": 12}}')
    assert cfg.lr == 2e-4 and cfg.epochs == 40
    model = build_model_config(cfg)
    assert model.text.freeze is False and model.text.max_tokens == 12  # the flags
    assert model.dim == 128 and model.text.lr_multiplier == 0.1  # the file's other overrides merge in


def test_a_shortcut_wins_over_model_overrides_of_its_level():
    cfg = cli("--model", '{"use_fusion": true, "image_size": 96}', "--use-fusion", "false")
    model = build_model_config(cfg)
    assert model.use_fusion is False and model.image_size == 96


def test_flag_preset_picks_the_recipe_over_the_file_preset(tmp_path):
    (tmp_path / "run.yaml").write_text("preset: tiny\n")
    cfg = cli("--config", str(tmp_path / "run.yaml"), "--preset", "paper")
    assert cfg.preset == "paper" and cfg.lr == 5e-5


def test_text_weights_shortcut_sets_a_pretrained_text_encoder():
    model = build_model_config(cli("--text-weights", "/weights/bert", "--vision-weights", "convnext.safetensors"))
    assert (model.text.name, model.text.pretrained, model.vision.weights) == ("/weights/bert", True,
                                                                              "convnext.safetensors")


# ------------------------------------------------------------------ model shortcuts are settings of files and flags


def test_model_settings_are_not_training_keywords():
    with pytest.raises(TypeError, match="unexpected keyword argument 'use_fusion'"):
        TrainConfig(use_fusion=False)
    assert TrainConfig.from_dict({"use_fusion": False}).model["use_fusion"] is False  # a file's key is translated


def test_config_files_take_shortcut_keys_without_a_warning(tmp_path, no_warnings):
    (tmp_path / "run.yaml").write_text("use-fusion: false\nimage-size: 96\n")
    cfg = cli("--config", str(tmp_path / "run.yaml"))
    assert cfg.model["use_fusion"] is False and build_model_config(cfg).image_size == 96


# ------------------------------------------------------------------ dict round trip, replace, validation


def test_to_dict_from_dict_round_trip(no_warnings):
    cfg = TrainConfig(preset="paper", lr=3e-5, model={"dim": 128}, dataset="rrsisd", data_root="/data")
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and build_model_config(again) == build_model_config(cfg)


def test_the_config_owns_its_model_overrides():
    mine = {"vision": {"weights": "a.pth"}}
    cfg = TrainConfig(preset="paper", model=mine)
    cfg.model["vision"]["weights"] = "b.pth"
    cfg.model["text"]["max_tokens"] = 12  # the recipe's override, now this config's own
    recipe_model = {"image_size": 480, "text": {"max_tokens": 20}}
    assert mine == {"vision": {"weights": "a.pth"}} and preset_recipe("paper")["model"] == recipe_model
    assert TrainConfig(preset="paper").model == recipe_model


def test_replace_merges_model_overrides():
    cfg = TrainConfig(model={"dim": 32, "text": {"max_tokens": 12}})
    other = cfg.replace(seed=4, model={"use_fusion": False, "text": {"freeze": False}})
    assert other.seed == 4 and cfg.seed == 0
    assert other.model == {"dim": 32, "use_fusion": False, "text": {"max_tokens": 12, "freeze": False}}


def test_unknown_keys_and_datasets_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown training config keys \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 1.0})
    with pytest.raises(ValueError, match=r"--dataset: unknown dataset 'nope'; known datasets: refsegrs, risbench"):
        TrainConfig(dataset="nope").validate()
    with pytest.raises(ValueError, match=r"CroBIMUConfig: unknown field\(s\) \['dimension'\]"):
        build_model_config(TrainConfig(model={"dimension": 3}))
    with pytest.raises(TypeError, match=r"TrainConfig\.model must be a mapping"):
        TrainConfig(model=[1, 2])


def test_help_lists_model_shortcuts_as_model_settings():
    text = build_arg_parser().format_help()
    model_part = text[text.index("model settings:"):]
    for flag, home in (("--use-fusion", "use_fusion"), ("--freeze-text", "text.freeze"),
                       ("--image-size", "image_size"), ("--text-lr-multiplier", "text.lr_multiplier")):
        assert flag in model_part and f"model setting {home}" in " ".join(model_part.split())
    assert "the preset recipe's: paper 5e-05, tiny 0.001" in " ".join(text.split())


# ------------------------------------------------------------------ a run folder's config.json, unchanged


def run_config_payload(cfg: TrainConfig) -> dict:
    """What ``Trainer.fit`` writes to ``<output_dir>/config.json``."""
    return {"train": cfg.to_dict(), "model": build_model_config(cfg).to_dict(),
            "environment": {"torch": "x", "python": "y"}}


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_run_config_json_loads_back_to_the_same_configs(tmp_path, preset, no_warnings):
    cfg = TrainConfig(preset=preset, lr=2e-4, model={"use_refinement": False, "text": {"max_tokens": 16}},
                      output_dir=str(tmp_path / "run"), resume=True)
    (tmp_path / "config.json").write_text(json.dumps(run_config_payload(cfg), indent=2))
    again = cli("--config", str(tmp_path / "config.json"))
    assert again.resume is False  # a choice of each invocation: pass --resume to continue the run
    assert again == TrainConfig.from_dict({**cfg.to_dict(), "resume": False})
    assert build_model_config(again) == build_model_config(cfg)
    resumed = cli("--config", str(tmp_path / "config.json"), "--resume", "--output-dir", str(tmp_path / "b"))
    assert resumed.resume is True and resumed.output_dir == str(tmp_path / "b") and resumed.lr == 2e-4


def test_run_config_model_section_wins_when_it_differs(tmp_path, no_warnings):
    cfg = TrainConfig(model={"dim": 32})
    payload = run_config_payload(cfg)
    payload["model"]["decoder"]["num_layers"] = 5  # edited by hand
    (tmp_path / "config.json").write_text(json.dumps(payload))
    model = build_model_config(cli("--config", str(tmp_path / "config.json")))
    assert model.decoder.num_layers == 5 and model.dim == 32
    assert model.to_dict() == payload["model"]
    flagged = build_model_config(cli("--config", str(tmp_path / "config.json"), "--use-fusion", "false"))
    assert flagged.use_fusion is False and flagged.decoder.num_layers == 5


def test_run_config_with_foreign_sections_is_an_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"train": {}, "model": {}, "extra": 1}))
    with pytest.raises(ValueError, match=r"run's config\.json.*\['extra'\]"):
        load_config_file(tmp_path / "config.json")


def test_the_loss_knobs_reach_the_criterion(tiny_bert_dir, tmp_path):
    from uncertainty_rrsis.training import build_trainer

    from helpers.tiny import tiny_train_config

    cfg = tiny_train_config(tmp_path, tiny_bert_dir, unc_hard_sample_weight=2.0, unc_hard_iou_threshold=0.3,
                            unc_target_blur=3, unc_pixel_weighting=False, unc_warmup_steps=7, lambda_unc=0.5,
                            lambda_ref=0.0)
    loss = build_trainer(cfg).criterion
    unc = loss.uncertainty_loss
    assert (unc.hard_sample_weight, unc.hard_iou_threshold, unc.blur_kernel_size, unc.pixel_weighting,
            unc.warmup_steps) == (2.0, 0.3, 3, False, 7)
    assert (loss.lambda_unc, loss.lambda_ref) == (0.5, 0.0)


def test_loss_knobs_on_the_command_line_and_their_checks():
    from uncertainty_rrsis.training import build_arg_parser, config_from_args

    parser = build_arg_parser()
    cfg = config_from_args(parser.parse_args(["--unc-warmup-fraction", "0.05", "--unc-target-blur", "5",
                                              "--unc-pixel-weighting", "false", "--unc-hard-iou-threshold", "0.4"]))
    assert (cfg.unc_warmup_fraction, cfg.unc_target_blur, cfg.unc_pixel_weighting, cfg.unc_hard_iou_threshold) == (
        0.05, 5, False, 0.4)
    with pytest.raises(ValueError, match="unc-target-blur must be an odd"):
        config_from_args(parser.parse_args(["--unc-target-blur", "4"]))
    with pytest.raises(ValueError, match=r"unc-warmup-fraction must be in \[0, 1\]; got 2.0"):
        config_from_args(parser.parse_args(["--unc-warmup-fraction", "2"]))


@pytest.mark.slow
def test_warmup_fraction_is_a_share_of_the_run(tiny_bert_dir, tmp_path):
    import json

    from uncertainty_rrsis.training import build_trainer

    from helpers.tiny import tiny_train_config

    cfg = tiny_train_config(tmp_path, tiny_bert_dir, unc_warmup_fraction=0.5, unc_warmup_steps=0, log_every=1,
                            eval_splits="", panels=0)
    trainer = build_trainer(cfg)
    assert trainer.criterion.uncertainty_loss.warmup_steps == 4  # half of the run's 8 steps, resolved when built
    trainer.fit()
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    unc = {r["step"]: r["loss/unc"] for r in log if "loss/unc" in r}
    assert all(unc[s] == 0 for s in (1, 2, 3, 4)) and all(unc[s] > 0 for s in (6, 7, 8))


@pytest.mark.slow
def test_a_run_logs_where_its_time_went(tiny_bert_dir, tmp_path, capsys):
    import json

    from uncertainty_rrsis.training import build_trainer

    from helpers.tiny import tiny_train_config

    build_trainer(tiny_train_config(tmp_path, tiny_bert_dir, panels=0)).fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    times = [r for r in records if r.get("event") == "time"]
    assert len(times) == 1
    phases = times[0]
    for phase in ("data preparation", "loading", "steps", "validation", "checkpoints", "final evaluation"):
        assert phases[f"time/{phase}"] >= 0, phase
    assert phases["time/steps"] > 0 and phases["time/total"] >= sum(
        v for k, v in phases.items() if k.startswith("time/") and k != "time/total") - 0.1
    assert "time: " in capsys.readouterr().out


REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "uncertainty_rrsis" / "configs"
DATASETS = {"rrsisd": "rrsisd", "refsegrs": "refsegrs", "risbench": "risbench"}
ROWS = {"base": (False, False), "ugf": (True, False), "udlr": (False, True), "full": (True, True)}
PAPER = {"lr": 5e-5, "weight_decay": 0.01, "poly_power": 0.9, "epochs": 40, "batch_size": 32, "grad_clip": None,
         "unc_warmup_steps": 1000}
# what the command line adds: the data root and the weights live on the machine, not in the files
MACHINE = ("--data-root", "/data/somewhere", "--vision-weights", "/weights/convnext_base.safetensors",
           "--text-weights", "/weights/bert-base-uncased")


def test_the_shipped_files_are_the_three_datasets_and_the_four_rows():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(f"{name}.yaml" for name in DATASETS)
    assert sorted(p.name for p in (CONFIGS / "rows").glob("*.yaml")) == sorted(f"{row}.yaml" for row in ROWS)
    assert sorted(p.name for p in CONFIGS.rglob("*") if p.is_file() and p.suffix != ".yaml") == []


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_a_dataset_file_resolves_to_the_paper_recipe_on_its_dataset(name):
    cfg = cli("--config", str(CONFIGS / f"{name}.yaml"), *MACHINE)
    assert cfg.dataset == DATASETS[name] and cfg.preset == "paper"
    assert {key: getattr(cfg, key) for key in PAPER} == PAPER
    assert (cfg.select_metric, cfg.eval_splits, cfg.output_dir) == ("mIoU", "test", f"runs/{name}")
    assert (cfg.data_root, cfg.precision, cfg.num_workers) == ("/data/somewhere", "auto", "auto")
    model = build_model_config(cfg)
    assert (model.image_size, model.text.max_tokens, model.dim, model.vision.name) == (480, 20, 256, "convnext_base")
    assert (model.use_fusion, model.use_refinement) == (True, True)  # the full model unless a row says otherwise
    assert (model.vision.weights, model.text.name, model.text.pretrained) == (
        "/weights/convnext_base.safetensors", "/weights/bert-base-uncased", True)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_a_dataset_file_needs_the_data_root_from_the_command_line(name):
    with pytest.raises(ValueError, match=f"--dataset {DATASETS[name]} needs --data-root"):
        cli("--config", str(CONFIGS / f"{name}.yaml"))


@pytest.mark.parametrize("row", sorted(ROWS))
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_a_row_file_after_a_dataset_file_sets_the_row_and_keeps_the_recipe(name, row):
    cfg = cli("--config", str(CONFIGS / f"{name}.yaml"), str(CONFIGS / "rows" / f"{row}.yaml"), *MACHINE)
    assert cfg.dataset == DATASETS[name] and {key: getattr(cfg, key) for key in PAPER} == PAPER
    model = build_model_config(cfg)
    assert (model.use_fusion, model.use_refinement) == ROWS[row]
    assert model.variant == {"base": "Base", "ugf": "+UGF", "udlr": "+UDLR", "full": "Full"}[row]
    assert model.image_size == 480


def test_bundled_configs_are_given_by_name():
    by_path = cli("--config", str(CONFIGS / "rrsisd.yaml"), str(CONFIGS / "rows" / "base.yaml"), *MACHINE)
    assert cli("--config", "rrsisd", "rows/base", *MACHINE) == by_path
    assert cli("--config", "rrsisd.yaml", "rows/base.yaml", *MACHINE) == by_path
    assert bundled_configs() == ["refsegrs", "risbench", "rows/base", "rows/full", "rows/udlr", "rows/ugf", "rrsisd"]
    with pytest.raises(FileNotFoundError, match="config file not found: rrsis; expected a file, or the name of a "
                                                "bundled config: refsegrs, risbench, rows/base"):
        cli("--config", "rrsis")


def test_a_file_wins_over_a_bundled_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rrsisd").write_text("{}")  # no suffix: not a format it reads, so it must have been chosen
    with pytest.raises(ValueError, match="must end in .yaml"):
        cli("--config", "rrsisd")


def test_base_with_risk_heads_says_what_to_change():
    with pytest.raises(ValueError, match="the risk heads read the uncertainty map, which Base"):
        build_model_config(cli("--use-fusion", "false", "--use-refinement", "false"))


@pytest.mark.parametrize("row", sorted(ROWS))
def test_a_row_file_alone_keeps_the_synthetic_default(row):
    cfg = cli("--config", str(CONFIGS / "rows" / f"{row}.yaml"))
    heads = {"risk_head": False, "pixel_risk_head": False} if row == "base" else {}  # Base has no U for them
    assert cfg == TrainConfig(model={"use_fusion": ROWS[row][0], "use_refinement": ROWS[row][1], **heads})
    assert build_model_config(cfg).variant  # the row's model config is valid on the default preset


# ------------------------------------------------------------------ several --config files


def test_a_later_config_file_wins_and_flags_win_over_all(tmp_path):
    (tmp_path / "a.yaml").write_text("preset: paper\nlr: 0.0001\nepochs: 3\nmodel:\n  dim: 128\n  text:\n"
                                     "    max_tokens: 16\n")
    (tmp_path / "b.toml").write_text("lr = 0.0002\nuse_fusion = false\n[model.text]\nfreeze = true\n")
    for flags in (["--config", str(tmp_path / "a.yaml"), str(tmp_path / "b.toml")],
                  ["--config", str(tmp_path / "a.yaml"), "--config", str(tmp_path / "b.toml")]):
        cfg = cli(*flags)
        assert (cfg.lr, cfg.epochs, cfg.batch_size) == (2e-4, 3, 32)  # b, a, the paper recipe
        model = build_model_config(cfg)
        assert (model.dim, model.text.max_tokens, model.text.freeze, model.use_fusion) == (128, 16, True, False)
    cfg = cli("--config", str(tmp_path / "b.toml"), str(tmp_path / "a.yaml"))
    assert cfg.lr == 1e-4  # the other order: a wins
    cfg = cli("--config", str(tmp_path / "a.yaml"), str(tmp_path / "b.toml"), "--lr", "3e-4", "--use-fusion")
    assert cfg.lr == 3e-4 and build_model_config(cfg).use_fusion is True


def test_a_run_config_json_and_a_row_file_on_top(tmp_path):
    run = TrainConfig(preset="paper", dataset="rrsisd", data_root="/data/rrsisd", lr=3e-5,
                      model={"decoder": {"num_layers": 5}})
    (tmp_path / "config.json").write_text(json.dumps(
        {"train": run.to_dict(), "model": build_model_config(run).to_dict(), "environment": {}}))
    again = cli("--config", str(tmp_path / "config.json"))
    assert again == run and build_model_config(again) == build_model_config(run)  # re-runs the run unchanged
    base = cli("--config", str(tmp_path / "config.json"), str(CONFIGS / "rows" / "base.yaml"))
    model = build_model_config(base)
    assert (model.use_fusion, model.use_refinement, model.decoder.num_layers) == (False, False, 5)
    assert base.lr == 3e-5 and base.dataset == "rrsisd"


def test_help_says_several_config_files_combine():
    text = " ".join(build_arg_parser().format_help().split())
    assert "--config FILE [FILE ...]" in text and "a later one wins over an earlier one" in text
    assert "bundled configs by name (rrsisd, refsegrs, risbench, rows/base" in text


# ------------------------------------------------------------------ the documented layouts are the readers'


@pytest.mark.parametrize(("heading", "name"), [("RRSIS-D", "rrsisd"), ("RefSegRS", "refsegrs"),
                                               ("RISBench", "risbench")])
def test_the_datasets_page_shows_each_readers_layout(heading, name):
    from uncertainty_rrsis.data import get_dataset_class

    paths = [line.split()[0] for line in get_dataset_class(name).layout.splitlines()
             if line.startswith("    ") and not line.startswith("     ")]
    assert len(paths) >= 3
    page = (REPO / "docs" / "datasets.md").read_text()
    section = page[page.index(f"\n## {heading}\n"):]
    section = section[:section.index("\n## ", 1)]
    block = section[section.index("```text"):]
    for path in paths:
        assert re.search(rf"\n  {re.escape(path)}[ \n]", block), (name, path)
    assert "as stated in" in " ".join(section.lower().split())  # where it is published, in the source's words
    table = (REPO / "docs" / "training.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith(f"| {heading} | `{name}` |"))
    for path in paths:
        if "/" in path:  # folders and files inside them: the table names them up to the first placeholder
            assert f"`{path.split('<')[0]}`" in row, (row, path)


def test_frozen_text_encoder_swaps_the_tiny_text_encoder():
    from uncertainty_rrsis.training import frozen_text_encoder

    assert frozen_text_encoder(None) == ({}, {})
    model, train = frozen_text_encoder("sentence-transformers/all-MiniLM-L6-v2")
    cfg = TrainConfig(model=model, **train)
    text = build_model_config(cfg).text
    assert (text.name, text.pretrained, text.freeze) == ("sentence-transformers/all-MiniLM-L6-v2", True, True)
    assert cfg.lr_warmup_steps == 0 and TrainConfig().lr_warmup_steps == 100
