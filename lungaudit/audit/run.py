"""``lungaudit audit`` as a function: per-image Grad-CAM lung-energy audit of a trained run.

Data flow per batch: decode (a DataLoader worker) -> lung masks (given, else the run's U-Net) ->
one CAM pass that also yields the full-image logits -> one forward on the lung-masked image ->
batched metrics on the device -> rows appended to ``audit.csv``. Only flagged images leave the
device as pixels, for their overlays.

Resumption: each chunk first writes its partial aggregates (``partials/<n>.npz``), then appends its
rows to ``audit.csv`` in one write. On restart, rows already in the CSV are skipped, a torn last
line is dropped, and partials whose rows never landed are discarded, so no row is lost or doubled.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset as TorchDataset

from lungaudit import __version__
from lungaudit.audit.markers import find_marker_boxes, hotspot_overlaps_marker
from lungaudit.audit.schema import BASE_COLUMNS, SCHEMA_VERSION
from lungaudit.audit.aggregate import aggregate_rows, write_mean_outside
from lungaudit.audit.counterfactual import box_holes, fill_from_surroundings
from lungaudit.audit.metrics import dilate_masks, flag, lung_energy, masking_counterfactual, remove_floor
from lungaudit.audit.regions import REGION_NAMES, dominant_region
from lungaudit.config import AuditConfig, to_dict
from lungaudit.data.records import Dataset, Problem, Sample
from lungaudit.explain.cam import CAM_SCORES, compute_cam
from lungaudit.training.loop import autocast, to_device
from lungaudit.training.restore import TrainedModels, load_run
from lungaudit.utils import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_png,
    atomic_write_text,
    resolve_device,
    sha256_file,
)

log = logging.getLogger(__name__)

CHUNK = 256


@dataclass
class AuditResult:
    out_dir: Path
    summary: dict[str, Any]
    images_per_s: float
    resumed_rows: int = 0
    problems: list[Problem] = field(default_factory=list)


MAX_BOXES = 8


class _Decoded(TorchDataset):
    """Decode one image (and its given mask), find probable markers at full resolution, resize.

    Marker detection runs here, in the loader's worker and on the full-resolution image, because a
    thin burned-in token that is obvious at 256 px can blur into its background at 128 px.
    Boxes come back scaled to the audit resolution, padded to ``MAX_BOXES`` rows of -1.
    """

    def __init__(self, samples: Sequence[Sample], size: int, use_given_masks: bool) -> None:
        self.samples, self.size, self.use_given = list(samples), size, use_given_masks

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, torch.Tensor, bool, torch.Tensor, str]:
        from lungaudit.data.imageio import ImageReadError, read_image, read_mask

        s, size = self.samples[i], self.size
        boxes = torch.full((MAX_BOXES, 4), -1, dtype=torch.int64)
        try:
            image = read_image(s.path)
        except ImageReadError as e:
            return i, torch.zeros(1, size, size), torch.zeros(1, size, size), False, boxes, str(e)
        small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        full_mask = np.zeros(image.shape[:2], bool)
        mask = np.zeros((size, size), np.float32)
        has_mask = False
        if self.use_given and s.mask_path is not None:
            try:
                full_mask = read_mask(s.mask_path, image.shape[:2])
                mask = cv2.resize(full_mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(np.float32)
                has_mask = True
            except ImageReadError as e:
                log.warning("%s: mask unusable (%s); predicting one", s.mask_path, e)
        found = find_marker_boxes(image[None], full_mask[None])[0][:MAX_BOXES]
        if found:
            sy, sx = size / image.shape[0], size / image.shape[1]
            scaled = [(int(x0 * sx), int(y0 * sy), int(np.ceil(x1 * sx)), int(np.ceil(y1 * sy))) for x0, y0, x1, y1 in found]
            boxes[: len(scaled)] = torch.tensor(scaled)
        return i, torch.from_numpy(small)[None], torch.from_numpy(mask)[None], has_mask, boxes, ""


def dataset_fingerprint(samples: Sequence[Sample], root: Path) -> str:
    """SHA-256 over (relative path, label, content hash) of the audited images, order-independent."""
    h = hashlib.sha256()
    for s in sorted(samples, key=lambda s: str(s.path)):
        try:
            rel = os.path.relpath(s.path, root)
        except ValueError:
            rel = str(s.path)
        h.update(f"{rel}\t{s.label}\t{sha256_file(s.path)}\n".encode())
    return h.hexdigest()


def _read_done(csv_path: Path) -> tuple[list[dict[str, str]], set[str]]:
    """Rows already written; a torn last line (crash mid-write) is cut off the file."""
    if not csv_path.is_file():
        return [], set()
    text = csv_path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        atomic_write_text(csv_path, text)
    rows = list(csv.DictReader(io.StringIO(text)))
    return rows, {r["key"] for r in rows}


def _fmt(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{float(v):.6g}"
    return "" if v is None else str(v)


def _two(v: float) -> str:
    """Two decimals for a person reading an overlay; the CSV keeps full precision."""
    return f"{float(v):.2f}" if np.isfinite(v) else "n/a"


def _overlay(
    image: np.ndarray, mask: np.ndarray, cam: np.ndarray, box: tuple[int, int, int, int] | None, lines: list[str], side: int = 320
) -> np.ndarray:
    """Image + Grad-CAM heatmap + lung contour (green) + marker box (cyan) + reasons, as BGR uint8."""
    scale = side / image.shape[0]
    gray = cv2.resize((image * 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_LINEAR)
    heat = cam / cam.max() if cam.max() > 0 else cam
    heat = cv2.applyColorMap(cv2.resize((heat * 255).astype(np.uint8), (side, side)), cv2.COLORMAP_JET)
    out = cv2.addWeighted(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), 0.55, heat, 0.45, 0)
    big_mask = cv2.resize(mask.astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big_mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (0, 255, 0), 1, cv2.LINE_AA)
    if box is not None:
        x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (255, 255, 0), 2)
    banner = np.zeros((16 * len(lines) + 6, side, 3), np.uint8)
    for k, line in enumerate(lines):
        cv2.putText(banner, line, (4, 14 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([out, banner])


def _safe_name(key: str, index: int) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(key).stem)[:60]
    return f"{index:06d}_{stem}.png"


def audit(
    dataset: Dataset,
    run_dir: Path,
    out_dir: Path,
    cfg: AuditConfig | None = None,
    *,
    device: str = "auto",
    resume: bool = True,
    progress: Callable[[int, int], None] | None = None,
    stop_after_chunks: int | None = None,
    num_workers: int = 1,
) -> AuditResult:
    """Audit every sample of ``dataset`` with the models in ``run_dir``; write ``out_dir``.

    ``stop_after_chunks`` raises KeyboardInterrupt after that many chunks (used to test resumption).
    """
    cfg = cfg or AuditConfig()
    dev = resolve_device(device)
    models = load_run(run_dir, dev)
    class_names = models.class_names
    unknown = sorted({s.label for s in dataset.samples if s.label is not None and s.label not in class_names})
    if unknown:
        raise ValueError(f"the data has classes {unknown} that the model in {run_dir} was not trained on ({class_names})")
    size = models.cls_cfg.image_size
    flag_on_flip = resolve_flag_on_flip(cfg.flag_on_flip, models.cls_cfg.mask_prob)
    if cfg.cam_floor not in ("mean", "none"):
        raise ValueError(f"audit.cam_floor must be 'mean' or 'none', got {cfg.cam_floor!r}")
    if cfg.cam_score not in CAM_SCORES:
        raise ValueError(f"audit.cam_score must be one of {', '.join(CAM_SCORES.names())}, got {cfg.cam_score!r}")
    out_dir = Path(out_dir)
    (out_dir / "partials").mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "audit.csv"
    columns = list(BASE_COLUMNS) + [f"p_{c}" for c in class_names]
    if not resume:
        for p in [csv_path, *(out_dir / "partials").glob("*.npz")]:
            p.unlink(missing_ok=True)
    done_rows, done_keys = _read_done(csv_path)
    if done_rows and list(done_rows[0].keys()) != columns:
        raise ValueError(f"{csv_path} was written for other classes/columns; audit into a new folder")
    for part in (out_dir / "partials").glob("*.npz"):
        if not set(np.load(part)["keys"].tolist()) <= done_keys:
            part.unlink()  # its rows never landed: the chunk will be redone
    todo = [s for s in dataset.samples if s.key not in done_keys]
    if not csv_path.is_file():
        atomic_write_text(csv_path, ",".join(columns) + "\n")

    need_seg = cfg.predict_masks or any(s.mask_path is None for s in todo)
    if need_seg and models.segmenter is None:
        raise ValueError(f"{len(todo)} image(s) need predicted lung masks but {run_dir} has no segmenter checkpoint")
    loader = DataLoader(
        _Decoded(todo, size, use_given_masks=not cfg.predict_masks),
        batch_size=cfg.batch_size,
        num_workers=num_workers if len(todo) > cfg.batch_size else 0,
        pin_memory=dev.type == "cuda",
    )
    problems: list[Problem] = []
    n_chunks = len(list((out_dir / "partials").glob("*.npz")))
    pending: list[dict[str, Any]] = []
    sums = torch.zeros(len(class_names), size, size, device=dev)
    counts = torch.zeros(len(class_names), device=dev)
    chunk_keys: list[str] = []
    processed = 0
    t0 = time.perf_counter()

    def flush() -> None:
        nonlocal pending, sums, counts, chunk_keys, n_chunks
        if not chunk_keys:
            return
        part = out_dir / "partials" / f"{n_chunks:05d}.npz"
        buf = io.BytesIO()
        np.savez(buf, keys=np.array(chunk_keys), sums=sums.cpu().numpy(), counts=counts.cpu().numpy())
        atomic_write_bytes(part, buf.getvalue())
        text = io.StringIO()
        csv.DictWriter(text, fieldnames=columns, lineterminator="\n").writerows(
            {k: _fmt(v) for k, v in row.items()} for row in pending
        )
        with open(csv_path, "a") as f:
            f.write(text.getvalue())
            f.flush()
            os.fsync(f.fileno())
        n_chunks += 1
        pending, chunk_keys = [], []
        sums.zero_()
        counts.zero_()
        if stop_after_chunks is not None and n_chunks >= stop_after_chunks:
            raise KeyboardInterrupt(f"simulated interruption after {n_chunks} chunk(s)")

    for idx, images, masks, has_mask, box_tensor, errors in loader:
        ok = torch.tensor([not e for e in errors])
        for i, e in zip(idx.tolist(), errors):
            if e:
                problems.append(Problem(todo[i].path, e, "image"))
        if not ok.any():
            continue
        idx, images, masks, has_mask, box_tensor = idx[ok], images[ok], masks[ok], has_mask[ok], box_tensor[ok]
        x = to_device(images, dev)
        m = masks.to(dev)
        mask_source = np.where(has_mask.numpy(), "given", "predicted")
        if (~has_mask).any():
            with torch.no_grad(), autocast(dev):
                seg_in = x[~has_mask.to(dev)]
                if models.seg_cfg.image_size != size:
                    seg_in = F.interpolate(seg_in, size=models.seg_cfg.image_size, mode="bilinear", align_corners=False)
                pred = models.segmenter(seg_in).float()
                pred = F.interpolate(pred, size=(size, size), mode="bilinear", align_corners=False)
            m[~has_mask.to(dev)] = (pred > 0).float()
        m = (m > 0.5).float()

        cam = compute_cam(models.classifier, x, cfg.target_layer, method=cfg.cam, out_size=(size, size), score=cfg.cam_score)
        heat = remove_floor(cam.cams) if cfg.cam_floor == "mean" else cam.cams
        probs_full = torch.softmax(cam.logits.float(), 1)
        gate = dilate_masks(m[:, 0], models.cls_cfg.mask_dilate_px)[:, None]
        x_masked = torch.where(gate > 0, x, torch.full_like(x, models.cls_cfg.fill_value))
        with torch.no_grad(), autocast(dev):
            probs_masked = torch.softmax(models.classifier(x_masked).float(), 1)

        tol_px = max(1, round(cfg.tolerance_px * size / 128))
        lungs = m[:, 0] > 0.5  # bool: the metric functions skip their binary check for it
        energy = lung_energy(heat, lungs, tol_px)
        pred_full, pred_masked, flip, drop = masking_counterfactual(probs_full, probs_masked)
        region_idx, _shares = dominant_region(heat, lungs, cfg.border_frac, tol_px)

        masks_np = lungs.cpu().numpy()
        boxes = [_outside_lungs(b, mk) for b, mk in zip(box_tensor.tolist(), masks_np)]
        pred_clean = pred_full.clone()
        if cfg.marker_counterfactual and any(boxes):
            holes = box_holes(boxes, (size, size), 3, dev) * (1 - dilate_masks(m[:, 0], 2))
            has = holes.flatten(1).amax(1) > 0
            with torch.no_grad(), autocast(dev):
                pred_clean[has] = models.classifier(fill_from_surroundings(x[has], holes[has])).float().argmax(1)
        marker_flip = pred_clean != pred_full
        flagged, reasons = flag(energy["e_out_tol"], flip, energy["no_evidence"], cfg.out_threshold, flag_on_flip,
                                marker_flip if cfg.marker_counterfactual else None)

        # Mean out-of-lung heatmap per predicted class: each map is scaled to unit energy first so
        # every image weighs the same, whatever its raw gradient magnitude.
        outside = heat * (1 - dilate_masks(m[:, 0], tol_px))
        unit = outside / heat.sum((1, 2), keepdim=True).clamp_min(1e-12)
        sums.index_add_(0, pred_full, unit)
        counts.index_add_(0, pred_full, torch.ones_like(pred_full, dtype=torch.float32))

        # Only the few scalars per image, and the pixels of flagged images, leave the device.
        images_np = images[:, 0].numpy()
        cams_np = heat.cpu().numpy()
        cols = {k: v.cpu().numpy() for k, v in energy.items()}
        pf, pm, fl, dr = pred_full.cpu().numpy(), pred_masked.cpu().numpy(), flip.cpu().numpy(), drop.cpu().numpy()
        pc, mf = pred_clean.cpu().numpy(), marker_flip.cpu().numpy()
        pfull, pmask = probs_full.cpu().numpy(), probs_masked.cpu().numpy()
        reg, fg = region_idx.cpu().numpy(), flagged.cpu().numpy()
        for j, i in enumerate(idx.tolist()):
            s = todo[i]
            overlap = hotspot_overlaps_marker(cams_np[j], masks_np[j], boxes[j])
            box = _pick_box(cams_np[j], boxes[j])
            row: dict[str, Any] = {
                "key": s.key, "path": str(s.path), "label": s.label, "source": s.source, "split": s.split,
                "mask_source": mask_source[j], "pred": class_names[pf[j]], "prob_pred": pfull[j, pf[j]],
                "pred_masked": class_names[pm[j]], "prob_masked": pmask[j, pf[j]], "prob_drop": dr[j], "flip": fl[j],
                "e_in": cols["e_in"][j], "e_in_tol": cols["e_in_tol"][j], "e_out": cols["e_out"][j],
                "e_out_tol": cols["e_out_tol"][j], "e_in_ratio": cols["e_in_ratio"][j], "lung_area": cols["lung_area"][j],
                "no_evidence": cols["no_evidence"][j], "region": REGION_NAMES[reg[j]] if reg[j] >= 0 else "",
                "marker_overlap": overlap, "marker_box": " ".join(map(str, box)) if box else "",
                "pred_without_markers": class_names[pc[j]], "marker_flip": mf[j],
                "flagged": fg[j], "reasons": ";".join(reasons[j]), "overlay": "",
            }  # fmt: skip
            row.update({f"p_{c}": pfull[j, k] for k, c in enumerate(class_names)})
            if fg[j] and cfg.overlays:
                rel = f"overlays/{_safe_name(s.key, len(done_keys) + processed + j)}"
                lines = [
                    f"pred {row['pred']} ({row['prob_pred']:.2f})" + (f"  true {s.label}" if s.label else ""),
                    f"E_in {_two(row['e_in'])} (tol {_two(row['e_in_tol'])})  region {row['region'] or '-'}",
                    "reasons: " + (row["reasons"] or "-"),
                ]
                # Overlays can be redrawn from the CSV row, so they skip the fsync that the rows get.
                atomic_write_png(out_dir / rel, _overlay(images_np[j], masks_np[j], cams_np[j], box, lines), durable=False)
                row["overlay"] = rel
            pending.append(row)
            chunk_keys.append(s.key)
        processed += len(idx)
        if progress is not None:
            progress(processed, len(todo))
        if len(chunk_keys) >= CHUNK:
            flush()
    flush()
    elapsed = time.perf_counter() - t0

    problems = list(dataset.problems) + problems
    rows, _ = _read_done(csv_path)
    summary = summarize(rows, class_names, out_dir)
    summary.update(
        {
            "schema_version": SCHEMA_VERSION,
            "lungaudit_version": __version__,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "run_dir": str(run_dir),
            "checkpoints": _checkpoint_info(models),
            "dataset": {
                "root": str(dataset.root),
                "layout": dataset.layout,
                "fingerprint": dataset_fingerprint(dataset.samples, dataset.root),
                "n_samples": len(dataset.samples),
                "splits": sorted({s.split for s in dataset.samples if s.split}),
            },
            "config": to_dict(cfg),
            "class_names": class_names,
            "problems": [{"path": str(p.path), "kind": p.kind, "reason": p.reason} for p in problems],
        }
    )
    summary["counts"]["problems"] = len(problems)
    summary["counts"]["images"] = len(dataset.samples) + sum(1 for p in dataset.problems if p.kind in ("image", "class"))
    summary["throughput_images_per_s"] = processed / elapsed if elapsed > 0 and processed else None
    summary = {k: summary[k] for k in _SUMMARY_ORDER if k in summary} | summary
    atomic_write_json(out_dir / "summary.json", summary)
    return AuditResult(out_dir, summary, processed / elapsed if elapsed > 0 else 0.0, len(done_keys), problems)


_SUMMARY_ORDER = ("schema_version", "lungaudit_version", "created", "run_dir", "checkpoints", "dataset", "config",
                  "class_names", "counts", "overall")  # fmt: skip


def resolve_flag_on_flip(setting: str | bool, mask_prob: float) -> bool:
    """``auto``: a masking flip is evidence only if the model saw masked images in training.

    A model trained with ``mask_prob=0`` has never seen a lung-masked film; its prediction on one is
    out of distribution, so a flip there says nothing about shortcuts (on the marker benchmark such
    a model flipped on 76% of test images, against 21% that truly relied on the marker).
    """
    value = str(setting).strip().lower()
    if value == "auto":
        return mask_prob > 0
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"audit.flag_on_flip must be auto, true or false, got {setting!r}")


def _outside_lungs(rows: list[list[int]], mask: np.ndarray, max_overlap: float = 0.1) -> list[tuple[int, int, int, int]]:
    """Valid boxes (padding rows dropped) that do not sit mainly on the lungs of the final mask."""
    keep = []
    for x0, y0, x1, y1 in rows:
        if x0 < 0 or x1 <= x0 or y1 <= y0:
            continue
        if mask[y0:y1, x0:x1].mean() <= max_overlap:
            keep.append((x0, y0, x1, y1))
    return keep


def _pick_box(cam: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int] | None:
    """The marker box holding the most heatmap energy (the one the overlay should point at)."""
    if not boxes:
        return None
    energy = [cam[y0:y1, x0:x1].sum() for x0, y0, x1, y1 in boxes]
    return tuple(int(v) for v in boxes[int(np.argmax(energy))])  # type: ignore[return-value]


def _checkpoint_info(models: TrainedModels) -> dict[str, Any]:
    info: dict[str, Any] = {"cls": {"path": str(models.cls_path), "sha256": sha256_file(models.cls_path)}}
    info["seg"] = {"path": str(models.seg_path), "sha256": sha256_file(models.seg_path)} if models.seg_path else None
    return info


def summarize(rows: list[dict[str, str]], class_names: list[str], out_dir: Path) -> dict[str, Any]:
    """Dataset aggregates from the audit rows, plus the mean out-of-lung heatmaps from the partials."""
    summary = aggregate_rows(rows, class_names)
    summary["mean_outside_images"] = write_mean_outside(out_dir, class_names)
    return summary
