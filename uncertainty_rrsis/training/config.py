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
3. the preset's training recipe (registered with the preset:
   :func:`~uncertainty_rrsis.models.presets.preset_recipe`);
4. the preset's defaults (the model preset itself, :data:`DEFAULT_RECIPE`, the field defaults).

Training fields whose default depends on the recipe (learning rate, epochs, batch size, ...)
default to "unset" and are filled from the recipe when a ``TrainConfig`` is built, so
``TrainConfig(preset="paper")`` is the ``paper`` preset's recipe exactly as ``--preset paper`` is.

The command line and the config files are read by :mod:`.cli`; there, ``--use-fusion``,
``--image-size``, ``--vision-weights`` and the other :data:`MODEL_SHORTCUTS` write into the model
overrides of their level.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .trackers import WANDB_MODES

__all__ = [
    "TrainConfig",
    "DEFAULT_RECIPE",
    "MODEL_SHORTCUTS",
    "RESUME_MAY_CHANGE",
    "RESUME_MAY_CHANGE_MODEL",
    "PRECISIONS",
    "SELECT_METRICS",
    "build_model_config",
    "merge_settings",
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

#: Training values of the recipe fields for a preset that does not set them (``tiny`` sets only the warm-up).
DEFAULT_RECIPE: dict[str, Any] = {
    "lr": 1e-3,
    "lr_warmup_steps": 0,
    "weight_decay": 0.01,
    "poly_power": 0.9,
    "epochs": 5,
    "batch_size": 16,
    "grad_clip": 1.0,
    "unc_warmup_steps": 100,
    "checkpoint_every": 200,
    "panels": 8,
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
INVOCATION_KEYS = ("resume", "overwrite", "resume_with_changes")

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
    "checkpoint_every", "log_every", "panels", "progress", "tensorboard", "wandb", "wandb_project", "eval_splits",
    # where it executes
    "device", "num_workers", "compile", "cache_dir",
})

#: Model-config settings (dotted, inside the model config) that ``--resume`` accepts changed: the
#: initial vision weights, replaced by the checkpoint's weights when the run resumes.
RESUME_MAY_CHANGE_MODEL: frozenset[str] = frozenset({"vision.weights"})


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


