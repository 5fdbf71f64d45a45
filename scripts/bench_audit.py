"""End-to-end audit throughput against the sum-of-forward-passes limit of its models.

The audit has to run the classifier three times (full image with the Grad-CAM, lung-masked image,
image with its detected markers painted over; every synthetic image carries a marker) and, where
masks are predicted, the U-Net once. Those plain no-grad forwards on already-decoded tensors are the limit;
the whole ``audit`` (decode -> segment -> classify twice -> CAM -> metrics -> write) is timed
against it on the same images, model and device.

    python scripts/bench_audit.py                     # CPU, given masks and predicted masks
    python scripts/bench_audit.py --device cuda
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from _bench_common import write_benchmark_section  # noqa: E402

from lungaudit.audit.run import audit_dataset as audit  # noqa: E402
from lungaudit.classification.model import build_classifier  # noqa: E402
from lungaudit.config import AuditConfig, ClsConfig, SegConfig, SynthConfig, to_dict  # noqa: E402
from lungaudit.data.layouts import load_dataset  # noqa: E402
from lungaudit.data.synth import generate  # noqa: E402
from lungaudit.segmentation.model import build_segmenter  # noqa: E402
from lungaudit.runs.checkpoint import Checkpoint, save_checkpoint  # noqa: E402
from lungaudit.device import prepare_model  # noqa: E402

console = Console()


def make_run(run: Path, cls_cfg: ClsConfig, seg_cfg: SegConfig, class_names: list[str]) -> None:
    """Untrained weights are enough: throughput does not depend on what the weights are."""
    torch.manual_seed(0)
    for kind, cfg, model in (("cls", cls_cfg, build_classifier(cls_cfg, 4)), ("seg", seg_cfg, build_segmenter(seg_cfg))):
        save_checkpoint(Checkpoint(kind=kind, config=to_dict(cfg), class_names=class_names if kind == "cls" else ["lung"],
                                   model_state=model.state_dict(), epoch=1, best_metric=0.0), run / "weights" / f"{kind}_best.pt")


@torch.no_grad()
def forward_limit(model: torch.nn.Module, x: torch.Tensor, batch: int, device: torch.device, reps: int = 2) -> float:
    """Seconds for plain forwards over ``x`` (already decoded and resized), best of ``reps``."""
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for i in range(0, len(x), batch):
            model(x[i : i + batch].to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-per-class", type=int, default=100)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "runs/bench/audit_speed")
    ap.add_argument("--run", type=Path, default=ROOT / "runs/train/default",
                    help="trained run to audit with (its flag rate sets the overlay work); untrained weights if absent")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)

    data = args.out / f"data_{args.n_per_class}_{args.size}"
    if not (data / "manifest.csv").is_file():
        generate(data, SynthConfig(n_per_class=args.n_per_class, size=args.size, seed=1))
    ds = load_dataset(data)
    if (args.run / "weights" / "cls_best.pt").is_file():
        from lungaudit.runs.restore import load_run

        run = args.run
        trained = load_run(run, torch.device("cpu"))
        cls_cfg, seg_cfg = trained.cls_cfg, trained.seg_cfg or SegConfig()
    else:
        cls_cfg, seg_cfg = ClsConfig(), SegConfig()
        run = args.out / "run"
        make_run(run, cls_cfg, seg_cfg, list(ds.class_names))

    from lungaudit.data.arrays import load_arrays

    arrays = load_arrays(ds.samples, cls_cfg.image_size)
    x = torch.from_numpy(arrays.images[:, None])
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    cls_model = prepare_model(build_classifier(cls_cfg, 4), device).eval()
    seg_model = prepare_model(build_segmenter(seg_cfg), device).eval()
    t_cls = forward_limit(cls_model, x, args.batch_size, device)
    t_seg = forward_limit(seg_model, x, args.batch_size, device)
    n = len(ds.samples)

    results = []
    for label, predict, limit_s in (
        ("given masks (3 classifier forwards)", False, 3 * t_cls),
        ("predicted masks (3 classifier + 1 U-Net forwards)", True, 3 * t_cls + t_seg),
    ):
        out = args.out / ("audit_pred" if predict else "audit_given")
        shutil.rmtree(out, ignore_errors=True)
        cfg = AuditConfig(batch_size=args.batch_size, predict_masks=predict)
        audit(ds, run, out, cfg, device=args.device, resume=False, num_workers=args.workers)  # warm-up pass
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        res = audit(ds, run, out, cfg, device=args.device, resume=False, num_workers=args.workers)
        wall = time.perf_counter() - t0
        results.append({
            "mode": label, "images": n, "limit_images_per_s": n / limit_s, "audit_images_per_s": n / wall,
            "ratio": limit_s / wall, "flagged": res.summary.counts.flagged,
        })

    table = Table(title=f"audit throughput, {n} images at {args.size} px -> {cls_cfg.image_size} px, {device}")
    for c in ("mode", "limit img/s", "audit img/s", "audit / limit"):
        table.add_column(c, justify="left" if c == "mode" else "right")
    for r in results:
        table.add_row(r["mode"], f"{r['limit_images_per_s']:.1f}", f"{r['audit_images_per_s']:.1f}", f"{r['ratio']:.2f}x")
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"results_{device.type}.json").write_text(json.dumps(results, indent=2))
    if args.no_record:
        return
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    lines = [
        f"Measured {dt.date.today()} on {name}, torch {torch.__version__}; `python scripts/bench_audit.py --device {device.type}`.",
        f"{n} synthetic images at {args.size} px, classifier {cls_cfg.arch} at {cls_cfg.image_size} px, batch {args.batch_size}, "
        f"{args.workers} decode worker(s), models from `{run.relative_to(ROOT) if run.is_relative_to(ROOT) else run}`. "
        "The limit is the sum of plain no-grad forwards on pre-decoded tensors.",
        "",
        "| mode | limit img/s | audit img/s | audit / limit | flagged |",
        "|---|---:|---:|---:|---:|",
        *[f"| {r['mode']} | {r['limit_images_per_s']:.1f} | {r['audit_images_per_s']:.1f} | {r['ratio']:.2f}x | {r['flagged']}/{r['images']} |" for r in results],
    ]
    write_benchmark_section(ROOT / "BENCHMARKS.md", f"Audit throughput ({device.type})", "\n".join(lines))


if __name__ == "__main__":
    main()
