"""Export a run's segmenter and classifier for deployment (ONNX or TorchScript), proven equal to the run.

Each exported model is reloaded (onnxruntime, ``torch.jit.load``) and run against the PyTorch model
on random inputs and on radiograph-shaped ones (a smooth body on a dark background, plus any real
images given); the export is refused when the outputs differ beyond the tolerance. ``contract.json``
beside the files says what a deployment must feed in and read out: size, channels, value range,
normalisation, class order, output meaning, and the sha256 of both the checkpoint and the file.

Models are exported through a wrapper that calls them like PyTorch does (``model(x)``), so forward
hooks -- an input normalisation kept inside the classifier -- are part of the exported graph.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from lungaudit import __version__
from lungaudit.data.imageio import ImageReadError, read_image
from lungaudit.runs.restore import TrainedModels, load_run
from lungaudit.utils import atomic_write_bytes, atomic_write_json, sha256_file

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
CONTRACT = "contract.json"
CONTRACT_VERSION = 1
ONNX_OPSET = 17
ATOL, RTOL = 1e-4, 1e-4  # float32 on CPU: observed differences are around 1e-6
PREPROCESSING = (
    "Decode to one grayscale float32 channel in [0, 1]: 8-bit images / 255, 16-bit / 65535 (no per-image "
    "stretch), colour to luminance; DICOM: modality LUT, then the VOI LUT or first window, min-max to [0, 1], "
    "MONOCHROME1 inverted. Resize to the input side with area interpolation (cv2.INTER_AREA)."
)


class ExportError(ValueError):
    """An export that cannot be made or does not reproduce the run; the message says why."""


class _Called(nn.Module):
    """``forward(x) = model(x)``: the traced graph runs the model through its own ``__call__``, so its
    hooks are in it however an exporter treats the hooks of the top-level module it is handed."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@dataclass
class ExportResult:
    out_dir: Path
    files: dict[str, dict[str, Path]]  # model ("classifier"/"segmenter") -> format -> file
    contract: dict[str, Any]


