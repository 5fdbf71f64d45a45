"""Does the default recipe learn on a small real set? Normal vs TB on the Shenzhen sample, 5 folds.

The 162 radiographs of ``../shared/realsample/shenzhen`` (81 Normal ``*_0.png``, 81 TB ``*_1.png``,
with manual lung masks) are split into stratified folds (seeded). For each fold the classifier is
trained from scratch with ``configs/default.yaml`` on the other folds (the library splits off its
validation part) and tested on the held-out fold. The masks are given, so no U-Net is trained
(``--stage cls``). Reported: test accuracy and ROC-AUC on the full image (and lung-masked), their
mean, std and min-max over folds, and the time per fold. Target: mean ROC-AUC >= 0.80 within
10 minutes of 2-core CPU time per fold.

Each fold is read through the normal loaders: a manifest CSV (path,label,mask,split) in a temporary
folder marks the held-out fold ``test`` and leaves the rest for the library to split into train/val.

    python scripts/bench_real_cls.py                       # 5 folds, ~35-45 min on a 2-core CPU
    python scripts/bench_real_cls.py --only 0,1 --set cls.epochs=8   # a quick look at a variant
    python scripts/bench_real_cls.py --record              # also write the BENCHMARKS.md section
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # this checkout's package, not an installed one
from _bench_common import write_benchmark_section  # noqa: E402

from lungaudit.classification.model import resolve_input_norm  # noqa: E402
from lungaudit.config import apply_overrides, load_config, to_dict  # noqa: E402
from lungaudit.runs.checkpoint import load_checkpoint  # noqa: E402
from lungaudit.training.pipeline import train  # noqa: E402

console = Console()
LABELS = {"0": "Normal", "1": "TB"}
SECTION = "Classification on real radiographs (Shenzhen, Normal vs TB, 5 folds)"


def find_sample() -> Path:
    """``shared/realsample/shenzhen`` beside this checkout or beside any folder above it (worktrees)."""
    for parent in ROOT.parents:
        candidate = parent / "shared" / "realsample" / "shenzhen"
        if candidate.is_dir():
            return candidate
    return ROOT.parent / "shared" / "realsample" / "shenzhen"


def pairs(data: Path) -> list[tuple[Path, Path, str]]:
    """(image, mask, label) for every image whose stem ends in ``_0``/``_1`` and that has a mask."""
    out = []
    for image in sorted((data / "images").glob("*.png")):
        label = LABELS.get(image.stem.rsplit("_", 1)[-1])
        mask = data / "masks" / image.name
        if label is not None and mask.is_file():
            out.append((image, mask, label))
    return out


def stratified_folds(labels: list[str], k: int, seed: int) -> np.ndarray:
    """Fold index per item: each class is shuffled (seeded) and dealt round-robin into ``k`` folds."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(labels), np.int64)
    offset = 0
    for label in sorted(set(labels)):
        idx = rng.permutation([i for i, lab in enumerate(labels) if lab == label])
        fold[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)  # the next class starts where this one ended, so fold sizes stay even
    return fold


def write_manifest(folder: Path, items: list[tuple[Path, Path, str]], fold: np.ndarray, k: int) -> Path:
    path = folder / f"fold{k}.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "mask", "split"])
        for (image, mask, label), fi in zip(items, fold):
            w.writerow([image, label, mask, "test" if fi == k else ""])
    return path


def fold_config(manifest: Path, out: Path, overrides: list[str]) -> Any:
    return apply_overrides(
        load_config(ROOT / "lungaudit/configs/default.yaml"),
        [f"data.root={manifest}", "data.layout=manifest", "data.test_frac=0", "device=cpu", f"project={out}", *overrides],
    )


def comparable(cfg: Any) -> dict[str, Any]:
    """The config minus what differs between invocations without changing the training."""
    d = to_dict(cfg)
    d["data"].pop("root")
    d["cls"]["input_norm"] = resolve_input_norm(cfg.cls)  # a run stores the resolved value
    for key in ("project", "name", "device"):
        d.pop(key)
    return d


