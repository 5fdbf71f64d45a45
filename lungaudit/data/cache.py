"""The local cache: the synthetic default data set, and decoded splits too large for memory.

Both live under :func:`cache_root` and are built once and reused. Every entry is built under an
exclusive file lock into a temporary name and renamed into place when complete, so concurrent
builders (the ranks of a torchrun job, two users' runs) wait for one build instead of racing, and a
build that was killed half-way is never taken for a finished one.

**Decoded splits on disk** (``data.cache: disk``): a split at one side ``S`` becomes a folder
``arrays/<key>-<S>px/`` holding ``images.u8`` and ``masks.u8`` (raw uint8 (N, S, S) arrays, read
through memory maps), ``has_mask.npy`` and ``meta.json``. The key hashes the ordered list of images
and masks with their sizes and modification times (:func:`~lungaudit.data.fingerprint.rows_fingerprint`),
the side, the decode pixel cap and the format version: an edited file or another split order is
another key. Decoding runs on DataLoader workers, a batch at a time, so building and training both
stay at flat memory whatever the number of images; the page cache holds what is hot.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from lungaudit.config import SynthConfig, to_dict
from lungaudit.data.arrays import Arrays, load_arrays, resize_image, resize_mask
from lungaudit.data.fingerprint import rows_fingerprint
from lungaudit.data.lazy import MemmapRows, RowView
from lungaudit.data.records import Sample

log = logging.getLogger(__name__)

ARRAYS = "arrays"
CACHE_FORMAT = 1
# data.cache: auto goes to disk when the decoded splits (float32 images + uint8 masks) would take
# more than this; a fixed size rather than a share of this machine's RAM, so that the same config
# decodes the same way (float32 in memory, uint8 on disk) on every machine.
AUTO_DISK_BYTES = 4 << 30
DECODE_BATCH = 64


def cache_root() -> Path:
    """``$LUNGAUDIT_CACHE``, else ``~/.cache/lungaudit``."""
    return Path(os.environ.get("LUNGAUDIT_CACHE", "~/.cache/lungaudit")).expanduser()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing), waiting for it if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def build_once(final: Path, build: Callable[[Path], None]) -> Path:
    """``final`` (a file or folder), made by ``build(tmp)`` once and renamed into place complete.

    Only a finished build is ever renamed to ``final``, so its existence is the completion marker;
    temporaries left by a killed builder are cleared by the next one.
    """
    if final.exists():
        return final
    with locked(final.parent / f".{final.name}.lock"):
        if final.exists():  # another process built it while we waited
            return final
        for stale in final.parent.glob(f".{final.name}.tmp-*"):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        try:
            build(tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            raise
    return final


def synthetic_default(cfg: SynthConfig, message: Callable[[str], None] | None = None) -> Path:
    """The synthetic benchmark for ``cfg``, generated into the cache on first use.

    The folder name hashes the generator config and version, and a ``.complete`` marker is written
    last, so a generation that was interrupted is detected and redone rather than silently trained on.
    The lock makes concurrent callers (every rank of a torchrun job) wait for one generation.
    """
    from lungaudit.data.synth import GENERATOR_VERSION, generate

    identity = {"generator_version": GENERATOR_VERSION, **to_dict(cfg)}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    out = cache_root() / f"synth-{key}"
    if (out / ".complete").is_file():
        return out
    with locked(cache_root() / f".synth-{key}.lock"):
        if (out / ".complete").is_file():
            return out
        if out.exists():
            shutil.rmtree(out)
        if message:
            message(f"generating the synthetic benchmark into {out}")
        generate(out, cfg)
        (out / ".complete").write_text("ok\n")
    return out


# ------------------------------------------------------------------ decoded splits on disk


def decoded_bytes(n_images: int, size: int) -> int:
    """What ``n_images`` decoded in memory at side ``size`` take: float32 image plus uint8 mask."""
    return n_images * size * size * 5


def resolve_cache_mode(mode: str, n_images: int, size: int) -> str:
    """``memory`` or ``disk`` for ``data.cache`` = ``mode``; ``auto`` by the decoded size of the set."""
    if mode in ("memory", "disk"):
        return mode
    if mode != "auto":
        raise ValueError(f"data.cache must be auto, memory or disk, got {mode!r}")
    return "disk" if decoded_bytes(n_images, size) > AUTO_DISK_BYTES else "memory"


def split_cache_dir(samples: Sequence[Sample], size: int, max_pixels: int | None) -> Path:
    identity = {"format": CACHE_FORMAT, "rows": rows_fingerprint(samples), "size": size, "max_pixels": max_pixels}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    return cache_root() / ARRAYS / f"{key}-{size}px"


def cached_arrays(
    samples: Sequence[Sample], size: int, max_pixels: int | None = None, num_workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Arrays:  # fmt: skip
    """``samples`` decoded at ``size`` as memory-mapped :class:`Arrays` (built on first use).

    Raises ``ImageReadError`` (the file named) for an image that cannot be decoded, like
    :func:`~lungaudit.data.arrays.load_arrays`; images are stored as uint8 (1/255 steps).
    """
    if not samples:
        return load_arrays(samples, size)
    folder = split_cache_dir(samples, size, max_pixels)
    folder.parent.mkdir(parents=True, exist_ok=True)
    build_once(folder, lambda tmp: _decode_split(tmp, samples, size, max_pixels, num_workers, progress))
    return open_arrays(folder, samples)


def open_arrays(folder: Path, samples: Sequence[Sample]) -> Arrays:
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    n, size = int(meta["n"]), int(meta["size"])
    if n != len(samples):
        raise ValueError(f"{folder}: the cache holds {n} images, not {len(samples)}; delete it to rebuild")
    return Arrays(
        list(samples),
        RowView(n, (size, size), np.float32, MemmapRows(folder / "images.u8", n, (size, size), scale=1 / 255)),
        RowView(n, (size, size), np.uint8, MemmapRows(folder / "masks.u8", n, (size, size))),
        np.load(folder / "has_mask.npy"),
        store=folder,
    )


def open_rows(path: Path, n: int, row_shape: tuple[int, ...]) -> RowView:
    """A raw uint8 (n, *row_shape) file (e.g. from :func:`build_rows`) as a read-only view."""
    return RowView(n, row_shape, np.uint8, MemmapRows(path, n, row_shape))


def build_rows(final: Path, n: int, row_shape: tuple[int, ...], fill: Callable[[np.memmap], None]) -> RowView:
    """A raw uint8 (n, *row_shape) file written once by ``fill(memmap)`` (locked, atomic), as a view."""

    def build(tmp: Path) -> None:
        mm = np.memmap(tmp, np.uint8, "w+", shape=(n, *row_shape))
        fill(mm)
        mm.flush()
        del mm

    final.parent.mkdir(parents=True, exist_ok=True)
    return open_rows(build_once(final, build), n, row_shape)


def _decode_split(
    tmp: Path, samples: Sequence[Sample], size: int, max_pixels: int | None, num_workers: int,
    progress: Callable[[int, int], None] | None,
) -> None:  # fmt: skip
    """Decode into ``tmp/`` batch by batch on DataLoader workers; ``meta.json`` is written last."""
    from torch.utils.data import DataLoader

    from lungaudit.data.imageio import ImageReadError

    tmp.mkdir(parents=True)
    n = len(samples)
    images = np.memmap(tmp / "images.u8", np.uint8, "w+", shape=(n, size, size))
    masks = np.memmap(tmp / "masks.u8", np.uint8, "w+", shape=(n, size, size))
    has_mask = np.zeros(n, bool)
    loader = DataLoader(_DecodeRows(samples, size, max_pixels), batch_size=DECODE_BATCH, num_workers=num_workers)
    done = 0
    for batch in loader:
        idx = batch["index"].numpy()
        for i, err in zip(idx, batch["error"]):
            if err:
                raise ImageReadError(f"{samples[i].path}: {err}")
        images[idx], masks[idx], has_mask[idx] = batch["image"].numpy(), batch["mask"].numpy(), batch["has_mask"].numpy()
        done += len(idx)
        if progress is not None:
            progress(done, n)
    images.flush()
    masks.flush()
    np.save(tmp / "has_mask.npy", has_mask)
    meta = {"format": CACHE_FORMAT, "n": n, "size": size, "max_pixels": max_pixels, "first": str(samples[0].path)}
    (tmp / "meta.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")


class _DecodeRows:
    """Items for the cache build: one image (and mask) decoded and resized to uint8, or the reason not."""

    def __init__(self, samples: Sequence[Sample], size: int, max_pixels: int | None) -> None:
        self.samples, self.size, self.max_pixels = list(samples), size, max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from lungaudit.data.imageio import ImageReadError, read_image, read_mask

        s, size = self.samples[i], self.size
        item: dict[str, Any] = {"index": i, "image": np.zeros((size, size), np.uint8), "mask": np.zeros((size, size), np.uint8),
                                "has_mask": False, "error": ""}  # fmt: skip
        try:
            img = read_image(s.path, self.max_pixels)
        except ImageReadError as e:
            item["error"] = e.reason
            return item
        item["image"] = np.clip(np.rint(resize_image(img, size) * 255), 0, 255).astype(np.uint8)
        if s.mask_path is not None:
            try:
                item["mask"] = resize_mask(read_mask(s.mask_path, img.shape[:2], self.max_pixels), size)
                item["has_mask"] = True
            except ImageReadError as e:
                log.warning("mask %s unusable (%s); it will be predicted", s.mask_path, e)
        return item


__all__ = [
    "AUTO_DISK_BYTES", "build_once", "build_rows", "cache_root", "cached_arrays", "locked", "open_arrays", "open_rows",
    "resolve_cache_mode", "split_cache_dir", "synthetic_default",
]
