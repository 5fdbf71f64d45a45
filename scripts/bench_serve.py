#!/usr/bin/env python
"""Benchmark ``lungaudit serve``: single-image latency of POST /predict and requests/s under load.

    python scripts/bench_serve.py --run runs/train/exp [--images DIR] [--record]

Starts ``lungaudit serve`` for the run in a subprocess (a real uvicorn server on a free loopback
port) and drives it over HTTP with httpx from this process:
  * latency: one client, sequential uploads (decode -> lung mask -> classify -> CAM -> pictures),
    p50/p95 of the wall time per request, with the server's own split of it;
  * throughput: 1, 8 and 32 concurrent clients uploading for a fixed time each, requests/s and the
    mean number of uploads that shared a device pass (from ``GET /health``);
  * the control: the same load against a server with ``--max-batch 1``, so the gain is shown to come
    from batching and not from concurrency alone;
  * the device pass alone (in this process, no HTTP, no pictures) at batch sizes 1-16, ms per
    upload: what batching saves where the work is, which the gain over 1 client follows.
Images default to the run's own test split (the classifier's input side is the run's, 128 px by
default). ``--record`` writes the table into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO)]  # this checkout's lungaudit, not an installed one
from _bench_common import write_benchmark_section  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``lungaudit serve`` in a subprocess; ready once ``GET /health`` answers."""

    def __init__(self, run: Path, max_batch: int, max_wait_ms: float, device: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "lungaudit.cli.main", "serve", "--run", str(run), "--port", str(self.port),
               "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--device", device, "--log-level", "warning"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("the server did not answer within 300 s")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def pick_images(run: Path, given: list[Path], n: int) -> list[bytes]:
    from lungaudit.services.predict import collect_images

    if not given:
        from lungaudit.runs.runinfo import read_run_info, read_splits

        info = read_run_info(run)
        if info is None:
            raise ValueError(f"{run} does not record its data set; pass --images")
        given = sorted(Path(p) for p, split in read_splits(run, info.data_root).items() if split == "test")
    paths, _ = collect_images(given)
    if not paths:
        raise ValueError(f"no images to upload in {', '.join(map(str, given)) or 'the run'}")
    return [p.read_bytes() for p in paths[:n]]


async def _upload(client: httpx.AsyncClient, data: bytes, overlays: bool) -> dict:
    r = await client.post("/predict", files={"file": ("x.png", data, "image/png")}, params={"overlays": str(overlays).lower()})
    r.raise_for_status()
    return r.json()


async def latency(url: str, images: list[bytes], n: int, warmup: int, overlays: bool) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        for i in range(warmup):
            await _upload(client, images[i % len(images)], overlays)
        walls, parts = [], []
        for i in range(n):
            t0 = time.perf_counter()
            body = await _upload(client, images[i % len(images)], overlays)
            walls.append((time.perf_counter() - t0) * 1000)
            parts.append(body["timing_ms"])
    q = statistics.quantiles(walls, n=20)
    split = {k: statistics.median(p[k] for p in parts) for k in ("decode", "audit", "pictures")}
    return {"p50": statistics.median(walls), "p95": q[18], "n": n, **split}


async def throughput(url: str, images: list[bytes], clients: int, seconds: float, overlays: bool) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=clients)) as client:
        before = (await client.get("/health")).json()["batching"]
        done = 0
        stop = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal done
            i = k
            while time.perf_counter() < stop:
                await _upload(client, images[i % len(images)], overlays)
                done += 1
                i += clients

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        elapsed = time.perf_counter() - t0
        after = (await client.get("/health")).json()["batching"]
    batches, items = after["batches"] - before["batches"], after["items"] - before["items"]
    return {"clients": clients, "rps": done / elapsed, "requests": done, "mean_batch": items / max(1, batches),
            "device_ms_per_image": 1000 * (after["busy_s"] - before["busy_s"]) / max(1, items)}  # fmt: skip


