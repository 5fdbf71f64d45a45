"""The audit's on-disk contract: one schema for ``audit.csv`` rows and ``summary.json``.

The writer (``audit.run``), the aggregator, the report, the gate and ``compare`` all go through these
pydantic models, so a statistic has one name, one type and one valid range everywhere: a summary
claiming a flag rate of -5 or a mean E_in of infinity is refused when it is read, whoever wrote it.

``audit.csv`` is a flat text table; :meth:`AuditRow.to_csv` and :func:`row_from_csv` are the only
places that know how a row looks as text (booleans ``true``/``false``, missing numbers as empty
cells, ``;``-joined reasons, ``x0 y0 x1 y1`` boxes, one ``p_<class>`` column per class).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError, model_validator

SCHEMA_VERSION = 2

REASONS: tuple[str, ...] = ("out_of_lung_energy", "flip_under_masking", "flip_without_markers", "no_evidence")
MASK_SOURCES: tuple[str, ...] = ("given", "predicted")

# audit.csv: these columns, then one p_<class> column per class name.
BASE_COLUMNS: tuple[str, ...] = (
    "key", "path", "label", "source", "split", "trained_on", "mask_source", "pred", "prob_pred", "pred_masked",
    "prob_masked", "prob_drop", "flip", "e_in", "e_in_tol", "e_out", "e_out_tol", "e_in_ratio", "lung_area",
    "no_evidence", "region", "marker_overlap", "marker_box", "pred_without_markers", "marker_flip", "flagged",
    "reasons", "overlay",
)  # fmt: skip

Rate = Annotated[float, Field(ge=0.0, le=1.0)]
Signed = Annotated[float, Field(ge=-1.0, le=1.0)]


class SchemaError(ValueError):
    """A row or summary that breaks the contract; the message names where."""


class _Model(BaseModel):
    # NaN is not a value: it is read as "unavailable" (None) where a field may be missing and refused
    # elsewhere; infinities are always refused.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _nan_is_missing(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}
        return data


# --------------------------------------------------------------------------------------------- rows


class AuditRow(_Model):
    """One audited image. Energies are None where the heatmap held no evidence."""

    key: str = Field(min_length=1)
    path: str
    label: str | None = None
    source: str | None = None
    split: str | None = None
    trained_on: bool = False  # the audited run trained (or selected its checkpoint) on this image
    mask_source: Literal["given", "predicted"]
    pred: str = Field(min_length=1)
    prob_pred: Rate
    pred_masked: str
    prob_masked: Rate
    prob_drop: Signed
    flip: bool
    e_in: Rate | None = None
    e_in_tol: Rate | None = None
    e_out: Rate | None = None
    e_out_tol: Rate | None = None
    e_in_ratio: Annotated[float, Field(ge=0.0)] | None = None
    lung_area: Rate
    no_evidence: bool
    region: str | None = None
    marker_overlap: bool = False
    marker_box: tuple[int, int, int, int] | None = None
    pred_without_markers: str
    marker_flip: bool = False
    flagged: bool
    reasons: tuple[Literal["out_of_lung_energy", "flip_under_masking", "flip_without_markers", "no_evidence"], ...] = ()
    overlay: str | None = None
    probs: dict[str, Rate] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> AuditRow:
        if self.flagged != bool(self.reasons):
            raise ValueError(f"flagged is {self.flagged} but reasons are {list(self.reasons) or 'empty'}")
        if self.no_evidence != (self.e_in is None):
            raise ValueError("e_in must be empty exactly when no_evidence is true")
        return self

    def to_csv(self, class_names: list[str] | tuple[str, ...]) -> dict[str, str]:
        """The row as ``audit.csv`` cells, in :data:`BASE_COLUMNS` order plus ``p_<class>``."""
        cells = {c: _cell(getattr(self, c)) for c in BASE_COLUMNS}
        cells["reasons"] = ";".join(self.reasons)
        cells["marker_box"] = " ".join(map(str, self.marker_box)) if self.marker_box else ""
        cells.update({f"p_{c}": _cell(self.probs.get(c)) for c in class_names})
        return cells


def csv_columns(class_names: list[str] | tuple[str, ...]) -> list[str]:
    return list(BASE_COLUMNS) + [f"p_{c}" for c in class_names]


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return "" if v is None else str(v)


_BOOLS = {"true": True, "false": False}
_OPTIONAL_BOOLS = frozenset({"trained_on", "marker_overlap", "marker_flip"})
_NUMBERS = frozenset({"prob_pred", "prob_masked", "prob_drop", "e_in", "e_in_tol", "e_out", "e_out_tol", "e_in_ratio", "lung_area"})


def _parse_cell(col: str, raw: str) -> Any:
    raw = raw.strip()
    if col in AuditRow.model_fields and AuditRow.model_fields[col].annotation is bool:
        if raw == "" and col in _OPTIONAL_BOOLS:
            return False
        if raw.lower() not in _BOOLS:
            raise SchemaError(f"column {col}: expected true/false, got {raw!r}")
        return _BOOLS[raw.lower()]
    if col in _NUMBERS or col.startswith("p_"):
        if raw == "":
            return None
        try:
            return float(raw)
        except ValueError:
            raise SchemaError(f"column {col}: expected a number, got {raw!r}") from None
    if col == "marker_box":
        parts = raw.split()
        if parts and len(parts) != 4:
            raise SchemaError(f"column marker_box: expected 'x0 y0 x1 y1', got {raw!r}")
        return tuple(parts) if parts else None
    if col == "reasons":
        return tuple(x.strip() for x in raw.split(";") if x.strip())
    return raw or None


def row_from_csv(raw: dict[str, str], class_names: list[str] | tuple[str, ...]) -> AuditRow:
    """Parse one ``csv.DictReader`` row; raises :class:`SchemaError` naming the column at fault."""
    data: dict[str, Any] = {}
    for col in BASE_COLUMNS:
        data[col] = _parse_cell(col, raw.get(col) or "")
    data["path"] = data["path"] or ""
    data["probs"] = {c: _parse_cell(f"p_{c}", raw.get(f"p_{c}") or "") for c in class_names}
    try:
        return AuditRow.model_validate(data)
    except ValidationError as e:
        raise SchemaError(describe(e, prefix="column ")) from None


def describe(e: ValidationError, prefix: str = "") -> str:
    """The first error of a pydantic ValidationError as ``<dotted location>: <message>``."""
    err = e.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if err.get("input") is not None and err["type"] not in ("missing",):
        msg += f", got {err['input']!r}"
    return f"{prefix}{loc}: {msg}" if loc else msg


# ------------------------------------------------------------------------------------------ summary


class GroupStats(_Model):
    """Audit statistics of one group of rows (all, one class, one source)."""

    n: NonNegativeInt
    flag_rate: Rate | None
    marker_flip_rate: Rate | None
    mean_e_in: Rate | None
    mean_e_in_tol: Rate | None
    flip_rate: Rate | None
    accuracy: Rate | None
    trained_on: NonNegativeInt = 0


class Counts(_Model):
    images: NonNegativeInt  # audited images plus the ones that could not be read
    audited: NonNegativeInt
    flagged: NonNegativeInt
    no_evidence: NonNegativeInt
    labelled: NonNegativeInt
    problems: NonNegativeInt
    trained_on: NonNegativeInt = 0

    @model_validator(mode="after")
    def _within(self) -> Counts:
        for name in ("flagged", "no_evidence", "labelled", "trained_on"):
            if getattr(self, name) > self.audited:
                raise ValueError(f"{name} ({getattr(self, name)}) exceeds audited ({self.audited})")
        if self.audited > self.images:
            raise ValueError(f"audited ({self.audited}) exceeds images ({self.images})")
        return self


class ClassMetrics(_Model):
    sensitivity: Rate | None
    specificity: Rate | None
    ppv: Rate | None
    npv: Rate | None
    f1: Rate | None
    auc: Rate | None


class Metrics(_Model):
    n: NonNegativeInt
    accuracy: Rate | None
    macro_f1: Rate | None
    macro_auc: Rate | None
    confusion: list[list[NonNegativeInt]]
    per_class: dict[str, ClassMetrics]


class CheckpointRef(_Model):
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Checkpoints(_Model):
    cls: CheckpointRef
    seg: CheckpointRef | None = None


class DatasetInfo(_Model):
    root: str
    layout: str
    fingerprint: str = Field(min_length=1)
    n_samples: NonNegativeInt
    splits: list[str]


class Histogram(_Model):
    bins: list[float]
    counts: list[NonNegativeInt]

    @model_validator(mode="after")
    def _edges(self) -> Histogram:
        if self.bins and len(self.bins) != len(self.counts) + 1:
            raise ValueError(f"{len(self.bins)} bin edges need {len(self.bins) - 1} counts, got {len(self.counts)}")
        return self


class ProblemRef(_Model):
    path: str
    kind: str = "image"
    reason: str


class Summary(_Model):
    """``summary.json``: provenance, counts and every aggregate the report, gate and compare read."""

    schema_version: Literal[2]
    lungaudit_version: str
    created: str
    run_dir: str | None = None
    checkpoints: Checkpoints
    dataset: DatasetInfo
    config: dict[str, Any]
    class_names: list[str] = Field(min_length=1)
    counts: Counts
    overall: GroupStats
    per_class: dict[str, GroupStats]
    per_predicted_class: dict[str, GroupStats]
    per_source: dict[str, GroupStats]
    regions: dict[str, NonNegativeInt]
    reasons: dict[str, NonNegativeInt]
    metrics: Metrics | None = None
    mean_outside_images: dict[str, str]
    e_in_histogram: Histogram
    problems: list[ProblemRef]
    throughput_images_per_s: Annotated[float, Field(ge=0.0)] | None = None

    @model_validator(mode="after")
    def _shapes(self) -> Summary:
        k = len(self.class_names)
        if self.metrics is not None and (len(self.metrics.confusion) != k or any(len(r) != k for r in self.metrics.confusion)):
            raise ValueError(f"metrics.confusion must be a {k}x{k} matrix (one row and column per class)")
        if self.overall.n != self.counts.audited:
            raise ValueError(f"overall.n ({self.overall.n}) differs from counts.audited ({self.counts.audited})")
        return self


def summary_from_json(data: Any, where: str = "summary.json") -> Summary:
    """Validate a parsed ``summary.json``; raises :class:`SchemaError` naming the file and key."""
    if isinstance(data, dict) and "schema_version" in data and data["schema_version"] != SCHEMA_VERSION:
        raise SchemaError(
            f"{where}: schema_version: unsupported version {data['schema_version']!r} (this lungaudit reads {SCHEMA_VERSION})"
        )
    try:
        return Summary.model_validate(data)
    except ValidationError as e:
        raise SchemaError(f"{where}: {describe(e)}") from None


__all__ = [
    "BASE_COLUMNS", "MASK_SOURCES", "REASONS", "SCHEMA_VERSION", "AuditRow", "Checkpoints", "CheckpointRef",
    "ClassMetrics", "Counts", "DatasetInfo", "GroupStats", "Histogram", "Metrics", "ProblemRef", "SchemaError",
    "Summary", "csv_columns", "describe", "row_from_csv", "summary_from_json",
]
