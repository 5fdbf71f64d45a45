"""``lungaudit features``: embeddings, filters, activations, the source-leakage probe and features.html."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import lungaudit as la
from lungaudit.cli.main import app
from lungaudit.data.layouts import load_dataset
from lungaudit.studies.features import interpret, leakage

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def encoded_source(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_synth's images under a manifest whose source is burned into the border (a bright frame for
    half the images, chosen at random), inside the lungs nothing tells the sources apart."""
    root = tmp_path_factory.mktemp("encoded")
    rng = np.random.default_rng(0)
    rows = []
    for i, s in enumerate(load_dataset(tiny_synth).samples):
        img = cv2.imread(str(s.path), cv2.IMREAD_GRAYSCALE)
        source = "framed" if rng.random() < 0.5 else "plain"
        if source == "framed":
            img[:6], img[-6:], img[:, :6], img[:, -6:] = 255, 255, 255, 255
        cv2.imwrite(str(root / f"{i:03d}.png"), img)
        rows.append(f"{i:03d}.png,{s.label},{s.mask_path},{source}")
    (root / "manifest.csv").write_text("path,label,mask,source\n" + "\n".join(rows) + "\n")
    return root / "manifest.csv"


def test_cli_outputs_and_a_source_burned_outside_the_lungs_is_found(tiny_run, encoded_source: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["features", str(encoded_source), "--run", str(tiny_run.run_dir), "--project", str(tmp_path),
                              "--device", "cpu", "-k", "2", "--kernel-pca"])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = tmp_path / "features" / "exp"
    doc = json.loads((out / "features.json").read_text())
    n = doc["n_images"]
    assert n == 32 and doc["sources"].keys() == {"framed", "plain"} and doc["feature_dim"] == 512
    for name in ("embedding_pca.png", "embedding_tsne.png", "embedding_kpca.png", "filters.png", "activations.png", "features.html"):
        assert (out / name).is_file(), name
    points = list(csv.DictReader(open(out / "embeddings.csv")))
    assert len(points) == n * 2 * 3 and {p["view"] for p in points} == {"full", "masked"}
    acts = list(csv.DictReader(open(out / "activations.csv")))
    assert len(acts) == 4 * 2 * 2  # classes x (most, least) x k
    full, masked = doc["leakage_probe"]["full"], doc["leakage_probe"]["masked"]
    assert full["available"] and full["chance"] == pytest.approx(max(doc["sources"].values()) / n)
    assert full["accuracy"] >= 0.9 and full["accuracy"] - masked["accuracy"] >= 0.2  # the frame is outside the lungs
    assert "outside the lungs" in doc["interpretation"]
    html = (out / "features.html").read_text()
    assert "Source-leakage probe" in html and "data:image/png;base64," in html and "http" not in html.lower()


def test_the_runs_own_test_split_by_default(tiny_run, tmp_path: Path) -> None:
    result = la.features(run=tiny_run.run_dir, out_dir=tmp_path / "f", embeddings=["pca"], k=1, device="cpu")
    splits = list(csv.DictReader(open(tiny_run.run_dir / "splits.csv")))
    assert result.n_images == sum(r["split"] == "test" for r in splits)
    assert result.html_path.is_file() and "features.json" in result.files


def test_bad_input_is_exit_2(tiny_run, tmp_path: Path) -> None:
    base = ["--run", str(tiny_run.run_dir), "--project", str(tmp_path), "--device", "cpu"]
    for args in ([str(tmp_path / "nowhere")], ["--split", "holdout"]):
        res = runner.invoke(app, ["features", *args, *base])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert not (tmp_path / "features").exists()


def test_probe_needs_two_sources_with_two_images_each() -> None:
    f = np.random.default_rng(0).normal(size=(6, 4))
    assert leakage(f, ["a"] * 6, 5, 0) == {"available": False, "reason": "needs images from at least 2 sources, found 1"}
    assert not leakage(f, ["a"] * 5 + ["b"], 5, 0)["available"]
    ok = leakage(f, ["a", "b"] * 3, 5, 0)
    assert ok["available"] and ok["n_splits"] == 3  # folds shrink to the smallest source
    assert interpret({"full": {"available": False, "reason": "r"}, "masked": {}}) == "no leakage probe: r"
