"""Every registered explanation method: time per batch against a no-grad forward, and peak memory.

One process, one model (resnet18 from build_classifier, eval mode, random weights: speed does not
depend on them), one batch, the same per-sample targets for every method, each at its default
options (what ``audit.cam: <name>`` would run). Cheap methods (<= 5 forwards per image by their
registry metadata) run ``--reps`` times round-robin after a warm-up, the median is kept; the others
run once between two forwards and are compared with their mean. "× fwd / unit" divides by the
method's unit of work (IG steps, SmoothGrad samples, Score-CAM channels, occlusion windows, LIME
samples) to compare with the issue's per-step target.

Peak memory is the extra memory of one call over what was live before it: on CUDA
``max_memory_allocated``; on CPU the process's peak resident set (Linux VmHWM, reset through
/proc/self/clear_refs after returning freed heap to the OS with malloc_trim) minus its resident set
before the call.

    python scripts/bench_explain.py                          # CPU, 32 x 1 x 128 x 128
    python scripts/bench_explain.py --device cuda --reps 7
    python scripts/bench_explain.py --methods gradcam,saliency --references

Writes runs/bench/explain_<device>_<stamp>.{csv,json}; --write-md replaces the "Explanation methods"
section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import csv
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # this checkout's package, not another install
from _bench_common import write_benchmark_section  # noqa: E402

from lungaudit.classification.model import build_classifier  # noqa: E402
from lungaudit.config import ClsConfig  # noqa: E402
from lungaudit.explain import CAM_METHODS, compute_cam, method_info  # noqa: E402

TITLE = "Explanation methods: speed and memory"
CHEAP_FORWARDS = 5.0


class PeakMemory:
    """Extra memory of one call, in MiB: CUDA allocator peak, or Linux resident-set high-water mark."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.libc = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None

    @staticmethod
    def _status_kib(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"{key} not in /proc/self/status")

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        if self.libc is not None:
            self.libc.malloc_trim(0)  # freed heap back to the OS, so the next call cannot hide in it
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
        self.base = self._status_kib("VmRSS") * 1024

    def stop(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        return (self._status_kib("VmHWM") * 1024 - self.base) / 2**20


def work_units(name: str, size: int) -> tuple[int, str]:
    """How many units of work a method's defaults do per image, and the unit's name."""
    m = CAM_METHODS.get(name)()
    if name == "integrated_gradients":
        return m.n_steps, "step"
    if name in ("smoothgrad", "lime"):
        return m.n_samples, "sample"
    if name == "scorecam":
        return m.top_k or 512, "channel"
    if name == "occlusion":
        window = m.window or math.ceil(size / 8)
        per_axis = math.ceil((size - window) / (m.stride or window)) + 1
        return per_axis**2, "window"
    return 1, "call"


def reference_methods(
    model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor
) -> dict[str, Callable[[], object]]:
    """Captum's counterparts at the same settings as our defaults (run with --references)."""
    import warnings

    from captum.attr import GuidedBackprop, IntegratedGradients, Occlusion, Saliency

    ref = copy.deepcopy(model)
    warnings.filterwarnings("ignore", module="captum")
    window = math.ceil(x.shape[-1] / 8)
    return {
        "Captum Saliency": lambda: Saliency(ref).attribute(x, target=targets, abs=True),
        "Captum GuidedBackprop": lambda: GuidedBackprop(ref).attribute(x, target=targets),
        "Captum IntegratedGradients (32 steps)": lambda: IntegratedGradients(ref).attribute(
            x, target=targets, n_steps=32, internal_batch_size=64
        ),
        "Captum Occlusion (16 px windows)": lambda: Occlusion(ref).attribute(
            x, sliding_window_shapes=(1, window, window), strides=(1, window, window), target=targets,
            perturbations_per_eval=4,
        ),
    }


def run_all(args: argparse.Namespace, device: torch.device) -> list[dict[str, object]]:
    torch.manual_seed(0)
    model = build_classifier(ClsConfig(image_size=args.size), 4).to(device).eval()
    x = torch.rand(args.batch, 1, args.size, args.size, device=device)
    targets = torch.randint(0, 4, (args.batch,), device=device)
    names = args.methods.split(",") if args.methods else CAM_METHODS.names()
    calls: dict[str, Callable[[], object]] = {"forward (no_grad)": lambda: model(x).sum()}
    for name in names:
        calls[name] = lambda name=name: compute_cam(model, x, "layer4", targets=targets, method=name).cams
    if args.references:
        calls.update(reference_methods(model, x, targets))
    cheap = [k for k in calls if k not in CAM_METHODS or method_info(k).forwards <= CHEAP_FORWARDS]
    cheap = [k for k in cheap if "Integrated" not in k and "Occlusion" not in k]
    heavy = [k for k in calls if k not in cheap]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    mem = PeakMemory(device)
    times: dict[str, list[float]] = {k: [] for k in calls}
    peaks: dict[str, float] = {k: 0.0 for k in calls}

    def timed(key: str) -> float:
        mem.start()
        sync()
        t0 = time.perf_counter()
        with torch.no_grad() if key == "forward (no_grad)" else torch.enable_grad():
            calls[key]()
        sync()
        dt_s = time.perf_counter() - t0
        peaks[key] = max(peaks[key], mem.stop())
        return dt_s

    for rep in range(args.warmup + args.reps):
        for key in cheap[rep % len(cheap) :] + cheap[: rep % len(cheap)]:  # rotate: no fixed neighbours
            t = timed(key)
            if rep >= args.warmup:
                times[key].append(t)
    # A heavy method runs once, between two forwards: its ratio is to their mean, so load from other
    # processes that changes over its minutes-long run does not bias it as a fixed reference would.
    fwd = statistics.median(times["forward (no_grad)"])
    reference = {k: fwd for k in cheap}
    for key in heavy:
        before = timed("forward (no_grad)")
        times[key].append(timed(key))
        reference[key] = (before + timed("forward (no_grad)")) / 2
    rows = []
    for key, ts in times.items():
        med = statistics.median(ts) if key in cheap else ts[0]
        units, unit = work_units(key, args.size) if key in CAM_METHODS else (1, "call")
        kind = method_info(key).kind if key in CAM_METHODS else ("-" if key == "forward (no_grad)" else "reference")
        rows.append({
            "method": key,
            "kind": kind,
            "ms_per_batch": 1000 * med,
            "ms_per_image": 1000 * med / args.batch,
            "x_forward": med / reference[key],
            "forward_ms": 1000 * reference[key],
            "units": units,
            "unit": unit,
            "x_forward_per_unit": med / reference[key] / units,
            "peak_mib": peaks[key],
            "reps": len(ts),
            "times_s": ";".join(f"{t:.4f}" for t in ts),
        })
    return rows


def markdown(rows: list[dict[str, object]], meta: dict[str, object]) -> str:
    lines = [
        f"Measured by `scripts/bench_explain.py` on {meta['date']}: {meta['machine']}, torch {meta['torch']}, "
        f"{meta['threads']} thread(s), device `{meta['device']}`; resnet18 (output stride 16, 4 classes, eval), "
        f"batch of {meta['batch']} single-channel {meta['size']}² images, per-sample targets, each method at its "
        f"defaults; median of {meta['reps']} round-robin repetitions for methods of <= {CHEAP_FORWARDS:g} forwards "
        f"per image, one run between two forwards for the others, compared with their mean (1-min load average "
        f"at the end: {meta['loadavg_1min']}).",
        "",
        "| method | kind | ms / batch | ms / image | × forward | unit | × forward / unit | peak extra MiB |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['kind']} | {r['ms_per_batch']:.0f} | {r['ms_per_image']:.1f} | "
            f"{r['x_forward']:.2f} | {r['units']} {r['unit']}{'s' if r['units'] != 1 else ''} | "
            f"{r['x_forward_per_unit']:.2f} | {r['peak_mib']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--methods", default="", help="comma-separated registry names (default: all)")
    p.add_argument("--references", action="store_true", help="also time Captum's counterparts")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path, default=ROOT / "runs/bench")
    p.add_argument("--write-md", type=Path, default=None, metavar="BENCHMARKS.md")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = run_all(args, device)
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()})"
    )
    meta = {
        "date": dt.date.today().isoformat(), "machine": machine, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "device": str(device), "batch": args.batch, "size": args.size,
        "reps": args.reps, "warmup": args.warmup,
        "loadavg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    table = Table(title=f"{TITLE} ({machine}, batch {args.batch}, {args.size}², {meta['threads']} threads)")
    for col in ("method", "kind", "ms / batch", "ms / image", "× fwd", "unit", "× fwd / unit", "peak MiB"):
        table.add_column(col, justify="left" if col in ("method", "kind", "unit") else "right")
    for r in rows:
        table.add_row(
            str(r["method"]), str(r["kind"]), f"{r['ms_per_batch']:.0f}", f"{r['ms_per_image']:.1f}",
            f"{r['x_forward']:.2f}", f"{r['units']} {r['unit']}", f"{r['x_forward_per_unit']:.2f}",
            f"{r['peak_mib']:.0f}",
        )
    Console(width=160).print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"explain_{device.type}_{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    if args.write_md:
        write_benchmark_section(args.write_md, TITLE, markdown(rows, meta))
    Console().print(f"wrote {stem}.csv/.json" + (f" and {args.write_md}" if args.write_md else ""))


if __name__ == "__main__":
    main()
