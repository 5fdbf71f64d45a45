"""Decode any supported chest X-ray file to one float32 grayscale array, or say exactly why not.

Intensity convention (documented once, used everywhere):

* PNG/JPEG/BMP/TIFF are scaled by the *dtype range*: uint8 / 255, uint16 / 65535. A 16-bit file that
  only uses 12 bits therefore comes out darker than [0, 1] full range; we keep it that way because
  per-image stretching would erase real differences in exposure between sources, which is exactly the
  kind of confound the audit must be able to see. Float TIFFs already in [0, 1] are kept; any other
  float or signed-integer image is min-max scaled.
* Colour (BGR/BGRA) is converted to luminance; alpha is ignored.
* DICOM: modality LUT (rescale slope/intercept), then the VOI LUT or the first window, then min-max
  to [0, 1]; MONOCHROME1 is inverted so that bone is bright, like every other format.

Every failure raises :class:`ImageReadError` whose message is a short, specific human reason; the
loaders turn it into a :class:`~lungaudit.data.records.Problem` row.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from lungaudit.data.records import Problem, Sample

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
)
DICOM_EXTENSIONS: frozenset[str] = frozenset({".dcm", ".dicom"})

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
_TRAILER_WINDOW = 1024  # bytes searched for the end marker; some writers append padding after it
_MASK_NONBINARY_TOL = 0.005  # fraction of pixels allowed strictly between min and max (JPEG edges)
_MASK_ASPECT_TOL = 0.02


class ImageReadError(ValueError):
    """A file that cannot be used as an image or mask; ``str(err)`` is the human reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _read_bytes(path: Path) -> np.ndarray:
    """Raw bytes as uint8; ``np.fromfile`` copes with spaces and non-ASCII names where cv2.imread does not."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageReadError("file not found") from None
    except OSError as e:
        raise ImageReadError(f"cannot read file: {e.strerror or e}") from None
    if path.is_dir():
        raise ImageReadError("is a directory, not an image file")
    if size == 0:
        raise ImageReadError("empty file (0 bytes)")
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(f"cannot read file: {e.strerror or e}") from None


def _is_dicom(path: Path, data: np.ndarray) -> bool:
    return path.suffix.lower() in DICOM_EXTENSIONS or (data.size >= 132 and data[128:132].tobytes() == b"DICM")


def _check_complete(data: np.ndarray) -> None:
    """Reject truncated PNG/JPEG up front: cv2 may decode them partially (grey bottom rows) and only warn."""
    head = data[:8].tobytes()
    tail = data[-_TRAILER_WINDOW:].tobytes()
    if head == _PNG_SIGNATURE and b"IEND" not in tail:
        raise ImageReadError("truncated PNG (missing IEND chunk)")
    if head[:2] == _JPEG_SOI and b"\xff\xd9" not in tail:
        raise ImageReadError("truncated JPEG (missing FFD9 end-of-image marker)")


def _format_name(data: np.ndarray) -> str | None:
    head = data[:8].tobytes()
    if head == _PNG_SIGNATURE:
        return "PNG"
    if head[:2] == _JPEG_SOI:
        return "JPEG"
    if head[:2] == b"BM":
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


DEFAULT_MAX_PIXELS = 50_000_000  # data.max_megapixels: a 3000x3000 radiograph is 9 MP, a DICOM rarely over 30


def _be(b: bytes) -> int:
    return int.from_bytes(b, "big")


def _jpeg_dimensions(buf: bytes) -> tuple[int, int] | None:
    """(height, width) from the first start-of-frame marker; None when the header is unreadable."""
    i = 2
    while i + 9 < len(buf):
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return _be(buf[i + 5 : i + 7]), _be(buf[i + 7 : i + 9])
        i += 2 + _be(buf[i + 2 : i + 4])
    return None


def raster_dimensions(data: np.ndarray) -> tuple[int, int] | None:
    """(height, width) read from a PNG/JPEG/BMP/TIFF header without decoding; None if unknown."""
    head = data[:64 * 1024].tobytes()
    if head[:8] == _PNG_SIGNATURE and len(head) >= 24:
        return _be(head[20:24]), _be(head[16:20])
    if head[:2] == _JPEG_SOI:
        return _jpeg_dimensions(head)
    if head[:2] == b"BM" and len(head) >= 26:
        return abs(int.from_bytes(head[22:26], "little", signed=True)), int.from_bytes(head[18:22], "little", signed=True)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        import io
        import warnings

        from PIL import Image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(io.BytesIO(data.tobytes())) as im:  # reads the header only
                    return im.size[1], im.size[0]
        except Image.DecompressionBombError:
            return 1 << 30, 1 << 30  # Pillow's own guard fired: far beyond any sensible cap
        except Exception:
            return None  # unreadable header: the decoder will say why
    return None


def check_pixel_cap(hw: tuple[int, int] | None, max_pixels: int | None) -> None:
    """Refuse an image above the cap before a decoder allocates it."""
    cap = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if hw is not None and cap > 0 and hw[0] * hw[1] > cap:
        raise ImageReadError(
            f"image is {hw[1]}x{hw[0]} ({hw[0] * hw[1] / 1e6:.0f} megapixels), above the cap of "
            f"{cap / 1e6:g} megapixels (data.max_megapixels); not decoded"
        )


def _decode_raster(data: np.ndarray) -> np.ndarray:
    """cv2 decode with IMREAD_UNCHANGED (keeps 16 bit); returns the raw array, any dtype/channels."""
    _check_complete(data)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # pragma: no cover - cv2 normally returns None instead
        img = None
        log.debug("cv2.imdecode raised: %s", e)
    if img is None:
        fmt = _format_name(data)
        if fmt == "PNG":
            raise ImageReadError("truncated PNG (missing IEND / decode failed)")
        if fmt is not None:
            raise ImageReadError(f"corrupt {fmt} (decode failed)")
        raise ImageReadError("not an image (no PNG, JPEG, BMP, TIFF or DICOM signature; cannot decode)")
    return img


def _to_gray(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    elif img.ndim == 3 and img.shape[2] == 2:  # gray + alpha
        img = img[:, :, 0]
    elif img.ndim == 3 and img.shape[2] in (3, 4):
        if img.dtype not in (np.uint8, np.uint16, np.float32):
            img = img.astype(np.float32)
        code = cv2.COLOR_BGR2GRAY if img.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        img = cv2.cvtColor(img, code)
    if img.ndim != 2 or img.shape[0] < 2 or img.shape[1] < 2:
        raise ImageReadError(f"unsupported image shape {tuple(img.shape)} (expected HxW, HxWx3 or HxWx4)")
    return img


def _minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32, copy=False)
    lo, hi = float(a.min()), float(a.max())
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ImageReadError("image holds non-finite values (NaN/inf)")
    if hi <= lo:
        return np.zeros_like(a, dtype=np.float32)
    return (a - lo) / (hi - lo)


def _scale(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img.astype(np.float32) / np.float32(255.0)
    if img.dtype == np.uint16:
        return img.astype(np.float32) / np.float32(65535.0)
    if img.dtype == np.bool_:
        return img.astype(np.float32)
    if np.issubdtype(img.dtype, np.floating):
        f = img.astype(np.float32)
        if np.isfinite(f).all() and f.min() >= 0.0 and f.max() <= 1.0:
            return f
    return _minmax(img)


def _read_dicom(path: Path, data: np.ndarray, max_pixels: int | None = None) -> np.ndarray:
    try:
        import pydicom
    except ImportError:  # pragma: no cover - a declared dependency
        raise ImageReadError("DICOM file but pydicom is not installed") from None
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut  # pydicom >= 3
    except ImportError:  # pragma: no cover - pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

    from io import BytesIO

    try:
        ds = pydicom.dcmread(BytesIO(data.tobytes()), force=True)
        if "PixelData" not in ds:
            raise ImageReadError("corrupt DICOM: no pixel data")
        check_pixel_cap((int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)), max_pixels)
        arr = ds.pixel_array
    except ImageReadError:
        raise
    except Exception as e:  # pydicom raises many types for damaged files; all mean "unusable"
        raise ImageReadError(f"corrupt DICOM: {type(e).__name__}: {e}") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples_per_pixel = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[0]  # a radiograph is one frame; take the first of a multi-frame object
    if samples_per_pixel > 1:
        if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
            raise ImageReadError(f"unsupported image shape {tuple(arr.shape)} in DICOM")
        rgb = arr[..., :3].astype(np.float32)
        if photometric.startswith("YBR"):
            rgb = rgb[..., 0:1].repeat(3, axis=-1)  # Y is luminance already
        arr = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
        return _to_gray(_minmax(arr))
    try:
        arr = apply_modality_lut(arr, ds)
        arr = apply_voi_lut(arr, ds)
    except Exception as e:
        raise ImageReadError(f"corrupt DICOM: cannot apply LUT/window: {type(e).__name__}: {e}") from None
    out = _minmax(_to_gray(np.asarray(arr)))
    if photometric == "MONOCHROME1":
        out = 1.0 - out  # MONOCHROME1: low values are white
    return np.ascontiguousarray(out, dtype=np.float32)


def _decode_gray(path: Path, max_pixels: int | None = None) -> tuple[np.ndarray, bool]:
    """Decoded grayscale array and whether it is already final (DICOM) or still needs :func:`_scale`."""
    data = _read_bytes(path)
    if _is_dicom(path, data):
        return _read_dicom(path, data, max_pixels), True
    check_pixel_cap(raster_dimensions(data), max_pixels)
    return _to_gray(_decode_raster(data)), False


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Decode ``path`` to a float32 ``(H, W)`` array in [0, 1]; raises :class:`ImageReadError`.

    Images above ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`; 0 = no cap) are refused from
    their header, before any pixel is allocated.
    """
    img, final = _decode_gray(Path(path), max_pixels)
    if final:
        return img
    return np.ascontiguousarray(np.clip(_scale(img), 0.0, 1.0), dtype=np.float32)


