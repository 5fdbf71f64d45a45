"""The segmenter's real-image path on 8 real Shenzhen radiographs (512 px, padding bands, markers)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lungaudit.data.imageio import read_image
from lungaudit.segmentation.predict import predict_masks
from lungaudit.training.pipeline import train
from pipeline_helpers import tiny_config

SHENZHEN = Path(__file__).resolve().parents[2].parent / "shared" / "realsample" / "shenzhen"


@pytest.mark.skipif(not SHENZHEN.is_dir(), reason=f"real sample not present at {SHENZHEN}")
def test_seg_trains_and_predicts_on_real_radiographs(tmp_path):
    root = tmp_path / "real"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for p in sorted((SHENZHEN / "images").glob("*.png"))[:8]:
        shutil.copy(p, root / "images" / p.name)
        shutil.copy(SHENZHEN / "masks" / p.name, root / "masks" / p.name)
    image = read_image(next((root / "images").glob("*.png")))
    assert image.shape == (512, 512) and 0.0 <= image.min() and image.max() <= 1.0

    result = train(tiny_config(root, tmp_path, "seg.epochs=2", "seg.batch_size=4"), stage="seg")
    rows = (result.run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and all(np.isfinite(float(r.split(",")[2])) for r in rows[1:])
    assert 0.0 <= result.test_metrics["segmentation"]["dice"] <= 1.0

    seg = load_run_segmenter(result.run_dir)
    masks = predict_masks(seg, [image, image[:300, :400]], size=64)
    assert masks[0].shape == (512, 512) and masks[1].shape == (300, 400)
    assert masks[0].dtype == bool


def load_run_segmenter(run_dir):
    from lungaudit.runs.checkpoint import load_checkpoint
    from lungaudit.runs.restore import restore

    return restore(load_checkpoint(run_dir / "weights" / "seg_best.pt", kind="seg"), torch.device("cpu"))
