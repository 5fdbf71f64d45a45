"""Small shared helpers: atomic writes, hashing, seeding."""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

_UMASK_LOCK = threading.Lock()


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file.

    ``durable=False`` skips the fsync: still atomic for readers, but not guaranteed to survive a
    power cut; for files that can be regenerated (overlays), where fsync would dominate the cost.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; outputs are shared (a curator opens report.html), so give the file the
        # mode open() would have given it under the caller's umask.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask (reading it means setting it; the lock keeps that invisible to other threads)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def safe_filename(text: str, max_len: int = 60) -> str:
    """A file-name fragment derived from data (a class, a source, an image name) that is only a name.

    Every character but ASCII letters, digits, ``-`` and ``_`` becomes ``_``, so no separator, dot
    or drive letter survives: the result can never leave the folder it is joined to. Never empty.
    """
    cleaned = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "_" for c in str(text))[:max_len]
    return cleaned or "_"


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_png(path: Path, image: np.ndarray, durable: bool = True) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode PNG for {path}")
    atomic_write_bytes(path, buf.tobytes(), durable=durable)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
