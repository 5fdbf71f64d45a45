"""Kill an audit with SIGKILL at random points, resume it each time, and prove nothing was lost or doubled.

One uninterrupted audit is the reference. The same audit is then started in a subprocess with
``--resume`` and killed with SIGKILL again and again (seeded): during start-up, mid-chunk right after
a chunk's rows landed, and while the summary and report are being written, until it finishes on its
own. The final ``audit.csv`` must equal the reference row for row (keys, predictions, flags, overlay
names; energies and probabilities within float tolerance), and so must the aggregates (summary
counts, rates and metrics; the per-class counts and sums of the mean out-of-lung heatmaps). Then two
audits are started at once into one folder: exactly one may write, the other must exit 2.

    python scripts/stress_audit.py                    # 200 images at 64 px, 24 faults, CPU
    python scripts/stress_audit.py --record           # also write the BENCHMARKS.md section

The audit's chunk (rows per partial, 256 in the package) is lowered in the child processes so that
one run of a few hundred images crosses many chunk boundaries; the batch size divides the chunk, so a
resumed audit sees the same batches as the reference and the rows must match to the last bit.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))  # this checkout's lungaudit, in this process and (PYTHONPATH) in its children
TITLE = "Audit under SIGKILL (stress_audit)"
FLOAT_TOL = 1e-6
# Fields of a row that must match exactly; every other non-string field is compared as a float.
EXACT = ("key", "path", "label", "source", "split", "mask_source", "pred", "pred_masked", "flip", "no_evidence", "region",
         "marker_overlap", "marker_box", "pred_without_markers", "marker_flip", "flagged", "reasons", "overlay", "trained_on")  # fmt: skip
VOLATILE = ("created", "throughput_images_per_s")  # summary keys that differ between any two runs


# ----------------------------------------------------------------------------------- child


def child(chunk: int, args: list[str]) -> None:
    """Run ``lungaudit ARGS`` with the store's chunk lowered (the parent's subprocess entry point)."""
    from lungaudit.audit import store  # (lungaudit.audit is also the API function: no "import a.b.c as")
    from lungaudit.cli.main import app

    store.CHUNK = chunk
    app(args=args, prog_name="lungaudit")


# ----------------------------------------------------------------------------------- setup


def prepare(work: Path, n_per_class: int, size: int, run: Path | None) -> tuple[Path, Path]:
    """The synthetic data set and a run folder (seeded untrained weights unless ``run`` is given)."""
    from lungaudit.config import SynthConfig
    from lungaudit.data.synth import generate

    data = work / f"data_{n_per_class}_{size}"
    if not (data / "manifest.csv").is_file():
        generate(data, SynthConfig(n_per_class=n_per_class, size=size, seed=3, workers=1))
    if run is not None:
        return data, run
    run = work / "run"
    if not (run / "weights" / "cls_best.pt").is_file():
        make_run(run, size)
    return data, run


def make_run(run: Path, size: int) -> None:
    """Seeded, untrained weights: resumption is about bookkeeping, not about what the model learnt."""
    import torch

    from lungaudit.classification.model import build_classifier
    from lungaudit.config import CLASS_NAMES, TrainConfig, replace, save_config, to_dict
    from lungaudit.runs.checkpoint import Checkpoint, save_checkpoint
    from lungaudit.segmentation.model import build_segmenter

    torch.manual_seed(0)
    cfg = TrainConfig()
    cfg = replace(cfg, cls=replace(cfg.cls, image_size=size), seg=replace(cfg.seg, image_size=size, encoder_depth=3, decoder_channels=(16, 8, 4)))
    for kind, section, model in (("cls", cfg.cls, build_classifier(cfg.cls, len(CLASS_NAMES))), ("seg", cfg.seg, build_segmenter(cfg.seg))):
        ckpt = Checkpoint(kind=kind, config=to_dict(section), class_names=list(CLASS_NAMES) if kind == "cls" else [],
                          model_state=model.state_dict(), epoch=1, best_metric=0.0)  # fmt: skip
        save_checkpoint(ckpt, run / "weights" / f"{kind}_best.pt")
    save_config(cfg, run / "config.yaml")


# ------------------------------------------------------------------------------ processes


@dataclass
class Settings:
    data: Path
    run: Path
    project: Path
    chunk: int
    batch: int
    threshold: float

    def command(self, name: str) -> list[str]:
        return [
            sys.executable, str(Path(__file__).resolve()), "--child", str(self.chunk), "--",
            "audit", str(self.data), "--run", str(self.run), "--project", str(self.project), "--name", name,
            "--device", "cpu", "--workers", "0", "--resume",
            "--set", f"audit.batch_size={self.batch}", "--set", f"audit.out_threshold={self.threshold}",
        ]  # fmt: skip


def launch(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "200"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def csv_rows_on_disk(path: Path) -> tuple[int, int]:
    """(complete rows, rows whose key appears twice) of an ``audit.csv`` that may be torn or absent."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return 0, 0
    text = text[: text.rfind("\n") + 1]
    keys = [r["key"] for r in csv.DictReader(io.StringIO(text))]
    return len(keys), len(keys) - len(set(keys))


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL ``proc`` if it is still running; whether a live process was killed."""
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


# ---------------------------------------------------------------------------- the faults


@dataclass
class Timing:
    startup_s: float  # launch to the first row on disk
    chunk_s: float  # between two chunks landing
    finalise_s: float  # within the writing of the end products (mean heatmaps, summary, report)


@dataclass
class FaultLog:
    faults: int = 0
    resumes: int = 0
    launches: int = 0
    by_phase: dict[str, int] = field(default_factory=lambda: {"start-up": 0, "mid-audit": 0, "after the last row": 0})
    max_doubled_on_disk: int = 0
    exit_codes: list[int] = field(default_factory=list)


def run_with_faults(s: Settings, name: str, n_images: int, timing: Timing, target: int, rng: np.random.Generator, log: Path) -> FaultLog:
    """Launch, kill at a random point, relaunch with ``--resume`` until ``target`` faults, then let it finish."""
    out = s.project / "audit" / name
    fl = FaultLog()
    while True:
        rows_before, _ = csv_rows_on_disk(out / "audit.csv")
        launched = time.time()
        proc = launch(s.command(name), log)
        fl.launches += 1
        fl.resumes += fl.launches > 1
        if fl.faults < target and kill_at_random_point(proc, out, rows_before, n_images, launched, timing, s.chunk, rng):
            fl.faults += 1
            rows_after, doubled = csv_rows_on_disk(out / "audit.csv")
            fl.by_phase[phase_of(out, rows_before, rows_after, n_images, launched)] += 1
            fl.max_doubled_on_disk = max(fl.max_doubled_on_disk, doubled)
            continue
        fl.exit_codes.append(proc.wait())
        if fl.exit_codes[-1] != 0:
            raise SystemExit(f"the audit exited {fl.exit_codes[-1]} without being killed; see {log}")
        return fl


def finalising_since(out: Path, launched: float) -> bool:
    """Whether this launch has started writing the end products (mean heatmaps, summary, report)."""
    ends = [*out.glob("mean_outside_*.png"), out / "summary.json", out / "report.html"]
    return any(p.is_file() and p.stat().st_mtime >= launched for p in ends)


def phase_of(out: Path, rows_before: int, rows_after: int, n_images: int, launched: float) -> str:
    if rows_after >= n_images and (rows_after > rows_before or finalising_since(out, launched)):
        return "after the last row"
    return "mid-audit" if rows_after > rows_before else "start-up"


def kill_at_random_point(
    proc: subprocess.Popen, out: Path, rows_before: int, n_images: int, launched: float, t: Timing, chunk: int,
    rng: np.random.Generator,
) -> bool:  # fmt: skip
    """Wait for a randomly chosen moment, then SIGKILL; whether a live process was killed.

    A fifth of the kills land at a random time in start-up (imports, model loading, the identity
    check, the reconciliation of a torn folder). The rest wait for the next one or two chunks' rows
    to land and kill a random time later: mid-way through the following chunk (its overlays, its
    partial, its append), or, once every row is in, while the mean heatmaps, summary and report are
    written.
    """
    if rows_before < n_images and rng.random() < 0.2:
        time.sleep(rng.uniform(0.0, t.startup_s))
        return kill(proc)
    goal = min(n_images, rows_before + chunk * int(rng.integers(1, 3)))
    while proc.poll() is None and csv_rows_on_disk(out / "audit.csv")[0] < goal:
        time.sleep(0.005)
    if goal < n_images:
        time.sleep(rng.uniform(0.0, t.chunk_s))
        return kill(proc)
    while proc.poll() is None and not finalising_since(out, launched):  # every row is in: wait for the end products
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, t.finalise_s))
    return kill(proc)


# ---------------------------------------------------------------------------- comparison


def rows_by_key(audit_dir: Path) -> tuple[dict[str, Any], list[str]]:
    from lungaudit.report.auditdir import load_summary, read_audit_csv

    rows = read_audit_csv(audit_dir / "audit.csv", load_summary(audit_dir).class_names)
    keys = [r.key for r in rows]
    return {r.key: r.model_dump() for r in rows}, keys


def compare_rows(ref: dict[str, Any], got: dict[str, Any]) -> tuple[int, float]:
    """(rows that differ, largest float difference) between two key -> row tables with the same keys."""
    differing, worst = 0, 0.0
    for key in ref.keys() & got.keys():
        a, b = ref[key], got[key]
        bad = any(a[f] != b[f] for f in EXACT)
        for f, v in a.items():
            if f in EXACT:
                continue
            pairs = [(v[c], b[f][c]) for c in v] if isinstance(v, dict) else [(v, b[f])]
            for x, y in pairs:
                if x is None or y is None:
                    bad |= x is not y
                else:
                    worst = max(worst, abs(float(x) - float(y)))
        differing += bad or worst > FLOAT_TOL
    return differing, worst


def _numbers_close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_numbers_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_numbers_close(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) <= FLOAT_TOL
    return a == b


def compare_aggregates(ref_dir: Path, got_dir: Path) -> dict[str, bool]:
    """Summary blocks and the mean-heatmap partials (counts exactly, sums within tolerance) of two audits."""
    ref, got = (json.loads((d / "summary.json").read_text()) for d in (ref_dir, got_dir))
    blocks = [k for k in ref if k not in VOLATILE]
    out = {f"summary.{k}": _numbers_close(ref[k], got.get(k)) for k in blocks}
    (rs, rc), (gs, gc) = partial_sums(ref_dir), partial_sums(got_dir)
    out["mean_heatmap.counts"] = bool(np.array_equal(rc, gc))
    out["mean_heatmap.sums"] = bool(np.allclose(rs, gs, rtol=0, atol=1e-4))
    return out


def partial_sums(audit_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    sums, counts = None, None
    for part in sorted((audit_dir / "partials").glob("*.npz")):
        d = np.load(part)
        sums = d["sums"].astype(np.float64) if sums is None else sums + d["sums"]
        counts = d["counts"].astype(np.float64) if counts is None else counts + d["counts"]
    assert sums is not None and counts is not None, f"{audit_dir} has no partials"
    return sums, counts


# ---------------------------------------------------------------------------- concurrency


def concurrent_writers(s: Settings, name: str, log: Path) -> dict[str, Any]:
    """Two audits started together into one folder: exit codes, and the loser's message."""
    procs = [launch(s.command(name), log.with_name(f"{log.stem}_{i}.log")) for i in range(2)]
    codes = [p.wait() for p in procs]
    loser = [log.with_name(f"{log.stem}_{i}.log").read_text(errors="replace") for i, c in enumerate(codes) if c != 0]
    return {"exit_codes": sorted(codes), "loser_named_the_lock": bool(loser) and "another audit" in " ".join(loser[0].split())}


