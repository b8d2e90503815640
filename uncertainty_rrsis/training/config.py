"""The training settings: :class:`TrainConfig`, its command line, config files, one precedence order.

Two homes, one per kind of setting:

* **model settings** (what the network is: fusion / refinement switches, image size, token
  count, encoder weights, freezing, learning-rate multipliers of the encoders, widths ...) live
  in the model config, :class:`~uncertainty_rrsis.models.CroBIMUConfig` and its sub-configs.
  A run names a model ``preset`` and gives ``model``, a mapping of overrides merged into it
  (a nested dict merges into a sub-config, as in ``get_preset(name, **overrides)``);
* **training settings** (data, optimisation, schedule, bookkeeping) are the fields of
  :class:`TrainConfig`.

One precedence order, the same from Python and from the command line, highest first:

1. command-line flags (from Python: the keywords given to ``TrainConfig``);
2. the config files (``--config run.yaml``, or a run folder's ``config.json``; with several files,
   ``--config a.yaml b.yaml``, a later file wins over an earlier one);
3. the preset's training recipe (:data:`PRESET_RECIPES`);
4. the preset's defaults (the model preset itself, :data:`DEFAULT_RECIPE`, the field defaults).

Training fields whose default depends on the recipe (learning rate, epochs, batch size, ...)
default to "unset" and are filled from the recipe when a ``TrainConfig`` is built, so
``TrainConfig(preset="paper")`` is the paper's recipe exactly as ``--preset paper`` is.

The flags ``--use-fusion``, ``--use-refinement``, ``--image-size``, ``--max-tokens``,
``--vision-weights``, ``--text-weights``, ``--freeze-text``, ``--text-lr-multiplier`` and
``--vision-lr-multiplier`` (and the same keys in a config file) are shortcuts that write into the
model overrides of their level; at one level they win over ``model``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "TrainConfig",
    "PRESET_RECIPES",
    "DEFAULT_RECIPE",
    "MODEL_SHORTCUTS",
    "RESUME_MAY_CHANGE",
    "RESUME_MAY_CHANGE_MODEL",
    "build_arg_parser",
    "config_from_args",
    "config_files",
    "load_config_file",
    "merge_settings",
    "PRECISIONS",
    "SELECT_METRICS",
]


class _Unset:
    """The default of a field that the preset's recipe fills in."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<from the preset recipe>"

    def __reduce__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()

#: Training values of the recipe fields for a preset that does not set them (``tiny``'s values).
DEFAULT_RECIPE: dict[str, Any] = {
    "lr": 1e-3,
    "weight_decay": 0.01,
    "poly_power": 0.9,
    "epochs": 5,
    "batch_size": 16,
    "grad_clip": 1.0,
    "unc_warmup_steps": 100,
    "checkpoint_every": 200,
    "panels": 8,
}

#: Each preset's training recipe: values of recipe fields, and ``model`` overrides of the recipe.
PRESET_RECIPES: dict[str, dict[str, Any]] = {
    # the embedded default: 128 px, frozen pretrained MiniLM, 935 steps of 16 on 3,000 synthetic samples
    "tiny": {"model": {"text": {"freeze": True}}},
    # the paper's recipe: AdamW 5e-5, wd 0.01, poly 0.9 per iteration, 40 epochs, total batch 32, 480x480, 20 tokens
    "paper": {"lr": 5e-5, "weight_decay": 0.01, "poly_power": 0.9, "epochs": 40, "batch_size": 32,
              "unc_warmup_steps": 1000, "grad_clip": None, "checkpoint_every": 1000, "panels": 16,
              "model": {"image_size": 480, "text": {"max_tokens": 20}}},
}


@dataclass(frozen=True)
class _Shortcut:
    """A flag that writes one model setting: ``path`` inside the model config."""

    path: tuple[str, ...]
    kind: type
    help: str


#: The model-setting shortcuts: flag / key name -> where it writes in the model config.
MODEL_SHORTCUTS: dict[str, _Shortcut] = {
    "use_fusion": _Shortcut(("use_fusion",), bool, "add UGF (Eq. 9-12)"),
    "use_refinement": _Shortcut(("use_refinement",), bool, "add UDLR (Eq. 13-16)"),
    "image_size": _Shortcut(("image_size",), int, "square input size (tiny 128, paper 480)"),
    "max_tokens": _Shortcut(("text", "max_tokens"), int, "sentence length in tokens, [CLS] and [SEP] included"),
    "vision_weights": _Shortcut(("vision", "weights"), str,
                                "local timm weights file for the vision backbone (.safetensors/.pth)"),
    "text_weights": _Shortcut(("text", "name"), str,
                              "local folder of a transformers text encoder (from_pretrained layout); "
                              "also sets text.pretrained=true"),
    "freeze_text": _Shortcut(("text", "freeze"), bool, "freeze the text encoder"),
    "text_lr_multiplier": _Shortcut(("text", "lr_multiplier"), float, "learning-rate multiplier of the text encoder"),
    "vision_lr_multiplier": _Shortcut(("vision", "lr_multiplier"), float,
                                      "learning-rate multiplier of the vision backbone"),
}

