"""Run the app under uvicorn: in the foreground for ``lungaudit serve``, or in a background thread
(tests, benchmarks) on a socket bound before the server starts, so the port is never raced for."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any, Callable

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


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (port 0: a free one); OSError says why not."""
    sock = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def run_server(app: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", on_ready: Callable[[str], None] | None = None) -> None:
    """Serve ``app`` until interrupted (Ctrl-C); uvicorn handles the signals and the app's lifespan.

    The socket is bound here first, so a taken port is an ``OSError`` with the reason (not a log line
    and an exit from inside uvicorn), and ``on_ready`` gets the real URL (port 0 picks a free one).
    """
    sock = bind(host, port)
    if on_ready is not None:
        on_ready(url_of(sock))
    config = uvicorn.Config(app, log_level=log_level, server_header=False, access_log=log_level == "debug", lifespan="on")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


class BackgroundServer:
    """``with BackgroundServer(app) as srv: httpx.get(srv.url + "/health")`` -- uvicorn in a thread.

    The socket is bound (port 0: a free one) before uvicorn starts, so ``url`` is known at once.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning", start_timeout_s: float = 60.0) -> None:
        self.sock = bind(host, port)
        self.url = url_of(self.sock)
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


__all__ = ["BackgroundServer", "bind", "is_loopback", "run_server", "url_of"]
