"""Predict single images with a trained run, each prediction audited exactly as ``lungaudit audit`` would.

A :class:`Predictor` holds a run loaded once (models, the run's audit config, the run's split). Images
go through the audit's own input side (:func:`~lungaudit.audit.loader.prepare_decoded`) and step
(:func:`~lungaudit.audit.batch.audit_batch`), and come out as the audit's typed rows plus a verdict;
``serve`` calls :meth:`Predictor.run` on the batches its queue gathers, ``predict`` on files.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lungaudit.audit.batch import TENSOR_KEYS, audit_batch, collate_items
from lungaudit.audit.loader import DecodeSpec, audit_loader, prepare_decoded
from lungaudit.audit.overlay import overlay_lines, render_overlay
from lungaudit.audit.rows import step_rows
from lungaudit.audit.schema import AuditRow, csv_columns
from lungaudit.audit.step import StepSettings
from lungaudit.config import TrainConfig, to_dict
from lungaudit.data.imageio import IMAGE_EXTENSIONS, read_image
from lungaudit.data.records import Problem, Sample
from lungaudit.device import resolve_device, to_device
from lungaudit.explain.cam import CAM_METHODS, CamResult, compute_cam, method_info
from lungaudit.runs.restore import TrainedModels, load_run
from lungaudit.runs.runinfo import apply_run_splits, run_splits, trained_on
from lungaudit.utils import atomic_write_png, safe_filename, sha256_file

log = logging.getLogger(__name__)

# Explanation maps the web page shows beside the audited heatmap, when the registry has them: guided
# Grad-CAM arrives with the explanation toolbox and lights up without a change here.
DISPLAY_METHODS: tuple[str, ...] = ("gradcam", "guided_gradcam")
VERDICTS: tuple[str, ...] = ("in-lung", "out-of-lung", "no evidence")


def energy_verdict(row: AuditRow, out_threshold: float) -> str:
    """Where the evidence sits: ``out-of-lung`` when the tolerant E_out exceeds the flag threshold."""
    if row.no_evidence or row.e_out_tol is None:
        return "no evidence"
    return "out-of-lung" if row.e_out_tol > out_threshold else "in-lung"


@dataclass(frozen=True)
class Prediction:
    """One audited prediction: the audit's row (``key`` names the file or upload) and its verdict."""

    row: AuditRow
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the row's fields (no label/source: a prediction has none) plus ``verdict``."""
        data = self.row.model_dump(mode="json", exclude={"label", "source"})
        return {"file": data.pop("key"), **data, "verdict": self.verdict}

    def to_csv(self, class_names: Sequence[str]) -> dict[str, str]:
        """The row as ``audit.csv`` cells (same columns, so audit tooling reads it) plus ``verdict``."""
        return {**self.row.to_csv(list(class_names)), "verdict": self.verdict}


def predict_csv_columns(class_names: Sequence[str]) -> list[str]:
    return csv_columns(list(class_names)) + ["verdict"]


@dataclass
class Maps:
    """One image's pictures at the classifier's side S: input, lungs, audited heatmap, display methods."""

    image: np.ndarray  # (S, S) float in [0, 1]
    lungs: np.ndarray  # (S, S) bool
    heat: np.ndarray  # (S, S) >= 0, the heatmap E_in was measured on
    methods: dict[str, np.ndarray] = field(default_factory=dict)  # method name -> (S, S) >= 0