def merge_nested(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` over ``base`` as a new dict; nested mappings merge key by key (as sub-configs do)
    and are copied, so changing the result never changes the inputs."""
    out = {key: merge_nested({}, value) if isinstance(value, Mapping) else value for key, value in base.items()}
    for key, value in update.items():
        if isinstance(value, Mapping):
            out[key] = merge_nested(out[key] if isinstance(out.get(key), Mapping) else {}, value)
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
    3. the preset's recipe, registered with the preset (``paper``: AdamW 5e-5, 40 epochs, total
       batch 32, ...; ``tiny``: a 100-step learning-rate warm-up);
    4. the preset's defaults: the model preset, :data:`DEFAULT_RECIPE` and the field defaults.

    The recipe fields (``lr``, ``lr_warmup_steps``, ``weight_decay``, ``poly_power``, ``epochs``,
    ``batch_size``, ``grad_clip``, ``unc_warmup_steps``, ``checkpoint_every``, ``panels``) default to "unset"
    and are resolved when the config is built; a built config holds only concrete values, and
    the recipe's model overrides are merged under ``model``.
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
    lr_warmup_steps: int = _opt(UNSET, "linear learning-rate warm-up steps")
    grad_clip: float | None = _opt(UNSET, "clip the gradient norm to this value (none or 0: no clipping)")
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
    seg_loss: str = _opt("bce_dice", "L_seg of Eq. 18: a name of the loss registry (uncertainty_rrsis.losses."
                         "list_losses): bce_dice (sigmoid BCE + Dice), ...")
    precision: str = _opt("auto", "auto (bf16 autocast on CUDA, fp32 on the CPU), bf16 (autocast), fp16 (autocast with "
                          "a gradient scaler; CUDA only) or fp32", choices=PRECISIONS)
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
    tensorboard: bool | str = _opt("auto", "TensorBoard logging (scalars and the final panels): auto (when the "
                                   "tensorboard package is installed, else a note), true (required: an error when it "
                                   "is missing), false", parse="auto_bool", metavar="auto|BOOL")
    wandb: str = _opt("off", "Weights & Biases logging (scalars, the settings and the final panels) in "
                      "<output_dir>/wandb: off, offline (kept on this machine for a later `wandb sync`) or online",
                      choices=WANDB_MODES)
    wandb_project: str = _opt("uncertainty-rrsis", "the Weights & Biases project of the run")
    eval_splits: str = _opt("test", "comma-separated splits evaluated at the end with the best checkpoint")

    def __post_init__(self) -> None:
        from ..models.presets import preset_recipe

        try:
            recipe = preset_recipe(self.preset)
        except ValueError as err:
            raise ValueError(f"--preset: {err}") from None
        for name, default in DEFAULT_RECIPE.items():
            if getattr(self, name) is UNSET:
                setattr(self, name, recipe.get(name, default))
        self.model = merge_nested(recipe.get("model", {}), _as_overrides(self.model))

    # -- dict round trip
    def to_dict(self) -> dict[str, Any]:
        """The resolved settings as a plain dict (what ``config.json`` holds under ``"train"``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a dict as written by :meth:`to_dict` (the :data:`MODEL_SHORTCUTS` keys are accepted
        and written into ``model``); unknown keys raise ``ValueError``."""
        data = merge_settings(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
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
            changes = {**changes, "model": merge_nested(data["model"] or {}, _as_overrides(changes["model"]))}
        return type(self).from_dict({**data, **changes})

    def validate(self) -> None:
        """Raise a ``ValueError`` naming the flag for settings that cannot work."""
        from ..data import get_dataset_class
        from ..losses import get_loss

        try:
            reader = get_dataset_class(self.dataset)
        except ValueError as err:
            raise ValueError(f"--dataset: {err}") from None
        if not reader.generated and not self.data_root:
            raise ValueError(f"--dataset {self.dataset} needs --data-root PATH (the folder holding the dataset)")
        try:
            get_loss(self.seg_loss)
        except ValueError as err:
            raise ValueError(f"--seg-loss: {err}") from None
        for f in fields(self):
            _check_setting(f.name, getattr(self, f.name), str(f.type))
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"--max-steps must be at least 1 (or left out to train --epochs); got {self.max_steps}")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite contradict each other: --resume continues the run in "
                             f"{self.output_dir}, --overwrite deletes it and starts again; give one of them")
        if self.unc_target_blur is not None and self.unc_target_blur % 2 == 0:
            raise ValueError(f"--unc-target-blur must be an odd kernel size (e.g. 3); got {self.unc_target_blur}")
        if self.resume_with_changes and not self.resume:
            raise ValueError("--resume-with-changes goes with --resume: it accepts changed settings when continuing "
                             f"the run in {self.output_dir}; add --resume")
        if self.select_metric not in SELECT_METRICS:
            raise ValueError(f"--select-metric must be one of {', '.join(SELECT_METRICS)}; got {self.select_metric!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if isinstance(self.num_workers, str) and self.num_workers != "auto":
            raise ValueError(f"--num-workers must be a number >= 0 or auto; got {self.num_workers!r}")
        if self.tensorboard not in (True, False, "auto"):
            raise ValueError(f"--tensorboard must be auto, true or false; got {self.tensorboard!r}")
        if self.wandb not in WANDB_MODES:
            raise ValueError(f"--wandb must be one of {', '.join(WANDB_MODES)}; got {self.wandb!r}")


#: The allowed range of each numeric setting: (lowest, highest); None = unbounded on that side, and
#: :data:`ABOVE_ZERO` as the lowest value means "more than 0". Every float setting must also be finite.
ABOVE_ZERO = -0.0  # marks an open bound at 0 (it compares equal to 0)
RANGES: dict[str, tuple[float | None, float | None]] = {
    "synthetic_train": (0, None), "synthetic_val": (0, None), "synthetic_test": (0, None),
    "num_workers": (0, None), "epochs": (1, None), "max_steps": (1, None), "batch_size": (1, None),
    "grad_accumulation": (1, None), "lr": (ABOVE_ZERO, None), "weight_decay": (0, None), "poly_power": (0, None),
    "lr_warmup_steps": (0, None), "grad_clip": (0, None), "lambda_unc": (0, None), "lambda_ref": (0, None),
    "unc_warmup_steps": (0, None), "unc_warmup_fraction": (0, 1), "unc_hard_sample_weight": (0, None),
    "unc_hard_iou_threshold": (0, 1), "unc_target_blur": (1, None), "lambda_risk": (0, None),
    "checkpoint_every": (1, None), "eval_every": (0, None), "log_every": (1, None), "panels": (0, None),
}


def _check_setting(name: str, value: Any, annotation: str) -> None:
    """Raise a ValueError naming ``--<name>``, its value and what is allowed, for a value of the wrong
    type (from a config file, say), out of :data:`RANGES`, or not finite."""
    flag = "--" + name.replace("_", "-")
    kinds = [k.strip() for k in annotation.split("|")]
    if value is None:
        if "None" not in kinds:
            raise ValueError(f"{flag} must be given (a {kinds[0]}); got none")
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ((("bool" in kinds) and isinstance(value, bool))
          or ("int" in kinds and number and isinstance(value, int))
          or ("float" in kinds and number)
          or ("str" in kinds and isinstance(value, str))
          or ("dict" in kinds and isinstance(value, dict)))
    if not ok:
        wanted = " or ".join({"int": "a whole number", "float": "a number", "bool": "true or false",
                              "str": "a text", "dict": "a mapping"}.get(k, k) for k in kinds if k != "None")
        raise ValueError(f"{flag} must be {wanted}; got {value!r} ({type(value).__name__})")
    if not number or name not in RANGES:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{flag} must be a finite number; got {value!r}")
    low, high = RANGES[name]
    open_low = low is not None and math.copysign(1.0, low) < 0  # ABOVE_ZERO
    too_low = low is not None and (value <= low if open_low else value < low)
    if too_low or (high is not None and value > high):
        if high is not None:
            allowed = f"in [{low:g}, {high:g}]"
        else:
            allowed = "> 0" if open_low else f">= {low:g}"
        raise ValueError(f"{flag} must be {allowed}; got {value!r}")


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
        overrides = merge_nested(_as_overrides(layer.pop("model", None)), _shortcut_overrides(shortcuts))
        model = merge_nested(model, overrides)
        out.update(layer)
    if model:
        out["model"] = model
    return out


def build_model_config(config: TrainConfig):
    """The model config of a run: the preset ``config.preset`` with ``config.model`` merged in.

    ``config.model`` already holds the preset recipe's model overrides under the run's own
    (see :class:`TrainConfig`); nested dicts merge into the sub-configs. Returns a
    :class:`~uncertainty_rrsis.models.CroBIMUConfig`.

    Raises:
        ValueError: an unknown preset or an unknown model-config field (the message lists the
            known ones).
    """
    from ..models.presets import get_preset

    return get_preset(config.preset, **(config.model or {}))
