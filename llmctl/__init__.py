"""llmctl: declarative YAML pipelines for the LLM lifecycle."""

from importlib import metadata

try:
    __version__ = metadata.version("llmctl")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
