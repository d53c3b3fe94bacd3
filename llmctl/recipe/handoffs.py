"""Checks of a parsed recipe that need no model, no data and no run folder's state: where each stage's inputs
come from (and whether their kinds fit), and settings this machine cannot run. `validate` uses only these, so
it never imports the pipeline (start-up time: see scripts/bench_cli.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from llmctl.errors import Problem, RecipeError
from llmctl.recipe.load import STAGES, LoadedRecipe
from llmctl.spec.base import PREVIOUS, InputSlot, split_path, stage_ref_name
from llmctl.spec.data import data_blocks
from llmctl.spec.stage import StageSpec
from llmctl.store.artifacts import Artifact, ArtifactKind
from llmctl.store.layout import RunLayout, unsafe_run_dir

DATA_SLOT = "data:"  # input slots of data blocks that read an earlier stage's dataset: "data:FIELD.path"
S = TypeVar("S", bound=StageSpec)

if TYPE_CHECKING:
    from llmctl.recipe.schema import Recipe


def resolve_inputs(recipe: Recipe, loaded: LoadedRecipe | None = None) -> dict[str, dict[str, str]]:
    """Map each stage's input slots to `stage:NAME` or an external reference; check kinds before anything runs."""
    run_dir = recipe.layout.run_dir.absolute()
    outputs = {str(RunLayout(run_dir).output_of(i, s.name)): s.name for i, s in enumerate(recipe.stages)}
    problems: list[Problem] = []
    if why := unsafe_run_dir(run_dir):
        problems.append(Problem(loaded.where(("run_dir",)) if loaded else "", "run_dir", why))
    resolved: dict[str, dict[str, str]] = {}
    for index, spec in enumerate(recipe.stages):
        resolved[spec.name] = {}
        for slot, wanted in (spec.inputs() | data_slots(spec)).items():
            ref, error = _resolve_ref(wanted, recipe.stages, index, outputs)
            error = error or _format_problem(spec, wanted, ref, recipe.stages)
            if error:
                where = loaded.where((STAGES, index, *wanted.field.split("."))) if loaded else ""
                problems.append(Problem(where, f"stages[{index}].{wanted.field}", error))
            else:
                resolved[spec.name][slot] = ref
    if problems:
        raise RecipeError(problems, str(loaded.path) if loaded else recipe.name)
    return resolved


def data_slots(spec: StageSpec) -> dict[str, InputSlot]:
    """An input slot for each data source of the stage that names an earlier stage (`path: stage:NAME`, a
    mixture's sources too): it accepts a dataset, and its producer's fingerprint becomes part of this stage's."""
    slots = {}
    for field, block in data_blocks(spec):
        sources = [("path", block.path)] + [(f"mix[{i}].path", source.path) for i, source in enumerate(block.mix)]
        for part, path in sources:
            if stage_ref_name(path) is not None:
                name = field if part == "path" else f"{field}.{part}"  # "data", "data.mix[1].path"
                slots[f"{DATA_SLOT}{name}"] = InputSlot(path, (ArtifactKind.dataset,), f"{field}.{part}")
    return slots


def _format_problem(spec: StageSpec, wanted: InputSlot, ref: str, stages: list[StageSpec]) -> str | None:
    """Why a data block cannot read the rows its producer writes (a preference dataset read as sft rows), or None."""
    producer = next((s for s in stages if f"stage:{s.name}" == ref), None)
    writes = getattr(producer, "dataset_format", None)
    if producer is None or writes is None or ArtifactKind.dataset not in wanted.accepts:
        return None
    parts = split_path(wanted.field)[:-1]
    if "mix" in parts:  # a mixture's sources share its format
        parts = parts[: parts.index("mix")]
    block: Any = spec
    for part in parts:
        block = block[part] if isinstance(part, int) else getattr(block, part)
    if block.format == writes or (block.format == "prompt" and writes == "prompt_completion"):
        return None
    return f"stage '{producer.name}' writes {writes} rows; set format: {writes} here (this block reads {block.format})"


def with_datasets(spec: S, inputs: Mapping[str, Artifact | str]) -> S:
    """`spec` with each `path: stage:NAME` data source pointing at the rows file that stage wrote (what the stage
    reads at run time; its fingerprint was taken with the reference, and the producer's fingerprint with it)."""
    handed = {slot.field: inputs[name] for name, slot in data_slots(spec).items() if name in inputs}
    if not handed:
        return spec
    tree = spec.model_dump(mode="json", exclude_unset=True)  # what the recipe said, so defaults stay defaults
    for field, value in handed.items():
        keys = split_path(field)
        parent: Any = tree
        for key in keys[:-1]:
            parent = parent[key]
        parent[keys[-1]] = value.dataset_file if isinstance(value, Artifact) else value
    return type(spec).model_validate(tree)


