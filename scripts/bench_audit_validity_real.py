"""Does the audit find the predictions that rest on a shortcut planted on real anatomy?

1. Plant label-correlated shortcuts (``lungaudit plant``) on a folder of real radiographs with lung
   masks: text markers, rulers, collimation bands and corner patches, pointing at the label at
   ``--rate`` in train/val and independent of it in test, with a clean twin of every test image.
2. Train two classifiers on it: ``mask_prob=0`` (classic, shortcut-prone) and the default mask mix.
3. Audit the test split with each, and score the audit against the twin-flip ground truth exactly as
   ``bench_audit_validity.py`` does on the phantoms (AUROC of E_out strict/tolerant, flag precision
   and recall, marker-flip precision and recall, reliance, accuracy on images vs twins).
4. Add what real films need: whether the flagged hotspot lands on the planted cue, per cue kind
   figures, and for every false alarm the most likely cause (a real marker already in the film, the
   planted cue seen but not relied on, heat at the lung edge, dark background/padding, elsewhere).

Prints one JSON summary; writes a BENCHMARKS.md section only with ``--record``.

    python scripts/bench_audit_validity_real.py --data ../shared/realsample/shenzhen --suffix-labels 0=Normal,1=TB
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import platform
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # this checkout's package, not another install
from _bench_common import write_benchmark_section  # noqa: E402
from _explain_leaderboard import add_leaderboard_args, check_leaderboard_args, record_leaderboard, run_leaderboard  # noqa: E402
from bench_audit_validity import boxes_overlap, score  # noqa: E402

from lungaudit.audit.markers import hotspot_overlaps_marker  # noqa: E402
from lungaudit.audit.metrics import REASONS, lung_energy, remove_floor, tolerant_lungs  # noqa: E402
from lungaudit.audit.regions import REGION_NAMES, region_labels  # noqa: E402
from lungaudit.audit.run import audit_dataset  # noqa: E402
from lungaudit.config import AuditConfig, TrainConfig, apply_overrides, load_config, replace  # noqa: E402
from lungaudit.data.imageio import read_image, read_mask  # noqa: E402
from lungaudit.data.layouts import load_dataset  # noqa: E402
from lungaudit.data.plant import PlantConfig, plant  # noqa: E402
from lungaudit.data.records import Sample  # noqa: E402
from lungaudit.explain.cam import compute_cam  # noqa: E402
from lungaudit.data.arrays import load_arrays  # noqa: E402
from lungaudit.training.cls import predict_probs  # noqa: E402
from lungaudit.training.pipeline import train  # noqa: E402
from lungaudit.runs.restore import TrainedModels, load_run  # noqa: E402

KEYS = ("reliance_rate", "auroc_e_out_tol", "auroc_e_out", "flag_precision", "flag_recall", "flag_rate",
        "marker_flip_precision", "marker_flip_recall", "masking_flip_rate", "flagged_in_marker_corner",
        "tp_hotspot_on_cue", "flagged_region_is_cues", "acc_images", "acc_twins")  # fmt: skip
# The packaged default recipe, as a user would train it: since issue 10 it visits a small set several
# times an epoch (cls.min_epoch_steps) and never keeps an epoch before cls.min_epochs, so it needs no
# small-set overrides any more. --set adds any.
SMALL_SET: tuple[str, ...] = ()
CAUSES = ("real_marker", "planted_cue_not_relied_on", "lung_edge", "dark_background", "elsewhere")


def _find_sample() -> Path:
    """The Shenzhen sample in ``shared/`` beside the checkout (or beside a worktree's parent)."""
    rel = "shared/realsample/shenzhen"
    return next((p / rel for p in ROOT.parents if (p / rel).is_dir()), ROOT.parent / rel)


def parse_args() -> argparse.Namespace:
    """Command-line options; the Shenzhen sample names its labels by suffix, so it needs none."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=_find_sample(), help="real radiographs with lung masks (any plantable layout)")
    ap.add_argument("--labels", type=Path, default=None, help="labels CSV (path or stem, label)")
    ap.add_argument("--suffix-labels", default=None, help="labels from the _suffix, e.g. 0=Normal,1=TB")
    ap.add_argument("--rate", type=float, default=0.9, help="P(cue points at the label) in train/val")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-frac", type=float, default=0.15)
    ap.add_argument("--test-frac", type=float, default=0.3, help="more test images than the generator's default: the scores need them")
    ap.add_argument("--image-size", type=int, default=128, help="classifier and audit resolution")
    ap.add_argument("--epochs", type=int, default=None, help="override cls.epochs")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override (a.b=value)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs/bench/validity_real")
    ap.add_argument("--reuse", action="store_true", help="reuse the classifiers an earlier run of this script trained")
    ap.add_argument("--record", action="store_true", help="write the BENCHMARKS.md section")
    ap.add_argument("--section", default=None, help="BENCHMARKS.md section (default: 'Audit validity on real anatomy "
                    "(planted shortcuts)', with --methods 'Explanation methods: audit validity on real anatomy')")
    ap.add_argument("--device", default="cpu", help="with --methods: where the methods run")
    add_leaderboard_args(ap)
    args = ap.parse_args()
    if args.labels is None and args.suffix_labels is None and args.data.name.lower() == "shenzhen":
        args.suffix_labels = "0=Normal,1=TB"  # the sample's own naming
    check_leaderboard_args(ap, args)
    if not args.data.exists():
        sys.exit(f"{args.data} not found: give --data (a folder of real radiographs with lung masks)")
    return args


def plant_data(args: argparse.Namespace) -> Path:
    """Plant into ``OUT/data`` (byte-identical on a rerun, so reused classifiers stay valid)."""
    data_dir = args.out / "data"
    cfg = PlantConfig(rate=args.rate, seed=args.seed, val_frac=args.val_frac, test_frac=args.test_frac)
    result = plant(args.data, data_dir, cfg, labels=args.labels, suffix_labels=args.suffix_labels)
    if result.problems:
        print(f"{len(result.problems)} input problem(s); see {data_dir / 'problems.csv'}", file=sys.stderr)
    return data_dir


def model_configs(args: argparse.Namespace, data_dir: Path) -> dict[str, TrainConfig]:
    """The two recipes compared: ``mask_prob=0`` and the default mask mix, otherwise the default config."""
    base = apply_overrides(load_config(ROOT / "lungaudit/configs/default.yaml"), [*SMALL_SET, *args.overrides])
    data = replace(base.data, root=str(data_dir), layout="manifest")
    out = {}
    for mask_prob in (0.0, base.cls.mask_prob):
        cls = replace(base.cls, mask_prob=mask_prob, image_size=args.image_size, epochs=args.epochs or base.cls.epochs)
        label = "mask_prob=0" if mask_prob == 0 else f"mask_prob={mask_prob:g} (default)"
        out[label] = replace(base, seed=args.seed, cls=cls, data=data, project=str(args.out), name=f"mp{mask_prob:g}")
    return out


def twin_predictions(models: TrainedModels, test: list[Sample]) -> dict[str, str]:
    """The model's prediction on each test image's clean twin, by sample key."""
    twins = load_arrays([Sample(path=Path(s.extra["twin"]), label=s.label) for s in test], models.cls_cfg.image_size)
    probs = predict_probs(models.classifier, twins.images, 64)
    return {s.key: models.class_names[k] for s, k in zip(test, probs.argmax(1))}


def scaled_box(text: str, shape: tuple[int, int], size: int) -> tuple[int, int, int, int] | None:
    """A planted box (image pixels) at the audit's resolution: every film is resized to size x size."""
    if not text:
        return None
    x0, y0, x1, y1 = (float(v) for v in text.split(";")[0].split())
    sy, sx = size / shape[0], size / shape[1]
    return int(x0 * sx), int(y0 * sy), max(int(x0 * sx) + 1, int(np.ceil(x1 * sx))), max(int(y0 * sy) + 1, int(np.ceil(y1 * sy)))


def load_audit_inputs(test: list[Sample], size: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, tuple | None]]:
    """Images and masks as the audit sees them (INTER_AREA / nearest to size x size), planted boxes scaled."""
    images, masks, boxes = [], [], {}
    for s in test:
        img = read_image(s.path)
        images.append(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))
        m = read_mask(s.mask_path, img.shape).astype(np.uint8)
        masks.append(cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST))
        boxes[s.key] = scaled_box(s.extra.get("shortcut_box", ""), img.shape, size)
    return torch.from_numpy(np.stack(images))[:, None], torch.from_numpy(np.stack(masks)).bool(), boxes