def measure(run: Path, images: list[bytes], args: argparse.Namespace, max_batch: int, with_latency: bool) -> dict:
    with Server(run, max_batch, args.max_wait_ms, args.device) as srv:
        asyncio.run(throughput(srv.url, images, 4, 5, args.overlays))  # warm-up: first passes allocate
        out: dict = {"latency": asyncio.run(latency(srv.url, images, args.n, 3, args.overlays))} if with_latency else {}
        # rounds interleave the load points (1, 8, 32, 1, 8, 32, ...) so drift on a shared machine hits each alike
        rounds = [[asyncio.run(throughput(srv.url, images, c, args.seconds, args.overlays)) for c in args.clients] for _ in range(args.rounds)]
    out["rounds"] = rounds
    out["load"] = [median_row([r[k] for r in rounds], [r[k]["rps"] / r[0]["rps"] for r in rounds]) for k in range(len(args.clients))]
    return out


def pass_scaling(run: Path, images: list[bytes], device: str, sizes: tuple[int, ...] = (1, 2, 4, 8, 16), rounds: int = 5) -> list[dict]:
    """The server's batch handler alone (``audit_jobs``: the device pass with the pictures' maps), ms per upload per batch size.

    Sizes interleave within each round (drift hits each alike); each round runs 16 uploads per size.
    """
    import tempfile

    from lungaudit.runs.data import run_config
    from lungaudit.services.predict import Predictor
    from lungaudit.services.serve.app import Job, audit_jobs

    predictor = Predictor.load(run, run_config(run), device=device)
    with tempfile.TemporaryDirectory() as tmp:
        items = []
        for k, data in enumerate(images):
            path = Path(tmp) / f"upload-{k}"
            path.write_bytes(data)
            items.append(predictor.decode(path))
    per = max(sizes)
    times: dict[int, list[float]] = {n: [] for n in sizes}
    for r in range(rounds + 1):  # round 0 warms up each batch shape
        for n in sizes:
            t0 = time.perf_counter()
            for start in range(0, per, n):
                audit_jobs(predictor, [Job(items[(r * per + start + j) % len(items)], "upload") for j in range(n)])
            if r:
                times[n].append((time.perf_counter() - t0) * 1000 / per)
    one = statistics.median(times[sizes[0]])
    return [{"batch": n, "ms": statistics.median(times[n]), "gain": one / statistics.median(times[n])} for n in sizes]


def median_row(rows: list[dict], gains: list[float]) -> dict:
    """One load point over the rounds: medians, and the gain over 1 client taken within each round."""
    med = {k: statistics.median(r[k] for r in rows) for k in ("rps", "mean_batch", "device_ms_per_image")}
    return {"clients": rows[0]["clients"], **med, "gain": statistics.median(gains), "gain_min": min(gains), "gain_max": max(gains)}


def table(batched: dict, control: dict | None) -> str:
    lines = ["| clients | requests/s | × 1 client (min–max over rounds) | uploads per device pass | device ms per upload |"
             + (" requests/s, --max-batch 1 | × 1 client, --max-batch 1 |" if control else ""),
             "|---:|---:|---:|---:|---:|" + ("---:|---:|" if control else "")]  # fmt: skip
    for k, row in enumerate(batched["load"]):
        line = (f"| {row['clients']} | {row['rps']:.1f} | {row['gain']:.2f} ({row['gain_min']:.2f}–{row['gain_max']:.2f}) | "
                f"{row['mean_batch']:.1f} | {row['device_ms_per_image']:.0f} |")  # fmt: skip
        lines.append(line + (f" {control['load'][k]['rps']:.1f} | {control['load'][k]['gain']:.2f} |" if control else ""))
    return "\n".join(lines)


def command_line(argv: list[str]) -> str:
    """The command as recorded: this script with the arguments given, less ``--record``."""
    return shlex.join(["python", "scripts/bench_serve.py", *(a for a in argv if a != "--record")])


