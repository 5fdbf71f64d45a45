"""Lung segmentation on real radiographs: the Shenzhen sample (162 images with manual masks).

Trains the U-Net with ``lungaudit train --stage seg`` on a fixed 80% of the pairs and reports Dice
and IoU on the other 20%, at the masks' own resolution (512 px), raw and after post-processing.
The phantoms cannot show whether the segmenter copes with real anatomy, intensity ranges and
padding bands; this does.

    python scripts/bench_real_seg.py                  # ~10 min on a 2-core CPU
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import torch
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from _bench_common import write_benchmark_section  # noqa: E402

from lungaudit.config import apply_overrides, load_config  # noqa: E402
from lungaudit.data.imageio import read_image, read_mask  # noqa: E402
from lungaudit.data.layouts import load_dataset  # noqa: E402
from lungaudit.segmentation.metrics import dice_iou  # noqa: E402
from lungaudit.segmentation.predict import predict_masks  # noqa: E402
from lungaudit.runs.checkpoint import load_checkpoint  # noqa: E402
from lungaudit.training.pipeline import train  # noqa: E402
from lungaudit.runs.restore import restore  # noqa: E402

console = Console()
SHENZHEN = ROOT.parent / "shared" / "realsample" / "shenzhen"


def full_res_scores(model: torch.nn.Module, samples: list, size: int) -> dict[str, float]:
    images = [read_image(s.path) for s in samples]
    truth = [read_mask(s.mask_path, im.shape) for s, im in zip(samples, images)]
    out = {}
    for name, pp in (("raw", False), ("post-processed", True)):
        pred = predict_masks(model, images, size, postprocess=pp)
        d, i = zip(*(dice_iou(torch.from_numpy(p)[None, None], torch.from_numpy(t)[None, None]) for p, t in zip(pred, truth)))
        out[f"dice_{name}"] = float(torch.cat(d).mean())
        out[f"iou_{name}"] = float(torch.cat(i).mean())
        out[f"dice_{name}_min"] = float(torch.cat(d).min())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHENZHEN)
    ap.add_argument("--out", type=Path, default=ROOT / "runs/bench/real_seg")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="evaluate the weights of an earlier run instead of training")
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data} not found: this benchmark needs the Shenzhen sample (../shared/realsample/shenzhen)")
    cfg = apply_overrides(
        load_config(),
        [
            f"data.root={args.data}", "data.layout=segonly", "data.seed=0", "data.val_frac=0", "data.test_frac=0.2",
            f"project={args.out}", "seg.max_train_images=0", "seg.epochs=40", "seg.image_size=128",
            *args.overrides,
        ],
    )
    run_dir = args.out / "train"
    t0 = time.perf_counter()
    if not (args.reuse and (run_dir / "weights" / "seg_best.pt").is_file()):
        train(cfg, stage="seg", run_dir=run_dir)
    train_s = time.perf_counter() - t0
    if args.reuse:
        import csv

        train_s = sum(float(r["epoch_time_s"]) for r in csv.DictReader(open(run_dir / "metrics.csv")))
    ds = load_dataset(args.data, "segonly", data_cfg=cfg.data)
    test = ds.split("test")
    ckpt = load_checkpoint(run_dir / "weights" / "seg_best.pt", kind="seg")
    scores = full_res_scores(restore(ckpt, torch.device("cpu")), test, cfg.seg.image_size)
    scores |= {"n_train": len(ds.split("train")), "n_test": len(test), "train_s": train_s, "epochs": cfg.seg.epochs}
    console.print_json(json.dumps(scores))
    (args.out / "real_seg.json").write_text(json.dumps(scores, indent=2))
    if args.no_record:
        return
    body = "\n".join([
        f"Measured {dt.date.today()} on {platform.machine()} CPU ({torch.get_num_threads()} threads), torch {torch.__version__}; "
        "`python scripts/bench_real_seg.py`.",
        f"U-Net ({cfg.seg.encoder}, depth {cfg.seg.encoder_depth}, from scratch) at {cfg.seg.image_size} px, "
        f"{cfg.seg.epochs} epochs on {scores['n_train']} Shenzhen pairs (fixed seed-0 split), scored on the other "
        f"{scores['n_test']} at the masks' 512 px resolution. Target: Dice >= 0.93 (published U-Nets: 0.95-0.97).",
        "",
        "| | Dice | IoU | worst Dice | train time |",
        "|---|---:|---:|---:|---:|",
        f"| raw | {scores['dice_raw']:.3f} | {scores['iou_raw']:.3f} | {scores['dice_raw_min']:.3f} | {train_s / 60:.1f} min |",
        f"| post-processed | {scores['dice_post-processed']:.3f} | {scores['iou_post-processed']:.3f} | "
        f"{scores['dice_post-processed_min']:.3f} | |",
    ])
    write_benchmark_section(ROOT / "BENCHMARKS.md", "Lung segmentation on real radiographs (Shenzhen)", body)


if __name__ == "__main__":
    main()