def _resolve_ref(
    wanted: InputSlot, stages: list[StageSpec], index: int, outputs: dict[str, str]
) -> tuple[str, str | None]:
    """(`stage:NAME` or the external reference, None) — or ("", why the reference does not fit)."""
    earlier = stages[:index]
    kinds = " or ".join(k.value for k in wanted.accepts)
    if wanted.ref == PREVIOUS:
        match = next((s for s in reversed(earlier) if s.output_kind() in wanted.accepts), None)
        if match is None:
            return (
                "",
                f"'previous' needs an earlier stage that produces {kinds}; there is none — name a model folder or hub id instead",
            )
        return f"stage:{match.name}", None
    target = stage_ref_name(wanted.ref) or outputs.get(str(Path(wanted.ref).absolute()))  # ${stages.X.output} too
    if target is None:
        return wanted.ref, None
    producer = next((s for s in earlier if s.name == target), None)
    if producer is None:
        why = "comes later in the recipe" if any(s.name == target for s in stages[index:]) else "does not exist"
        return "", f"stage '{target}' {why}; earlier stages: {', '.join(s.name for s in earlier) or 'none'}"
    if producer.output_kind() not in wanted.accepts:
        return "", f"stage '{target}' produces {producer.output_kind().value}, but this input accepts {kinds}"
    return f"stage:{target}", None


def environment_problems(recipe: Recipe, loaded: LoadedRecipe | None = None) -> list[Problem]:
    """Settings this machine cannot run (e.g. qlora without CUDA). `validate` and `plan` show them as
    warnings — the recipe may be meant for another machine — and `run` refuses to start."""
    from llmctl.hardware import cuda_visible

    found = []
    for index, spec in enumerate(recipe.stages):
        for field_path, message in spec.check_environment(cuda_visible()):
            where = loaded.where((STAGES, index, *field_path.split("."))) if loaded else ""
            found.append(Problem(where, f"stages[{index}].{field_path}", message))
    return found


def data_problems(recipe: Recipe, loaded: LoadedRecipe | None = None) -> list[Problem]:
    """Local data files and globs that name nothing (checked by `validate`, `plan` and `run` before anything
    loads, instead of failing a stage 14 s in). URIs (hub://, s3://, hf://, demo://…) are read later, and a
    path inside the run folder may be written by an earlier stage."""
    from llmctl.spec.base import split_path
    from llmctl.spec.data import data_blocks

    run_dir = recipe.layout.run_dir.absolute()
    found = []
    for index, spec in enumerate(recipe.stages):
        paths = [(f"{field}.{part}", path) for field, block in data_blocks(spec) for part, path in _local_paths(block)]
        paths += [(field, path) for field, path in spec.data_files().items()]
        for field_path, path in paths:
            if "://" in path.removeprefix("file://") or not path or _names_something(path, run_dir):
                continue
            where = loaded.where((STAGES, index, *split_path(field_path))) if loaded else ""
            message = (
                f"no file or folder matches {path!r} (relative paths start in the working directory, {Path.cwd()})"
            )
            if _read_before(run_dir, spec.name, path):  # not a typo: data the pipeline used is gone
                message = (
                    f"{path!r} is gone: the last run of stage '{spec.name}' read it (deleted or moved?); restore it, "
                    f"or point the recipe at its new place"
                )
            found.append(Problem(where, f"stages[{index}].{field_path}", message))
    return found


def _read_before(run_dir: Path, stage: str, path: str) -> bool:
    """Whether the run folder's last run of `stage` read data from `path` (its manifest names the file)."""
    from llmctl.store.layout import MANIFEST

    if not (run_dir / MANIFEST).is_file():
        return False
    from llmctl.store.manifest import Manifest

    try:
        sources = Manifest.load(run_dir).stage(stage).data.values()
    except Exception:  # noqa: BLE001 - a damaged manifest only loses the finer message
        return False
    plain = path.removeprefix("file://")
    return any(isinstance(s, dict) and (s.get("uri") == plain or plain in (s.get("files") or {})) for s in sources)


def _local_paths(block: Any) -> list[tuple[str, str]]:
    """(field, path) of a data block's own sources: path, a validation file, each mixed source's path."""
    found = [("path", block.path)] if block.path else []
    if isinstance(block.validation, str):
        found.append(("validation", block.validation))
    return found + [
        (f"mix[{i}].{part}", path) for i, source in enumerate(block.mix) for part, path in _local_paths(source)
    ]


def _names_something(path: str, run_dir: Path) -> bool:
    import glob

    if stage_ref_name(path) is not None:  # an earlier stage writes it (resolve_inputs checks that one does)
        return True
    local = Path(path.removeprefix("file://")).expanduser()
    if local.absolute().is_relative_to(run_dir) or local.exists():
        return True
    return bool(glob.glob(str(local), recursive=True))
