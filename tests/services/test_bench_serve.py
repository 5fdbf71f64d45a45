"""``scripts/bench_serve.py``: the in-process pass table it records, and its refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import bench_serve  # noqa: E402


def test_pass_scaling_times_every_batch_size(tiny_run, test_images):
    images = [p.read_bytes() for p in test_images[:5]]  # fewer than a round's uploads: they are cycled
    rows = bench_serve.pass_scaling(tiny_run.run_dir, images, "cpu", sizes=(1, 4), rounds=1)
    assert [r["batch"] for r in rows] == [1, 4] and rows[0]["gain"] == 1.0
    assert all(r["ms"] > 0 for r in rows) and rows[1]["gain"] == pytest.approx(rows[0]["ms"] / rows[1]["ms"])
    table = bench_serve.scaling_table(rows).splitlines()
    assert table[0] == "| uploads per pass | 1 | 4 |" and table[3].startswith("| × batch 1 | 1.00 | ")


@pytest.mark.parametrize("argv", [["--run", "/nope"], ["--run", ".", "--rounds", "0"], ["--run", ".", "--clients", "0"]])
def test_bad_arguments_exit_2_before_any_server(argv, capsys):
    with pytest.raises(SystemExit) as e:
        bench_serve.main(argv)
    assert e.value.code == 2 and "error:" in capsys.readouterr().err


def test_the_recorded_command_is_the_one_run():
    argv = ["--run", "runs/train/x y", "--rounds", "5", "--record"]
    assert bench_serve.command_line(argv) == "python scripts/bench_serve.py --run 'runs/train/x y' --rounds 5"
