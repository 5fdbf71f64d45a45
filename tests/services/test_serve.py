"""``lungaudit serve`` over real HTTP: uvicorn in a thread on a free port, httpx as the client."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

import lungaudit as la
from lungaudit.audit.overlay import OVERLAY_SIDE
from lungaudit.services.serve import BackgroundServer, ServeSettings, create_app
from lungaudit.utils import sha256_file

from .conftest import as_dicom, huge_declared_png

LIMIT_MB = 0.5


@pytest.fixture(scope="module")
def server(predictor):
    # A long max wait makes concurrent requests reliably share batches in the test.
    app = create_app(predictor, ServeSettings(max_upload_mb=LIMIT_MB, max_batch=8, max_wait_ms=200))
    with BackgroundServer(app) as srv:
        srv.app = app
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def uploads(test_images, tmp_path_factory) -> dict[str, Path]:
    """The test phantoms as PNG, plus one as JPEG, TIFF and DICOM, written where la.predict can read them."""
    folder = tmp_path_factory.mktemp("uploads")
    out = {f"png{i}": p for i, p in enumerate(test_images)}
    img = cv2.imread(str(test_images[0]), cv2.IMREAD_GRAYSCALE)
    for ext in ("jpg", "tiff"):
        path = folder / f"phantom.{ext}"
        assert cv2.imwrite(str(path), img)
        out[ext] = path
    (folder / "phantom.dcm").write_bytes(as_dicom(test_images[0]))
    out["dicom"] = folder / "phantom.dcm"
    return out


@pytest.fixture(scope="module")
def expected(tiny_run, uploads) -> dict[str, dict]:
    """What the Python API says about each upload's file."""
    result = la.predict(list(uploads.values()), run=tiny_run.run_dir, device="cpu")
    assert not result.problems
    return {k: p.to_dict() for k, p in zip(uploads, result.predictions)}


def _post(client: httpx.Client, name: str, data: bytes, **kw) -> httpx.Response:
    return client.post("/predict", files={"file": (name, data, "application/octet-stream")}, **kw)


def _same(got: dict, want: dict) -> None:
    for k in ("pred", "pred_masked", "pred_without_markers", "flagged", "reasons", "region", "verdict", "mask_source"):
        assert got[k] == want[k], k
    for k in ("prob_pred", "prob_masked", "e_in", "e_in_tol", "e_out", "lung_area"):
        assert got[k] == pytest.approx(want[k], abs=1e-4), k
    assert got["probs"] == pytest.approx(want["probs"], abs=1e-4)


def test_health_and_model(client, tiny_run, predictor):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["device"] == "cpu"
    model = client.get("/model").json()
    assert model["class_names"] == predictor.class_names and model["image_size"] == 64
    assert model["checkpoints"]["cls"]["sha256"] == sha256_file(tiny_run.run_dir / "weights" / "cls_best.pt")
    assert model["checkpoints"]["seg"]["sha256"] == sha256_file(tiny_run.run_dir / "weights" / "seg_best.pt")
    assert {"cls", "seg", "audit"} <= set(model["config"]) and model["limits"]["max_upload_mb"] == LIMIT_MB
    assert "gradcam" in model["methods"]["display"]


