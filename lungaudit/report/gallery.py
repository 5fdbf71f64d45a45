"""The flagged-image gallery's data: one compact JSON record per flagged image, worst first.

The report does not inline the full overlays (~170 KB of PNG each: 168 MB of HTML at 1000 flagged
images). Each record carries a small JPEG thumbnail as a data URI (a few KB), so the report stays one
file that works offline, and a relative link to the full-size overlay beside the report, which opens
when the thumbnail is clicked. ``report.js`` renders the records a page at a time, so thousands of
flagged images cost one JSON parse, not thousands of DOM cards.

Audit folders written before thumbnails existed (or with a thumbnail that is missing, not a JPEG or
oversized) get one made in memory from the overlay, with the audit's own thumbnail function; the
audit folder is never written to.
"""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import numpy as np

from lungaudit.audit.overlay import thumbnail_for, thumbnail_jpeg
from lungaudit.report.auditdir import AuditDir, AuditDirError, AuditRow

log = logging.getLogger(__name__)

# An audit thumbnail is 160 px wide at JPEG quality 70, about 5 KB. Anything much larger would break
# the report's size budget (30 KB of HTML per flagged image, base64 adds a third), so it is redone.
THUMB_MAX_BYTES = 20_000
_JPEG_MAGIC = b"\xff\xd8\xff"
_DIGITS = 4  # numbers in the data block: enough for two-decimal display, a third of the bytes of repr


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def gallery_order(rows: list[AuditRow]) -> list[AuditRow]:
    """Flagged rows, worst first: highest tolerant E_out first, unknown E_out after, no-evidence last."""

    def key(r: AuditRow) -> tuple[int, int, float]:
        nan = _missing(r.e_out_tol)
        return (int(r.no_evidence), int(nan), 0.0 if nan else -r.e_out_tol)

    return sorted((r for r in rows if r.flagged), key=key)


@dataclass
class _Tally:
    """What went wrong or was redone while collecting pictures, logged once instead of per image."""

    made: int = 0  # thumbnails made from the overlay (folder without thumbs/, or a bad thumbnail)
    missing: list[str] = field(default_factory=list)  # overlays that are not on disk

    def log(self, audit: Path) -> None:
        if self.made:
            log.info("%s: made %d thumbnail(s) from the full overlays (missing or unusable in thumbs/)", audit, self.made)
        if self.missing:
            log.warning("%s: %d overlay(s) missing, e.g. %s", audit, len(self.missing), self.missing[0])


class _Files:
    """Audit files by relative path, and links to them from the report's folder.

    Resolves the two folders once: per image that leaves one ``realpath`` per file, which is most of
    the report's time at thousands of flagged images.
    """

    def __init__(self, a: AuditDir, report_dir: Path) -> None:
        self.audit = a.path
        self.root = Path(os.path.realpath(a.path))
        self.inside = os.path.join(str(self.root), "")  # "root/": a prefix test, not per-file Path.parents
        self.report_dir = report_dir.resolve()

    def get(self, rel: str) -> Path | None:
        """The file ``rel`` if it exists inside the audit folder, None if it does not exist.

        A reference that leaves the folder (``../``, a link to a file outside) is tampering, not a
        missing picture: :class:`AuditDirError`, the same rule as :meth:`AuditDir.resolve`.
        """
        p = Path(os.path.realpath(self.root / rel))  # realpath: no error on a symlink loop
        if not str(p).startswith(self.inside):
            raise AuditDirError(f"{self.audit}: referenced file {rel!r} lies outside the audit directory")
        return p if p.is_file() else None

    def href(self, target: Path) -> str:
        return relative_href(target, self.report_dir)


def _remake(source: Path) -> bytes | None:
    """A thumbnail from any picture the audit wrote (the overlay PNG, or an oversized thumbnail)."""
    picture = cv2.imdecode(np.fromfile(str(source), np.uint8), cv2.IMREAD_COLOR)
    return None if picture is None else thumbnail_jpeg(picture)


def _thumbnail(files: _Files, overlay_rel: str, tally: _Tally) -> bytes | None:
    """The JPEG thumbnail of an overlay: the audit's own when usable, else made from the overlay
    (None when neither is readable)."""
    thumb = files.get(thumbnail_for(overlay_rel))
    if thumb is not None and thumb.stat().st_size <= THUMB_MAX_BYTES:
        data = thumb.read_bytes()
        if data.startswith(_JPEG_MAGIC):
            return data
    source = files.get(overlay_rel) or thumb
    data = _remake(source) if source is not None else None
    if data is not None:
        tally.made += 1
    return data


def relative_href(target: Path, report_dir: Path) -> str:
    """A URL for ``target`` relative to the (resolved) report folder, percent-encoded path segments.

    Relative, so the audit folder can be moved or archived with its report; encoded, so a file name
    can never read as a scheme (``javascript:``), a query or a fragment.
    """
    try:
        rel = os.path.relpath(target, report_dir)
    except ValueError:  # another drive (Windows): only an absolute file URL can reach it
        return target.as_uri()
    return "/".join(quote(part, safe="") for part in Path(rel).parts)


def _num(v: float | None) -> float | None:
    return None if _missing(v) else round(float(v), _DIGITS)


def _record(r: AuditRow) -> dict[str, Any]:
    """The row's fields the card shows and the filters read (no pictures)."""
    return {
        "key": r.key,
        "name": Path((r.path or r.key).replace("\\", "/")).name,
        "pred": r.pred,
        "prob": _num(r.prob_pred),
        "label": r.label,
        "pred_masked": r.pred_masked or None,
        "prob_masked": _num(r.prob_masked),
        "e_in": _num(r.e_in),
        "e_in_tol": _num(r.e_in_tol),
        "e_out_tol": _num(r.e_out_tol),
        "region": r.region or "",
        "on_marker": r.marker_overlap,
        "marker_box": list(r.marker_box) if r.marker_box is not None else None,
        "source": r.source,
        "reasons": list(r.reasons),
    }


def _pictures(files: _Files, r: AuditRow, tally: _Tally) -> dict[str, str | None]:
    """``thumb`` (data URI), ``full`` (relative link to the overlay) and ``missing`` (why there is none)."""
    if not r.overlay:
        return {"thumb": None, "full": None, "missing": "overlays were not written by this audit"}
    full = files.get(r.overlay)
    if full is None:
        tally.missing.append(r.overlay)
    data = _thumbnail(files, r.overlay, tally)
    return {
        "thumb": None if data is None else "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii"),
        "full": None if full is None else files.href(full),
        "missing": None if full is not None else f"overlay missing: {r.overlay}",
    }


def gallery_records(a: AuditDir, report_dir: Path | None = None) -> list[dict[str, Any]]:
    """One record per flagged image, in gallery order; links are relative to ``report_dir``
    (default: the audit folder, where ``report.html`` goes)."""
    files = _Files(a, a.path if report_dir is None else report_dir)
    tally = _Tally()
    out = [{**_record(r), **_pictures(files, r, tally)} for r in gallery_order(a.rows)]
    tally.log(a.path)
    return out


__all__ = ["THUMB_MAX_BYTES", "gallery_order", "gallery_records", "relative_href"]
