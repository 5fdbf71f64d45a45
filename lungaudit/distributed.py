"""Rank and world helpers for runs under ``torchrun``: who am I, which device, and agreeing on things.

``torchrun`` (``python -m torch.distributed.run``) starts one process per device and tells each its
place through the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...). The
process group is created lazily, the first time a library function needs it, so the same
``lungaudit train``/``audit`` command and the same Python API work unchanged in one process (where
nothing here ever touches ``torch.distributed``) and under ``torchrun``.

Conventions every caller follows:

* **rank 0 writes shared files** (run folder, checkpoints, merged audit); other ranks receive what
  they need from it by :func:`broadcast`, never by reading a file it just wrote (on a network file
  system a renamed file can stay invisible to another node for seconds).
* **errors are agreed** (:func:`agree`): a rank that cannot go on tells the others, so every rank
  raises the same ``ValueError`` instead of the healthy ones waiting in a collective until timeout.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import torch

from lungaudit.device import resolve_device

T = TypeVar("T")

TIMEOUT_ENV = "LUNGAUDIT_DIST_TIMEOUT_MIN"
# Rank 0 alone evaluates and tests while the others wait in a collective, and rank 0 alone merges a
# sharded audit: the default 10-minute NCCL timeout would kill a long test pass on a large set.
DEFAULT_TIMEOUT_MIN = 120.0


@dataclass(frozen=True)
class World:
    """This process's place: ``rank`` of ``size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def env_world() -> World:
    """The world ``torchrun`` describes in the environment (one process when it describes none)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ValueError("RANK/WORLD_SIZE/LOCAL_RANK must be integers (as torchrun sets them)") from None
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK={rank} is not in a world of WORLD_SIZE={size}")
    return World(rank, size, local)


def rank_device(name: str = "auto") -> torch.device:
    """``name`` resolved, and under torchrun on CUDA pinned to this process's GPU (``cuda:LOCAL_RANK``).

    An explicit ``cuda:N`` is kept: the user placed the processes themselves.
    """
    dev = resolve_device(name)
    world = env_world()
    if dev.type == "cuda" and dev.index is None and world.distributed:
        gpus = torch.cuda.device_count()
        if world.local_rank >= gpus:  # NCCL refuses two ranks on one GPU, with a far less clear message
            raise ValueError(f"torchrun started local rank {world.local_rank} on a machine with {gpus} GPU(s); "
                             f"use --nproc_per_node {gpus} (one process per GPU)")
        dev = torch.device("cuda", world.local_rank)
    return dev


def init(device: torch.device) -> World:
    """Join the process group (NCCL for CUDA, gloo for CPU) once; a no-op in a single process."""
    import torch.distributed as dist

    world = env_world()
    if not world.distributed or dist.is_initialized():
        return world
    if device.type == "cuda":
        torch.cuda.set_device(device)
    minutes = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_MIN))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=dt.timedelta(minutes=minutes))
    atexit.register(_destroy)
    return world


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """Whether a process group of more than one process is up (what the collectives below need)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> World:
    """The current world: the process group's when one is up, else one process."""
    return env_world() if active() else World()


def broadcast(obj: T, src: int = 0) -> T:
    """``obj`` as rank ``src`` has it, on every rank (any picklable object; tensors travel on CPU)."""
    if not active():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def main_decides(fn: Callable[[], T]) -> T:
    """``fn()`` computed on rank 0 only and handed to every rank (e.g. the next free run folder)."""
    return broadcast(fn() if world().is_main else None)


def gather(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()


def agree(error: BaseException | None) -> None:
    """Raise on every rank if any rank failed: the failing rank re-raises its own error, the others a
    ``ValueError`` quoting the first failure (so every process exits the same way, none hangs)."""
    errors = gather(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if failed:
        rank, message = failed[0]
        raise ValueError(f"rank {rank} failed: {message}")


def all_mean(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the ranks (every rank must pass the same keys)."""
    if not active() or not values:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    t = (t / dist.get_world_size()).cpu()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def shard(items: Sequence[T], rank: int, size: int) -> list[T]:
    """Rank ``rank``'s part of ``items``: item ``i`` goes to rank ``i % size`` (disjoint, deterministic,
    and balanced to within one item whatever the order of the data)."""
    return list(items[rank::size])


__all__ = [
    "World", "active", "agree", "all_mean", "barrier", "broadcast", "env_world", "gather", "init", "main_decides",
    "rank_device", "shard", "world",
]
