"""The server's limits: one place for their defaults, read by `llmctl serve`'s options and by the app (kept
apart from serve/app.py so that the CLI can show the defaults without importing FastAPI)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Limits:
    max_tokens: int = 512
    max_n: int = 8
    max_batch: int = 8
    max_queue: int = 64
    max_prompts: int = 64
    """Prompts in one /v1/completions request."""
    max_connections: int = 256
    """Open connections; a new one over this closes the oldest idle one, or gets 503 when all are busy."""
    max_idle_per_client: int = 32
    """Connections from one address that have not sent a whole request yet; a new one closes the oldest."""
    header_timeout_s: float = 10.0
    """A connection that has not sent a request's headers this long after opening (or its last answer) is closed."""
    body_timeout_s: float = 30.0
    """A request body not received whole this long after its headers gets 408."""
    max_body_bytes: int = 4 << 20
    """Request bodies above this get 413 before they are read whole (parsing and tokenizing 20 MB took seconds)."""
