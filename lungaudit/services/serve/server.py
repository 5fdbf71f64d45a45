"""Run the app under uvicorn: in the foreground for ``lungaudit serve``, or in a background thread
(tests, benchmarks) on a socket bound before the server starts, so the port is never raced for."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``localhost`` or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_server(app: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve ``app`` until interrupted (Ctrl-C); uvicorn handles the signals and the app's lifespan."""
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False, access_log=log_level == "debug")


class BackgroundServer:
    """``with BackgroundServer(app) as srv: httpx.get(srv.url + "/health")`` -- uvicorn in a thread.

    The socket is bound (port 0: a free one) before uvicorn starts, so ``url`` is known at once.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning", start_timeout_s: float = 60.0) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        bound_host, bound_port = self.sock.getsockname()[:2]
        self.url = f"http://{'[' + bound_host + ']' if ':' in bound_host else bound_host}:{bound_port}"
        config = uvicorn.Config(app, log_level=log_level, server_header=False, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True, name="lungaudit-serve")
        self.start_timeout_s = start_timeout_s

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start (see the log above)")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=30)
        self.sock.close()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


__all__ = ["BackgroundServer", "is_loopback", "run_server"]
