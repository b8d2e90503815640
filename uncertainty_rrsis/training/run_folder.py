"""A run folder belongs to one run: its lock, the files a run leaves there, the settings a resume may change.

* :class:`RunLock` -- ``<output_dir>/.lock``, created atomically (``O_CREAT | O_EXCL``) and holding
  the pid, host and start time of the process that trains there. A second process is refused
  while the holder lives; the lock of a process that died on this host (a crash, ``kill -9``)
  is taken over with a note.
* :data:`RUN_MARKERS` / :func:`run_markers` -- the files that show a folder holds a run;
  :func:`remove_run_files` -- what ``--overwrite`` deletes (the run's files, nothing else).
* :func:`settings_changes` -- the differences between a run's saved settings and new ones that
  change what the run computes (a resume refuses them unless ``--resume-with-changes``).

:class:`RunFolderError` is the error of all three: its message names the folder, says what was
found and what to do.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "RunFolderError",
    "RunLock",
    "LOCK_NAME",
    "RUN_MARKERS",
    "RUN_OUTPUTS",
    "run_markers",
    "remove_run_files",
    "settings_changes",
    "format_changes",
]

#: The lock file of a run folder.
LOCK_NAME = ".lock"

#: Files and folders that show a folder holds a run (starting a new run there needs --resume or --overwrite).
RUN_MARKERS: tuple[str, ...] = ("config.json", "log.jsonl", "metrics.json", "checkpoints")

#: Everything a run (and ``examples/evaluate.py`` on its checkpoints) writes into its folder:
#: what ``--overwrite`` removes. Other files in the folder are left alone.
RUN_OUTPUTS: tuple[str, ...] = RUN_MARKERS + ("panels", "tensorboard", "eval", "config.json.tmp",
                                              "metrics.json.tmp")


class RunFolderError(RuntimeError):
    """A run folder cannot be used as asked: in use by another run, holding a run, or a resume
    whose settings differ. The message names the folder and says what to do."""


# ---------------------------------------------------------------------------------------------- the lock


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie counts as dead; unknown counts as alive)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would end the process there; assume it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rindex(")") + 2] == "Z":  # exited, not yet reaped by its parent
            return False
    return True


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return ""


def _parse(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int) or not isinstance(data.get("host"), str):
        return None
    return data


def _describe(holder: Mapping[str, Any]) -> str:
    text = f"pid {holder['pid']} on host {holder['host']}"
    if holder.get("started"):
        text += f", started {holder['started']}"
    if holder.get("command"):
        text += f" ({holder['command']})"
    return text


class RunLock:
    """The lock of a run folder, ``<folder>/.lock``: at most one training process writes there.

    Take it with :meth:`acquire` (or ``with RunLock.acquire(folder):``) before writing anything,
    give it back with :meth:`release`. While it is held, SIGTERM (when it has its default
    action) ends the process with ``SystemExit(143)`` instead of killing it, so the lock is
    released on that path too.

    Attributes:
        folder: the run folder.
        path: the lock file.
        note: set when the lock of a dead process was taken over (what happened, for the output).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.note: str | None = None
        self._token = uuid.uuid4().hex
        self._held = False
        self._previous_sigterm: Any = None

    @property
    def held(self) -> bool:
        return self._held

    @classmethod
    def acquire(cls, folder: str | Path) -> RunLock:
        """Create the folder if needed and take its lock; returns the held lock.

        Raises:
            RunFolderError: another live process holds the lock (or this one, for a second run
                started in the same folder), a process of another host holds it, or the lock file
                cannot be read. The message names the holder and what to do.
        """
        lock = cls(folder)
        lock._acquire()
        return lock

    def _acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(),
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "",
              "token": self._token}
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                text = _read(self.path)
                if text is None:  # released in between: try again
                    continue
                self._take_over_if_stale(text)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(me) + "\n")
            self._held = True
            self._catch_sigterm()
            return
        raise RunFolderError(
            f"{self.folder} is in use: its lock {self.path} keeps being taken by other processes. Wait until the "
            "other runs there end, or choose another --output-dir."
        )

    def _take_over_if_stale(self, text: str) -> None:
        """Refuse (raise) unless the lock's holder is a dead process of this host; then move the lock aside."""
        holder = _parse(text)
        if holder is None:
            raise RunFolderError(
                f"{self.folder} holds a lock file, {self.path}, that cannot be read (empty or not written by this "
                "library): another run may be starting there. If no run uses this folder, delete the lock file and "
                "start again; otherwise wait for that run or choose another --output-dir."
            )
        host = socket.gethostname()
        if holder["host"] != host:
            raise RunFolderError(
                f"{self.folder} is in use by another run: {_describe(holder)} holds its lock {self.path}, and from "
                f"this host ({host}) it cannot be checked whether that process still runs. Wait for that run to end "
                "or choose another --output-dir; if no run uses this folder any more, delete the lock file."
            )
        if _pid_alive(holder["pid"]):
            who = "this very process (a second run started in the same folder)" if holder["pid"] == os.getpid() else (
                _describe(holder))
            raise RunFolderError(
                f"{self.folder} is in use by another run: {who} holds its lock {self.path}. Two runs in one folder "
                "would overwrite each other's checkpoints, log and metrics. Wait for that run to end (or stop it), or "
                "choose another --output-dir; to continue it later, use --resume once it has stopped."
            )
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}-{self._token[:8]}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:  # another process took it over first
            return
        if _read(aside) != text:  # it changed hands in between: put it back, the next round decides
            os.replace(aside, self.path)
            return
        os.unlink(aside)
        self.note = (f"note: {self.path} was left by {_describe(holder)}, which no longer runs (it crashed or was "
                     "killed); this run takes the folder over.")

    def _catch_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)

    def release(self) -> None:
        """Remove the lock file if this lock still owns it (idempotent)."""
        if not self._held:
            return
        self._held = False
        if self._previous_sigterm is not None:
            with contextlib.suppress(ValueError, OSError):
                if signal.getsignal(signal.SIGTERM) is _exit_on_sigterm:
                    signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        holder = _parse(_read(self.path) or "")
        if holder is not None and holder.get("token") == self._token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(143)


