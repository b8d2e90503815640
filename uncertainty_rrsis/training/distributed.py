"""Distributed helpers: one script for a plain process, ``torchrun`` on one node, or many nodes.

The rank layout comes from the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) as
``torchrun`` sets it; there is no ``--local_rank`` argument. Without those variables the
process is a world of one and nothing is initialised.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from .lock import RunFolderError

__all__ = [
    "DistEnv",
    "init_distributed",
    "cleanup_distributed",
    "main_guard",
    "ShardedSampler",
    "EpochSampler",
    "per_rank_batch",
    "broadcast_from_main",
    "broadcast_state",
    "stop_together",
    "read_on_main",
]

_T = TypeVar("_T")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and prints (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.barrier()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"environment variable {name} must be an integer; got {value!r}") from err


def init_distributed(
    *, device: str = "auto", backend: str | None = None, init_method: str | None = None, timeout_minutes: int = 30
) -> DistEnv:
    """Read the rank layout from the environment and initialise the process group if needed.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cuda"`` or ``"cpu"``.
        backend: ``None`` picks NCCL on CUDA and gloo on CPU.
        init_method: rendezvous URL; ``None`` uses ``env://`` (``MASTER_ADDR``/``MASTER_PORT``, set by
            ``torchrun``). A ``file://`` URL needs no port (handy for tests).
        timeout_minutes: collective timeout.

    Returns:
        The :class:`DistEnv` of this process. On CUDA the process uses ``cuda:LOCAL_RANK``.
    """
    rank = _env_int("RANK", 0)
    world = _env_int("WORLD_SIZE", 1)
    local = _env_int("LOCAL_RANK", 0)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was requested but torch.cuda.is_available() is False")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device(device)
    if world > 1:
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world,
                                    timeout=timedelta(minutes=timeout_minutes))
    else:
        backend = None
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=dev, backend=backend)


def cleanup_distributed() -> None:
    """Destroy the process group if one was created."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main_guard(fn: Callable[[], _T]) -> _T:
    """Run ``fn`` (a script's body) and always tear the process group down afterwards, also on errors.

    ``fn`` runs under torchelastic's ``record``: under ``torchrun``, an exception on any rank is
    written, with its traceback, to the error file torchrun reads, so its summary names the failing
    rank and shows the cause (without ``torchrun`` nothing changes).
    """
    from torch.distributed.elastic.multiprocessing.errors import record

    try:
        return cast("_T", record(fn)())  # record() is typed as possibly returning None
    finally:
        cleanup_distributed()
        sys.stdout.flush()


def broadcast_from_main(env: DistEnv, obj: _T) -> _T:
    """``obj`` of rank 0 on every rank (one ``broadcast_object_list``; the object itself without DDP).

    Every rank must call it: the other ranks wait there for rank 0, which makes it the barrier
    behind which rank 0 decides something (takes a lock, checks a folder) for all of them.
    """
    if not (env.distributed and dist.is_initialized()):
        return obj
    box = [obj if env.is_main else None]
    dist.broadcast_object_list(box, src=0, device=env.device if env.device.type == "cuda" else None)
    return box[0]  # type: ignore[return-value]


class _Slot:
    """Stands for the ``index``-th tensor of a state while its skeleton travels without the tensors."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self):
        return (_Slot, (self.index,))


def _strip(obj, tensors: list[torch.Tensor]):
    """``obj`` with every tensor replaced by a :class:`_Slot` (the tensors appended to ``tensors``)."""
    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
        return _Slot(len(tensors) - 1)
    if isinstance(obj, dict):
        return type(obj)((key, _strip(value, tensors)) for key, value in obj.items())
    if isinstance(obj, list):
        return [_strip(value, tensors) for value in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_strip(value, tensors) for value in obj)
    return obj


def _fill(obj, tensors: Sequence[torch.Tensor]):
    """The inverse of :func:`_strip`."""
    if isinstance(obj, _Slot):
        return tensors[obj.index]
    if isinstance(obj, dict):
        return type(obj)((key, _fill(value, tensors)) for key, value in obj.items())
    if isinstance(obj, list):
        return [_fill(value, tensors) for value in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_fill(value, tensors) for value in obj)
    return obj


def broadcast_state(env: DistEnv, obj: _T, *, chunk_bytes: int = 1 << 28) -> _T:
    """``obj`` of rank 0 on every rank, for states that hold tensors (weights, optimizer states).

    Only rank 0 needs ``obj`` (the others pass anything, e.g. None): so a checkpoint is read from
    disk on rank 0 alone, and nodes without a shared file system resume from it. The structure
    (dicts, lists, tuples, numbers, strings) travels in one ``broadcast_object_list``; the tensors
    travel packed by dtype into buffers of at most ``chunk_bytes`` through ``broadcast`` (on the
    GPU with NCCL, on the CPU with gloo), not pickled. Every rank gets CPU tensors with rank 0's
    dtypes, shapes and values (rank 0 keeps its own objects). Every rank must call it.
    """
    if not (env.distributed and dist.is_initialized()):
        return obj
    tensors: list[torch.Tensor] = []
    box: list = [None]
    if env.is_main:
        skeleton = _strip(obj, tensors)
        box = [(skeleton, [(t.dtype, tuple(t.shape)) for t in tensors])]
    object_device = env.device if env.device.type == "cuda" else None
    dist.broadcast_object_list(box, src=0, device=object_device)
    skeleton, meta = box[0]
    wire_device = env.device if env.backend == "nccl" else torch.device("cpu")
    received: list[torch.Tensor | None] = list(tensors) if env.is_main else [None] * len(meta)
    for dtype, indices in _chunks(meta, chunk_bytes):
        wire = torch.uint8 if dtype == torch.bool else dtype  # gloo and NCCL both carry bytes
        sizes = [math.prod(meta[i][1]) for i in indices]
        if env.is_main:
            buffer = torch.cat([tensors[i].detach().reshape(-1).to(device=wire_device, dtype=wire) for i in indices])
        else:
            buffer = torch.empty(sum(sizes), dtype=wire, device=wire_device)
        dist.broadcast(buffer, src=0)
        if env.is_main:
            continue
        offset = 0
        for i, size in zip(indices, sizes, strict=True):
            piece = buffer[offset:offset + size].reshape(meta[i][1])
            # each tensor owns its memory: a copy off the GPU or into another dtype, else a clone
            copied = wire_device.type != "cpu" or wire != dtype
            received[i] = piece.to(device="cpu", dtype=dtype) if copied else piece.clone()
            offset += size
    return _fill(skeleton, received) if not env.is_main else obj  # type: ignore[arg-type]


def _chunks(meta: Sequence[tuple[torch.dtype, tuple[int, ...]]], chunk_bytes: int
            ) -> list[tuple[torch.dtype, list[int]]]:
    """Group tensor indices by dtype into buffers of at most ``chunk_bytes`` (a larger tensor alone);
    the same plan on every rank, from the metadata alone."""
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, (dtype, _) in enumerate(meta):
        by_dtype.setdefault(dtype, []).append(i)
    plan: list[tuple[torch.dtype, list[int]]] = []
    for dtype, indices in by_dtype.items():
        itemsize = torch.empty((), dtype=dtype).element_size()
        current: list[int] = []
        used = 0
        for i in indices:
            size = math.prod(meta[i][1]) * itemsize
            if current and used + size > chunk_bytes:
                plan.append((dtype, current))
                current, used = [], 0
            current.append(i)
            used += size
        if current:
            plan.append((dtype, current))
    return plan


def per_rank_batch(total: int, world_size: int, accumulation: int = 1) -> int:
    """Split the **total** batch size over ranks and accumulation steps, or explain why it can't be."""
    parts = world_size * accumulation
    if total < parts or total % parts != 0:
        raise ValueError(
            f"--batch-size is the total batch over all processes and accumulation steps; {total} does not divide "
            f"by world_size ({world_size}) x grad_accumulation ({accumulation}) = {parts}. "
            f"Choose a multiple of {parts}."
        )
    return total // parts


