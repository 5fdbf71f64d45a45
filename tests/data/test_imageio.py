from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lungaudit.data.imageio import ImageReadError, read_image, read_mask, validate_samples
from lungaudit.data.records import Sample



# ----------------------------------------------------------------------------- raster formats


def test_8bit_png_exact(tmp_path: Path, h) -> None:
    arr = h.gradient()
    out = read_image(h.write_image(tmp_path / "a.png", arr))
    assert out.dtype == np.float32 and out.shape == arr.shape
    np.testing.assert_allclose(out, arr / 255.0, atol=1e-6)


def test_16bit_png_scaled_by_dtype_range(tmp_path: Path, h) -> None:
    arr = h.gradient(dtype=np.uint16)
    arr[0, 0], arr[0, 1] = 0, 1000
    out = read_image(h.write_image(tmp_path / "a16.png", arr))
    np.testing.assert_allclose(out, arr / 65535.0, atol=1e-6)
    assert out.max() == pytest.approx(1.0)


def test_12bit_in_16bit_png_keeps_dtype_scale(tmp_path: Path, h) -> None:
    arr = (h.gradient(dtype=np.uint16) >> 4).astype(np.uint16)  # max 4095
    out = read_image(h.write_image(tmp_path / "a12.png", arr))
    assert out.max() == pytest.approx(4095 / 65535, abs=1e-6)


def test_rgb_and_rgba_png_become_luminance(tmp_path: Path, h) -> None:
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[0, 0] = (0, 0, 255)  # pure red
    bgr[1, 1] = (100, 100, 100)
    out = read_image(h.write_image(tmp_path / "rgb.png", bgr))
    assert out.shape == (4, 4)
    assert out[0, 0] == pytest.approx(0.299, abs=0.01)
    assert out[1, 1] == pytest.approx(100 / 255, abs=0.005)
    bgra = np.dstack([bgr, np.full((4, 4), 7, np.uint8)])  # alpha must be ignored
    out4 = read_image(h.write_image(tmp_path / "rgba.png", bgra))
    np.testing.assert_allclose(out4, out, atol=1e-6)


def test_16bit_rgb_png(tmp_path: Path, h) -> None:
    arr = np.full((4, 4, 3), 65535, np.uint16)
    out = read_image(h.write_image(tmp_path / "rgb16.png", arr))
    np.testing.assert_allclose(out, 1.0, atol=1e-4)


@pytest.mark.parametrize("ext", [".bmp", ".tif", ".tiff"])
def test_lossless_formats_exact(tmp_path: Path, ext: str, h) -> None:
    arr = h.gradient()
    out = read_image(h.write_image(tmp_path / f"a{ext}", arr))
    np.testing.assert_allclose(out, arr / 255.0, atol=1e-6)


def test_16bit_tiff(tmp_path: Path, h) -> None:
    arr = h.gradient(dtype=np.uint16)
    out = read_image(h.write_image(tmp_path / "a.tif", arr))
    np.testing.assert_allclose(out, arr / 65535.0, atol=1e-6)


def test_jpeg_close(tmp_path: Path, h) -> None:
    arr = np.full((32, 32), 128, np.uint8)
    out = read_image(h.write_image(tmp_path / "a.jpg", arr))
    assert out.shape == (32, 32)
    assert abs(float(out.mean()) - 128 / 255) < 0.01


def test_unicode_and_space_path(tmp_path: Path, h) -> None:
    arr = h.gradient()
    p = h.write_image(tmp_path / "Viral Pneumonia" / "röntgen bild 1.png", arr)
    np.testing.assert_allclose(read_image(p), arr / 255.0, atol=1e-6)


# ----------------------------------------------------------------------------- DICOM


def test_dicom_monochrome1_inverted_orientation_kept(tmp_path: Path, h) -> None:
    raw = (h.gradient(dtype=np.uint16) >> 4).astype(np.uint16)  # 0..4095, top-left dark in raw values
    out = read_image(h.write_dicom(tmp_path / "m1.dcm", raw, "MONOCHROME1"))
    assert out.shape == raw.shape and out.dtype == np.float32
    # MONOCHROME1: low raw values are white, so the top-left is bright after reading.
    assert out[0, 0] == pytest.approx(1.0) and out[-1, -1] == pytest.approx(0.0)
    assert out[0, -1] > out[-1, -1]  # still a monotone gradient, not flipped spatially
    np.testing.assert_allclose(out, 1.0 - raw / raw.max(), atol=1e-3)


def test_dicom_monochrome2_window_and_rescale(tmp_path: Path, h) -> None:
    raw = np.tile(np.linspace(0, 4095, 64).round().astype(np.uint16), (8, 1))
    # rescale to "HU" (-1000..3095), window centred on raw 2048 with width 1024 -> raw 1536..2560
    out = read_image(h.write_dicom(tmp_path / "m2.dcm", raw, "MONOCHROME2", window=(1048, 1024), rescale=(1, -1000)))
    row = out[0]
    assert out[0, 0] == pytest.approx(0.0) and out[0, -1] == pytest.approx(1.0)
    low, high = raw[0] < 1500, raw[0] > 2600
    assert np.all(row[low] == 0.0) and np.all(row[high] == 1.0)
    mid = (raw[0] > 1600) & (raw[0] < 2500)
    expected = (raw[0][mid].astype(float) - 1536) / 1023
    np.testing.assert_allclose(row[mid], expected, atol=0.01)


def test_dicom_without_extension_detected_by_preamble(tmp_path: Path, h) -> None:
    raw = (h.gradient(dtype=np.uint16) >> 4).astype(np.uint16)
    p = h.write_dicom(tmp_path / "x.dcm", raw)
    q = p.rename(tmp_path / "noext")
    out = read_image(q)
    assert out[0, 0] == pytest.approx(0.0) and out[-1, -1] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- failures


