"""Several nodes without a shared file system: only rank 0 reads the run folder (resume, final
evaluation) and broadcasts what it read; and a non-finite loss on one rank stops every rank before
any of them steps.

Each test runs two gloo processes (``torch.multiprocessing.spawn``, a ``file://`` rendezvous). To
stand for a second node, rank 1 gets an output folder and a data cache of its own: it never sees
rank 0's run folder.
"""

from __future__ import annotations

import json
import os
import signal
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from uncertainty_rrsis.data import collate
from uncertainty_rrsis.training import (
    DistEnv,
    TrainConfig,
    broadcast_state,
    build_trainer,
    init_distributed,
)

from helpers.tiny import tiny_train_config

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def _join(rank: int, world: int, store: str) -> DistEnv:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    return init_distributed(device="cpu", init_method=store, timeout_minutes=2)


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


# ------------------------------------------------------------------ broadcast_state


def _state() -> dict:
    torch.manual_seed(0)
    return {
        "weights": {"a": torch.randn(3, 4), "b": torch.randn(7).to(torch.bfloat16), "scalar": torch.tensor(2.5)},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(100)}}, "param_groups": [
            {"lr": 1e-3, "params": [0], "name": "head"}]},
        "rng": {"torch": torch.get_rng_state(), "python": [3, list(range(5)), None]},
        "flags": torch.tensor([True, False, True]),
        "ids": torch.arange(10, dtype=torch.int64).reshape(2, 5),
        "empty": torch.empty(0, 3),
        "pair": (torch.ones(2), "text"),
        "progress": {"step": 5, "best_val": 0.25},
    }


def _broadcast_worker(rank: int, world: int, store: str, out: str) -> None:
    env = _join(rank, world, store)
    try:
        got = broadcast_state(env, _state() if rank == 0 else None, chunk_bytes=64)  # many small chunks
        torch.save(got, Path(out) / f"state{rank}.pt")
    finally:
        dist.destroy_process_group()


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_broadcast_state_gives_rank_0s_tensors_and_structure_to_every_rank(tmp_path):
    mp.spawn(_broadcast_worker, args=(2, f"file://{tmp_path / 'store'}", str(tmp_path)), nprocs=2, join=True)
    expected = _state()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"state{rank}.pt", weights_only=False)
        assert _same(expected, got), rank
    single = _state()
    assert broadcast_state(DistEnv(), single) is single  # one process: the object itself


# ------------------------------------------------------------------ resume and final evaluation from rank 0's disk


def _train_worker(rank: int, world: int, store: str, configs: list[dict], out: str, stop_at: int | None) -> None:
    env = _join(rank, world, store)
    try:
        cfg = TrainConfig(**configs[rank])
        if stop_at is not None:  # a preempted run: SIGTERM on rank 0 after step `stop_at`, then --resume
            trainer = build_trainer(cfg, env=env)
            original = trainer._optimizer_step

            def step(*args, **kwargs):
                result = original(*args, **kwargs)
                if rank == 0 and trainer.step + 1 == stop_at:
                    os.kill(os.getpid(), signal.SIGTERM)
                return result

            trainer._optimizer_step = step
            try:
                trainer.fit()
            except SystemExit as stop:
                assert stop.code == 143
            else:
                raise AssertionError("the run was not stopped")
            assert trainer.step == stop_at
            cfg = cfg.replace(resume=True)
        trainer = build_trainer(cfg, env=env)
        results = trainer.fit()
        state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}  # the best checkpoint's
        torch.save({"state": state, "results": results["test"], "best": trainer.best, "best_step": trainer.best_step,
                    "step": trainer.step}, Path(out) / f"rank{rank}.pt")
    except BaseException:
        (Path(out) / f"error{rank}.txt").write_text(traceback.format_exc())
        raise
    finally:
        dist.destroy_process_group()


