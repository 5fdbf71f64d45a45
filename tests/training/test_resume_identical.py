"""``train --resume`` after a kill reproduces the uninterrupted run bit for bit (CPU), and run folders
respect the umask.

Issue 12, point 9: the shuffle generator used to be seeded once per loader, so a run resumed at epoch k
saw epoch 0's order again. Point 10: outputs were created 0600 whatever the umask.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from lungaudit.training.loop import EpochShuffleSampler
from lungaudit.training.pipeline import train
from pipeline_helpers import tiny_config

EPOCHS = "cls.epochs=2"


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model_state"]


def _under_umask(mask: int, fn):
    old = os.umask(mask)
    try:
        return fn()
    finally:
        os.umask(old)


def _modes(folder: Path) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {"file": set(), "dir": set()}
    for p in [folder, *folder.rglob("*")]:
        out["dir" if p.is_dir() else "file"].add(stat.S_IMODE(p.stat().st_mode))
    return out


@pytest.fixture(scope="module")
def straight_and_resumed(tiny_synth, tiny_run, tmp_path_factory):
    """The same classifier trained straight through (umask 022) and killed after epoch 1 then resumed
    (umask 002); both reuse tiny_run's U-Net (--seg-from), so only the classifier trains."""
    base = tmp_path_factory.mktemp("resume")
    cfg = tiny_config(tiny_synth, base, EPOCHS)
    kw = {"stage": "cls", "seg_from": tiny_run.run_dir}
    straight = _under_umask(0o022, lambda: train(cfg, run_dir=base / "train" / "straight", **kw)).run_dir

    def interrupted_then_resumed() -> Path:
        run_dir = base / "train" / "resumed"
        with pytest.raises(KeyboardInterrupt):
            train(cfg, run_dir=run_dir, interrupt_after=("cls", 1), **kw)
        torch.manual_seed(12345)  # a resumed process starts from whatever global RNG state it has
        return train(cfg, run_dir=run_dir, resume=True, **kw).run_dir

    return straight, _under_umask(0o002, interrupted_then_resumed)


def test_resumed_run_is_bit_identical(straight_and_resumed):
    straight, resumed = straight_and_resumed
    for name in ("cls_last.pt", "cls_best.pt"):
        a, b = _state(straight / "weights" / name), _state(resumed / "weights" / name)
        assert a.keys() == b.keys()
        differing = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differing, f"{name}: {len(differing)} tensors differ, e.g. {differing[:3]}"
    loss = lambda d: [r.split(",")[2] for r in (d / "metrics.csv").read_text().splitlines()[1:]]  # noqa: E731
    assert loss(straight) == loss(resumed)


def test_epoch_order_depends_on_seed_and_epoch_only():
    a, b = EpochShuffleSampler(50, seed=7), EpochShuffleSampler(50, seed=7)
    a.set_epoch(3)
    for e in range(4):  # b walks through the earlier epochs first, as an uninterrupted run does
        b.set_epoch(e)
        order = list(b)
    assert order == list(a) and sorted(order) == list(range(50))
    a.set_epoch(4)
    assert list(a) != order


@pytest.mark.parametrize(("run", "mask"), [(0, 0o022), (1, 0o002)])
def test_run_folder_respects_the_umask(straight_and_resumed, run, mask):
    modes = _modes(straight_and_resumed[run])
    assert modes["file"] == {0o666 & ~mask}, {oct(m) for m in modes["file"]}
    assert modes["dir"] == {0o777 & ~mask}, {oct(m) for m in modes["dir"]}
