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
    """Open connections uvicorn accepts before answering 503."""
    max_body_bytes: int = 4 << 20
    """Request bodies above this get 413 before they are read whole (parsing and tokenizing 20 MB took seconds)."""
