"""What a run needs before it trains or evaluates: tokenizer, data, checks of the settings, seeds, environment.

Each function takes what it needs and returns one thing; :func:`~uncertainty_rrsis.training.build_trainer`
and ``examples/evaluate.py`` both build their runs from them::

    model_config = build_model_config(config)                  # preset + recipe + overrides
    tokenizer = load_tokenizer(model_config.text.name)
    root = prepare_data_root(config, image_size=model_config.image_size, env=env)
    datasets = SplitDatasets(config.dataset, root, tokenizer=tokenizer, model_config=model_config)
    test = datasets["test"]
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from .._version import __version__
from ..data import SPLITS, EmptySplitError, get_dataset_class
from .config import TrainConfig
from .distributed import DistEnv

__all__ = [
    "SettingsError",
    "check_vision_weights",
    "load_tokenizer",
    "tokenizer_from_training_sentences",
    "prepare_data_root",
    "build_dataset",
    "SplitDatasets",
    "seed_everything",
    "environment_info",
    "resolve_precision",
    "autocast_dtype",
    "resolve_num_workers",
]


class SettingsError(ValueError):
    """Settings that would run but not do what the user wants (the message says what to pass)."""


def check_vision_weights(config: TrainConfig, model_config: Any) -> None:
    """Refuse to train a preset meant to start from pretrained weights from random initialisation.

    A preset registered with ``pretrained_backbone=True`` (``paper``) needs ``vision.weights``;
    ``--vision-weights none`` asks for random initialisation on purpose (building the model then
    warns, as :class:`~uncertainty_rrsis.models.CroBIMU` does for such a config in Python). A
    resumed run reads its weights from its checkpoint and is not checked.

    Raises:
        SettingsError: no weights were given for such a preset.
    """
    from ..models.presets import preset_info

    if not preset_info(config.preset).pretrained_backbone or config.resume:
        return
    weights = model_config.vision.weights
    if weights is None:
        raise SettingsError(
            f"--preset {config.preset} builds {model_config.vision.name}, which the paper trains from pretrained "
            "weights, and no --vision-weights was given. Pass --vision-weights FILE with local weights, e.g. timm's "
            "'convnext_base.fb_in22k_ft_in1k_384' saved on a machine with network access (python -c \"import timm, "
            "torch; torch.save(timm.create_model('convnext_base.fb_in22k_ft_in1k_384', pretrained=True).state_dict(), "
            "'convnext_base.pth')\"), or an SMLFR or other ConvNeXt-B checkpoint (its keys are mapped by "
            "uncertainty_rrsis.models.load_foreign_checkpoint); or --vision-weights none to train from random "
            "initialisation on purpose."
        )


def load_tokenizer(source: str | Path):
    """A Hugging Face tokenizer from a local folder or a Hub id (the Hugging Face cache first)."""
    from transformers import AutoTokenizer

    resolved = str(source)
    try:
        return AutoTokenizer.from_pretrained(resolved)
    except OSError as err:
        raise OSError(
            f"could not load a tokenizer from {resolved!r}: pass --text-weights pointing to a local folder that "
            "holds the text encoder and its tokenizer files (vocab.txt / tokenizer.json), or a Hub id that is "
            "in the Hugging Face cache or reachable online."
        ) from err


def frozen_text_encoder(name: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model-config and training changes that put the pretrained text encoder ``name`` (Hub id
    or folder), frozen and without the learning-rate warm-up, in place of the ``tiny`` preset's
    encoder learnt from scratch: the studies' ``--text-weights``. ``({}, {})`` for ``None``."""
    if not name:
        return {}, {}
    return {"text": {"name": str(name), "pretrained": True, "freeze": True}}, {"lr_warmup_steps": 0}


