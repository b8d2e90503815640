"""--precision (bf16 / fp16 with a gradient scaler / fp32), the loss check before the
optimizer step, and --num-workers auto.

There is no GPU in the test environment: the fp16 path is exercised with a CPU ``GradScaler``
put on the trainer (``Trainer.scaler``), which runs the same step code as fp16 on CUDA minus the
fp16 autocast itself.
"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from uncertainty_rrsis.data import collate
from uncertainty_rrsis.training import (
    SettingsError,
    Trainer,
    build_arg_parser,
    build_trainer,
    config_from_args,
    resolve_num_workers,
    resolve_precision,
)
from uncertainty_rrsis.training.checkpoint import find_checkpoint

from helpers.tiny import tiny_train_config


def cli(*flags: str):
    return config_from_args(build_arg_parser().parse_args(list(flags)))


def params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters()}


def micro_batches(trainer: Trainer, count: int = 1) -> list[dict]:
    data = trainer.datasets["train"]
    size = trainer.per_rank_batch
    return [collate([data[i] for i in range(k * size, (k + 1) * size)]) for k in range(count)]


def cpu_scaler(**kwargs) -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cpu", **kwargs)


# ------------------------------------------------------------------ resolving the precision


def test_precision_resolves_per_device():
    assert resolve_precision("auto", device="cpu") == "fp32"
    assert resolve_precision("auto", device="cuda") == "bf16"
    assert resolve_precision("fp32", device="cuda") == "fp32"
    assert resolve_precision("bf16", device="cpu") == "bf16"
    assert resolve_precision("fp16", device="cuda") == "fp16"
    with pytest.raises(ValueError, match=r"--precision fp16 needs a CUDA device.*--precision fp32"):
        resolve_precision("fp16", device="cpu")
    assert resolve_precision("fp16", device="cpu", fp16_fallback=True) == "fp32"  # evaluating an fp16 run on a CPU


def test_precision_on_the_command_line():
    assert cli().precision == "auto" and cli("--precision", "fp16").precision == "fp16"
    with pytest.raises(SystemExit):
        build_arg_parser().parse_args(["--precision", "fp8"])
    with pytest.raises(SystemExit):
        build_arg_parser().parse_args(["--amp", "false"])  # one flag for the precision


def test_fp16_on_the_cpu_is_a_settings_error_that_says_so(tmp_path, tiny_bert_dir):
    with pytest.raises(SettingsError, match=r"--precision fp16 needs a CUDA device.*uses cpu"):
        build_trainer(tiny_train_config(tmp_path, tiny_bert_dir, precision="fp16"))


def test_the_trainer_picks_autocast_and_scaler_from_the_precision(tmp_path, tiny_bert_dir):
    auto = build_trainer(tiny_train_config(tmp_path, tiny_bert_dir))
    assert (auto.precision, auto.autocast_dtype, auto.scaler) == ("fp32", None, None)
    bf16 = build_trainer(tiny_train_config(tmp_path, tiny_bert_dir, precision="bf16"))
    assert (bf16.precision, bf16.autocast_dtype, bf16.scaler) == ("bf16", torch.bfloat16, None)


def test_a_bf16_step_on_the_cpu_trains(tmp_path, tiny_bert_dir):
    trainer = build_trainer(tiny_train_config(tmp_path, tiny_bert_dir, precision="bf16"))
    optimizer, scheduler = trainer.optimizer_and_schedule(8)
    before = params(trainer)
    parts = trainer._optimizer_step(micro_batches(trainer), optimizer, scheduler)
    assert all(math.isfinite(v) for v in parts.values())
    after = params(trainer)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(v.dtype == torch.float32 for v in after.values())  # autocast: the weights stay float32


# ------------------------------------------------------------------ the step with a gradient scaler


def test_the_scaled_step_scales_the_loss_and_unscales_before_clipping(tmp_path, tiny_bert_dir):
    """A power-of-two loss scale is exact: the step with the scaler equals the plain fp32 step."""
    plain = build_trainer(tiny_train_config(tmp_path, tiny_bert_dir, grad_clip=0.05))
    scaled = build_trainer(tiny_train_config(tmp_path, tiny_bert_dir, grad_clip=0.05))
    scaled.scaler = cpu_scaler(init_scale=2.0**12)
    assert all(torch.equal(a, b) for a, b in zip(params(plain).values(), params(scaled).values(), strict=True))
    seen: dict[str, torch.Tensor] = {}
    for name, trainer in (("plain", plain), ("scaled", scaled)):
        weight = next(p for p in trainer.model.parameters() if p.requires_grad)
        weight.register_hook(lambda grad, name=name: seen.__setitem__(name, grad.detach().clone()))
    batch = micro_batches(plain)
    results = {}
    for name, trainer in (("plain", plain), ("scaled", scaled)):
        optimizer, scheduler = trainer.optimizer_and_schedule(8)
        torch.manual_seed(7)  # the same dropout in both
        results[name] = trainer._optimizer_step(batch, optimizer, scheduler)
        assert scheduler.last_epoch == 1
    # the backward saw the loss times the scale ...
    torch.testing.assert_close(seen["scaled"], seen["plain"] * 2.0**12, rtol=0, atol=0)
    # ... the clipping and the reported norm the true gradients (the norm is above the clip: it acted)
    assert results["scaled"]["grad_norm"] == pytest.approx(results["plain"]["grad_norm"], rel=1e-6)
    assert results["plain"]["grad_norm"] > 0.05
    for (key, a), b in zip(params(plain).items(), params(scaled).values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9, msg=key)
    assert scaled.scaler.get_scale() == 2.0**12  # no inf: the scale stays (it grows after 2000 good steps)


def test_the_scaler_skips_a_step_with_infinite_gradients(tmp_path, tiny_bert_dir):
    trainer = build_trainer(tiny_train_config(tmp_path, tiny_bert_dir, grad_clip=1.0))
    trainer.scaler = cpu_scaler(init_scale=2.0**10)
    optimizer, scheduler = trainer.optimizer_and_schedule(8)
    weight = next(p for p in trainer.model.parameters() if p.requires_grad)
    hook = weight.register_hook(lambda grad: grad * float("inf"))  # an fp16 overflow in one tensor
    before = params(trainer)
    parts = trainer._optimizer_step(micro_batches(trainer), optimizer, scheduler)  # no error: the scaler's course
    assert all(torch.equal(before[k], v) for k, v in params(trainer).items())  # skipped on every parameter
    assert math.isfinite(parts["loss/total"]) and not math.isfinite(parts["grad_norm"])
    assert trainer.scaler.get_scale() == 2.0**9  # backed off
    assert scheduler.last_epoch == 1  # the step counts in the schedule
    hook.remove()
    trainer._optimizer_step(micro_batches(trainer), optimizer, scheduler)
    assert any(not torch.equal(before[k], v) for k, v in params(trainer).items())


# ------------------------------------------------------------------ a non-finite loss: no step, an error


def nan_at(trainer: Trainer, step: int) -> None:
    """Make the loss NaN at optimizer step index ``step`` (0-based), as a numerical blow-up would."""
    real = trainer.criterion

    def criterion(out, target, *, step: int = 0):
        loss = real(out, target, step=step)
        return loss._replace(total=loss.total * float("nan")) if step == at else loss

    at = step
    trainer.criterion = criterion


@pytest.mark.parametrize("scaled", [False, True])
def test_a_non_finite_loss_raises_before_the_step(tmp_path, tiny_bert_dir, scaled):
    trainer = build_trainer(tiny_train_config(tmp_path, tiny_bert_dir, grad_clip=None))
    if scaled:
        trainer.scaler = cpu_scaler(init_scale=2.0**10)
    nan_at(trainer, 0)
    optimizer, scheduler = trainer.optimizer_and_schedule(8)
    before = params(trainer)
    with pytest.raises(FloatingPointError) as info:
        trainer._optimizer_step(micro_batches(trainer), optimizer, scheduler)
    message = str(info.value)
    assert "non-finite loss at optimizer step 1" in message and "loss/total=nan" in message, message
    assert "loss/seg=" in message and "not applied" in message
    assert all(torch.equal(before[k], v) for k, v in params(trainer).items())
    assert optimizer.state_dict()["state"] == {} and scheduler.last_epoch == 0  # neither stepped
    if scaled:
        assert trainer.scaler.get_scale() == 2.0**10


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_run_with_the_last_checkpoint_intact(tmp_path, tiny_bert_dir):
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, checkpoint_every=2, eval_splits="", panels=0)
    trainer = build_trainer(cfg)
    nan_at(trainer, 4)  # the fifth step
    with pytest.raises(FloatingPointError, match="non-finite loss at optimizer step 5"):
        trainer.fit()
    run = Path(cfg.output_dir)
    assert trainer.step == 4 and not (run / ".lock").exists()
    last = find_checkpoint(run / "checkpoints" / "last")
    assert json.loads((last / "trainer_state.json").read_text())["step"] == 4


# ------------------------------------------------------------------ the scaler's state in the checkpoint


@pytest.mark.slow
def test_the_scaler_state_is_saved_and_restored_on_resume(tmp_path, tiny_bert_dir):
    def scaled(cfg):
        trainer = build_trainer(cfg)
        trainer.scaler = cpu_scaler(init_scale=2.0**4, growth_interval=1)  # the scale doubles every step
        return trainer

    straight = scaled(tiny_train_config(tmp_path / "a", tiny_bert_dir, checkpoint_every=100, eval_splits=""))
    straight.fit()
    assert straight.scaler.get_scale() == 2.0 ** (4 + 8)

    cfg = tiny_train_config(tmp_path / "b", tiny_bert_dir, checkpoint_every=100, eval_splits="",
                            cache_dir=straight.cfg.cache_dir)
    interrupted = scaled(cfg)
    original = interrupted._optimizer_step

    def step(*args, **kwargs):
        out = original(*args, **kwargs)
        if interrupted.step + 1 == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    interrupted._optimizer_step = step
    with pytest.raises(SystemExit):
        interrupted.fit()
    last = find_checkpoint(Path(cfg.output_dir) / "checkpoints" / "last")
    state = torch.load(last / "trainer_state.pt", weights_only=True)
    assert state["scaler"]["scale"] == 2.0 ** (4 + 5)
    resumed = scaled(cfg.replace(resume=True))  # a fresh scaler: 2**4
    resumed.fit()
    assert resumed.scaler.get_scale() == straight.scaler.get_scale()  # restored at 2**9, then 3 more steps
    from safetensors.torch import load_file

    a = load_file(str(Path(straight.cfg.output_dir) / "checkpoints" / "final" / "model.safetensors"))
    b = load_file(str(Path(cfg.output_dir) / "checkpoints" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ --num-workers auto


def test_num_workers_auto_is_0_on_the_cpu_and_bounded_on_cuda():
    assert resolve_num_workers("auto", device="cpu", cpus=64) == 0
    assert resolve_num_workers("auto", device="cuda", cpus=32, local_world_size=8) == 3  # 4 CPUs per rank
    assert resolve_num_workers("auto", device="cuda", cpus=128, local_world_size=4) == 8  # at most 8
    assert resolve_num_workers("auto", device="cuda", cpus=2, local_world_size=1) == 1
    assert resolve_num_workers("auto", device="cuda", cpus=4, local_world_size=8) == 0
    assert resolve_num_workers(5, device="cpu") == 5  # a number wins
    with pytest.raises(ValueError, match="--num-workers must be a number >= 0 or auto"):
        resolve_num_workers(-1, device="cpu")


def test_num_workers_auto_reads_the_ranks_per_node(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert resolve_num_workers("auto", device="cuda", cpus=20) == 4
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert resolve_num_workers("auto", device="cuda", cpus=20) == 8


def test_num_workers_on_the_command_line(tmp_path, tiny_bert_dir):
    assert cli().num_workers == "auto" and cli("--num-workers", "3").num_workers == 3
    assert cli("--num-workers", "auto").num_workers == "auto"
    with pytest.raises(SystemExit):
        build_arg_parser().parse_args(["--num-workers", "many"])
    (tmp_path / "run.yaml").write_text("num-workers: auto\n")
    assert cli("--config", str(tmp_path / "run.yaml")).num_workers == "auto"
    assert build_trainer(tiny_train_config(tmp_path, tiny_bert_dir)).num_workers == 0
    assert build_trainer(tiny_train_config(tmp_path, tiny_bert_dir, num_workers=2)).num_workers == 2
