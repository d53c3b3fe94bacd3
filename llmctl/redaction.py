"""Secrets never leave the process: a value a recipe read from the environment (`${oc.env:HF_TOKEN}`) is shown
as `***` wherever text leaves llmctl — every message and event on stdout/stderr, every record, log and
descriptor it writes, every Python log record — whatever field, path or model id it ended up inside.

Redaction happens at those boundaries, not per field: `hide()` is called once the values are known (recipe
load, or a launched worker rebuilding its recipe), and the writers below apply `redact()` to whatever passes."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any, TextIO, TypeVar

MASK = "***"
_secrets: tuple[str, ...] = ()
_factory_installed = False
T = TypeVar("T")


def hide(values: Iterable[str]) -> None:
    """Hide these values (long enough to be worth searching for) from now on, in this process."""
    global _secrets
    _secrets = tuple(sorted(set(_secrets) | {v for v in values if v}, key=len, reverse=True))
    if _secrets:
        _install_log_factory()


def forget() -> None:
    """Hide nothing any more (a new command in the same process, tests)."""
    global _secrets
    _secrets = ()


def redact(value: T) -> T:
    """`value` (text, or JSON-like data: dicts, lists, tuples) with every hidden value replaced by `***`."""
    if not _secrets:
        return value
    if isinstance(value, str):
        for secret in _secrets:
            value = value.replace(secret, MASK)  # type: ignore[assignment]  # still a str
        return value
    if isinstance(value, dict):
        return {redact(k): redact(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value


class RedactedStream(io.TextIOBase):
    """A text stream that hides secrets in what is written through it to `target`: a stream, or a function that
    returns the current one (for module-level consoles, which must follow `sys.stdout` as tests swap it)."""

    def __init__(self, target: TextIO | Callable[[], TextIO]) -> None:
        self._target = target

    @property
    def target(self) -> TextIO:
        return self._target() if callable(self._target) else self._target

    _line_start = True

    def write(self, text: str) -> int:
        shown = redact(text)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            shown = workflow_safe(shown, self._line_start)
        if shown:
            self._line_start = shown.endswith("\n")
        self.target.write(shown)
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]  # rich reads it to pick box characters
        return getattr(self.target, "encoding", None) or "utf-8"


def workflow_safe(text: str, line_start: bool = True) -> str:
    """`text` as a CI runner may read it: a GitHub Actions runner takes any output line that starts with `::`
    (after spaces) as a workflow command (`::error`, `::add-mask`, `::set-output`), so a recipe key, a column
    name or an exception text holding a newline could forge one. Carriage returns become newlines (a runner
    trims a leading CR), and `::` opening a line becomes `: :`. llmctl's own annotations (cli/ci.py) are
    written around this."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if (index or line_start) and line.lstrip().startswith("::"):
            lines[index] = line.replace("::", ": :", 1)
    return "\n".join(lines)


def _install_log_factory() -> None:
    """Every log record (llmctl's and the libraries') has its message redacted as it is made, before any
    handler — console, file or a tracker's — formats it."""
    global _factory_installed
    if _factory_installed:
        return
    _factory_installed = True
    make = logging.getLogRecordFactory()

    def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if _secrets:
            try:
                record.msg, record.args = redact(record.getMessage()), None
            except Exception:  # noqa: BLE001 - a malformed record is logging's to report, as it would be unredacted
                pass
        return record

    logging.setLogRecordFactory(redacted_record)
