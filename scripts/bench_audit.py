"""End-to-end audit throughput against the sum-of-forward-passes limit of its models.

The audit has to run the classifier three times (full image with the Grad-CAM, lung-masked image,
image with its detected markers painted over; every synthetic image carries a marker) and, where
masks are predicted, the U-Net once. Those plain no-grad forwards on already-decoded tensors are the limit;
the whole ``audit`` (decode -> segment -> classify twice -> CAM -> metrics -> write) is timed
against it on the same images, model and device.

    python scripts/bench_audit.py                     # CPU, given masks and predicted masks
    python scripts/bench_audit.py --device cuda
    python scripts/bench_audit.py --sizes 512,1024,2048,3000 --sweep-data ../shared/realsample/shenzhen

The image-size sweep stores the same images at each side and measures, per side: decoding, the
burned-in marker search (at its bounded working resolution, and once at full resolution as the
design it replaced), and a whole audit's images/s and peak memory (each size audited in a fresh
process, so its peak RSS is its own).
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

import numpy as np
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


def _sweep_images(src: Path, n: int) -> list[tuple[Path, Path | None]]:
    """(image, mask or None) pairs from a seg-only folder (images/ + masks/) or any data set."""
    ds = load_dataset(src)
    return [(s.path, s.mask_path) for s in ds.samples[:n]]


def _write_sized(pairs: list[tuple[Path, Path | None]], side: int, out: Path) -> Path:
    """The images (and masks) resized to ``side`` x ``side`` as 8-bit PNGs, with a manifest."""
    import cv2

    from lungaudit.data.imageio import read_image, read_mask

    rows = ["path,label,mask"]
    for k, (img_path, mask_path) in enumerate(pairs):
        img = read_image(img_path)
        big = cv2.resize(img, (side, side), interpolation=cv2.INTER_CUBIC if side > img.shape[0] else cv2.INTER_AREA)
        name = f"img_{k:03d}.png"
        (out / "images").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / "images" / name), np.clip(big * 255 + 0.5, 0, 255).astype(np.uint8))
        mask_rel = ""
        if mask_path is not None:
            m = read_mask(mask_path, img.shape)
            (out / "masks").mkdir(exist_ok=True)
            cv2.imwrite(str(out / "masks" / name), cv2.resize(m.astype(np.uint8) * 255, (side, side), interpolation=cv2.INTER_NEAREST))
            mask_rel = f"masks/{name}"
        rows.append(f"images/{name},{['COVID', 'Normal'][k % 2]},{mask_rel}")
    (out / "manifest.csv").write_text("\n".join(rows) + "\n")
    return out


def _time_per_image(fn, items: list) -> float:
    t0 = time.perf_counter()
    for it in items:
        fn(it)
    return (time.perf_counter() - t0) / max(1, len(items))


_CHILD = """
import json, resource, sys, time
import lungaudit as la
t0 = time.perf_counter()
res = la.audit(sys.argv[1], run=sys.argv[2], out_dir=sys.argv[3], num_workers=0, device="cpu")
wall = time.perf_counter() - t0
# VmHWM, not ru_maxrss: a child keeps the parent's peak across fork+exec in ru_maxrss (the parent holds
# the decoded films of the timing loop), while VmHWM belongs to this process's own memory map
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"images_per_s": res.summary.counts.audited / wall, "max_rss_mb": hwm / 1024}))
"""


def size_sweep(args: argparse.Namespace) -> None:
    """Decode, marker-search and audit cost per image side (issue 10: cost independent of image size)."""
    import subprocess

    from lungaudit.audit.markers import find_marker_boxes, markers_at_working_resolution
    from lungaudit.data.imageio import read_image, read_mask

    pairs = _sweep_images(args.sweep_data, args.n_per_class)
    run = args.out / "run"
    make_run(run, ClsConfig(), SegConfig(), ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"])
    results = []
    for side in [int(s) for s in args.sizes.split(",")]:
        folder = _write_sized(pairs, side, args.out / f"sweep_{side}")
        ds = load_dataset(folder / "manifest.csv")
        files = [(s.path, s.mask_path) for s in ds.samples]
        decoded = [(read_image(p), read_mask(m, (side, side)) if m else None) for p, m in files]
        decode_s = _time_per_image(lambda f: read_image(f[0]), files)
        marker_s = _time_per_image(lambda d: markers_at_working_resolution(d[0], d[1], 512, (128, 128)), decoded)
        full = decoded[: args.full_res_images]
        full_s = _time_per_image(lambda d: find_marker_boxes(d[0][None], (d[1] if d[1] is not None else np.zeros_like(d[0], bool))[None]), full)
        shutil.rmtree(args.out / f"audit_{side}", ignore_errors=True)
        child = subprocess.run([sys.executable, "-c", _CHILD, str(folder / "manifest.csv"), str(run), str(args.out / f"audit_{side}")],
                               capture_output=True, text=True, check=True)
        results.append({"side": side, "images": len(files), "decode_ms": 1e3 * decode_s, "marker_ms": 1e3 * marker_s,
                        "marker_full_res_ms": 1e3 * full_s, **json.loads(child.stdout.strip().splitlines()[-1])})
        console.print(results[-1])
    base = next((r for r in results if r["side"] == 1024), results[0])
    for r in results:
        r["marker_vs_1024"] = r["marker_ms"] / base["marker_ms"]
    _record_sweep(args, results)


def _record_sweep(args: argparse.Namespace, results: list[dict]) -> None:
    table = Table(title="audit cost per image side")
    heads = ("side", "decode ms", "marker ms (bounded)", "x 1024 px", "marker ms (full res, before)", "audit img/s", "peak RSS MB")
    for h in heads:
        table.add_column(h, justify="right")
    rows = [[f"{r['side']}", f"{r['decode_ms']:.1f}", f"{r['marker_ms']:.1f}", f"{r['marker_vs_1024']:.2f}",
             f"{r['marker_full_res_ms']:.0f}", f"{r['images_per_s']:.1f}", f"{r['max_rss_mb']:.0f}"] for r in results]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    console.print(table)
    (args.out / "size_sweep.json").write_text(json.dumps(results, indent=2))
    if args.no_record:
        return
    src = args.sweep_data.name
    lines = [
        f"Measured {dt.date.today()} on {platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"`python scripts/bench_audit.py --sizes {args.sizes} --sweep-data <{src}> --n-per-class {args.n_per_class}` "
        f"({results[0]['images']} radiographs from `{src}`, stored at each side as 8-bit PNG; untrained resnet18 at 128 px; "
        f"the full-resolution marker search, the design before, timed on {args.full_res_images} image(s) per side; "
        "peak RSS of a fresh process auditing that side).",
        "",
        "| " + " | ".join(heads) + " |",
        "|" + "---:|" * len(heads),
        *["| " + " | ".join(row) + " |" for row in rows],
    ]
    write_benchmark_section(ROOT / "BENCHMARKS.md", "Audit cost per image size (cpu)", "\n".join(lines))


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
    ap.add_argument("--sizes", default="", help="comma list of sides for the image-size sweep, e.g. 512,1024,2048,3000")
    ap.add_argument("--sweep-data", type=Path, default=None, help="images for the sweep (default: the synthetic set)")
    ap.add_argument("--full-res-images", type=int, default=2, help="images per side for the full-resolution marker timing")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.sizes:
        if args.sweep_data is None:
            args.sweep_data = args.out / f"data_{args.n_per_class}_{args.size}"
            if not (args.sweep_data / "manifest.csv").is_file():
                generate(args.sweep_data, SynthConfig(n_per_class=args.n_per_class, size=args.size, seed=1))
        return size_sweep(args)

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