def run_fold(cfg: Any, out: Path, k: int, reuse: bool) -> dict[str, Any]:
    """Train and test fold ``k``; with ``reuse``, a fold already run with the same config is read back."""
    record_path = out / f"fold{k}" / "bench_fold.json"
    if reuse and record_path.is_file():
        saved = json.loads(record_path.read_text())
        if saved["config"] == comparable(cfg):
            return saved["result"] | {"reused": True}
        console.print(f"fold {k}: the saved run used another config; training again")
    t0, c0 = time.perf_counter(), time.process_time()
    result = train(cfg, stage="cls", run_dir=out / f"fold{k}")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    cls = result.test_metrics["classification"]
    rows = list(csv.DictReader(open(result.run_dir / "metrics.csv")))
    best = load_checkpoint(result.run_dir / "weights" / "cls_best.pt", kind="cls")
    res = {
        "fold": k,
        "n_test": cls["full"]["n"],
        "acc": cls["full"]["accuracy"],
        "auc": cls["full"]["macro_auc"],
        "acc_masked": cls["masked"]["accuracy"],
        "auc_masked": cls["masked"]["macro_auc"],
        "epochs_run": len(rows),
        "best_epoch": best.epoch,
        "best_val_score": best.best_metric,
        "wall_s": wall,
        "cpu_s": cpu,
        "load_1min": os.getloadavg()[0],  # wall time on a shared machine grows with the load
    }
    record_path.write_text(json.dumps({"config": comparable(cfg), "result": res}, indent=2))
    return res


def summarise(folds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n_folds": len(folds)}
    for key in ("acc", "auc", "acc_masked", "auc_masked", "wall_s", "cpu_s", "epochs_run"):
        v = np.array([np.nan if f.get(key) is None else f[key] for f in folds], float)
        v = v[np.isfinite(v)]  # a fold read back from before CPU time was recorded has none
        out[key] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                    "min": float(v.min()), "max": float(v.max()), "n": int(len(v))} if len(v) else None
    return out


