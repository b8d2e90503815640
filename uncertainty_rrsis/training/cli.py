"""The command line and the config files of a run: flags, YAML / TOML / JSON files, run folders.

::

    parser = build_arg_parser(__doc__)          # one --flag per TrainConfig field and model shortcut
    config = config_from_args(parser.parse_args())

Precedence, highest first: the flags, the config files (a later one wins over an earlier one), the
preset's recipe, the preset's defaults (see :mod:`.config`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from .config import (
    DEFAULT_RECIPE,
    INVOCATION_KEYS,
    MODEL_SHORTCUTS,
    UNSET,
    TrainConfig,
    build_model_config,
    merge_nested,
    merge_settings,
)

__all__ = ["BUNDLED_CONFIGS", "build_arg_parser", "bundled_configs", "checkpoint_settings", "config_files",
           "config_from_args", "load_config_file", "resolve_config_file"]


#: The config files that come with the package (``--config rrsisd``, ``--config rows/base``).
BUNDLED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def bundled_configs() -> list[str]:
    """The names of the bundled config files: ``rrsisd``, ``refsegrs``, ``risbench``, ``rows/base`` ..."""
    return sorted(p.relative_to(BUNDLED_CONFIGS).with_suffix("").as_posix() for p in BUNDLED_CONFIGS.rglob("*.yaml"))


def resolve_config_file(path: str | Path) -> Path:
    """An existing file as it is; else a bundled config by name (``rrsisd``, ``rows/base``, with or
    without ``.yaml``).

    Raises:
        FileNotFoundError: neither a file nor a bundled name (the message lists the names).
    """
    given = Path(path)
    if given.is_file():
        return given
    name = given.as_posix().removesuffix(".yaml")
    if not given.is_absolute() and name in bundled_configs():
        return BUNDLED_CONFIGS / f"{name}.yaml"
    raise FileNotFoundError(f"config file not found: {path}; expected a file, or the name of a bundled config: "
                            f"{', '.join(bundled_configs())}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a config file into keywords of :class:`TrainConfig`.

    ``path`` is a file or the name of a bundled config (:func:`resolve_config_file`).

    Accepts YAML (``.yaml``/``.yml``), TOML (``.toml``) or JSON (``.json``) holding option names
    (spelled like the flags, ``-`` or ``_``), and a run folder's ``config.json``
    (``{"train": ..., "model": ..., "environment": ...}``) unchanged: the ``train`` section gives
    the training settings (without ``resume``, ``overwrite`` and ``resume_with_changes``, choices
    of each invocation), the ``model`` section the model config the run used, and
    ``environment`` is ignored.
    """
    path = resolve_config_file(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ImportError(f"reading {path} needs PyYAML: pip install pyyaml (or the extra: pip install "
                              "'uncertainty-rrsis[examples]'), or give the settings as .toml or .json") from None

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
    train = {k: v for k, v in data["train"].items() if k not in INVOCATION_KEYS}
    settings = merge_settings(train)
    section = data.get("model")
    if section is not None:
        if not isinstance(section, Mapping):
            raise ValueError(
                f"{path}: the 'model' section must be a model config mapping; got {type(section).__name__}"
            )
        if build_model_config(TrainConfig.from_dict(settings)).to_dict() != dict(section):
            settings["model"] = merge_nested(settings.get("model", {}), section)  # the model the run used wins
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


def _auto_bool(text: str) -> bool | str:
    return "auto" if text.lower() == "auto" else _bool(text)


def _optional(kind):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else kind(text)

    parse.__name__ = kind.__name__
    return parse


_PARSERS: dict[type, Callable[[str], Any]] = {bool: _bool, int: int, float: float, str: str, dict: json.loads}


def _recipe_default(name: str) -> str:
    from ..models.presets import list_presets, preset_recipe

    values = {preset: preset_recipe(preset).get(name, DEFAULT_RECIPE[name]) for preset in list_presets()}
    return "the preset recipe's: " + ", ".join(f"{preset} {value}" for preset, value in values.items())


def build_arg_parser(description: str | None = None, *, prog: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one ``--flag`` per :class:`TrainConfig` field and per model shortcut
    (``prog``: the program name its messages start with, default the script's)."""
    from ..data import list_datasets

    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", action="extend", default=None, metavar="FILE",
                        help="YAML / TOML / JSON files of options, bundled configs by name (rrsisd, refsegrs, "
                             "risbench, rows/base, rows/ugf, rows/udlr, rows/full), or a run folder's config.json; "
                             "with several (--config rrsisd rows/base, or the flag repeated) a later one wins over an "
                             "earlier one, and flags win over every file")
    for f in fields(TrainConfig):
        annotation = str(f.type)
        base = next((t for name, t in (("bool", bool), ("int", int), ("float", float), ("str", str), ("dict", dict))
                     if annotation.startswith(name)), str)
        parse = _PARSERS[base] if "None" not in annotation else _optional(_PARSERS[base])
        if f.metadata.get("parse") == "workers":
            parse = _workers
        elif f.metadata.get("parse") == "auto_bool":
            parse = _auto_bool
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


def checkpoint_settings(folder: str | Path) -> dict[str, Any]:
    """The training settings saved with a checkpoint (its ``trainer_state.json``), as keywords of
    :class:`TrainConfig`; without the choices of one invocation and keys this version does not know.
    Empty for a checkpoint without a trainer state (one written by ``save_pretrained`` alone)."""
    state = Path(folder) / "trainer_state.json"
    if not state.is_file():
        return {}
    saved = json.loads(state.read_text()).get("train_config", {})
    known = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in saved.items() if k in known and k not in INVOCATION_KEYS}
