"""The :class:`Trainer`: fits the reference model, as a plain process or one rank of ``torchrun``.

It builds the run from a :class:`TrainConfig` (through :mod:`.setup`), trains with resumable
atomic checkpoints, validates periodically and evaluates the best checkpoint at the end
(through :mod:`.evaluation`), and writes the run folder (rank 0 only)::

    <output_dir>/config.json            the TrainConfig, the model config and the environment
    <output_dir>/log.jsonl              losses, learning rate, samples/s, eval results
    <output_dir>/checkpoints/last/      resumable (weights + optimizer/scheduler/RNG + position)
    <output_dir>/checkpoints/best/      best val mIoU or oIoU (--select-metric; never chosen on test)
    <output_dir>/checkpoints/final/     the weights at the end of training
    <output_dir>/metrics.json           final metrics with protocol, seed and versions
    <output_dir>/panels/*.png           image / GT / prediction / U^p / M panels
    <output_dir>/.lock                  while the run trains: pid, host and start time of its process

A run folder belongs to one run (see :mod:`.run_folder`): ``fit`` takes the folder's lock before it
writes anything and refuses a folder that holds another run, unless ``resume`` (whose settings
must match the run's, unless ``resume_with_changes``) or ``overwrite`` (which starts clean).

Only rank 0 reads and writes the run folder: a resume and the final evaluation read the
checkpoints on rank 0 and broadcast them, so nodes without a shared file system train together.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..data import DatasetError, EmptySplitError, collate
from ..losses import OnlineErrorLoss, RiskGuidedLoss
from . import evaluation
from .checkpoint import (
    atomic_write_text,
    find_checkpoint,
    load_trainer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import RESUME_MAY_CHANGE, RESUME_MAY_CHANGE_MODEL, TrainConfig
from .distributed import (
    DistEnv,
    EpochSampler,
    broadcast_from_main,
    broadcast_state,
    init_distributed,
    per_rank_batch,
)
from .run_folder import (
    RunFolderError,
    RunLock,
    format_changes,
    remove_run_files,
    run_markers,
    settings_changes,
)
from .run_log import RunLog
from .schedule import poly_schedule
from .setup import (
    autocast_dtype,
    build_dataset,
    build_model_config,
    environment_info,
    load_tokenizer,
    prepare_data_root,
    resolve_num_workers,
    resolve_precision,
    seed_everything,
)
from .signals import StopOnSignal

__all__ = ["Trainer"]


class _StopRequested(Exception):
    pass


#: Presets whose vision backbone the paper starts from pretrained weights.
PRETRAINED_BACKBONE_PRESETS = ("paper",)


class PhaseTimes:
    """Wall seconds spent per phase of a run, for the time breakdown in ``log.jsonl`` and on the console."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - t0)

    def record(self) -> dict[str, float]:
        """``{"time/<phase>": seconds, ..., "time/total": seconds since the trainer was built}``."""
        out = {f"time/{k}": round(v, 2) for k, v in self.seconds.items()}
        out["time/total"] = round(time.perf_counter() - self.started, 2)
        return out

    def summary(self) -> str:
        total = time.perf_counter() - self.started
        other = max(total - sum(self.seconds.values()), 0.0)
        items = [*self.seconds.items(), ("other (model, tokenizer, logging)", other)]
        parts = ", ".join(f"{k} {v:.0f} s ({100 * v / total:.0f} %)" for k, v in items)
        return f"time: {total:.0f} s in all: {parts}"


class SettingsError(ValueError):
    """Settings that would run but not do what the user wants (the message says what to pass)."""


def check_vision_weights(config: TrainConfig, model_config: Any) -> None:
    """Refuse to train a preset meant to start from pretrained weights from random initialisation.

    ``--vision-weights none`` asks for random initialisation on purpose: then only a warning.
    A resumed run reads its weights from its checkpoint and is not checked.
    """
    if config.preset not in PRETRAINED_BACKBONE_PRESETS or config.resume:
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
    from ..models import RANDOM_WEIGHTS

    if str(weights).lower() in RANDOM_WEIGHTS:
        warnings.warn(
            f"--preset {config.preset}: training {model_config.vision.name} from random initialisation "
            "(--vision-weights none); the paper starts from pretrained weights, so expect far lower scores.",
            RuntimeWarning,
            stacklevel=2,
        )


