"""``lungaudit train`` as a function: data -> segmenter -> classifier -> test metrics, in a run folder.

Everything that can be checked before training is checked before the run folder is created, so a
refused run leaves nothing behind. The run folder records what the run saw (``run.json``,
``splits.csv``), which the audit reads to follow the run's data and split.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lungaudit import distributed as dist
from lungaudit.classification.model import resolve_input_norm
from lungaudit.config import TrainConfig, replace, save_config
from lungaudit.data.arrays import Arrays, load_arrays
from lungaudit.data.records import Dataset, Sample
from lungaudit.runs.checkpoint import Checkpoint, load_checkpoint
from lungaudit.runs.restore import restore, segmenter_checkpoint
from lungaudit.runs.rundir import MetricsLog, increment_run_dir
from lungaudit.runs.runinfo import RunInfo, write_run_info
from lungaudit.training import STAGES, plots
from lungaudit.training.callbacks import TrainCallback
from lungaudit.training.cls import cls_stage
from lungaudit.training.ddp import check_batch
from lungaudit.training.evaluate import classification_test, fill_missing_masks, labels_of, segmentation_report
from lungaudit.training.loop import run_stage
from lungaudit.training.seg import seg_stage
from lungaudit.training.weights import InitWeights, WeightsError, input_norm_of, load_into, read_weights
from lungaudit.utils import atomic_write_json, seed_everything, sha256_file

log = logging.getLogger(__name__)



@dataclass
class TrainResult:
    run_dir: Path
    test_metrics: dict[str, Any]
    elapsed_s: float
    stage_times_s: dict[str, float] = field(default_factory=dict)


class SplitArrays:
    """Each split decoded once per resolution, on first use: into memory, or into the disk cache.

    ``mode`` is ``data.cache``; ``auto`` picks by the decoded size of all splits together, so every
    split of a run is held the same way.
    """

    def __init__(self, splits: dict[str, list[Sample]], max_pixels: int, mode: str = "memory", num_workers: int = 0) -> None:
        self.splits, self.max_pixels, self.mode, self.num_workers = splits, max_pixels, mode, num_workers
        self._cache: dict[tuple[str, int], Arrays] = {}

    def where(self, size: int) -> str:
        from lungaudit.data.cache import resolve_cache_mode

        return resolve_cache_mode(self.mode, sum(len(v) for v in self.splits.values()), size)

    def __call__(self, split: str, size: int) -> Arrays:
        if (split, size) not in self._cache:
            if self.where(size) == "disk":
                from lungaudit.data.cache import cached_arrays

                arrays = cached_arrays(self.splits[split], size, self.max_pixels, self.num_workers)
            else:
                arrays = load_arrays(self.splits[split], size, max_pixels=self.max_pixels)
            self._cache[(split, size)] = arrays
        return self._cache[(split, size)]

    def keep_labelled(self) -> None:
        """Drop unlabelled images (a set mixing seg-only images); only splits that lost any are re-decoded."""
        for name, samples in self.splits.items():
            labelled = [s for s in samples if s.label is not None]
            if len(labelled) != len(samples):
                self.splits[name] = labelled
                self._cache = {k: v for k, v in self._cache.items() if k[0] != name}


@dataclass
class _Run:
    cfg: TrainConfig
    device: torch.device
    run_dir: Path
    arrays: SplitArrays
    metrics: MetricsLog
    callback: TrainCallback
    resume: bool
    interrupt_after: tuple[str, int] | None
    cls_init: InitWeights | None = None
    times: dict[str, float] = field(default_factory=dict)
    init_reports: dict[str, Any] = field(default_factory=dict)

    @property
    def weights(self) -> Path:
        return self.run_dir / "weights"

    def interrupt(self, stage: str) -> int | None:
        return self.interrupt_after[1] if self.interrupt_after and self.interrupt_after[0] == stage else None


def train(
    cfg: TrainConfig,
    *,
    stage: str = "all",
    resume: bool = False,
    run_dir: Path | None = None,
    callback: TrainCallback | None = None,
    seg_from: str | Path | None = None,
    interrupt_after: tuple[str, int] | None = None,
) -> TrainResult:
    """Train the requested stage(s) into a run folder; returns where and the test metrics.

    ``seg_from``: a run folder or a segmenter checkpoint whose U-Net fills every missing mask; no new
    segmenter is trained (the recipe for a labelled set without masks). ``interrupt_after=(stage,
    epoch)`` simulates a crash after that epoch (tests). Raises ``ValueError``/``CheckpointError`` for
    input it cannot train on, before creating the run folder.
    """
    from lungaudit.data.cache import synthetic_default
    from lungaudit.data.layouts import load_dataset

    callback = callback or TrainCallback()
    t_start = time.perf_counter()
    cfg, cls_init = _resolve_cls_input(cfg, stage)
    seed_everything(cfg.seed)
    device = dist.rank_device(cfg.device)
    world = dist.init(device)
    source = Path(cfg.data.root) if cfg.data.root else synthetic_default(cfg.synth, callback.message)
    dataset = load_dataset(source, cfg.data.layout, data_cfg=cfg.data)
    seg_ckpt = segmenter_checkpoint(seg_from) if seg_from is not None else None
    splits = {name: dataset.split(name) for name in ("train", "val", "test")}
    _preflight(dataset, splits, stage, seg_ckpt is not None, run_dir if resume else None)
    _check_architectures(cfg, stage, seg_ckpt is not None)
    _preflight_world(cfg, stage, seg_ckpt is not None, world)
    if run_dir is None:  # rank 0 picks the next free name; every rank must write into the same one
        run_dir = dist.main_decides(lambda: increment_run_dir(Path(cfg.project) / "train", cfg.name, exist_ok=resume))
    run_dir = Path(run_dir)
    fresh = world.is_main and not run_dir.exists()
    try:
        return _train_into(run_dir, cfg, dataset, source, splits, stage, seg_ckpt, device, world, callback, resume,
                           interrupt_after, t_start, cls_init)  # fmt: skip
    except BaseException:
        if fresh:
            _discard_unresumable(run_dir)
        raise


def _train_into(
    run_dir: Path, cfg: TrainConfig, dataset: Dataset, source: Path, splits: dict[str, list[Sample]], stage: str,
    seg_ckpt: Path | None, device: torch.device, world: dist.World, callback: TrainCallback, resume: bool,
    interrupt_after: tuple[str, int] | None, t_start: float, cls_init: InitWeights | None,
) -> TrainResult:  # fmt: skip
    """Everything :func:`train` does once its run folder is chosen."""
    if world.is_main:
        _open_run_dir(cfg, run_dir, dataset, source, seg_ckpt, callback)
    callback.message(f"device: {device}{_world_note(world)}; data: {source} ({dataset.layout}, {len(dataset.samples)} images); run: {run_dir}")
    arrays = SplitArrays(splits, cfg.data.max_pixels, cfg.data.cache, cfg.data.num_workers)
    if arrays.where(cfg.cls.image_size) == "disk":
        callback.message("data: decoded into the disk cache (data.cache), read through memory maps")
    run = _Run(cfg, device, run_dir, arrays, MetricsLog(run_dir / "metrics.csv"), callback, resume,
               interrupt_after, cls_init)  # fmt: skip
    test_metrics: dict[str, Any] = {"device": str(device), "dataset": str(source)}
    segmenter, seg_size = _segmenter(run, stage, seg_ckpt is not None)
    if segmenter is not None and world.is_main:  # test figures: rank 0 alone, on the whole test split
        test_metrics["segmentation"] = segmentation_report(
            segmenter, run.arrays("test", seg_size), run.arrays("val", seg_size), seg_size, cfg.seg.batch_size * 2, run_dir
        )
    if stage in ("all", "cls"):
        test_metrics.update(_classifier(run, list(dataset.class_names), segmenter, seg_size))
    elapsed = time.perf_counter() - t_start
    test_metrics.update(run.init_reports, elapsed_s=elapsed, stage_times_s=run.times)
    if world.is_main:
        plots.learning_curves(run.metrics.rows, run_dir / "learning_curves.png")
        atomic_write_json(run_dir / "test_metrics.json", test_metrics | ({"world_size": world.size} if world.distributed else {}))
    return TrainResult(run_dir, dist.broadcast(test_metrics), elapsed, run.times)


def _open_run_dir(cfg: TrainConfig, run_dir: Path, dataset: Dataset, source: Path, seg_ckpt: Path | None, callback: TrainCallback) -> None:
    """The run folder's records of what the run saw (rank 0 only): config, data, split, problems."""
    from lungaudit.data.layouts import write_problems_csv

    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    seg_record = _adopt_segmenter(seg_ckpt, run_dir) if seg_ckpt is not None else None
    write_run_info(run_dir, RunInfo(str(dataset.root), str(Path(source).resolve()), dataset.layout, len(dataset.samples), seg_record), dataset.samples)
    if dataset.problems:
        write_problems_csv(dataset.problems, run_dir / "problems.csv")
        callback.message(f"{len(dataset.problems)} problem file(s) skipped; see {run_dir / 'problems.csv'}")


