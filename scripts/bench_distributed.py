"""Scale-out measurements (issue 15): flat audit memory, 2-process gloo equality, audit scaling 1 -> 2 processes.

    python scripts/bench_distributed.py                         # all three sections, CPU
    python scripts/bench_distributed.py --only memory --record  # one section, written into BENCHMARKS.md

* **memory**: peak RSS of a fresh process auditing ``--small`` vs ``--large`` tiny (64 px) images (the
  large set is the small one hard-linked under other names, so only the count differs), and with
  ``--train`` the same for ``train`` with ``data.cache=disk`` (the streaming path) and ``memory``.
* **equality**: one training run and one audit, each in one process and under ``torchrun
  --nproc_per_node 2`` (gloo, CPU): per-epoch metrics side by side, merged audit rows compared cell
  by cell with the single-process audit, the largest summary difference.
* **scaling**: audit images/s of the same images with 1 process and with 2 (``torchrun``), each
  process at 1 thread and also 1 process at 2 threads; wall clock of the whole command and the
  audit loop's own rate. The machine is shared: load averages are recorded with the figures.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from _bench_common import write_benchmark_section  # noqa: E402

from lungaudit.config import ClsConfig, SegConfig, SynthConfig, save_config, to_dict  # noqa: E402

TINY = ["device=cpu", "seg.image_size=64", "seg.encoder_depth=3", "seg.decoder_channels=[16,8,4]", "seg.batch_size=8",
        "cls.image_size=64", "cls.batch_size=8", "cls.patience=0"]  # fmt: skip
CLS, SEG = ClsConfig(image_size=64), SegConfig(image_size=64, encoder_depth=3, decoder_channels=(16, 8, 4))
# The memory section audits 21k images: at 32 px and without the marker counterfactual (two classifier
# passes instead of three) it takes a quarter of the time, and memory is about the count, not the pixels.
MEM_CLS = ClsConfig(image_size=32)


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def machine() -> str:
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"


def env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}


def lungaudit(args: list[str], nproc: int = 1, threads: int = 1) -> tuple[float, str]:
    """Run ``lungaudit ARGS`` (under torchrun when ``nproc`` > 1); returns (wall seconds, stdout)."""
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m", "lungaudit", "--"]
    cmd = (head if nproc > 1 else [sys.executable, "-m", "lungaudit"]) + args
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env(threads), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return time.perf_counter() - t0, proc.stdout


def synth(out: Path, n_per_class: int, size: int = 64) -> Path:
    from lungaudit.data.synth import generate

    if not (out / "manifest.csv").is_file():
        generate(out, SynthConfig(n_per_class=n_per_class, size=size, seed=1, workers=0))
    return out


def replicate(base: Path, copies: int, out: Path) -> Path:
    """``base``'s images and masks hard-linked ``copies`` times under other names, with a manifest."""
    from lungaudit.data.layouts import load_dataset

    if (out / "manifest.csv").is_file():
        return out / "manifest.csv"
    rows = []
    for s in load_dataset(base).samples:
        for c in range(copies):
            entry = {"path": "", "mask": "", "label": s.label, "source": s.source or "", "split": s.split or ""}
            for col, src in (("path", s.path), ("mask", s.mask_path)):
                if src is not None:
                    dst = out / f"c{c:03d}" / col / src.name
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    if not dst.exists():
                        os.link(src, dst)
                    entry[col] = str(dst.relative_to(out))
            rows.append(entry)
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out / "manifest.csv"


def untrained_run(run: Path, cls_cfg: ClsConfig = CLS) -> Path:
    """Checkpoints of untrained models: memory and speed do not depend on what the weights are."""
    from lungaudit.classification.model import build_classifier
    from lungaudit.runs.checkpoint import Checkpoint, save_checkpoint
    from lungaudit.segmentation.model import build_segmenter

    if (run / "weights" / "cls_best.pt").is_file():
        return run
    torch.manual_seed(0)
    names = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    for kind, cfg, model in (("cls", cls_cfg, build_classifier(cls_cfg, 4)), ("seg", SEG, build_segmenter(SEG))):
        save_checkpoint(Checkpoint(kind=kind, config=to_dict(cfg), class_names=names if kind == "cls" else ["lung"],
                                   model_state=model.state_dict(), epoch=1, best_metric=0.0), run / "weights" / f"{kind}_best.pt")  # fmt: skip
    return run


