"""The model card: a ``README.md`` next to the weights of a checkpoint folder.

:meth:`CroBIMU.save_pretrained <uncertainty_rrsis.models.CroBIMU.save_pretrained>` writes it;
:func:`write_model_card` (re)writes it for a folder that already holds ``config.json``, e.g. once
a training run has written its ``metrics.json``. ``from_pretrained`` never reads it.

What it holds:

* the variant (ablation row), the preset, the encoders, the width and the input size, the
  parameter counts when the model is at hand, and the library version that wrote it;
* the training data and recipe, and the metrics: from the ``card`` mapping when given, else,
  for a checkpoint inside a training run folder (``<run>/checkpoints/<name>/``), from the run's
  ``config.json`` (its ``train`` section) and ``metrics.json`` when they exist;
* the model config as JSON.

The ``card`` mapping (every key optional): ``title`` (str), ``preset`` (str), ``data`` (str: the
training data in words), ``training`` (a mapping of recipe settings, or a str), ``metrics`` (a
mapping ``split -> {metric: value}``, or ``metrics.json``'s own layout with ``results``),
``notes`` (str), and for the Hub's index ``license`` (the licence the weights are published under,
default ``apache-2.0``, the library's own: set what the training data allows), ``datasets`` (Hub
dataset ids) and ``tags`` (added to the library's); any other key is listed under "Other" as
``key: value``.

The card starts with the YAML front matter the Hugging Face Hub reads (``library_name``,
``license``, ``pipeline_tag``, ``tags`` and, when given, ``datasets``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._version import __version__
from .config import CroBIMUConfig

__all__ = ["CARD_NAME", "HUB_TAGS", "model_card", "run_folder_of", "write_model_card"]

#: The card's file name in a checkpoint folder.
CARD_NAME = "README.md"

_RECIPE_KEYS = ("dataset", "synthetic_train", "synthetic_val", "synthetic_test", "synthetic_seed",
                "preset", "epochs", "max_steps", "batch_size", "grad_accumulation", "lr", "weight_decay",
                "poly_power", "lr_warmup_steps", "grad_clip", "lambda_unc", "lambda_ref", "unc_warmup_steps",
                "amp", "seed", "device")
#: The Hub tags every card carries (``card["tags"]`` adds to them).
HUB_TAGS = ("referring-image-segmentation", "remote-sensing", "uncertainty", "crobim-u", "pytorch")
_HUB_KEYS = ("license", "datasets", "tags")
_METRIC_KEYS = ("mIoU", "oIoU", "Pr@0.5", "Pr@0.7", "Pr@0.9", "unc/AUROC", "count")


def run_folder_of(directory: str | Path) -> Path | None:
    """The training run folder a checkpoint folder ``<run>/checkpoints/<name>`` belongs to (its
    ``config.json`` has a ``train`` section), or None."""
    directory = Path(directory)
    run = directory.parent.parent
    if directory.parent.name != "checkpoints" or not (run / "config.json").is_file():
        return None
    data = _read(run / "config.json")
    return run if isinstance(data, dict) and isinstance(data.get("train"), dict) else None


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list, tuple)):
        return "`" + json.dumps(v) + "`"
    return str(v)


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    return ["| | |", "| --- | --- |"] + [f"| {k} | {_value(v)} |" for k, v in rows]


def _metrics_lines(metrics: Mapping[str, Any]) -> list[str]:
    results = metrics.get("results", metrics)
    splits = [(s, r) for s, r in results.items() if isinstance(r, Mapping)]
    if not splits:
        return []
    keys = [k for k in _METRIC_KEYS if any(k in r for _, r in splits)]
    lines = ["| split | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys)]
    for split, r in splits:
        lines.append(f"| {split} | " + " | ".join(_value(r.get(k, "")) for k in keys) + " |")
    notes = [f"{k}: {metrics[k]}" for k in ("checkpoint", "resolution", "steps", "seed") if k in metrics]
    if notes:
        lines += ["", "; ".join(notes) + "."]
    if "protocol" in metrics:
        lines += ["", f"Protocol: {metrics['protocol']}."]
    return lines


def _front_matter(card: Mapping[str, Any]) -> list[str]:
    """The YAML front matter (each scalar written as a JSON string, which YAML reads as it is)."""

    def listing(value: Any) -> list[str]:
        items = [value] if isinstance(value, str) else list(value or [])
        return [str(v) for v in items]

    tags = list(dict.fromkeys([*HUB_TAGS, *listing(card.get("tags"))]))
    license_ = json.dumps(str(card.get("license") or "apache-2.0"))
    lines = ["---", "library_name: uncertainty-rrsis", f"license: {license_}", "pipeline_tag: image-segmentation",
             "tags:"] + [f"- {json.dumps(t)}" for t in tags]
    datasets = listing(card.get("datasets"))
    if datasets:
        lines += ["datasets:"] + [f"- {json.dumps(d)}" for d in datasets]
    return lines + ["---", ""]


def model_card(
    config: Any,
    *,
    card: Mapping[str, Any] | None = None,
    run_folder: str | Path | None = None,
    parameters: Mapping[str, int] | None = None,
) -> str:
    """The card's Markdown for a :class:`~uncertainty_rrsis.models.CroBIMUConfig` (module docstring).

    Args:
        config: the config saved with the weights.
        card: what is known about the training (module docstring); wins over the run folder.
        run_folder: a training run folder whose ``config.json`` / ``metrics.json`` describe the
            training and the results.
        parameters: :meth:`CroBIMU.num_parameters` of the model.
    """
    card = dict(card or {})
    run = Path(run_folder) if run_folder is not None else None
    run_config = _read(run / "config.json") if run is not None else None
    train = run_config.get("train") if isinstance(run_config, dict) else None
    metrics = card.get("metrics")
    if metrics is None and run is not None and (run / "metrics.json").is_file():
        metrics = _read(run / "metrics.json")
    preset = card.get("preset") or (train or {}).get("preset")
    text = config.text
    lines = _front_matter(card) + [
        f"# {card.get('title') or f'CroBIM-U ({config.variant})'}", "",
        f"A CroBIM-U checkpoint written by uncertainty-rrsis {__version__} (`CroBIMU.save_pretrained`). "
        "Load it with", "", "```python",
        "from uncertainty_rrsis.inference import ReferringSegmenter", "",
        'segmenter = ReferringSegmenter.from_pretrained("path/to/this/folder")  # or its Hub id, "org/name"',
        "```", "", "## Model", ""]
    rows: list[tuple[str, Any]] = [
        ("variant", f"{config.variant} (RUS {'yes' if config.variant != 'Base' else 'no'}, "
                    f"UGF {'yes' if config.use_fusion else 'no'}, UDLR {'yes' if config.use_refinement else 'no'})"),
        ("preset", preset or "not recorded"),
        ("vision encoder", config.vision.name),
        ("text encoder", f"{text.name}{' (frozen)' if text.freeze else ''}, at most {text.max_tokens} tokens"),
        ("width C", config.dim),
        ("input size", f"{config.image_size} x {config.image_size}"),
    ]
    if parameters:
        rows.append(("parameters", f"{parameters['total']:,} (uncertainty modules {parameters['uncertainty']:,})"))
    rows.append(("library version", __version__))
    lines += _table(rows) + ["", "## Training data and recipe", ""]
    recipe = card.get("training")
    if card.get("data"):
        lines += [str(card["data"]), ""]
    if isinstance(recipe, str):
        lines += [recipe, ""]
    elif isinstance(recipe, Mapping):
        lines += _table(list(recipe.items())) + [""]
    elif train:
        lines += [f"From the training run's `config.json` ({run.name if run else ''}):", ""]
        lines += _table([(k, train[k]) for k in _RECIPE_KEYS if train.get(k) is not None]) + [""]
    elif not card.get("data"):
        lines += ["Not recorded: this checkpoint was saved outside a training run folder and without a `card`.", ""]
    lines += ["## Metrics", ""]
    metric_lines = _metrics_lines(metrics) if isinstance(metrics, Mapping) else []
    lines += (metric_lines or ["Not recorded when this card was written (a training run writes `metrics.json` after "
                               "its final evaluation: rewrite the card then with `write_model_card`)."]) + [""]
    if card.get("notes"):
        lines += ["## Notes", "", str(card["notes"]), ""]
    known = ("title", "preset", "data", "training", "metrics", "notes", *_HUB_KEYS)
    other = [(k, v) for k, v in card.items() if k not in known]
    if other:
        lines += ["## Other", ""] + _table(other) + [""]
    lines += ["## Config", "", "```json", json.dumps(config.to_dict(), indent=2), "```", ""]
    return "\n".join(lines)


def write_model_card(
    directory: str | Path,
    *,
    card: Mapping[str, Any] | None = None,
    parameters: Mapping[str, int] | None = None,
) -> Path:
    """(Re)write ``README.md`` in a checkpoint folder from its ``config.json`` and, when the folder is
    ``<run>/checkpoints/<name>``, the run's ``config.json`` and ``metrics.json``; returns the path.

    Raises:
        FileNotFoundError: the folder has no ``config.json``.
    """
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"write_model_card: no config.json in {directory}; expected a checkpoint folder "
                                "written by CroBIMU.save_pretrained")
    data = _read(directory / "config.json")
    if not isinstance(data, dict):
        raise ValueError(f"write_model_card: {directory / 'config.json'} is truncated or corrupt")
    config = CroBIMUConfig.from_dict(data["config"] if "config" in data else data)
    path = directory / CARD_NAME
    path.write_text(model_card(config, card=card, run_folder=run_folder_of(directory), parameters=parameters),
                    encoding="utf-8")
    return path