def _check_format(formats: Sequence[str]) -> list[str]:
    chosen = list(dict.fromkeys(formats))
    bad = [f for f in chosen if f not in FORMATS]
    if not chosen or bad:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {', '.join(bad) or 'none'}")
    missing = [m for m in ("onnx", "onnxruntime") if "onnx" in chosen and importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export (parity checked with onnxruntime) needs {' and '.join(missing)}: pip install 'lungaudit[export]'")
    return chosen


def export_run(
    run_dir: str | Path, out_dir: str | Path | None = None, formats: Sequence[str] = ("onnx",), *,
    parity_images: Sequence[str | Path] = (), max_pixels: int | None = None,
) -> ExportResult:  # fmt: skip
    """Export the run's classifier (and segmenter, when it has one) into ``out_dir`` (default ``<run>/export``).

    Raises :class:`ExportError` (a ``ValueError``) for an unknown format, a missing runtime, an
    unreadable parity image or outputs that differ from the run's, and ``CheckpointError`` for a run
    without a classifier.
    """
    chosen = _check_format(formats)
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "export"
    models = load_run(run_dir, torch.device("cpu"))
    nets = {"classifier": (models.classifier, models.cls_cfg.image_size)}
    if models.segmenter is not None and models.seg_cfg is not None:
        nets["segmenter"] = (models.segmenter, models.seg_cfg.image_size)
    real = _read_parity_images(parity_images, max_pixels)
    files: dict[str, dict[str, Path]] = {name: {} for name in nets}
    parity: dict[str, dict[str, Any]] = {fmt: {} for fmt in chosen}
    for name, (net, size) in nets.items():
        inputs = parity_inputs(size, real)
        for fmt in chosen:
            data = _EXPORTERS[fmt](_Called(net).eval(), size, name)
            parity[fmt][name] = check_parity(net, _RUNNERS[fmt](data), inputs, name)
            path = out / f"{name}{SUFFIX[fmt]}"
            atomic_write_bytes(path, data)
            files[name][fmt] = path
    contract = build_contract(models, run_dir, files, parity)
    atomic_write_json(out / CONTRACT, contract)  # last: a contract only ever describes files that exist
    return ExportResult(out, files, contract)


def _io_names(name: str) -> tuple[str, str]:
    return ("image", "logits") if name == "classifier" else ("image", "lung_logits")


def export_onnx(model: nn.Module, size: int, name: str) -> bytes:
    """ONNX bytes (opset 17, dynamic batch) via torch's TorchScript-based exporter."""
    inp, outp = _io_names(name)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the torch.export one (which needs
        # onnxscript and takes minutes here); the parity check below is what vouches for the file.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(2, 1, size, size),), buf, input_names=[inp], output_names=[outp],
                          dynamic_axes={inp: {0: "batch"}, outp: {0: "batch"}}, opset_version=ONNX_OPSET, dynamo=False)  # fmt: skip
    return buf.getvalue()


def export_torchscript(model: nn.Module, size: int, name: str) -> bytes:
    """TorchScript bytes traced at batch 2 (shapes do not branch, so any batch size runs)."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated too; parity vouches for it
        traced = torch.jit.trace(model, torch.rand(2, 1, size, size), check_trace=False)
        torch.jit.save(traced, buf)
    return buf.getvalue()


def onnx_runner(data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: np.asarray(session.run(None, {name: x})[0])


def torchscript_runner(data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in torch >= 2.9
        module = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return run


_EXPORTERS: dict[str, Callable[[nn.Module, int, str], bytes]] = {"onnx": export_onnx, "torchscript": export_torchscript}
_RUNNERS: dict[str, Callable[[bytes], Callable[[np.ndarray], np.ndarray]]] = {"onnx": onnx_runner, "torchscript": torchscript_runner}


def radiograph_like(size: int, seed: int = 0) -> np.ndarray:
    """(size, size) float32 in [0, 1]: a bright smooth body with two dark lung fields on a dark border.

    Not a radiograph, but shaped like one (large smooth regions, strong edges, a dark background), which
    exercises activations that uniform noise does not.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = np.exp(-(((xx - 0.5) / 0.38) ** 2 + ((yy - 0.55) / 0.45) ** 2) ** 2) * 0.8
    for cx in (0.32, 0.68):
        body -= 0.45 * np.exp(-(((xx - cx) / 0.12) ** 2 + ((yy - 0.5) / 0.22) ** 2))
    noise = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), max(1.0, size / 64))
    return np.clip(body + 0.1 * noise, 0, 1).astype(np.float32)


def parity_inputs(size: int, real: Sequence[np.ndarray] = ()) -> dict[str, np.ndarray]:
    """Named (N, 1, size, size) float32 batches: uniform noise, radiograph-shaped films, real images."""
    rng = np.random.default_rng(0)
    out = {
        "random": rng.random((3, 1, size, size), dtype=np.float32),
        "radiograph_like": np.stack([radiograph_like(size, s) for s in range(2)])[:, None],
    }
    if real:
        out["real"] = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in real])[:, None].astype(np.float32)
    return out


def check_parity(model: nn.Module, run: Callable[[np.ndarray], np.ndarray], inputs: dict[str, np.ndarray], name: str) -> dict[str, Any]:
    """Compare the exported model with the PyTorch one on every batch; raises ExportError beyond tolerance."""
    report: dict[str, Any] = {"atol": ATOL, "rtol": RTOL, "inputs": {}}
    for label, x in inputs.items():
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).float().numpy()
        got = run(x)
        if got.shape != ref.shape:
            raise ExportError(f"{name}: exported output shape {got.shape} differs from the run's {ref.shape} on {label} inputs")
        diff = float(np.abs(got - ref).max())
        limit = ATOL + RTOL * float(np.abs(ref).max())
        same = float((got.argmax(1) == ref.argmax(1)).mean()) if name == "classifier" else float(((got > 0) == (ref > 0)).mean())
        report["inputs"][label] = {"n": int(x.shape[0]), "max_abs_diff": diff, "limit": limit,
                                   "argmax_agreement" if name == "classifier" else "mask_agreement": same}  # fmt: skip
        if not diff <= limit:
            raise ExportError(f"{name}: exported outputs differ from the run's by {diff:.3g} on {label} inputs (limit {limit:.3g})")
    return report


