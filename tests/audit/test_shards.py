"""The sharded audit under torchrun: merged outputs equal a single process's; a dead shard is resumed alone."""

import csv
import json

import pytest

import lungaudit as la
from dist_helpers import torchrun
from lungaudit.audit.shards import shard_dir, sharded_world_size
from lungaudit.audit.store import StoreError
from lungaudit.distributed import shard

FLOATS = ("prob_pred", "prob_masked", "prob_drop", "e_in", "e_in_tol", "e_out", "e_out_tol", "e_in_ratio", "lung_area")


def _rows(d):
    return list(csv.DictReader(open(d / "audit.csv")))


def _assert_rows_equal(got, want):
    assert [r["key"] for r in got] == [r["key"] for r in want]  # data-set order
    for a, b in zip(got, want):
        for col, value in b.items():
            if col in FLOATS or col.startswith("p_"):
                assert (a[col] == value) or float(a[col]) == pytest.approx(float(value), abs=1e-5), (a["key"], col)
            else:
                assert a[col] == value, (a["key"], col)


def _assert_summaries_equal(got, want):
    for key in ("counts", "class_names", "regions", "reasons", "e_in_histogram", "mean_outside_images", "dataset", "checkpoints"):
        assert got[key] == want[key], key
    for key in ("overall", "per_class", "per_source", "per_predicted_class", "metrics"):
        _assert_close(got[key], want[key], key)


def _assert_close(got, want, where):
    """Equal, floats up to 1e-6: the merge reads rows back from CSV (6 significant digits)."""
    if isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for k in want:
            _assert_close(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_close(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-6, nan_ok=True), where
    else:
        assert got == want, where


def test_item_i_goes_to_rank_i_mod_world():
    parts = [shard(list(range(11)), r, 3) for r in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]


CLI_SET = ("--set", "audit.out_threshold=0.3")  # flags most images, so overlays are merged too


def test_sharded_audit_equals_one_process_and_a_dead_shard_resumes_alone(tiny_synth, tiny_run, tmp_path):
    args = ["audit", str(tiny_synth), "--run", str(tiny_run.run_dir), "--project", str(tmp_path), "--name", "sh",
            "--device", "cpu", "--workers", "0", *CLI_SET]  # fmt: skip
    proc = torchrun(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "audit" / "sh"
    one = dict(run=tiny_run.run_dir, device="cpu", num_workers=0, overrides=["audit.out_threshold=0.3"])
    ref = la.audit(tiny_synth, out_dir=tmp_path / "one", **one)  # the same API path as the CLI, one process
    want, want_summary = _rows(ref.out_dir), json.loads((ref.out_dir / "summary.json").read_text())
    _assert_rows_equal(_rows(out), want)
    _assert_summaries_equal(json.loads((out / "summary.json").read_text()), want_summary)
    assert (out / "report.html").is_file() and not list((out / "shards").rglob("report.html"))  # one report, rank 0's
    flagged = [r for r in _rows(out) if r["overlay"]]
    assert flagged and all((out / r["overlay"]).is_file() for r in flagged)
    shard_keys = [{r["key"] for r in _rows(shard_dir(out, k, 2))} for k in range(2)]
    assert not shard_keys[0] & shard_keys[1] and len(shard_keys[0] | shard_keys[1]) == len(want)

    # Rank 1 "died": its shard lost its rows (a torn CSV, no partials) and nothing was merged.
    dead, alive = shard_dir(out, 1, 2), shard_dir(out, 0, 2)
    for p in (dead / "partials").glob("*.npz"):
        p.unlink()
    (dead / "audit.csv").write_text((dead / "audit.csv").read_text()[:-40])
    (out / "audit.csv").unlink()
    (out / "summary.json").unlink()
    untouched = {p: p.stat().st_mtime_ns for p in [alive / "audit.csv", *(alive / "partials").glob("*.npz")]}
    resumed = torchrun([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched  # rank 0's shard was not redone
    assert len(_rows(dead)) == len(shard_keys[1])
    _assert_rows_equal(_rows(out), want)
    _assert_summaries_equal(json.loads((out / "summary.json").read_text()), want_summary)

    # One process cannot resume it: a shard is a fixed part of the data for 2 processes.
    assert sharded_world_size(out) == 2
    with pytest.raises(StoreError, match="sharded over 2 processes"):
        la.audit(tiny_synth, out_dir=out, resume=True, **one)
