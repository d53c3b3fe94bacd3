"""Shared fixtures: offline Hugging Face, a tiny corpus, and tiny recipes written into a temp folder."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from llmctl import redaction
from llmctl.data.demo import write_corpus

TINY_PRETRAIN = """\
name: {name}
seed: 7
dtype: fp32
stages:
  - type: pretrain
    model:
      config: {{model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 32, n_positions: 64}}
    tokenizer: {{vocab_size: 300}}
    data: {{path: corpus.jsonl, validation: 0.1}}
    block_size: 32
    train: {{max_steps: {steps}, batch_size: 8, lr: 3.0e-3, logging_steps: 5, save_steps: {save_steps}}}
"""


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Any test that reaches for the network fails loudly."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("LLMCTL_CACHE", str(tmp_path_factory.mktemp("llmctl-cache")))
    redaction.forget()  # values hidden for one test's recipe are not hidden in the next one's output


@pytest.fixture
def ov_precision(monkeypatch: pytest.MonkeyPatch):
    """Call with "f32", "bf16" or None (the CPU plugin's choice) to set the OpenVINO inference precision for this
    test: a test can take the AVX2 branch (f32) on an AVX-512-BF16/AMX machine."""
    from llmctl.models import openvino

    def force(precision: str | None) -> None:
        if precision:
            monkeypatch.setenv(openvino.PRECISION_ENV, precision)
        else:
            monkeypatch.delenv(openvino.PRECISION_ENV, raising=False)

    return force


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp working directory holding a small demo corpus (corpus.jsonl); runs/ lands here too."""
    monkeypatch.chdir(tmp_path)
    write_corpus(tmp_path / "corpus.jsonl", rows=300, seed=1)
    return tmp_path


def run_json(*args: str) -> tuple[int, list[dict]]:
    """`llmctl --json run ARGS` in-process: (exit code, events). Every stdout line must be one JSON event."""
    import json

    from typer.testing import CliRunner

    from llmctl.cli import app

    result = CliRunner().invoke(app, ["--json", "run", *args])
    return result.exit_code, [json.loads(line) for line in result.stdout.splitlines()]


def start_json_run(recipe: Path | str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    """`llmctl --json run RECIPE` in a subprocess whose stdout gives one JSON event per line."""
    import os
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "llmctl", "--json", "run", str(recipe)],
        cwd=cwd,
        env=(env or dict(os.environ)) | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def kill_run_at_step(recipe: Path | str, cwd: Path, step: int, sig: int = 9, stage: str | None = None) -> int:
    """Start `llmctl --json run RECIPE` in a subprocess, send `sig` (SIGKILL) once training (of `stage`, or any)
    logs `step`; returns the exit code."""
    import json
    import signal

    proc = start_json_run(recipe, cwd)
    for line in proc.stdout:  # type: ignore[union-attr]
        event = json.loads(line)
        if event["event"] == "progress" and event.get("step", 0) >= step and stage in (None, event["stage"]):
            break
    proc.send_signal(signal.Signals(sig))
    proc.stdout.read()  # type: ignore[union-attr]
    return proc.wait(timeout=60)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def tiny_recipe(workdir: Path):
    """Write a tiny pretrain recipe (optionally with extra stages appended) and return its path."""

    def make(name: str = "tiny", steps: int = 20, save_steps: int = 500, extra: str = "") -> Path:
        return write(
            workdir / f"{name}.yaml", TINY_PRETRAIN.format(name=name, steps=steps, save_steps=save_steps) + extra
        )

    return make


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 saved like a hub checkpoint (config, safetensors, tokenizer), with a trained BPE."""
    return make_tiny_lm(tmp_path_factory.mktemp("tiny-gpt2"), vocab=400)


def make_tiny_lm(folder: Path, vocab: int, positions: int = 64) -> Path:
    """Save a 1-layer GPT-2 (a context of `positions` tokens) and a byte-level BPE of `vocab` tokens trained on
    demo text into `folder`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from llmctl.data.demo import corpus, qa_pairs
    from llmctl.models.causal_lm import save
    from llmctl.models.tokenizers import train_bpe

    tokenizer = train_bpe(corpus(300, seed=5) + [f"{p['question']} {p['answer']}" for p in qa_pairs(300, 5)], vocab)
    config = GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=32,
        n_positions=positions,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    # The same weights whichever test builds it first (they came from the RNG's state then).
    with torch.random.fork_rng():
        torch.manual_seed(0)
        save(GPT2LMHeadModel(config), tokenizer, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gguf(tiny_lm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny_lm` converted to a GGUF folder at f32 by llama.cpp's converter (its logits equal the PyTorch model's
    to float rounding, so the serve contract tests hold on it unchanged)."""
    from llmctl.models import gguf

    folder = tmp_path_factory.mktemp("gguf") / tiny_lm.name
    gguf.export(str(tiny_lm), "f32", folder)
    return folder


@pytest.fixture
def stage_context(tmp_path: Path):
    """Build what a stage's `run(spec, ctx)` takes, to call it directly (no CLI, no pipeline, no run folder):
    `make(stage_dict, inputs={"model": folder}, **recipe_settings)` -> (spec, ctx, events the stage emitted)."""
    from llmctl.recipe.schema import Recipe
    from llmctl.spec.context import StageContext

    def make(stage: dict, inputs: dict | None = None, **settings: object) -> tuple:
        recipe = Recipe.model_validate({"name": "direct", "dtype": "fp32", **settings, "stages": [stage]})
        spec = recipe.stages[0]
        events: list[dict] = []
        ctx = StageContext(
            spec.name, tmp_path / spec.name, recipe.seed, recipe, dict(inputs or {}), None, events.append
        )
        ctx.work_dir.mkdir(parents=True)
        return spec, ctx, events

    return make
