"""Data stage: discover, decode, validate and split chest X-ray data sets in every supported layout."""

from lungaudit.data.imageio import ImageReadError, ImageStats, probe, read_image, read_mask, validate_samples
from lungaudit.data.layouts import (
    LAYOUTS,
    DatasetError,
    Inspection,
    detect_layout,
    inspect_dataset,
    load_dataset,
    scan_dataset,
    source_from_url,
    write_problems_csv,
)
from lungaudit.data.records import Dataset, Problem, Sample
from lungaudit.data.split import SPLITS, assign_splits, class_weights

__all__ = [
    "LAYOUTS",
    "SPLITS",
    "Dataset",
    "DatasetError",
    "ImageReadError",
    "ImageStats",
    "Inspection",
    "Problem",
    "Sample",
    "assign_splits",
    "class_weights",
    "detect_layout",
    "inspect_dataset",
    "load_dataset",
    "probe",
    "read_image",
    "read_mask",
    "scan_dataset",
    "source_from_url",
    "validate_samples",
    "write_problems_csv",
]
