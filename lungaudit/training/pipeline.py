"""``lungaudit train`` as a function: data -> segmenter -> classifier -> test metrics, in a run folder."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lungaudit.classification.metrics import classification_report
from lungaudit.classification.model import resolve_input_norm
from lungaudit.config import SynthConfig, TrainConfig, replace, save_config, to_dict
from lungaudit.data.records import Dataset, Sample
from lungaudit.segmentation.predict import predict_masks
from lungaudit.training import plots
from lungaudit.training.arrays import Arrays, load_arrays
from lungaudit.training.callbacks import TrainCallback
from lungaudit.training.checkpoint import load_checkpoint
from lungaudit.training.cls import cls_stage, masked_images, predict_probs
from lungaudit.training.loop import run_stage
from lungaudit.training.restore import restore
from lungaudit.training.rundir import MetricsLog, increment_run_dir
from lungaudit.training.seg import seg_metrics, seg_stage
from lungaudit.training.weights import InitWeights, WeightsError, input_norm_of, load_into, read_weights
from lungaudit.utils import atomic_write_json, resolve_device, seed_everything

log = logging.getLogger(__name__)

STAGES = ("all", "seg", "cls")


@dataclass
class TrainResult:
    run_dir: Path
    test_metrics: dict[str, Any]
    elapsed_s: float
    stage_times_s: dict[str, float] = field(default_factory=dict)


def cache_root() -> Path:
    return Path(os.environ.get("LUNGAUDIT_CACHE", "~/.cache/lungaudit")).expanduser()


def synthetic_default(cfg: SynthConfig, callback: TrainCallback | None = None) -> Path:
    """The synthetic benchmark for ``cfg``, generated into the cache on first use.

    The folder name hashes the generator config and version, and a ``.complete`` marker is written
    last, so a generation that was interrupted is detected and redone rather than silently trained on.
    """
    from lungaudit.data.synth import GENERATOR_VERSION, generate

    identity = {"generator_version": GENERATOR_VERSION, **to_dict(cfg)}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    out = cache_root() / f"synth-{key}"
    if (out / ".complete").is_file():
        return out
    if out.exists():
        shutil.rmtree(out)
    if callback:
        callback.message(f"generating the synthetic benchmark into {out}")
    generate(out, cfg)
    (out / ".complete").write_text("ok\n")
    return out


def _labels(samples: list[Sample], class_names: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(class_names)}
    return np.array([index[s.label] for s in samples], dtype=np.int64)


def _fill_missing_masks(arrays: Arrays, segmenter: torch.nn.Module | None, seg_size: int, what: str) -> np.ndarray:
    """Given masks where present, the U-Net's elsewhere; refuses when neither exists."""
    masks = arrays.masks.copy()
    missing = np.flatnonzero(~arrays.has_mask)
    if len(missing):
        if segmenter is None:
            raise ValueError(
                f"{len(missing)} {what} image(s) have no lung mask and there is no trained segmenter "
                f"(first: {arrays.samples[missing[0]].path}); train with --stage all"
            )
        predicted = predict_masks(segmenter, [arrays.images[i] for i in missing], seg_size)
        masks[missing] = np.stack(predicted).astype(np.uint8)
    return masks


