"""`--smoke`: the recipe exactly as written — stage chain, templates, columns, formats, LoRA targets, packing,
masks, KL settings, quantization search, gates — cut small enough to finish in minutes on a CPU.

- every model a stage names (hub id or folder) becomes a tiny random model of the same architecture
  (models/tiny.py), with a tokenizer of its family;
- each data source is cut to SMOKE.rows rows, each training stage to SMOKE.steps steps, sequences to
  SMOKE.seq_len tokens, each benchmark to SMOKE.docs documents, a quantization search to its first trials;
- QLoRA without CUDA becomes LoRA, with a warning;
- the run goes to `<run_dir>-smoke` and deploys into `<registry>-smoke`; gates are evaluated and shown but
  do not stop the run (a random model fails them), and lm-eval tasks whose dataset cannot be fetched are
  skipped with one line.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from llmctl.recipe.schema import Recipe
from llmctl.spec.base import split_path, stage_ref_name
from llmctl.spec.data import DataSpec, data_blocks
from llmctl.spec.smokesize import SMOKE, SUFFIX
from llmctl.spec.stage import StageSpec
from llmctl.stages import entry
from llmctl.store.artifacts import ArtifactKind
from llmctl.store.layout import cache_root


def smoke_recipe(recipe: Recipe, cuda_visible: bool) -> tuple[Recipe, list[str]]:
    """The smoke version of `recipe` (models not yet swapped: see `with_tiny_models`) and one line per change
    a user should know of."""
    tree = recipe.model_dump(mode="json")
    notes: list[str] = []
    tree["name"] = recipe.name + SUFFIX
    tree["run_dir"] = str(recipe.layout.run_dir) + SUFFIX
    tree["smoke"] = True
    for spec, stage in zip(recipe.stages, tree["stages"], strict=False):
        _cut_stage(spec, stage, cuda_visible, notes)
    smoked = Recipe.model_validate(tree)
    smoked._from_env = dict(recipe._from_env)
    return smoked, notes


def _cut_stage(spec: StageSpec, stage: dict[str, Any], cuda_visible: bool, notes: list[str]) -> None:
    for path, block in data_blocks(spec):
        _cut_data(block, _at(stage, path))
    if spec.train_args is not None:
        stage["train"] |= {"max_steps": SMOKE.steps, "logging_steps": 1, "eval_steps": None}
    for key in ("max_length", "block_size", "max_prompt_length", "response_length", "calibration_length"):
        if isinstance(stage.get(key), int):
            stage[key] = min(stage[key], SMOKE.seq_len if key != "response_length" else SMOKE.new_tokens)
    if isinstance(stage.get("sample_tokens"), int):
        stage["sample_tokens"] = min(stage["sample_tokens"], SMOKE.new_tokens)
    if (generation := stage.get("generation")) and generation.get("max_new_tokens"):
        generation["max_new_tokens"] = min(generation["max_new_tokens"], SMOKE.new_tokens)
    if (peft := stage.get("peft")) and peft.get("method") == "qlora" and not cuda_visible:
        peft["method"] = "lora"
        notes.append(
            f"stage '{spec.name}': qlora needs a CUDA GPU; the smoke run trains LoRA on a full-precision base instead"
        )
    cut = entry(spec.type).smoke
    if cut is not None:
        cut(stage, SMOKE, notes, spec.name)
    if isinstance(model := stage.get("model"), dict) and isinstance(model.get("config"), dict):
        _cut_inline_model(model, stage)


def _cut_data(block: DataSpec, data: dict[str, Any]) -> None:
    data["limit"] = min(block.limit or SMOKE.rows, SMOKE.rows)
    for source, mixed in zip(block.mix, data["mix"], strict=False):
        mixed["limit"] = min(source.limit or SMOKE.rows, SMOKE.rows)
    if isinstance(block.validation, (int, float)) and not isinstance(block.validation, bool) and block.validation:
        data["validation"] = (
            min(block.validation, SMOKE.held_out) if isinstance(block.validation, int) else SMOKE.held_out
        )


def _cut_inline_model(model: dict[str, Any], stage: dict[str, Any]) -> None:
    """An architecture written in the recipe (pretrain's model.config) at tiny size; its vocabulary is the
    (smoke) tokenizer's."""
    from llmctl.models.tiny import shrink_config

    config = shrink_config(model["config"])
    config.pop("vocab_size", None)
    config.pop("torch_dtype", None)
    model["config"] = config
    tokenizer = stage.get("tokenizer")
    if isinstance(tokenizer, dict) and tokenizer.get("path") is None:
        tokenizer["vocab_size"] = min(tokenizer.get("vocab_size", 8192), 1000)


# ---------------------------------------------------------------- tiny models


MODEL_KINDS = (ArtifactKind.causal_lm, ArtifactKind.adapter, ArtifactKind.reward_model, ArtifactKind.quantized_lm)


def with_tiny_models(
    smoked: Recipe, resolved: dict[str, dict[str, str]], cache: Path | None = None
) -> tuple[Recipe, dict[str, str]]:
    """`smoked` with every model it names outside the run (hub id or folder) swapped for a tiny random model of
    the same architecture; returns the recipe and {original reference: tiny folder}."""
    from llmctl.models import tiny

    cache = cache or smoke_cache()
    tree = smoked.model_dump(mode="json")
    swapped: dict[str, str] = {}
    for spec, stage in zip(smoked.stages, tree["stages"], strict=False):
        texts = functools.cache(lambda spec=spec: stage_texts(spec))  # read once, only if a model is swapped
        for slot_name, slot in spec.inputs().items():
            ref = resolved[spec.name].get(slot_name, "")
            if not ref or stage_ref_name(ref) is not None or not set(slot.accepts) & set(MODEL_KINDS):
                continue
            kind = _tiny_kind(ref, slot.accepts)
            folder = tiny.folder_for(ref, kind, texts(), cache)
            _put(stage, slot.field, str(folder))
            swapped[ref] = str(folder)
        tokenizer = stage.get("tokenizer")
        if isinstance(tokenizer, dict) and tokenizer.get("path"):
            ref = tokenizer["path"]
            tokenizer["path"] = swapped[ref] = str(tiny.folder_for(ref, "tokenizer", texts(), cache))
    out = Recipe.model_validate(tree)
    out._from_env = dict(smoked._from_env)
    return out, swapped


def _tiny_kind(ref: str, accepts: tuple[ArtifactKind, ...]) -> str:
    from llmctl.models import causal_lm, tiny

    if accepts == (ArtifactKind.reward_model,):
        return "classifier"
    return "causal_lm" if tiny.has_causal_lm(causal_lm.load_config(ref).model_type) else "base"


def smoke_cache() -> Path:
    return cache_root() / "smoke-models"


def stage_texts(spec: StageSpec) -> list[str]:
    """Text a tokenizer for this stage is trained on: every string in the first rows of each of its data
    sources (and benchmark task_data files), its templates and its sample prompts — or, for a stage that
    names no data (a built-in benchmark), the demo corpus."""
    from llmctl.data import demo
    from llmctl.data.sources import read_rows

    texts: list[str] = []
    sources = [(b.path, b.query, b.split) for _, block in data_blocks(spec) for b in (block.mix or [block])]
    sources += [(path, None, None) for path in spec.data_files().values()]
    for path, query, split in sources:
        if stage_ref_name(path) is not None:  # rows an earlier stage writes: none yet
            continue
        rows = read_rows(path, query, split)
        for row in rows.select(range(min(len(rows), SMOKE.tokenizer_rows))):
            texts += _strings(row)
    texts += [b.template for _, b in data_blocks(spec) if b.template]
    texts += [s for s in getattr(spec, "samples", []) if isinstance(s, str)]
    return texts or demo.corpus(SMOKE.tokenizer_rows)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


# ---------------------------------------------------------------- paths into blocks and dumped trees


def _at(tree: Any, path: str) -> Any:
    for key in split_path(path):
        tree = tree[key]
    return tree


def _put(tree: Any, path: str, value: Any) -> None:
    keys = split_path(path)
    parent = tree
    for key in keys[:-1]:
        parent = parent[key]
    parent[keys[-1]] = value