@dataclass
class Predictor:
    """A run loaded once. :meth:`run` is serialised by a lock: CAMs flip the model's grad flags."""

    models: TrainedModels
    settings: StepSettings
    spec: DecodeSpec
    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    methods: tuple[str, ...]
    splits: dict[str, str]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, run_dir: str | Path, cfg: TrainConfig, device: str = "auto", methods: Sequence[str] | None = None) -> Predictor:
        """Load the run's models on ``device`` with ``cfg`` (the run's config); raises ValueError naming the problem.

        ``methods``: explanation maps to draw beside the audited one; None shows whichever of
        :data:`DISPLAY_METHODS` the registry has, an explicit name the registry lacks is an error.
        """
        run_dir = Path(run_dir)
        dev = resolve_device(device)
        models = load_run(run_dir, dev)
        if models.segmenter is None:  # a single image comes without a lung mask: the run's U-Net makes it
            raise ValueError(f"{run_dir} has no lung segmenter (weights/seg_best.pt); predict and serve need one "
                             "to find the lungs (train with --stage all, or --seg-from a run that has one)")  # fmt: skip
        settings = StepSettings.resolve(cfg.audit, models)
        spec = DecodeSpec(settings.size, False, cfg.audit.marker_side, cfg.data.max_pixels)
        shown = display_methods(methods)
        return cls(models, settings, spec, cfg, run_dir, dev, shown, run_splits(run_dir))

    @property
    def class_names(self) -> list[str]:
        return list(self.models.class_names)

    def decode(self, path: str | Path) -> dict[str, Any]:
        """Decode one file (pixel cap from the run's config) into an item for :meth:`run`; raises ImageReadError."""
        return prepare_decoded(read_image(path, max_pixels=self.spec.max_pixels), None, self.spec)

    def run(
        self, items: Sequence[dict[str, Any]], samples: Sequence[Sample], keys: Sequence[str], maps: bool = False,
        methods: Sequence[str] | None = None,
    ) -> list[tuple[Prediction, Maps | None]]:  # fmt: skip
        """Audit prepared items in one batch; with ``maps`` also each image's pictures.

        ``methods``: the explanation maps drawn beside the audited heatmap (``Maps.methods``); None
        for the predictor's display methods, ``()`` for the audited heatmap alone.
        """
        batch = collate_items(items)
        shown = (self.methods if methods is None else tuple(methods)) if maps else ()
        s = self.settings
        with self._lock:
            x = to_device(batch["image"], self.device)
            # a display method whose pass also yields the audited map runs once, for both
            both = shared_cam(s, shown)
            shared = self._display_cam(x, both, None) if both else None
            audited = CamResult(shared.logits, shared.also[s.cam], shared.targets) if shared else None
            r = audit_batch(self.models, batch, s, self.device, cam=audited)
            heat = r.heat.cpu().numpy()
            extra: dict[str, np.ndarray] = {}
            for name in shown:
                if name == s.cam:  # show exactly the map E_in was measured on
                    extra[name] = heat
                    continue
                res = shared if name == both else self._display_cam(x, name, r.pred_full)
                if res is not None:
                    extra[name] = res.cams.detach().float().cpu().numpy()
        flags = [trained_on(sample, self.splits) for sample in samples]
        rows = step_rows(r, samples, keys, self.class_names, flags)
        out = [(Prediction(row, energy_verdict(row, s.out_threshold)), None) for row in rows]
        if not maps:
            return out  # type: ignore[return-value]
        image, lungs = batch["image"][:, 0].numpy(), r.lungs.cpu().numpy()
        return [
            (p, Maps(image[j], lungs[j], heat[j], {m: v[j] for m, v in extra.items()})) for j, (p, _) in enumerate(out)
        ]

    def _display_cam(self, x: torch.Tensor, name: str, targets: torch.Tensor | None) -> CamResult | None:
        """One display method's maps at the classifier's side (``targets`` None: the predicted class);
        None when it fails, logged: a display extra must never cost the prediction itself."""
        s = self.settings
        try:
            return compute_cam(self.models.classifier, x, s.target_layer, targets=targets, method=name,
                               out_size=(s.size, s.size), score=s.cam_score)  # fmt: skip
        except Exception as e:
            log.warning("explanation method %s failed: %s: %s", name, type(e).__name__, e)
            return None

    def model_info(self) -> dict[str, Any]:
        """What ``GET /model`` and ``contract.json`` say about the run: classes, config, checkpoints."""
        m = self.models
        ckpts: dict[str, Any] = {"cls": {"file": m.cls_path.name, "sha256": sha256_file(m.cls_path)}}
        ckpts["seg"] = {"file": m.seg_path.name, "sha256": sha256_file(m.seg_path)} if m.seg_path else None
        return {
            "run": self.run_dir.name, "class_names": self.class_names, "image_size": self.settings.size,
            "checkpoints": ckpts, "config": {k: to_dict(getattr(self.cfg, k)) for k in ("cls", "seg", "audit")},
            "methods": {"audit": self.settings.cam, "display": list(self.methods)},
            "max_megapixels": self.cfg.data.max_megapixels, "device": str(self.device),
        }  # fmt: skip


def shared_cam(s: StepSettings, methods: Sequence[str]) -> str | None:
    """The first of ``methods`` whose pass also yields the audited map (``MethodInfo.yields``), if any.

    Running it instead of the audited method gives both maps for one pass (guided Grad-CAM yields
    Grad-CAM, saving a classifier forward per upload); only with the audited method's default
    options, which are the ones it yields.
    """
    if s.cam_options:
        return None
    return next((m for m in methods if m != s.cam and s.cam in method_info(m).yields), None)


