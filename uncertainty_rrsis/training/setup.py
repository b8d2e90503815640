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
