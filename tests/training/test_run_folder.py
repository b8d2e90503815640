"""One run per folder: the folder's lock (a live holder refused and named, a dead one taken over),
the files of a run (--overwrite deletes only those), a folder that holds a run refused without
--resume or --overwrite, and the settings a resume compares."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from uncertainty_rrsis.training import (
    RESUME_MAY_CHANGE,
    RESUME_MAY_CHANGE_MODEL,
    RunFolderError,
    RunLock,
    TrainConfig,
    Trainer,
    build_arg_parser,
    build_model_config,
    build_trainer,
    config_from_args,
    init_distributed,
    prepare_data_root,
)
from uncertainty_rrsis.training import lock as lock_module
from uncertainty_rrsis.training.checkpoint import read_weights
from uncertainty_rrsis.training.run_folder import remove_run_files, run_markers, settings_changes

from helpers.tiny import tiny_train_config

REPO = Path(__file__).resolve().parents[2]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (but the lock) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def log_records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def write_lock(folder: Path, pid: int, host: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "earlier",
                                "command": "train.py", "token": "someone-else"}) + "\n")
    return lock


@pytest.fixture()
def sleeper():
    """A live process (not a run): its pid stands for another run that holds a folder's lock."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield child
    child.kill()
    child.wait()


# ------------------------------------------------------------------ a new run in a used folder


@pytest.mark.slow
def test_a_new_run_in_a_used_folder_is_refused_and_nothing_is_lost(tmp_path, tiny_bert_dir):
    first = tiny_train_config(tmp_path, tiny_bert_dir, epochs=1)
    build_trainer(first).fit()
    run = Path(first.output_dir)
    before = snapshot(run)
    assert (run / "checkpoints" / "best").is_dir()

    # the same folder, no val split, no --resume: it used to report the first run's best checkpoint
    second = tiny_train_config(tmp_path, tiny_bert_dir, epochs=1, synthetic_val=0, seed=4)
    with pytest.raises(RuntimeError) as info:
        build_trainer(second).fit()
    message = str(info.value)
    assert str(run) in message and "--resume" in message and "--overwrite" in message
    assert "metrics.json" in message  # what the folder holds
    assert snapshot(run) == before  # nothing written, nothing lost
    assert not (run / ".lock").exists()


@pytest.mark.slow
def test_overwrite_starts_clean_and_reports_its_own_scores(tmp_path, tiny_bert_dir, capsys):
    first = tiny_train_config(tmp_path, tiny_bert_dir, epochs=1, tensorboard=True)
    build_trainer(first).fit()
    run = Path(first.output_dir)
    (run / "notes.txt").write_text("mine")  # a user's file: kept
    (run / "eval").mkdir()
    (run / "eval" / "eval_test.json").write_text("{}")  # examples/evaluate.py's output for the old weights

    second = tiny_train_config(tmp_path, tiny_bert_dir, epochs=1, synthetic_val=0, seed=4, overwrite=True, panels=1)
    trainer = build_trainer(second)
    capsys.readouterr()
    results = trainer.fit()
    assert "--overwrite: deleted the previous run's config.json, log.jsonl, metrics.json, checkpoints" in (
        capsys.readouterr().out)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["checkpoint"] == "final" and metrics["seed"] == 4
    assert not (run / "checkpoints" / "best").exists() and not (run / "eval").exists()
    assert (run / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (run / "panels").iterdir()) == ["test_000.png"]
    records = log_records(run)
    assert [r["step"] for r in records if "loss/total" in r] == [4]  # the second run's steps only
    assert not any("val/mIoU" in r for r in records)
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["seed"] == 4 and config["train"]["synthetic_val"] == 0
    # its scores are those of its own final weights
    fresh = build_trainer(second.replace(overwrite=False, output_dir=str(tmp_path / "scratch")))
    fresh.model.load_state_dict(read_weights(fresh.model, run / "checkpoints" / "final"))
    again = fresh.evaluate("test")
    assert again["mIoU"] == pytest.approx(results["test"]["mIoU"], abs=1e-12)
    assert metrics["results"]["test"]["mIoU"] == pytest.approx(again["mIoU"], abs=1e-12)


