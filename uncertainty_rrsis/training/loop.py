"""The training / evaluation loop behind ``examples/train.py`` and ``examples/evaluate.py``.

One :class:`Trainer` runs as a plain process or as one rank of ``torchrun``: it builds the
data, the reference model and the optimizer from a :class:`TrainConfig`, trains with
resumable atomic checkpoints, evaluates with the field's protocol (each sample once across
ranks) and writes the run folder (rank 0 only)::

    <output_dir>/config.json            the TrainConfig and the model config
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
import platform
import random
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from .. import __version__
from .._ops import resize_logits
from ..data import RRSISD, RISBench, RefSegRS, collate, ensure_synthetic
from ..losses import RiskGuidedLoss
from ..metrics import ReferringSegmentationMetrics, UncertaintyQualityMetrics
from .checkpoint import atomic_write_text, find_checkpoint, load_trainer_state, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .distributed import DistEnv, EpochSampler, ShardedSampler, init_distributed, per_rank_batch
from .schedule import poly_schedule

__all__ = ["Trainer", "build_model_config", "load_tokenizer", "format_metrics", "environment_info"]

PROTOCOL = (
    "per-sample IoU = |P and G| / |P or G| (0 when the union is empty); oIoU = sum I / sum U; mIoU = mean IoU; "
    "Pr@t = share of samples with IoU >= t; predictions binarised at probability 0.5 (logit > 0); "
    "every sentence counted once"
)


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


def build_model_config(cfg: TrainConfig):
    """The preset named by ``cfg.preset`` with the run's overrides applied."""
    from ..models import get_preset

    overrides: dict[str, Any] = dict(cfg.model or {})
    overrides.setdefault("use_fusion", cfg.use_fusion)
    overrides.setdefault("use_refinement", cfg.use_refinement)
    vision = dict(overrides.pop("vision", {}) or {})
    text = dict(overrides.pop("text", {}) or {})
    if cfg.vision_weights:
        vision["weights"] = cfg.vision_weights
    vision.setdefault("lr_multiplier", cfg.vision_lr_multiplier)
    if cfg.text_weights:
        text["name"] = cfg.text_weights
        text["pretrained"] = True
    text.setdefault("freeze", cfg.freeze_text)
    text.setdefault("lr_multiplier", cfg.text_lr_multiplier)
    text.setdefault("max_tokens", cfg.max_tokens)
    if cfg.image_size is not None:
        overrides["image_size"] = cfg.image_size
    return get_preset(cfg.preset, vision=vision, text=text, **overrides)


def load_tokenizer(source: str | Path):
    """A Hugging Face tokenizer from a local folder (or a packaged model id)."""
    from transformers import AutoTokenizer

    from ..models.text import resolve_text_source

    resolved = resolve_text_source(str(source))
    try:
        return AutoTokenizer.from_pretrained(resolved)
    except OSError as err:
        raise OSError(
            f"could not load a tokenizer from {resolved!r}: pass --text-weights pointing to a local folder that "
            "holds the text encoder and its tokenizer files (vocab.txt / tokenizer.json)."
        ) from err


def format_metrics(metrics: dict[str, float], *, title: str = "") -> str:
    """A small fixed-width table of oIoU / mIoU / Pr@t (percent) and the uncertainty metrics."""
    keys = [k for k in ("oIoU", "mIoU", "Pr@0.5", "Pr@0.6", "Pr@0.7", "Pr@0.8", "Pr@0.9") if k in metrics]
    head = " ".join(f"{k:>7s}" for k in keys)
    row = " ".join(f"{100 * metrics[k]:7.2f}" for k in keys)
    lines = [title] if title else []
    lines += [head, row]
    unc = [k for k in metrics if k.startswith("unc/")]
    if unc:
        lines.append("  ".join(f"{k[4:]}={metrics[k]:.3f}" for k in unc))
    if "count" in metrics:
        lines.append(f"samples: {int(metrics['count'])}")
    return "\n".join(lines)


class _StopRequested(Exception):
    pass