def _shape_str(shape: Sequence[int]) -> str:
    return f"{shape[0]}x{shape[1]}"


def read_mask(path: str | Path, image_shape: Sequence[int], max_pixels: int | None = None) -> np.ndarray:
    """Read a lung mask as bool ``(H, W)`` matching ``image_shape[:2]``; raises :class:`ImageReadError`.

    A mask whose size differs but whose aspect ratio matches within 2% (the COVID-19 Radiography
    Database's 256x256 masks for 299x299 images) is resized with nearest neighbour. A mask is binary
    when at most 0.5% of its pixels lie strictly between its minimum and maximum (tolerates JPEG edge
    ringing); it is thresholded half way between the two.
    """
    m, _ = _decode_gray(Path(path), max_pixels)
    lo, hi = m.min(), m.max()
    if hi <= 0:
        raise ImageReadError("mask is empty (no lung pixels)")
    if hi > lo:
        between = np.count_nonzero((m > lo) & (m < hi))
        if between > _MASK_NONBINARY_TOL * m.size:
            n_distinct = len(np.unique(m))
            raise ImageReadError(f"mask is not binary: {n_distinct} distinct values")
        mask = m > (float(lo) + float(hi)) / 2.0
    else:
        mask = np.ones(m.shape, dtype=bool)  # constant non-zero: everything is lung (odd, but binary)
    ih, iw = int(image_shape[0]), int(image_shape[1])
    mh, mw = mask.shape
    if (mh, mw) != (ih, iw):
        if abs((mh / mw) / (ih / iw) - 1.0) > _MASK_ASPECT_TOL:
            raise ImageReadError(
                f"mask shape {_shape_str(mask.shape)} does not match image shape {_shape_str((ih, iw))}"
            )
        mask = cv2.resize(mask.astype(np.uint8), (iw, ih), interpolation=cv2.INTER_NEAREST).astype(bool)
    if not mask.any():
        raise ImageReadError("mask is empty (no lung pixels)")
    return mask