def _world_note(world: dist.World) -> str:
    return f" (rank {world.rank} of {world.size} processes)" if world.distributed else ""


def _preflight_world(cfg: TrainConfig, stage: str, has_seg_from: bool, world: dist.World) -> None:
    """Under torchrun: each stage's global batch must split evenly over the processes."""
    if not world.distributed:
        return
    if stage in ("all", "seg") and not has_seg_from:
        check_batch(cfg.seg.batch_size, world.size, "seg.batch_size")
    if stage in ("all", "cls"):
        check_batch(cfg.cls.batch_size, world.size, "cls.batch_size")


def _discard_unresumable(run_dir: Path) -> None:
    """Remove a run folder this call created when it failed before any checkpoint to resume from.

    A stub (config.yaml, run.json, no weights) would otherwise look like a run: ``audit`` or a
    bare ``--resume`` could pick it. A folder with a ``*_last.pt`` is kept, since it can be resumed.
    """
    if any((run_dir / "weights").glob("*_last.pt")):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    log.info("removed %s: the run failed before its first checkpoint", run_dir)


def _check_architectures(cfg: TrainConfig, stage: str, reuses_seg: bool) -> None:
    """Unknown model names fail before the run folder exists, not after a whole stage has trained."""
    from lungaudit.classification.model import CLASSIFIERS
    from lungaudit.config import ConfigError
    from lungaudit.segmentation.model import SEGMENTERS, encoder_names

    checks = []
    if stage in ("all", "cls"):
        checks.append(("cls.arch", cfg.cls.arch, CLASSIFIERS.names()))
    if stage in ("all", "seg") and not reuses_seg:
        checks += [("seg.arch", cfg.seg.arch, SEGMENTERS.names()), ("seg.encoder", cfg.seg.encoder, encoder_names())]
    for key, value, valid in checks:
        if value not in valid:
            raise ConfigError(f"{key}: unknown name {value!r}; valid: {', '.join(valid)}")


