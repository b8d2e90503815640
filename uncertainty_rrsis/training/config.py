"""The training configuration: one dataclass, also readable from YAML or TOML, and its CLI.

Every field becomes a ``--flag`` of ``examples/train.py`` with the help text below, and a key
of a config file (``--config run.yaml``). Flags given on the command line win over the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["TrainConfig", "PRESET_RECIPES", "build_arg_parser", "config_from_args", "load_config_file"]

DATASETS = ("synthetic", "rrsisd", "refsegrs", "risbench")


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``config.json`` in the run folder."""

    # data
    dataset: str = _opt("synthetic", "dataset: synthetic (generated on first use), rrsisd, refsegrs or risbench",
                        choices=DATASETS)
    data_root: str | None = _opt(None, "dataset root folder (required for the real datasets)")
    cache_dir: str = _opt(".cache/uncertainty_rrsis", "where the synthetic benchmark is generated once")
    synthetic_train: int = _opt(3000, "synthetic: training samples")
    synthetic_val: int = _opt(300, "synthetic: validation samples")
    synthetic_test: int = _opt(600, "synthetic: test samples")
    synthetic_seed: int = _opt(0, "synthetic: generator seed")
    image_size: int | None = _opt(None, "square input size; default: the preset's (128 tiny, 480 paper)")
    max_tokens: int = _opt(20, "sentence length in tokens, [CLS] and [SEP] included")
    num_workers: int = _opt(0, "DataLoader worker processes per rank")
    # model
    preset: str = _opt("tiny", "model preset: tiny (CPU) or paper (ConvNeXt-B + BERT-base)")
    vision_weights: str | None = _opt(None, "local timm weights file for the vision backbone (.safetensors/.pth)")
    text_weights: str | None = _opt(None, "local folder of a transformers text encoder (from_pretrained layout)")
    use_fusion: bool = _opt(True, "add UGF (Eq. 9-12)")
    use_refinement: bool = _opt(True, "add UDLR (Eq. 13-16)")
    freeze_text: bool = _opt(False, "freeze the text encoder")
    text_lr_multiplier: float = _opt(1.0, "learning-rate multiplier of the text encoder")
    vision_lr_multiplier: float = _opt(1.0, "learning-rate multiplier of the vision backbone")
    model: dict | None = _opt(None, "JSON dict of model-config overrides, e.g. '{\"dim\": 32}' (merged into the preset)")
    sync_bn: bool = _opt(False, "convert BatchNorm layers to SyncBatchNorm under DDP")
    # optimisation
    epochs: int = _opt(5, "training epochs")
    max_steps: int | None = _opt(None, "stop after this many optimizer steps (overrides epochs)")
    batch_size: int = _opt(16, "TOTAL batch size over all processes and accumulation steps")
    grad_accumulation: int = _opt(1, "micro-batches per optimizer step")
    lr: float = _opt(1e-3, "peak learning rate (AdamW)")
    weight_decay: float = _opt(0.01, "AdamW weight decay")
    poly_power: float = _opt(0.9, "power of the per-iteration polynomial decay")
    lr_warmup_steps: int = _opt(0, "linear learning-rate warm-up steps")
    grad_clip: float | None = _opt(1.0, "clip the gradient norm to this value (none: no clipping)")
    lambda_unc: float = _opt(1.0, "weight of L_unc (Eq. 18)")
    lambda_ref: float = _opt(1.0, "weight of L_seg(P_ref) (Eq. 18)")
    unc_warmup_steps: int = _opt(100, "L_unc is zero for the first N optimizer steps")
    amp: bool = _opt(True, "bf16 autocast on CUDA (ignored on CPU)")
    seed: int = _opt(0, "random seed")
    device: str = _opt("auto", "auto, cuda or cpu")
    compile: bool = _opt(False, "torch.compile the model")
    # bookkeeping
    output_dir: str = _opt("runs/default", "run folder: config, checkpoints, logs, metrics, panels")
    resume: bool = _opt(False, "continue from <output_dir>/checkpoints/last")
    checkpoint_every: int = _opt(200, "write the resumable checkpoint every N optimizer steps")
    eval_every: int = _opt(0, "evaluate on val every N steps (0: once per epoch)")
    log_every: int = _opt(10, "append to log.jsonl every N optimizer steps")
    panels: int = _opt(8, "test samples drawn as PNG panels at the end")
    progress: bool = _opt(True, "show progress bars (rank 0)")
    tensorboard: bool = _opt(True, "log to TensorBoard when the tensorboard package is installed")
    eval_splits: str = _opt("test", "comma-separated splits evaluated at the end with the best checkpoint")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"--dataset must be one of {DATASETS}; got {self.dataset!r}")
        if self.dataset != "synthetic" and not self.data_root:
            raise ValueError(f"--dataset {self.dataset} needs --data-root PATH (the folder holding the dataset)")
        for name in ("batch_size", "grad_accumulation", "epochs", "checkpoint_every", "log_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive; got {getattr(self, name)}")


# The paper's recipe (AdamW 5e-5, wd 0.01, poly 0.9 per iteration, 40 epochs, total batch 32, 480x480).
PRESET_RECIPES: dict[str, dict[str, Any]] = {
    # the embedded default: 128 px, frozen pretrained MiniLM, 935 steps of 16 on 3,000 synthetic samples
    "tiny": {"freeze_text": True},
    "paper": {"lr": 5e-5, "weight_decay": 0.01, "poly_power": 0.9, "epochs": 40, "batch_size": 32,
              "image_size": 480, "max_tokens": 20, "unc_warmup_steps": 1000, "grad_clip": None,
              "checkpoint_every": 1000, "panels": 16},
}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml), TOML (.toml) or JSON config file into a dict of TrainConfig keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    elif path.suffix == ".toml":
        import tomllib

        data = tomllib.loads(text)
    elif path.suffix == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"config file {path} must end in .yaml, .yml, .toml or .json")
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of option names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false); got {text!r}")


def _optional(kind):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def build_arg_parser(description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one ``--flag`` per :class:`TrainConfig` field (defaults shown)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=None, help="YAML / TOML / JSON file of options (flags win over it)")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        kind = {bool: _bool, int: int, float: float, str: str, dict: json.loads}
        annotation = str(f.type)
        base = next((t for name, t in (("bool", bool), ("int", int), ("float", float), ("str", str), ("dict", dict))
                     if annotation.startswith(name)), str)
        parse = kind[base] if "None" not in annotation else _optional(kind[base])
        extra: dict[str, Any] = {"nargs": "?", "const": True} if base is bool else {}
        parser.add_argument(flag, type=parse, default=argparse.SUPPRESS,
                            metavar="BOOL" if base is bool else base.__name__.upper(),
                            choices=f.metadata.get("choices"), help=f"{f.metadata['help']} (default: {default})",
                            **extra)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merge, in increasing priority: dataclass defaults, the preset's recipe, the config file, the flags."""
    given = {k: v for k, v in vars(args).items() if k != "config"}
    from_file = load_config_file(args.config) if getattr(args, "config", None) else {}
    preset = given.get("preset", from_file.get("preset", TrainConfig.preset))
    merged = {**PRESET_RECIPES.get(preset, {}), **from_file, **given}
    config = TrainConfig.from_dict(merged)
    config.validate()
    return config