@pytest.mark.slow
def test_final_evaluation_ignores_a_best_checkpoint_this_run_did_not_write(tmp_path, tiny_bert_dir):
    first = tiny_train_config(tmp_path, tiny_bert_dir, epochs=1)
    build_trainer(first).fit()
    run = Path(first.output_dir)
    import shutil

    shutil.rmtree(run / "checkpoints" / "last")  # as if the run had stopped before its first resumable checkpoint
    again = tiny_train_config(tmp_path, tiny_bert_dir, epochs=1, synthetic_val=0, resume=True,
                              resume_with_changes=True)
    build_trainer(again).fit()
    assert json.loads((run / "metrics.json").read_text())["checkpoint"] == "final"


# ------------------------------------------------------------------ two runs, one folder


@pytest.mark.slow
def test_a_folder_in_use_is_refused_until_its_holder_is_gone(tmp_path, tiny_bert_dir, sleeper, capsys):
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, epochs=1, panels=0)
    run = Path(cfg.output_dir)
    lock = write_lock(run, sleeper.pid)
    held = lock.read_text()
    with pytest.raises(RuntimeError) as info:
        build_trainer(cfg).fit()
    message = str(info.value)
    assert str(run) in message and f"pid {sleeper.pid}" in message and socket.gethostname() in message
    assert "--output-dir" in message
    assert sorted(p.name for p in run.iterdir()) == [".lock"] and lock.read_text() == held  # untouched

    sleeper.kill()
    sleeper.wait()  # the holder is gone (as after kill -9): its lock is stale
    capsys.readouterr()
    build_trainer(cfg).fit()
    out = capsys.readouterr().out
    assert f"pid {sleeper.pid}" in out and "no longer runs" in out
    assert (run / "metrics.json").is_file() and not lock.exists()  # released at the end


@pytest.mark.slow
def test_a_lock_of_another_host_is_refused(tmp_path, tiny_bert_dir):
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, epochs=1, panels=0)
    write_lock(Path(cfg.output_dir), 12345, host="some-other-node")
    with pytest.raises(RuntimeError, match=r"pid 12345 on host some-other-node.*delete the lock file"):
        build_trainer(cfg).fit()


def _train_command(tmp: Path, bert_dir: Path, seed: int) -> list[str]:
    cfg = tiny_train_config(tmp, bert_dir, epochs=1, panels=0, log_every=1)
    return [sys.executable, str(REPO / "examples" / "train.py"), "--output-dir", cfg.output_dir,
            "--cache-dir", cfg.cache_dir, "--synthetic-train", "16", "--synthetic-val", "5", "--synthetic-test", "7",
            "--batch-size", "4", "--epochs", "1", "--lr", "1e-3", "--unc-warmup-steps", "2", "--log-every", "1",
            "--checkpoint-every", "3", "--panels", "0", "--progress", "false", "--tensorboard", "false",
            "--device", "cpu", "--seed", str(seed), "--model", json.dumps(cfg.model)]


