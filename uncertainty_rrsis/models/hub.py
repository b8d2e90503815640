"""Checkpoint folders on the Hugging Face Hub.

A checkpoint folder holds ``config.json``, ``model.safetensors``, the model card ``README.md`` and,
when training wrote it, ``tokenizer/``. A model repository on the Hub holds exactly that folder, so
loading from the Hub is: resolve the id to a local copy of the folder, then load the folder.

* :func:`resolve_pretrained` turns a local folder or a Hub id (``"org/name"``) into a local folder.
  Downloads go through ``huggingface_hub``'s cache (``~/.cache/huggingface/hub``, or ``HF_HUB_CACHE``
  / ``cache_dir``), so a later call, or one with ``HF_HUB_OFFLINE=1`` or ``local_files_only=True``,
  needs no network.
* :func:`push_to_hub` uploads a folder as one commit, replacing the checkpoint files a repository
  already holds (other files in the repository are left alone).

``huggingface_hub``'s ``PyTorchModelHubMixin`` is not used: it writes its own ``config.json`` from
the constructor's arguments and its own card, while this folder keeps a versioned config, a
``tokenizer/`` subfolder and a strict load report. The download and upload helpers it is built on
(``snapshot_download``, ``HfApi.upload_folder``) are used directly instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .._version import __version__

__all__ = ["CHECKPOINT_FILES", "is_hub_id", "push_to_hub", "resolve_pretrained"]

#: The files of a checkpoint folder, as ``huggingface_hub`` patterns (what a download fetches and
#: what an upload replaces).
CHECKPOINT_FILES = ("config.json", "model.safetensors", "README.md", "tokenizer/*")

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")


def is_hub_id(name: str) -> bool:
    """Whether ``name`` has the form of a Hub model id (``name`` or ``org/name``, no ``..``)."""
    return bool(_HUB_ID.fullmatch(name)) and ".." not in name and not name.endswith((".", "-"))


def resolve_pretrained(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: bool | str | None = None,
    force_download: bool = False,
    caller: str = "from_pretrained",
) -> Path:
    """The local checkpoint folder for a folder path or a Hub model id.

    An existing path is returned as it is (the Hub is never asked). Anything else that has the form
    of a Hub id is downloaded into (or found in) the Hub cache: only the checkpoint files
    (:data:`CHECKPOINT_FILES`).

    Args:
        name_or_path: a checkpoint folder, or a Hub model id such as ``"org/name"``.
        revision: a branch, tag or commit of the Hub repository (default: ``main``).
        cache_dir: the Hub cache to use instead of the default one.
        local_files_only: never reach the network: the id must be in the cache.
        token: the Hub token for private or gated repositories (default: the one ``hf auth login``
            stored, or ``HF_TOKEN``); ``False`` sends none.
        force_download: download again even when the cache has the files.
        caller: the name the error messages start with.

    Raises:
        FileNotFoundError: a path that does not exist and is no Hub id; an id that is not in the
            cache while the Hub cannot be reached (offline); a repository without the checkpoint
            files.
        OSError: the Hub has no such model (or it is private or gated and no valid token was
            given), or no such revision.
        ImportError: ``huggingface_hub`` is not installed.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    name = str(name_or_path)
    if isinstance(name_or_path, Path) or not is_hub_id(name):
        raise FileNotFoundError(
            f"{caller}: {name} does not exist; expected a checkpoint folder (config.json and model.safetensors, as "
            "save_pretrained and training write them) or a Hugging Face Hub model id such as 'org/name'."
        )
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as err:
        raise ImportError(
            f"{caller}: {name} is not a local folder, and loading it from the Hugging Face Hub needs huggingface_hub: "
            "pip install 'uncertainty-rrsis[models]'."
        ) from err
    where = f" (revision {revision!r})" if revision else ""
    try:
        folder = Path(snapshot_download(
            name, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token,
            force_download=force_download, allow_patterns=list(CHECKPOINT_FILES),
            library_name="uncertainty-rrsis", library_version=__version__,
        ))
    except LocalEntryNotFoundError as err:
        raise FileNotFoundError(
            f"{caller}: {name}{where} is not a local folder and not in the Hub cache, and the Hub was not asked "
            "(HF_HUB_OFFLINE=1, local_files_only=True, or no network). Download it once while online "
            f"(`hf download {name}`, or this call without local_files_only), or give the checkpoint folder's path."
        ) from err
    except GatedRepoError as err:
        raise OSError(
            f"{caller}: the Hub model {name} is gated: accept its conditions on its Hub page, then log in "
            "(`hf auth login`) or pass token=."
        ) from err
    except RepositoryNotFoundError as err:
        raise OSError(
            f"{caller}: {name} is neither a local folder nor a model on the Hugging Face Hub (or it is private: log "
            "in with `hf auth login` or pass token=). Check the path or the id."
        ) from err
    except RevisionNotFoundError as err:
        raise OSError(f"{caller}: the Hub model {name} has no revision {revision!r}.") from err
    missing = [f for f in CHECKPOINT_FILES[:2] if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{caller}: the Hub model {name}{where} has no {' or '.join(missing)}: it is not an uncertainty-rrsis "
            "checkpoint (save_pretrained or push_to_hub writes one)."
        )
    return folder


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    token: bool | str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
) -> Any:
    """Upload a checkpoint folder to the Hub model repository ``repo_id`` as one commit.

    The repository is created when missing. The folder's files replace the checkpoint files the
    repository holds (a stale ``tokenizer/`` file is deleted); other files are left alone.

    Args:
        folder: a checkpoint folder (``config.json`` and ``model.safetensors``, as ``save_pretrained``
            and training write them).
        repo_id: ``"org/name"`` or ``"name"`` (under the logged-in user).
        token: the Hub token (default: the stored one or ``HF_TOKEN``).
        private: create the repository private (only used when it does not exist yet).
        revision: the branch to commit to (default: ``main``).
        commit_message: the commit's title.
        create_pr: open a pull request instead of committing to the branch.

    Returns:
        ``huggingface_hub``'s ``CommitInfo`` (its ``commit_url``, ``oid``, and ``pr_url`` with
        ``create_pr``).

    Raises:
        FileNotFoundError: ``folder`` is not a checkpoint folder.
        ValueError: ``repo_id`` is not a Hub id.
    """
    folder = Path(folder)
    missing = [f for f in CHECKPOINT_FILES[:2] if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"push_to_hub: {folder} has no {' or '.join(missing)}; expected a checkpoint folder (save_pretrained and "
            "training write one, e.g. runs/<name>/checkpoints/best)."
        )
    if not is_hub_id(repo_id):
        raise ValueError(f"push_to_hub: expected a Hub repository id such as 'org/name', got {repo_id!r}")
    from huggingface_hub import HfApi

    api = HfApi(token=token, library_name="uncertainty-rrsis", library_version=__version__)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id, repo_type="model", folder_path=folder, revision=revision, create_pr=create_pr,
        commit_message=commit_message or "Upload an uncertainty-rrsis checkpoint",
        allow_patterns=list(CHECKPOINT_FILES), delete_patterns=list(CHECKPOINT_FILES),
    )
