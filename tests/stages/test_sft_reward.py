"""sft and reward on a tiny GPT-2: full and LoRA fine-tuning, merged and unmerged adapters, reward models
from a folder and from the previous stage, and the recipe errors these stages must catch early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app
from llmctl.data.demo import preference_pairs, qa_pairs
from tests.conftest import kill_run_at_step, run_json

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture
def data(workdir: Path) -> Path:
    (workdir / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_pairs(200, 1)))
    (workdir / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in preference_pairs(200, 2)))
    return workdir


SFT = """\
  - type: sft
    name: {name}
    model: {model}
    data: {{path: qa.jsonl, format: prompt_completion, columns: {{prompt: question, completion: answer}},
            template: "Question: {{prompt}}\\n\\nAnswer: {{completion}}", completion_only: true, validation: 0.1}}
    peft: {peft}
    max_length: 48
    train: {{max_steps: {steps}, batch_size: 8, lr: 1.0e-3, logging_steps: 2, save_steps: {save}}}
    eval_set: {{path: qa.jsonl, limit: 10, columns: {{prompt: question, completion: answer}},
                template: "Question: {{prompt}}\\n\\nAnswer: {{completion}}", max_new_tokens: 3}}
"""
REWARD = """\
  - type: reward
    name: {name}
    model: {model}
    data: {{path: prefs.jsonl, format: preference, validation: 0.2}}
    max_length: 48
    train: {{max_steps: 6, batch_size: 8, lr: 1.0e-3, logging_steps: 2}}
