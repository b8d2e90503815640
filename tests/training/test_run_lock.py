"""The pieces that keep one run per folder, without training: the lock, the files of a run, the
settings a resume compares, and the new flags."""

from __future__ import annotations

import json
import os
import socket

import pytest

from uncertainty_rrsis.training import (
    RESUME_MAY_CHANGE,
    RESUME_MAY_CHANGE_MODEL,
    RunFolderError,
    RunLock,
    TrainConfig,
    build_arg_parser,
    build_model_config,
    config_from_args,
)
from uncertainty_rrsis.training import lock as lock_module
from uncertainty_rrsis.training.run_folder import remove_run_files, run_markers, settings_changes


def write_lock(folder, **holder):
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
    lock = write_lock(tmp_path, command="train.py --seed 1")
    with pytest.raises(RunFolderError) as info:
        RunLock.acquire(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and f"pid 424242 on host {socket.gethostname()}" in message
    assert "train.py --seed 1" in message and "--output-dir" in message and "--resume" in message
    assert json.loads(lock.read_text())["pid"] == 424242  # left alone


def test_the_lock_of_a_dead_process_is_taken_over_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(lock_module, "_pid_alive", lambda pid: pid == os.getpid())
    lock = write_lock(tmp_path)
    taken = RunLock.acquire(tmp_path)
    assert "pid 424242" in taken.note and "no longer runs" in taken.note
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # nothing left aside
    taken.release()
    assert not lock.exists()


def test_another_hosts_lock_and_an_unreadable_lock_are_refused(tmp_path):
    write_lock(tmp_path, host="node-17")
    with pytest.raises(RunFolderError, match=r"pid 424242 on host node-17.*cannot be checked.*delete the lock file"):
        RunLock.acquire(tmp_path)
    (tmp_path / ".lock").write_text("")
    with pytest.raises(RunFolderError, match=r"cannot be read.*another run may be starting.*delete the lock file"):
        RunLock.acquire(tmp_path)


def test_release_leaves_a_lock_it_does_not_own(tmp_path):
    lock = RunLock.acquire(tmp_path)
    other = write_lock(tmp_path)  # replaced behind its back
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
