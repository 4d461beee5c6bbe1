"""uvicorn's h11 protocol with a deadline on every request head.

uvicorn closes a keep-alive connection only once a response has been sent and the next request does
not start in time; a connection that never sends a request, or sends its head a byte at a time, stays
open forever, and enough of them exhaust the process's file descriptors. Here each connection gets
`timeout_keep_alive` seconds (uvicorn's own setting) from its opening, and from each response, to
deliver a complete request head; the body has its own deadline in the app (`body_timeout_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


class DeadlineH11Protocol(H11Protocol):
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

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
        waiting_after = self.scope  # a new request head replaces the scope
        self._head_deadline = self.loop.call_later(self.timeout_keep_alive, self._expire, waiting_after)

    def _expire(self, waiting_after: object) -> None:
        self._head_deadline = None
        if self.scope is not waiting_after or self.transport.is_closing():
            return  # a request arrived in time
        log.debug("%s: no complete request within %s s; closing the connection", _peer(self.client),
                 self.timeout_keep_alive)  # fmt: skip
        with contextlib.suppress(h11.LocalProtocolError):  # mid-request: h11 has no clean close to send
            self.conn.send(h11.ConnectionClosed())
        self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "client"


def server_options(keep_alive_s: float, max_connections: int) -> dict:
    """uvicorn.Config / uvicorn.run keyword arguments for ser-serve's connection limits."""
    return {"http": DeadlineH11Protocol, "timeout_keep_alive": keep_alive_s, "limit_concurrency": max_connections}