"""


def recipe(folder: Path, *stages: str) -> Path:
    path = folder / "recipe.yaml"
    path.write_text("name: t\nseed: 5\ndtype: fp32\nstages:\n" + "".join(stages))
    return path


def sft(
    name: str = "sft",
    model: str = "previous",
    peft: str = "{method: lora, r: 4, alpha: 8}",
    steps: int = 6,
    save: int = 500,
) -> str:
    return SFT.format(name=name, model=model, peft=peft, steps=steps, save=save)


def run(path: Path, *args: str) -> tuple[int, list[dict]]:
    return run_json(str(path), *args)


def metrics(workdir: Path, folder: str) -> dict:
    return json.loads((workdir / "runs/t" / folder / "metrics.json").read_text())


def test_full_and_lora_sft_then_reward_from_previous(tiny_lm: Path, data: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    path = recipe(
        data, sft("full", str(tiny_lm), "{method: none}"), sft("lora"), REWARD.format(name="rm", model="previous")
    )
    code, events = run(path)
    assert code == 0, events[-1]
    full, lora, reward = metrics(data, "01-full"), metrics(data, "02-lora"), metrics(data, "03-rm")
    assert full["steps"] == lora["steps"] == 6 and full["last_logged_loss"] < full["first_logged_loss"]
    assert {"exact_match_before", "exact_match", "eval_loss", "perplexity"} <= lora.keys()
    assert 0 <= reward["pairwise_accuracy"] <= 1 and "mean_margin" in reward
    merged = data / "runs/t/02-lora/output"
    assert not (merged / "adapter_config.json").exists()  # merge: true hands on a standalone model
    AutoModelForCausalLM.from_pretrained(merged)
    scorer = AutoModelForSequenceClassification.from_pretrained(data / "runs/t/03-rm/output")
    assert scorer.config.num_labels == 1
    inputs = {s["stage"]: s["inputs"] for s in events[0]["steps"]}
    assert inputs == {"full": {"model": str(tiny_lm)}, "lora": {"model": "stage:full"}, "rm": {"model": "stage:lora"}}


def test_unmerged_adapter_feeds_downstream_stages(tiny_lm: Path, data: Path) -> None:
    from peft import AutoPeftModelForCausalLM

    path = recipe(
        data,
        sft("adapter", str(tiny_lm), "{method: lora, r: 4, alpha: 8, merge: false}"),
        REWARD.format(name="rm", model="previous"),
        sft("again"),
    )
    code, events = run(path)
    assert code == 0, events[-1]
    adapter = data / "runs/t/01-adapter/output"
    assert (adapter / "adapter_config.json").exists() and not (adapter / "model.safetensors").exists()
    assert json.loads((data / "runs/t/01-adapter/artifact.json").read_text())["kind"] == "adapter"
    AutoPeftModelForCausalLM.from_pretrained(adapter)
    assert metrics(data, "03-again")["steps"] == 6  # 'previous' skipped the reward model, found the adapter


def test_reward_from_a_hub_style_folder(tiny_lm: Path, data: Path) -> None:
    code, events = run(recipe(data, REWARD.format(name="rm", model=str(tiny_lm))))
    assert code == 0, events[-1]
    assert "pairwise_accuracy" in metrics(data, "01-rm")


def test_sft_resume_after_kill_matches_an_uninterrupted_run(tiny_lm: Path, data: Path) -> None:
    path = recipe(data, sft("sft", str(tiny_lm), steps=16, save=4))
    kill_run_at_step(path, data, 9)
    assert not (data / "runs/t/01-sft").exists()
    code, events = run(path)
    assert code == 0 and [e["action"] for e in events if e["event"] == "stage_start"] == ["resume"]
    code, _ = run(path, "run_dir=runs/straight")
    straight = json.loads((data / "runs/straight/01-sft/metrics.json").read_text())
    resumed = metrics(data, "01-sft")
    assert resumed["steps"] == straight["steps"] == 16
    assert resumed["resumed_at_step"] == 8 and "resumed_at_step" not in straight  # its speed: the last 8 steps
    assert resumed["eval_loss"] == pytest.approx(straight["eval_loss"], rel=1e-4)
    # The headline loss covers all 16 steps, not only the 8 run after the resume
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-3)
    # and the stage's duration both attempts
    ended = next(e for e in events if e["event"] == "stage_end")
    began = next(e for e in events if e["event"] == "stage_start")
    from datetime import datetime

    attempt = (datetime.fromisoformat(ended["time"]) - datetime.fromisoformat(began["time"])).total_seconds()
    assert ended["duration_s"] > attempt + 0.5


def test_qlora_without_cuda_warns_at_validate_and_refuses_to_run(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMCTL_ASSUME_CUDA", "0")
    path = recipe(data, sft("sft", "gpt2", "{method: qlora}"))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0  # the recipe is fine — for a machine with a GPU
    assert "warning:" in result.output and f"{path}:10:" in result.output
    assert "stages[0].peft.method: qlora needs a CUDA GPU" in result.output and "use method: lora" in result.output
    result = runner.invoke(app, ["run", str(path)])
    assert (
        result.exit_code == 2
        and "cannot run on this machine" in result.output
        and "qlora needs a CUDA GPU" in result.output
    )
    left = {p.name for p in (data / "runs" / "t").iterdir()}
    assert left - {"firings"} == {"history.jsonl"}  # the refusal, recorded (its firing marker gone)
    assert not list((data / "runs" / "t" / "firings").glob("*"))


def test_preference_data_without_rejected_fails_before_the_model_loads(tiny_lm: Path, data: Path) -> None:
    (data / "prefs.jsonl").write_text(json.dumps({"prompt": "Q", "chosen": " 1"}) + "\n")  # no rejected
    result = runner.invoke(app, ["run", str(recipe(data, REWARD.format(name="rm", model=str(tiny_lm))))])
    assert result.exit_code == 2
    assert "format 'preference' needs column rejected; available: prompt, chosen" in result.output
    assert not (data / "runs/t/01-rm.tmp/logs/stage.log").exists()  # nothing was loaded or logged


def test_missing_target_module_fails_at_plan(tiny_lm: Path, data: Path) -> None:
    path = recipe(data, sft("sft", str(tiny_lm), "{method: lora, target_modules: [q_proj]}"))
    result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code == 2
    assert "peft.target_modules: q_proj not found in GPT2LMHeadModel" in result.output and "c_attn" in result.output


def test_plan_counts_lora_parameters_of_opt_1_3b_from_its_config() -> None:
    root = Path(__file__).resolve().parents[2]
    result = runner.invoke(app, ["--json", "plan", str(root / "recipes/sft_lima.yaml")])
    assert result.exit_code == 0, result.output
    step = json.loads(result.stdout)["steps"][0]
    assert (step["trainable_parameters"], step["parameters"]) == (3_145_728, 1_318_903_808)


@pytest.mark.parametrize(("dtype", "saved_gib"), [("fp32", 3), ("bf16", 1.5)])
def test_plan_memory_follows_max_length_gradient_checkpointing_and_4bit_weights(dtype: str, saved_gib: float) -> None:
    """The estimate uses each stage's own sequence length (it once assumed 512 tokens for every sft stage). The
    dtype is set, not `auto`: auto is bf16 on AVX-512-BF16/AMX CPUs and fp32 on AVX2, and 4-bit weights save
    less against 16-bit ones than against 32-bit ones."""
    root = Path(__file__).resolve().parents[2]

    def memory(*overrides: str) -> float:
        result = runner.invoke(
            app, ["--json", "plan", str(root / "recipes/sft_lima.yaml"), f"dtype={dtype}", *overrides]
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.splitlines()[-1])["steps"][0]["memory_gib"]  # after any warning lines

    plain = "stages.sft.train.gradient_checkpointing=false"
    short, long = memory(plain, "stages.sft.max_length=256"), memory(plain, "stages.sft.max_length=2048")
    assert long - short > 10  # activations grow with the sequence: 1.3B at 2048 tokens × batch 4
    # The recipe's gradient checkpointing keeps one input per layer
    assert memory("stages.sft.max_length=2048") < long / 2
    # 1.3B frozen weights at 4 bits instead of 32 or 16
    assert memory("stages.sft.peft.method=qlora") < memory() - saved_gib


def test_completion_only_masks_exactly_the_prompt(tiny_lm: Path, data: Path) -> None:
    """Our prompt/completion split + TRL's tokenization: the labels are the answer tokens and EOS, nothing else."""
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from llmctl.data.sources import load_examples
    from llmctl.models.causal_lm import load_tokenizer
    from llmctl.spec.data import DataSpec

    spec = DataSpec(
        path="qa.jsonl",
        format="prompt_completion",
        columns={"prompt": "question", "completion": "answer"},
        template="Question: {prompt}\n\nAnswer: {completion}",
        completion_only=True,
        validation=0,
        shuffle=False,
    )
    rows, _ = load_examples(spec, seed=0)
    tokenizer = load_tokenizer(str(tiny_lm))
    config = SFTConfig(
        output_dir=str(data / "ckpt"), completion_only_loss=True, max_length=48, report_to="none", use_cpu=True
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_lm),
        args=config,
        train_dataset=rows.select(range(5)),
        processing_class=tokenizer,
    )
    for example, row in zip(trainer.train_dataset, rows, strict=False):
        ids, mask = example["input_ids"], [label != -100 for label in example["labels"]]
        trained = tokenizer.decode([i for i, m in zip(ids, mask, strict=False) if m])
        assert trained == row["completion"] + tokenizer.eos_token
        assert tokenizer.decode([i for i, m in zip(ids, mask, strict=False) if not m]) == row["prompt"]


