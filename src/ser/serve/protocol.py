"""uvicorn's httptools protocol with a deadline and a size limit on every request head, and the infer
route answered without ASGI.

httptools (llhttp, in C) parses a request for a fraction of what h11 (pure Python) costs: under load on
a small model the event loop's CPU per request fell by ~40 % (benchmarks/RESULTS.md). What uvicorn
leaves open, either way, is kept closed here:

- uvicorn closes a keep-alive connection only once a response has been sent and the next request does
  not start in time; a connection that never sends a request, or sends its head a byte at a time, stays
  open forever, and enough of them exhaust the process's file descriptors. Here each connection gets
  `timeout_keep_alive` seconds (uvicorn's own setting) from its opening, and from each response, to
  deliver a complete request head; the body has its own deadline in the app (`body_timeout_s`).
- llhttp sets no limit on a head's size (h11 refuses heads over 16 KiB); here a head that passes
  MAX_HEAD_BYTES gets 431 and the connection closes (after LINGER_S of reading and dropping what still
  comes), so no client can make the server buffer headers.

POST /v2/models/{name}/infer, the request a client sends under load, skips uvicorn's ASGI cycle: the
protocol gathers its body, hands it to ServeApp's InferRoute (the same `respond` the ASGI route calls) and
writes the answer in one send. uvicorn's per-request ASGI machinery (scope, receive and send messages,
flow control, middleware) was most of the event loop's time per request; with a Python front end on the
cores the model uses, that time is throughput (benchmarks/RESULTS.md). Anything unusual about such a
request (a pipelined one still queued, `Expect: 100-continue`, an upgrade, forwarded-for headers, a
percent-encoded path, the concurrency limit reached) goes the ASGI way instead, so it is answered as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httptools
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger(__name__)
MAX_HEAD_BYTES = 16 * 1024  # h11's default, which uvicorn's h11 protocol enforced before
LINGER_S = 1.0  # how long a refused connection's further bytes are read and dropped before it closes
JSON_HEAD = b"content-type: application/json\r\ncontent-length: "


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    _head_deadline: asyncio.TimerHandle | None = None
    _heads = 0  # complete request heads received on this connection
    _head_bytes: int | None = 0  # bytes received while the current head is incomplete; None within a body
    _refused = False  # answered with the connection closing (a head over the limit, an infer body refused)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._infer_route = _infer_route(self.app)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._refused:  # the rest of a refused connection's bytes
            return
        if self._head_bytes is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_bytes is not None and self._head_bytes > MAX_HEAD_BYTES:  # a head still unfinished
            self._refuse_head()

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        if len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) > MAX_HEAD_BYTES:
            self._refuse_head()  # a whole head that came in one read
            return
        self._heads += 1
        self._head_bytes = None
        exchange = self._infer_exchange()
        if exchange is None:
            super().on_headers_complete()
        else:
            self.cycle = exchange  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        if isinstance(self.cycle, InferExchange):
            self.cycle.receive(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        if isinstance(self.cycle, InferExchange):
            self.cycle.complete()
        else:
            super().on_message_complete()
        self._head_bytes = 0  # what follows on this connection is the next request's head

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        if isinstance(self.cycle, InferExchange):
            self.cycle.lost()
        super().connection_lost(exc)

    def _infer_exchange(self) -> InferExchange | None:
        """An exchange for this request if it is an infer request this protocol may answer itself."""
        route = self._infer_route
        if route is None or self.parser.get_method() != b"POST" or self.expect_100_continue or self.root_path:
            return None
        if self.parser.should_upgrade():
            return None  # uvicorn's own handling (it refuses, or hands over to WebSockets)
        if self.cycle is not None and not self.cycle.response_complete:
            return None  # pipelined behind a request still being answered: uvicorn queues it
        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency or len(self.tasks) >= self.limit_concurrency
        ):
            return None  # uvicorn answers 503
        path = httptools.parse_url(self.url).path
        if b"%" in path or not path.isascii() or not (name := route.model_name(path.decode("ascii"))):
            return None
        header_length, declared = None, None
        for key, value in self.headers:
            if key == b"inference-header-content-length" and header_length is None:  # the first, as ASGI's
                header_length = value.decode("latin-1")
            elif key == b"content-length":
                declared = value
            elif key.startswith(b"x-forwarded-"):
                return None  # ProxyHeadersMiddleware's business
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        exchange = InferExchange(self, route, name, keep_alive, header_length)
        if declared is not None and declared.isdigit() and int(declared) > exchange.limit:
            exchange.refuse(413, f"upload of {int(declared)} bytes is over the limit of {exchange.limit} bytes")
        return exchange

    def _arm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        self._head_deadline = self.loop.call_later(self.timeout_keep_alive, self._expire, self._heads)

    def _expire(self, heads_then: int) -> None:
        self._head_deadline = None
        serving = self.cycle is not None and not self.cycle.response_complete  # e.g. a pipelined request
        if self._heads != heads_then or serving or self.transport.is_closing():
            return  # a request arrived in time
        log.debug("%s: no complete request within %s s; closing the connection", _peer(self.client),
                  self.timeout_keep_alive)  # fmt: skip
        self.transport.close()

    def _refuse_head(self) -> None:
        if self._refused or self.transport.is_closing():
            return
        message = f"request head over {MAX_HEAD_BYTES} bytes".encode()
        log.info("%s: %s; closing the connection", _peer(self.client), message.decode())
        self._close_with(
            STATUS_LINE[431]
            + b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            + b"content-length: %d\r\n\r\n" % len(message)
            + message
        )

    def _close_with(self, response: bytes) -> None:
        """Answer, then close: whatever else arrives on this connection is dropped."""
        self._refused = True
        self.transport.write(response)
        # Close our side once the answer is out, but keep reading (and dropping) what the client still sends
        # for a moment: closing with its bytes unread would reset the connection, and the reset can destroy
        # the answer before the client reads it.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


class InferExchange:
    """One infer request, from its head to its answer, without ASGI. uvicorn's protocol holds it as its
    current cycle and reads what it reads of one (`response_complete`, `keep_alive`, `disconnected`,
    `message_event`), so a pipelined request waits for it, graceful shutdown waits for it (its task is in
    the server's), and the keep-alive deadline starts once it is answered, as for any request. The body is
    held to ser-serve's upload limit (413) and body deadline (408); both close the connection."""

    class _NoWaiter:
        def set(self) -> None:
            """Nothing waits on an exchange's messages (uvicorn sets a cycle's event on a lost connection)."""

    message_event = _NoWaiter()

    def __init__(self, protocol: GuardedHttpToolsProtocol, route: Any, name: str, keep_alive: bool,
                 header_length: str | None):  # fmt: skip
        self.protocol, self.route, self.name = protocol, route, name
        self.keep_alive = keep_alive
        self.header_length = header_length
        self.target, self.version = protocol.url, protocol.parser.get_http_version()  # for the access log
        self.disconnected = False
        self.response_complete = False
        self.started = time.perf_counter()
        settings = route.service.settings
        self.limit = int(settings.max_upload_mb * 1024 * 1024)
        self.chunks: list[bytes] = []
        self.size = 0
        self.body_deadline = protocol.loop.call_later(settings.body_timeout_s, self._body_late, settings.body_timeout_s)

    def receive(self, data: bytes) -> None:
        if self.response_complete:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.refuse(413, f"upload is over the limit of {self.limit} bytes")
        else:
            self.chunks.append(data)

    def complete(self) -> None:
        """The whole body is in: answer it on a task of its own."""
        if self.response_complete:
            return
        self.body_deadline.cancel()
        body, self.chunks = b"".join(self.chunks), []
        task = self.protocol.loop.create_task(self.route.respond(self.name, body, self.header_length))
        tasks = self.protocol.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(self._answered)

    def lost(self) -> None:
        self.body_deadline.cancel()

    def refuse(self, status: int, message: str) -> None:
        """Answer `status` before the body is in, and close the connection."""
        self.keep_alive, self.chunks = False, []  # what came of the body is not kept while the connection lingers
        error = json.dumps({"error": message}, ensure_ascii=False, separators=(",", ":"))  # as the route's errors
        self._send(status, error.encode(), refusing=True)

    def _body_late(self, seconds: float) -> None:
        self.refuse(408, f"the request body did not arrive within {seconds:g} s")

    def _answered(self, task: asyncio.Task) -> None:
        if task.cancelled():  # the server is stopping and no longer waits
            self.response_complete = True
            self.protocol.transport.close()
            return
        status, body = task.result()
        self._send(status, body)

    def _send(self, status: int, body: bytes, refusing: bool = False) -> None:
        if self.response_complete:
            return
        self.response_complete = True
        self.body_deadline.cancel()
        protocol = self.protocol
        self.route.service.metrics.observe_request(self.route.path, status, time.perf_counter() - self.started)
        if self.disconnected or protocol.transport.is_closing():
            return
        if protocol.access_log:  # as uvicorn logs a request
            target = self.target.decode("latin-1")
            protocol.access_logger.info(  # these five arguments: uvicorn's AccessFormatter reads them
                '%s - "%s %s HTTP/%s" %d', _peer(protocol.client), "POST", target, self.version, status
            )
        head = [STATUS_LINE[status]]
        for key, value in protocol.server_state.default_headers:
            head += [key, b": ", value, b"\r\n"]
        head += [JSON_HEAD, b"%d\r\n" % len(body), b"" if self.keep_alive else b"connection: close\r\n", b"\r\n", body]
        if refusing:
            protocol._close_with(b"".join(head))
            return
        protocol.transport.write(b"".join(head))
        if not self.keep_alive:
            protocol.transport.close()
        protocol.on_response_complete()


def _infer_route(app: Any) -> Any:
    """The app's InferRoute (ServeApp.infer_route), where uvicorn runs the app as it is or behind its
    proxy-headers middleware alone; else None, and every request goes through ASGI."""
    if isinstance(app, ProxyHeadersMiddleware):
        app = app.app
    return getattr(app, "infer_route", None)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "client"


def server_options(keep_alive_s: float, max_connections: int) -> dict:
    """uvicorn.Config / uvicorn.run keyword arguments for ser-serve's connection limits."""
    return {"http": GuardedHttpToolsProtocol, "timeout_keep_alive": keep_alive_s, "limit_concurrency": max_connections}