def train(
    cfg: TrainConfig,
    *,
    stage: str = "all",
    resume: bool = False,
    run_dir: Path | None = None,
    callback: TrainCallback | None = None,
    interrupt_after: tuple[str, int] | None = None,
) -> TrainResult:
    """Train the requested stage(s) and write the run folder; returns where and the test metrics.

    ``interrupt_after=(stage, epoch)`` simulates a crash after that epoch (used by tests).
    """
    from lungaudit.data.layouts import load_dataset
    from lungaudit.data.split import class_weights

    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    callback = callback or TrainCallback()
    t_start = time.perf_counter()
    cfg, cls_init = _resolve_cls_input(cfg, stage)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    root = Path(cfg.data.root) if cfg.data.root else synthetic_default(cfg.synth, callback)
    dataset: Dataset = load_dataset(root, cfg.data.layout, data_cfg=cfg.data)
    if run_dir is None:
        run_dir = increment_run_dir(Path(cfg.project) / "train", cfg.name, exist_ok=resume)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    if dataset.problems:
        from lungaudit.data.layouts import write_problems_csv

        write_problems_csv(dataset.problems, run_dir / "problems.csv")
        callback.message(f"{len(dataset.problems)} problem file(s) skipped; see {run_dir / 'problems.csv'}")
    metrics = MetricsLog(run_dir / "metrics.csv")
    weights = run_dir / "weights"
    callback.message(f"device: {device}; data: {root} ({dataset.layout}, {len(dataset.samples)} images); run: {run_dir}")

    splits = {name: dataset.split(name) for name in ("train", "val", "test")}
    if not splits["train"]:
        raise ValueError(f"{root}: the training split is empty")
    arrays_cache: dict[tuple[str, int], Arrays] = {}

    def arrays(split: str, size: int) -> Arrays:
        if (split, size) not in arrays_cache:
            arrays_cache[(split, size)] = load_arrays(splits[split], size)
        return arrays_cache[(split, size)]

    times: dict[str, float] = {}
    test_metrics: dict[str, Any] = {"device": str(device), "dataset": str(root)}
    segmenter = None
    seg_size = cfg.seg.image_size
    seg_best = weights / "seg_best.pt"
    if stage in ("all", "seg"):
        t0 = time.perf_counter()
        spec = seg_stage(cfg.seg, arrays("train", seg_size), arrays("val", seg_size), cfg.seed, device, cfg.data.num_workers)
        if cfg.seg.weights and not (resume and (weights / "seg_last.pt").is_file()):
            init = load_into(spec.model, read_weights(cfg.seg.weights, "seg"), "seg")
            test_metrics["seg_init_weights"] = _report_init(init, "seg", callback)
        ckpt = run_stage(
            spec, weights, metrics, device, callback, resume,
            interrupt_after[1] if interrupt_after and interrupt_after[0] == "seg" else None,
        )
        segmenter = restore(ckpt, device)
        times["seg"] = time.perf_counter() - t0
    elif seg_best.is_file():
        seg_ckpt = load_checkpoint(seg_best, kind="seg", map_location=device)
        segmenter, seg_size = restore(seg_ckpt, device), int(seg_ckpt.config["image_size"])

    if segmenter is not None:
        test = arrays("test", seg_size)
        ti = np.flatnonzero(test.has_mask)
        test_metrics["segmentation"] = {
            k: v for k, v in seg_metrics(segmenter, test.images[ti], test.masks[ti], cfg.seg.batch_size * 2).items() if k != "score"
        } | {"n": int(len(ti))}
        val = arrays("val", seg_size)
        vi = np.flatnonzero(val.has_mask)[:6]
        if len(vi):
            pred = predict_masks(segmenter, list(val.images[vi]), seg_size)
            plots.mask_examples(val.images[vi], val.masks[vi], np.stack(pred), run_dir / "mask_examples.png")

    if stage in ("all", "cls"):
        if not dataset.labeled:
            raise ValueError(f"{root} has no class labels; only --stage seg can train on it")
        class_names = list(dataset.class_names)
        for name in ("train", "val", "test"):
            labelled = [s for s in splits[name] if s.label is not None]
            if len(labelled) != len(splits[name]):
                # Only a split that lost samples needs decoding again; the others stay cached.
                splits[name] = labelled
                for key in [k for k in arrays_cache if k[0] == name]:
                    del arrays_cache[key]
        size = cfg.cls.image_size
        tr, va = arrays("train", size), arrays("val", size)
        tr_masks = _fill_missing_masks(tr, segmenter, seg_size, "training")
        va_masks = _fill_missing_masks(va, segmenter, seg_size, "validation")
        t0 = time.perf_counter()
        spec = cls_stage(
            cfg.cls, class_names,
            tr.images, tr_masks, _labels(tr.samples, class_names),
            va.images, va_masks, _labels(va.samples, class_names),
            class_weights(splits["train"], class_names), cfg.seed, device, cfg.data.num_workers,
        )
        if cls_init is not None and not (resume and (weights / "cls_last.pt").is_file()):
            if cls_init.class_names is not None and cls_init.class_names != class_names:
                # Same number of classes in another meaning is still another head: start it fresh.
                cls_init.state = {k: v for k, v in cls_init.state.items() if not k.startswith("fc.")}
            test_metrics["cls_init_weights"] = _report_init(load_into(spec.model, cls_init, "cls"), "cls", callback)
        ckpt = run_stage(
            spec, weights, metrics, device, callback, resume,
            interrupt_after[1] if interrupt_after and interrupt_after[0] == "cls" else None,
        )
        times["cls"] = time.perf_counter() - t0
        classifier = restore(ckpt, device)
        test_metrics.update(_classifier_test_metrics(classifier, cfg, arrays("test", size), segmenter, seg_size, class_names, run_dir))

    plots.learning_curves(metrics.rows, run_dir / "learning_curves.png")
    elapsed = time.perf_counter() - t_start
    test_metrics["elapsed_s"] = elapsed
    test_metrics["stage_times_s"] = times
    atomic_write_json(run_dir / "test_metrics.json", test_metrics)
    return TrainResult(run_dir, test_metrics, elapsed, times)