def _reason(path: Path) -> str:
    with pytest.raises(ImageReadError) as e:
        read_image(path)
    return str(e.value)


def test_failure_reasons(tmp_path: Path, h) -> None:
    (tmp_path / "zero.png").write_bytes(b"")
    assert _reason(tmp_path / "zero.png") == "empty file (0 bytes)"
    good = h.write_image(tmp_path / "good.png", h.gradient()).read_bytes()
    (tmp_path / "trunc.png").write_bytes(good[: len(good) // 2])
    assert "truncated PNG" in _reason(tmp_path / "trunc.png")
    jpg = h.write_image(tmp_path / "good.jpg", h.gradient()).read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    assert "truncated JPEG" in _reason(tmp_path / "trunc.jpg")
    (tmp_path / "text.png").write_text("hello world")
    r = _reason(tmp_path / "text.png")
    assert r.startswith("not an image") and "hello" not in r  # never echo file content (it may be a secret)
    (tmp_path / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 10)
    assert _reason(tmp_path / "bad.dcm").startswith("corrupt DICOM:")
    assert _reason(tmp_path / "missing.png") == "file not found"


def test_png_with_intact_end_but_corrupt_data(tmp_path: Path, h) -> None:
    good = bytearray(h.write_image(tmp_path / "g.png", h.gradient()).read_bytes())
    good[40:60] = b"\xff" * 20  # inside IDAT: CRC/zlib failure but IEND still present
    (tmp_path / "c.png").write_bytes(bytes(good))
    assert "PNG" in _reason(tmp_path / "c.png")


# ----------------------------------------------------------------------------- masks


def test_mask_256_resized_to_299(tmp_path: Path, h) -> None:
    m = np.zeros((256, 256), np.uint8)
    m[64:192, 32:224] = 255
    out = read_mask(h.write_image(tmp_path / "m.png", m), (299, 299))
    assert out.dtype == bool and out.shape == (299, 299)
    assert out.mean() == pytest.approx((m > 0).mean(), abs=0.01)
    assert set(np.unique(out)) == {False, True}


def test_mask_01_values_and_same_size(tmp_path: Path, h) -> None:
    m = (h.lung_mask() > 0).astype(np.uint8)  # 0/1 rather than 0/255
    out = read_mask(h.write_image(tmp_path / "m.png", m), m.shape)
    np.testing.assert_array_equal(out, m > 0)


def test_mask_with_few_jpeg_like_edge_values_accepted(tmp_path: Path, h) -> None:
    m = np.zeros((100, 100), np.uint8)
    m[20:80, 20:80] = 255
    m[0, :30] = 100  # 30 / 10000 = 0.3% in between
    out = read_mask(h.write_image(tmp_path / "m.png", m), (100, 100))
    assert out[50, 50] and not out[0, 0]


@pytest.mark.parametrize(
    ("kind", "shape", "reason"),
    [
        ("narrow", (32, 32), "mask shape 32x16 does not match image shape 32x32"),
        ("gradient", (32, 32), "mask is not binary: "),
        ("zeros", (32, 32), "mask is empty (no lung pixels)"),
    ],
)
def test_mask_failures(tmp_path: Path, kind: str, shape: tuple[int, int], reason: str, h) -> None:
    mask = {"narrow": h.lung_mask(32, 16), "gradient": h.gradient(), "zeros": np.zeros((32, 32), np.uint8)}[kind]
    p = h.write_image(tmp_path / "m.png", mask)
    with pytest.raises(ImageReadError) as e:
        read_mask(p, shape)
    assert str(e.value).startswith(reason)


def test_validate_samples_keeps_order_and_stats(tmp_path: Path, h) -> None:
    good = h.write_image(tmp_path / "g.png", h.gradient(20, 30))
    mask = h.write_image(tmp_path / "gm.png", h.lung_mask(20, 30))
    badmask = h.write_image(tmp_path / "bm.png", h.gradient(20, 30))
    (tmp_path / "bad.png").write_bytes(b"")
    samples = [
        Sample(good, "COVID", mask),
        Sample(tmp_path / "bad.png", "COVID"),
        Sample(good, "Normal", badmask),
    ]
    calls: list[tuple[int, int]] = []
    kept, problems, stats = validate_samples(samples, progress=lambda d, t: calls.append((d, t)))
    assert [s.label for s in kept] == ["COVID", "Normal"]
    assert kept[0].mask_path == mask and kept[1].mask_path is None
    assert {(p.path.name, p.kind) for p in problems} == {("bad.png", "image"), ("bm.png", "mask")}
    assert stats.min_hw == (20, 30) and stats.max_hw == (20, 30) and stats.n_images == 2
    assert calls[-1] == (3, 3)


def test_validate_speed(tmp_path: Path, h) -> None:
    img = h.write_image(tmp_path / "g.png", (np.random.default_rng(0).random((256, 256)) * 255).astype(np.uint8))
    mask = h.write_image(tmp_path / "m.png", h.lung_mask(256, 256))
    import time

    t = time.perf_counter()
    validate_samples([Sample(img, "COVID", mask)] * 400)
    assert time.perf_counter() - t < 4.0  # ~2,000 images in a few seconds


def test_cv2_unused_warning_free(tmp_path: Path, capfd: pytest.CaptureFixture[str], h) -> None:
    good = h.write_image(tmp_path / "g.png", h.gradient()).read_bytes()
    (tmp_path / "t.png").write_bytes(good[:-20])
    with pytest.raises(ImageReadError):
        read_image(tmp_path / "t.png")
    assert "libpng" not in capfd.readouterr().err  # rejected before cv2 sees it
    assert cv2 is not None
