"""Building a run from its settings: the parts a :class:`~uncertainty_rrsis.training.Trainer` is handed.

::

    trainer = build_trainer(TrainConfig())          # the embedded default: tiny model, synthetic data
    results = trainer.fit()

:func:`build_trainer` checks every setting and the data before anything is written, then builds
the model config, the tokenizer, the datasets, the model and the criterion (with ``L_unc``'s
warm-up resolved for the length of this run) and hands them to the Trainer. To train parts of
your own, build them yourself and call ``Trainer(config, model, criterion, datasets, ...)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data import CHECK_RECORD_NAME
from ..losses import OnlineErrorLoss, RiskGuidedLoss, get_loss
from ..models.tokenizer import FROM_SCRATCH, with_vocabulary
from .config import TrainConfig, build_model_config
from .distributed import DistEnv, EpochSampler, init_distributed, per_rank_batch
from .evaluation import split_names
from .run_log import PhaseTimes
from .schedule import total_steps
from .setup import (
    SettingsError,
    SplitDatasets,
    check_vision_weights,
    load_tokenizer,
    prepare_data_root,
    resolve_precision,
    seed_everything,
    tokenizer_from_training_sentences,
)
from .trackers import TENSORBOARD_EXTRA, WANDB_EXTRA, installed
from .trainer import Trainer

__all__ = ["build_trainer", "build_criterion", "check_splits"]


def build_criterion(config: TrainConfig, *, total: int) -> RiskGuidedLoss:
    """The objective of Eq. 18 with the run's weights and ``L_seg`` (``config.seg_loss``), for a run of
    ``total`` optimizer steps (``unc_warmup_fraction`` becomes a number of steps here, once)."""
    warmup = config.unc_warmup_steps
    if config.unc_warmup_fraction is not None:
        warmup = round(config.unc_warmup_fraction * total)
    return RiskGuidedLoss(
        lambda_unc=config.lambda_unc,
        lambda_ref=config.lambda_ref,
        lambda_risk=config.lambda_risk,
        seg_loss=get_loss(config.seg_loss)(),
        uncertainty_loss=OnlineErrorLoss(
            hard_sample_weight=config.unc_hard_sample_weight,
            hard_iou_threshold=config.unc_hard_iou_threshold,
            blur_kernel_size=config.unc_target_blur,
            warmup_steps=warmup,
            pixel_weighting=config.unc_pixel_weighting,
        ),
    )


def check_splits(config: TrainConfig, datasets: SplitDatasets, *, world_size: int) -> None:
    """Refuse, before training, a training split smaller than one batch and unusable evaluation splits."""
    where = datasets.describe()
    count = len(datasets["train"])  # type: ignore[arg-type]
    if count == 0:
        raise ValueError(f"the training split of {where} is empty (0 samples): there is nothing to train on. "
                         "Check --data-root and the training split's file.")
    if count < config.batch_size:
        raise ValueError(
            f"the training split of {where} has {count} samples, fewer than one batch (--batch-size "
            f"{config.batch_size}, the total over {world_size} process(es) x {config.grad_accumulation} "
            f"accumulation step(s)), so not one optimizer step can be made. Choose --batch-size {count} or less "
            "(a multiple of processes x accumulation steps), or train on more samples."
        )
    skip = "leave it out of --eval-splits (--eval-splits val, say, or --eval-splits '' for no final evaluation)"
    for split in split_names(config.eval_splits):
        try:
            size = len(datasets[split])  # type: ignore[arg-type]
        except (FileNotFoundError, ValueError, OSError) as err:  # missing, unreadable or (for some readers) empty
            raise ValueError(f"--eval-splits {config.eval_splits!r}: the {split} split of {where} cannot be used: "
                             f"{err}\nTo train anyway, {skip}.") from err
        if size == 0:
            raise ValueError(f"--eval-splits {config.eval_splits!r}: the {split} split of {where} is empty (0 "
                             f"samples); the final evaluation cannot score it. Check --data-root, or {skip}.")


def build_trainer(config: TrainConfig, *, env: DistEnv | None = None, model_config: Any = None) -> Trainer:
    """Everything a run needs, built from its settings, handed to a :class:`Trainer`.

    Args:
        config: the run's settings (validated here).
        env: the distributed layout (default: read from the environment, ``torchrun`` or a plain process).
        model_config: use this model config instead of :func:`build_model_config` of ``config``.

    Raises:
        ValueError: settings that cannot work (the message names the setting).
        SettingsError: settings that would run but not do what was asked (a preset meant for pretrained
            weights without them, fp16 off CUDA).
    """
    from ..models import CroBIMU

    config.validate()
    if config.tensorboard is True and not installed("tensorboard"):
        raise SettingsError(f"--tensorboard true asks for TensorBoard logging, but the tensorboard package is not "
                            f"installed: {TENSORBOARD_EXTRA}, or --tensorboard auto (on when installed) or false")
    if config.wandb != "off" and not installed("wandb"):
        raise SettingsError(f"--wandb {config.wandb} asks for Weights & Biases logging, but the wandb package is not "
                            f"installed: {WANDB_EXTRA}, or --wandb off")
    env = env or init_distributed(device=config.device)
    try:
        resolve_precision(config.precision, device=env.device)
    except ValueError as err:
        raise SettingsError(str(err)) from None
    seed_everything(config.seed)
    times = PhaseTimes()
    model_config = model_config if model_config is not None else build_model_config(config)
    check_vision_weights(config, model_config)
    scratch = model_config.text.name == FROM_SCRATCH  # a tokenizer and a text encoder learnt from the sentences
    tokenizer = None if scratch else load_tokenizer(model_config.text.name)
    with times("data preparation"):
        root = prepare_data_root(config, image_size=model_config.image_size, env=env)
        if scratch:
            tokenizer = tokenizer_from_training_sentences(config, root, model_config, env=env)
            model_config = model_config.replace(text={"hf_config": with_vocabulary(model_config.text.hf_config,
                                                                                   tokenizer)})
    datasets = SplitDatasets(config.dataset, root, tokenizer=tokenizer, model_config=model_config,
                             check_record=Path(config.cache_dir) / CHECK_RECORD_NAME)
    check_splits(config, datasets, world_size=env.world_size)
    model = CroBIMU(model_config)
    batch = per_rank_batch(config.batch_size, env.world_size, config.grad_accumulation)
    sampler = EpochSampler(len(datasets["train"]), batch_size=batch, seed=config.seed,  # type: ignore[arg-type]
                           rank=env.rank, world_size=env.world_size)
    total = total_steps(batches_per_epoch=sampler.batches_per_epoch, grad_accumulation=config.grad_accumulation,
                        epochs=config.epochs, max_steps=config.max_steps)
    return Trainer(config, model, build_criterion(config, total=total), datasets, tokenizer=tokenizer, env=env,
                   times=times)