class Trainer:
    """Builds everything from a :class:`TrainConfig` and trains / evaluates the reference model.

    Args:
        config: the run's configuration.
        env: the distributed layout (default: read from the environment).
        model_config: use this model config instead of building it from the preset.
    """

    def __init__(self, config: TrainConfig, *, env: DistEnv | None = None, model_config: Any = None) -> None:
        from ..models import CroBIMU

        config.validate()
        self.cfg = config
        self.env = env or init_distributed(device=config.device)
        self.device = self.env.device
        self.out = Path(config.output_dir)
        self._seed_everything(config.seed)
        self.model_config = model_config if model_config is not None else build_model_config(config)
        self.image_size = self.model_config.image_size
        self.tokenizer = load_tokenizer(self.model_config.text.name)
        self.datasets: dict[str, Any] = {}
        self._data_root = self._prepare_data_root()
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
        self.step = 0
        self.epoch = 0
        self.batches_done = 0
        self.best: float | None = None
        self._stop = False
        self._writer = None

    # ------------------------------------------------------------------------------ setup
    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        torch.manual_seed(seed)
        with contextlib.suppress(ImportError):
            import numpy as np

            np.random.seed(seed % 2**32)

    def _prepare_data_root(self) -> Path:
        cfg = self.cfg
        if cfg.dataset != "synthetic":
            return Path(cfg.data_root)  # type: ignore[arg-type]
        kwargs = dict(seed=cfg.synthetic_seed, image_size=self.image_size, n_train=cfg.synthetic_train,
                      n_val=cfg.synthetic_val, n_test=cfg.synthetic_test)
        if self.env.is_main:
            root = ensure_synthetic(cfg.cache_dir, progress=cfg.progress, **kwargs)
        self.env.barrier()
        if not self.env.is_main:
            root = ensure_synthetic(cfg.cache_dir, progress=False, **kwargs)
        return root

    def dataset(self, split: str, *, return_orig_mask: bool = False):
        """The dataset of ``split`` (cached), built with the run's tokenizer and image size."""
        key = f"{split}:{return_orig_mask}"
        if key not in self.datasets:
            cls = {"synthetic": RISBench, "risbench": RISBench, "rrsisd": RRSISD, "refsegrs": RefSegRS}[self.cfg.dataset]
            self.datasets[key] = cls(self._data_root, split, tokenizer=self.tokenizer, max_tokens=self.cfg.max_tokens,
                                     image_size=self.image_size, return_orig_mask=return_orig_mask)
        return self.datasets[key]

    def _has_split(self, split: str) -> bool:
        try:
            return len(self.dataset(split)) > 0
        except FileNotFoundError:
            return False

    # ------------------------------------------------------------------------------ logging
    def _log(self, record: dict[str, Any]) -> None:
        if not self.env.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "log.jsonl", "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self._writer.add_scalar(key, value, record.get("step", self.step))

    def _print(self, *args: Any) -> None:
        if self.env.is_main:
            print(*args, flush=True)

    def _open_tensorboard(self) -> None:
        if not (self.cfg.tensorboard and self.env.is_main):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except (ImportError, ModuleNotFoundError):
            return
        self._writer = SummaryWriter(str(self.out / "tensorboard"))

    # ------------------------------------------------------------------------------ checkpoints
    def _trainer_state(self, optimizer, scheduler) -> dict[str, Any]:
        return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()}

    def _info(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "batches_done": self.batches_done, "best_val_mIoU": self.best,
                "train_config": self.cfg.to_dict(), "world_size": self.env.world_size}

    def save(self, name: str, optimizer, scheduler) -> None:
        """Write ``checkpoints/<name>`` atomically (rank 0)."""
        if self.env.is_main:
            save_checkpoint(self.out / "checkpoints" / name, model=_Saver(self.model, self.tokenizer),
                            trainer_state=self._trainer_state(optimizer, scheduler), info=self._info())
        self.env.barrier()

    def load_weights(self, folder: str | Path) -> None:
        """Load ``folder/model.safetensors`` (a checkpoint of this model) strictly into the model."""
        from safetensors.torch import load_file

        from ..models._checkpoint import strip_wrapper_prefixes

        self.model.load_state_dict(strip_wrapper_prefixes(load_file(str(Path(folder) / "model.safetensors"))),
                                   strict=True)

    def _resume(self, optimizer, scheduler) -> bool:
        folder = find_checkpoint(self.out / "checkpoints" / "last")
        if folder is None:
            self._print(f"--resume: no checkpoint under {self.out / 'checkpoints' / 'last'}; starting from scratch")
            return False
        self.load_weights(folder)
        state, info = load_trainer_state(folder)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.step, self.epoch, self.batches_done = info["step"], info["epoch"], info["batches_done"]
        self.best = info.get("best_val_mIoU")
        self._print(f"resumed from {folder} at step {self.step} (epoch {self.epoch}, batch {self.batches_done})")
        return True

    # ------------------------------------------------------------------------------ signals
    def _install_signal_handlers(self) -> dict[int, Any]:
        previous = {}

        def request_stop(signum, frame):  # noqa: ARG001
            self._stop = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not in the main thread
                previous[sig] = signal.signal(sig, request_stop)
        return previous

    def _should_stop(self) -> bool:
        flag = self._stop
        if self.env.distributed:
            t = torch.tensor([1.0 if flag else 0.0], device=self.device)
            dist.all_reduce(t)
            flag = bool(t.item() > 0)
        return flag

    # ------------------------------------------------------------------------------ training
    def _batches(self, sampler: EpochSampler) -> Iterator[dict[str, Any]]:
        # The loader draws its worker seed from its own generator, never from the global RNG, so
        # creating it mid-epoch after a resume does not shift the dropout masks of the model.
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.epoch * 7919 + self.env.rank)
        loader = DataLoader(self.dataset("train"), batch_size=self.per_rank_batch, sampler=sampler,
                            collate_fn=collate, num_workers=self.cfg.num_workers, drop_last=True,
                            persistent_workers=False, generator=generator)
        yield from loader

    def _forward(self, batch: dict[str, Any], *, blank_text: bool = False):
        images = batch["image"].to(self.device, non_blocking=True)
        ids = batch["input_ids"].to(self.device, non_blocking=True)
        pad = batch["text_padding_mask"].to(self.device, non_blocking=True)
        if blank_text:
            ids, pad = self._blank(ids, pad)
        ctx = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
               else contextlib.nullcontext())
        with ctx:
            return self.net(images, ids, text_padding_mask=pad)

    def _blank(self, ids: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The empty sentence ('[CLS] [SEP]' then padding) in place of every sentence."""
        empty = self.tokenizer("", padding="max_length", truncation=True, max_length=ids.shape[1], return_tensors="pt")
        blank_ids = empty["input_ids"].to(ids.device).expand_as(ids).contiguous()
        blank_pad = (empty["attention_mask"] == 0).to(ids.device).expand_as(pad).contiguous()
        return blank_ids, blank_pad

    def total_steps(self, sampler: EpochSampler) -> int:
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
        self._open_tensorboard()
        train_set = self.dataset("train")
        sampler = EpochSampler(len(train_set), batch_size=self.per_rank_batch, seed=cfg.seed,
                               rank=self.env.rank, world_size=self.env.world_size)
        optimizer = torch.optim.AdamW(self.model.param_groups(cfg.lr), lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = self.total_steps(sampler)
        scheduler = poly_schedule(optimizer, total_steps=total, power=cfg.poly_power, warmup_steps=cfg.lr_warmup_steps)
        if cfg.resume:
            self._resume(optimizer, scheduler)
        previous = self._install_signal_handlers()
        has_val = self._has_split("val")
        steps_per_epoch = sampler.batches_per_epoch // cfg.grad_accumulation
        eval_every = cfg.eval_every or steps_per_epoch
        self._print(f"training {self.model_config.variant} on "
                    f"{cfg.dataset} ({len(train_set)} samples) for {total} steps; batch {cfg.batch_size} total = "
                    f"{self.per_rank_batch} per rank x {self.env.world_size} ranks x {cfg.grad_accumulation} accumulation; "
                    f"device {self.device}")
        bar = None
        if cfg.progress and self.env.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        try:
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
                        self._log({"step": self.step, "epoch": self.epoch, **parts, "lr": scheduler.get_last_lr()[-1],
                                   "samples_per_s": window_n / max(elapsed, 1e-9), "time": time.time()})
                        window_t, window_n = time.perf_counter(), 0
                    if has_val and (self.step % eval_every == 0 or self.step == total):
                        self._validate(optimizer, scheduler)
                    if self.step % cfg.checkpoint_every == 0 and self.step != total:
                        self.save("last", optimizer, scheduler)
                    if self._should_stop():
                        raise _StopRequested
                    if self.step >= total:
                        break
                else:
                    self.epoch += 1
                    self.batches_done = 0
        except _StopRequested:
            self.save("last", optimizer, scheduler)
            self._print(f"stopped by a signal at step {self.step}; checkpoint written to "
                        f"{self.out / 'checkpoints' / 'last'} -- continue with --resume")
            if bar is not None:
                bar.close()
            raise SystemExit(143)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if bar is not None:
            bar.close()
        self.save("last", optimizer, scheduler)
        if self.env.is_main:
            _Saver(self.model, self.tokenizer).save_pretrained(self.out / "checkpoints" / "final.tmp")
            _replace_dir(self.out / "checkpoints" / "final.tmp", self.out / "checkpoints" / "final")
        self.env.barrier()
        return self.final_evaluation()

    def _optimizer_step(self, micro: list[dict[str, Any]], optimizer, scheduler) -> dict[str, float]:
        cfg = self.cfg
        optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for i, batch in enumerate(micro):
            sync = i == len(micro) - 1 or not isinstance(self.net, DistributedDataParallel)
            ctx = contextlib.nullcontext() if sync else self.net.no_sync()
            with ctx:
                out = self._forward(batch)
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
        self._log({"step": self.step, **{f"val/{k}": v for k, v in metrics.items()}})
        score = metrics["mIoU"]
        if self.best is None or score > self.best:
            self.best = score
            self.save("best", optimizer, scheduler)
        self.net.train()

    # ------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, split: str, *, blank_text: bool = False, at_original_size: bool = False,
                 uncertainty: bool = True, progress: bool | None = None) -> dict[str, Any]:
        """The field's metrics on ``split`` (each sample once over all ranks) plus uncertainty quality.

        Returns a dict with ``oIoU``, ``mIoU``, ``Pr@t``, ``count``, the ``unc/...`` metrics
        and, when the samples carry tags, ``breakdown`` (per tag value).
        """
        dataset = self.dataset(split, return_orig_mask=at_original_size)
        sampler = ShardedSampler(len(dataset), rank=self.env.rank, world_size=self.env.world_size)
        loader = DataLoader(dataset, batch_size=max(1, self.per_rank_batch), sampler=sampler, collate_fn=collate,
                            num_workers=self.cfg.num_workers)
        seg = ReferringSegmentationMetrics(device=self.device, at_original_size=at_original_size)
        unc = UncertaintyQualityMetrics(device=self.device) if uncertainty else None
        was_training = self.net.training
        self.net.eval()
        show = self.cfg.progress if progress is None else progress
        iterator: Any = loader
        out = None
        if show and self.env.is_main:
            from tqdm.auto import tqdm

            iterator = tqdm(loader, desc=f"eval {split}", unit="batch", leave=False, dynamic_ncols=True)
        for batch in iterator:
            out = self._forward(batch, blank_text=blank_text)
            logits = out.logits.float()
            seg.update_from_batch(logits, batch)
            if unc is not None and out.uncertainty is not None:
                target = batch["mask"].to(self.device).bool()
                pred = resize_logits(logits, target.shape[-2:])[:, 0] > 0
                u = self.model.to_image_size(out.uncertainty.float(), tuple(batch["image"].shape[-2:]))
                prob = torch.sigmoid(resize_logits(u, target.shape[-2:]))[:, 0]
                unc.update(prob, pred != target)
        self.net.train(was_training)
        seg.sync()
        result: dict[str, Any] = dict(seg.compute())
        breakdown = seg.compute_breakdown()
        if breakdown:
            result["breakdown"] = breakdown
        if unc is not None and out is not None and out.uncertainty is not None:
            unc.sync()
            result.update({f"unc/{k}": v for k, v in unc.compute().items()})
        return result

    def final_evaluation(self) -> dict[str, Any]:
        """Evaluate the best checkpoint (or the final weights without val) on ``cfg.eval_splits``."""
        best = find_checkpoint(self.out / "checkpoints" / "best")
        source = "final"
        if best is not None:
            self.load_weights(best)
            source = "best (val mIoU)"
        results: dict[str, Any] = {}
        for split in [s.strip() for s in self.cfg.eval_splits.split(",") if s.strip()]:
            results[split] = self.evaluate(split)
            results[f"{split}/text_masked"] = self.evaluate(split, blank_text=True, uncertainty=False)
            self._print(format_metrics(results[split], title=f"{split} ({source} checkpoint)"))
            masked = results[f"{split}/text_masked"]
            self._print(f"{split} with the text masked out: mIoU {100 * masked['mIoU']:.2f} "
                        f"(text costs {100 * (results[split]['mIoU'] - masked['mIoU']):.2f} mIoU points)")
        if self.env.is_main:
            payload = {"checkpoint": source, "protocol": PROTOCOL, "resolution": f"{self.image_size}x{self.image_size}",
                       "seed": self.cfg.seed, "steps": self.step, "results": results,
                       "train_config": self.cfg.to_dict(), "environment": environment_info()}
            atomic_write_text(self.out / "metrics.json", json.dumps(payload, indent=2, default=str))
            first = next(iter(results), None)
            if first is not None and self.cfg.panels > 0:
                self.save_panels(first.split("/")[0], self.cfg.panels)
        self.env.barrier()
        return results

    @torch.no_grad()
    def save_panels(self, split: str, count: int) -> list[Path]:
        """Draw the first ``count`` samples of ``split`` (a fixed set) as PNG panels (rank 0)."""
        from ..viz import save_panel

        dataset = self.dataset(split)
        paths = []
        self.net.eval()
        for index in range(min(count, len(dataset))):
            batch = collate([dataset[index]])
            out = self._forward(batch)
            size = tuple(batch["image"].shape[-2:])
            logits = out.logits.float()[0, 0]
            if out.uncertainty is not None:
                prob = torch.sigmoid(self.model.to_image_size(out.uncertainty.float(), size))[0, 0]
            else:
                prob = torch.zeros(size)
            refine = None
            if out.refine_mask is not None:
                refine = self.model.to_image_size(out.refine_mask.float(), size)[0, 0]
            path = self.out / "panels" / f"{split}_{index:03d}.png"
            save_panel(path, image=batch["image"][0], sentence=batch["sentence"][0], target=batch["mask"][0],
                       prediction=(logits > 0).cpu(), uncertainty_prob=prob.cpu(),
                       refine_mask=None if refine is None else refine.cpu())
            paths.append(path)
        return paths


class _Saver:
    """Saves the unwrapped model with its tokenizer through ``save_pretrained``."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer

    def save_pretrained(self, directory: str | Path) -> Path:
        return self.model.save_pretrained(directory, tokenizer=self.tokenizer)


def _replace_dir(src: Path, dst: Path) -> None:
    import shutil

    if dst.exists():
        shutil.rmtree(dst)
    src.replace(dst)


def main_guard(fn):
    """Run ``fn`` and always tear the process group down."""
    from .distributed import cleanup_distributed

    try:
        return fn()
    finally:
        cleanup_distributed()
        sys.stdout.flush()