# ---------------------------------------------------------------------------------- main


def timed_reference(s: Settings, name: str, log: Path) -> Timing:
    """Run the uninterrupted reference and time its phases (they scale the random kill delays)."""
    t0, launched = time.perf_counter(), time.time()
    proc = launch(s.command(name), log)
    out = s.project / "audit" / name
    changes: list[float] = []  # when the row count changed
    ends_at = None  # when the first end product (mean heatmap, summary) appeared
    rows = 0
    while proc.poll() is None:
        now = csv_rows_on_disk(out / "audit.csv")[0]
        if now != rows:
            rows = now
            changes.append(time.perf_counter() - t0)
        if ends_at is None and changes and finalising_since(out, launched):
            ends_at = time.perf_counter() - t0
        time.sleep(0.005)
    if proc.returncode != 0:
        raise SystemExit(f"the reference audit failed (exit {proc.returncode}); see {log}")
    total = time.perf_counter() - t0
    first = changes[0] if changes else total
    chunk = (changes[-1] - changes[0]) / max(1, len(changes) - 1) if len(changes) > 1 else 0.5
    # the kill window after the last row: from the first end product to the exit, kept inside it
    return Timing(first, chunk, 0.8 * (total - (ends_at if ends_at is not None else total)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-per-class", type=int, default=50)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--faults", type=int, default=24, help="SIGKILLs to inject over the one run (at least 20 for the record)")
    ap.add_argument("--chunk", type=int, default=8, help="rows per partial in the child processes")
    ap.add_argument("--batch", type=int, default=8, help="audit batch size; must divide --chunk")
    ap.add_argument("--threshold", type=float, default=0.3, help="audit.out_threshold (low: flagged images, overlays)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run", type=Path, default=None, help="a trained run to audit with (default: seeded untrained weights)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "stress_audit")
    ap.add_argument("--record", action="store_true", help="write the BENCHMARKS.md section")
    args = ap.parse_args()
    if args.chunk % args.batch:
        ap.error("--batch must divide --chunk, so a resumed audit sees the reference's batches")
    t_start = time.perf_counter()
    data, run = prepare(args.work, args.n_per_class, args.size, args.run)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    s = Settings(data, run, args.work / f"project-{stamp}", args.chunk, args.batch, args.threshold)
    logs = s.project / "logs"
    logs.mkdir(parents=True)
    t0 = time.perf_counter()
    timing = timed_reference(s, "reference", logs / "reference.log")
    ref_s = time.perf_counter() - t0
    n_images = csv_rows_on_disk(s.project / "audit" / "reference" / "audit.csv")[0]
    faults = run_with_faults(s, "faulted", n_images, timing, args.faults, np.random.default_rng(args.seed), logs / "faulted.log")
    ref, ref_keys = rows_by_key(s.project / "audit" / "reference")
    got, got_keys = rows_by_key(s.project / "audit" / "faulted")
    differing, worst = compare_rows(ref, got)
    aggregates = compare_aggregates(s.project / "audit" / "reference", s.project / "audit" / "faulted")
    conc = concurrent_writers(s, "concurrent", logs / "concurrent.log")
    conc_rows, _ = rows_by_key(s.project / "audit" / "concurrent")
    conc_diff, _ = compare_rows(ref, conc_rows)

    result = {
        "images": n_images, "chunk": args.chunk, "batch": args.batch, "seed": args.seed,
        "faults_injected": faults.faults, "faults_by_phase": faults.by_phase, "resumes": faults.resumes,
        "rows_lost": len(set(ref_keys) - set(got_keys)), "rows_doubled": len(got_keys) - len(set(got_keys)),
        "rows_extra": len(set(got_keys) - set(ref_keys)), "rows_differing": differing, "max_float_diff": worst,
        "max_rows_doubled_on_disk_between_faults": faults.max_doubled_on_disk,
        "aggregates_equal": all(aggregates.values()), "aggregate_mismatches": [k for k, ok in aggregates.items() if not ok],
        "concurrent_exit_codes": conc["exit_codes"], "concurrent_loser_named_the_lock": conc["loser_named_the_lock"],
        "concurrent_rows_equal_reference": conc_diff == 0 and len(conc_rows) == len(ref),
        "reference_audit_s": round(ref_s, 1), "reference_startup_s": round(timing.startup_s, 1), "wall_s": round(time.perf_counter() - t_start, 1), "work": str(s.project),
    }  # fmt: skip
    ok = (
        result["rows_lost"] == result["rows_doubled"] == result["rows_extra"] == result["rows_differing"] == 0
        and result["aggregates_equal"] and result["concurrent_exit_codes"] == [0, 2] and result["concurrent_loser_named_the_lock"]
        and result["concurrent_rows_equal_reference"] and faults.faults >= min(args.faults, 20)
    )  # fmt: skip
    result["passed"] = bool(ok)
    print(json.dumps(result, indent=2))
    if args.record:
        record(result, args)
    raise SystemExit(0 if ok else 1)


def record(r: dict[str, Any], args: argparse.Namespace) -> None:
    import torch

    from _bench_common import write_benchmark_section

    phases = ", ".join(f"{k} {v}" for k, v in r["faults_by_phase"].items())
    cmd = "python scripts/stress_audit.py" + (f" --seed {args.seed}" if args.seed else "") + " --record"
    lines = [
        f"Measured {dt.date.today()} on {platform.machine()} CPU ({os.cpu_count()} cores, shared), torch {torch.__version__}; `{cmd}`.",
        f"One audit of {r['images']} synthetic images at {args.size} px (chunk {r['chunk']} rows, batch {r['batch']}), killed with "
        f"SIGKILL at seeded random points and resumed with `--resume` each time, against one uninterrupted reference audit.",
        "",
        "| faults injected | resumes | rows lost | rows doubled | rows differing | aggregates equal | two writers: exit codes |",
        "|---:|---:|---:|---:|---:|:---:|:---:|",
        f"| {r['faults_injected']} ({phases}) | {r['resumes']} | {r['rows_lost']} | {r['rows_doubled']} | {r['rows_differing']} "
        f"(max float diff {r['max_float_diff']:.1e}) | {'yes' if r['aggregates_equal'] else 'no: ' + ', '.join(r['aggregate_mismatches'])} "
        f"| {' and '.join(map(str, r['concurrent_exit_codes']))} |",
        "",
        "Rows are compared key by key (predictions, flags, reasons, regions, overlay names exactly; energies and "
        "probabilities within 1e-6); aggregates are every block of `summary.json` but its timestamp and throughput, "
        "plus the per-class counts and sums of the mean out-of-lung heatmaps. The second of two audits started "
        "together into one folder is refused by the folder's lock (exit 2) and the winner's rows equal the reference.",
    ]
    write_benchmark_section(ROOT / "BENCHMARKS.md", TITLE, "\n".join(lines))
    print(f"recorded in {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sep = sys.argv.index("--")
        child(int(sys.argv[2]), sys.argv[sep + 1 :])
    else:
        main()
