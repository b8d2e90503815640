"""The :class:`Trainer`: fits a model it is handed, as a plain process or one rank of ``torchrun``.

It is given the model, the criterion, the datasets and the settings (build all of them from a
:class:`TrainConfig` with :func:`~uncertainty_rrsis.training.build_trainer`), trains with
resumable atomic checkpoints, validates periodically and evaluates the best checkpoint at the
end, and writes the run folder (rank 0 only)::

    <output_dir>/config.json            the TrainConfig, the model config and the environment
    <output_dir>/log.jsonl              losses, learning rate, samples/s, eval results, time per phase
    <output_dir>/checkpoints/last/      resumable (weights + optimizer/scheduler/RNG + position)
    <output_dir>/checkpoints/best/      best val mIoU or oIoU (--select-metric; never chosen on test)
    <output_dir>/checkpoints/final/     the weights at the end of training
    <output_dir>/metrics.json           final metrics with protocol, seed and versions
    <output_dir>/panels/*.png           image / GT / prediction / U^p / M panels
    <output_dir>/.lock                  while the run trains: pid, host and start time of its process

Who may write into the folder is decided by :func:`~.run_folder.claim_run_folder`; resuming by
:mod:`.resume`; the optimizer step by :mod:`.step`. Only rank 0 reads and writes the run folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ..data import collate
from . import evaluation, resume
from .checkpoint import (
    CheckpointWriteError,
    ModelSaver,
    atomic_write_text,
    rng_state,
    save_checkpoint,
    save_weights,
)
from .config import TrainConfig
from .distributed import DistEnv, EpochSampler, init_distributed, per_rank_batch, stop_together
from .final import final_evaluation
from .run_folder import claim_run_folder
from .run_log import PhaseTimes, RunLog
from .schedule import poly_schedule, total_steps
from .setup import autocast_dtype, environment_info, resolve_num_workers, resolve_precision
from .signals import StopOnSignal
from .step import optimizer_step

if TYPE_CHECKING:
    from ..models import CroBIMU, CroBIMUConfig

__all__ = ["Trainer"]


class _StopRequested(Exception):
    pass


class Trainer:
    """Trains ``model`` with ``criterion`` on ``datasets["train"]``, as ``config`` says.

    Args:
        config: the run's settings.
        model: the unwrapped model (a :class:`~uncertainty_rrsis.models.CroBIMU`: it gives
            ``config``, ``param_groups(lr)`` and ``save_pretrained``); moved to the device here.
        criterion: ``criterion(output, target, step=...)`` returning the total and its parts
            (:class:`~uncertainty_rrsis.RiskGuidedLoss`).
        datasets: the datasets by split (``"train"``; ``"val"`` chooses the best checkpoint when
            ``"val" in datasets``; the splits of ``config.eval_splits`` are scored at the end).
        tokenizer: saved with every checkpoint, and writes the empty sentence of the text-blanked
            evaluation.
        env: the distributed layout (default: one process on ``config.device``).
        times: where the time per phase accumulates (default: a new one).
    """

    def __init__(self, config: TrainConfig, model: torch.nn.Module, criterion: torch.nn.Module,
                 datasets: Mapping[str, Dataset], *, tokenizer: Any = None, env: DistEnv | None = None,
                 times: PhaseTimes | None = None) -> None:
        self.cfg = config
        self.env = env or init_distributed(device=config.device)
        self.device = self.env.device
        self.out = Path(config.output_dir)
        #: the precision of the run: "bf16", "fp16" or "fp32" (--precision, resolved for the device)
        self.precision = resolve_precision(config.precision, device=self.device)
        self.autocast_dtype = autocast_dtype(self.precision)
        #: fp16's gradient scaler (None in bf16 and fp32); its state is part of the resumable checkpoint
        self.scaler: Any = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        #: DataLoader workers per rank (--num-workers, "auto" resolved for the device)
        self.num_workers = resolve_num_workers(config.num_workers, device=self.device)
        self.times = times or PhaseTimes()
        self.model, self.criterion = model.to(self.device), criterion
        self.datasets, self.tokenizer = datasets, tokenizer
        self.model_config = cast("CroBIMUConfig", model.config)
        if config.sync_bn and self.env.distributed:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.net: torch.nn.Module = self.model
        if self.env.distributed:
            self.net = DistributedDataParallel(self.model, device_ids=[self.device.index]
                                               if self.device.type == "cuda" else None)
        if config.compile:
            self.net = torch.compile(self.net)  # type: ignore[assignment]  # an OptimizedModule for a module
        self.per_rank_batch = per_rank_batch(config.batch_size, self.env.world_size, config.grad_accumulation)
        self.log = RunLog(self.out, is_main=self.env.is_main)
        self.step = self.epoch = self.batches_done = 0
        #: the best validation score so far, by ``config.select_metric``, and the step it was reached at
        self.best: float | None = None
        self.best_step: int | None = None

    # ------------------------------------------------------------------------------ checkpoints
    def _info(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "batches_done": self.batches_done,
                "best_val": self.best, "best_metric": self.cfg.select_metric, "best_step": self.best_step,
                "precision": self.precision, "train_config": self.cfg.to_dict(),
                "model_config": self.model_config.to_dict(), "world_size": self.env.world_size}

    def save(self, name: str, optimizer, scheduler) -> None:
        """Write ``checkpoints/<name>`` atomically (rank 0): weights, optimizer, scheduler, fp16's
        gradient scaler and rank 0's RNG states (every rank seeds and draws alike)."""
        def write() -> None:
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()}
            if self.scaler is not None:
                state["scaler"] = self.scaler.state_dict()
            save_checkpoint(self.out / "checkpoints" / name, model=ModelSaver(self.model, self.tokenizer),
                            trainer_state=state, info=self._info())

        self._write_on_main(write, f"the checkpoint {name}")

    def _write_on_main(self, write: Any, what: str) -> None:
        """``write()`` on rank 0; when it fails (a full disk, ...) every rank stops, rank 0 with the reason."""
        failure: BaseException | None = None
        if self.env.is_main:
            try:
                write()
            except CheckpointWriteError as err:
                failure = err
        stop_together(self.env, failure, f"write {what}")

    # ------------------------------------------------------------------------------ training
    def optimizer_and_schedule(self, total: int) -> tuple[torch.optim.Optimizer, Any]:
        """AdamW over the model's parameter groups and the per-iteration polynomial schedule of ``total`` steps."""
        cfg = self.cfg
        param_groups = cast("CroBIMU", self.model).param_groups(cfg.lr)
        optimizer = torch.optim.AdamW(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = poly_schedule(optimizer, total_steps=total, power=cfg.poly_power, warmup_steps=cfg.lr_warmup_steps)
        return optimizer, scheduler

    def fit(self) -> dict[str, Any]:
        """Train (resuming when asked), then evaluate the best checkpoint; returns the final metrics.

        Rank 0 first claims the run folder (:func:`~.run_folder.claim_run_folder`); a refusal
        raises :class:`~.lock.RunFolderError` on every rank before anything is written.
        """
        cfg = self.cfg
        with claim_run_folder(cfg, self.model_config.to_dict(), env=self.env, log=self.log) as accepted:
            train_set = self.datasets["train"]
            if self.env.is_main and not (cfg.resume and (self.out / "config.json").is_file()):
                # a resumed run keeps the settings it started with
                atomic_write_text(self.out / "config.json", json.dumps(
                    {"train": cfg.to_dict(), "model": self.model_config.to_dict(), "environment": environment_info()},
                    indent=2, default=str))
            self.log.open_trackers(cfg, self.model_config)
            sampler = EpochSampler(len(train_set), batch_size=self.per_rank_batch, seed=cfg.seed,  # type: ignore[arg-type]
                                   rank=self.env.rank, world_size=self.env.world_size)
            total = total_steps(batches_per_epoch=sampler.batches_per_epoch, grad_accumulation=cfg.grad_accumulation,
                                epochs=cfg.epochs, max_steps=cfg.max_steps)
            optimizer, scheduler = self.optimizer_and_schedule(total)
            if cfg.resume:
                resume.resume(self, optimizer, scheduler, accepted)
            self.log.print(f"training {self.model_config.variant} on {cfg.dataset} ({len(train_set)} samples) for "  # type: ignore[arg-type]
                           f"{total} steps; batch {cfg.batch_size} total = {self.per_rank_batch} per rank x "
                           f"{self.env.world_size} ranks x {cfg.grad_accumulation} accumulation; device "
                           f"{self.device}, precision {self.precision}, {self.num_workers} loader worker(s) per rank; "
                           f"best checkpoint by val {cfg.select_metric}")
            self._train_until(total, sampler, optimizer, scheduler)
            with self.times("checkpoints"):
                self.save("last", optimizer, scheduler)
                self._save_final()
            with self.times("final evaluation"):
                results = self.final_evaluation()
            self.log.write({"event": "time", "step": self.step, **self.times.record()}, step=self.step)
            self.log.print(self.times.summary())
            self.log.close()
            return results

    def _train_until(self, total: int, sampler: EpochSampler, optimizer, scheduler) -> None:
        """Run the step loop to ``total`` steps, with a progress bar; a signal saves ``last`` and exits 143."""
        bar = None
        if self.cfg.progress and self.env.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        try:
            with StopOnSignal() as stop:
                try:
                    self._train(sampler, optimizer, scheduler, total=total, bar=bar, stop=stop)
                except _StopRequested:
                    self.save("last", optimizer, scheduler)
                    self.log.print(f"stopped by a signal at step {self.step}; checkpoint written to "
                                   f"{self.out / 'checkpoints' / 'last'} -- continue with --resume")
                    raise SystemExit(143) from None
        finally:
            if bar is not None:
                bar.close()

    def _train(self, sampler: EpochSampler, optimizer, scheduler, *, total: int, bar: Any, stop: StopOnSignal) -> None:
        """The step loop: accumulate micro-batches, step, log, validate, checkpoint, until ``total`` steps."""
        cfg = self.cfg
        has_val = "val" in self.datasets
        eval_every = cfg.eval_every or sampler.batches_per_epoch // cfg.grad_accumulation
        self.net.train()
        window_t, window_n = time.perf_counter(), 0
        while self.step < total:
            sampler.set_position(self.epoch, self.batches_done)
            # the loader draws its worker seed from its own generator, never from the global RNG, so creating
            # it mid-epoch after a resume does not shift the dropout masks of the model
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.epoch * 7919 + self.env.rank)
            loader = DataLoader(self.datasets["train"], batch_size=self.per_rank_batch, sampler=sampler,
                                collate_fn=collate, num_workers=self.num_workers, drop_last=True, generator=generator)
            micro: list[dict[str, Any]] = []
            waiting = time.perf_counter()
            for batch in loader:
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
        """One optimizer step over the micro-batches ``micro`` (see :func:`~.step.optimizer_step`)."""
        return optimizer_step(self, micro, optimizer, scheduler)

    def _validate(self, optimizer, scheduler) -> None:
        metrics = self.evaluate("val", uncertainty=False, progress=False)
        self.log.write({"step": self.step, **{f"val/{k}": v for k, v in metrics.items()}}, step=self.step)
        score = metrics[self.cfg.select_metric]
        if self.best is None or score > self.best:
            self.best, self.best_step = score, self.step
            self.save("best", optimizer, scheduler)
        self.net.train()

    def _save_final(self) -> None:
        saver = ModelSaver(self.model, self.tokenizer)
        self._write_on_main(lambda: save_weights(self.out / "checkpoints" / "final", saver), "the final weights")

    # ------------------------------------------------------------------------------ evaluation
    def evaluate(self, split: str, *, blank_text: bool = False, uncertainty: bool = True,
                 progress: bool | None = None) -> dict[str, Any]:
        """:func:`~uncertainty_rrsis.training.evaluate` of the model on ``split``, each sample once over all ranks."""
        loader = evaluation.evaluation_loader(self.datasets[split], batch_size=self.per_rank_batch,
                                              rank=self.env.rank, world_size=self.env.world_size,
                                              num_workers=self.num_workers)
        show = self.cfg.progress if progress is None else progress
        return evaluation.evaluate(self.net, loader, device=self.device, uncertainty=uncertainty,
                                   blank_text=blank_text, tokenizer=self.tokenizer, autocast_dtype=self.autocast_dtype,
                                   progress=show and self.env.is_main, description=f"eval {split}")

    def final_evaluation(self) -> dict[str, Any]:
        """Evaluate the best checkpoint (or the final weights without val) on ``cfg.eval_splits``, write
        ``metrics.json`` and the panels (see :func:`~.final.final_evaluation`)."""
        return final_evaluation(self)