def tokenizer_from_training_sentences(config: TrainConfig, root: str | Path, model_config: Any, *,
                                      env: DistEnv | None = None) -> Any:
    """The WordPiece tokenizer learnt from the sentences of the training split under ``root``, for a
    text encoder learnt from scratch (:data:`~uncertainty_rrsis.models.tokenizer.FROM_SCRATCH`).

    Built once per set of sentences and kept in ``<cache_dir>/tokenizers/<hash>/`` (rank 0 builds
    it, the other ranks and later runs, a resumed one included, load it), so every process and every
    resumption of a run tokenizes alike.
    """
    import hashlib

    from transformers import AutoTokenizer

    from ..models.tokenizer import train_tokenizer

    env = env or DistEnv()
    reader = get_dataset_class(config.dataset)(root, "train", tokenizer=None, max_tokens=model_config.text.max_tokens,
                                               image_size=model_config.image_size)
    sentences = sorted({s for record in reader.records for s in record.sentences})
    digest = hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()[:16]
    folder = Path(config.cache_dir) / "tokenizers" / digest
    if env.is_main and not (folder / "tokenizer.json").is_file():
        tokenizer = train_tokenizer(sentences, max_tokens=model_config.text.max_tokens)
        partial = folder.with_name(folder.name + f".tmp{os.getpid()}")
        tokenizer.save_pretrained(str(partial))
        try:
            os.replace(partial, folder)  # whole or not at all, for a process that reads it meanwhile
        except OSError:  # another run put it there first: the same sentences gave the same tokenizer
            import shutil

            shutil.rmtree(partial, ignore_errors=True)
    env.barrier()
    return AutoTokenizer.from_pretrained(str(folder))


def prepare_data_root(config: TrainConfig, *, image_size: int, env: DistEnv | None = None) -> Path:
    """The dataset folder of a run; for a dataset generated on first use (``synthetic``), generates it
    once into ``config.cache_dir`` (sizes and seed from the ``synthetic_*`` settings).

    Under DDP rank 0 generates (with a progress bar when ``config.progress``) while the other
    ranks wait at a barrier, then every rank finds the complete cached copy.

    Args:
        config: the run's settings (``dataset``, ``data_root``, ``cache_dir``, ``synthetic_*``).
        image_size: the side of generated images (the model config's ``image_size``).
        env: the distributed layout (default: one process).
    """
    env = env or DistEnv()
    reader = get_dataset_class(config.dataset)
    if not reader.generated:
        if not config.data_root:
            raise ValueError(f"--dataset {config.dataset} needs --data-root PATH (the folder holding the dataset)")
        return Path(config.data_root)
    kwargs: dict[str, Any] = {"image_size": image_size, "seed": config.synthetic_seed,
                              "sizes": {"train": config.synthetic_train, "val": config.synthetic_val,
                                        "test": config.synthetic_test}}
    if env.is_main:
        root = reader.generate(config.cache_dir, progress=config.progress, **kwargs)
    env.barrier()
    if not env.is_main:
        root = reader.generate(config.cache_dir, progress=False, **kwargs)
    return root


def build_dataset(name: str, root: str | Path, split: str, *, tokenizer: Any, model_config: Any,
                  return_orig_mask: bool = False, check_record: str | Path | None = None):
    """The dataset ``name`` (looked up in the registry) of ``split`` under ``root``.

    Its samples are sized and tokenized as the model expects: ``image_size`` and
    ``text.max_tokens`` come from ``model_config``. ``check_record``: the SQLite record of image
    files that passed the JPEG check (:class:`~uncertainty_rrsis.data.CheckedFiles`), so each
    unchanged file is checked once.

    Raises:
        ValueError: ``name`` is not registered (the message lists the registered names).
    """
    reader = get_dataset_class(name)
    return reader(root, split, tokenizer=tokenizer, max_tokens=model_config.text.max_tokens,
                  image_size=model_config.image_size, return_orig_mask=return_orig_mask, check_record=check_record)


