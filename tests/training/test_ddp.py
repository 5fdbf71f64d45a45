"""DistributedDataParallel training: the rank sampler, a spawned 2-rank gloo world, and torchrun end to end."""

import csv
import json

import numpy as np
import pytest
import torch

from dist_helpers import spawn_world, torchrun, train_toy
from lungaudit.runs.checkpoint import load_checkpoint
from lungaudit.training.ddp import RankSampler, check_batch
from lungaudit.training.sampling import EpochSampler
from pipeline_helpers import tiny_config


@pytest.mark.parametrize("balanced,min_steps", [(False, 0), (True, 5)])
def test_rank_shares_make_up_each_global_batch(balanced, min_steps):
    """Step k of the ranks together takes exactly the items of step k of one process."""
    labels = np.r_[np.zeros(15, int), np.ones(5, int)]
    base = EpochSampler(labels, 8, min_steps, balanced, seed=3)
    base.set_epoch(2)
    order = list(base)
    shares = []
    for rank in range(2):
        s = RankSampler(EpochSampler(labels, 8, min_steps, balanced, seed=3), rank, 2)
        s.set_epoch(2)
        shares.append(list(s))
    assert len(shares[0]) == len(shares[1]) == len(order) // 2
    for k in range(len(order) // 8):
        ranks_step = shares[0][4 * k : 4 * k + 4] + shares[1][4 * k : 4 * k + 4]
        assert sorted(ranks_step) == sorted(order[8 * k : 8 * k + 8])


def test_rank_sampler_pads_so_every_rank_takes_as_many_steps():
    s = [RankSampler(EpochSampler(np.zeros(7, int), 2, 0, False, 0), r, 3) for r in range(3)]
    assert [len(list(x)) for x in s] == [3, 3, 3]
    assert set().union(*map(set, map(list, s))) == set(range(7))


def test_a_global_batch_must_split_evenly():
    check_batch(8, 2, "cls.batch_size")
    with pytest.raises(ValueError, match="cls.batch_size=9 is the global batch"):
        check_batch(9, 2, "cls.batch_size")


def _state(path):
    return load_checkpoint(path).model_state


def test_two_ranks_follow_one_process_and_resume_from_rank0s_checkpoint(tmp_path):
    """A BatchNorm-free stage trained by 2 gloo ranks, crashed after epoch 1 and resumed, ends where one
    uninterrupted process ends (up to float summation order); only rank 0 wrote."""
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    train_toy(single)
    spawn_world(train_toy, (ddp, False, 1))
    assert load_checkpoint(ddp / "cls_last.pt").epoch == 1
    spawn_world(train_toy, (ddp, True))
    a, b = _state(single / "cls_last.pt"), _state(ddp / "cls_last.pt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    rows_a = list(csv.DictReader(open(single / "metrics.csv")))
    rows_b = list(csv.DictReader(open(ddp / "metrics.csv")))
    assert [r["epoch"] for r in rows_b] == [r["epoch"] for r in rows_a] == ["1", "2", "3"]
    for ra, rb in zip(rows_a, rows_b):
        assert float(rb["train_loss"]) == pytest.approx(float(ra["train_loss"]), rel=1e-4)
        assert float(rb["val_score"]) == pytest.approx(float(ra["val_score"]), rel=1e-4)


# Knobs that keep a 2-epoch run on 20 images comparable: no augmentation draws (the ranks augment from
# other streams than one process does) and a small step (BatchNorm sees half batches per rank).
COMPARABLE = ("cls.lr=0.0002", "cls.rotate_deg=0", "cls.scale=0", "cls.brightness=0", "cls.contrast=0")


def _rows(run_dir):
    return {(r["stage"], r["epoch"]): r for r in csv.DictReader(open(run_dir / "metrics.csv"))}


def test_torchrun_trains_both_stages_like_one_process(tiny_synth, tmp_path):
    from lungaudit.config import save_config
    from lungaudit.training.pipeline import train

    cfg = tiny_config(tiny_synth, tmp_path / "one", *COMPARABLE)
    ref = train(cfg)
    save_config(cfg, tmp_path / "cfg.yaml")
    proc = torchrun(["train", "--config", str(tmp_path / "cfg.yaml"), "--name", "ddp", "--set", f"project={tmp_path / 'two'}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted((tmp_path / "two" / "train").iterdir())
    assert [p.name for p in runs] == ["ddp"]  # the ranks agreed on one run folder
    run = runs[0]
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in ref.run_dir.iterdir())
    a, b = _rows(ref.run_dir), _rows(run)
    assert a.keys() == b.keys() == {("seg", "1"), ("cls", "1"), ("cls", "2")}
    for key in a:
        # the same images every step: the masking draws, seeded per (epoch, item), agree exactly
        assert b[key]["train_masked_frac"] == a[key]["train_masked_frac"]
        assert float(b[key]["train_loss"]) == pytest.approx(float(a[key]["train_loss"]), rel=0.2)
    assert float(b[("seg", "1")]["val_dice"]) == pytest.approx(float(a[("seg", "1")]["val_dice"]), abs=0.05)
    tm = json.loads((run / "test_metrics.json").read_text())
    assert tm["world_size"] == 2 and tm["classification"]["full"]["n"] == ref.test_metrics["classification"]["full"]["n"]
    assert load_checkpoint(run / "weights" / "cls_last.pt").epoch == 2