@dataclass
class ImageStats:
    """What validation saw: image sizes (H, W) -> count, and how many masks were checked/usable."""

    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)
    n_images: int = 0
    n_masks_ok: int = 0
    n_masks_bad: int = 0

    @property
    def min_hw(self) -> tuple[int, int] | None:
        if not self.sizes:
            return None
        return min(h for h, _ in self.sizes), min(w for _, w in self.sizes)

    @property
    def max_hw(self) -> tuple[int, int] | None:
        if not self.sizes:
            return None
        return max(h for h, _ in self.sizes), max(w for _, w in self.sizes)


def probe(sample: Sample, max_pixels: int | None = None) -> tuple[Sample | None, list[Problem], tuple[int, int] | None]:
    """Decode one sample's image (and mask) once, exactly as training and the audit will.

    Returns ``(sample_or_None, problems, image_hw)``: the sample is None when the image is unusable,
    and comes back with ``mask_path=None`` when only its mask is unusable. The full :func:`read_image`
    runs (not just the decoder), so a float TIFF of NaNs is caught here and not mid-training.
    """
    try:
        img = read_image(sample.path, max_pixels)
    except ImageReadError as e:
        return None, [Problem(sample.path, e.reason, "image")], None
    hw = (int(img.shape[0]), int(img.shape[1]))
    if sample.mask_path is None:
        return sample, [], hw
    try:
        read_mask(sample.mask_path, hw, max_pixels)
    except ImageReadError as e:
        return replace(sample, mask_path=None), [Problem(sample.mask_path, e.reason, "mask")], hw
    return sample, [], hw


def validate_samples(
    samples: Sequence[Sample],
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    max_pixels: int | None = None,
) -> tuple[list[Sample], list[Problem], ImageStats]:
    """Decode every image and mask once; drop unusable images, strip unusable masks.

    Order is preserved. ``progress(done, total)`` is called from the calling thread. Decoding runs on a
    few threads (cv2 releases the GIL), ``workers`` defaults to the CPU count capped at 8.
    """
    n = len(samples)
    stats = ImageStats()
    good: list[Sample] = []
    problems: list[Problem] = []
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, (s, probs, hw) in enumerate(pool.map(lambda s: probe(s, max_pixels), samples)):
            problems.extend(probs)
            if s is not None:
                good.append(s)
                stats.n_images += 1
                if hw is not None:
                    stats.sizes[hw] += 1
                if s.mask_path is not None:
                    stats.n_masks_ok += 1
            if any(p.kind == "mask" for p in probs):
                stats.n_masks_bad += 1
            if progress is not None:
                progress(i + 1, n)
    return good, problems, stats


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DICOM_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "check_pixel_cap",
    "raster_dimensions",
    "ImageReadError",
    "ImageStats",
    "probe",
    "read_image",
    "read_mask",
    "validate_samples",
]