def print_tables(folds: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    t = Table(title="Shenzhen Normal vs TB, per fold (test = held-out fold)", title_justify="left")
    for c in ("fold", "n test", "acc", "AUC", "acc masked", "AUC masked", "epochs", "best epoch", "wall", "CPU"):
        t.add_column(c, justify="right")
    for f in folds:
        t.add_row(str(f["fold"]), str(f["n_test"]), f"{f['acc']:.3f}", f"{f['auc']:.3f}", f"{f['acc_masked']:.3f}",
                  f"{f['auc_masked']:.3f}", str(f["epochs_run"]), str(f["best_epoch"]), f"{f['wall_s']:.0f}s", "—" if f.get("cpu_s") is None else f"{f['cpu_s']:.0f}s")
    console.print(t)
    s = Table(title="Over folds", title_justify="left")
    for c in ("metric", "mean", "std", "min", "max"):
        s.add_column(c, justify="right")
    for key in ("auc", "acc", "auc_masked", "acc_masked", "wall_s", "cpu_s"):
        m = summary[key]
        if m is None:
            continue
        s.add_row(key, *(f"{m[x]:.3f}" if not key.endswith("_s") else f"{m[x]:.0f}" for x in ("mean", "std", "min", "max")))
    console.print(s)


def _row(name: str, m: dict[str, float] | None, scale: float = 1.0, unit: str = "") -> str:
    if m is None:
        return f"| {name} | — | — | — | — |"
    cells = " | ".join(f"{m[k] / scale:.{1 if unit else 3}f}{unit}" for k in ("mean", "std", "min", "max"))
    return f"| {name} | {cells} |"


def _minutes(v: float | None) -> str:
    return "—" if v is None else f"{v / 60:.1f} min"


def record(summary: dict[str, Any], folds: list[dict[str, Any]], cfg: Any, command: str, n: int) -> None:
    cls = to_dict(cfg.cls)
    cpu = summary["cpu_s"]
    body = "\n".join([
        f"Measured {dt.date.today()} on {platform.machine()} CPU ({torch.get_num_threads()} threads; the machine is "
        f"shared, so the 1-min load average is given per fold), torch {torch.__version__}; `{command}`.",
        f"{n} Shenzhen radiographs (Normal vs TB, {summary['n_folds']} stratified folds, seed 0), classifier from "
        f"scratch with `configs/default.yaml` ({cls['arch']} at {cls['image_size']} px, {cls['epochs']} epochs of at "
        f"least {cls['min_epoch_steps']} steps, batch {cls['batch_size']}, selection on validation {cls['select_metric']}), "
        "given lung masks, no U-Net. Target: mean ROC-AUC >= 0.80 within 10 min of 2-core CPU time per fold.",
        "",
        "| | mean | std | min | max |",
        "|---|---:|---:|---:|---:|",
        _row("test ROC-AUC (full image)", summary["auc"]),
        _row("test accuracy (full image)", summary["acc"]),
        _row("test ROC-AUC (lung-masked)", summary["auc_masked"]),
        _row("test accuracy (lung-masked)", summary["acc_masked"]),
        _row("wall time per fold", summary["wall_s"], 60, " min"),
        _row(f"CPU time per fold, both cores ({cpu['n'] if cpu else 0} folds)", cpu, 60, " min"),
        "",
        "| fold | n test | AUC | accuracy | epochs run | best epoch | wall | CPU | load |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(f"| {f['fold']} | {f['n_test']} | {f['auc']:.3f} | {f['acc']:.3f} | {f['epochs_run']} | {f['best_epoch']} | "
          f"{_minutes(f['wall_s'])} | {_minutes(f.get('cpu_s'))} | {f.get('load_1min', float('nan')):.1f} |" for f in folds),
    ])
    write_benchmark_section(ROOT / "BENCHMARKS.md", SECTION, body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=find_sample())
    ap.add_argument("--out", type=Path, default=ROOT / "runs/bench/real_cls")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated fold indices to run (default: all)")
    ap.add_argument("--seed", type=int, default=0, help="fold assignment seed")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override, as lungaudit --set")
    ap.add_argument("--record", action="store_true", help="write the BENCHMARKS.md section")
    ap.add_argument("--reuse", action="store_true", help="read back folds already run in --out with the same config")
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data} not found: this benchmark needs the Shenzhen sample (../shared/realsample/shenzhen)")
    items = pairs(args.data)
    fold = stratified_folds([lab for *_, lab in items], args.folds, args.seed)
    todo = [int(x) for x in args.only.split(",")] if args.only else list(range(args.folds))
    results, cfg = [], None
    with tempfile.TemporaryDirectory(prefix="bench_real_cls_") as tmp:
        for k in todo:
            cfg = fold_config(write_manifest(Path(tmp), items, fold, k), args.out, args.overrides)
            res = run_fold(cfg, args.out, k, args.reuse)
            results.append(res)
            console.print(f"fold {k}: AUC {res['auc']:.3f}  acc {res['acc']:.3f}  ({res['wall_s']:.0f}s, {res['epochs_run']} epochs)")
    summary = summarise(results)
    print_tables(results, summary)
    command = "python scripts/bench_real_cls.py" + "".join(f" --set {o}" for o in args.overrides)
    payload = {"command": command, "overrides": args.overrides, "summary": summary, "folds": results}
    console.print_json(json.dumps(payload))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "real_cls.json").write_text(json.dumps(payload, indent=2))
    if args.record:
        if len(results) != args.folds:
            sys.exit("--record needs every fold (drop --only)")
        record(summary, results, cfg, command, len(items))


if __name__ == "__main__":
    main()
