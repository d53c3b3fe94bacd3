"""ASGI middleware in front of the app: request bodies bounded in size and time (413, 408) before the app
sees them, and one access-log line per request."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi.responses import JSONResponse

from llmctl.serve.protocol import (
    APIError,
)

LOG = logging.getLogger("llmctl.serve")  # the server's logger: serve/app.py logs to it too


class BodyLimit:
    """ASGI middleware: a request body is read whole here, before the app sees it, within `max_bytes` (413, judged
    by Content-Length before anything is read and counted as chunks arrive when there is none: Starlette and uvicorn
    set no limit of their own) and within `timeout_s` (408: a client trickling its body cannot hold a request
    open). The app then gets the body at once, and later `receive` calls (disconnect checks) go to the client."""

    def __init__(self, app: Any, max_bytes: int, timeout_s: float) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await _refuse(
                scope,
                receive,
                send,
                413,
                f"request body of {int(declared):,} bytes is over this server's limit of {self.max_bytes:,}",
            )
        try:
            body = await asyncio.wait_for(self._read(receive), self.timeout_s)
        except TimeoutError:
            return await _refuse(
                scope, receive, send, 408, f"the request body did not arrive within {self.timeout_s:g} s"
            )
        if body is None:
            return await _refuse(
                scope, receive, send, 413, f"request body is over this server's limit of {self.max_bytes:,} bytes"
            )
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Any) -> bytes | None:
        """The whole body, or None once it passes `max_bytes`."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return b"".join(chunks)


class AccessLog:
    """One line per request once its response is sent (a stream when it ends): method, path, status, tokens
    generated, milliseconds. `llmctl serve` logs them unless --quiet."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 0

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            generations = (scope.get("state") or {}).get("generations") or []
            tokens = sum(len(g.tokens) for g in generations)
            elapsed = (time.perf_counter() - started) * 1000
            LOG.warning("%s %s %s %d tokens %.0f ms", scope["method"], scope["path"], status or "-", tokens, elapsed)


async def _refuse(scope: dict[str, Any], receive: Any, send: Any, status: int, message: str) -> None:
    await JSONResponse(APIError(status, message).body, status_code=status, headers={"connection": "close"})(
        scope, receive, send
    )
