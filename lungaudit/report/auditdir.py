"""Read and validate an audit directory (``runs/audit/<name>/``) written by ``lungaudit audit``.

Everything downstream of the audit (HTML report, release gate, comparison) reads through here, so a
malformed directory fails once, early, with the file and the problem named, instead of as a
``KeyError`` deep inside a renderer.

Layout::

    audit.csv                  one row per image (see ``AUDIT_COLUMNS``)
    summary.json               dataset aggregates (see ``load_summary``)
    overlays/*.png             heatmap overlays of flagged images
    mean_outside_<class>.png   mean out-of-lung heatmap per predicted class
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lungaudit.audit.schema import BASE_COLUMNS as AUDIT_COLUMNS, SCHEMA_VERSION  # noqa: E402

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
AUDIT_CSV = "audit.csv"
GROUP_STATS: tuple[str, ...] = ("flag_rate", "mean_e_in", "flip_rate", "accuracy")
METRIC_NAMES: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv", "f1", "auc")


class AuditDirError(ValueError):
    """An audit directory, or one of its files, that is missing or malformed."""


# ---------------------------------------------------------------------------------------------
# summary.json


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _num_or_none(v: Any) -> float | None:
    """Numbers as float; None and NaN (Python's json reads a bare NaN) as None."""
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f


class _Checker:
    """Small type checker that names the file and the dotted key of the first problem."""

    def __init__(self, file: Path):
        self.file = file

    def fail(self, where: str, msg: str) -> AuditDirError:
        return AuditDirError(f"{self.file}: {where}: {msg}")

    def get(self, obj: dict[str, Any], key: str, where: str) -> Any:
        if key not in obj:
            raise self.fail(where or "top level", f"missing key {key!r}")
        return obj[key]

    def mapping(self, v: Any, where: str, *, nullable: bool = False) -> dict[str, Any] | None:
        if v is None and nullable:
            return None
        if not isinstance(v, dict):
            raise self.fail(where, f"expected an object, got {type(v).__name__}")
        return v

    def number(self, v: Any, where: str, *, nullable: bool = False) -> float | None:
        if v is None and nullable:
            return None
        if not _is_num(v):
            raise self.fail(where, f"expected a number{' or null' if nullable else ''}, got {v!r}")
        return _num_or_none(v)

    def integer(self, v: Any, where: str) -> int:
        if not (_is_num(v) and float(v).is_integer()):
            raise self.fail(where, f"expected an integer, got {v!r}")
        return int(v)

    def string(self, v: Any, where: str, *, nullable: bool = False) -> str | None:
        if v is None and nullable:
            return None
        if not isinstance(v, str):
            raise self.fail(where, f"expected a string, got {v!r}")
        return v

    def str_list(self, v: Any, where: str) -> list[str]:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.fail(where, f"expected a list of strings, got {v!r}")
        return v

    def num_list(self, v: Any, where: str) -> list[float]:
        if not isinstance(v, list) or not all(_is_num(x) for x in v):
            raise self.fail(where, f"expected a list of numbers, got {v!r}")
        return [float(x) for x in v]

    def group(self, v: Any, where: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
        """A stats block: ``n`` (optional for ``overall``) plus nullable rates."""
        g = self.mapping(v, where)
        assert g is not None
        out: dict[str, Any] = {}
        if "n" in g or where != "overall":
            out["n"] = self.integer(self.get(g, "n", where), f"{where}.n")
        for k in GROUP_STATS + extra:
            out[k] = self.number(self.get(g, k, where), f"{where}.{k}", nullable=True)
        return {**g, **out}

    def groups(self, v: Any, where: str) -> dict[str, dict[str, Any]]:
        m = self.mapping(v, where)
        assert m is not None
        return {str(name): self.group(g, f"{where}.{name}") for name, g in m.items()}


def validate_summary(data: Any, file: Path | str = SUMMARY_FILE) -> dict[str, Any]:
    """Check ``summary.json`` content and return it normalised (NaN -> None, ints as int).

    Raises ``AuditDirError`` naming the file and the dotted key of the first problem.
    """
    c = _Checker(Path(file))
    top = c.mapping(data, "top level")
    assert top is not None
    s = dict(top)
    version = c.integer(c.get(s, "schema_version", ""), "schema_version")
    if version != SCHEMA_VERSION:
        raise c.fail("schema_version", f"unsupported version {version} (this lungaudit reads {SCHEMA_VERSION})")
    c.string(c.get(s, "lungaudit_version", ""), "lungaudit_version")
    c.string(c.get(s, "created", ""), "created")
    c.string(c.get(s, "run_dir", ""), "run_dir", nullable=True)

    ckpts = c.mapping(c.get(s, "checkpoints", ""), "checkpoints")
    assert ckpts is not None
    for name in ("cls", "seg"):
        ck = c.mapping(c.get(ckpts, name, "checkpoints"), f"checkpoints.{name}", nullable=(name == "seg"))
        if ck is not None:
            c.string(c.get(ck, "path", f"checkpoints.{name}"), f"checkpoints.{name}.path")
            c.string(c.get(ck, "sha256", f"checkpoints.{name}"), f"checkpoints.{name}.sha256")

    ds = c.mapping(c.get(s, "dataset", ""), "dataset")
    assert ds is not None
    for k in ("root", "layout", "fingerprint"):
        c.string(c.get(ds, k, "dataset"), f"dataset.{k}")
    c.integer(c.get(ds, "n_samples", "dataset"), "dataset.n_samples")
    c.str_list(c.get(ds, "splits", "dataset"), "dataset.splits")

    c.mapping(c.get(s, "config", ""), "config")
    class_names = c.str_list(c.get(s, "class_names", ""), "class_names")
    if not class_names:
        raise c.fail("class_names", "is empty")

    counts = c.mapping(c.get(s, "counts", ""), "counts")
    assert counts is not None
    s["counts"] = {
        **counts,
        **{k: c.integer(c.get(counts, k, "counts"), f"counts.{k}") for k in ("images", "audited", "flagged", "no_evidence", "problems")},
    }
    s["overall"] = c.group(c.get(s, "overall", ""), "overall", extra=("mean_e_in_tol",))
    for k in ("per_class", "per_predicted_class", "per_source"):
        s[k] = c.groups(c.get(s, k, ""), k)
    for k in ("regions", "reasons"):
        m = c.mapping(c.get(s, k, ""), k)
        assert m is not None
        s[k] = {str(name): c.integer(v, f"{k}.{name}") for name, v in m.items()}

    metrics = c.mapping(c.get(s, "metrics", ""), "metrics", nullable=True)
    if metrics is not None:
        m = dict(metrics)
        for k in ("accuracy", "macro_f1", "macro_auc"):
            m[k] = c.number(c.get(m, k, "metrics"), f"metrics.{k}", nullable=True)
        conf = c.get(m, "confusion", "metrics")
        if not isinstance(conf, list) or len(conf) != len(class_names) or not all(
            isinstance(r, list) and len(r) == len(class_names) and all(_is_num(x) for x in r) for r in conf
        ):
            raise c.fail("metrics.confusion", f"expected a {len(class_names)}x{len(class_names)} matrix of numbers")
        m["confusion"] = [[int(x) for x in r] for r in conf]
        pc = c.mapping(c.get(m, "per_class", "metrics"), "metrics.per_class")
        assert pc is not None
        m["per_class"] = {}
        for name, vals in pc.items():
            where = f"metrics.per_class.{name}"
            vals = c.mapping(vals, where)
            assert vals is not None
            m["per_class"][str(name)] = {
                **vals,
                **{k: c.number(c.get(vals, k, where), f"{where}.{k}", nullable=True) for k in METRIC_NAMES},
            }
        s["metrics"] = m

    mo = c.mapping(c.get(s, "mean_outside_images", ""), "mean_outside_images")
    assert mo is not None
    for name, rel in mo.items():
        c.string(rel, f"mean_outside_images.{name}")

    hist = c.mapping(c.get(s, "e_in_histogram", ""), "e_in_histogram")
    assert hist is not None
    bins = c.num_list(c.get(hist, "bins", "e_in_histogram"), "e_in_histogram.bins")
    hcounts = c.num_list(c.get(hist, "counts", "e_in_histogram"), "e_in_histogram.counts")
    if bins and len(bins) != len(hcounts) + 1:
        raise c.fail("e_in_histogram", f"{len(bins)} bin edges need {len(bins) - 1} counts, got {len(hcounts)}")
    s["e_in_histogram"] = {"bins": bins, "counts": [int(x) for x in hcounts]}

    problems = c.get(s, "problems", "")
    if not isinstance(problems, list):
        raise c.fail("problems", f"expected a list, got {type(problems).__name__}")
    for i, p in enumerate(problems):
        p = c.mapping(p, f"problems[{i}]")
        assert p is not None
        for k in ("path", "reason"):
            c.string(c.get(p, k, f"problems[{i}]"), f"problems[{i}].{k}")
    return s


def load_summary(audit_dir: str | Path) -> dict[str, Any]:
    """Read and validate ``audit_dir/summary.json`` (``audit_dir`` may also be the file itself)."""
    p = Path(audit_dir)
    file = p if p.suffix == ".json" else p / SUMMARY_FILE
    if p.suffix != ".json" and not p.is_dir():
        raise AuditDirError(f"{p}: not an audit directory (does not exist or is not a folder)")
    if not file.is_file():
        raise AuditDirError(f"{file}: missing (is {file.parent} the output folder of `lungaudit audit`?)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AuditDirError(f"{file}: not valid JSON: {e}") from None
    return validate_summary(data, file)


# ---------------------------------------------------------------------------------------------
# audit.csv


@dataclass(frozen=True)
class AuditRow:
    """One image of ``audit.csv``, typed. Missing numbers are NaN; missing text is None."""

    key: str
    path: str
    label: str | None
    source: str | None
    split: str | None
    mask_source: str | None
    pred: str
    prob_pred: float
    pred_masked: str | None
    prob_masked: float
    prob_drop: float
    flip: bool | None
    e_in: float
    e_in_tol: float
    e_out: float
    e_out_tol: float
    e_in_ratio: float
    lung_area: float
    no_evidence: bool
    region: str | None
    marker_overlap: bool | None
    marker_box: tuple[float, float, float, float] | None
    flagged: bool
    reasons: tuple[str, ...]
    overlay: str | None
    probs: dict[str, float] = field(default_factory=dict)


_FLOATS = ("prob_pred", "prob_masked", "prob_drop", "e_in", "e_in_tol", "e_out", "e_out_tol", "e_in_ratio", "lung_area")
_OPT_TEXT = ("label", "source", "split", "mask_source", "pred_masked", "region", "overlay")


def _parse_bool(raw: str, where: str, *, required: bool) -> bool | None:
    v = raw.strip().lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    if v == "" and not required:
        return None
    raise AuditDirError(f"{where}: expected true/false, got {raw!r}")


def _parse_float(raw: str, where: str) -> float:
    if raw.strip() == "":
        return math.nan
    try:
        return float(raw)
    except ValueError:
        raise AuditDirError(f"{where}: expected a number, got {raw!r}") from None


def read_audit_csv(file: str | Path, class_names: list[str] | tuple[str, ...]) -> list[AuditRow]:
    """Parse ``audit.csv``; every required column must be present and every cell well-typed."""
    file = Path(file)
    if not file.is_file():
        raise AuditDirError(f"{file}: missing")
    rows: list[AuditRow] = []
    with open(file, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        prob_cols = tuple(f"p_{c}" for c in class_names)
        missing = [c for c in AUDIT_COLUMNS + prob_cols if c not in header]
        if missing:
            raise AuditDirError(f"{file}: missing column(s) {', '.join(missing)}")
        seen: set[str] = set()
        for line, r in enumerate(reader, start=2):
            where = f"{file}, line {line}"
            if None in r or any(v is None for v in r.values()):
                raise AuditDirError(f"{where}: wrong number of fields")
            key = r["key"]
            if not key:
                raise AuditDirError(f"{where}: empty key")
            if key in seen:
                raise AuditDirError(f"{where}: duplicate key {key!r}")
            seen.add(key)
            if not r["pred"]:
                raise AuditDirError(f"{where}: empty pred")
            box = None
            if r["marker_box"].strip():
                parts = r["marker_box"].split()
                if len(parts) != 4:
                    raise AuditDirError(f"{where}, column marker_box: expected 'x0 y0 x1 y1', got {r['marker_box']!r}")
                b = [_parse_float(x, f"{where}, column marker_box") for x in parts]
                box = (b[0], b[1], b[2], b[3])
            rows.append(
                AuditRow(
                    key=key,
                    path=r["path"],
                    pred=r["pred"],
                    **{k: (r[k] or None) for k in _OPT_TEXT},
                    **{k: _parse_float(r[k], f"{where}, column {k}") for k in _FLOATS},
                    flip=_parse_bool(r["flip"], f"{where}, column flip", required=False),
                    no_evidence=bool(_parse_bool(r["no_evidence"], f"{where}, column no_evidence", required=True)),
                    marker_overlap=_parse_bool(r["marker_overlap"], f"{where}, column marker_overlap", required=False),
                    marker_box=box,
                    flagged=bool(_parse_bool(r["flagged"], f"{where}, column flagged", required=True)),
                    reasons=tuple(x.strip() for x in r["reasons"].split(";") if x.strip()),
                    probs={c: _parse_float(r[f"p_{c}"], f"{where}, column p_{c}") for c in class_names},
                )
            )
    return rows


# ---------------------------------------------------------------------------------------------
# the whole directory


@dataclass
class AuditDir:
    """A validated audit directory: its summary and its typed rows."""

    path: Path
    summary: dict[str, Any]
    rows: list[AuditRow]
    warnings: list[str] = field(default_factory=list)  # inconsistencies worth showing, not fatal

    @property
    def class_names(self) -> list[str]:
        return list(self.summary["class_names"])

    @property
    def flagged(self) -> list[AuditRow]:
        return [r for r in self.rows if r.flagged]

    def resolve(self, rel: str) -> Path:
        """A path from the audit files, relative to the audit dir; refuses to leave the dir."""
        p = (self.path / rel).resolve()
        root = self.path.resolve()
        if p != root and root not in p.parents:
            raise AuditDirError(f"{self.path}: referenced file {rel!r} lies outside the audit directory")
        return p


def load_audit_dir(audit_dir: str | Path) -> AuditDir:
    """Read and validate ``summary.json`` and ``audit.csv`` of an audit directory."""
    path = Path(audit_dir)
    summary = load_summary(path)
    rows = read_audit_csv(path / AUDIT_CSV, summary["class_names"])
    warnings: list[str] = []
    n_flagged = sum(r.flagged for r in rows)
    if n_flagged != summary["counts"]["flagged"]:
        # Not fatal: the rows are the ground truth for the gallery, but the mismatch is shown.
        warnings.append(
            f"{AUDIT_CSV} has {n_flagged} flagged rows but {SUMMARY_FILE} counts.flagged is "
            f"{summary['counts']['flagged']} (files from different runs?)"
        )
    for w in warnings:
        log.warning("%s: %s", path, w)
    return AuditDir(path=path, summary=summary, rows=rows, warnings=warnings)
