"""Fixtures for the services: a Predictor on the session's tiny run, and upload payloads good and bad."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest


@pytest.fixture(scope="session")
def predictor(tiny_run):
    """The tiny run loaded once, on the CPU, with its own config (what ``lungaudit serve`` builds)."""
    from lungaudit.config import load_config
    from lungaudit.services.predict import Predictor

    return Predictor.load(tiny_run.run_dir, load_config(tiny_run.run_dir / "config.yaml"), device="cpu")


@pytest.fixture(scope="session")
def test_images(tiny_synth) -> list[Path]:
    """Four test-split phantoms, one per class (the run never trained on them)."""
    import csv

    with open(tiny_synth / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    picked: dict[str, Path] = {}
    for r in rows:
        picked.setdefault(r["label"], tiny_synth / r["path"])
    return [picked[k] for k in sorted(picked)]


def png_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def huge_declared_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 60-byte PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def dicom_bytes(pixels: np.ndarray, photometric: str = "MONOCHROME2") -> bytes:
    """A minimal valid DICOM (uint16, 12 bits stored) with the 128-byte preamble and ``DICM`` magic."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def as_dicom(png_path: Path) -> bytes:
    """The phantom at ``png_path`` as a 12-bit MONOCHROME2 DICOM (same picture, other container)."""
    img = cv2.imread(str(png_path), cv2.IMREAD_GRAYSCALE)
    return dicom_bytes((img.astype(np.uint16) * 16))