def _preflight(dataset: Dataset, splits: dict[str, list[Sample]], stage: str, has_seg_from: bool, resume_dir: Path | None) -> None:
    """Refuse, before anything is written, a request this data set cannot satisfy."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    if not splits["train"]:
        raise ValueError(f"{dataset.root}: the training split is empty")
    if stage == "seg" and has_seg_from:
        raise ValueError("--seg-from reuses a segmenter; it cannot be combined with --stage seg")
    with_masks = sum(s.mask_path is not None for s in splits["train"])
    if stage in ("all", "seg") and not has_seg_from and with_masks == 0:
        raise ValueError(
            f"{dataset.root}: no training image has a lung mask, so no U-Net can be trained on it; "
            "train one on a lung-mask set (--stage seg) and pass --seg-from RUN"
        )
    if stage in ("all", "cls") and not dataset.labeled:
        raise ValueError(f"{dataset.root} has no class labels; only --stage seg can train on it")
    missing = [s for s in dataset.samples if s.mask_path is None and s.label is not None]
    has_seg = has_seg_from or stage == "all" or (resume_dir is not None and (Path(resume_dir) / "weights" / "seg_best.pt").is_file())
    if stage == "cls" and missing and not has_seg:
        raise ValueError(
            f"{len(missing)} labelled image(s) have no lung mask (first: {missing[0].path}) and there is no segmenter "
            "to predict them: pass --seg-from RUN (a run or checkpoint with a U-Net) or train with --stage all"
        )


def _adopt_segmenter(path: Path, run_dir: Path) -> dict[str, str]:
    """Copy the reused U-Net into this run (a run is self-contained) and record where it came from."""
    target = run_dir / "weights" / "seg_best.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    if path.resolve() != target.resolve():
        shutil.copyfile(path, target)
    return {"path": str(path.resolve()), "sha256": sha256_file(path)}


def _segmenter(run: _Run, stage: str, reused: bool) -> tuple[torch.nn.Module | None, int]:
    """Train the U-Net, or load the run's (reused or from an earlier stage); None when there is none."""
    seg_best = run.weights / "seg_best.pt"
    if stage in ("all", "seg") and not reused:
        t0 = time.perf_counter()
        size = run.cfg.seg.image_size
        spec = seg_stage(run.cfg.seg, run.arrays("train", size), run.arrays("val", size), run.cfg.seed, run.device, run.cfg.data.num_workers)
        if run.cfg.seg.weights and not (run.resume and (run.weights / "seg_last.pt").is_file()):
            init = load_into(spec.model, read_weights(run.cfg.seg.weights, "seg"), "seg")
            run.init_reports["seg_init_weights"] = _report_init(init, "seg", run.callback)
        ckpt = run_stage(spec, run.weights, run.metrics, run.device, run.callback, run.resume, run.interrupt("seg"), run.cfg.dist.sync_bn)
        run.times["seg"] = time.perf_counter() - t0
        return restore(ckpt, run.device), size
    found = _shared_checkpoint(seg_best, "seg", run.device)
    if found is not None:
        return restore(found, run.device), int(found.config["image_size"])
    return None, run.cfg.seg.image_size