def _resolve_cls_input(cfg: TrainConfig, stage: str) -> tuple[TrainConfig, InitWeights | None]:
    """Read ``cls.weights`` (when the classifier is trained) and fix ``cls.input_norm`` to a value.

    ``auto`` becomes what the starting weights expect, so the run's config.yaml and checkpoints
    name the normalisation itself and everything that rebuilds the model from them applies it.
    """
    if cfg.cls.pretrained and cfg.cls.weights:
        raise WeightsError("cls.pretrained and cls.weights both ask for starting weights; choose one")
    if cfg.seg.pretrained and cfg.seg.weights:
        raise WeightsError("seg.pretrained and seg.weights both ask for starting weights; choose one")
    init = read_weights(cfg.cls.weights, "cls") if cfg.cls.weights and stage in ("all", "cls") else None
    norm = resolve_input_norm(cfg.cls, input_norm_of(init) if init is not None else None)
    return replace(cfg, cls=replace(cfg.cls, input_norm=norm)), init


def _report_init(init: InitWeights, kind: str, callback: TrainCallback) -> dict[str, Any]:
    fresh = f"; kept fresh: {', '.join(init.kept_fresh)}" if init.kept_fresh else ""
    callback.message(f"{kind}: starting from {init.path} ({init.source}, sha256 {init.sha256[:12]}){fresh}")
    return init.summary()


def _classifier_test_metrics(
    classifier: torch.nn.Module,
    cfg: TrainConfig,
    test: Arrays,
    segmenter: torch.nn.Module | None,
    seg_size: int,
    class_names: list[str],
    run_dir: Path,
) -> dict[str, Any]:
    if not test.samples:
        return {"classification": None}
    y = _labels(test.samples, class_names)
    bs = cfg.cls.batch_size * 2
    probs_full = predict_probs(classifier, test.images, bs)
    probs_masked = predict_probs(classifier, masked_images(test.images, _fill_missing_masks(test, segmenter, seg_size, "test"), cfg.cls), bs)
    out: dict[str, Any] = {
        "classification": {
            "full": classification_report(y, probs_full, class_names),
            "masked": classification_report(y, probs_masked, class_names),
        }
    }
    twins = [s.extra.get("twin") for s in test.samples]
    if all(twins):
        # Synthetic benchmark: the clean twin is the same image without its shortcut, so accuracy on
        # twins is accuracy that cannot come from the shortcut.
        twin_arrays = load_arrays([Sample(path=Path(t), label=s.label) for t, s in zip(twins, test.samples)], cfg.cls.image_size)
        probs_twin = predict_probs(classifier, twin_arrays.images, bs)
        out["classification"]["twin"] = classification_report(y, probs_twin, class_names)
        out["classification"]["shortcut_reliance_rate"] = float((probs_twin.argmax(1) != probs_full.argmax(1)).mean())
    cm = np.array(out["classification"]["full"]["confusion"])
    plots.confusion_matrix_plot(cm, class_names, run_dir / "confusion_matrix.png", "test confusion (full image)")
    plots.roc_plot(y, probs_full, class_names, run_dir / "roc.png")
    return out
