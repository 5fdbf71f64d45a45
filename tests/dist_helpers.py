"""Helpers for the multi-process tests: ``torchrun`` in a subprocess, and a spawned gloo world."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]


def torchrun(args: list[str], nproc: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m lungaudit -- ARGS`` from the checkout.

    ``--standalone`` rendezvouses on a free local port; the ``--`` keeps torchrun's own parser off
    lungaudit's options (it would take ``--run`` for its ``--run-path``). One thread per process: two
    processes on a 2-core CI machine.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "lungaudit", "--", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _enter(rank: int, size: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    try:
        fn(*args)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def spawn_world(fn: Callable[..., Any], args: tuple, size: int = 2) -> None:
    """Run ``fn(*args)`` in ``size`` fresh processes that form a gloo world the way torchrun's would."""
    import torch.multiprocessing as mp

    mp.spawn(_enter, args=(size, free_port(), fn, args), nprocs=size, join=True)


# ---------------------------------------------------------------- a toy stage for the epoch loop


def toy_stage(seed: int = 0, epochs: int = 3):
    """A BatchNorm-free conv net on 20 random images, with a stretched, class-balanced epoch.

    Without BatchNorm and augmentation, N ranks each taking batch/N of the same global order must
    follow the single-process trajectory up to float summation order: any slip in the sampler, the
    batch split, the gradient averaging or the resume shows as a different result.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    from lungaudit.training.loop import EpochSeededDataset, Stage, train_loader
    from lungaudit.training.sampling import EpochSampler

    class Toy(EpochSeededDataset):
        def __init__(self, images, labels):
            self.labels = labels
            super().__init__(images, None, seed)

        def __getitem__(self, v):
            i = v % len(self.images)
            return torch.from_numpy(self.images[i])[None], int(self.labels[i])

    rng = np.random.default_rng(seed)
    images = rng.random((20, 16, 16), dtype=np.float32)
    labels = np.r_[np.zeros(14, int), np.ones(6, int)]
    images[labels == 1, 4:12, 4:12] += 0.5
    dataset = Toy(images, labels)
    sampler = EpochSampler(labels, 8, 4, True, seed)  # 4 steps of 8 from 20 images, classes balanced
    loader = train_loader(dataset, 8, seed, torch.device("cpu"), sampler=sampler)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    val_x, val_y = torch.from_numpy(images[:, None]), torch.from_numpy(labels)

    def loss_fn(m, batch, dev):
        return F.cross_entropy(m(batch[0]), batch[1]), {}

    @torch.no_grad()
    def evaluate(m):
        return {"score": -float(F.cross_entropy(m(val_x), val_y))}

    return Stage(kind="cls", model=model, config={"arch": "toy"}, model_keys=("arch",), class_names=["a", "b"], loader=loader,
                 loss_fn=loss_fn, evaluate=evaluate, epochs=epochs, lr=0.05, weight_decay=0.01, patience=0)  # fmt: skip


def train_toy(weights_dir: Path, resume: bool = False, interrupt_after: int | None = None) -> None:
    """The toy stage through ``run_stage`` (under a spawned world: on every rank)."""
    import torch

    from lungaudit.distributed import init
    from lungaudit.runs.rundir import MetricsLog
    from lungaudit.training.callbacks import TrainCallback
    from lungaudit.training.loop import run_stage

    init(torch.device("cpu"))
    metrics = MetricsLog(Path(weights_dir) / "metrics.csv")
    try:
        run_stage(toy_stage(), Path(weights_dir), metrics, torch.device("cpu"), TrainCallback(), resume, interrupt_after)
    except KeyboardInterrupt:
        pass  # the simulated crash