def _shared_checkpoint(path: Path, kind: str, device: torch.device) -> Checkpoint | None:
    """``path`` loaded if it exists; under torchrun read by rank 0 (which may have just written it)
    and handed to every rank."""
    if not dist.active():
        return load_checkpoint(path, kind=kind, map_location=device) if path.is_file() else None
    return dist.main_decides(lambda: load_checkpoint(path, kind=kind, map_location="cpu") if path.is_file() else None)


def _classifier(run: _Run, class_names: list[str], segmenter: torch.nn.Module | None, seg_size: int) -> dict[str, Any]:
    """Train the classifier on lung-masked and unmasked images; returns its test metrics."""
    from lungaudit.data.split import class_weights

    run.arrays.keep_labelled()
    size, cfg = run.cfg.cls.image_size, run.cfg
    tr, va = run.arrays("train", size), run.arrays("val", size)
    tr_masks = fill_missing_masks(tr, segmenter, seg_size, "training")
    va_masks = fill_missing_masks(va, segmenter, seg_size, "validation")
    t0 = time.perf_counter()
    spec = cls_stage(
        cfg.cls, class_names,
        tr.images, tr_masks, labels_of(tr.samples, class_names),
        va.images, va_masks, labels_of(va.samples, class_names),
        class_weights(run.arrays.splits["train"], class_names), cfg.seed, run.device, cfg.data.num_workers,
    )  # fmt: skip
    init = run.cls_init
    if init is not None and not (run.resume and (run.weights / "cls_last.pt").is_file()):
        if init.class_names is not None and init.class_names != class_names:
            # Same number of classes in another meaning is still another head: start it fresh.
            init.state = {k: v for k, v in init.state.items() if not k.startswith("fc.")}
        run.init_reports["cls_init_weights"] = _report_init(load_into(spec.model, init, "cls"), "cls", run.callback)
    ckpt = run_stage(spec, run.weights, run.metrics, run.device, run.callback, run.resume, run.interrupt("cls"), cfg.dist.sync_bn)
    run.times["cls"] = time.perf_counter() - t0
    if not dist.world().is_main:
        return {}  # the test figures are rank 0's; train() hands them to every rank
    classifier = restore(ckpt, run.device)
    test = run.arrays("test", size)
    return classification_test(classifier, cfg, test, lambda: fill_missing_masks(test, segmenter, seg_size, "test"), class_names, run.run_dir)


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


__all__ = ["STAGES", "TrainResult", "train"]
