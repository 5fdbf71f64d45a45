"""The local web app: one static page and a small JSON API over a :class:`~lungaudit.services.predict.Predictor`.

Endpoints: ``GET /`` (the page), ``GET /static/*`` (its script and style), ``POST /predict`` (a
multipart upload with one file field ``file``; ``?overlays=false`` skips the pictures), ``GET /health``
and ``GET /model`` (classes, config, checkpoint hashes, limits).

Safe by default:
* uploads are capped (``Content-Length`` checked first, then the bytes actually received, so a
  chunked or lying client is cut off as well) and checked by decoding, never by their name;
* the decoder's pixel cap is the run's ``data.max_megapixels``, its refusals are the CLI's messages;
* bad input is a 4xx with ``{"error": "..."}``; anything unexpected a 500 with a generic message
  (the traceback goes to the server log only);
* an upload touches the disk only as ``upload-<random>`` in the app's own temporary folder, deleted
  right after decoding; the client's file name is only ever shown back as a label;
* the Host header must name a loopback address unless the server was told to listen elsewhere
  (DNS-rebinding guard), and pages carry a strict Content-Security-Policy (no inline script, no CDN).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from lungaudit import __version__
from lungaudit.data.imageio import ImageReadError
from lungaudit.data.records import Sample
from lungaudit.services.pictures import heat_picture, method_label, outline_picture, picture_data_url
from lungaudit.services.predict import Maps, Prediction, Predictor
from lungaudit.services.serve.batcher import MicroBatcher

log = logging.getLogger(__name__)

LOOPBACK_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1", "[::1]")
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file's bytes
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class ServeSettings:
    max_upload_mb: float = 32.0  # a 3000x3000 16-bit DICOM is about 18 MB
    max_batch: int = 16
    max_wait_ms: float = 100.0
    decode_threads: int = 2
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS  # ("*",) when listening beyond this machine

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)


class ApiError(Exception):
    """A request the app refuses: HTTP ``status`` and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class UploadTooLarge(Exception):
    pass


@dataclass
class Job:
    item: dict[str, Any]
    name: str


@dataclass
class ServeState:
    predictor: Predictor
    settings: ServeSettings
    batcher: MicroBatcher[Job, tuple[Prediction, Maps, int]]
    model_info: dict[str, Any]
    decoder: ThreadPoolExecutor | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    served: dict[str, int] = field(default_factory=lambda: {"ok": 0, "refused": 0})


def static_dir() -> Path:
    return Path(str(resources.files("lungaudit.services.serve").joinpath("static")))


def display_name(filename: str | None) -> str:
    """The upload's name as a label only: its last path part, printable characters, at most 120."""
    base = re.split(r"[\\/]", filename or "")[-1]
    return "".join(c for c in base if c.isprintable())[:120].strip() or "upload"


def audit_jobs(predictor: Predictor, jobs: list[Job]) -> list[tuple[Prediction, Maps, int]]:
    """The batcher's handler (device thread): one audit step over every gathered upload."""
    samples = [Sample(Path("upload")) for _ in jobs]
    done = predictor.run([j.item for j in jobs], samples, [j.name for j in jobs], maps=True)
    return [(p, m, len(jobs)) for p, m in done if m is not None]


def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> FastAPI:
    """The ASGI app for ``predictor``; the micro-batcher and temporary folder live in its lifespan."""
    settings = settings or ServeSettings()
    info = {**predictor.model_info(), "lungaudit_version": __version__,
            "limits": {"max_upload_mb": settings.max_upload_mb, "max_megapixels": predictor.cfg.data.max_megapixels},
            "batching": {"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms}}  # fmt: skip
    batcher: MicroBatcher[Job, tuple[Prediction, Maps, int]] = MicroBatcher(
        lambda jobs: audit_jobs(predictor, jobs), settings.max_batch, settings.max_wait_ms
    )
    state = ServeState(predictor, settings, batcher, info)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.tmp = tempfile.TemporaryDirectory(prefix="lungaudit-serve-")
        state.decoder = ThreadPoolExecutor(max_workers=settings.decode_threads, thread_name_prefix="lungaudit-decode")
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            state.decoder.shutdown(wait=True)
            state.tmp.cleanup()

    app = FastAPI(title="lungaudit", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.lungaudit = state
    _add_error_handlers(app)
    _add_pages(app)
    _add_api(app, state)
    app.add_middleware(HostGuard, allowed=settings.allowed_hosts)
    app.add_middleware(SecurityHeaders)
    return app


class SecurityHeaders:
    """Pure ASGI middleware: no sniffing, no referrer, and the page's Content-Security-Policy."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                            (b"content-security-policy", CSP.encode()), (b"cache-control", b"no-store")]  # fmt: skip
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HostGuard:
    """Pure ASGI middleware: refuse (400, JSON) a Host header outside ``allowed`` (``"*"`` allows any).

    A page on another site can make a browser send requests to 127.0.0.1 under its own name (DNS
    rebinding); checking the Host header keeps the app answering only to the names it listens on.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], allowed: tuple[str, ...]) -> None:
        self.app, self.allowed = app, tuple(allowed)

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] in ("http", "websocket") and "*" not in self.allowed:
            raw = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
            host = raw.rsplit("]", 1)[0] + "]" if raw.startswith("[") else raw.split(":")[0]
            if host not in self.allowed:
                message = f"host {raw!r} is not served here; this server answers to {', '.join(self.allowed)} (see --host)"
                await _error(400, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(_r: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, ApiError)
        app.state.lungaudit.served["refused"] += 1
        return _error(e.status, e.message)

    async def http_error(_r: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, StarletteHTTPException)
        return _error(e.status_code, str(e.detail))

    async def invalid(_r: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, RequestValidationError)
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, f"invalid request: {where}: {first.get('msg', 'invalid value')}")

    async def unexpected(_r: Request, e: Exception) -> JSONResponse:
        log.error("unexpected error while serving a request", exc_info=e)
        return _error(500, "internal error; the server log has the details")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)