#: The values of ``--precision``: ``auto`` is bf16 autocast on CUDA and float32 on the CPU.
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")

#: The validation metrics that ``--select-metric`` can choose the best checkpoint by.
SELECT_METRICS: tuple[str, ...] = ("mIoU", "oIoU")

# Keys of a run folder's config.json that describe one invocation, not the run: dropped on load.
_INVOCATION_KEYS = ("resume", "overwrite", "resume_with_changes")

#: Training settings that ``--resume`` accepts changed: they do not change what the run computes.
#: Bookkeeping (where and how often it writes, what it shows, which splits the final evaluation
#: scores, how many panels it draws) and where it executes (device, loader workers,
#: ``torch.compile``, the cache of the synthetic data, whose content is fixed by the
#: ``synthetic_*`` settings). Every other setting, and the model config but for the file of the
#: initial vision weights, must match the run's (or be accepted with ``--resume-with-changes``).
RESUME_MAY_CHANGE: frozenset[str] = frozenset({
    # invocation
    "output_dir", "resume", "overwrite", "resume_with_changes",
    # bookkeeping
    "checkpoint_every", "log_every", "panels", "progress", "tensorboard", "eval_splits",
    # where it executes
    "device", "num_workers", "compile", "cache_dir",
})

#: Model-config settings (dotted, inside the model config) that ``--resume`` accepts changed: the
#: initial vision weights, replaced by the checkpoint's weights when the run resumes.
RESUME_MAY_CHANGE_MODEL: frozenset[str] = frozenset({"vision.weights"})


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