def test_too_long_rows_are_counted_dropped_or_refused_and_padding_is_estimated(tiny_lm: Path, data: Path) -> None:
    long_row = {"question": "What is " + "1 plus " * 40 + "1?", "answer": "41"}
    with open(data / "qa.jsonl", "a") as handle:
        handle.write(json.dumps(long_row) + "\n")
    base = sft("sft", str(tiny_lm), "{method: none}", steps=2)
    code, _ = run(recipe(data, base.replace("validation: 0.1}", "validation: 0.1, too_long: drop}")))
    assert code == 0 and metrics(data, "01-sft")["too_long_rows"] == 1
    assert 0 < metrics(data, "01-sft")["padding_unpacked"] < 1  # the long row pads its batch
    result = runner.invoke(
        app, ["run", str(recipe(data, base.replace("validation: 0.1}", "validation: 0.1, too_long: error}")))]
    )
    assert result.exit_code == 2 and "1 of 181 rows are longer than max_length=48 tokens" in result.output


SHAREGPT = [
    {"conversations": [{"from": "human", "value": f"What is {i} plus 1?"}, {"from": "gpt", "value": str(i + 1)}]}
    for i in range(24)
]


def test_sharegpt_chat_trains_on_assistant_turns_with_a_named_template(tiny_lm: Path, data: Path) -> None:
    """ShareGPT rows (from/value) become messages; chatml renders them; completion_only masks all but the
    assistant turns (TRL's assistant_only_loss); the template is saved with the model, so serving chats alike."""
    from transformers import AutoTokenizer

    from llmctl.data.chat import CHATML

    (data / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in SHAREGPT))
    body = sft("sft", str(tiny_lm), steps=2).replace(
        """data: {path: qa.jsonl, format: prompt_completion, columns: {prompt: question, completion: answer},
            template: "Question: {prompt}\\n\\nAnswer: {completion}", completion_only: true, validation: 0.1}""",
        "data: {path: chat.jsonl, format: chat, columns: {messages: conversations}, chat_template: chatml, completion_only: true, validation: 4}",
    )
    assert "chat.jsonl" in body
    code, events = run(recipe(data, body.replace("max_length: 48", "max_length: 64")))
    assert code == 0, events[-1]
    assert AutoTokenizer.from_pretrained(data / "runs/t/01-sft/output").chat_template == CHATML
    code, events = run(
        recipe(data, body.replace(", chat_template: chatml", "").replace("max_length: 48", "max_length: 64"))
    )
    assert code == 2 and "has no chat template; name one" in events[-1]["message"]
