"""The record of image files whose compressed data passed the strict check, so each is checked once.

Checking a JPEG's entropy-coded data (:mod:`._jpeg`) costs several times its decoding. A file that
passed, and has not changed since, need not be checked again: :class:`CheckedFiles` remembers
``(absolute path, size in bytes, modification time in ns)`` of every file that passed. A file whose
size or modification time differs is checked again; a file that failed is never recorded (it raises
every time it is read).

In memory the record lives as long as its process. Given a ``path``, it is also an SQLite file that
every process opening it shares (the loader workers of every rank, and later runs): a worker that
checked a file tells the others. The file is a cache: deleting it only costs checks, and when it
cannot be opened or written (a read-only folder) the record stays in memory, with one warning.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import warnings
from pathlib import Path
from typing import Any

__all__ = ["CHECK_RECORD_NAME", "CheckedFiles"]

#: The record's file name inside a cache folder (the training example's ``cache_dir``).
CHECK_RECORD_NAME = "checked_images.sqlite"

#: Bumped when the check finds more than before, so files recorded by an older check are checked again.
CHECK_VERSION = 1


class CheckedFiles:
    """Which files passed the strict check, by (path, size, modification time) (module docstring).

    Args:
        path: an SQLite file shared by processes (created with its folder when missing), or None to
            keep the record in this process's memory only.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._seen: set[tuple[str, int, int]] = set()
        self._db: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._broken = False
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # to loader workers: the record, not the connection
        return {"path": self.path, "_seen": set(self._seen)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]
        self._seen = state["_seen"]

    def __len__(self) -> int:
        return len(self._seen)

    def __repr__(self) -> str:
        return f"CheckedFiles({str(self.path)!r})" if self.path else "CheckedFiles()"

    @staticmethod
    def key(path: str | Path) -> tuple[str, int, int]:
        """``(absolute path, size, modification time in ns)`` of a file as it is now."""
        stat = os.stat(path)
        return str(Path(path).resolve()), int(stat.st_size), int(stat.st_mtime_ns)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple):
            return False
        if key in self._seen:
            return True
        db = self._connection()
        if db is None:
            return False
        try:
            with self._lock:
                row = db.execute("SELECT 1 FROM checked WHERE path = ? AND size = ? AND mtime_ns = ? AND version = ?",
                                 (*key, CHECK_VERSION)).fetchone()
        except sqlite3.Error as err:
            self._give_up(err)
            return False
        if row is not None:
            self._seen.add(key)
        return row is not None

    def add(self, key: tuple[str, int, int]) -> None:
        """Record that the file of ``key`` (:meth:`key`, taken before it was read) passed the check."""
        self._seen.add(key)
        db = self._connection()
        if db is None:
            return
        try:
            with self._lock:
                db.execute("INSERT OR REPLACE INTO checked (path, size, mtime_ns, version) VALUES (?, ?, ?, ?)",
                           (*key, CHECK_VERSION))
        except sqlite3.Error as err:
            self._give_up(err)

    def _connection(self) -> sqlite3.Connection | None:
        if self.path is None or self._broken:
            return None
        if self._db is not None and self._pid == os.getpid():
            return self._db
        try:  # one connection per process: a forked worker opens its own
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")  # a cache: a lost entry only costs a check
            db.execute("CREATE TABLE IF NOT EXISTS checked (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                       "version INTEGER)")
        except (OSError, sqlite3.Error) as err:
            self._give_up(err)
            return None
        self._db, self._pid = db, os.getpid()
        return db

    def _give_up(self, err: Exception) -> None:
        self._broken = True
        warnings.warn(f"the record of checked image files {self.path} cannot be used ({err}); files are recorded "
                      "in memory for this process only, so each worker checks them again", RuntimeWarning,
                      stacklevel=3)
