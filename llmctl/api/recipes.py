"""Starter recipes: `init_recipe`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from llmctl.api.pipeline import PathLike

if TYPE_CHECKING:
    pass


def init_recipe(path: PathLike = "recipe.yaml", template: str = "pretrain", force: bool = False) -> Path:
    """`llmctl init`: write a commented starter recipe and, beside it, the recipe format's JSON Schema (editor
    completion and checks through yaml-language-server, offline); returns the schema file's path."""
    from llmctl.errors import UsageError
    from llmctl.recipe.builtin import with_schema
    from llmctl.recipe.templates import TEMPLATES

    path = Path(path)
    if template not in TEMPLATES:
        raise UsageError(f"--template {template}: unknown; choose one of {', '.join(TEMPLATES)}")
    if path.exists() and not force:
        raise UsageError(f"{path} exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TEMPLATES[template])
    return with_schema(path)