def _add_pages(app: FastAPI) -> None:
    static = static_dir()

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(static / "index.html", media_type="text/html; charset=utf-8")

    app.mount("/static", StaticFiles(directory=static), name="static")


def _add_api(app: FastAPI, state: ServeState) -> None:
    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and the batcher's numbers (how many uploads shared each device pass)."""
        return {"status": "ok", "lungaudit_version": __version__, "device": str(state.predictor.device),
                "queued": state.batcher.queued, "batching": state.batcher.stats.to_dict(), "requests": dict(state.served)}  # fmt: skip

    @app.get("/model")
    async def model() -> dict[str, Any]:
        """The run: class order, resolved config sections, checkpoint sha256, methods and limits."""
        return state.model_info

    @app.post("/predict")
    async def predict(request: Request, overlays: bool = True) -> dict[str, Any]:
        """Audit one uploaded radiograph (multipart field ``file``): prediction, energies, verdict, pictures."""
        return await predict_upload(state, request, overlays)


async def predict_upload(state: ServeState, request: Request, overlays: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    with state.batcher.incoming():  # the batcher may wait for this one while its body arrives and decodes
        data, name = await read_upload(request, state.settings.max_upload_bytes)
        t1 = time.perf_counter()
        item = await decode_upload(state, data, name)
    t2 = time.perf_counter()
    pred, maps, batch = await state.batcher.submit(Job(item, name))
    t3 = time.perf_counter()
    pictures = await asyncio.get_running_loop().run_in_executor(state.decoder, render_pictures, state, pred, maps) if overlays else []
    t4 = time.perf_counter()
    state.served["ok"] += 1
    body = pred.to_dict()
    for key in ("path", "overlay", "split", "trained_on"):  # an upload has no path and no place in the run's split
        body.pop(key, None)
    ms = {k: round(v * 1000, 2) for k, v in (("read", t1 - t0), ("decode", t2 - t1), ("audit", t3 - t2), ("pictures", t4 - t3), ("total", t4 - t0))}
    return {"prediction": body, "pictures": pictures, "batch_size": batch, "timing_ms": ms,
            "model": {"run": state.model_info["run"], "cls_sha256": state.model_info["checkpoints"]["cls"]["sha256"]}}  # fmt: skip


def _limited(receive: Callable[[], Awaitable[dict[str, Any]]], limit: int) -> Callable[[], Awaitable[dict[str, Any]]]:
    """``receive`` that raises :class:`UploadTooLarge` once more than ``limit`` body bytes have arrived."""
    seen = 0

    async def wrapped() -> dict[str, Any]:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise UploadTooLarge
        return message

    return wrapped


async def read_upload(request: Request, limit: int) -> tuple[bytes, str]:
    """The bytes and display name of the one file in a multipart body; ApiError (400/413/415) otherwise."""
    too_large = ApiError(413, f"upload is larger than the limit of {limit / 1e6:g} MB (lungaudit serve --max-upload-mb)")
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ApiError(415, "send the radiograph as multipart/form-data with one file field named 'file'")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + MULTIPART_SLACK:
        raise too_large
    body = Request(request.scope, _limited(request.receive, limit + MULTIPART_SLACK))
    try:
        form = await body.form(max_files=1, max_fields=8)
    except UploadTooLarge:
        raise too_large from None
    except StarletteHTTPException as e:  # starlette's multipart errors: bad boundary, too many files
        raise ApiError(400, f"malformed multipart upload: {e.detail}") from None
    except ClientDisconnect:
        raise ApiError(400, "the client disconnected during the upload") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "the upload has no file field named 'file'")
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise too_large
        return data, display_name(upload.filename)
    finally:
        await form.close()


async def decode_upload(state: ServeState, data: bytes, name: str) -> dict[str, Any]:
    """Decode in a worker thread via a private temporary file; 415/422 with the decoder's reason."""
    assert state.tmp is not None and state.decoder is not None
    path = Path(state.tmp.name) / f"upload-{uuid.uuid4().hex}"  # no extension: the content decides
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(state.decoder, _write_private, path, data)
        return await loop.run_in_executor(state.decoder, state.predictor.decode, path)
    except ImageReadError as e:
        status = 415 if e.reason.startswith("not an image") else 422
        raise ApiError(status, f"upload {name!r}: {e.reason}") from None
    except ValueError as e:
        raise ApiError(422, f"upload {name!r}: {e}") from None
    finally:
        path.unlink(missing_ok=True)


def _write_private(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:  # exclusive: never follows or overwrites anything already there
        f.write(data)


def render_pictures(state: ServeState, pred: Prediction, maps: Maps) -> list[dict[str, str]]:
    """Outline, then the audited heatmap, then each other display method, as labelled PNG data URLs."""
    box = pred.row.marker_box
    audited = state.predictor.settings.cam
    shown = [("outline", method_label("outline"), outline_picture(maps.image, maps.lungs, box)),
             (audited, method_label(audited, audited=True), heat_picture(maps.image, maps.lungs, maps.heat, box))]  # fmt: skip
    shown += [(m, method_label(m), heat_picture(maps.image, maps.lungs, v, box, robust=True)) for m, v in maps.methods.items() if m != audited]
    return [{"name": n, "label": label, "src": picture_data_url(pic)} for n, label, pic in shown]


__all__ = ["ApiError", "LOOPBACK_HOSTS", "ServeSettings", "create_app", "display_name", "static_dir"]