def _read_parity_images(paths: Sequence[str | Path], max_pixels: int | None) -> list[np.ndarray]:
    images = []
    for p in paths:
        try:
            images.append(read_image(p, max_pixels=max_pixels))
        except ImageReadError as e:
            raise ExportError(f"parity image {p}: {e.reason}") from None
    return images


def _input_norm(models: TrainedModels) -> str:
    """What the classifier does to its input before the first layer (read off the model, not the config)."""
    norm = getattr(models.classifier, "input_norm", None)  # classification.model.attach_input_norm's module
    if norm is None or getattr(norm, "name", "none") == "none":
        return "none: feed the [0, 1] values as they are"
    return (f"{norm.name} ((x - {float(norm.mean):.4f}) / {float(norm.std):.4f}), applied inside the exported "
            "model: feed the [0, 1] values as they are")


def _model_entry(kind: str, size: int, files: dict[str, Path], ckpt: Path, outputs: dict[str, Any], norm: str) -> dict[str, Any]:
    inp, outp = _io_names(kind)
    return {
        "files": {fmt: p.name for fmt, p in files.items()},
        "sha256": {fmt: sha256_file(p) for fmt, p in files.items()},
        "checkpoint": {"file": ckpt.name, "sha256": sha256_file(ckpt)},
        "input": {"name": inp, "shape": ["batch", 1, size, size], "dtype": "float32", "channels": 1,
                  "color": "grayscale", "range": [0.0, 1.0], "normalisation": norm},  # fmt: skip
        "output": {"name": outp, **outputs},
    }


def build_contract(models: TrainedModels, run_dir: Path, files: dict[str, dict[str, Path]], parity: dict[str, Any]) -> dict[str, Any]:
    """``contract.json``: how to call each exported file and what it answers, with provenance and parity."""
    c, names = models.cls_cfg, list(models.class_names)
    entries = {"classifier": _model_entry("classifier", c.image_size, files["classifier"], models.cls_path, {
        "shape": ["batch", len(names)], "dtype": "float32", "class_names": names,
        "meaning": "unnormalised class scores in class_names order; softmax over axis 1 gives probabilities",
    }, _input_norm(models))}  # fmt: skip
    entries["classifier"]["lung_masking"] = {
        "trained_on_masked_images": c.mask_prob > 0, "mask_prob": c.mask_prob, "mask_dilate_px": c.mask_dilate_px,
        "fill_value": c.fill_value,
        "how": "the lung-masked view sets every pixel outside the lung mask, dilated by mask_dilate_px at the input "
               "size, to fill_value; the audit compares the prediction on both views",
    }  # fmt: skip
    if "segmenter" in files and models.seg_cfg is not None and models.seg_path is not None:
        entries["segmenter"] = _model_entry("segmenter", models.seg_cfg.image_size, files["segmenter"], models.seg_path, {
            "shape": ["batch", 1, models.seg_cfg.image_size, models.seg_cfg.image_size], "dtype": "float32",
            "meaning": "lung logit per pixel: lung where > 0 (sigmoid > 0.5); resize the mask back to the image",
        }, "none: feed the [0, 1] values as they are")  # fmt: skip
    return {
        "contract_version": CONTRACT_VERSION, "lungaudit_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "run": str(run_dir),
        "formats": sorted(parity), "onnx_opset": ONNX_OPSET if "onnx" in parity else None,
        "preprocessing": PREPROCESSING, "models": entries, "parity": parity, "torch_version": torch.__version__,
    }  # fmt: skip


__all__ = [
    "CONTRACT", "FORMATS", "ExportError", "ExportResult", "build_contract", "check_parity", "export_onnx",
    "export_run", "export_torchscript", "onnx_runner", "parity_inputs", "radiograph_like", "torchscript_runner",
]
