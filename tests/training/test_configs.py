"""The shipped config files (configs/): each loads and resolves to the paper's recipe for its dataset
and the model of its Table V row; several --config files combine, a later one winning."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from uncertainty_rrsis.training import (
    TrainConfig,
    build_arg_parser,
    build_model_config,
    config_from_args,
)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
DATASETS = {"rrsisd": "rrsisd", "refsegrs": "refsegrs", "risbench": "risbench"}
ROWS = {"base": (False, False), "ugf": (True, False), "udlr": (False, True), "full": (True, True)}
PAPER = {"lr": 5e-5, "weight_decay": 0.01, "poly_power": 0.9, "epochs": 40, "batch_size": 32, "grad_clip": None,
         "unc_warmup_steps": 1000}
# what the command line adds: the data root and the weights live on the machine, not in the files
MACHINE = ("--data-root", "/data/somewhere", "--vision-weights", "/weights/convnext_base.safetensors",
           "--text-weights", "/weights/bert-base-uncased")


def cli(*flags: str) -> TrainConfig:
    return config_from_args(build_arg_parser().parse_args(list(flags)))


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


@pytest.mark.parametrize("row", sorted(ROWS))
def test_a_row_file_alone_keeps_the_synthetic_default(row):
    cfg = cli("--config", str(CONFIGS / "rows" / f"{row}.yaml"))
    assert cfg == TrainConfig(model={"use_fusion": ROWS[row][0], "use_refinement": ROWS[row][1]})


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
    assert "--config FILE [FILE ...]" in text and "a later file wins over an earlier one" in text


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
