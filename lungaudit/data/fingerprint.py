"""Fingerprints of a set of images: what an audit was computed on, cheaply or exactly.

* :func:`listing_fingerprint` hashes each file's relative path, label, size and modification time:
  a stat per file, cheap enough to check at the start of every resumed audit.
* :func:`content_fingerprint` hashes the files' bytes: two audits are of the same data set only if
  this matches (``lungaudit compare`` refuses anything else).

Both are order-independent and use paths relative to the data set root, so a moved data set keeps
its fingerprint.

* :func:`rows_fingerprint` is the cheap kind for an ordered list with its masks: what the disk cache
  of decoded rows (row ``i`` is sample ``i``) is keyed by.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

from lungaudit.data.records import Sample
from lungaudit.utils import sha256_file


def _rel(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive on Windows
        return str(path)


def listing_fingerprint(samples: Sequence[Sample], root: Path) -> str:
    """SHA-256 over (relative path, label, size, mtime) of the samples, order-independent."""
    h = hashlib.sha256()
    for s in sorted(samples, key=lambda s: str(s.path)):
        try:
            st = os.stat(s.path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{_rel(s.path, root)}\t{s.label}\t{stamp}\n".encode())
    return h.hexdigest()


def _stamp(path: Path | None) -> str:
    if path is None:
        return "-"
    try:
        st = os.stat(path)
        return f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return f"{path}:missing"


def rows_fingerprint(samples: Sequence[Sample]) -> str:
    """SHA-256 over (absolute path, size, mtime) of each image and its mask, in order."""
    h = hashlib.sha256()
    for s in samples:
        h.update(f"{_stamp(s.path)}\t{_stamp(s.mask_path)}\n".encode())
    return h.hexdigest()


def content_fingerprint(samples: Sequence[Sample], root: Path) -> str:
    """SHA-256 over (relative path, label, content hash) of the samples, order-independent."""
    h = hashlib.sha256()
    for s in sorted(samples, key=lambda s: str(s.path)):
        try:
            digest = sha256_file(s.path)
        except OSError:
            digest = "unreadable"
        h.update(f"{_rel(s.path, root)}\t{s.label}\t{digest}\n".encode())
    return h.hexdigest()


__all__ = ["content_fingerprint", "listing_fingerprint", "rows_fingerprint"]
