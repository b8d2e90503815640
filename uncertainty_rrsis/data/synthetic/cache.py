"""Writing the synthetic benchmark to disk, and the cache that writes it once, atomically.

:func:`generate_synthetic` writes a configuration's samples into a folder of your choice in the
RISBench layout (the package docstring shows it). :func:`ensure_synthetic` keeps one folder per
configuration under a cache root: it generates into a temporary folder locked by the generating
process, writes a ``COMPLETE.json`` marker last and renames the folder into place;
:func:`clean_stale_temporaries` removes what killed runs left behind.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .config import SyntheticConfig
from .sampling import render_sample

__all__ = ["generate_synthetic", "ensure_synthetic", "clean_stale_temporaries"]


def generate_synthetic(
    root: str | Path, config: SyntheticConfig | None = None, *, progress: bool = True
) -> Path:
    """Write the benchmark described by ``config`` under ``root`` (RISBench layout).

    ``root`` must not exist or be empty. Returns ``root``. Prefer
    :func:`ensure_synthetic`, which caches and writes atomically.
    """
    config = config or SyntheticConfig()
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"synthetic output folder {root} is not empty; pick a new folder or use ensure_synthetic()"
        )
    (root / "img_rgb").mkdir(parents=True, exist_ok=True)
    (root / "mask").mkdir(exist_ok=True)
    total = sum(config.sizes.values())
    render = render_sample
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="synthetic RRSIS", unit="sample")
    try:
        for split, n in config.sizes.items():
            lines, tag_lines = [], []
            for i in range(n):
                sample = render(config, split, i)
                name = f"{split}_{i:06d}.png"
                Image.fromarray(sample.image).save(root / "img_rgb" / name, format="PNG", compress_level=1)
                Image.fromarray(sample.mask.astype(np.uint8) * 255).save(
                    root / "mask" / name, format="PNG", compress_level=1
                )
                lines.append(f"{name} {sample.sentence}\n")
                tag_lines.append(json.dumps({"name": name, "tags": sample.tags}, sort_keys=True) + "\n")
                if bar is not None:
                    bar.update(1)
            (root / f"output_phrase_{split}.txt").write_text("".join(lines), encoding="utf-8")
            (root / f"tags_{split}.jsonl").write_text("".join(tag_lines), encoding="utf-8")
    finally:
        if bar is not None:
            bar.close()
    (root / "synthetic.json").write_text(
        json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return root


_MARKER = "COMPLETE.json"
#: The generator's temporary folders: ``.synthetic-<fingerprint>-<random>`` beside the cache
#: folders, each with a ``<folder>.lock`` file locked by the generating process while it runs.
_TEMP_NAME = re.compile(r"^\.synthetic-[0-9a-f]{12}-[0-9a-z_]{6,16}$")
#: A temporary folder without a lock file (written by a version without them, or on a system
#: without file locks) is removed once nothing in it has changed for this long.
_STALE_AFTER_S = 24 * 3600.0

try:  # POSIX advisory locks: released by the kernel when the process dies, however it dies
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _try_lock(path: Path, *, create: bool) -> Any:
    """An open file holding an exclusive lock on ``path``, or None when another process holds it
    (or the file is missing and ``create`` is False, or the system has no file locks)."""
    if fcntl is None:
        return None
    try:
        handle = open(path, "a+" if create else "r+")  # noqa: SIM115 - kept open while locked
    except OSError:
        return None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _newest_change(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    for child in folder.iterdir():
        try:
            times.append(child.lstat().st_mtime)
        except OSError:
            continue
    return max(times)


def clean_stale_temporaries(root: str | Path) -> list[Path]:
    """Remove what interrupted :func:`ensure_synthetic` runs left in ``root``; returns the removed folders.

    Only the generator's own temporary folders are considered (``.synthetic-<fingerprint>-<random>``,
    real directories, not links). One is removed when its lock file can be locked (the process that
    generated into it has ended: killed, crashed, power lost) or, lacking a lock file, when nothing
    in it has changed for 24 hours. A folder whose generation is still running is never touched.
    """
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for entry in sorted(root.iterdir()):
        if not _TEMP_NAME.match(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        lock_path = entry.with_name(entry.name + ".lock")
        handle = _try_lock(lock_path, create=False) if lock_path.exists() else None
        if handle is None:
            if lock_path.exists() and fcntl is not None:
                continue  # locked: a live generation
            try:
                if time.time() - _newest_change(entry) < _STALE_AFTER_S:
                    continue
            except OSError:
                continue
        try:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        finally:
            if handle is not None:
                lock_path.unlink(missing_ok=True)
                handle.close()
    for lock_path in sorted(root.glob(".synthetic-*.lock")):  # locks whose folder is gone
        folder = lock_path.with_name(lock_path.name[: -len(".lock")])
        if _TEMP_NAME.match(folder.name) and not folder.exists():
            handle = _try_lock(lock_path, create=False)
            if handle is not None:
                lock_path.unlink(missing_ok=True)
                handle.close()
    return removed


def _marker_matches(folder: Path, config: SyntheticConfig) -> bool:
    try:
        return json.loads((folder / _MARKER).read_text(encoding="utf-8")) == config.to_dict()
    except (OSError, json.JSONDecodeError):
        return False


def ensure_synthetic(
    root: str | Path,
    *,
    seed: int = 0,
    image_size: int = 96,
    n_train: int = 4000,
    n_val: int = 500,
    n_test: int = 1000,
    progress: bool = True,
    **options: Any,
) -> Path:
    """Generate the synthetic benchmark once into a cache folder and return its path.

    The dataset lives in ``<root>/synthetic-<fingerprint>/`` where the fingerprint hashes
    the full :class:`SyntheticConfig` (``seed``, sizes, ``image_size`` and ``options``)
    and :data:`GENERATOR_VERSION`. If that folder holds a ``COMPLETE.json`` marker equal to
    the configuration, nothing is generated. Otherwise the data are written into a
    temporary sibling folder, the marker is written last and the folder is renamed into
    place, so an interrupted run never leaves a half-written dataset that looks complete
    (and two processes racing for the same cache both end up with one complete copy). The
    temporary folder of a run that was killed is removed by the next call
    (:func:`clean_stale_temporaries`).

    Returns:
        The folder to pass to :class:`~uncertainty_rrsis.data.RISBench`.
    """
    config = SyntheticConfig(
        seed=seed, image_size=image_size, n_train=n_train, n_val=n_val, n_test=n_test, **options
    )
    root = Path(root)
    final = root / f"synthetic-{config.fingerprint()}"
    clean_stale_temporaries(root)
    if _marker_matches(final, config):
        return final
    root.mkdir(parents=True, exist_ok=True)
    while True:  # lock first, then create the folder: a cleaner never sees it unlocked
        tmp = root / f".{final.name}-{secrets.token_hex(5)}"
        lock_path = tmp.with_name(tmp.name + ".lock")
        if tmp.exists() or lock_path.exists():
            continue
        lock = _try_lock(lock_path, create=True)
        if lock is None and fcntl is not None:
            continue
        try:
            tmp.mkdir()
        except FileExistsError:
            if lock is not None:
                lock.close()
            continue
        break
    try:
        generate_synthetic(tmp, config, progress=progress)
        (tmp / _MARKER).write_text(json.dumps(config.to_dict(), sort_keys=True), encoding="utf-8")
        if final.exists() and not _marker_matches(final, config):
            shutil.rmtree(final)  # stale or foreign content under our cache name
        try:
            os.rename(tmp, final)
        except OSError:
            if not _marker_matches(final, config):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        lock_path.unlink(missing_ok=True)
        if lock is not None:
            lock.close()
    return final