def heatmaps(models: TrainedModels, cfg: AuditConfig, x: torch.Tensor) -> torch.Tensor:
    """The audit's heatmaps (same CAM, score and floor) for a batch, on the CPU."""
    cams = []
    for chunk in torch.split(x, 32):
        res = compute_cam(models.classifier, chunk, cfg.target_layer, method=cfg.cam, out_size=tuple(chunk.shape[-2:]), score=cfg.cam_score)
        cams.append(remove_floor(res.cams) if cfg.cam_floor == "mean" else res.cams)
    return torch.cat(cams).float().cpu()


def _box_str(box: tuple[int, int, int, int] | None) -> str:
    return "" if box is None else " ".join(map(str, box))


def _hotspot(heat: np.ndarray, lungs: np.ndarray) -> tuple[int, int] | None:
    outside = np.where(lungs, 0.0, heat)
    if outside.max() <= 0:
        return None
    y, x = np.unravel_index(int(outside.argmax()), outside.shape)
    return int(y), int(x)


def _box_region(labels: np.ndarray, box: tuple[int, int, int, int] | None) -> str:
    """The region (audit naming) holding most of a planted box's pixels."""
    if box is None:
        return ""
    x0, y0, x1, y1 = box
    inside = labels[y0:y1, x0:x1].ravel()
    inside = inside[inside >= 0]
    return REGION_NAMES[int(np.bincount(inside).argmax())] if inside.size else ""