def test_resume_and_final_evaluation_read_the_checkpoints_on_rank_0_only(tmp_path, tiny_bert_dir):
    def configs(name: str, *, blind: bool) -> list[dict]:
        base = tiny_train_config(tmp_path, tiny_bert_dir, eval_every=2, panels=0, checkpoint_every=100,
                                 output_dir=str(tmp_path / name / "run")).to_dict()
        other = {**base, "output_dir": str(tmp_path / name / "rank1-run"), "cache_dir": str(tmp_path / "rank1-cache")}
        return [base, other if blind else base]

    build_trainer(TrainConfig(**{**configs("warm", blind=False)[0], "max_steps": 1}))  # builds rank 0's synthetic cache

    # as before: both ranks see the same run folder, uninterrupted
    (tmp_path / "straight").mkdir()
    mp.spawn(_train_worker, args=(2, f"file://{tmp_path / 'store-a'}", configs("straight", blind=False),
                                  str(tmp_path / "straight"), None), nprocs=2, join=True)
    # a second node: rank 1 sees another (empty) folder and its own data copy; stopped after step 3, resumed
    (tmp_path / "split").mkdir()
    mp.spawn(_train_worker, args=(2, f"file://{tmp_path / 'store-b'}", configs("split", blind=True),
                                  str(tmp_path / "split"), 3), nprocs=2, join=True)

    straight0 = torch.load(tmp_path / "straight" / "rank0.pt", weights_only=False)
    for rank in (0, 1):
        got = torch.load(tmp_path / "split" / f"rank{rank}.pt", weights_only=False)
        assert got["step"] == 8 and (got["best"], got["best_step"]) == (straight0["best"], straight0["best_step"])
        for key, value in straight0["state"].items():  # the best checkpoint, loaded from rank 0's disk
            assert torch.equal(value, got["state"][key]), (rank, key)
        for key in ("oIoU", "mIoU", "Pr@0.5", "Pr@0.9", "count", "unc/AUROC"):
            assert got["results"][key] == straight0["results"][key], (rank, key)
    final_a = _safetensors(tmp_path / "straight" / "run" / "checkpoints" / "final" / "model.safetensors")
    final_b = _safetensors(tmp_path / "split" / "run" / "checkpoints" / "final" / "model.safetensors")
    assert final_a.keys() == final_b.keys() and all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    run = tmp_path / "split" / "run"
    resumed = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed if r.get("event") == "resumed"] == [3]
    assert json.loads((run / "metrics.json").read_text())["selection"]["step"] == straight0["best_step"]
    assert not (tmp_path / "split" / "rank1-run").exists()  # rank 1 never wrote (nor read) a run folder


# ------------------------------------------------------------------ a non-finite loss on one rank


def _nan_worker(rank: int, world: int, store: str, cfg: dict, out: str) -> None:
    env = _join(rank, world, store)
    try:
        trainer = build_trainer(TrainConfig(**cfg), env=env)
        optimizer, scheduler = trainer.optimizer_and_schedule(8)
        data = trainer.datasets["train"]
        size = trainer.per_rank_batch

        def batch(k: int) -> list[dict]:
            start = (2 * k + rank) * size
            return [collate([data[i] for i in range(start, start + size)])]

        trainer._optimizer_step(batch(0), optimizer, scheduler)  # a good step on both ranks
        trainer.step = 1
        real = trainer.criterion

        def criterion(out, target, *, step: int = 0):
            loss = real(out, target, step=step)
            return loss._replace(total=loss.total * float("nan")) if rank == 1 else loss

        trainer.criterion = criterion
        before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        try:
            trainer._optimizer_step(batch(1), optimizer, scheduler)
            message = None
        except FloatingPointError as err:
            message = str(err)
        after = trainer.model.state_dict()
        unchanged = all(torch.equal(before[k], after[k]) for k in before)
        torch.save({"message": message, "unchanged": unchanged, "last_epoch": scheduler.last_epoch,
                    "state": {k: v.clone() for k, v in after.items()}}, Path(out) / f"nan{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_a_non_finite_loss_on_one_rank_stops_every_rank_before_the_step(tmp_path, tiny_bert_dir):
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, grad_clip=None).to_dict()
    build_trainer(TrainConfig(**cfg))  # builds the synthetic cache once
    mp.spawn(_nan_worker, args=(2, f"file://{tmp_path / 'store'}", cfg, str(tmp_path)), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"nan{rank}.pt", weights_only=False) for rank in (0, 1)]
    for rank, result in enumerate(got):
        message = result["message"]
        assert message is not None, f"rank {rank} stepped on"
        assert "non-finite loss at optimizer step 2 on rank(s) [1]" in message, message
        assert result["unchanged"] and result["last_epoch"] == 1, rank  # the good step only
    assert "loss/total=nan" in got[1]["message"]
    assert "this rank's parts, which are finite" in got[0]["message"]
    assert all(torch.equal(got[0]["state"][k], got[1]["state"][k]) for k in got[0]["state"])  # still in step
