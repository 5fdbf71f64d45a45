"""The audit's on-disk contract, shared by the writer (audit.run) and the readers (report)."""

SCHEMA_VERSION = 1

# audit.csv: these columns, then one p_<class> column per class name.
BASE_COLUMNS: tuple[str, ...] = (
    "key", "path", "label", "source", "split", "mask_source", "pred", "prob_pred", "pred_masked", "prob_masked",
    "prob_drop", "flip", "e_in", "e_in_tol", "e_out", "e_out_tol", "e_in_ratio", "lung_area", "no_evidence",
    "region", "marker_overlap", "marker_box", "pred_without_markers", "marker_flip", "flagged", "reasons", "overlay",
)  # fmt: skip
