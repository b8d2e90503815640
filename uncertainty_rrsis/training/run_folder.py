"""A run folder belongs to one run: the files a run leaves there, and who may write there next.

* :data:`RUN_MARKERS` / :func:`run_markers` -- the files that show a folder holds a run;
  :func:`remove_run_files` -- what ``--overwrite`` deletes (the run's files, nothing else).
* :func:`claim_run_folder` -- the policy, applied by rank 0 before a run writes anything: take the
  folder's lock (:class:`~.lock.RunLock`), refuse a folder that holds a run unless ``resume``
  (whose settings that change the result must match the run's, unless ``resume_with_changes``)
  or ``overwrite`` (which deletes the previous run's files first).
* :func:`settings_changes` -- the differences between a run's saved settings and new ones that
  change what the run computes.

:class:`~.lock.RunFolderError` is the error of all of them: its message names the folder, says
what was found and what to do.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .checkpoint import find_checkpoint
from .config import RESUME_MAY_CHANGE, RESUME_MAY_CHANGE_MODEL, TrainConfig
from .distributed import DistEnv, stop_together
from .lock import RunFolderError, RunLock
from .run_log import RunLog

__all__ = [
    "RUN_MARKERS",
    "RUN_OUTPUTS",
    "run_markers",
    "remove_run_files",
    "claim_run_folder",
    "settings_changes",
    "format_changes",
    "way_out",
]

#: Files and folders that show a folder holds a run (starting a new run there needs --resume or --overwrite).
RUN_MARKERS: tuple[str, ...] = ("config.json", "log.jsonl", "metrics.json", "checkpoints")

#: Everything a run (and ``examples/evaluate.py`` on its checkpoints) writes into its folder:
#: what ``--overwrite`` removes. Other files in the folder are left alone.
RUN_OUTPUTS: tuple[str, ...] = RUN_MARKERS + ("panels", "tensorboard", "wandb", "eval", "config.json.tmp",
                                              "metrics.json.tmp")


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
    ``preset`` and ``model`` overrides that built it. A setting the saved side does not have is not
    compared.
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


# ---------------------------------------------------------------------------------------------- the policy


@contextlib.contextmanager
def claim_run_folder(config: TrainConfig, model_config: Mapping[str, Any], *, env: DistEnv,
                     log: RunLog) -> Iterator[dict[str, tuple[Any, Any]]]:
    """Hold the lock of ``config.output_dir`` (rank 0) while the run writes there; check the folder first.

    Every rank enters; rank 0 takes the lock and applies the policy of the module docstring, and a
    refusal raises on every rank (:func:`~.distributed.stop_together`). Yields the setting changes
    a ``resume_with_changes`` accepted, ``name: (saved, new)`` (empty on the other ranks).

    Args:
        config: the run's settings.
        model_config: the run's model config as a dict (``CroBIMUConfig.to_dict()``).
        env: the distributed layout.
        log: where rank 0 prints what it did (a taken-over lock, deleted files, accepted changes).
    """
    out = Path(config.output_dir)
    lock: RunLock | None = None
    failure: BaseException | None = None
    accepted: dict[str, tuple[Any, Any]] = {}
    if env.is_main:
        try:
            lock = RunLock.acquire(out)
            if lock.note:
                log.print(lock.note)
            accepted = _check_run_folder(config, model_config, log)
        except BaseException as err:  # noqa: BLE001 - every rank must hear of it, or they wait for rank 0
            failure = err
            if lock is not None:
                lock.release()
    stop_together(env, failure, f"start the run in {out}")
    try:
        yield accepted
    finally:
        if lock is not None:
            lock.release()


def _check_run_folder(config: TrainConfig, model_config: Mapping[str, Any], log: RunLog) -> dict[str, tuple[Any, Any]]:
    """Rank 0, holding the lock: refuse a folder that holds a run (without resume / overwrite), clear it
    for ``overwrite``, compare the settings for ``resume``; returns the accepted setting changes."""
    out = Path(config.output_dir)
    if config.overwrite:
        removed = remove_run_files(out)
        if removed:
            log.print(f"--overwrite: deleted the previous run's {', '.join(removed)} in {out}")
        return {}
    if config.resume:
        return _compare_settings(config, model_config, log)
    found = run_markers(out)
    if found:
        listing = ", ".join(name + ("/" if (out / name).is_dir() else "") for name in found)
        if (out / "metrics.json").is_file():
            what = f"a finished run: its results are in {out / 'metrics.json'}"
        else:
            last = find_checkpoint(out / "checkpoints" / "last")
            what = "an unfinished run" + (f", resumable from {last}" if last is not None else "")
        raise RunFolderError(
            f"{out} already holds a run ({what}; found {listing}). A new run there would replace its "
            "checkpoints, log and metrics. To continue that run, add --resume; to delete it and start again, add "
            "--overwrite; or give the new run its own folder with --output-dir."
        )
    return {}


def _saved_settings(out: Path) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None, Path | None]:
    """``(train settings, model config, the file they came from)`` of the run in ``out``: its resumable
    checkpoint's, else its ``config.json``'s; Nones without either."""
    saved_train: Mapping[str, Any] | None = None
    saved_model: Mapping[str, Any] | None = None
    source: Path | None = None
    last = find_checkpoint(out / "checkpoints" / "last")
    if last is not None:
        try:
            info = json.loads((last / "trainer_state.json").read_text())
        except (ValueError, OSError) as err:
            raise RunFolderError(
                f"cannot resume the run in {out} from {last}: {last / 'trainer_state.json'} is truncated or "
                f"corrupt ({err}).\n{way_out(out, last)}") from err
        saved_train, saved_model = info.get("train_config"), info.get("model_config")
        source = last / "trainer_state.json"
    run_config = out / "config.json"
    if run_config.is_file() and (saved_train is None or saved_model is None):
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(run_config.read_text())
            if saved_train is None and isinstance(data.get("train"), Mapping):
                saved_train, source = data["train"], run_config
            if saved_model is None and isinstance(data.get("model"), Mapping):
                saved_model = data["model"]
    return saved_train, saved_model, source


def _compare_settings(config: TrainConfig, model_config: Mapping[str, Any], log: RunLog) -> dict[str, tuple[Any, Any]]:
    """The run's saved settings against this run's: refused unless equal or ``resume_with_changes``."""
    out = Path(config.output_dir)
    saved_train, saved_model, source = _saved_settings(out)
    if saved_train is None:
        return {}
    changes = settings_changes(saved_train, config.to_dict(), saved_model=saved_model, new_model=model_config,
                               free=RESUME_MAY_CHANGE, free_model=RESUME_MAY_CHANGE_MODEL)
    if not changes:
        return {}
    listing = format_changes(changes)
    run_config = out / "config.json"
    if not config.resume_with_changes:
        raise RunFolderError(
            f"--resume: settings that change the result differ from those of the run in {out} (saved in "
            f"{source}):\n{listing}\nA run continued with them would belong to neither setting. Resume with the "
            f"saved values (the run started with those in {run_config}: --config {run_config} --resume), give the "
            "new settings their own folder with --output-dir, or add --resume-with-changes to continue with them "
            "anyway (the changes are recorded in log.jsonl)."
        )
    log.print(f"--resume-with-changes: the run in {out} continues with these changes (recorded in log.jsonl):\n"
              f"{listing}")
    return changes


def way_out(out: Path, broken: Path) -> str:
    """What to do when the resumable checkpoint ``broken`` of the run in ``out`` cannot be read."""
    best = find_checkpoint(out / "checkpoints" / "best")
    text = ""
    if best is not None and best != broken:
        with contextlib.suppress(ValueError, OSError, KeyError):
            step = json.loads((best / "trainer_state.json").read_text())["step"]
            text = (f"{best} (step {step}) is also a complete training checkpoint: copy it over {broken} to "
                    "continue from that step, or ")
    text += ("copy the checkpoint folder again from a backup; or start the run again with --overwrite (which "
             f"deletes the run's files in {out})")
    return text[0].upper() + text[1:] + "."
