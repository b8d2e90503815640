"""The :class:`Trainer`: fits the reference model, as a plain process or one rank of ``torchrun``.

It builds the run from a :class:`TrainConfig` (through :mod:`.setup`), trains with resumable
atomic checkpoints, validates periodically and evaluates the best checkpoint at the end
(through :mod:`.evaluation`), and writes the run folder (rank 0 only)::

    <output_dir>/config.json            the TrainConfig, the model config and the environment
    <output_dir>/log.jsonl              losses, learning rate, samples/s, eval results
    <output_dir>/checkpoints/last/      resumable (weights + optimizer/scheduler/RNG + position)
    <output_dir>/checkpoints/best/      best val mIoU (never chosen on test)
    <output_dir>/checkpoints/final/     the weights at the end of training
    <output_dir>/metrics.json           final metrics with protocol, seed and versions
    <output_dir>/panels/*.png           image / GT / prediction / U^p / M panels
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..data import collate
from ..losses import RiskGuidedLoss
from . import evaluation
from .checkpoint import (
    atomic_write_text,
    find_checkpoint,
    load_trainer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import TrainConfig
from .distributed import DistEnv, EpochSampler, init_distributed, per_rank_batch
from .run_log import RunLog
from .schedule import poly_schedule
from .setup import (
    build_dataset,
    build_model_config,
    environment_info,
    load_tokenizer,
    prepare_data_root,
    seed_everything,
)
from .signals import StopOnSignal

__all__ = ["Trainer"]


class _StopRequested(Exception):
    pass


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
        seed_everything(config.seed)
        self.model_config = model_config if model_config is not None else build_model_config(config)
        self.image_size = self.model_config.image_size
        self.tokenizer = load_tokenizer(self.model_config.text.name)
        self.datasets: dict[str, Any] = {}
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
            lambda_unc=config.lambda_unc, lambda_ref=config.lambda_ref, warmup_steps=config.unc_warmup_steps
        )
        self.per_rank_batch = per_rank_batch(config.batch_size, self.env.world_size, config.grad_accumulation)
        self.autocast_dtype = torch.bfloat16 if (config.amp and self.device.type == "cuda") else None
        self.log = RunLog(self.out, is_main=self.env.is_main)
        self.step = 0
        self.epoch = 0
        self.batches_done = 0
        self.best: float | None = None

    # ------------------------------------------------------------------------------ data
    def dataset(self, split: str, *, return_orig_mask: bool = False):
        """The dataset of ``split`` (cached), sized and tokenized as the model expects."""
        key = f"{split}:{return_orig_mask}"
        if key not in self.datasets:
            self.datasets[key] = build_dataset(self.cfg.dataset, self._data_root, split, tokenizer=self.tokenizer,
                                               model_config=self.model_config, return_orig_mask=return_orig_mask)
        return self.datasets[key]

    def _has_split(self, split: str) -> bool:
        try:
            return len(self.dataset(split)) > 0
        except FileNotFoundError:
            return False

    def _batches(self, sampler: EpochSampler) -> Iterator[dict[str, Any]]:
        # The loader draws its worker seed from its own generator, never from the global RNG, so
        # creating it mid-epoch after a resume does not shift the dropout masks of the model.
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.epoch * 7919 + self.env.rank)
        loader = DataLoader(self.dataset("train"), batch_size=self.per_rank_batch, sampler=sampler,
                            collate_fn=collate, num_workers=self.cfg.num_workers, drop_last=True,
                            persistent_workers=False, generator=generator)
        yield from loader

    # ------------------------------------------------------------------------------ checkpoints
    def _info(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "batches_done": self.batches_done, "best_val_mIoU": self.best,
                "train_config": self.cfg.to_dict(), "world_size": self.env.world_size}

    def save(self, name: str, optimizer, scheduler) -> None:
        """Write ``checkpoints/<name>`` atomically (rank 0)."""
        if self.env.is_main:
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()}
            save_checkpoint(self.out / "checkpoints" / name, model=_Saver(self.model, self.tokenizer),
                            trainer_state=state, info=self._info())
        self.env.barrier()

    def load_weights(self, folder: str | Path) -> None:
        """Load ``folder/model.safetensors`` (a checkpoint of this model) strictly into the model."""
        from safetensors.torch import load_file

        from ..models import strip_wrapper_prefixes

        self.model.load_state_dict(strip_wrapper_prefixes(load_file(str(Path(folder) / "model.safetensors"))),
                                   strict=True)

    def _resume(self, optimizer, scheduler) -> bool:
        folder = find_checkpoint(self.out / "checkpoints" / "last")
        if folder is None:
            self.log.print(f"--resume: no checkpoint under {self.out / 'checkpoints' / 'last'}; starting from scratch")
            return False
        self.load_weights(folder)
        state, info = load_trainer_state(folder)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.step, self.epoch, self.batches_done = info["step"], info["epoch"], info["batches_done"]
        self.best = info.get("best_val_mIoU")
        self.log.print(f"resumed from {folder} at step {self.step} (epoch {self.epoch}, batch {self.batches_done})")
        return True

    def _save_final(self) -> None:
        if self.env.is_main:
            final, tmp = self.out / "checkpoints" / "final", self.out / "checkpoints" / "final.tmp"
            _Saver(self.model, self.tokenizer).save_pretrained(tmp)
            if final.exists():
                shutil.rmtree(final)
            tmp.replace(final)
        self.env.barrier()

    # ------------------------------------------------------------------------------ training
    def total_steps(self, sampler: EpochSampler) -> int:
        """Optimizer steps of the run: ``epochs`` x steps per epoch, capped by ``max_steps``."""
        per_epoch = sampler.batches_per_epoch // self.cfg.grad_accumulation
        if per_epoch == 0:
            raise ValueError("fewer training batches per epoch than --grad-accumulation")
        total = per_epoch * self.cfg.epochs
        return min(total, self.cfg.max_steps) if self.cfg.max_steps else total

    def fit(self) -> dict[str, Any]:
        """Train (resuming when asked), then evaluate the best checkpoint; returns the final metrics."""
        cfg = self.cfg
        if self.env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "config.json", json.dumps(
                {"train": cfg.to_dict(), "model": self.model_config.to_dict(), "environment": environment_info()},
                indent=2, default=str))
        if cfg.tensorboard:
            self.log.open_tensorboard()
        train_set = self.dataset("train")
        sampler = EpochSampler(len(train_set), batch_size=self.per_rank_batch, seed=cfg.seed,
                               rank=self.env.rank, world_size=self.env.world_size)
        optimizer = torch.optim.AdamW(self.model.param_groups(cfg.lr), lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = self.total_steps(sampler)
        scheduler = poly_schedule(optimizer, total_steps=total, power=cfg.poly_power, warmup_steps=cfg.lr_warmup_steps)
        if cfg.resume:
            self._resume(optimizer, scheduler)
        has_val = self._has_split("val")
        steps_per_epoch = sampler.batches_per_epoch // cfg.grad_accumulation
        eval_every = cfg.eval_every or steps_per_epoch
        self.log.print(f"training {self.model_config.variant} on "
                       f"{cfg.dataset} ({len(train_set)} samples) for {total} steps; batch {cfg.batch_size} total = "
                       f"{self.per_rank_batch} per rank x {self.env.world_size} ranks x {cfg.grad_accumulation} "
                       f"accumulation; device {self.device}")
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
        self.save("last", optimizer, scheduler)
        self._save_final()
        return self.final_evaluation()

    def _train(self, sampler: EpochSampler, optimizer, scheduler, *, total: int, eval_every: int, has_val: bool,
               bar: Any, stop: StopOnSignal) -> None:
        """The step loop: accumulate micro-batches, step, log, validate, checkpoint, until ``total`` steps."""
        cfg = self.cfg
        self.net.train()
        window_t, window_n = time.perf_counter(), 0
        while self.step < total:
            sampler.set_position(self.epoch, self.batches_done)
            micro: list[dict[str, Any]] = []
            for batch in self._batches(sampler):
                micro.append(batch)
                self.batches_done += 1
                if len(micro) < cfg.grad_accumulation:
                    continue
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
                    self._validate(optimizer, scheduler)
                if self.step % cfg.checkpoint_every == 0 and self.step != total:
                    self.save("last", optimizer, scheduler)
                if stop.requested(self.env):
                    raise _StopRequested
                if self.step >= total:
                    break
            else:
                self.epoch += 1
                self.batches_done = 0

    def _optimizer_step(self, micro: list[dict[str, Any]], optimizer, scheduler) -> dict[str, float]:
        cfg = self.cfg
        optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for i, batch in enumerate(micro):
            sync = i == len(micro) - 1 or not isinstance(self.net, DistributedDataParallel)
            ctx = contextlib.nullcontext() if sync else self.net.no_sync()
            with ctx:
                out = evaluation.forward_batch(self.net, batch, device=self.device, autocast_dtype=self.autocast_dtype)
                target = batch["mask"].to(self.device, non_blocking=True)
                loss = self.criterion(out, target, step=self.step)
                (loss.total / len(micro)).backward()
            for k, v in loss.as_floats().items():
                sums[k] = sums.get(k, 0.0) + v / len(micro)
        if cfg.grad_clip:
            sums["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
        optimizer.step()
        scheduler.step()
        if not all(math.isfinite(v) for v in sums.values()):
            raise FloatingPointError(f"non-finite loss at step {self.step}: {sums}")
        return sums

    def _validate(self, optimizer, scheduler) -> None:
        metrics = self.evaluate("val", uncertainty=False, progress=False)
        self.log.write({"step": self.step, **{f"val/{k}": v for k, v in metrics.items()}}, step=self.step)
        score = metrics["mIoU"]
        if self.best is None or score > self.best:
            self.best = score
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
                                              world_size=self.env.world_size, num_workers=self.cfg.num_workers)
        show = self.cfg.progress if progress is None else progress
        return evaluation.evaluate(self.net, loader, device=self.device, uncertainty=uncertainty,
                                   at_original_size=at_original_size, blank_text=blank_text, tokenizer=self.tokenizer,
                                   autocast_dtype=self.autocast_dtype, progress=show and self.env.is_main,
                                   description=f"eval {split}")

    def final_evaluation(self) -> dict[str, Any]:
        """Evaluate the best checkpoint (or the final weights without val) on ``cfg.eval_splits``.

        Each split is evaluated as is and with every sentence blanked (``<split>/text_masked``);
        rank 0 prints the tables, writes ``metrics.json`` and draws the panels.
        """
        best = find_checkpoint(self.out / "checkpoints" / "best")
        source = "final"
        if best is not None:
            self.load_weights(best)
            source = "best (val mIoU)"
        results: dict[str, Any] = {}
        for split in [s.strip() for s in self.cfg.eval_splits.split(",") if s.strip()]:
            results[split] = self.evaluate(split)
            results[f"{split}/text_masked"] = self.evaluate(split, blank_text=True, uncertainty=False)
            self.log.print(evaluation.format_metrics(results[split], title=f"{split} ({source} checkpoint)"))
            self.log.print(evaluation.text_cost(split, results[split], results[f"{split}/text_masked"]))
        if self.env.is_main:
            report = evaluation.final_report(results, checkpoint=source, image_size=self.image_size,
                                             seed=self.cfg.seed, steps=self.step, train_config=self.cfg.to_dict())
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


class _Saver:
    """Saves the unwrapped model with its tokenizer through ``save_pretrained``."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer

    def save_pretrained(self, directory: str | Path) -> Path:
        return self.model.save_pretrained(directory, tokenizer=self.tokenizer)