# ---------------------------------------------------------------------------------------------- the run's files


def run_markers(folder: str | Path) -> list[str]:
    """The names of :data:`RUN_MARKERS` present in ``folder`` (a run lives there when not empty)."""
    folder = Path(folder)
    return [name for name in RUN_MARKERS if (folder / name).exists()]


def remove_run_files(folder: str | Path) -> list[str]:
    """Delete what a run wrote into ``folder`` (:data:`RUN_OUTPUTS`, and the ``.tmp`` / ``.old`` twins of
    the checkpoints inside ``checkpoints/``); other files stay. Returns the names removed."""
    folder = Path(folder)
    removed = []
    for name in RUN_OUTPUTS:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


# ---------------------------------------------------------------------------------------------- settings on resume


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _plain(value: Any) -> Any:
    """Through JSON, as the saved side went (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))


def settings_changes(saved_train: Mapping[str, Any], new_train: Mapping[str, Any], *,
                     saved_model: Mapping[str, Any] | None, new_model: Mapping[str, Any],
                     free: frozenset[str] | set[str], free_model: frozenset[str] | set[str] = frozenset(),
                     ) -> dict[str, tuple[Any, Any]]:
    """The settings that differ between a run's saved ones and new ones, ``name: (saved, new)``.

    Training settings are compared field by field, except those in ``free`` (bookkeeping and
    where the run executes). With a saved model config, the model is compared by its config
    (dotted names such as ``model.decoder.num_layers``, except ``free_model``) instead of by the
    ``preset`` and ``model`` overrides that built it. A setting the saved side does not have
    (written by an older version) is not compared.
    """
    saved_train, new_train = _plain(dict(saved_train)), _plain(dict(new_train))
    skip = set(free) | ({"preset", "model"} if saved_model is not None else set())
    changes: dict[str, tuple[Any, Any]] = {}
    for name, new in new_train.items():
        if name in skip or name not in saved_train:
            continue
        if saved_train[name] != new:
            changes[name] = (saved_train[name], new)
    if saved_model is not None:
        old, new_flat = _flatten(_plain(dict(saved_model))), _flatten(_plain(dict(new_model)))
        for name in sorted(set(old) | set(new_flat)):
            if name in free_model or name not in old:
                continue
            if old[name] != new_flat.get(name):
                changes[f"model.{name}"] = (old[name], new_flat.get(name))
    return changes


def format_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """One line per change: ``  name: saved -> new``."""
    return "\n".join(f"  {name}: {saved!r} -> {new!r}" for name, (saved, new) in changes.items())