def _corner(y: float, x: float, size: int, frac: float = 0.3) -> str:
    """``TL``/``TR``/``BL``/``BR`` when (y, x) lies within ``frac`` of the side from both edges of a corner."""
    lo, hi = frac * size, (1 - frac) * size
    v = "T" if y < lo else "B" if y >= hi else ""
    h = "L" if x < lo else "R" if x >= hi else ""
    return v + h if v and h else ""


def _cause(f: dict[str, Any], near: float) -> str:
    """Most likely reason a flag fired on a prediction that does not rest on the planted cue."""
    if f["on_real_marker"]:
        return "real_marker"
    if f["on_cue"]:
        return "planted_cue_not_relied_on"
    if f["hotspot_dist_to_lung"] is not None and f["hotspot_dist_to_lung"] <= near:
        return "lung_edge"
    if f["dark"]:
        return "dark_background"
    return "elsewhere"


def describe_flags(rows: list[dict], ctx: dict[str, Any], cfg: AuditConfig, cell: int) -> list[dict[str, Any]]:
    """Per flagged image: reliant or not, where its counted heat is, what it sits on, and the likely cause.

    The audit counts heat outside the lungs dilated by its tolerance; the hotspot here is the hottest
    such pixel. It is "at the lung edge" when it lies within half a CAM cell of the tolerance band,
    i.e. where a coarse CAM spills heat from inside the lungs; ``edge_share`` is the part of the
    counted heat within one cell of the band.
    """
    heat, masks, x, boxes, twin_pred = ctx["heat"], ctx["masks"], ctx["x"], ctx["boxes"], ctx["twin_pred"]
    size = masks.shape[-1]
    tol = max(1, round(cfg.tolerance_px * size / 128))
    counted = heat * (1 - tolerant_lungs(masks, tol, cfg.fill_lungs))
    labels = region_labels(masks, cfg.border_frac).numpy()
    wide = lung_energy(heat, masks, tol + cell, fill=cfg.fill_lungs)["e_out_tol"].numpy()  # one CAM cell more tolerance
    out = []
    for i, r in enumerate(rows):
        if r["flagged"] != "true":
            continue
        h, m, c, box = heat[i].numpy(), masks[i].numpy(), counted[i].numpy(), boxes[r["key"]]
        dist = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, 3)
        spot = _hotspot(c, np.zeros_like(m))
        y, xx = spot if spot else (0, 0)
        real = r["marker_overlap"] == "true" and not (box and boxes_overlap(r["marker_box"], _box_str(box), 1.0))
        f = {
            "key": Path(r["key"]).name, "label": r["label"], "pred": r["pred"], "kind": ctx["kinds"][r["key"]],
            "reliant": twin_pred[r["key"]] != r["pred"], "reasons": r["reasons"], "region": r["region"],
            "hotspot_region": REGION_NAMES[labels[i, y, xx]] if spot and labels[i, y, xx] >= 0 else "",
            "cue_region": _box_region(labels[i], box),
            "hotspot_corner": _corner(y, xx, size) if spot else "",
            "cue_corner": _corner((box[1] + box[3]) / 2, (box[0] + box[2]) / 2, size) if box else "",
            "on_cue": bool(box) and hotspot_overlaps_marker(h, m, [box]), "on_real_marker": bool(real),
            "hotspot_dist_to_lung": round(float(dist[y, xx]), 1) if spot else None,
            "edge_share": round(float(c[dist <= tol + cell].sum() / c.sum()), 3) if c.sum() > 0 else 0.0,
            "dark": bool(spot) and float(x[i, 0, max(0, y - 2) : y + 3, max(0, xx - 2) : xx + 3].mean()) < 0.1,
            "cleared_by_one_cell_tolerance": r["reasons"] == REASONS[0] and float(wide[i]) <= cfg.out_threshold,
        }  # fmt: skip
        f["cause"] = "" if f["reliant"] else _cause(f, tol + cell / 2)
        out.append(f)
    return out


