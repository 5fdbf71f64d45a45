"""Shared pieces of the hostile-input suite: the CLI runner with its three promises, malformed-file
makers, and the hostile strings themselves.

Every command is held to the same contract (issue 12): exit 0 ok, 1 failed gate or regression,
2 bad input with a message naming the file, and never a traceback.
"""

from __future__ import annotations

import copy
import os
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
import torch
from click.testing import Result
from typer.testing import CliRunner

from lungaudit.cli.main import app

# Class labels, sources and file names a hostile (or merely unlucky) data set can carry: path
# separators and traversal, rich markup, HTML that would end a <script>, control and non-ASCII text.
ESCAPE = "x/../../../../../ESCAPED"
# Every class climbs out, so whichever class the tiny model predicts, its mean heatmap's name is tested.
HOSTILE_CLASSES = [
    ESCAPE,
    "<!--<script>[/x]/../../../../../ESCAPED",
    "a\\..\\..\\..\\ESCAPED [bold red]",
    "/tmp/ESCAPED\u202e </script>&amp;",
]
HOSTILE_SOURCE = "../../src[/y] <b onmouseover=alert(1)>"
HOSTILE_DIR = "x[/y] <i>"  # two folders, "x[" and "y] <i>": the data/x[/y], a closing tag to rich
HOSTILE_FILE = "{i} [red]<img src=x onerror=alert(1)> {label}..png"  # a file name cannot hold a "/"
SEPARATORS = ["/", "\\", "..", "\x00", "\n", ":", "[/", "[bold]", "<", "</script>", "<!--", "&", "%s", "\u202e", " ", "\t"]


def invoke(*args: Any, code: int | Iterable[int], env: dict[str, str] | None = None) -> Result:
    """Run ``lungaudit ARGS`` in-process; assert the exit code and that no traceback escaped."""
    # A wide terminal, so table cells holding hostile names are not cut or wrapped: the tests can
    # then look for each name as printed.
    res = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400", **(env or {})})
    codes = {code} if isinstance(code, int) else set(code)
    exc = res.exception
    assert exc is None or isinstance(exc, SystemExit), f"{args}: uncaught {exc!r}\n{res.output}"
    assert "Traceback" not in res.output, res.output
    assert res.exit_code in codes, f"{args}: exit {res.exit_code}, expected {codes}\n{res.output}"
    return res


def flat(text: str) -> str:
    """``text`` without any whitespace: rich wraps long paths at the terminal width, anywhere."""
    return "".join(text.split())


def names(res: Result, *things: Any) -> bool:
    """Whether the command's output names every one of ``things`` (paths, keys), wrapping ignored."""
    out = flat(res.output)
    return all(flat(str(t)) in out for t in things)


def tree(root: Path) -> set[Path]:
    """Every file (and link) under ``root``."""
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


# ------------------------------------------------------------------------------------- images


def png_bytes(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def gray(size: int = 64, seed: int = 0, dtype: Any = np.uint8) -> np.ndarray:
    hi = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, hi, (size, size), dtype=dtype)


def lung_mask(size: int = 64) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[size // 4 : 3 * size // 4, size // 8 : 3 * size // 8] = 255
    m[size // 4 : 3 * size // 4, 5 * size // 8 : 7 * size // 8] = 255
    return m


def png_huge_header(width: int = 200_000, height: int = 200_000) -> bytes:
    """A PNG whose IHDR declares a huge image (the decoder would allocate width*height)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def nan_tiff(path: Path, size: int = 64) -> None:
    img = np.full((size, size), np.nan, np.float32)
    assert cv2.imwrite(str(path), img)


def dicom_bytes(size: int = 64, photometric: str = "MONOCHROME2", pixels: bool = True) -> bytes:
    """A small valid DICOM (or one without PixelData), written with pydicom."""
    import io

    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality, ds.SOPInstanceUID = "DX", meta.MediaStorageSOPInstanceUID
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if pixels:
        ds.PixelData = (gray(size, 1, np.uint16) >> 4).tobytes()  # 12 bits stored
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# -------------------------------------------------------------------------------- mutations


def mutations(data: bytes, rng: np.random.Generator, n: int) -> list[bytes]:
    """``n`` damaged copies of ``data``: byte flips, truncations, a dropped or a duplicated span."""
    out = []
    for _ in range(n):
        b = bytearray(data)
        kind = rng.integers(4)
        if kind == 0:  # flip 1-8 random bytes
            for i in rng.integers(0, len(b), rng.integers(1, 9)):
                b[i] ^= int(rng.integers(1, 256))
        elif kind == 1:  # truncate
            b = b[: int(rng.integers(0, len(b)))]
        elif kind == 2:  # drop a span
            i = int(rng.integers(0, len(b)))
            del b[i : i + int(rng.integers(1, 64))]
        else:  # duplicate a span
            i = int(rng.integers(0, len(b)))
            b[i:i] = b[i : i + int(rng.integers(1, 64))]
        out.append(bytes(b))
    return out


def random_label(rng: np.random.Generator) -> str:
    """A label built from separators, markup and HTML fragments around some letters."""
    parts = [str(rng.choice(SEPARATORS)) if rng.random() < 0.6 else "".join(rng.choice(list("abcXYZ09_-"), 3)) for _ in range(rng.integers(2, 7))]
    return "".join(parts).replace("\x00", "") or "_"


# ------------------------------------------------------------------------------ checkpoints


def hostile_checkpoint(src: Path, dst: Path, class_names: list[str]) -> Path:
    """A copy of the checkpoint ``src`` whose classes carry ``class_names`` (same count, same weights)."""
    raw = torch.load(src, weights_only=True)
    assert len(raw["class_names"]) == len(class_names)
    raw = copy.copy(raw)
    raw["class_names"] = list(class_names)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(raw, dst)
    return dst


def clone_run(run_dir: Path, dst: Path, class_names: list[str] | None = None) -> Path:
    """A run folder with ``run_dir``'s config and best weights (optionally renamed classes), no run.json."""
    (dst / "weights").mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "config.yaml", dst / "config.yaml")
    shutil.copy(run_dir / "weights" / "seg_best.pt", dst / "weights" / "seg_best.pt")
    if class_names is None:
        shutil.copy(run_dir / "weights" / "cls_best.pt", dst / "weights" / "cls_best.pt")
    else:
        hostile_checkpoint(run_dir / "weights" / "cls_best.pt", dst / "weights" / "cls_best.pt", class_names)
    return dst


def relink(link: Path, target: Path | str) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(target, link)
    return link
