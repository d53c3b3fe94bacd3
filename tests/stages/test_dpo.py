"""dpo (DPO and its loss variants, KTO, ORPO, SimPO) on a tiny GPT-2: each algorithm trains, reports the
trainer's preference metrics and hands on a loadable model; LoRA's implicit reference, a named reference,
resume after kill -9 and SIGTERM, and the recipe errors."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app
from tests.conftest import kill_run_at_step
from tests.stages.test_sft_reward import data, metrics, recipe, run, sft  # noqa: F401 - data is a fixture

pytestmark = pytest.mark.slow

DPO = """\
  - type: dpo
    model: {model}
    algorithm: {algorithm}
    data: {{path: prefs.jsonl, format: preference, validation: 16}}
    peft: {peft}
    max_length: 48
    train: {{max_steps: {steps}, batch_size: 8, lr: 1.0e-3, logging_steps: 2, save_steps: {save}}}
    eval_set: {{path: qa.jsonl, limit: 8, columns: {{prompt: question, completion: answer}},
                template: "Question: {{prompt}}\\n\\nAnswer: {{completion}}", max_new_tokens: 3}}
    samples: ["Question: What is 3 plus 4?\\n\\nAnswer:"]
    sample_tokens: 4
{extra}"""


def dpo(
    model: str = "previous",
    algorithm: str = "dpo",
    peft: str = "{method: lora, r: 4, alpha: 8}",
    steps: int = 4,
    save: int = 500,
    extra: str = "",
) -> str:
    return DPO.format(model=model, algorithm=algorithm, peft=peft, steps=steps, save=save, extra=extra)


@pytest.mark.parametrize(
    ("algorithm", "extra"),
    [("dpo", ""), ("dpo", "    loss_type: ipo\n"), ("kto", ""), ("orpo", ""), ("simpo", "")],
    ids=["dpo-sigmoid", "dpo-ipo", "kto", "orpo", "simpo"],
)
def test_each_algorithm_trains_and_hands_on_a_model(tiny_lm: Path, data: Path, algorithm: str, extra: str) -> None:  # noqa: F811 - pytest fixtures imported from the module that defines them
    from transformers import AutoModelForCausalLM

    code, events = run(
        recipe(data, sft("sft", str(tiny_lm), "{method: none}", steps=2), dpo(algorithm=algorithm, extra=extra))
    )
    assert code == 0, events[-1]
    result = metrics(data, "02-dpo")
    assert {"exact_match_before", "exact_match", "train_loss", "steps"} <= result.keys() and result["steps"] == 4
    paired = {"eval_reward_accuracy"} if algorithm != "kto" else set()  # KTO's rows are unpaired
    assert {"eval_reward_margin", "eval_reward_chosen", "eval_loss"} | paired <= result.keys(), result
    (sample,) = result["samples"]
    assert {"before", "output"} <= sample.keys()
    artifact = json.loads((data / "runs/t/02-dpo/artifact.json").read_text())
    assert artifact["kind"] == "causal_lm" and artifact["meta"]["algorithm"] == algorithm
    AutoModelForCausalLM.from_pretrained(data / "runs/t/02-dpo/output")


def test_whole_dialogue_pairs_get_their_shared_start_as_the_prompt(tiny_lm: Path, data: Path) -> None:  # noqa: F811 - pytest fixtures imported from the module that defines them
    """Anthropic HH rows (chosen/rejected hold the whole dialogue, no prompt column): TRL extracts the prompt."""
    hh = Path(__file__).resolve().parents[1] / "assets" / "anthropic_hh.jsonl"
    body = (
        dpo(str(tiny_lm), peft="{method: none}", steps=2)
        .replace("path: prefs.jsonl", f"path: {hh}")
        .replace("validation: 16", "validation: 8")
    )
    code, events = run(recipe(data, body))
    assert code == 0, events[-1]
    assert "eval_reward_accuracy" in metrics(data, "01-dpo")
    # The tiny model has 64 positions
    code, events = run(recipe(data, body.replace("max_length: 48", "max_length: 128")))
    assert code == 2 and "max_length 128 exceeds the model's context of 64 positions" in events[-1]["message"]
    # Found at run time
    assert events[-1]["type"] == "RecipeMismatch" and events[-1]["message"].startswith("stage 'dpo': ")


def test_conversational_pairs_are_rendered_with_the_chat_template(tiny_lm: Path, data: Path) -> None:  # noqa: F811 - pytest fixtures imported from the module that defines them
    """Rows whose prompt/chosen/rejected are lists of turns go through the chat template (chatml named here:
    the tiny tokenizer has none of its own)."""
    rows = [
        {
            "prompt": [{"role": "user", "content": f"What is {i} plus 1?"}],
            "chosen": [{"role": "assistant", "content": str(i + 1)}],
            "rejected": [{"role": "assistant", "content": f"I think it is {i + 1}, since {i} plus 1 is {i + 1}."}],
        }
        for i in range(40)
    ]
    (data / "turns.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    body = dpo(str(tiny_lm), peft="{method: none}", steps=2).replace(
        "{path: prefs.jsonl, format: preference, validation: 16}",
        "{path: turns.jsonl, format: preference, validation: 8, chat_template: chatml}",
    )
    code, events = run(recipe(data, body.replace("max_length: 48", "max_length: 64")))
    assert code == 0, events[-1]
    assert "eval_reward_accuracy" in metrics(data, "01-dpo")


def test_full_fine_tune_with_a_named_reference_and_an_adapter_output(tiny_lm: Path, data: Path) -> None:  # noqa: F811 - pytest fixtures imported from the module that defines them
    stages = [
        sft("sft", str(tiny_lm), "{method: none}", steps=2),
        dpo(peft="{method: none}", extra=f"    reference: {tiny_lm}\n    precompute_ref_log_probs: true\n"),
        dpo(peft="{method: lora, r: 4, alpha: 8, merge: false}").replace("type: dpo", "type: dpo\n    name: dpo-lora"),
    ]
    code, events = run(recipe(data, *stages))
    assert code == 0, events[-1]
    assert {s["stage"]: s["inputs"] for s in events[0]["steps"]}["dpo"] == {
        "model": "stage:sft",
        "reference": str(tiny_lm),
    }
    assert json.loads((data / "runs/t/03-dpo-lora/artifact.json").read_text())["kind"] == "adapter"


def test_plan_counts_the_reference_copy(tiny_lm: Path) -> None:
    from transformers import AutoModelForCausalLM

    from llmctl.models.causal_lm import load_config
    from llmctl.run.estimate import estimate_stage
    from llmctl.stages.dpo import DPOSpec

    def memory(**fields: object) -> float:
        spec = DPOSpec(model=str(tiny_lm), data={"path": "p.jsonl", "format": "preference"}, **fields)
        return estimate_stage(spec, load_config(str(tiny_lm)), "fp32").memory_gib

    full, orpo, lora = memory(peft={"method": "none"}), memory(peft={"method": "none"}, algorithm="orpo"), memory()
    total = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_lm).parameters())
    assert full - orpo == pytest.approx(total * 4 / 2**30)  # DPO keeps a frozen fp32 copy; ORPO has no reference
    assert lora < orpo  # LoRA's reference is the base with the adapter off


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_resume_after_a_kill(tiny_lm: Path, data: Path, sig: int) -> None:  # noqa: F811 - pytest fixtures imported from the module that defines them
    path = recipe(data, dpo(str(tiny_lm), peft="{method: none}", steps=12, save=3))
    code = kill_run_at_step(path, data, 7, sig)
    assert code == (130 if sig == signal.SIGTERM else -9) and not (data / "runs/t/01-dpo").exists()
    code, events = run(path)
    assert code == 0 and [e["action"] for e in events if e["event"] == "stage_start"] == ["resume"], events[-1]
    assert metrics(data, "01-dpo")["steps"] == 12


@pytest.mark.parametrize(
    ("algorithm", "extra", "message"),
    [
        ("dpo", "    loss_type: sigmod\n", "did you mean 'sigmoid'?"),
        ("orpo", "    reference: gpt2\n", "orpo uses no reference model"),
        ("kto", "    label_smoothing: 0.1\n", "label_smoothing applies to algorithm dpo"),
    ],
)
def test_recipe_errors(data: Path, algorithm: str, extra: str, message: str) -> None:  # noqa: F811 - pytest fixtures imported from the module that defines them
    body = dpo("gpt2", algorithm, extra=extra)
    result = CliRunner().invoke(app, ["validate", str(recipe(data, body))])
    assert result.exit_code == 2 and message in result.output, result.output


def test_dpo_needs_preference_data(data: Path) -> None:  # noqa: F811 - pytest fixtures imported from the module that defines them
    body = dpo("gpt2").replace(
        "format: preference", "format: prompt_completion, columns: {prompt: question, completion: answer}"
    )
    result = CliRunner().invoke(app, ["validate", str(recipe(data, body.replace("prefs.jsonl", "qa.jsonl")))])
    assert result.exit_code == 2 and "dpo trains on format: preference data" in result.output
