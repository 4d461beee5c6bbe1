"""uvicorn's httptools protocol with a deadline and a size limit on every request head.

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
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger(__name__)
MAX_HEAD_BYTES = 16 * 1024  # h11's default, which uvicorn's h11 protocol enforced before
LINGER_S = 1.0  # how long a refused connection's further bytes are read and dropped before it closes


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    _head_deadline: asyncio.TimerHandle | None = None
    _heads = 0  # complete request heads received on this connection
    _head_bytes: int | None = 0  # bytes received while the current head is incomplete; None within a body
    _refused = False  # a head over the limit was answered with 431; the connection is closing

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
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
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        super().on_message_complete()
        self._head_bytes = 0  # what follows on this connection is the next request's head

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        super().connection_lost(exc)

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
        self._refused = True
        message = f"request head over {MAX_HEAD_BYTES} bytes".encode()
        log.info("%s: %s; closing the connection", _peer(self.client), message.decode())
        self.transport.write(
            STATUS_LINE[431]
            + b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            + b"content-length: %d\r\n\r\n" % len(message)
            + message
        )
        # Close our side once the answer is out, but keep reading (and dropping) what the client still sends
        # for a moment: closing with its bytes unread would reset the connection, and the reset can destroy
        # the 431 before the client reads it.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "client"


def server_options(keep_alive_s: float, max_connections: int) -> dict:
    """uvicorn.Config / uvicorn.run keyword arguments for ser-serve's connection limits."""
    return {"http": GuardedHttpToolsProtocol, "timeout_keep_alive": keep_alive_s, "limit_concurrency": max_connections}
