"""Per-image sources from the COVID-19 Radiography Database's ``<CLASS>.metadata.xlsx`` workbooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lungaudit.data.imageio import IMAGE_EXTENSIONS
from lungaudit.data.records import Problem

# URL path parts too generic to name a source (kaggle.com/c/<name>, kaggle.com/datasets/<owner>/...).
_GENERIC_URL_PARTS = frozenset({"c", "d", "datasets", "dataset", "category", "competitions", "data", "en"})


def source_from_url(url: str) -> str | None:
    """A short readable source name from a URL: host (without ``www.``) plus its first meaningful path part.

    ``https://github.com/ieee8023/covid-chestxray-dataset`` -> ``github.com/ieee8023``;
    ``https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data`` -> ``kaggle.com/rsna-pneumonia-detection-challenge``.
    """
    url = (url or "").strip()
    if not url:
        return None
    parsed = urlparse(url if "://" in url else "http://" + url)
    host = (parsed.hostname or "").lower()
    if host.startswith("www."):
        host = host[4:]
    parts = [p for p in parsed.path.split("/") if p and p.lower() not in _GENERIC_URL_PARTS]
    if not host:
        return url[:60]
    return f"{host}/{parts[0]}" if parts else host


def _sources(rows: Any, i_name: int, i_url: int) -> dict[str, str]:
    """{lower-cased file stem: source} from the workbook's data rows (after the header)."""
    out: dict[str, str] = {}
    for row in rows:
        if row is None or len(row) <= max(i_name, i_url) or row[i_name] is None:
            continue
        name = str(row[i_name]).strip()
        if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
            name = Path(name).stem
        src = source_from_url(str(row[i_url])) if row[i_url] is not None else None
        if src:
            out[name.lower()] = src
    return out


def read_metadata(xlsx: Path, problems: list[Problem]) -> dict[str, str]:
    """``<CLASS>.metadata.xlsx`` -> {lower-cased FILE NAME stem: source}. Malformed -> one Problem, {}."""
    try:
        from openpyxl import load_workbook

        wb = load_workbook(xlsx, read_only=True, data_only=True)
        try:
            rows = wb.worksheets[0].iter_rows(values_only=True)
            header = next(rows, None)
            if header is None:
                problems.append(Problem(xlsx, "metadata workbook is empty", "metadata"))
                return {}
            cols = {str(h).strip().upper(): i for i, h in enumerate(header) if h is not None}
            missing = [c for c in ("FILE NAME", "URL") if c not in cols]
            if missing:
                problems.append(
                    Problem(xlsx, f"metadata workbook lacks column(s) {', '.join(missing)}; sources unknown", "metadata")
                )
                return {}
            return _sources(rows, cols["FILE NAME"], cols["URL"])
        finally:
            wb.close()
    except Exception as e:  # openpyxl raises zipfile/KeyError/InvalidFileException... for bad files
        problems.append(Problem(xlsx, f"cannot read metadata workbook: {type(e).__name__}: {e}", "metadata"))
        return {}