class SplitDatasets(Mapping[str, Dataset]):
    """The datasets of a run by split, built on first use and kept: ``datasets["train"]``.

    Each is the registered reader ``name`` under ``root``, sized and tokenized as the model expects
    (:func:`build_dataset`). ``split in datasets`` is True for a split that exists and holds samples
    (a missing or empty split: False; a broken one raises).

    Args:
        name: a registered dataset name.
        root: the dataset folder (:func:`prepare_data_root`).
        tokenizer, model_config, check_record: as for :func:`build_dataset`.
    """

    def __init__(self, name: str, root: str | Path, *, tokenizer: Any, model_config: Any,
                 check_record: str | Path | None = None) -> None:
        self.name, self.root = name, Path(root)
        self.tokenizer, self.model_config, self.check_record = tokenizer, model_config, check_record
        self._built: dict[str, Dataset] = {}

    def __getitem__(self, split: str) -> Dataset:
        if split not in self._built:
            self._built[split] = build_dataset(self.name, self.root, split, tokenizer=self.tokenizer,
                                               model_config=self.model_config, check_record=self.check_record)
        return self._built[split]

    def __contains__(self, split: object) -> bool:
        if not isinstance(split, str) or split not in SPLITS:
            return False
        try:
            return len(self[split]) > 0  # type: ignore[arg-type]
        except (FileNotFoundError, EmptySplitError):
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(SPLITS)

    def __len__(self) -> int:
        return len(SPLITS)

    def describe(self) -> str:
        """``the <name> data under <root>``, for messages."""
        return f"the {self.name} data under {self.root}"


def seed_everything(seed: int) -> None:
    """Seed Python's, torch's and (when installed) numpy's global generators."""
    random.seed(seed)
    torch.manual_seed(seed)
    with contextlib.suppress(ImportError):
        import numpy as np

        np.random.seed(seed % 2**32)


def environment_info() -> dict[str, Any]:
    """Versions and devices, logged next to every result."""
    import einops

    info: dict[str, Any] = {
        "uncertainty_rrsis": __version__,
        "torch": torch.__version__,
        "einops": einops.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.version.cuda,
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
    }
    for name in ("timm", "transformers"):
        with contextlib.suppress(ImportError):
            info[name] = __import__(name).__version__
    return info


def resolve_precision(precision: str, *, device: torch.device | str, fp16_fallback: bool = False) -> str:
    """The numeric precision a run trains in: ``"bf16"``, ``"fp16"`` or ``"fp32"``.

    ``precision`` is ``--precision``: ``"auto"`` is bf16 autocast on CUDA and fp32 on the CPU;
    ``"bf16"`` and ``"fp16"`` run the forward under autocast with that dtype (fp16 also scales the
    loss with a gradient scaler); ``"fp32"`` uses no autocast. With ``fp16_fallback`` (evaluating a run
    trained in fp16 on another device), ``"fp16"`` off CUDA is ``"fp32"`` instead of an error.

    Raises:
        ValueError: ``"fp16"`` on a device other than CUDA (the gradient scaler and fp16 autocast
            are CUDA features here), or an unknown value.
    """
    device = torch.device(device)
    if precision not in ("auto", "bf16", "fp16", "fp32"):
        raise ValueError(f"--precision must be one of auto, bf16, fp16, fp32; got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        if fp16_fallback:
            return "fp32"
        raise ValueError(f"--precision fp16 needs a CUDA device (fp16 autocast with a gradient scaler); this run "
                         f"uses {device}. Use --precision fp32 (or auto, the same on the CPU), or bf16 for "
                         "bfloat16 autocast on the CPU")
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (:func:`resolve_precision`); None for fp32."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def resolve_num_workers(value: int | str, *, device: torch.device | str, cpus: int | None = None,
                        local_world_size: int | None = None) -> int:
    """DataLoader worker processes per rank for ``--num-workers``.

    A number is used as given. ``"auto"`` is 0 on the CPU (the main process loads the data, which
    suits a laptop whose cores already run the model) and ``min(8, CPUs per rank - 1)`` on CUDA,
    where the CPUs per rank are the CPUs this process may run on (its affinity: what SLURM's
    ``--cpus-per-task`` or a container grants) divided by the ranks on this node
    (``LOCAL_WORLD_SIZE``, set by ``torchrun``; 1 without it).

    Args:
        value: an integer >= 0 or ``"auto"``.
        device: the device the rank trains on.
        cpus: the CPUs available to this process (default: its affinity, or ``os.cpu_count()``).
        local_world_size: ranks on this node (default: ``LOCAL_WORLD_SIZE`` or 1).
    """
    if value != "auto":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"--num-workers must be a number >= 0 or auto; got {value!r}")
        return value
    if torch.device(device).type != "cuda":
        return 0
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
    if local_world_size is None:
        try:
            local_world_size = max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
        except ValueError:
            local_world_size = 1
    return max(0, min(8, cpus // local_world_size - 1))
