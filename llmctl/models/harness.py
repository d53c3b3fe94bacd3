"""EleutherAI's lm-eval harness through its Python API: local tasks written as lm-eval task YAML (so they
can be re-run with `lm_eval --include_path`), any llmctl model folder wrapped as an lm-eval model (the stock
`hf` model for PyTorch and INC folders, lm-eval's `openvino` model for OpenVINO folders), results flattened
to `task/metric` keys."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

STRIP = [{"name": "strip", "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}]}]
KIND_OF_FORMAT = {"prompt_completion": "generate", "instruction": "generate", "choice": "choice", "text": "perplexity"}


def write_task(name: str, rows: Any, max_new_tokens: int, stop: list[str], folder: Path) -> Path:
    """Write `rows` (rendered by the data layer) as NAME.jsonl and an lm-eval task NAME.yaml into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    config: dict[str, Any] = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.absolute())}},
        "test_split": "test",
    }
    columns = set(rows.column_names)
    if "choices" in columns:
        config |= {
            "output_type": "multiple_choice",
            "doc_to_text": "{{prompt}}",
            "doc_to_choice": "{{choices}}",
            "doc_to_target": "answer",
            "metric_list": [_metric("acc"), _metric("acc_norm")],
        }
    elif "completion" in columns:
        config |= {
            "output_type": "generate_until",
            "doc_to_text": "{{prompt}}",
            "doc_to_target": "{{completion | trim}}",
            "generation_kwargs": {"until": stop, "do_sample": False, "max_gen_toks": max_new_tokens},
            "filter_list": STRIP,
            "metric_list": [_metric("exact_match")],
        }
    else:
        config |= {
            "output_type": "loglikelihood_rolling",
            "doc_to_text": "{{text}}",
            "doc_to_target": "{{text}}",
            "metric_list": [{"metric": m} for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")],
        }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_task_data(task: str, data: str, folder: Path) -> Path:
    """A task YAML in `folder` that includes built-in `task` and reads its evaluation split from the local file
    `data` (JSON lines, CSV or parquet in the layout of the task's hub dataset) instead of the hub."""
    from lm_eval.tasks._yaml_loader import load_yaml

    from llmctl.data.sources import BUILDERS
    from llmctl.errors import RecipeMismatch

    builtin = builtin_task_yaml(task)
    if builtin is None:
        raise RecipeMismatch(
            f"benchmark.task_data.{task}",
            f"benchmark.task_data.{task}: not a built-in lm-eval task defined by a YAML file",
        )
    source = Path(data).expanduser().absolute()
    if not source.is_file() or source.suffix.lower() not in BUILDERS:
        raise RecipeMismatch(
            f"benchmark.task_data.{task}", f"benchmark.task_data.{task}: {data} is not a file of {', '.join(BUILDERS)}"
        )
    original = load_yaml(builtin, resolve_func=False)
    split = original.get("test_split") or original.get("validation_split") or "test"
    config = {
        "include": str(builtin),
        "task": task,
        "dataset_path": BUILDERS[source.suffix.lower()],
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: str(source)}},
        "training_split": None,
        "fewshot_split": split,
        "validation_split": split if original.get("validation_split") else None,
        "test_split": split if original.get("test_split") else None,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def builtin_task_yaml(task: str) -> Path | None:
    """The YAML file that defines built-in task `task`: a file named after the task is checked first (indexing
    every built-in task takes seconds), then lm-eval's own index."""
    import lm_eval.tasks

    root = Path(lm_eval.tasks.__file__).parent
    for candidate in root.rglob(f"{task}.yaml"):
        if re.search(rf"^task:\s*['\"]?{re.escape(task)}['\"]?\s*$", candidate.read_text(), re.MULTILINE):
            return candidate
    entry = task_manager([], builtin=True)._index.get(task)
    return entry.yaml_path if entry is not None else None


def relocate_tasks(folder: Path, now: Path, later: Path) -> None:
    """Point the task YAMLs in `folder` at their data files' final place (`later` instead of `now`), so that
    `lm_eval --include_path RUN/NN-bench/tasks` works after the stage folder has been renamed into place."""
    for path in folder.glob("*.yaml"):
        config = yaml.safe_load(path.read_text())
        files = config.get("dataset_kwargs", {}).get("data_files", {})
        for split, file in files.items():
            files[split] = str(later / Path(file).relative_to(now)) if Path(file).is_relative_to(now) else file
        path.write_text(yaml.safe_dump(config, sort_keys=False))


def _metric(name: str) -> dict[str, Any]:
    return {"metric": name, "aggregation": "mean", "higher_is_better": True}


def lm_for(ref: str, batch_size: int) -> Any:
    """An lm-eval model for any llmctl model folder (plain, adapter, INC or OpenVINO) or hub id."""
    from lm_eval.models.huggingface import HFLM

    from llmctl.models import causal_lm, quantized

    if quantized.backend_of(ref) == "openvino":
        from lm_eval.models.optimum_lm import OptimumLM

        from llmctl.models.openvino import ov_config

        # the settings `llmctl serve` uses (lm-eval takes them as a JSON file), not the plugin's u8 KV cache
        settings = Path(tempfile.mkdtemp(prefix="llmctl-ov-")) / "ov_config.json"
        settings.write_text(json.dumps(ov_config()))
        return OptimumLM(pretrained=ref, batch_size=batch_size, ov_config=str(settings))
    model, tokenizer = quantized.load_any(ref), causal_lm.load_tokenizer(ref)
    return HFLM(
        pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=causal_lm.context_length(model.config)
    )


def task_manager(include_paths: list[str], builtin: bool) -> Any:
    """lm-eval's task index over `include_paths`, plus the built-in tasks only when some are requested
    (indexing them takes seconds)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_paths or None, include_defaults=builtin)


def run(
    lm: Any, tasks: list[str], manager: Any, num_fewshot: int | None, limit: int | float | None, seed: int
) -> dict[str, Any]:
    """lm_eval.simple_evaluate with seeded sampling and few-shot selection."""
    from lm_eval import simple_evaluate

    return simple_evaluate(
        model=lm,
        tasks=tasks,
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=manager,
        log_samples=False,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        bootstrap_iters=1000,
    )


def flatten(results: dict[str, Any]) -> dict[str, float]:
    """{"toy_add/exact_match": 0.4, "toy_add/exact_match_stderr": 0.05, …} from lm-eval's results."""
    flat: dict[str, float] = {}
    for task, values in results.get("results", {}).items():
        for key, value in values.items():
            if "," in key and isinstance(value, (int, float)):
                flat[f"{task}/{key.split(',')[0]}"] = round(float(value), 6)
    return flat
