"""llmctl: declarative YAML pipelines for the LLM lifecycle."""

from typing import Any


def __getattr__(name: str) -> Any:
    """`__version__`, read from the installed metadata on first use (importlib.metadata costs 30 ms of every
    command's start-up otherwise)."""
    if name != "__version__":
        raise AttributeError(f"module 'llmctl' has no attribute {name!r}")
    from importlib import metadata

    try:
        return metadata.version("llmctl")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0+source"
