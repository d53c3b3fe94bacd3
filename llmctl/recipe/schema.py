"""The typed recipe (settings + a discriminated union of stage specs) and validation with located errors."""

from __future__ import annotations

import copy
import difflib
import os
import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, ValidationError

from llmctl import redaction
from llmctl.errors import Problem, RecipeError
from llmctl.recipe.load import MIN_SECRET_CHARS, STAGES, KeyPath, LoadedRecipe, dotted, get_path
from llmctl.spec.base import field_docs, optional_pattern
from llmctl.spec.recipe import RecipeBase
from llmctl.spec.stage import StageSpec
from llmctl.stages import REGISTRY, SPECS
from llmctl.store.layout import NAME_PATTERN

NAME_PATTERNS = (NAME_PATTERN, optional_pattern(NAME_PATTERN))
if typing.TYPE_CHECKING:
    AnyStage = StageSpec  # what the checker sees: every stage is a StageSpec
else:
    AnyStage = Annotated[Union[SPECS], Field(discriminator="type")]  # noqa: UP007 - a runtime tuple of classes


class Recipe(RecipeBase):
    """A recipe: global settings and the ordered list of stages."""

    stages: list[AnyStage] = Field(min_length=1)  # the union of every StageSpec (the base names StageSpec)
    """The stages, run in order; each consumes the previous stage's output unless told otherwise."""

    @classmethod
    def from_public(cls, public: dict[str, Any], env_entries: list[tuple[list[str | int], Any]]) -> Recipe:
        """Rebuild a recipe from `public_dump()` and `env_entries()`."""
        public = copy.deepcopy(public)
        written = {tuple(path): str(get_path(public, tuple(path))) for path, _ in env_entries}
        for path, value in env_entries:
            get_path(public, tuple(path[:-1]))[path[-1]] = value
        recipe = cls.model_validate(public)
        recipe._from_env = written
        redaction.hide(str(value) for _, value in env_entries if len(str(value)) >= MIN_SECRET_CHARS)
        hide_named_secrets(recipe)
        return recipe


def validate(loaded: LoadedRecipe) -> Recipe:
    """Validate a loaded tree; every problem is reported with file:line:col and the field path."""
    if "smoke" in loaded.tree:  # it turns gates off: only `--smoke` may set it, never a recipe or an override
        problem = Problem(loaded.where(("smoke",)), "smoke", "set by `llmctl run --smoke`, not in a recipe; remove it")
        raise RecipeError([problem], str(loaded.path))
    try:
        recipe = Recipe.model_validate(loaded.tree)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        problems = [_problem(error, loaded) for error in errors] + _as_meant(errors, loaded)
        raise RecipeError(_dedupe(problems), str(loaded.path)) from None
    recipe._from_env = dict(loaded.from_env)
    hide_named_secrets(recipe)
    return recipe


def hide_named_secrets(recipe: Recipe) -> None:
    """The values of the environment variables a recipe names in a `*_env` field (`api_key_env: JUDGE_KEY`) are
    secrets: hidden everywhere llmctl writes, like `${oc.env:…}` values — an endpoint that echoes the key back
    in an error must not put it in a log, a record or a notification."""
    names: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and key.endswith("_env") and isinstance(item, str):
                    names.append(item)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(recipe.model_dump(mode="json"))
    values = (os.environ.get(name, "") for name in names)
    redaction.hide(v for v in values if len(v) >= MIN_SECRET_CHARS)


SCHEMA_ID = "urn:llmctl:recipe"
SCHEMA_FILE = ".llmctl/recipe.schema.json"  # where `llmctl init` writes it, for the yaml-language-server modeline
INTERPOLATION = {
    "type": "string",
    "pattern": r"\$\{.+\}",
    "description": "An OmegaConf interpolation: ${oc.env:VAR,default}, ${name}…",
}


