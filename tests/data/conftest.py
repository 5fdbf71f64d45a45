"""Tiny on-disk data sets built with numpy/cv2 (independent of the synthetic generator)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lungaudit.config import CLASS_NAMES

SIZE = 32


def write_image(path: Path, arr: np.ndarray, ext: str | None = None) -> Path:
    """Encode ``arr`` with cv2 by extension and write it with numpy (works for any file name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(ext or path.suffix, arr)
    assert ok, path
    buf.tofile(str(path))
    return path


def gradient(h: int = SIZE, w: int = SIZE, dtype=np.uint8) -> np.ndarray:
    """Top-left dark, bottom-right bright."""
    top = np.iinfo(dtype).max
    g = (np.add.outer(np.arange(h), np.arange(w)) / (h + w - 2) * top).round()
    return g.astype(dtype)


def lung_mask(h: int = SIZE, w: int = SIZE) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[h // 4 : 3 * h // 4, w // 8 : 3 * w // 8] = 255
    m[h // 4 : 3 * h // 4, 5 * w // 8 : 7 * w // 8] = 255
    return m


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
) -> Path:
    """A minimal valid DICOM file (uint16, 12 bits stored) written by pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.PixelData = pixels.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def covid_tree(tmp_path: Path) -> Path:
    """``ROOT/<CLASS>/{images,masks}/<CLASS>-<i>.png``: 3 good 32x32 images per class with masks."""
    root = tmp_path / "db"
    rng = np.random.default_rng(0)
    for c in CLASS_NAMES:
        for i in range(1, 4):
            img = (gradient() // 2 + rng.integers(0, 60, (SIZE, SIZE))).astype(np.uint8)
            write_image(root / c / "images" / f"{c}-{i}.png", img)
            write_image(root / c / "masks" / f"{c}-{i}.png", lung_mask())
    (root / "twins" / "COVID").mkdir(parents=True)  # folders without images/ are ignored
    return root


@pytest.fixture
def malformed_tree(covid_tree: Path) -> tuple[Path, dict[str, tuple[str, str]]]:
    """The good tree plus one of every kind of bad file; returns (root, {file name: (kind, reason)})."""
    root = covid_tree
    good_png = (root / "COVID" / "images" / "COVID-1.png").read_bytes()
    imgs = root / "Normal" / "images"
    masks = root / "Normal" / "masks"
    (imgs / "zero.png").write_bytes(b"")
    write_image(masks / "zero.png", lung_mask())
    (imgs / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    write_image(masks / "truncated.png", lung_mask())
    (imgs / "text.png").write_text("this is not an image, just some notes\n")
    write_image(masks / "text.png", lung_mask())
    write_image(imgs / "nomask.png", gradient())
    write_image(imgs / "wrongshape.png", gradient())
    write_image(masks / "wrongshape.png", lung_mask(SIZE, SIZE // 2))
    write_image(imgs / "nonbinary.png", gradient())
    write_image(masks / "nonbinary.png", gradient())
    write_image(root / "Tuberculosis" / "images" / "x.png", gradient())
    (imgs / "corrupt.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x13\x37garbage" * 20)
    expected = {
        "zero.png": ("image", "empty file (0 bytes)"),
        "truncated.png": ("image", "truncated PNG"),
        "text.png": ("image", "not an image"),
        "nomask.png": ("mask", "missing mask (expected masks/nomask.png)"),
        "wrongshape.png": ("mask", "does not match image shape"),
        "nonbinary.png": ("mask", "mask is not binary"),
        "Tuberculosis": ("class", "unknown class folder 'Tuberculosis'"),
        "corrupt.dcm": ("image", "corrupt DICOM"),
    }
    return root, expected


class Helpers:
    """Test modules here are not a package, so helpers travel as a fixture instead of an import."""

    write_image = staticmethod(write_image)
    gradient = staticmethod(gradient)
    lung_mask = staticmethod(lung_mask)
    write_dicom = staticmethod(write_dicom)
    SIZE = SIZE


@pytest.fixture
def h() -> type[Helpers]:
    return Helpers