class ShardedSampler(Sampler[int]):
    """Evaluation sampler: rank ``r`` of ``w`` takes indices ``r, r + w, r + 2w, ...``, no padding.

    Unlike ``DistributedSampler`` it never repeats a sample to even out the shards, so every
    sample of the split is counted exactly once after the metrics are summed over ranks.
    """

    def __init__(self, length: int, *, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.rank, self.world_size = int(length), int(rank), int(world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


class EpochSampler(Sampler[int]):
    """Training sampler: a permutation per epoch from ``(seed, epoch)``, sharded over ranks, resumable.

    Each epoch draws one permutation of the dataset, drops the tail that does not fill a whole
    global batch (``per_rank_batch * world_size``), and gives rank ``r`` every ``world_size``-th
    index. ``set_position(epoch, batches_done)`` skips the batches already trained, so a
    resumed run sees exactly the batches an uninterrupted run would.
    """

    def __init__(self, length: int, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.batch_size, self.seed = int(length), int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch, self.skip_batches = 0, 0
        if self.length == 0:
            raise ValueError("the training split is empty (0 samples): there is nothing to train on")
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"the training split has {self.length} samples, fewer than one global batch of "
                f"{self.batch_size * self.world_size} ({self.batch_size} per rank x {self.world_size} ranks); lower "
                "--batch-size or train on more samples."
            )

    @property
    def batches_per_epoch(self) -> int:
        return self.length // (self.batch_size * self.world_size)

    def set_position(self, epoch: int, batches_done: int = 0) -> None:
        self.epoch, self.skip_batches = int(epoch), int(batches_done)

    def epoch_indices(self, epoch: int) -> Sequence[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(self.length, generator=generator)
        used = self.batches_per_epoch * self.batch_size * self.world_size
        return order[:used][self.rank :: self.world_size].tolist()

    def __iter__(self) -> Iterator[int]:
        indices = self.epoch_indices(self.epoch)
        return iter(indices[self.skip_batches * self.batch_size :])

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip_batches) * self.batch_size


def stop_together(env: DistEnv, failure: BaseException | None, action: str) -> None:
    """Every rank hears whether rank 0 failed at ``action`` (``failure`` is rank 0's own error) and, if so,
    all stop: rank 0 re-raises its error, the others raise a :class:`~.lock.RunFolderError` naming it.

    Every rank must call it (it broadcasts from rank 0).
    """
    message = broadcast_from_main(env, None if failure is None else f"{type(failure).__name__}: {failure}")
    if message is None:
        return
    env.barrier()  # every rank holds the message before any rank stops and tears its group down
    if failure is not None:
        raise failure
    raise RunFolderError(f"rank 0 could not {action}, so rank {env.rank} stops too: {message}")


def read_on_main(env: DistEnv, read: Callable[[], _T], what: str) -> _T:
    """``read()`` on rank 0 alone, its result (tensors included) on every rank.

    Only rank 0 needs the run folder: the other ranks receive what it read
    (:func:`broadcast_state`), so nodes without a shared file system resume and evaluate from rank
    0's checkpoints. An error on rank 0 is raised there and, as a ``RunFolderError`` naming it, on
    every other rank.
    """
    result: Any = None
    failure: BaseException | None = None
    if env.is_main:
        try:
            result = read()
        except Exception as err:  # noqa: BLE001 - every rank must hear of it, or they wait for rank 0
            failure = err
    stop_together(env, failure, f"read {what}")
    return broadcast_state(env, result)