def _merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` over ``base`` as a new dict; nested mappings merge key by key (as sub-configs do)
    and are copied, so changing the result never changes the inputs."""
    out = {key: _merge({}, value) if isinstance(value, Mapping) else value for key, value in base.items()}
    for key, value in update.items():
        if isinstance(value, Mapping):
            out[key] = _merge(out[key] if isinstance(out.get(key), Mapping) else {}, value)
        else:
            out[key] = value
    return out


def _as_overrides(model: Any) -> dict[str, Any]:
    """``None``, a mapping or a model config object -> a plain dict of model overrides."""
    if model is None:
        return {}
    if hasattr(model, "to_dict") and not isinstance(model, Mapping):
        return model.to_dict()
    if not isinstance(model, Mapping):
        raise TypeError(
            "TrainConfig.model must be a mapping of model-config overrides, e.g. {'dim': 32, 'text': "
            f"{{'freeze': True}}}}, or a CroBIMUConfig; got {type(model).__name__}"
        )
    return {k: (_as_overrides(v) if hasattr(v, "to_dict") else v) for k, v in model.items()}


def _shortcut_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """Shortcut settings (``use_fusion=False`` ...) as model overrides; ``None`` means not given."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        *parents, leaf = MODEL_SHORTCUTS[name].path
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        if name == "text_weights":
            node["pretrained"] = True
    return out


def _where(name: str) -> str:
    path = ".".join(MODEL_SHORTCUTS[name].path)
    nested = "{" + "{".join(f"'{p}': " for p in MODEL_SHORTCUTS[name].path) + "..." + "}" * len(
        MODEL_SHORTCUTS[name].path)
    return f"CroBIMUConfig.{path}; pass TrainConfig(model={nested}) (command line: --{name.replace('_', '-')})"


@dataclass(kw_only=True)
class TrainConfig:
    """The training settings of a run; saved in ``config.json`` of the run folder.

    Model settings are not fields: name a model ``preset`` and give ``model``, a mapping of
    overrides merged into it (nested dicts merge into the sub-configs ``vision`` / ``text`` /
    ``decoder``). :func:`~uncertainty_rrsis.training.build_model_config` turns the two into the
    model config.

    Precedence, highest first, the same as on the command line:

    1. the keywords given here (command line: the flags);
    2. the config file (command line only: ``--config``);
    3. the preset's recipe, :data:`PRESET_RECIPES` (``paper``: AdamW 5e-5, 40 epochs, total
       batch 32, no gradient clipping, ``L_unc`` after 1,000 steps ...; ``tiny``: a frozen text
       encoder);
    4. the preset's defaults: the model preset, :data:`DEFAULT_RECIPE` and the field defaults.

    The recipe fields (``lr``, ``weight_decay``, ``poly_power``, ``epochs``, ``batch_size``,
    ``grad_clip``, ``unc_warmup_steps``, ``checkpoint_every``, ``panels``) default to "unset"
    and are resolved when the config is built; a built config holds only concrete values, and
    the recipe's model overrides are merged under ``model``.

    Deprecated: the keywords ``use_fusion``, ``use_refinement``, ``freeze_text``,
    ``text_lr_multiplier``, ``vision_lr_multiplier``, ``image_size``, ``max_tokens``,
    ``vision_weights`` and ``text_weights`` still work for one release: they write into
    ``model`` (winning over it) and warn with a ``DeprecationWarning`` naming where the setting
    lives now.
    """

    # data
    dataset: str = _opt("synthetic", "dataset: a name of the dataset registry (uncertainty_rrsis.data."
                        "list_datasets): synthetic (generated on first use), rrsisd, refsegrs, risbench, ...")
    data_root: str | None = _opt(None, "dataset root folder (required for the real datasets)")
    cache_dir: str = _opt(".cache/uncertainty_rrsis", "where the synthetic benchmark is generated once")
    synthetic_train: int = _opt(3000, "synthetic: training samples")
    synthetic_val: int = _opt(300, "synthetic: validation samples")
    synthetic_test: int = _opt(600, "synthetic: test samples")
    synthetic_seed: int = _opt(0, "synthetic: generator seed")
    num_workers: int | str = _opt("auto", "DataLoader worker processes per rank: a number, or auto (0 on the CPU; "
                                  "min(8, CPUs per rank - 1) on CUDA)", parse="workers", metavar="N|auto")
    # model
    preset: str = _opt("tiny", "model preset: tiny (CPU) or paper (ConvNeXt-B + BERT-base); also picks the "
                       "training recipe")
    model: dict | None = _opt(None, "JSON dict of model-config overrides, e.g. '{\"dim\": 32, \"text\": "
                              "{\"freeze\": true}}' (merged into the preset; nested dicts merge into sub-configs)")
    sync_bn: bool = _opt(False, "convert BatchNorm layers to SyncBatchNorm under DDP")
    # optimisation
    epochs: int = _opt(UNSET, "training epochs")
    max_steps: int | None = _opt(None, "stop after this many optimizer steps (overrides epochs)")
    batch_size: int = _opt(UNSET, "TOTAL batch size over all processes and accumulation steps")
    grad_accumulation: int = _opt(1, "micro-batches per optimizer step")
    lr: float = _opt(UNSET, "peak learning rate (AdamW)")
    weight_decay: float = _opt(UNSET, "AdamW weight decay")
    poly_power: float = _opt(UNSET, "power of the per-iteration polynomial decay")
    lr_warmup_steps: int = _opt(0, "linear learning-rate warm-up steps")
    grad_clip: float | None = _opt(UNSET, "clip the gradient norm to this value (none: no clipping)")
    lambda_unc: float = _opt(1.0, "weight of L_unc (Eq. 18)")
    lambda_ref: float = _opt(1.0, "weight of L_seg(P_ref) (Eq. 18)")
    unc_warmup_steps: int = _opt(UNSET, "L_unc is zero for the first N optimizer steps")
    unc_warmup_fraction: float | None = _opt(
        None, "L_unc warm-up as a fraction of the run's optimizer steps, e.g. 0.05 (overrides unc_warmup_steps)")
    unc_hard_sample_weight: float = _opt(1.0, "lambda_s of L_unc: extra weight of a sample with IoU < delta")
    unc_hard_iou_threshold: float = _opt(0.5, "delta of L_unc: the IoU below which a sample is hard")
    unc_target_blur: int | None = _opt(None, "z = Blur(e) in L_unc: odd Gaussian kernel size (none: z = e)")
    unc_pixel_weighting: bool = _opt(True, "the pixel weighting of L_unc (Eq. 8); false weighs every pixel 1")
    lambda_risk: float = _opt(1.0, "weight of the risk head's loss (model setting risk_head, beyond the paper)")
    precision: str = _opt("auto", "auto (bf16 autocast on CUDA, fp32 on the CPU), bf16 (autocast), fp16 (autocast with "
                          "a gradient scaler; CUDA only) or fp32", choices=PRECISIONS)
    amp: bool = _opt(True, "deprecated, use --precision: --amp false is --precision fp32; with --precision auto, "
                     "true gives bf16 autocast on CUDA")
    seed: int = _opt(0, "random seed")
    device: str = _opt("auto", "auto, cuda or cpu")
    compile: bool = _opt(False, "torch.compile the model")
    # bookkeeping
    output_dir: str = _opt("runs/default", "run folder: config, checkpoints, logs, metrics, panels")
    resume: bool = _opt(False, "continue from <output_dir>/checkpoints/last; settings that change the result must "
                        "match the run's")
    overwrite: bool = _opt(False, "start again in a folder that holds a run: first delete its config, checkpoints, "
                           "log, metrics, panels and tensorboard files (other files stay)")
    resume_with_changes: bool = _opt(False, "with --resume: continue even though settings that change the result "
                                     "differ from the run's (each change is recorded in log.jsonl)")
    checkpoint_every: int = _opt(UNSET, "write the resumable checkpoint every N optimizer steps")
    eval_every: int = _opt(0, "evaluate on val every N steps (0: once per epoch)")
    select_metric: str = _opt("mIoU", "the val metric that chooses the best checkpoint: mIoU or oIoU (LAVT and "
                              "RMSIN select on oIoU)", choices=SELECT_METRICS)
    log_every: int = _opt(10, "append to log.jsonl every N optimizer steps")
    panels: int = _opt(UNSET, "test samples drawn as PNG panels at the end")
    progress: bool = _opt(True, "show progress bars (rank 0)")
    tensorboard: bool = _opt(True, "log to TensorBoard when the tensorboard package is installed")
    eval_splits: str = _opt("test", "comma-separated splits evaluated at the end with the best checkpoint")
    # deprecated model-setting keywords (see MODEL_SHORTCUTS); not fields, not saved
    use_fusion: InitVar[bool | None] = None
    use_refinement: InitVar[bool | None] = None
    freeze_text: InitVar[bool | None] = None
    text_lr_multiplier: InitVar[float | None] = None
    vision_lr_multiplier: InitVar[float | None] = None
    image_size: InitVar[int | None] = None
    max_tokens: InitVar[int | None] = None
    vision_weights: InitVar[str | None] = None
    text_weights: InitVar[str | None] = None

    def __post_init__(self, *shortcut_values: Any) -> None:
        given = {name: v for name, v in zip(_SHORTCUT_KEYWORDS, shortcut_values, strict=True) if v is not None}
        for name in given:
            warnings.warn(
                f"TrainConfig({name}=...) is deprecated and will be removed in the next release: it is a model "
                f"setting, {_where(name)}",
                DeprecationWarning,
                stacklevel=3,
            )
        overrides = _merge(_as_overrides(self.model), _shortcut_overrides(given))
        recipe = PRESET_RECIPES.get(self.preset, {})
        for name, default in DEFAULT_RECIPE.items():
            if getattr(self, name) is UNSET:
                setattr(self, name, recipe.get(name, default))
        self.model = _merge(recipe.get("model", {}), overrides)

    # -- the deprecated shortcut attributes: reading and writing them still works, with a warning
    def __getattr__(self, name: str) -> Any:
        if name in MODEL_SHORTCUTS:
            warnings.warn(
                f"TrainConfig.{name} is deprecated and will be removed in the next release: it is a model "
                f"setting, {_where(name)}; read it from build_model_config(config)",
                DeprecationWarning,
                stacklevel=2,
            )
            from .setup import build_model_config

            value: Any = build_model_config(self)
            for part in MODEL_SHORTCUTS[name].path:
                value = getattr(value, part)
            return value
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in MODEL_SHORTCUTS:
            warnings.warn(
                f"setting TrainConfig.{name} is deprecated and will be removed in the next release: it is a "
                f"model setting, {_where(name)}",
                DeprecationWarning,
                stacklevel=2,
            )
            self.model = _merge(self.model or {}, _shortcut_overrides({name: value}))
            return
        object.__setattr__(self, name, value)

    # -- dict round trip
    def to_dict(self) -> dict[str, Any]:
        """The resolved settings as a plain dict (what ``config.json`` holds under ``"train"``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a dict as written by :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - set(MODEL_SHORTCUTS))
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known keys: {sorted(known)} (model "
                             f"settings go under 'model' or use the shortcuts {sorted(MODEL_SHORTCUTS)})")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``; ``model`` overrides merge into the current ones.

        The current values, already resolved, count as given: changing ``preset`` here does not
        bring that preset's recipe back for fields the old one filled in.
        """
        data = self.to_dict()
        if "model" in changes:
            changes = {**changes, "model": _merge(data["model"] or {}, _as_overrides(changes["model"]))}
        return type(self).from_dict({**data, **changes})

    def validate(self) -> None:
        """Raise a ``ValueError`` naming the flag for settings that cannot work."""
        from ..data import get_dataset_class

        try:
            get_dataset_class(self.dataset)
        except ValueError as err:
            raise ValueError(f"--dataset: {err}") from None
        if self.dataset != "synthetic" and not self.data_root:
            raise ValueError(f"--dataset {self.dataset} needs --data-root PATH (the folder holding the dataset)")
        for name in ("batch_size", "grad_accumulation", "epochs", "checkpoint_every", "log_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive; got {getattr(self, name)}")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite contradict each other: --resume continues the run in "
                             f"{self.output_dir}, --overwrite deletes it and starts again; give one of them")
        if self.unc_warmup_fraction is not None and not 0.0 <= self.unc_warmup_fraction <= 1.0:
            raise ValueError(f"--unc-warmup-fraction must lie in [0, 1]; got {self.unc_warmup_fraction}")
        if self.unc_target_blur is not None and (self.unc_target_blur < 1 or self.unc_target_blur % 2 == 0):
            raise ValueError(f"--unc-target-blur must be an odd kernel size (e.g. 3); got {self.unc_target_blur}")
        if self.resume_with_changes and not self.resume:
            raise ValueError("--resume-with-changes goes with --resume: it accepts changed settings when continuing "
                             f"the run in {self.output_dir}; add --resume")
        if self.select_metric not in SELECT_METRICS:
            raise ValueError(f"--select-metric must be one of {', '.join(SELECT_METRICS)}; got {self.select_metric!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if not self.amp:
            if self.precision in ("bf16", "fp16"):
                raise ValueError(f"--amp false and --precision {self.precision} contradict each other: --amp false "
                                 "means --precision fp32. --amp is deprecated: give --precision alone")
            warnings.warn("--amp false is deprecated and will be removed in a later release: use --precision fp32 "
                          "(the same setting)", FutureWarning, stacklevel=2)
        if not (self.num_workers == "auto" or (isinstance(self.num_workers, int) and not isinstance(
                self.num_workers, bool) and self.num_workers >= 0)):
            raise ValueError(f"--num-workers must be a number >= 0 or auto; got {self.num_workers!r}")


# The deprecated keywords in the order __post_init__ receives them.
_SHORTCUT_KEYWORDS = tuple(name for name in TrainConfig.__dataclass_fields__
                           if name not in {f.name for f in fields(TrainConfig)})
if set(_SHORTCUT_KEYWORDS) != set(MODEL_SHORTCUTS):
    raise RuntimeError(f"TrainConfig's deprecated keywords {_SHORTCUT_KEYWORDS} differ from MODEL_SHORTCUTS")
for _name in _SHORTCUT_KEYWORDS:  # the InitVar defaults left on the class would hide __getattr__
    if _name in TrainConfig.__dict__:
        delattr(TrainConfig, _name)


def merge_settings(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Merge settings given as dicts, lowest precedence first, into keywords of :class:`TrainConfig`.

    In each layer the shortcut keys (``use_fusion``, ``freeze_text``, ...; ``-`` or ``_``
    spelling) become model overrides that win over that layer's ``model``; a higher layer's
    values replace a lower one's, and ``model`` overrides merge key by key. A ``None``
    shortcut counts as not given.
    """
    out: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for layer in layers:
        layer = {str(k).replace("-", "_"): v for k, v in layer.items()}
        shortcuts = {k: layer.pop(k) for k in list(layer) if k in MODEL_SHORTCUTS}
        model = _merge(model, _merge(_as_overrides(layer.pop("model", None)), _shortcut_overrides(shortcuts)))
        out.update(layer)
    if model:
        out["model"] = model
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a config file into keywords of :class:`TrainConfig`.

    Accepts YAML (``.yaml``/``.yml``), TOML (``.toml``) or JSON (``.json``) holding option names
    (spelled like the flags, ``-`` or ``_``), and a run folder's ``config.json``
    (``{"train": ..., "model": ..., "environment": ...}``) unchanged: the ``train`` section gives
    the training settings (without ``resume``, ``overwrite`` and ``resume_with_changes``, choices
    of each invocation), the ``model`` section the model config the run used, and
    ``environment`` is ignored.
    """
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
    if isinstance(data.get("train"), Mapping):
        return _settings_from_run_config(data, path)
    return merge_settings(data)


def _settings_from_run_config(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The settings of a run folder's ``config.json``: training settings plus the model config it used."""
    unknown = sorted(set(data) - {"train", "model", "environment"})
    if unknown:
        raise ValueError(f"{path} looks like a run's config.json (it has a 'train' section) but also holds "
                         f"{unknown}; expected only 'train', 'model' and 'environment'")
    train = {k: v for k, v in data["train"].items() if k not in _INVOCATION_KEYS}
    settings = merge_settings(train)
    section = data.get("model")
    if section is not None:
        if not isinstance(section, Mapping):
            raise ValueError(f"{path}: the 'model' section must be a model config mapping; got {type(section).__name__}")
        from .setup import build_model_config

        if build_model_config(TrainConfig.from_dict(settings)).to_dict() != dict(section):
            settings["model"] = _merge(settings.get("model", {}), section)  # the model the run used wins
    return settings


# ---------------------------------------------------------------------------------------------- CLI


def _workers(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of worker processes or auto; got {text!r}") from None


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


_PARSERS = {bool: _bool, int: int, float: float, str: str, dict: json.loads}


def _recipe_default(name: str) -> str:
    values = {preset: recipe.get(name, DEFAULT_RECIPE[name]) for preset, recipe in PRESET_RECIPES.items()}
    return "the preset recipe's: " + ", ".join(f"{preset} {value}" for preset, value in values.items())


def build_arg_parser(description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one ``--flag`` per :class:`TrainConfig` field and per model shortcut."""
    from ..data import list_datasets

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", action="extend", default=None, metavar="FILE",
                        help="YAML / TOML / JSON files of options, or a run folder's config.json; with several files "
                             "(--config a.yaml b.yaml, or the flag repeated) a later file wins over an earlier one, "
                             "and flags win over every file")
    for f in fields(TrainConfig):
        annotation = str(f.type)
        base = next((t for name, t in (("bool", bool), ("int", int), ("float", float), ("str", str), ("dict", dict))
                     if annotation.startswith(name)), str)
        parse = _PARSERS[base] if "None" not in annotation else _optional(_PARSERS[base])
        if f.metadata.get("parse") == "workers":
            parse = _workers
        default = _recipe_default(f.name) if f.default is UNSET else f.default
        extra: dict[str, Any] = {"nargs": "?", "const": True} if base is bool else {}
        if f.name == "dataset":
            extra["choices"] = list_datasets()
        elif "choices" in f.metadata:
            extra["choices"] = list(f.metadata["choices"])
        metavar = f.metadata.get("metavar") or ("BOOL" if base is bool else base.__name__.upper())
        if "choices" in f.metadata:
            metavar = "{" + ",".join(f.metadata["choices"]) + "}"
        parser.add_argument("--" + f.name.replace("_", "-"), type=parse, default=argparse.SUPPRESS,
                            metavar=metavar, help=f"{f.metadata['help']} (default: {default})", **extra)
    group = parser.add_argument_group(
        "model settings",
        "shortcuts for fields of the model config (CroBIMUConfig): each writes into the --model overrides\n"
        "and wins over them (default: the preset's value, after its recipe)",
    )
    for name, spec in MODEL_SHORTCUTS.items():
        extra = {"nargs": "?", "const": True} if spec.kind is bool else {}
        group.add_argument("--" + name.replace("_", "-"), type=_PARSERS[spec.kind], default=argparse.SUPPRESS,
                           metavar="BOOL" if spec.kind is bool else spec.kind.__name__.upper(),
                           help=f"{spec.help} (model setting {'.'.join(spec.path)})", **extra)
    return parser


def config_files(args: argparse.Namespace) -> list[str]:
    """The config files of parsed flags (``--config``), in the order given: a later file wins."""
    files = getattr(args, "config", None) or []
    return [str(files)] if isinstance(files, (str, Path)) else [str(f) for f in files]


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed flags: flags > config files (a later one wins over an earlier
    one) > preset recipe > preset defaults."""
    flags = {k: v for k, v in vars(args).items() if k != "config"}
    layers = [load_config_file(path) for path in config_files(args)]
    config = TrainConfig.from_dict(merge_settings(*layers, flags))
    config.validate()
    return config
