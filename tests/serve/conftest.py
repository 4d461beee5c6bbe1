import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from ser.serve import ServeSettings, create_app
from ser.serve.protocol import server_options


@contextmanager
def running_service(settings: ServeSettings, log_level: str = "warning") -> Iterator[httpx.Client]:
    """The real app under uvicorn on a loopback port, in a thread; a client pointed at it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options = server_options(settings.keep_alive_s, settings.max_connections)  # as ser-serve runs it
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level=log_level, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the service did not start"
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
def service(tiny_bundle) -> Callable[..., Iterator[httpx.Client]]:
    """service(**settings) → a context manager serving the tiny wavlm bundle with those settings."""

    def start(**overrides):
        return running_service(ServeSettings(bundle=str(tiny_bundle("wavlm")), threads=1, **overrides))

    return start
