"""Test-split figures of a finished training run: segmentation Dice/IoU and classification reports."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lungaudit.classification.metrics import classification_report
from lungaudit.config import TrainConfig
from lungaudit.data.arrays import Arrays, load_arrays
from lungaudit.data.lazy import RowView, take_rows
from lungaudit.data.records import Sample
from lungaudit.segmentation.predict import predict_masks
from lungaudit.training import plots
from lungaudit.training.cls import masked_images, predict_probs
from lungaudit.training.loop import batches
from lungaudit.training.seg import seg_metrics

FILL_CHUNK = 512  # images whose masks are predicted at a time when filling the disk cache


def labels_of(samples: list[Sample], class_names: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(class_names)}
    return np.array([index[s.label] for s in samples], dtype=np.int64)


def fill_missing_masks(arrays: Arrays, segmenter: torch.nn.Module | None, seg_size: int, what: str) -> np.ndarray | RowView:
    """Given masks where present, the U-Net's elsewhere; refuses when neither exists.

    For arrays in the disk cache the result is a memory-mapped file beside the cache (built once
    per segmenter, batch by batch), never the whole set in memory.
    """
    missing = np.flatnonzero(~arrays.has_mask)
    if len(missing) and segmenter is None:
        raise ValueError(
            f"{len(missing)} {what} image(s) have no lung mask and there is no segmenter "
            f"(first: {arrays.samples[missing[0]].path}); train one with --stage all or pass --seg-from"
        )
    if isinstance(arrays.masks, RowView):
        return arrays.masks if not len(missing) else _fill_on_disk(arrays, segmenter, seg_size)  # type: ignore[arg-type]
    masks = arrays.masks.copy()
    if len(missing):
        predicted = predict_masks(segmenter, [arrays.images[i] for i in missing], seg_size)
        masks[missing] = np.stack(predicted).astype(np.uint8)
    return masks


def _fill_on_disk(arrays: Arrays, segmenter: torch.nn.Module, seg_size: int) -> RowView:
    """The split's masks with the missing ones predicted, as a uint8 file keyed by data and segmenter."""
    from lungaudit.data.cache import ARRAYS, build_rows, cache_root
    from lungaudit.data.fingerprint import rows_fingerprint

    n, side = len(arrays.samples), int(arrays.images.shape[1])
    h = hashlib.sha256(f"{rows_fingerprint(arrays.samples)}:{side}:{seg_size}".encode())
    for name, t in sorted(segmenter.state_dict().items()):  # the U-Net's own weights, not its file's path
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())

    def fill(out: np.memmap) -> None:
        for sl in batches(n, FILL_CHUNK):
            rows = np.asarray(arrays.masks[sl])
            missing = np.flatnonzero(~arrays.has_mask[sl])
            if len(missing):
                predicted = predict_masks(segmenter, list(arrays.images[missing + sl.start]), seg_size)
                rows[missing] = np.stack(predicted).astype(np.uint8)
            out[sl] = rows

    return build_rows(cache_root() / ARRAYS / f"masks-{h.hexdigest()[:20]}.u8", n, (side, side), fill)


def segmentation_report(segmenter: torch.nn.Module, test: Arrays, val: Arrays, seg_size: int, batch_size: int, run_dir: Path) -> dict[str, Any]:
    """Dice/IoU on the test images that carry masks, plus ``mask_examples.png`` from validation."""
    ti = np.flatnonzero(test.has_mask)
    report = {k: v for k, v in seg_metrics(segmenter, take_rows(test.images, ti), take_rows(test.masks, ti), batch_size).items() if k != "score"}
    vi = np.flatnonzero(val.has_mask)[:6]
    if len(vi):
        pred = predict_masks(segmenter, list(val.images[vi]), seg_size)
        plots.mask_examples(val.images[vi], val.masks[vi], np.stack(pred), run_dir / "mask_examples.png")
    return report | {"n": int(len(ti))}


def classification_test(
    classifier: torch.nn.Module, cfg: TrainConfig, test: Arrays, masks: Callable[[], np.ndarray], class_names: list[str], run_dir: Path
) -> dict[str, Any]:
    """Reports on full, lung-masked and (synthetic) twin test images, and the confusion/ROC plots.

    ``masks`` is called only when there are test images (it may run the U-Net).
    """
    if not test.samples:
        return {"classification": None}
    y = labels_of(test.samples, class_names)
    bs = cfg.cls.batch_size * 2
    probs_full = predict_probs(classifier, test.images, bs)
    probs_masked = predict_probs(classifier, masked_images(test.images, masks(), cfg.cls), bs)
    out: dict[str, Any] = {
        "classification": {
            "full": classification_report(y, probs_full, class_names),
            "masked": classification_report(y, probs_masked, class_names),
        }
    }
    twins = [s.extra.get("twin") for s in test.samples]
    if all(twins):
        # Planted-shortcut benchmarks: the clean twin is the same image without its shortcut, so
        # accuracy on twins is accuracy that cannot come from the shortcut.
        twin_arrays = load_arrays([Sample(path=Path(t), label=s.label) for t, s in zip(twins, test.samples)], cfg.cls.image_size)
        probs_twin = predict_probs(classifier, twin_arrays.images, bs)
        out["classification"]["twin"] = classification_report(y, probs_twin, class_names)
        out["classification"]["shortcut_reliance_rate"] = float((probs_twin.argmax(1) != probs_full.argmax(1)).mean())
    cm = np.array(out["classification"]["full"]["confusion"])
    plots.confusion_matrix_plot(cm, class_names, run_dir / "confusion_matrix.png", "test confusion (full image)")
    plots.roc_plot(y, probs_full, class_names, run_dir / "roc.png")
    return out
