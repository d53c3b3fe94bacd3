"""How llmctl's records write times: local time with its UTC offset, to the second (2026-12-07T21:30:16+0000) —
the manifest's stage times, a firing's record, the registry's audit trail."""

from __future__ import annotations

import time
from datetime import datetime

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def iso_time(seconds: float | None = None) -> str:
    """`seconds` since the epoch (default: now) as a record writes it."""
    return time.strftime(TIME_FORMAT, time.localtime(seconds))


def parse_time(text: str) -> float:
    """Seconds since the epoch of a time a record wrote."""
    return datetime.strptime(text, TIME_FORMAT).timestamp()