def flag_summary(flags: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts for the report: why false alarms fire, and where true flags point."""
    fp = [f for f in flags if not f["reliant"]]
    tp = [f for f in flags if f["reliant"]]
    return {
        "false_alarms": len(fp),
        "false_alarm_causes": {c: sum(f["cause"] == c for f in fp) for c in CAUSES},
        "false_alarm_labels": dict(Counter(f["label"] for f in fp)),
        "false_alarm_regions": dict(Counter(f["region"] or "-" for f in fp)),
        "false_alarm_reasons": dict(Counter(f["reasons"] for f in fp)),
        "false_alarm_region_named_elsewhere_than_hotspot": sum(f["region"] != f["hotspot_region"] for f in fp),
        "false_alarms_cleared_by_one_cell_tolerance": sum(f["cleared_by_one_cell_tolerance"] for f in fp),
        "lung_edge_false_alarms_by_label": dict(Counter(f["label"] for f in fp if f["cause"] == "lung_edge")),
        "true_flags": len(tp),
        "true_flags_hotspot_on_cue": sum(f["on_cue"] for f in tp),
        "true_flags_hotspot_in_cue_corner": sum(bool(f["cue_corner"]) and f["hotspot_corner"] == f["cue_corner"] for f in tp),
        "true_flags_hotspot_in_another_corner": sum(bool(f["hotspot_corner"]) and f["hotspot_corner"] != f["cue_corner"] for f in tp),
        "true_flags_by_kind": dict(Counter(f["kind"] for f in tp)),
        "hotspot_dist_to_lung_true_flags": sorted(f["hotspot_dist_to_lung"] for f in tp if f["hotspot_dist_to_lung"] is not None),
        "hotspot_dist_to_lung_false_alarms": sorted(f["hotspot_dist_to_lung"] for f in fp if f["hotspot_dist_to_lung"] is not None),
    }


def per_kind(rows: list[dict], twin_pred: dict[str, str], kinds: dict[str, str]) -> dict[str, dict[str, float]]:
    """Reliance, flag rate and recall per planted cue kind."""
    out = {}
    for kind in sorted(set(kinds.values())):
        sub = [r for r in rows if kinds[r["key"]] == kind]
        reliant = np.array([twin_pred[r["key"]] != r["pred"] for r in sub])
        flagged = np.array([r["flagged"] == "true" for r in sub])
        out[kind or "(none)"] = {
            "n": len(sub),
            "reliance_rate": float(reliant.mean()),
            "flag_rate": float(flagged.mean()),
            "flag_recall": float((flagged & reliant).sum() / reliant.sum()) if reliant.any() else None,
        }
    return out


def trained(cfg: TrainConfig, args: argparse.Namespace) -> tuple[Path, float]:
    """The classifier's run folder, trained unless ``--reuse`` finds it, and the seconds its training took."""
    run_dir = args.out / "train" / cfg.name
    t0 = time.perf_counter()
    if not (args.reuse and (run_dir / "weights" / "cls_best.pt").is_file()):
        train(cfg, stage="cls", run_dir=run_dir)
        return run_dir, time.perf_counter() - t0
    # the time the reused run took, not the time it took to skip it
    return run_dir, json.loads((run_dir / "test_metrics.json").read_text())["stage_times_s"].get("cls", 0.0)


def evaluate(cfg: TrainConfig, data_dir: Path, test: list[Sample], args: argparse.Namespace) -> dict[str, Any]:
    """Train (or reuse) one classifier, audit the test split, and score the audit against the twins."""
    run_dir, train_s = trained(cfg, args)
    audit_dir = args.out / "audit" / cfg.name
    ds = load_dataset(data_dir)
    ds.samples = test
    shutil.rmtree(audit_dir, ignore_errors=True)  # a rerun (--reuse, other --set) audits afresh
    res = audit_dataset(ds, run_dir, audit_dir, cfg.audit, resume=False)
    # audit.csv keys are relative to the data root; the benchmark indexes samples by their path
    by_key = {r["path"]: {**r, "key": r["path"]} for r in csv.DictReader(open(audit_dir / "audit.csv", newline=""))}
    rows = [by_key[s.key] for s in test]
    models = load_run(run_dir, torch.device("cpu"))
    size = models.cls_cfg.image_size
    x, masks, boxes = load_audit_inputs(test, size)
    ctx = {
        "heat": heatmaps(models, cfg.audit, x), "masks": masks, "x": x, "boxes": boxes,
        "twin_pred": twin_predictions(models, test), "kinds": {s.key: s.extra.get("shortcut", "") for s in test},
    }  # fmt: skip
    flags = describe_flags(rows, ctx, cfg.audit, cell=models.cls_cfg.output_stride)
    (audit_dir / "flags.json").write_text(json.dumps(flags, indent=2))
    planted = {k: _box_str(b) for k, b in boxes.items()}
    result = score(rows, ctx["twin_pred"], planted, 1.0)  # boxes already at the audit's resolution
    summary = flag_summary(flags)
    tp = summary["true_flags"]
    result["tp_hotspot_on_cue"] = summary["true_flags_hotspot_on_cue"] / tp if tp else None
    result["flagged_region_is_cues"] = float(np.mean([f["region"] == f["cue_region"] for f in flags])) if flags else None
    missed = [  # shortcut-reliant predictions the audit let through, and how far from flagging they were
        {"key": Path(r["key"]).name, "kind": ctx["kinds"][r["key"]], "e_out_tol": r["e_out_tol"], "region": r["region"]}
        for r in rows
        if r["flagged"] != "true" and ctx["twin_pred"][r["key"]] != r["pred"]
    ]
    return result | {
        "per_kind": per_kind(rows, ctx["twin_pred"], ctx["kinds"]),
        "missed_reliant": missed,
        "flags": summary,
        "train_s": round(train_s, 1),
        "audit_images_per_s": round(res.images_per_s, 1),
        "audit_dir": str(audit_dir),
    }


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def record(args: argparse.Namespace, results: dict[str, dict], info: dict[str, Any]) -> None:
    """The BENCHMARKS.md section: settings, the phantom benchmark's metrics, then the false-alarm causes."""
    cmd = " ".join(["python scripts/bench_audit_validity_real.py", *sys.argv[1:]])
    lines = [
        f"Measured {dt.date.today()} on {platform.machine()} CPU ({torch.get_num_threads()} threads), torch {torch.__version__}; "
        f"wall time {info['wall_s'] / 60:.1f} min. Command: `{cmd}`.",
        f"Planted set: {info['n_images']} real films ({', '.join(info['class_names'])}), one cue each "
        f"({', '.join(f'{k} {n}' for k, n in info['kinds'].items())}), cue pointing at the label at {args.rate} in "
        f"train/val and independent in test; {info['n_test']} test images with clean twins; classifier and audit at "
        f"{args.image_size} px. Ground truth: a prediction is shortcut-reliant when it changes on the clean twin.",
        "",
        "| metric | " + " | ".join(results) + " |",
        "|---|" + "---:|" * len(results),
    ]
    lines += [f"| {k} | " + " | ".join(_fmt(results[m][k]) for m in results) + " |" for k in KEYS]
    lines += ["", "False alarms (flagged, not reliant) by most likely cause:", "",
              "| cause | " + " | ".join(results) + " |", "|---|" + "---:|" * len(results)]  # fmt: skip
    for c in CAUSES:
        lines.append(f"| {c} | " + " | ".join(str(results[m]["flags"]["false_alarm_causes"][c]) for m in results) + " |")
    write_benchmark_section(ROOT / "BENCHMARKS.md", args.section or "Audit validity on real anatomy (planted shortcuts)", "\n".join(lines))


def score_methods(args: argparse.Namespace, ds: Any, data_dir: Path, test: list[Sample], info: dict[str, Any]) -> None:
    """The explanation-method leaderboard (issue 13) on the planted real films: the same trained runs, test
    twins and validation-calibrated thresholds as ``bench_audit_validity.py --methods``."""
    wanted = args.models.split(",")
    results = {}
    for label, cfg in model_configs(args, data_dir).items():
        if ("mp0" if cfg.cls.mask_prob == 0 else "default") not in wanted:
            continue
        run_dir, _ = trained(cfg, args)
        models = load_run(run_dir, torch.device(args.device))
        print(f"leaderboard on {run_dir}", file=sys.stderr)
        results[label] = run_leaderboard(args, models, cfg.audit, test, ds.split("val"), twin_predictions(models, test),
                                         say=lambda m: print(m, file=sys.stderr))  # fmt: skip
    cmd = " ".join(["python scripts/bench_audit_validity_real.py", *sys.argv[1:]])
    head = (
        f"Measured {dt.date.today()} on {platform.machine()} {args.device.upper()} ({torch.get_num_threads()} thread(s)), "
        f"torch {torch.__version__}. Command: `{cmd}` (planted real films: {info['n_images']} from {Path(info['data']).name}, "
        f"cue rate {args.rate} in train/val, independent in test; {info['n_test']} test images at {args.image_size} px). "
        "Ground truth: a prediction is shortcut-reliant when it changes on the clean twin."
    )
    section = (args.section or "Explanation methods: audit validity on real anatomy") if args.record else None
    record_leaderboard(results, args.out / "leaderboard.json", ROOT / "BENCHMARKS.md", section, head, say=Console(stderr=True).print)
    print(json.dumps(results, indent=2))


def main() -> None:
    """Plant, train both models, audit, score; print the JSON summary (and record it with --record)."""
    args = parse_args()
    t0 = time.perf_counter()
    data_dir = plant_data(args)
    ds = load_dataset(data_dir)
    test = ds.split("test")
    if args.methods:
        score_methods(args, ds, data_dir, test, {"data": str(args.data), "n_images": len(ds.samples), "n_test": len(test)})
        return
    results = {label: evaluate(cfg, data_dir, test, args) for label, cfg in model_configs(args, data_dir).items()}
    info = {
        "data": str(args.data), "n_images": len(ds.samples), "n_test": len(test), "class_names": list(ds.class_names),
        "kinds": dict(sorted(Counter(s.extra.get("shortcut", "") for s in ds.samples).items())),
        "rate": args.rate, "image_size": args.image_size, "wall_s": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    summary = {"info": info, "models": results}
    (args.out / "validity_real.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    if args.record:
        record(args, results, info)


if __name__ == "__main__":
    main()
