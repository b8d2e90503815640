"""What a run needs before it trains or evaluates: model config, tokenizer, data, seeds, environment.

Each function takes what it needs and returns one thing; the :class:`~uncertainty_rrsis.training.Trainer`
and ``examples/evaluate.py`` both build their runs from them::

    model_config = build_model_config(config)                  # preset + recipe + overrides
    tokenizer = load_tokenizer(model_config.text.name)
    root = prepare_data_root(config, image_size=model_config.image_size, env=env)
    test = build_dataset(config.dataset, root, "test", tokenizer=tokenizer, model_config=model_config)
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..data import ensure_synthetic, get_dataset_class
from .config import TrainConfig
from .distributed import DistEnv

__all__ = [
    "build_model_config",
    "load_tokenizer",
    "prepare_data_root",
    "build_dataset",
    "seed_everything",
    "environment_info",
    "resolve_precision",
    "autocast_dtype",
    "resolve_num_workers",
]


def build_model_config(config: TrainConfig):
    """The model config of a run: the preset ``config.preset`` with ``config.model`` merged in.

    ``config.model`` already holds the preset recipe's model overrides under the run's own
    (see :class:`~uncertainty_rrsis.training.TrainConfig`); nested dicts merge into the
    sub-configs. Returns a :class:`~uncertainty_rrsis.models.CroBIMUConfig`.

    Raises:
        ValueError: an unknown preset or an unknown model-config field (the message lists the
            known ones).
    """
    from ..models import get_preset

    return get_preset(config.preset, **(config.model or {}))


def load_tokenizer(source: str | Path):
    """A Hugging Face tokenizer from a local folder (or a packaged model id)."""
    from transformers import AutoTokenizer

    from ..models import resolve_text_source

    resolved = resolve_text_source(str(source))
    try:
        return AutoTokenizer.from_pretrained(resolved)
    except OSError as err:
        raise OSError(
            f"could not load a tokenizer from {resolved!r}: pass --text-weights pointing to a local folder that "
            "holds the text encoder and its tokenizer files (vocab.txt / tokenizer.json)."
        ) from err


def prepare_data_root(config: TrainConfig, *, image_size: int, env: DistEnv | None = None) -> Path:
    """The dataset folder of a run; for ``synthetic``, generates the benchmark once into ``config.cache_dir``.

    Under DDP rank 0 generates (with a progress bar when ``config.progress``) while the other
    ranks wait at a barrier, then every rank finds the complete cached copy.

    Args:
        config: the run's settings (``dataset``, ``data_root``, ``cache_dir``, ``synthetic_*``).
        image_size: the side of the synthetic images (the model config's ``image_size``).
        env: the distributed layout (default: one process).
    """
    env = env or DistEnv()
    if config.dataset != "synthetic":
        if not config.data_root:
            raise ValueError(f"--dataset {config.dataset} needs --data-root PATH (the folder holding the dataset)")
        return Path(config.data_root)
    kwargs = {"seed": config.synthetic_seed, "image_size": image_size, "n_train": config.synthetic_train,
              "n_val": config.synthetic_val, "n_test": config.synthetic_test}
    if env.is_main:
        root = ensure_synthetic(config.cache_dir, progress=config.progress, **kwargs)
    env.barrier()
    if not env.is_main:
        root = ensure_synthetic(config.cache_dir, progress=False, **kwargs)
    return root


def build_dataset(name: str, root: str | Path, split: str, *, tokenizer: Any, model_config: Any,
                  return_orig_mask: bool = False):
    """The dataset ``name`` (looked up in the registry) of ``split`` under ``root``.

    Its samples are sized and tokenized as the model expects: ``image_size`` and
    ``text.max_tokens`` come from ``model_config``.

    Raises:
        ValueError: ``name`` is not registered (the message lists the registered names).
    """
    reader = get_dataset_class(name)
    return reader(root, split, tokenizer=tokenizer, max_tokens=model_config.text.max_tokens,
                  image_size=model_config.image_size, return_orig_mask=return_orig_mask)


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


def resolve_precision(precision: str, *, device: torch.device | str, amp: bool = True) -> str:
    """The numeric precision a run trains in: ``"bf16"``, ``"fp16"`` or ``"fp32"``.

    ``precision`` is ``--precision``: ``"auto"`` is bf16 autocast on CUDA and fp32 on the CPU;
    ``"bf16"`` and ``"fp16"`` run the forward under autocast with that dtype (fp16 also scales the
    loss with a gradient scaler); ``"fp32"`` uses no autocast. ``amp`` is the deprecated ``--amp``:
    ``False`` is ``"fp32"`` (it contradicts an explicit ``"bf16"`` or ``"fp16"``).

    Raises:
        ValueError: ``"fp16"`` on a device other than CUDA (the gradient scaler and fp16 autocast
            are CUDA features here), a contradiction with ``amp``, or an unknown value.
    """
    device = torch.device(device)
    if precision not in ("auto", "bf16", "fp16", "fp32"):
        raise ValueError(f"--precision must be one of auto, bf16, fp16, fp32; got {precision!r}")
    if not amp:
        if precision in ("bf16", "fp16"):
            raise ValueError(f"--amp false and --precision {precision} contradict each other: --amp false means "
                             "--precision fp32. --amp is deprecated: give --precision alone")
        return "fp32"
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
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