class Trainer:
    """Builds everything from a :class:`TrainConfig` and trains the reference model.

    Args:
        config: the run's settings.
        env: the distributed layout (default: read from the environment).
        model_config: use this model config instead of :func:`build_model_config` of ``config``.
    """

    def __init__(self, config: TrainConfig, *, env: DistEnv | None = None, model_config: Any = None) -> None:
        from ..models import CroBIMU

        config.validate()
        self.cfg = config
        self.env = env or init_distributed(device=config.device)
        self.device = self.env.device
        self.out = Path(config.output_dir)
        try:
            #: the precision of the run: "bf16", "fp16" or "fp32" (--precision, resolved for the device)
            self.precision = resolve_precision(config.precision, device=self.device, amp=config.amp)
        except ValueError as err:
            raise SettingsError(str(err)) from None
        self.autocast_dtype = autocast_dtype(self.precision)
        #: fp16's gradient scaler (None in bf16 and fp32); its state is part of the resumable checkpoint
        self.scaler: Any = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        #: DataLoader workers per rank (--num-workers, "auto" resolved for the device)
        self.num_workers = resolve_num_workers(config.num_workers, device=self.device)
        seed_everything(config.seed)
        #: wall seconds per phase (setup, synthetic data, loading, steps, validation, checkpoints, final evaluation)
        self.times = PhaseTimes()
        self.model_config = model_config if model_config is not None else build_model_config(config)
        check_vision_weights(config, self.model_config)
        self.image_size = self.model_config.image_size
        self.tokenizer = load_tokenizer(self.model_config.text.name)
        self.datasets: dict[str, Any] = {}
        with self.times("data preparation"):
            self._data_root = prepare_data_root(config, image_size=self.image_size, env=self.env)
        self.model = CroBIMU(self.model_config).to(self.device)
        if config.sync_bn and self.env.distributed:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.net: torch.nn.Module = self.model
        if self.env.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        if config.compile:
            self.net = torch.compile(self.net)
        self.criterion = RiskGuidedLoss(
            lambda_unc=config.lambda_unc,
            lambda_ref=config.lambda_ref,
            lambda_risk=config.lambda_risk,
            uncertainty_loss=OnlineErrorLoss(
                hard_sample_weight=config.unc_hard_sample_weight,
                hard_iou_threshold=config.unc_hard_iou_threshold,
                blur_kernel_size=config.unc_target_blur,
                warmup_steps=config.unc_warmup_steps,
                pixel_weighting=config.unc_pixel_weighting,
            ),
        )
        self.per_rank_batch = per_rank_batch(config.batch_size, self.env.world_size, config.grad_accumulation)
        self.log = RunLog(self.out, is_main=self.env.is_main)
        self.step = 0
        self.epoch = 0
        self.batches_done = 0
        #: the best validation score so far, by ``config.select_metric``, and the step it was reached at
        self.best: float | None = None
        self.best_step: int | None = None
        self._accepted_changes: dict[str, tuple[Any, Any]] = {}

    # ------------------------------------------------------------------------------ data
    def dataset(self, split: str, *, return_orig_mask: bool = False):
        """The dataset of ``split`` (cached), sized and tokenized as the model expects."""
        key = f"{split}:{return_orig_mask}"
        if key not in self.datasets:
            self.datasets[key] = build_dataset(self.cfg.dataset, self._data_root, split, tokenizer=self.tokenizer,
                                               model_config=self.model_config, return_orig_mask=return_orig_mask)
        return self.datasets[key]

    def _has_split(self, split: str) -> bool:
        """Whether ``split`` exists and holds samples (a missing or empty split: False; a broken one raises)."""
        try:
            return len(self.dataset(split)) > 0
        except (FileNotFoundError, EmptySplitError):
            return False

    def _batches(self, sampler: EpochSampler) -> Iterator[dict[str, Any]]:
        # The loader draws its worker seed from its own generator, never from the global RNG, so
        # creating it mid-epoch after a resume does not shift the dropout masks of the model.
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.epoch * 7919 + self.env.rank)
        loader = DataLoader(self.dataset("train"), batch_size=self.per_rank_batch, sampler=sampler,
                            collate_fn=collate, num_workers=self.num_workers, drop_last=True,
                            persistent_workers=False, generator=generator)
        yield from loader

    # ------------------------------------------------------------------------------ checkpoints
    def _info(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "batches_done": self.batches_done,
                "best_val": self.best, "best_metric": self.cfg.select_metric, "best_step": self.best_step,
                "precision": self.precision, "train_config": self.cfg.to_dict(),
                "model_config": self.model_config.to_dict(), "world_size": self.env.world_size}

    def save(self, name: str, optimizer, scheduler) -> None:
        """Write ``checkpoints/<name>`` atomically (rank 0).

        The resumable state holds the optimizer, the scheduler, fp16's gradient scaler and rank 0's
        RNG states (every rank seeds alike and draws alike, so rank 0's states are every rank's).
        """
        if self.env.is_main:
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()}
            if self.scaler is not None:
                state["scaler"] = self.scaler.state_dict()
            save_checkpoint(self.out / "checkpoints" / name, model=_Saver(self.model, self.tokenizer),
                            trainer_state=state, info=self._info())
        self.env.barrier()

    def load_weights(self, folder: str | Path) -> None:
        """Load ``folder/model.safetensors`` (a checkpoint of this model) strictly into the model.

        Reads the file on this rank (see :meth:`_read_on_main` for rank 0 alone).

        Raises:
            ValueError: the file is truncated or corrupt, or its tensors do not fit the model (the
                message names the file, counts the keys and shows a few).
        """
        self.model.load_state_dict(self._read_weights(folder), strict=True)

    def _read_weights(self, folder: str | Path) -> dict[str, torch.Tensor]:
        """The state dict in ``folder/model.safetensors``, checked against the model (see :meth:`load_weights`)."""
        from ..models import LoadReport, load_state_file, strip_wrapper_prefixes

        path = Path(folder) / "model.safetensors"
        state = strip_wrapper_prefixes(load_state_file(path))
        own = self.model.state_dict()
        report = LoadReport(source=str(path), missing=[k for k in own if k not in state],
                            unexpected=[k for k in state if k not in own],
                            mismatched=[(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                                        if k in own and tuple(v.shape) != tuple(own[k].shape)])
        if not report.ok:
            raise ValueError(
                f"the weights in {path} do not fit the model of this run's settings:\n{report.summary(limit=3)}\n"
                "Likely cause: the checkpoint was written with other model settings (see its config.json)."
            )
        return state

    def _read_on_main(self, read: Any, what: str) -> Any:
        """``read()`` on rank 0 alone, its result (tensors included) on every rank.

        Only rank 0 needs the run folder: the other ranks receive what it read
        (:func:`~uncertainty_rrsis.training.broadcast_state`), so nodes without a shared file
        system resume and evaluate from rank 0's checkpoints. An error on rank 0 is raised there
        and, as a :class:`RunFolderError` naming it, on every other rank.
        """
        result: Any = None
        failure: BaseException | None = None
        if self.env.is_main:
            try:
                result = read()
            except Exception as err:  # noqa: BLE001 - every rank must hear of it, or they wait for rank 0
                failure = err
        self._stop_together(failure, f"read {what}")
        return broadcast_state(self.env, result)

    def _stop_together(self, failure: BaseException | None, action: str) -> None:
        """Every rank hears whether rank 0 failed at ``action`` (``failure`` is rank 0's own error) and, if
        so, all stop: rank 0 re-raises its error, the others raise a :class:`RunFolderError` naming it."""
        message = broadcast_from_main(self.env, None if failure is None else f"{type(failure).__name__}: {failure}")
        if message is None:
            return
        self.env.barrier()  # every rank holds the message before any rank stops and tears its group down
        if failure is not None:
            raise failure
        raise RunFolderError(f"rank 0 could not {action}, so rank {self.env.rank} stops too: {message}")

    def _read_resume_state(self) -> dict[str, Any] | None:
        """Rank 0: the resumable checkpoint's weights, trainer state and progress, or None without one."""
        folder = find_checkpoint(self.out / "checkpoints" / "last")
        if folder is None:
            return None
        try:
            weights = self._read_weights(folder)
            state, info = load_trainer_state(folder)
        except (ValueError, OSError) as err:
            raise RunFolderError(f"cannot resume the run in {self.out} from {folder}: {err}\n"
                                 f"{self._way_out(folder)}") from err
        return {"folder": str(folder), "weights": weights, "state": state, "info": info}

    def _resume(self, optimizer, scheduler) -> bool:
        loaded = self._read_on_main(self._read_resume_state, f"the resumable checkpoint of {self.out}")
        if loaded is None:
            self.log.print(f"--resume: no checkpoint under {self.out / 'checkpoints' / 'last'}; starting from scratch")
            if self._accepted_changes:
                self.log.write({"event": "resumed", "step": 0, "from": None, "time": time.time(),
                                "changes": {name: list(pair) for name, pair in self._accepted_changes.items()}},
                               step=0)
            return False
        folder, state, info = Path(loaded["folder"]), loaded["state"], loaded["info"]
        self.model.load_state_dict(loaded["weights"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        if self.cfg.resume_with_changes:
            self._apply_optimizer_settings(optimizer, scheduler)
        set_rng_state(state["rng"])
        self.step, self.epoch, self.batches_done = info["step"], info["epoch"], info["batches_done"]
        self._restore_best(info)
        self.log.print(f"resumed from {folder} at step {self.step} (epoch {self.epoch}, batch {self.batches_done})")
        record: dict[str, Any] = {"event": "resumed", "step": self.step, "from": str(folder), "time": time.time()}
        if self._accepted_changes:
            record["changes"] = {name: list(pair) for name, pair in self._accepted_changes.items()}
        self.log.write(record, step=self.step)
        return True

    def _restore_best(self, info: Mapping[str, Any]) -> None:
        """The best score so far from a checkpoint's progress; forgotten when it was chosen by another metric."""
        metric = info.get("best_metric", "mIoU")  # checkpoints of older versions chose by mIoU
        best = info.get("best_val", info.get("best_val_mIoU"))
        if best is not None and metric != self.cfg.select_metric:
            self.log.print(f"the run's best checkpoint was chosen by val {metric}; this run chooses by val "
                           f"{self.cfg.select_metric}, so the next validation sets the best checkpoint")
            best = None
        self.best = best
        self.best_step = info.get("best_step") if best is not None else None

    def _way_out(self, broken: Path) -> str:
        """What to do when the resumable checkpoint ``broken`` cannot be read."""
        best = find_checkpoint(self.out / "checkpoints" / "best")
        text = ""
        if best is not None and best != broken:
            with contextlib.suppress(ValueError, OSError, KeyError):
                step = json.loads((best / "trainer_state.json").read_text())["step"]
                text = (f"{best} (step {step}) is also a complete training checkpoint: copy it over {broken} to "
                        "continue from that step, or ")
        text += ("copy the checkpoint folder again from a backup; or start the run again with --overwrite (which "
                 f"deletes the run's files in {self.out})")
        return text[0].upper() + text[1:] + "."

    def _apply_optimizer_settings(self, optimizer, scheduler) -> None:
        """After loading the optimizer and scheduler states: the learning rates and weight decay of the
        current settings (the states hold the run's), on the run's position in the schedule."""
        groups = self.model.param_groups(self.cfg.lr)
        if len(groups) != len(optimizer.param_groups):
            return
        scheduler.base_lrs = [group["lr"] for group in groups]
        for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
            group["initial_lr"] = base
            group["lr"] = base * factor(scheduler.last_epoch)
            group["weight_decay"] = self.cfg.weight_decay

    def _save_final(self) -> None:
        if self.env.is_main:
            final, tmp = self.out / "checkpoints" / "final", self.out / "checkpoints" / "final.tmp"
            _Saver(self.model, self.tokenizer).save_pretrained(tmp)
            if final.exists():
                shutil.rmtree(final)
            tmp.replace(final)
        self.env.barrier()

    # ------------------------------------------------------------------------------ training
    def optimizer_and_schedule(self, total: int) -> tuple[torch.optim.Optimizer, Any]:
        """AdamW over the model's parameter groups and the per-iteration polynomial schedule of ``total`` steps."""
        cfg = self.cfg
        optimizer = torch.optim.AdamW(self.model.param_groups(cfg.lr), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = poly_schedule(optimizer, total_steps=total, power=cfg.poly_power, warmup_steps=cfg.lr_warmup_steps)
        return optimizer, scheduler

    def total_steps(self, sampler: EpochSampler) -> int:
        """Optimizer steps of the run: ``epochs`` x steps per epoch, capped by ``max_steps``."""
        per_epoch = sampler.batches_per_epoch // self.cfg.grad_accumulation
        if per_epoch == 0:
            raise ValueError("fewer training batches per epoch than --grad-accumulation")
        total = per_epoch * self.cfg.epochs
        return min(total, self.cfg.max_steps) if self.cfg.max_steps else total

    def fit(self) -> dict[str, Any]:
        """Train (resuming when asked), then evaluate the best checkpoint; returns the final metrics.

        Rank 0 first takes the run folder's lock and checks the folder: a folder that holds a run
        needs ``resume`` (whose result-changing settings must match the run's, unless
        ``resume_with_changes``) or ``overwrite``. A refusal raises :class:`RunFolderError` on
        every rank.
        """
        with self._claim_run_folder():
            return self._fit()

    @contextlib.contextmanager
    def _claim_run_folder(self) -> Iterator[None]:
        """Hold the run folder's lock (rank 0) while the run writes there; check the folder first."""
        lock: RunLock | None = None
        failure: BaseException | None = None
        if self.env.is_main:
            try:
                lock = RunLock.acquire(self.out)
                if lock.note:
                    self.log.print(lock.note)
                self._accepted_changes = self._check_run_folder()
            except BaseException as err:  # noqa: BLE001 - every rank must hear of it, or they wait for rank 0
                failure = err
                if lock is not None:
                    lock.release()
        self._stop_together(failure, f"start the run in {self.out}")
        try:
            yield
        finally:
            if lock is not None:
                lock.release()

    def _check_run_folder(self) -> dict[str, tuple[Any, Any]]:
        """Rank 0, holding the lock: refuse a folder that holds a run (without resume / overwrite), clear it
        for ``overwrite``, compare the settings for ``resume``; returns the accepted setting changes."""
        found = run_markers(self.out)
        if self.cfg.overwrite:
            removed = remove_run_files(self.out)
            if removed:
                self.log.print(f"--overwrite: deleted the previous run's {', '.join(removed)} in {self.out}")
            return {}
        if self.cfg.resume:
            return self._compare_settings()
        if found:
            listing = ", ".join(name + ("/" if (self.out / name).is_dir() else "") for name in found)
            if (self.out / "metrics.json").is_file():
                what = f"a finished run: its results are in {self.out / 'metrics.json'}"
            else:
                last = find_checkpoint(self.out / "checkpoints" / "last")
                what = "an unfinished run" + (f", resumable from {last}" if last is not None else "")
            raise RunFolderError(
                f"{self.out} already holds a run ({what}; found {listing}). A new run there would replace its "
                "checkpoints, log and metrics. To continue that run, add --resume; to delete it and start again, add "
                "--overwrite; or give the new run its own folder with --output-dir."
            )
        return {}

    def _compare_settings(self) -> dict[str, tuple[Any, Any]]:
        """The run's saved settings (its resumable checkpoint's, else its config.json) against this run's."""
        cfg = self.cfg
        saved_train: Mapping[str, Any] | None = None
        saved_model: Mapping[str, Any] | None = None
        source: Path | None = None
        last = find_checkpoint(self.out / "checkpoints" / "last")
        if last is not None:
            try:
                info = json.loads((last / "trainer_state.json").read_text())
            except (ValueError, OSError) as err:
                raise RunFolderError(
                    f"cannot resume the run in {self.out} from {last}: {last / 'trainer_state.json'} is truncated or "
                    f"corrupt ({err}).\n{self._way_out(last)}") from err
            saved_train, saved_model = info.get("train_config"), info.get("model_config")
            source = last / "trainer_state.json"
        run_config = self.out / "config.json"
        if run_config.is_file() and (saved_train is None or saved_model is None):
            with contextlib.suppress(ValueError, OSError):
                data = json.loads(run_config.read_text())
                if saved_train is None and isinstance(data.get("train"), Mapping):
                    saved_train, source = data["train"], run_config
                if saved_model is None and isinstance(data.get("model"), Mapping):
                    saved_model = data["model"]
        if saved_train is None:
            return {}
        changes = settings_changes(_comparable(saved_train), cfg.to_dict(), saved_model=saved_model,
                                   new_model=self.model_config.to_dict(), free=RESUME_MAY_CHANGE,
                                   free_model=RESUME_MAY_CHANGE_MODEL)
        if not changes:
            return {}
        listing = format_changes(changes)
        if not cfg.resume_with_changes:
            raise RunFolderError(
                f"--resume: settings that change the result differ from those of the run in {self.out} (saved in "
                f"{source}):\n{listing}\nA run continued with them would belong to neither setting. Resume with the "
                f"saved values (the run started with those in {run_config}: --config {run_config} --resume), give the "
                "new settings their own folder with --output-dir, or add --resume-with-changes to continue with them "
                "anyway (the changes are recorded in log.jsonl)."
            )
        self.log.print(f"--resume-with-changes: the run in {self.out} continues with these changes "
                       f"(recorded in log.jsonl):\n{listing}")
        return changes

    def _check_splits(self, train_set: Any) -> None:
        """Refuse, before training, a training split smaller than one batch and empty evaluation splits."""
        cfg = self.cfg
        where = f"the {cfg.dataset} data under {self._data_root}"
        count = len(train_set)
        if count == 0:
            hint = " (for the synthetic data: --synthetic-train)" if cfg.dataset == "synthetic" else ""
            raise ValueError(f"the training split of {where} is empty (0 samples): there is nothing to train on. "
                             f"Check --data-root and the training split's file{hint}.")
        if count < cfg.batch_size:
            raise ValueError(
                f"the training split of {where} has {count} samples, fewer than one batch (--batch-size "
                f"{cfg.batch_size}, the total over {self.env.world_size} process(es) x {cfg.grad_accumulation} "
                f"accumulation step(s)), so not one optimizer step can be made. Choose --batch-size {count} or less "
                "(a multiple of processes x accumulation steps), or train on more samples."
            )
        for split in _splits(cfg.eval_splits):
            skip = ("leave it out of --eval-splits (--eval-splits val, say, or --eval-splits '' for no final "
                    "evaluation)")
            try:
                size = len(self.dataset(split))
            except (FileNotFoundError, DatasetError) as err:  # a missing, unreadable or (for some readers) empty split
                raise ValueError(f"--eval-splits {cfg.eval_splits!r}: the {split} split of {where} cannot be used: "
                                 f"{err}\nTo train anyway, {skip}.") from err
            if size == 0:
                raise ValueError(f"--eval-splits {cfg.eval_splits!r}: the {split} split of {where} is empty (0 "
                                 f"samples); the final evaluation cannot score it. Check --data-root, or {skip}.")

    def _fit(self) -> dict[str, Any]:
        cfg = self.cfg
        train_set = self.dataset("train")
        self._check_splits(train_set)
        has_val = self._has_split("val")
        if self.env.is_main:
            config_file = self.out / "config.json"
            if not (cfg.resume and config_file.is_file()):  # a resumed run keeps the settings it started with
                atomic_write_text(config_file, json.dumps(
                    {"train": cfg.to_dict(), "model": self.model_config.to_dict(), "environment": environment_info()},
                    indent=2, default=str))
        if cfg.tensorboard:
            self.log.open_tensorboard()
        sampler = EpochSampler(len(train_set), batch_size=self.per_rank_batch, seed=cfg.seed,
                               rank=self.env.rank, world_size=self.env.world_size)
        total = self.total_steps(sampler)
        if cfg.unc_warmup_fraction is not None:  # a warm-up given as a share of this run
            self.criterion.uncertainty_loss.warmup_steps = round(cfg.unc_warmup_fraction * total)
        optimizer, scheduler = self.optimizer_and_schedule(total)
        if cfg.resume:
            self._resume(optimizer, scheduler)
        steps_per_epoch = sampler.batches_per_epoch // cfg.grad_accumulation
        eval_every = cfg.eval_every or steps_per_epoch
        self.log.print(f"training {self.model_config.variant} on "
                       f"{cfg.dataset} ({len(train_set)} samples) for {total} steps; batch {cfg.batch_size} total = "
                       f"{self.per_rank_batch} per rank x {self.env.world_size} ranks x {cfg.grad_accumulation} "
                       f"accumulation; device {self.device}, precision {self.precision}, {self.num_workers} loader "
                       f"worker(s) per rank; best checkpoint by val {cfg.select_metric}")
        bar = None
        if cfg.progress and self.env.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        with StopOnSignal() as stop:
            try:
                self._train(sampler, optimizer, scheduler, total=total, eval_every=eval_every, has_val=has_val,
                            bar=bar, stop=stop)
            except _StopRequested:
                self.save("last", optimizer, scheduler)
                self.log.print(f"stopped by a signal at step {self.step}; checkpoint written to "
                               f"{self.out / 'checkpoints' / 'last'} -- continue with --resume")
                if bar is not None:
                    bar.close()
                raise SystemExit(143) from None
        if bar is not None:
            bar.close()
        with self.times("checkpoints"):
            self.save("last", optimizer, scheduler)
            self._save_final()
        with self.times("final evaluation"):
            results = self.final_evaluation()
        self.log.write({"event": "time", "step": self.step, **self.times.record()}, step=self.step)
        self.log.print(self.times.summary())
        return results

    def _train(self, sampler: EpochSampler, optimizer, scheduler, *, total: int, eval_every: int, has_val: bool,
               bar: Any, stop: StopOnSignal) -> None:
        """The step loop: accumulate micro-batches, step, log, validate, checkpoint, until ``total`` steps."""
        cfg = self.cfg
        self.net.train()
        window_t, window_n = time.perf_counter(), 0
        while self.step < total:
            sampler.set_position(self.epoch, self.batches_done)
            micro: list[dict[str, Any]] = []
            waiting = time.perf_counter()
            for batch in self._batches(sampler):
                self.times.add("loading", time.perf_counter() - waiting)
                micro.append(batch)
                self.batches_done += 1
                if len(micro) < cfg.grad_accumulation:
                    waiting = time.perf_counter()
                    continue
                with self.times("steps"):
                    parts = self._optimizer_step(micro, optimizer, scheduler)
                window_n += sum(b["image"].shape[0] for b in micro) * self.env.world_size
                micro = []
                self.step += 1
                if bar is not None:
                    rate = window_n / max(time.perf_counter() - window_t, 1e-9)
                    bar.set_postfix(loss=f"{parts['loss/total']:.3f}", lr=f"{scheduler.get_last_lr()[-1]:.2e}",
                                    samples_s=f"{rate:.1f}")
                    bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == total:
                    elapsed = time.perf_counter() - window_t
                    self.log.write({"step": self.step, "epoch": self.epoch, **parts, "lr": scheduler.get_last_lr()[-1],
                                    "samples_per_s": window_n / max(elapsed, 1e-9), "time": time.time()},
                                   step=self.step)
                    window_t, window_n = time.perf_counter(), 0
                if has_val and (self.step % eval_every == 0 or self.step == total):
                    with self.times("validation"):
                        self._validate(optimizer, scheduler)
                if self.step % cfg.checkpoint_every == 0 and self.step != total:
                    with self.times("checkpoints"):
                        self.save("last", optimizer, scheduler)
                if stop.requested(self.env):
                    raise _StopRequested
                if self.step >= total:
                    break
                waiting = time.perf_counter()
            else:
                self.epoch += 1
                self.batches_done = 0

    def _optimizer_step(self, micro: list[dict[str, Any]], optimizer, scheduler) -> dict[str, float]:
        """One optimizer step over the micro-batches ``micro``; returns the loss parts (and ``grad_norm``).

        The loss is checked before the step: a non-finite loss (or, without a gradient scaler, a
        non-finite gradient norm) on any rank, agreed on with one ``all_reduce``, raises
        ``FloatingPointError`` on every rank and no rank steps. With fp16's gradient scaler the loss
        is scaled, the gradients are unscaled before clipping, and a step whose gradients hold inf or
        NaN is skipped by the scaler (which then lowers its scale): that is the normal course of
        fp16 training, not an error. The scheduler advances either way.
        """
        cfg = self.cfg
        scaler = self.scaler
        optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for i, batch in enumerate(micro):
            sync = i == len(micro) - 1 or not isinstance(self.net, DistributedDataParallel)
            ctx = contextlib.nullcontext() if sync else self.net.no_sync()
            with ctx:
                out = evaluation.forward_batch(self.net, batch, device=self.device, autocast_dtype=self.autocast_dtype)
                target = batch["mask"].to(self.device, non_blocking=True)
                loss = self.criterion(out, target, step=self.step)
                part = loss.total / len(micro)
                (scaler.scale(part) if scaler is not None else part).backward()
            for k, v in loss.as_floats().items():
                sums[k] = sums.get(k, 0.0) + v / len(micro)
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip (and report) the true gradients
        if cfg.grad_clip:
            sums["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
        checked = {k: v for k, v in sums.items() if scaler is None or k != "grad_norm"}
        self._check_finite(checked, sums)
        if scaler is not None:
            scaler.step(optimizer)  # skipped when the unscaled gradients hold inf / NaN
            scaler.update()
            with warnings.catch_warnings():  # a step the scaler skipped still counts in the schedule
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before",
                                        category=UserWarning)
                scheduler.step()
        else:
            optimizer.step()
            scheduler.step()
        return sums

    def _check_finite(self, checked: Mapping[str, float], parts: Mapping[str, float]) -> None:
        """Raise ``FloatingPointError`` on every rank when a value of ``checked`` is not finite on any rank."""
        bad = not all(math.isfinite(v) for v in checked.values())
        ranks = [self.env.rank] if bad else []
        if self.env.distributed and dist.is_initialized():
            flags = torch.zeros(self.env.world_size, device=self.device)
            flags[self.env.rank] = float(bad)
            dist.all_reduce(flags)  # one collective: every rank learns which ranks saw a non-finite loss
            ranks = [r for r, flag in enumerate(flags.tolist()) if flag > 0]
        if not ranks:
            return
        where = f" on rank(s) {ranks}" if self.env.distributed else ""
        shown = ", ".join(f"{k}={v:.6g}" for k, v in parts.items())
        own = " (this rank's parts, which are finite)" if self.env.rank not in ranks else ""
        raise FloatingPointError(
            f"non-finite loss at optimizer step {self.step + 1}{where}: {shown}{own}. The step was not applied: the "
            f"model holds the weights after step {self.step}. Resume from the last checkpoint with a lower --lr, "
            "gradient clipping (--grad-clip), or --precision fp32."
        )

    def _validate(self, optimizer, scheduler) -> None:
        metrics = self.evaluate("val", uncertainty=False, progress=False)
        self.log.write({"step": self.step, **{f"val/{k}": v for k, v in metrics.items()}}, step=self.step)
        score = metrics[self.cfg.select_metric]
        if self.best is None or score > self.best:
            self.best, self.best_step = score, self.step
            self.save("best", optimizer, scheduler)
        self.net.train()

    # ------------------------------------------------------------------------------ evaluation
    def evaluate(self, split: str, *, blank_text: bool = False, at_original_size: bool = False,
                 uncertainty: bool = True, progress: bool | None = None) -> dict[str, Any]:
        """:func:`~uncertainty_rrsis.training.evaluate` of the model on ``split`` (each sample once over all ranks).

        Returns a dict with ``oIoU``, ``mIoU``, ``Pr@t``, ``count``, the ``unc/...`` metrics
        and, when the samples carry tags, ``breakdown`` (per tag value).
        """
        loader = evaluation.evaluation_loader(self.dataset(split, return_orig_mask=at_original_size),
                                              batch_size=self.per_rank_batch, rank=self.env.rank,
                                              world_size=self.env.world_size, num_workers=self.num_workers)
        show = self.cfg.progress if progress is None else progress
        return evaluation.evaluate(self.net, loader, device=self.device, uncertainty=uncertainty,
                                   at_original_size=at_original_size, blank_text=blank_text, tokenizer=self.tokenizer,
                                   autocast_dtype=self.autocast_dtype, progress=show and self.env.is_main,
                                   description=f"eval {split}")

    def final_evaluation(self) -> dict[str, Any]:
        """Evaluate the best checkpoint (or the final weights without val) on ``cfg.eval_splits``.

        The best checkpoint is the one with the highest val score by ``cfg.select_metric``; rank 0
        reads it and broadcasts its weights. Each split is evaluated as is and with every sentence
        blanked (``<split>/text_masked``); rank 0 prints the tables, writes ``metrics.json`` (whose
        ``checkpoint`` and ``selection`` say which checkpoint and which metric chose it) and draws
        the panels.
        """
        metric = self.cfg.select_metric
        best: dict[str, Any] | None = None
        if self.best is not None:  # only a best checkpoint this run (or the run it resumes) chose: never another run's

            def read() -> dict[str, Any] | None:
                folder = find_checkpoint(self.out / "checkpoints" / "best")
                return None if folder is None else {"folder": str(folder), "weights": self._read_weights(folder)}

            best = self._read_on_main(read, f"the best checkpoint of {self.out}")
        source = "final"
        selection: dict[str, Any] = {"metric": None, "split": None,
                                     "note": "no best checkpoint on val (no val split): the final weights"}
        if best is not None:
            self.model.load_state_dict(best["weights"], strict=True)
            source = f"best (val {metric})"
            selection = {"metric": metric, "split": "val", "value": self.best, "step": self.best_step}
            self.log.print(f"evaluating the best checkpoint by val {metric}: {100 * self.best:.2f}"
                           + (f" at step {self.best_step}" if self.best_step is not None else ""))
        results: dict[str, Any] = {}
        for split in _splits(self.cfg.eval_splits):
            results[split] = self.evaluate(split)
            results[f"{split}/text_masked"] = self.evaluate(split, blank_text=True, uncertainty=False)
            self.log.print(evaluation.format_metrics(results[split], title=f"{split} ({source} checkpoint)"))
            if results[split].get("breakdown"):
                self.log.print(f"{split} per tag:\n" + evaluation.format_breakdown(results[split]))
            self.log.print(evaluation.text_cost(split, results[split], results[f"{split}/text_masked"]))
        if self.env.is_main:
            report = evaluation.final_report(results, checkpoint=source, image_size=self.image_size,
                                             seed=self.cfg.seed, steps=self.step, train_config=self.cfg.to_dict())
            report["selection"] = selection
            report["precision"] = self.precision
            evaluation.write_metrics(self.out / "metrics.json", report)
            first = next(iter(results), None)
            if first is not None and self.cfg.panels > 0:
                self.save_panels(first.split("/")[0], self.cfg.panels)
        self.env.barrier()
        return results

    def save_panels(self, split: str, count: int) -> list[Path]:
        """Draw the first ``count`` samples of ``split`` (a fixed set) as PNG panels under ``panels/`` (rank 0)."""
        return evaluation.save_panels(self.net, self.dataset(split), self.out / "panels", split=split, count=count,
                                      device=self.device, autocast_dtype=self.autocast_dtype)


def _splits(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _comparable(saved: Mapping[str, Any]) -> dict[str, Any]:
    """Saved training settings as this version resolves them (older layouts included), keys the saved side has."""
    from dataclasses import fields

    from .config import MODEL_SHORTCUTS, merge_settings

    known = {f.name for f in fields(TrainConfig)}
    data = {k: v for k, v in saved.items() if k in known or k in MODEL_SHORTCUTS}
    try:
        resolved = TrainConfig.from_dict(merge_settings(data)).to_dict()
    except (TypeError, ValueError):
        return dict(saved)
    return {k: v for k, v in resolved.items() if k in saved or k == "model"}


class _Saver:
    """Saves the unwrapped model with its tokenizer through ``save_pretrained``."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer

    def save_pretrained(self, directory: str | Path) -> Path:
        return self.model.save_pretrained(directory, tokenizer=self.tokenizer)
