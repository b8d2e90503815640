"""The lock of a run folder, ``<output_dir>/.lock``: at most one training process writes there.

The lock file is created atomically (``O_CREAT | O_EXCL``) and holds the pid, host and start time
of the process that trains there. A second process is refused while the holder lives; the lock of
a process that died on this host (a crash, ``kill -9``) is taken over with a note.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["RunFolderError", "RunLock", "LOCK_NAME"]

#: The lock file of a run folder.
LOCK_NAME = ".lock"


class RunFolderError(RuntimeError):
    """A run folder cannot be used as asked: in use by another run, holding a run, or a resume
    whose settings differ. The message names the folder and says what to do."""


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
