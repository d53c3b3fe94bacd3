"""quantize on a tiny GPT-2: INC (RTN, GPTQ, AWQ) and OpenVINO (int8, int4) artifacts load and generate and
stay close to the original; accuracy-aware search picks a passing configuration or fails with exit 3;
unsupported combinations are rejected by `validate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app
from tests.stages.test_sft_reward import data, metrics, recipe, run, sft  # noqa: F401 - data is a fixture

pytestmark = pytest.mark.slow
PROMPTS = ["Question: What is 3 plus 4?\n\nAnswer:", "The small cat", "7 plus 9 is"]
SPEED = "speed: {prompts: ['The small cat'], new_tokens: 4, beams: 2}"


def quantize(name: str, model: str, settings: str) -> str:
    return f"  - type: quantize\n    name: {name}\n    model: {model}\n    {SPEED}\n" + "".join(
        f"    {line}\n" for line in settings.strip().splitlines()
    )


def closeness(original: Path, quantized: Path) -> tuple[float, float]:
    """(mean |Δlogit| / std of the original's logits, share of next-token argmaxes that agree) on PROMPTS."""
    import torch

    from llmctl.models.causal_lm import load, load_tokenizer
    from llmctl.models.quantized import load_any

    tokenizer, base, other = load_tokenizer(str(original)), load(str(original)).eval(), load_any(str(quantized))
    diffs, agree, total = [], 0, 0
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = tokenizer(prompt, return_tensors="pt", return_token_type_ids=False)
            a, b = base(**ids).logits, other(**ids).logits
            diffs.append(((a - b).abs().mean() / a.std()).item())
            agree += (a.argmax(-1) == b.argmax(-1)).sum().item()
            total += a.shape[1]
    generated = other.generate(
        **tokenizer(PROMPTS[0], return_tensors="pt", return_token_type_ids=False),
        max_new_tokens=3,
        min_new_tokens=3,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    assert generated.shape[1] == len(tokenizer(PROMPTS[0])["input_ids"]) + 3
    return sum(diffs) / len(diffs), agree / total


# (backend settings, largest mean |Δlogit|/std, least argmax agreement): stated tolerances per width.
CASES = {
    "inc-rtn8": ("backend: inc\nmethod: rtn\nbits: 8", 0.02, 0.95),
    "inc-rtn4": ("backend: inc\nmethod: rtn\nbits: 4\ngroup_size: 16", 0.25, 0.6),
    "inc-gptq4": (
        "backend: inc\nmethod: gptq\nbits: 4\ngroup_size: 16\ncalibration: {path: qa.jsonl, format: prompt_completion, "
        "columns: {prompt: question, completion: answer}, validation: 0}\ncalibration_samples: 8",
        0.25,
        0.6,
    ),
    "inc-awq4": (
        "backend: inc\nmethod: awq\nbits: 4\ngroup_size: 16\ncalibration: {path: qa.jsonl, format: prompt_completion, "
        "columns: {prompt: question, completion: answer}, validation: 0}\ncalibration_samples: 8",
        0.25,
        0.6,
    ),
    "ov-int8": ("backend: openvino\nbits: 8", 0.02, 0.95),
    "ov-int4": ("backend: openvino\nbits: 4\ngroup_size: 16\nsym: true", 0.25, 0.6),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_backend_and_method_loads_generates_and_stays_close(tiny_lm: Path, data: Path, case: str) -> None:  # noqa: F811 - pytest fixtures imported from the module that defines them
    settings, max_diff, min_agree = CASES[case]
    code, events = run(recipe(data, quantize("q", str(tiny_lm), settings)))
    assert code == 0, events[-1]
    out = data / "runs/t/01-q/output"
    descriptor = json.loads((out / "quantization.json").read_text())
    assert descriptor["backend"] == case.split("-")[0].replace("ov", "openvino") and descriptor["model_type"] == "gpt2"
    assert json.loads((data / "runs/t/01-q/artifact.json").read_text())["kind"] == "quantized_lm"
    diff, agree = closeness(tiny_lm, out)
    assert diff <= max_diff and agree >= min_agree, (diff, agree)
    result = metrics(data, "01-q")
    weights = out / ("openvino_model.bin" if case.startswith("ov") else "quantized_weight.pt")
    assert weights.stat().st_size < (tiny_lm / "model.safetensors").stat().st_size  # (the OpenVINO xml is not counted)
    assert result["size_mb"] > 0 and result["size_mb_before"] > 0
    assert {"tokens_per_s", "tokens_per_s_before", "beam_tokens_per_s", "ms_per_token", "speedup"} <= result.keys()


ACCURACY = """\
backend: inc
accuracy:
  metric: perplexity
  data: {{path: corpus.jsonl, validation: 0, limit: 40}}
  tolerable_loss: {tolerance}
  search: [{search}]
"""


def test_accuracy_aware_search_keeps_the_first_passing_config_and_fails_with_exit_3(tiny_recipe) -> None:
    """A trained tiny model: int4 per-channel costs perplexity, int8 does not (within 5%)."""
    search = "{method: rtn, bits: 4, group_size: -1, sym: true}, {method: rtn, bits: 8, group_size: -1}"
    path = tiny_recipe(steps=100, extra=quantize("q", "previous", ACCURACY.format(tolerance=0.0005, search=search)))
    code, events = run_json_recipe(path)
    assert code == 0, events[-1]
    result = json.loads((path.parent / "runs/tiny/02-q/metrics.json").read_text())
    first, second = result["trials"]
    assert not first["passed"] and first["loss"] > 0.0005 and second["passed"] and second["loss"] <= 0.0005
    assert result["config"]["bits"] == 8 and result["perplexity"] == second["perplexity"]
    assert "perplexity_before" in result

    code, events = run_json_recipe(path, "stages.q.accuracy.search=[{method: rtn, bits: 4, group_size: -1, sym: true}]")
    assert code == 3
    assert (
        "no configuration stayed within tolerable_loss" in events[-1]["message"]
        and "rtn int4 per-channel sym" in events[-1]["message"]
    )


def test_an_accuracy_baseline_of_zero_is_refused(tiny_recipe, data: Path) -> None:  # noqa: F811 - pytest fixtures imported from the module that defines them
    """A metric the unquantized model scores 0 on passes every configuration: exit 2 saying so (the course's
    SQuAD check asked without its context did exactly that)."""
    settings = (
        "backend: inc\naccuracy:\n  metric: f1\n  max_new_tokens: 2\n  data: {path: qa.jsonl, format: prompt_completion, "
        "columns: {prompt: question, completion: answer}, validation: 0, limit: 6}"
    )
    code, events = run_json_recipe(tiny_recipe(steps=1, extra=quantize("q", "previous", settings)))
    assert code == 2 and "scores f1 0 on accuracy.data, so every configuration would pass" in events[-1]["message"], (
        events[-1]
    )


def run_json_recipe(path: Path, *overrides: str) -> tuple[int, list[dict]]:
    from tests.conftest import run_json

    return run_json(str(path), *overrides)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("backend: inc\nmethod: gptq", "method gptq needs calibration data"),
        ("backend: inc\nmethod: static", "intel-extension-for-pytorch"),
        ("backend: inc\nmethod: dynamic", "torch.export"),
        ("backend: openvino\nmethod: rtn", "backend openvino supports method weight_only, not rtn"),
        ("backend: inc\ngroup_size: 0", "group_size is a positive number"),
        ("backend: inc\nbits: 8\nsym: false", "asymmetric 8-bit weight-only quantization is broken"),
        ("backend: openvino\naccuracy: {data: {path: c.jsonl}, search: [q4_k_m]}", "set backend: gguf"),
        ("backend: gguf\nformat: q3_k_xl", "format"),
        ("backend: gguf\nmethod: rtn", "backend gguf supports method llama_quantize, not rtn"),
    ],
)
def test_unsupported_combinations_fail_validation(data: Path, settings: str, message: str) -> None:  # noqa: F811 - pytest fixtures imported from the module that defines them
    result = CliRunner().invoke(app, ["validate", str(recipe(data, quantize("q", "some/model", settings)))])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "recipe.yaml:" in result.output  # located in the file


def test_an_unmerged_adapter_is_merged_before_quantizing(tiny_lm: Path, data: Path) -> None:  # noqa: F811 - pytest fixtures imported from the module that defines them
    path = recipe(
        data,
        sft("adapter", str(tiny_lm), "{method: lora, r: 4, alpha: 8, merge: false}", steps=2),
        quantize("q", "previous", "backend: inc\nbits: 8"),
    )
    code, events = run(path)
    assert code == 0, events[-1]
    assert not (data / "runs/t/02-q/merged").exists() and (data / "runs/t/02-q/output/quantized_weight.pt").exists()
    logs = [e["message"] for e in events if e["event"] == "log" and e["stage"] == "q"]
    assert any("merged the adapter" in line for line in logs)