@pytest.mark.slow
def test_two_trainings_started_at_once_in_one_folder(tmp_path, tiny_bert_dir):
    cfg = tiny_train_config(tmp_path, tiny_bert_dir)
    prepare_data_root(cfg, image_size=64)  # the synthetic data, once, before both start
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO), os.environ.get("PYTHONPATH", "")])}
    runs = [subprocess.Popen(_train_command(tmp_path, tiny_bert_dir, seed), cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (10, 11)]
    outputs = [run.communicate() for run in runs]
    codes = [run.returncode for run in runs]
    assert sorted(codes) == [0, 1], (codes, outputs)
    winner = codes.index(0)
    loser_err = outputs[1 - winner][1]
    folder = Path(cfg.output_dir)
    assert str(folder) in loser_err and ("is in use by another run" in loser_err or "already holds a run" in loser_err)
    assert "Traceback" not in loser_err  # a message, not a crash
    seed = (10, 11)[winner]
    assert json.loads((folder / "config.json").read_text())["train"]["seed"] == seed
    assert json.loads((folder / "metrics.json").read_text())["seed"] == seed
    assert [r["step"] for r in log_records(folder) if "loss/total" in r] == [1, 2, 3, 4]  # one run's log
    assert not (folder / ".lock").exists()


def _ddp_refused(rank: int, world: int, store: str, cfg_dict: dict, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    env = init_distributed(device="cpu", init_method=store)
    try:
        build_trainer(TrainConfig(**cfg_dict), env=env).fit()
        outcome = "trained"
    except RuntimeError as err:
        outcome = f"{type(err).__name__}: {err}"
    (Path(out) / f"rank{rank}.txt").write_text(outcome)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_every_rank_stops_when_rank_0_is_refused(tmp_path, tiny_bert_dir, sleeper):
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, epochs=1, panels=0)
    prepare_data_root(cfg, image_size=64)
    write_lock(Path(cfg.output_dir), sleeper.pid)
    context = mp.spawn(_ddp_refused, args=(2, f"file://{tmp_path / 'store'}", cfg.to_dict(), str(tmp_path)),
                       nprocs=2, join=False)
    for _ in range(600):  # a rank left waiting for rank 0 would never end: give up after 10 min
        if context.join(timeout=1):
            break
    else:
        for process in context.processes:
            process.kill()
        pytest.fail("a rank hung after rank 0 was refused")
    outcomes = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert f"pid {sleeper.pid}" in outcomes[0] and "in use by another run" in outcomes[0]
    assert "rank 0" in outcomes[1] and f"pid {sleeper.pid}" in outcomes[1]


# ------------------------------------------------------------------ stops release the folder


class _StopAt:
    """Calls ``action`` right after optimizer step ``at``."""

    def __init__(self, trainer: Trainer, at: int, action) -> None:
        self.original, self.trainer, self.at, self.action = trainer._optimizer_step, trainer, at, action

    def __call__(self, *args, **kwargs):
        out = self.original(*args, **kwargs)
        if self.trainer.step + 1 == self.at:
            self.action()
        return out


@pytest.mark.slow
def test_sigterm_and_crashes_release_the_folder(tmp_path, tiny_bert_dir):
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, eval_splits="", checkpoint_every=2, log_every=1)
    run = Path(cfg.output_dir)
    trainer = build_trainer(cfg)
    trainer._optimizer_step = _StopAt(trainer, 3, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(SystemExit) as stop:
        trainer.fit()
    assert stop.value.code == 143 and not (run / ".lock").exists()

    def crash():
        raise RuntimeError("out of memory, say")

    resumed = cfg.replace(resume=True)
    trainer = build_trainer(resumed)
    trainer._optimizer_step = _StopAt(trainer, 6, crash)  # after step 5; the last checkpoint is at step 4
    with pytest.raises(RuntimeError, match="out of memory, say"):
        trainer.fit()
    assert not (run / ".lock").exists()
    with pytest.raises(RuntimeError, match="already holds a run"):
        build_trainer(cfg).fit()  # without --resume
    build_trainer(resumed).fit()
    records = log_records(run)
    assert [r["step"] for r in records if r.get("event") == "resumed"] == [3, 4]  # each resume, and from where
    assert [r["step"] for r in records if "loss/total" in r] == [1, 2, 3, 4, 5, 5, 6, 7, 8]  # step 5 done twice


@pytest.mark.slow
def test_sigterm_outside_the_training_loop_releases_the_folder(tmp_path, tiny_bert_dir):
    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("SIGTERM has a handler in this process: the run leaves it alone")
    cfg = tiny_train_config(tmp_path, tiny_bert_dir, epochs=1, panels=0)
    trainer = build_trainer(cfg)

    def stopped_while_evaluating(*args, **kwargs):
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:  # SIGTERM would kill the process, lock and all
            raise AssertionError("outside the training loop, SIGTERM has its default action")
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM should have ended the run")

    trainer.final_evaluation = stopped_while_evaluating
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        trainer.fit()
    assert stop.value.code == 143 and not (Path(cfg.output_dir) / ".lock").exists()
    assert signal.getsignal(signal.SIGTERM) == previous


def write_holder_lock(folder, **holder):
    folder.mkdir(parents=True, exist_ok=True)
    data = {"pid": 424242, "host": socket.gethostname(), "started": "earlier", "token": "other", **holder}
    (folder / ".lock").write_text(json.dumps(data))
    return folder / ".lock"


# ------------------------------------------------------------------ the lock


def test_the_lock_is_exclusive_and_released(tmp_path):
    lock = RunLock.acquire(tmp_path / "run")
    holder = json.loads((tmp_path / "run" / ".lock").read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname() and holder["started"]
    with pytest.raises(RunFolderError, match=r"in use by another run: this very process \(a second run started"):
        RunLock.acquire(tmp_path / "run")
    lock.release()
    lock.release()  # twice is fine
    assert not (tmp_path / "run" / ".lock").exists()
    with RunLock.acquire(tmp_path / "run") as again:
        assert again.held and again.note is None
    assert not (tmp_path / "run" / ".lock").exists()


def test_a_live_holder_is_named_in_the_refusal(tmp_path, monkeypatch):
    monkeypatch.setattr(lock_module, "_pid_alive", lambda pid: True)
    lock = write_holder_lock(tmp_path, command="train.py --seed 1")
    with pytest.raises(RunFolderError) as info:
        RunLock.acquire(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and f"pid 424242 on host {socket.gethostname()}" in message
    assert "train.py --seed 1" in message and "--output-dir" in message and "--resume" in message
    assert json.loads(lock.read_text())["pid"] == 424242  # left alone


def test_the_lock_of_a_dead_process_is_taken_over_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(lock_module, "_pid_alive", lambda pid: pid == os.getpid())
    lock = write_holder_lock(tmp_path)
    taken = RunLock.acquire(tmp_path)
    assert "pid 424242" in taken.note and "no longer runs" in taken.note
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # nothing left aside
    taken.release()
    assert not lock.exists()


def test_another_hosts_lock_and_an_unreadable_lock_are_refused(tmp_path):
    write_holder_lock(tmp_path, host="node-17")
    with pytest.raises(RunFolderError, match=r"pid 424242 on host node-17.*cannot be checked.*delete the lock file"):
        RunLock.acquire(tmp_path)
    (tmp_path / ".lock").write_text("")
    with pytest.raises(RunFolderError, match=r"cannot be read.*another run may be starting.*delete the lock file"):
        RunLock.acquire(tmp_path)


def test_release_leaves_a_lock_it_does_not_own(tmp_path):
    lock = RunLock.acquire(tmp_path)
    other = write_holder_lock(tmp_path)  # replaced behind its back
    lock.release()
    assert other.exists()


@pytest.mark.slow
def test_a_dead_pid_is_not_alive():
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert lock_module._pid_alive(os.getpid()) and not lock_module._pid_alive(child.pid)
    assert not lock_module._pid_alive(0)


# ------------------------------------------------------------------ the files of a run


def test_overwrite_removes_the_runs_files_only(tmp_path):
    for name in ("config.json", "log.jsonl", "metrics.json", "notes.md", "config.json.tmp"):
        (tmp_path / name).write_text("x")
    for name in ("checkpoints/last", "checkpoints/best.old", "panels", "tensorboard", "eval", "data"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "f").write_text("x")
    assert run_markers(tmp_path) == ["config.json", "log.jsonl", "metrics.json", "checkpoints"]
    removed = remove_run_files(tmp_path)
    assert set(removed) == {"config.json", "log.jsonl", "metrics.json", "checkpoints", "panels", "tensorboard",
                            "eval", "config.json.tmp"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.md"]
    assert run_markers(tmp_path) == []


# ------------------------------------------------------------------ the settings a resume compares


def test_settings_changes_lists_what_changes_the_result():
    old = TrainConfig(model={"dim": 32})
    new = TrainConfig(model={"dim": 48, "vision": {"weights": "moved/convnext.safetensors"}}, seed=2,
                      batch_size=32, output_dir="elsewhere", log_every=1, progress=False, device="cpu",
                      num_workers=4, resume=True, resume_with_changes=True, eval_splits="val,test", panels=0)
    changes = settings_changes(old.to_dict(), new.to_dict(), saved_model=build_model_config(old).to_dict(),
                               new_model=build_model_config(new).to_dict(), free=RESUME_MAY_CHANGE,
                               free_model=RESUME_MAY_CHANGE_MODEL)
    assert changes == {"seed": (0, 2), "batch_size": (16, 32), "model.dim": (32, 48)}
    # without a saved model config (an older run), the overrides that build the model are compared
    changes = settings_changes(old.to_dict(), new.to_dict(), saved_model=None, new_model={},
                               free=RESUME_MAY_CHANGE)
    assert set(changes) == {"seed", "batch_size", "model"}
    # a setting the saved side does not know (an older version) is not compared
    saved = {k: v for k, v in old.to_dict().items() if k != "seed"}
    assert "seed" not in settings_changes(saved, new.to_dict(), saved_model=None, new_model={},
                                          free=RESUME_MAY_CHANGE)


def test_every_setting_is_either_compared_or_free_on_resume():
    fields = set(TrainConfig.__dataclass_fields__) - {"use_fusion", "use_refinement", "freeze_text",
                                                      "text_lr_multiplier", "vision_lr_multiplier", "image_size",
                                                      "max_tokens", "vision_weights", "text_weights"}
    assert RESUME_MAY_CHANGE <= fields
    assert {"seed", "batch_size", "lr", "epochs", "max_steps", "eval_every", "synthetic_train",
            "data_root", "dataset", "grad_accumulation", "amp"}.isdisjoint(RESUME_MAY_CHANGE)


# ------------------------------------------------------------------ the flags


def cli(*flags: str) -> TrainConfig:
    return config_from_args(build_arg_parser().parse_args(list(flags)))


def test_overwrite_and_resume_with_changes_flags(tmp_path):
    assert cli("--overwrite").overwrite is True
    cfg = cli("--resume", "--resume-with-changes")
    assert cfg.resume and cfg.resume_with_changes
    with pytest.raises(ValueError, match="--resume and --overwrite contradict each other"):
        cli("--resume", "--overwrite")
    with pytest.raises(ValueError, match="--resume-with-changes goes with --resume"):
        cli("--resume-with-changes")


def test_a_run_config_json_fed_back_drops_the_choices_of_one_invocation(tmp_path):
    cfg = TrainConfig(seed=7, resume=True, resume_with_changes=True, output_dir=str(tmp_path / "run"))
    payload = {"train": cfg.to_dict(), "model": build_model_config(cfg).to_dict(), "environment": {}}
    (tmp_path / "config.json").write_text(json.dumps(payload))
    again = cli("--config", str(tmp_path / "config.json"))
    assert (again.resume, again.overwrite, again.resume_with_changes) == (False, False, False)
    assert again == TrainConfig.from_dict({**cfg.to_dict(), "resume": False, "resume_with_changes": False})
    payload["train"]["overwrite"] = True
    (tmp_path / "config.json").write_text(json.dumps(payload))
    assert cli("--config", str(tmp_path / "config.json")).overwrite is False