_AUDIT_CHILD = """
import json, resource, sys, time
import lungaudit as la
from lungaudit.config import AuditConfig
t0 = time.perf_counter()
res = la.audit(sys.argv[1], run=sys.argv[2], out_dir=sys.argv[3], num_workers=0, device="cpu",
               cfg=AuditConfig(batch_size=64, overlays=False, marker_counterfactual=False))
wall = time.perf_counter() - t0
print(json.dumps({"images": res.summary.counts.audited, "images_per_s": res.summary.counts.audited / wall,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_TRAIN_CHILD = """
import json, resource, sys, time
from lungaudit.config import apply_overrides, TrainConfig
from lungaudit.training.pipeline import train
cfg = apply_overrides(TrainConfig(), sys.argv[2:])
t0 = time.perf_counter()
res = train(cfg, stage=sys.argv[1])
print(json.dumps({"wall_s": time.perf_counter() - t0,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _child(code: str, args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env(2), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-4000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory(args: argparse.Namespace) -> str:
    """Peak RSS of an audit (and optionally a training run) over the small and the large set."""
    base = synth(args.out / "mem_base", args.small // 4)
    run = untrained_run(args.out / "mem_run32", MEM_CLS)
    sets = {args.small: base / "manifest.csv", args.large: replicate(base, args.large // args.small, args.out / f"mem_{args.large}")}
    rows, before = [], load()
    for n, manifest in sets.items() if not args.no_audit else ():
        shutil.rmtree(args.out / f"mem_audit_{n}", ignore_errors=True)
        r = _child(_AUDIT_CHILD, [str(manifest), str(run), str(args.out / f"mem_audit_{n}")])
        rows.append(["audit", f"{r['images']}", f"{r['max_rss_mb']:.0f}", f"{r['images_per_s']:.1f} img/s"])
        print(rows[-1], flush=True)
    if args.train:
        for mode in ("disk", "memory"):
            for n, manifest in sets.items():
                cache = args.out / "mem_cache"
                os.environ["LUNGAUDIT_CACHE"] = str(cache)
                over = [*TINY, f"data.root={manifest}", f"project={args.out / 'mem_train'}", f"name={mode}{n}", f"data.cache={mode}",
                        "seg.epochs=1", "data.num_workers=1"]  # fmt: skip
                shutil.rmtree(args.out / "mem_train" / "train" / f"{mode}{n}", ignore_errors=True)
                r = _child(_TRAIN_CHILD, ["seg", *over])
                rows.append([f"train --stage seg (data.cache={mode})", f"{n}", f"{r['max_rss_mb']:.0f}", f"{r['wall_s']:.0f} s"])
                print(rows[-1], flush=True)
    head = (f"Measured {dt.date.today()} on {machine()} (shared machine, load average {before} before, {load()} after); "
            f"`python scripts/bench_distributed.py --only memory{' --train' if args.train else ''}{' --no-audit' if args.no_audit else ''}`. Peak RSS (ru_maxrss) of a fresh "
            f"process; 64 px phantoms, the large set the small one hard-linked {args.large // args.small} times; audit: untrained "
            "resnet18 at 32 px, batch 64, no overlays, no marker counterfactual, decode in the main process. Training: "
            "`train --stage seg` at 64 px, which decodes every split (into RAM, or into the disk cache on 1 worker, "
            "built on the first run of each size and counted in its time), trains the U-Net 1 epoch on its 400-image cap "
            "and evaluates it on the whole validation and test splits.")  # fmt: skip
    return _table(head, ["job", "images", "peak RSS MB", "speed"], rows)


def _metrics(run_dir: Path) -> dict[tuple[str, str], dict[str, str]]:
    return {(r["stage"], r["epoch"]): r for r in csv.DictReader(open(run_dir / "metrics.csv"))}


def equality(args: argparse.Namespace) -> str:
    """One training run and one audit, one process vs 2 gloo processes."""
    data = synth(args.out / "eq_data", args.eq_per_class)
    cfg_path = args.out / "eq_config.yaml"
    from lungaudit.config import TrainConfig, apply_overrides

    cfg = apply_overrides(TrainConfig(), [*TINY, f"data.root={data}", f"project={args.out / 'eq'}", "seg.epochs=2", "cls.epochs=3",
                                          "cls.min_epoch_steps=0", "cls.lr=0.0002", "cls.rotate_deg=0", "cls.scale=0",
                                          "cls.brightness=0", "cls.contrast=0"])  # fmt: skip
    save_config(cfg, cfg_path)
    shutil.rmtree(args.out / "eq", ignore_errors=True)
    before = load()
    t1, _ = lungaudit(["train", "--config", str(cfg_path), "--name", "one"], threads=2)
    t2, _ = lungaudit(["train", "--config", str(cfg_path), "--name", "two"], nproc=2)
    one, two = _metrics(args.out / "eq" / "train" / "one"), _metrics(args.out / "eq" / "train" / "two")
    rows = [[f"{k[0]} {k[1]}", one[k]["train_loss"], two[k]["train_loss"], one[k].get("train_masked_frac", ""),
             two[k].get("train_masked_frac", ""), one[k]["val_score"], two[k]["val_score"]] for k in one]  # fmt: skip
    audit = ["audit", str(data), "--run", str(args.out / "eq" / "train" / "two"), "--project", str(args.out / "eq"), "--device", "cpu",
             "--workers", "0", "--no-report", "--set", "audit.out_threshold=0.3"]  # fmt: skip
    lungaudit([*audit, "--name", "one"], threads=2)
    lungaudit([*audit, "--name", "two"], nproc=2)
    cells, differ, worst = _compare_audits(args.out / "eq" / "audit" / "one", args.out / "eq" / "audit" / "two")
    head = (f"Measured {dt.date.today()} on {machine()} (shared machine, load average {before} before, {load()} after); "
            f"`python scripts/bench_distributed.py --only equality` ({4 * args.eq_per_class} phantoms at 64 px; tiny U-Net 2 epochs, "
            f"resnet18 3 epochs at lr 2e-4 without augmentation draws; one process {t1:.0f} s, `torchrun --nproc_per_node 2` (gloo) {t2:.0f} s). "
            "The global batch is the same (each rank takes half), so each step covers the same images: the masking draws "
            "(`train_masked_frac`) agree exactly; the losses differ only through per-rank BatchNorm statistics and float order.")  # fmt: skip
    table = _table(head, ["stage epoch", "loss, 1 proc", "loss, 2 procs", "masked frac, 1", "masked frac, 2", "val score, 1", "val score, 2"], rows)
    return table + (f"\n\nAudit of the 2-process run's checkpoints, one process vs `torchrun --nproc_per_node 2` (merged from 2 shards): "
                    f"{cells} cells compared, {differ} differ; largest difference between the summaries' statistics {worst:.2e}.")


def _compare_audits(a: Path, b: Path) -> tuple[int, int, float]:
    ra, rb = list(csv.DictReader(open(a / "audit.csv"))), list(csv.DictReader(open(b / "audit.csv")))
    cells = sum(len(r) for r in ra)
    differ = sum(x[k] != y[k] for x, y in zip(ra, rb) for k in x) + abs(len(ra) - len(rb)) * len(ra[0])
    sa, sb = json.loads((a / "summary.json").read_text()), json.loads((b / "summary.json").read_text())

    def walk(x, y):
        if isinstance(x, dict):
            return max([walk(x[k], y.get(k)) for k in x if k not in ("created", "throughput_images_per_s")] or [0.0])
        if isinstance(x, float) and isinstance(y, float):
            return abs(x - y)
        return 0.0 if x == y else float("inf")

    return cells, differ, walk(sa, sb)


def scaling(args: argparse.Namespace) -> str:
    """Audit images/s of the same images: 1 process (1 and 2 threads) vs 2 processes of 1 thread."""
    data = synth(args.out / "scale_data", args.scale_images // 4)
    run = untrained_run(args.out / "mem_run")
    rows, before = [], load()
    for label, nproc, threads in (("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 1, 2), ("2 processes, 1 thread each", 2, 1)):
        name = f"n{nproc}t{threads}"
        shutil.rmtree(args.out / "scale" / "audit" / name, ignore_errors=True)
        wall, _ = lungaudit(["audit", str(data), "--run", str(run), "--project", str(args.out / "scale"), "--name", name, "--device", "cpu",
                             "--workers", "0", "--no-report", "--set", "audit.overlays=false"], nproc, threads)  # fmt: skip
        s = json.loads((args.out / "scale" / "audit" / name / "summary.json").read_text())
        n = s["counts"]["audited"]
        rows.append([label, f"{n}", f"{wall:.1f}", f"{n / wall:.1f}", f"{s['throughput_images_per_s']:.1f}", load()])
        print(rows[-1], flush=True)
    head = (f"Measured {dt.date.today()} on {machine()}, a machine shared with other jobs (load average {before} at the start; "
            f"each row's load at its end is in the table); `python scripts/bench_distributed.py --only scaling` "
            f"({args.scale_images} phantoms at 64 px, untrained 64 px models, batch 32, decode in each process, no overlays). "
            "Wall: the whole command (start-up, model load, audit, merge); loop: the audit loop's own rate (summary.json).")  # fmt: skip
    return _table(head, ["processes", "images", "wall s", "img/s (wall)", "img/s (loop)", "load avg after"], rows)


def _table(head: str, columns: list[str], rows: list[list[str]]) -> str:
    lines = [head, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


SECTIONS = {
    "memory": ("Scale-out: audit memory over 1k vs 20k images (cpu)", memory),
    "equality": ("Scale-out: 2-process gloo training and sharded audit vs one process (cpu)", equality),
    "scaling": ("Scale-out: audit images/s, 1 vs 2 processes (cpu)", scaling),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(SECTIONS), action="append")
    ap.add_argument("--out", type=Path, default=ROOT / "runs/bench/distributed")
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=20000)
    ap.add_argument("--train", action="store_true", help="also measure training (data.cache disk and memory) in the memory section")
    ap.add_argument("--no-audit", action="store_true", help="the memory section without its audit rows (with --train)")
    ap.add_argument("--eq-per-class", type=int, default=40)
    ap.add_argument("--scale-images", type=int, default=400)
    ap.add_argument("--record", action="store_true", help="write the sections into BENCHMARKS.md")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for key in args.only or list(SECTIONS):
        title, fn = SECTIONS[key]
        body = fn(args)
        print(f"\n## {title}\n\n{body}\n", flush=True)
        (args.out / f"{key}.md").write_text(body + "\n")
        if args.record:
            write_benchmark_section(ROOT / "BENCHMARKS.md", title, body)


if __name__ == "__main__":
    main()