def scaling_table(rows: list[dict]) -> str:
    head = "| uploads per pass | " + " | ".join(str(r["batch"]) for r in rows) + " |"
    return "\n".join([head, "|---|" + "---:|" * len(rows), "| ms per upload | " + " | ".join(f"{r['ms']:.0f}" for r in rows) + " |",
                      "| × batch 1 | " + " | ".join(f"{r['gain']:.2f}" for r in rows) + " |"])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--images", type=Path, nargs="*", default=[], help="files or folders to upload (default: the run's test split)")
    ap.add_argument("--n", type=int, default=40, help="sequential requests for the latency")
    ap.add_argument("--seconds", type=float, default=20.0, help="duration of each throughput point")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=100.0)
    ap.add_argument("--rounds", type=int, default=3, help="repetitions of the load points, interleaved; medians reported")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-overlays", dest="overlays", action="store_false", help="skip the pictures (the page asks for them)")
    ap.add_argument("--no-control", dest="control", action="store_false", help="skip the --max-batch 1 control")
    ap.add_argument("--record", action="store_true", help="write the result into BENCHMARKS.md")
    args = ap.parse_args(argv)

    if args.n < 2 or args.rounds < 1 or args.seconds <= 0 or min(args.clients) < 1 or args.max_batch < 1 or args.max_wait_ms < 0:
        ap.error("--n must be at least 2, --rounds, --clients and --max-batch at least 1, --seconds positive, --max-wait-ms non-negative")
    if not (args.run / "config.yaml").is_file():
        ap.error(f"--run {args.run}: not a training run (no config.yaml)")
    try:
        images = pick_images(args.run, args.images, 64)
    except ValueError as e:
        ap.error(str(e))
    load_start = os.getloadavg()[0]
    batched = measure(args.run, images, args, args.max_batch, with_latency=True)
    control = measure(args.run, images, args, 1, with_latency=False) if args.control else None
    scaling = pass_scaling(args.run, images, args.device)
    lat = batched["latency"]
    import torch

    from lungaudit.config import load_config

    size = load_config(args.run / "config.yaml").cls.image_size
    command = command_line(sys.argv[1:] if argv is None else argv)
    head = (
        f"Measured by `scripts/bench_serve.py` on {time.strftime('%Y-%m-%d')}: {platform.machine()} CPU, {os.cpu_count()} cores "
        f"shared with other work (1-min load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end), "
        f"torch {torch.__version__}, device `{args.device}`; classifier input {size} px; {len(images)} images cycled; "
        f"pictures {'on (as the page asks)' if args.overlays else 'off'}; `--max-batch {args.max_batch} --max-wait-ms {args.max_wait_ms:g}`; "
        f"{args.seconds:g} s per load point, {args.rounds} interleaved rounds (medians; the gain over 1 client is taken within each round). Command: `{command}`."
    )
    body = (
        f"{head}\n\n**Single-image latency** of `POST /predict` (one client, {lat['n']} sequential uploads): "
        f"p50 **{lat['p50']:.0f} ms**, p95 **{lat['p95']:.0f} ms** (server-side medians: decode {lat['decode']:.0f} ms, "
        f"audit {lat['audit']:.0f} ms, pictures {lat['pictures']:.0f} ms).\n\n**Throughput** with concurrent clients:\n\n"
        + table(batched, control)
        + "\n\n**The device pass alone** (the server's handler in this process: lung mask, classifier, "
        "audited CAM, counterfactuals, display maps; no HTTP, no pictures), median of 5 interleaved rounds. "
        "The gain over 1 client follows the pass's own gain at the batch the clients fill:\n\n"
        + scaling_table(scaling)
    )
    print(body)
    if args.record:
        write_benchmark_section(REPO / "BENCHMARKS.md", "Serve: single-image latency and micro-batching", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