def test_concurrent_uploads_equal_the_python_api(client, server, uploads, expected):
    """Every format, 3 rounds, 8 clients at once: each answer equals la.predict on the same file."""
    jobs = [k for _ in range(3) for k in uploads]

    def one(key: str) -> tuple[str, dict]:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            r = _post(c, uploads[key].name, uploads[key].read_bytes())
            assert r.status_code == 200, r.text
            return key, r.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, jobs))
    for key, body in answers:
        _same(body["prediction"], expected[key])
        assert body["prediction"]["file"] == uploads[key].name
        names = [p["name"] for p in body["pictures"]]
        assert names[:2] == ["outline", "gradcam"] and all(p["src"].startswith("data:image/jpeg;base64,") for p in body["pictures"])
    picture = cv2.imdecode(np.frombuffer(base64.b64decode(answers[0][1]["pictures"][1]["src"].split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None and picture.shape == (OVERLAY_SIDE, OVERLAY_SIDE, 3)  # a real picture, not just a prefix
    assert max(body["batch_size"] for _, body in answers) > 1  # the batcher gathered concurrent uploads
    stats = client.get("/health").json()["batching"]
    assert stats["items"] >= len(jobs) and stats["largest"] > 1


def test_overlays_can_be_skipped(client, uploads):
    r = _post(client, "a.png", uploads["png0"].read_bytes(), params={"overlays": "false"})
    assert r.status_code == 200 and r.json()["pictures"] == []


@pytest.mark.parametrize(
    "name,payload,status,message",
    [
        ("garbage.png", b"definitely not an image" * 10, 415, "not an image"),
        ("empty.png", b"", 422, "empty file"),
        ("cut.png", None, 422, "truncated PNG"),
        ("bomb.png", huge_declared_png(), 422, "above the cap"),
        ("fake.dcm", b"\0" * 128 + b"DICM" + b"\x13\x37junk" * 30, 422, "corrupt DICOM"),
    ],
)
def test_bad_uploads_are_4xx_with_the_decoders_reason(client, uploads, name, payload, status, message):
    if payload is None:
        whole = uploads["png0"].read_bytes()
        payload = whole[: len(whole) // 2]
    r = _post(client, name, payload)
    assert r.status_code == status, r.text
    body = r.json()
    assert message in body["error"] and name in body["error"] and "Traceback" not in r.text


def test_pixel_cap_message_matches_the_cli(client, tiny_run, tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(huge_declared_png())
    reason = la.predict(path, run=tiny_run.run_dir, device="cpu").problems[0].reason
    assert reason in _post(client, "bomb.png", path.read_bytes()).json()["error"]


def test_oversize_uploads_are_413(client, server):
    big = b"\0" * int(LIMIT_MB * 1_000_000 * 1.5)
    r = _post(client, "big.png", big)
    assert r.status_code == 413 and "limit" in r.json()["error"]

    # No Content-Length (chunked): the limit holds on the bytes actually received.
    boundary = "lungauditboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'.encode()

    def body():
        yield head
        for _ in range(12):
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/predict", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_malformed_requests(client, server, uploads):
    good = uploads["png0"].read_bytes()
    r = client.post("/predict", content=good, headers={"content-type": "image/png"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]
    r = client.post("/predict", files={"image": ("a.png", good)})
    assert r.status_code == 400 and "no file field named 'file'" in r.json()["error"]
    r = client.post("/predict", files=[("file", ("a.png", good)), ("file", ("b.png", good))])
    assert r.status_code == 400 and "error" in r.json()
    r = client.post("/predict", params={"overlays": "maybe"}, files={"file": ("a.png", good)})
    assert r.status_code == 422 and "overlays" in r.json()["error"]
    r = client.get("/predict")
    assert r.status_code == 405 and "error" in r.json()
    r = httpx.get(server.url + "/health", headers={"host": "attacker.example"})
    assert r.status_code == 400 and "not served here" in r.json()["error"]


def test_client_names_are_labels_only_and_nothing_stays_on_disk(client, server, uploads):
    r = _post(client, "../../../tmp/evil/\x1b[31mx.png", uploads["png0"].read_bytes())
    assert r.status_code == 200 and r.json()["prediction"]["file"] == "[31mx.png"
    assert not Path("/tmp/evil").exists()
    tmp = Path(server.app.state.lungaudit.tmp.name)
    assert tmp.is_dir() and list(tmp.iterdir()) == []  # each upload's private file is gone after decoding


def test_page_static_and_security_headers(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"] and r.headers["x-content-type-options"] == "nosniff"
    assert '<script src="/static/app.js"' in r.text and "http" not in r.text.split("<body>")[0].replace('http-equiv', '')
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/app.css").status_code == 200
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/docs").status_code == 404  # no CDN-backed API docs


def test_an_internal_failure_is_a_plain_500(client, predictor, uploads, monkeypatch):
    def broken(*_a, **_k):
        raise RuntimeError("simulated device failure")

    monkeypatch.setattr(predictor, "run", broken)
    r = _post(client, "a.png", uploads["png0"].read_bytes())
    assert r.status_code == 500 and r.json() == {"error": "internal error; the server log has the details"}
    assert "simulated" not in r.text


def test_cli_refuses_a_taken_port_with_a_message(tiny_run):
    from typer.testing import CliRunner

    import lungaudit.cli.cmd_serve  # noqa: F401  (registers the command)
    from lungaudit.cli.app import app
    from lungaudit.services.serve.server import bind

    taken = bind("127.0.0.1", 0)
    taken.listen()
    try:
        port = taken.getsockname()[1]
        out = CliRunner().invoke(app, ["serve", "--run", str(tiny_run.run_dir), "--port", str(port), "--device", "cpu"])
    finally:
        taken.close()
    assert out.exit_code == 2 and "cannot listen on 127.0.0.1" in " ".join(out.output.split())


def test_registered_display_methods_light_up(tiny_run, test_images, monkeypatch):
    """Guided Grad-CAM arrives in the registry from the explanation toolbox; the page shows it then."""
    from lungaudit.config import load_config
    from lungaudit.data.records import Sample
    from lungaudit.explain.cam import CAM_METHODS, GradCAMPlusPlus
    from lungaudit.services.predict import Predictor
    from lungaudit.services.serve.app import ServeState, render_pictures

    monkeypatch.setitem(CAM_METHODS._items, "guided_gradcam", GradCAMPlusPlus)  # a stand-in under that name
    pred = Predictor.load(tiny_run.run_dir, load_config(tiny_run.run_dir / "config.yaml"), device="cpu")
    assert pred.methods == ("gradcam", "guided_gradcam")
    (p, maps), = pred.run([pred.decode(test_images[0])], [Sample(test_images[0])], ["x"], maps=True)
    assert maps.methods["guided_gradcam"].shape == (64, 64) and (maps.methods["guided_gradcam"] >= 0).all()
    state = ServeState(pred, None, None, {})  # type: ignore[arg-type]  (render_pictures reads the predictor only)
    labels = [pic["label"] for pic in render_pictures(state, p, maps)]
    assert labels == ["Lung outline", "Grad-CAM (audited)", "Guided Grad-CAM"]
    with pytest.raises(ValueError, match="unknown explanation method"):
        Predictor.load(tiny_run.run_dir, load_config(tiny_run.run_dir / "config.yaml"), device="cpu", methods=["nope"])