def json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of the recipe format, for editors and validators. A stage is checked against its own
    type's schema (if/then on `type`, so a typo in an sft stage is reported against sft); any value may be an
    `${…}` interpolation; a recipe with `extends:` is checked with nothing required, as its base fills the rest."""
    schema = Recipe.model_json_schema(ref_template="#/$defs/{model}")
    defs = schema.pop("$defs")
    defs["Recipe"] = schema | {"title": "llmctl recipe"}
    _describe_fields(defs)
    defs["Recipe"]["properties"]["extends"] = {
        "description": "Base recipe file(s) this one builds on (relative paths); stages merge by name.",
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
    }
    mapping = defs["Recipe"]["properties"]["stages"]["items"]["discriminator"]["mapping"]
    for ref in mapping.values():
        defs[ref.rsplit("/", 1)[1]].setdefault("required", []).insert(0, "type")
    defs["Recipe"]["properties"]["stages"]["items"] = _stage_item(mapping)
    for model in defs.values():
        _allow_interpolation(model)
    partial = {f"{name}Partial": _relaxed(model) for name, model in defs.items()}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "llmctl recipe",
        "description": defs["Recipe"].get("description", ""),
        "type": "object",
        "if": {"required": ["extends"]},
        "then": {"$ref": "#/$defs/RecipePartial"},
        "else": {"$ref": "#/$defs/Recipe"},
        "$defs": defs | partial,
    }


def _describe_fields(defs: dict[str, Any]) -> None:
    """Give each property of our blocks its attribute docstring as description (`specs.field_docs`)."""
    ours = [cls for cls in _subclasses(BaseModel) if cls.__module__.startswith("llmctl.")]
    classes = {cls.__name__: cls for cls in ours}  # pydantic names a def after its module too when names clash
    classes |= {f"{cls.__module__}.{cls.__qualname__}".replace(".", "__"): cls for cls in ours}
    for name, model in defs.items():
        if name not in classes:
            continue
        docs, properties = field_docs(classes[name]), model.get("properties", {})
        for field, info in classes[name].model_fields.items():
            spec = properties.get(info.alias or field)
            if spec is not None and "description" not in spec and field in docs:
                spec["description"] = docs[field]


def _subclasses(cls: type[BaseModel]) -> list[type[BaseModel]]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


def _stage_item(mapping: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": sorted(mapping), "description": "The stage type: what this stage does."}},
        "allOf": [
            {"if": {"properties": {"type": {"const": kind}}, "required": ["type"]}, "then": {"$ref": ref}}
            for kind, ref in sorted(mapping.items())
        ],
    }


def _allow_interpolation(model: dict[str, Any]) -> None:
    """Let every scalar field of `model` hold an `${…}` interpolation instead of its typed value (blocks and
    lists are left alone, so that a mistake inside one is reported where it is, not as "no schema matched")."""
    for name, field in model.get("properties", {}).items():
        if field.get("type") == "string" and "enum" not in field and "const" not in field and "pattern" not in field:
            continue
        if _is_container(field):
            continue
        kept = {k: field[k] for k in ("description", "default", "title") if k in field}
        typed = {k: v for k, v in field.items() if k not in kept}
        model["properties"][name] = kept | {"anyOf": [typed, INTERPOLATION]}


def _is_container(field: dict[str, Any]) -> bool:
    members = field.get("anyOf", [field])
    return any(
        "$ref" in m or "items" in m or "properties" in m or m.get("type") in ("array", "object") for m in members
    )


def _relaxed(node: Any) -> Any:
    """A copy of a schema node with nothing required and every reference pointing at the relaxed copies."""
    if isinstance(node, dict):  # an `if` keeps its own `required`: that is a condition, not a requirement
        out = {
            k: v if k == "if" else _relaxed(v)
            for k, v in node.items()
            if k not in ("required", "minItems", "minLength")
        }
        if isinstance(out.get("$ref"), str) and out["$ref"].startswith("#/$defs/"):
            out["$ref"] += "Partial"
        return out
    if isinstance(node, list):
        return [_relaxed(v) for v in node]
    return node


def _problem(error: Any, loaded: LoadedRecipe) -> Problem:
    loc = _strip_union_tag(tuple(error["loc"]), loaded.tree)
    kind = error["type"]
    if kind == "extra_forbidden":
        parent, key = loc[:-1], str(loc[-1])
        hint = _did_you_mean(key, _fields_at(parent, loaded.tree))
        return Problem(loaded.where(loc), dotted(parent), f"unknown field '{key}'{hint}")
    if kind == "missing":
        return Problem(loaded.where(loc), dotted(loc[:-1]), f"missing required field '{loc[-1]}'")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        known = ", ".join(sorted(REGISTRY))
        got = error.get("input", {}).get("type") if isinstance(error.get("input"), dict) else None
        what = f"unknown stage type '{got}'" if got else "a stage needs `type:`"
        close = difflib.get_close_matches(str(got), list(REGISTRY), n=1, cutoff=0.6) if got else []
        hint = f" — did you mean '{close[0]}'?" if close else ""
        return Problem(loaded.where(loc + ("type",)), dotted(loc), f"{what}{hint}; known types: {known}")
    message = error["msg"]
    if kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") in NAME_PATTERNS:
        message = (
            "a name is letters, digits, '_', '.' or '-' (no '/'), starts with a letter or digit, at most 64 characters"
        )
    if loc in loaded.from_env:  # the value came from the environment: show what was written, not the value
        message += f" (got {loaded.from_env[loc]})"
    elif "input" in error and not isinstance(error["input"], (dict, list)):
        message += f" (got {error['input']!r})"
    return Problem(loaded.where(loc), dotted(loc), message)


def _as_meant(errors: list[Any], loaded: LoadedRecipe) -> list[Problem]:
    """A stage whose `type` is a typo of a known one is also checked as that type, so its other mistakes are
    reported in the same run instead of after the type is fixed."""
    found = []
    for error in errors:
        if error["type"] != "union_tag_invalid" or not isinstance(error.get("input"), dict):
            continue
        stage, loc = error["input"], tuple(error["loc"])
        close = difflib.get_close_matches(str(stage.get("type")), list(REGISTRY), n=1, cutoff=0.6)
        if not close:
            continue
        try:
            REGISTRY[close[0]].model_validate(stage | {"type": close[0]})
        except ValidationError as err:
            for inner in err.errors(include_url=False):
                problem = _problem(inner | {"loc": loc + tuple(inner["loc"])}, loaded)
                found.append(Problem(problem.where, problem.path, f"{problem.message} (checked as a {close[0]} stage)"))
    return found


def _strip_union_tag(loc: KeyPath, tree: dict[str, Any]) -> KeyPath:
    """Pydantic puts the discriminator value into the path (`stages.1.pretrain.lr`); drop it."""
    if len(loc) > 2 and loc[0] == STAGES and isinstance(loc[1], int):
        stage = get_path(tree, loc[:2])
        if isinstance(stage, dict) and loc[2] == stage.get("type"):
            return loc[:2] + loc[3:]
    return loc


def _fields_at(loc: KeyPath, tree: dict[str, Any]) -> list[str]:
    """Field names of the model that validates the mapping at `loc` (for "did you mean")."""
    model: Any = Recipe
    if len(loc) >= 2 and loc[0] == STAGES:  # the union member is chosen by the stage's `type`
        stage = get_path(tree, loc[:2])
        model, loc = (REGISTRY.get(str(stage.get("type"))) if isinstance(stage, dict) else None), loc[2:]
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if _is_model(model) else None
        model = _model_in(field.annotation) if field else None
        if model is None:
            return []
    return list(model.model_fields) if _is_model(model) else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The single BaseModel class inside an annotation like `Foo | None` or `list[Foo]`."""
    if _is_model(annotation):
        return annotation
    found = [m for m in map(_model_in, typing.get_args(annotation)) if m is not None]
    return found[0] if len(found) == 1 else None


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return (
        f" — did you mean '{close[0]}'?"
        if close
        else (f" (expected one of: {', '.join(candidates)})" if candidates else "")
    )


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))
