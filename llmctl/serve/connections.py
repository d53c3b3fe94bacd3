"""Connections that cannot lock the server: uvicorn's h11 protocol with slow-client defences.

uvicorn's own cap (`limit_concurrency`) counts every open socket, so 257 idle sockets — sending nothing, or a
byte every few seconds — made every request, /health included, get 503 for as long as they stayed open; and it
has no deadline for a request's headers. Here:

- a connection must deliver a request's headers within `header_timeout_s` of opening (or of its last
  response), else it is closed;
- a connection that has not sent a whole request line and headers is *idle*: one address may hold at most
  `max_idle_per_client` of them idle for over a second, and a new connection over that closes the address's
  oldest idle one;
- `max_connections` bounds open sockets: a new connection over it closes the oldest idle connection, and is
  refused with a 503 only when every open one is busy with a request;
- errors uvicorn answers itself (a malformed request, the refusal) have OpenAI's JSON body.

So a flood of idle sockets only ever displaces its own oldest sockets, and a client that sends a request
promptly is served. (No library does this for uvicorn; gunicorn's and hypercorn's timeouts do not bound idle
sockets per address.)
"""

from __future__ import annotations

import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from llmctl.serve.limits import Limits
from llmctl.serve.protocol import APIError

IDLE_GRACE_S = 1.0


def protocol_for(limits: Limits) -> type[H11Protocol]:
    """The protocol class to give uvicorn (`Config(http=...)`) for these limits."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})


class GuardedH11Protocol(H11Protocol):
    limits: Limits = Limits()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.header_timer: Any = None
        self._became_idle()
        if not self._make_room():
            self._refuse(503, "the server has no free connection (every open one is busy); retry later", "server_error")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.idle:
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._became_idle()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, f"malformed HTTP request: {msg}", "invalid_request_error")

    @property
    def idle(self) -> bool:
        """Waiting for (the rest of) a request's headers, with no request being answered."""
        return self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

    def _became_idle(self) -> None:
        self.idle_since = self.loop.time()
        self._cancel_header_timer()
        self.header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _header_timeout(self) -> None:
        self.header_timer = None
        if self.idle and not self.transport.is_closing():
            self.transport.close()

    def _make_room(self) -> bool:
        """Close the oldest idle connections over the per-address and total bounds; False when the total is
        reached and every open connection is busy. Per address, only connections idle for `IDLE_GRACE_S` count:
        a client's burst of new connections is about to send its requests."""
        others = [
            c
            for c in self.connections
            if c is not self and isinstance(c, GuardedH11Protocol) and not c.transport.is_closing()
        ]
        idle = sorted((c for c in others if c.idle), key=lambda c: c.idle_since)
        settled = self.loop.time() - IDLE_GRACE_S
        mine = [
            c for c in idle if c.idle_since < settled and c.client and self.client and c.client[0] == self.client[0]
        ]
        for stale in mine[: max(0, len(mine) + 1 - self.limits.max_idle_per_client)]:
            stale.transport.close()
            others.remove(stale)
            idle.remove(stale)
        excess = len(others) + 1 - self.limits.max_connections
        for stale in idle[: max(0, excess)]:
            stale.transport.close()
        return excess <= len(idle)

    def _refuse(self, status: int, message: str, kind: str) -> None:
        """Answer with an OpenAI-shaped error and close, whatever state the request is in."""
        body = json.dumps(APIError(status, message, kind).body).encode()
        head = (
            f"HTTP/1.1 {status} {'Bad Request' if status == 400 else 'Service Unavailable'}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()
