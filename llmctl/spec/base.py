"""What every spec shares: the Block base (attribute docstrings as field descriptions), names and stage references, input slots."""

from __future__ import annotations

import ast
import functools
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from llmctl.store.artifacts import ArtifactKind

PREVIOUS = "previous"
STAGE_PREFIX = "stage:"
"""Recipe, stage and model names: they become folder names, so no `/`, no leading `.`, at most 64 characters."""


def optional_pattern(pattern: str) -> str:
    """`pattern`, or the empty string."""
    return f"^(?:{pattern[1:-1]})?$"


MAX_SEED = 2**32 - 1  # numpy's seed range (transformers.set_seed seeds numpy too)


class Block(BaseModel):
    """Base of every recipe block: unknown keys are errors, values are immutable once validated. Validators are
    built on first use (`defer_build`: `--help` never needs them). Attribute docstrings describe the fields in
    `llmctl schema` (`field_docs`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)


def field_docs(cls: type[BaseModel]) -> dict[str, str]:
    """{field: its attribute docstring} for a recipe block, inherited fields included: the descriptions of
    `llmctl schema`. Read only when a schema is asked for (pydantic's `use_attribute_docstrings` walks the call
    stack with inspect.getmodule at every class definition, and even one parse per module costs every command
    ~45 ms of start-up)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if issubclass(klass, BaseModel) and klass.__module__.startswith("llmctl."):
            docs |= _attribute_docstrings(inspect.getsourcefile(klass) or "").get(klass.__qualname__, {})
    return docs


@functools.cache
def _attribute_docstrings(filename: str) -> dict[str, dict[str, str]]:
    """{class qualname: {attribute: its docstring}} for the classes of a source file (nested ones too)."""
    try:
        tree = ast.parse(Path(filename).read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return {}
    found: dict[str, dict[str, str]] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                found[prefix + node.name] = {
                    attr.target.id: inspect.cleandoc(doc.value.value)
                    for attr, doc in zip(node.body, node.body[1:], strict=False)
                    if isinstance(attr, ast.AnnAssign)
                    and isinstance(attr.target, ast.Name)
                    and isinstance(doc, ast.Expr)
                    and isinstance(doc.value, ast.Constant)
                    and isinstance(doc.value.value, str)
                }
                visit(node.body, f"{prefix}{node.name}.")

    visit(tree.body, "")
    return found


@dataclass(frozen=True)
class InputSlot:
    """One input a stage consumes: a reference (`previous`, `stage:NAME`, a path or hub id) and the kinds it accepts."""

    ref: str
    accepts: tuple[ArtifactKind, ...]
    field: str  # the spec field that holds the reference, for error messages


def stage_ref_name(ref: str) -> str | None:
    """`stage:sft` → `sft`; anything else → None."""
    return ref[len(STAGE_PREFIX) :] if ref.startswith(STAGE_PREFIX) else None


_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def split_path(path: str) -> list[str | int]:
    """`answers.text[0]` → ["answers", "text", 0] (field paths in blocks, nested columns in rows)."""
    return [name if name else int(index) for name, index in _PATH_PART.findall(path)]


def is_local_path(ref: str) -> bool:
    """Whether a model/data reference names the local file system rather than a hub id."""
    return ref.startswith(("/", "./", "../", "~", "file://")) or Path(ref).expanduser().exists()


KeyPath = tuple[str | int, ...]


def get_path(tree: Any, key_path: KeyPath) -> Any:
    """The value at `key_path` in nested dicts/lists, or None when there is none."""
    for part in key_path:
        try:
            tree = tree[part]
        except (KeyError, IndexError, TypeError):
            return None
    return tree
