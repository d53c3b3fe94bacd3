"""GGUF through llama.cpp: conversion keeps tokenization and greedy tokens (GPT-2 with a BPE trained here, whose
pre-tokenizer the converter does not know; tiny Llama and Qwen2), `quantize: {backend: gguf}` → benchmark →
deploy with an Ollama Modelfile, accuracy-aware search over GGUF types (validation: test_quantize.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.stages.test_benchmark import bench, tasks  # noqa: F401 - tasks is a fixture
from tests.stages.test_quantize import quantize
from tests.stages.test_sft_reward import data, metrics, recipe, run  # noqa: F401 - data is a fixture

pytestmark = pytest.mark.slow
PROMPTS = ["Once upon a time", "Question: What is 3 plus 4?\n\nAnswer:", "The small cat", "7 plus 9 is"]
TIES = {"f32": 1e-4, "f16": 0.02}
"""Two logits closer than this are a tie that the format's rounding may break either way: tokens are compared up
to the first such step of the PyTorch model's greedy path (a random model's logits lie close together)."""


def tiny_architecture(kind: str, tokenizer_source: Path, folder: Path) -> Path:
    """A random two-layer Llama or Qwen2 with the byte-level BPE trained for `tokenizer_source`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from llmctl.models.causal_lm import load_tokenizer, save

    tokenizer = load_tokenizer(str(tokenizer_source))
    config_class, model_class = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[
        kind
    ]
    config = config_class(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=128,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        save(model_class(config), tokenizer, folder)
    return folder


def agreeing_tokens(source: Path, converted: Path, tie: float, new_tokens: int = 12) -> int:
    """Asserts the GGUF model's greedy tokens equal the PyTorch model's up to the first near-tie of each prompt;
    returns how many tokens were compared."""
    import torch

    from llmctl.models import gguf_runtime
    from llmctl.models.causal_lm import load, load_tokenizer

    tokenizer, original, model = (
        load_tokenizer(str(source)),
        load(str(source)).eval(),
        gguf_runtime.load(str(converted)),
    )
    compared = 0
    for prompt in PROMPTS:
        inputs = tokenizer(prompt, return_tensors="pt", return_token_type_ids=False)
        with torch.no_grad():
            out = original.generate(
                **inputs,
                max_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                output_scores=True,
                return_dict_in_generate=True,
            )
        width = inputs["input_ids"].shape[1]
        expected = out.sequences[0, width:].tolist()
        got = model.generate(**inputs, max_new_tokens=new_tokens, pad_token_id=tokenizer.pad_token_id)[0, width:]
        for step, scores in enumerate(out.scores):
            top = scores[0].topk(2).values
            assert got[step] == expected[step], (prompt, step, expected, got.tolist())
            compared += 1
            if top[0] - top[1] < tie:
                break
        # llama.cpp's own tokenizer (what Ollama and llama-server use) gives the ids the model was trained on
        ids = model.llm.tokenize(prompt.encode(), add_bos=False, special=True)
        assert ids == inputs["input_ids"][0].tolist(), prompt
    return compared


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen2"])
def test_conversion_keeps_tokenization_and_greedy_tokens(kind: str, tiny_lm: Path, tmp_path: Path) -> None:
    from llmctl.models import gguf

    source = tiny_lm if kind == "gpt2" else tiny_architecture(kind, tiny_lm, tmp_path / kind)
    if kind == "gpt2":  # transformers writes n_positions only; the converter reads n_ctx
        assert "n_ctx" not in json.loads((source / "config.json").read_text())
    for fmt in ("f32", "f16"):
        gguf.export(str(source), fmt, tmp_path / f"{kind}-{fmt}")
        assert agreeing_tokens(source, tmp_path / f"{kind}-{fmt}", TIES[fmt]) >= len(PROMPTS) * (
            4 if fmt == "f32" else 1
        )


def test_an_architecture_llama_cpp_cannot_convert_fails_before_any_work(tiny_lm: Path, data: Path) -> None:  # noqa: F811 - pytest fixtures imported from the module that defines them
    """OPT (the course's model) has no llama.cpp converter: exit 2 naming it and the backends that take it."""
    from transformers import OPTConfig, OPTForCausalLM

    from llmctl.models import gguf
    from llmctl.models.causal_lm import load_tokenizer, save

    assert {"GPT2LMHeadModel", "LlamaForCausalLM", "Qwen2ForCausalLM"} <= gguf.supported_architectures()
    tokenizer = load_tokenizer(str(tiny_lm))
    config = OPTConfig(
        hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=len(tokenizer)
    )
    save(OPTForCausalLM(config), tokenizer, data / "opt")
    code, events = run(recipe(data, quantize("q", str(data / "opt"), "backend: gguf")))
    assert code == 2 and "does not take OPTForCausalLM" in events[-1]["message"], events[-1]
    assert "use backend openvino or inc" in events[-1]["message"]
    assert not (data / "runs/t/01-q/output").exists()


def test_gguf_quantize_benchmark_and_deploy_with_a_modelfile(tiny_lm: Path, tasks: Path) -> None:  # noqa: F811 - pytest fixtures imported from the module that defines them
    deploy = "  - type: deploy\n    model: stage:q\n    report: previous\n    model_name: toy\n"
    path = recipe(tasks, quantize("q", str(tiny_lm), "backend: gguf\nformat: q8_0"), bench(), deploy)
    code, events = run(path)
    assert code == 0, events[-1]
    out = tasks / "runs/t/01-q/output"
    assert json.loads((out / "quantization.json").read_text()) | {"backend": "gguf", "format": "q8_0"} == json.loads(
        (out / "quantization.json").read_text()
    )
    result = metrics(tasks, "01-q")
    assert result["size_mb"] < result["size_mb_before"] and result["tokens_per_s"] > 0 and "speedup" in result
    assert "beam_tokens_per_s" not in result  # llama.cpp has no beam search: not measured, not faked
    bench_result = metrics(tasks, "02-bench")
    assert bench_result["choice/acc"] == 1.0 and bench_result["perplexity"] > 1 and "exact/exact_match" in bench_result
    version = tasks / "models/toy/v1"
    assert (version / "model.gguf").is_file() and (version / "tokenizer.json").is_file()
    modelfile = (version / "Modelfile").read_text()
    assert "FROM ./model.gguf\n" in modelfile and 'TEMPLATE """{{ .Prompt }}"""' in modelfile
    assert 'PARAMETER stop "<|endoftext|>"' in modelfile and "PARAMETER num_ctx 64" in modelfile


def test_a_chat_template_becomes_an_ollama_template_with_its_stop_strings(tiny_lm: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from llmctl.data.chat import NAMED
    from llmctl.models import ollama

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    tokenizer.chat_template = NAMED["chatml"]
    template, stops = ollama._ollama_template(tokenizer)
    assert template == (
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"
    )
    assert stops == ["<|im_end|>", "<|endoftext|>"]


ACCURACY = """\
backend: gguf
accuracy:
  metric: perplexity
  data: {path: corpus.jsonl, validation: 0, limit: 40}
  tolerable_loss: 0.0003
  search: [q4_0, q8_0]
"""


def test_accuracy_aware_search_over_gguf_types(tiny_recipe) -> None:
    """A trained tiny model: Q4_0 costs more than 0.03% perplexity, Q8_0 does not; each trial has its size,
    speed and metric. With Q4_0 alone the stage fails with exit 3, listing the trial."""
    from tests.conftest import run_json

    path = tiny_recipe(steps=100, extra=quantize("q", "previous", ACCURACY))
    code, events = run_json(str(path))
    assert code == 0, events[-1]
    result = json.loads((path.parent / "runs/tiny/02-q/metrics.json").read_text())
    first, second = result["trials"]
    assert first["config"]["format"] == "q4_0" and not first["passed"] and first["loss"] > 0.0003
    assert second["config"]["format"] == "q8_0" and second["passed"]
    assert all(t["size_mb"] > 0 and t["tokens_per_s"] > 0 and t["perplexity"] > 1 for t in (first, second))
    assert first["size_mb"] < second["size_mb"] and result["config"]["format"] == "q8_0"
    code, events = run_json(str(path), "stages.q.accuracy.search=[q4_0]")
    assert code == 3 and "gguf Q4_0: perplexity" in events[-1]["message"], events[-1]
