"""``lungaudit serve``: a local web app and JSON API (FastAPI under uvicorn) over a loaded run, with
concurrent uploads micro-batched onto the device."""

from lungaudit.services.serve.app import LOOPBACK_HOSTS, ApiError, ServeSettings, create_app
from lungaudit.services.serve.batcher import MicroBatcher
from lungaudit.services.serve.server import BackgroundServer, is_loopback, run_server

__all__ = ["ApiError", "BackgroundServer", "LOOPBACK_HOSTS", "MicroBatcher", "ServeSettings", "create_app", "is_loopback", "run_server"]