def display_methods(methods: Sequence[str] | None) -> tuple[str, ...]:
    """The explanation methods to draw: registered defaults for None, else exactly ``methods`` (checked)."""
    if methods is None:
        return tuple(m for m in DISPLAY_METHODS if m in CAM_METHODS)
    unknown = [m for m in methods if m not in CAM_METHODS]
    if unknown:
        raise ValueError(f"unknown explanation method(s) {', '.join(unknown)}; registered: {', '.join(CAM_METHODS.names())}")
    return tuple(dict.fromkeys(methods))


# --------------------------------------------------------------------------------------------- files


def collect_images(inputs: Sequence[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Files as given (their content decides whether they are images) and image files under folders.

    Folders are searched recursively for the readable extensions, in sorted order, hidden entries
    skipped; a path that does not exist is a problem, not an error, so one typo costs one row.
    """
    paths: list[Path] = []
    problems: list[Problem] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*")
                if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )  # fmt: skip
            if not found:
                problems.append(Problem(p, f"folder holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})"))
            paths += found
        elif p.exists():
            paths.append(p)
        else:
            problems.append(Problem(p, "file not found"))
    return paths, problems


@dataclass
class PredictResult:
    predictions: list[Prediction]
    problems: list[Problem]
    run_dir: Path
    class_names: list[str]
    images_per_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": str(self.run_dir), "class_names": self.class_names,
            "predictions": [p.to_dict() for p in self.predictions],
            "problems": [{"path": str(p.path), "reason": p.reason} for p in self.problems],
        }  # fmt: skip


def predict_files(
    predictor: Predictor, inputs: Sequence[str | Path], *, overlays: str | Path | None = None, batch_size: int | None = None,
    num_workers: int = 0, progress: Callable[[int, int], None] | None = None,
) -> PredictResult:  # fmt: skip
    """Predict every image in ``inputs`` (files or folders) in batches through the audit's loader.

    ``overlays``: a folder for one overlay PNG per image (heatmap, lung contour, marker box, text),
    named ``<index>_<stem>.png``; the row's ``overlay`` field holds that name.
    """
    paths, problems = collect_images(inputs)
    samples = apply_run_splits([Sample(p) for p in paths], predictor.splits)
    preds: list[Prediction] = []
    t0, done = time.perf_counter(), 0
    loader = audit_loader(samples, predictor.spec, batch_size or predictor.cfg.audit.batch_size, num_workers, pin=False)
    for batch in loader:
        index = batch["index"].tolist()
        problems += [Problem(samples[i].path, e, "image") for i, e in zip(index, batch["error"]) if e]
        ok = [j for j, e in enumerate(batch["error"]) if not e]
        if ok:
            items = [{k: batch[k][j] for k in (*TENSOR_KEYS, "has_mask")} for j in ok]
            chosen = [samples[index[j]] for j in ok]
            # the overlay draws the audited heatmap only: no display method is computed for it
            done_batch = predictor.run(items, chosen, [str(s.path) for s in chosen], maps=overlays is not None, methods=())
            preds += [_with_overlay(p, m, Path(overlays), len(preds) + k) if overlays else p for k, (p, m) in enumerate(done_batch)]
        done += len(index)
        if progress is not None:
            progress(done, len(samples))
    elapsed = time.perf_counter() - t0
    rate = len(preds) / elapsed if preds and elapsed > 0 else 0.0
    return PredictResult(preds, problems, predictor.run_dir, predictor.class_names, rate)


def _with_overlay(p: Prediction, maps: Maps | None, folder: Path, index: int) -> Prediction:
    """Write the audit-style overlay of one prediction; returns it with ``row.overlay`` set."""
    assert maps is not None
    name = f"{index:06d}_{safe_filename(Path(p.row.key).stem, 60)}.png"
    picture = render_overlay(maps.image, maps.lungs, maps.heat, p.row.marker_box, overlay_lines(p.row))
    atomic_write_png(folder / name, picture, durable=False)
    return Prediction(p.row.model_copy(update={"overlay": name}), p.verdict)


__all__ = [
    "DISPLAY_METHODS", "VERDICTS", "Maps", "PredictResult", "Prediction", "Predictor", "collect_images",
    "display_methods", "energy_verdict", "predict_csv_columns", "predict_files",
]
