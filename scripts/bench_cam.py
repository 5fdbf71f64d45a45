"""Grad-CAM throughput: lungaudit's compute_cam against a plain forward, pytorch-grad-cam and Captum.

One process, one model (resnet18 from build_classifier, eval mode, random weights: speed does not
depend on them), one batch, the same per-sample targets for every method. Methods run round-robin
(rotating the order) inside each repetition so that load from other processes hits them alike; the median is reported.

    python scripts/bench_cam.py                      # CPU, 32x1x128x128, all cores
    python scripts/bench_cam.py --sizes 128,224 --reps 9
    python scripts/bench_cam.py --device cuda --batch 64

Writes runs/bench/cam_<device>_<stamp>.{csv,json} and replaces the "## Grad-CAM speed" section of
BENCHMARKS.md (other sections are left as they are); --no-write-md skips that.
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime as dt
import json
import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from rich.console import Console
from rich.table import Table

from lungaudit.classification.model import build_classifier
from lungaudit.config import ClsConfig
from lungaudit.explain import compute_cam

SECTION = "## Grad-CAM speed"


def make_methods(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor) -> dict[str, Callable[[], object]]:
    from captum.attr import LayerAttribution, LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    size = tuple(x.shape[-2:])
    # pytorch-grad-cam registers hooks and fills .grad: give it its own copy so it cannot slow the others.
    pgc_model = copy.deepcopy(model)
    pgc = GradCAM(model=pgc_model, target_layers=[pgc_model.layer4[-1]])
    pgc_targets = [ClassifierOutputTarget(int(t)) for t in targets]
    captum = LayerGradCam(model, model.layer4)

    def forward() -> object:
        with torch.no_grad():
            return model(x)

    def ours() -> object:
        return compute_cam(model, x, "layer4", targets=targets).cams

    def pytorch_grad_cam() -> object:
        return pgc(input_tensor=x, targets=pgc_targets)

    def captum_layergradcam() -> object:
        a = captum.attribute(x, target=targets, relu_attributions=True)
        return LayerAttribution.interpolate(a, size, interpolate_mode="bilinear")

    return {
        "forward (no_grad)": forward,
        "lungaudit compute_cam": ours,
        "pytorch-grad-cam GradCAM": pytorch_grad_cam,
        "Captum LayerGradCam": captum_layergradcam,
    }


def bench(size: int, args: argparse.Namespace, device: torch.device) -> list[dict[str, object]]:
    torch.manual_seed(0)
    model = build_classifier(ClsConfig(image_size=size), 4).to(device).eval()
    x = torch.rand(args.batch, 1, size, size, device=device)
    targets = torch.randint(0, 4, (args.batch,), device=device)
    methods = make_methods(model, x, targets)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {k: [] for k in methods}
    names = list(methods)
    for rep in range(args.warmup + args.reps):
        # Rotate the order every repetition: no method always runs right after the memory-hungry one.
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            fn = methods[name]
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if rep >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    fwd = statistics.median(times["forward (no_grad)"])
    fwd_min = min(times["forward (no_grad)"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append(
            {
                "size": size,
                "batch": args.batch,
                "method": name,
                "median_s": med,
                "min_s": min(ts),
                "images_per_s": args.batch / med,
                "vs_forward": fwd / med,
                # Under load from other processes the fastest repetition is the least disturbed one.
                "vs_forward_min": fwd_min / min(ts),
                "reps": len(ts),
                "times_s": ";".join(f"{t:.4f}" for t in ts),
            }
        )
    return rows


def markdown(rows: list[dict[str, object]], meta: dict[str, object]) -> str:
    ours = {r["size"]: r for r in rows if r["method"] == "lungaudit compute_cam"}
    lines = [
        SECTION,
        "",
        f"Measured by `scripts/bench_cam.py` on {meta['date']}: {meta['machine']}, torch {meta['torch']}, "
        f"{meta['threads']} thread(s), device `{meta['device']}`; resnet18 (output stride 16, 4 classes, eval), "
        f"batch of {meta['batch']} single-channel images, the same per-sample targets for every method; "
        f"median of {meta['reps']} round-robin repetitions (order rotated each time) after {meta['warmup']} warm-up "
        f"(1-min load average at the end: {meta['loadavg_1min']}; absolute times move with load, the ratios "
        "much less since the methods run interleaved).",
        "",
        "| input | method | ms / batch (median) | images/s | × forward (median) | × forward (best rep) | ours ÷ it (median) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        o = ours[r["size"]]
        lines.append(
            f"| {r['size']}² | {r['method']} | {1000 * r['median_s']:.1f} | {r['images_per_s']:.1f} | "
            f"{r['vs_forward']:.2f} | {r['vs_forward_min']:.2f} | {o['images_per_s'] / r['images_per_s']:.2f} |"
        )
    lines += [
        "",
        "Why ours keeps up with the forward pass: all parameters are set to `requires_grad=False` for the call, "
        "and a forward hook cuts the graph at `layer4` (a detached leaf that requires grad), so autograd records "
        "only avgpool + fc and `torch.autograd.grad` runs through those alone; maps never leave the device. "
        "pytorch-grad-cam records the whole graph, runs `loss.backward()` through every layer (filling every "
        "parameter's `.grad`) and post-processes on CPU numpy per image. Captum's gradient also stops at the layer, "
        "so it is close on CPU, but it records (and keeps alive until the gradient) the whole network's graph, "
        "and returns (N, 1, h, w) maps that still need upsampling and a ReLU option set right.",
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    old = path.read_text() if path.is_file() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _m: text + "\n", old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new.rstrip("\n") + "\n")
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--sizes", default="128", help="comma-separated input sides, e.g. 128,224")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--md", default="BENCHMARKS.md")
    p.add_argument("--no-write-md", dest="write_md", action="store_false")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows: list[dict[str, object]] = []
    for size in (int(s) for s in args.sizes.split(",")):
        rows += bench(size, args, device)

    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()})"
    )
    meta = {
        "date": dt.date.today().isoformat(),
        "machine": machine,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "batch": args.batch,
        "reps": args.reps,
        "warmup": args.warmup,
        # Other processes share the cores: the load is recorded so the absolute numbers can be read right.
        "loadavg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    table = Table(title=f"Grad-CAM speed ({machine}, torch {torch.__version__}, {meta['threads']} threads)")
    for col in ("input", "method", "ms / batch", "images/s", "× forward", "× forward (best)"):
        table.add_column(col, justify="left" if col in ("input", "method") else "right")
    for r in rows:
        table.add_row(
            f"{r['size']}²", str(r["method"]), f"{1000 * r['median_s']:.1f}", f"{r['images_per_s']:.1f}", f"{r['vs_forward']:.2f}",
            f"{r['vs_forward_min']:.2f}",
        )
    Console().print(table)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"cam_{device.type}_{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    if args.write_md:
        write_section(Path(args.md), markdown(rows, meta))
    Console().print(f"wrote {stem}.csv/.json" + (f" and {args.md}" if args.write_md else ""))


if __name__ == "__main__":
    main()
