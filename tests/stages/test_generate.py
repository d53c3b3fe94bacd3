"""generate: sampled, scored and filtered rows handed to sft and dpo as `path: stage:NAME`; resume after kill -9
without duplicates; an OpenAI-compatible endpoint (`llmctl serve`) as the generator; recipe mistakes at validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmctl.data.demo import qa_pairs
from tests.conftest import kill_run_at_step
from tests.stages.test_sft_reward import recipe, run

pytestmark = pytest.mark.slow

GROW = """\
  - type: generate
    name: {name}
    model: {model}
    data: {{path: qa.jsonl, format: prompt, columns: {{prompt: question}}, template: "Question: {{prompt}}\\n\\nAnswer:",
            limit: {limit}}}
    n: 4
    batch_size: 4
    generation: {{do_sample: true, max_new_tokens: 4}}
    stop: ["\\n"]
    rewards: [{rewards}]
    keep: {keep}
"""
SFT_ON = """\
  - type: sft
    name: {name}
    model: {model}
    data: {{path: stage:{source}, format: {format}, validation: 0}}
    peft: {{method: none}}
    max_length: 48
    train: {{max_steps: 2, batch_size: 4, logging_steps: 1}}
"""
DPO_ON = SFT_ON.replace("type: sft", "type: dpo")
REWARD_PY = "def short(prompts, completions, **columns):\n    return [-abs(len(c) - {target}) for c in completions]\n"


@pytest.fixture
def qa(workdir: Path) -> Path:
    (workdir / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_pairs(48, 1)))
    (workdir / "reward.py").write_text(REWARD_PY.format(target=3))
    return workdir


def grow(name: str, model: str, rewards: str, keep: str, limit: int = 12) -> str:
    return GROW.format(name=name, model=model, rewards=rewards, keep=keep, limit=limit)


def rows(workdir: Path, folder: str, name: str = "output/data.jsonl") -> list[dict]:
    return [json.loads(line) for line in (workdir / "runs/t" / folder / name).read_text().splitlines()]


def test_generate_feeds_sft_and_dpo_and_a_changed_reward_reruns_only_what_depends_on_it(
    tiny_lm: Path, qa: Path
) -> None:
    path = recipe(
        qa,
        grow("grow", str(tiny_lm), "{function: reward.py:short}", "best_of_n"),
        SFT_ON.format(name="sft", model=str(tiny_lm), source="grow", format="prompt_completion"),
        grow(
            "pairs",
            str(tiny_lm),
            "{builtin: numeric_match, column: answer}, {builtin: length_penalty, max_chars: 2}",
            "pairs",
        ),
        DPO_ON.format(name="dpo", model=str(tiny_lm), source="pairs", format="preference"),
    )
    code, events = run(path)
    assert code == 0, events[-1]
    assert {s["stage"]: s["inputs"] for s in events[0]["steps"]}["sft"] == {
        "model": str(tiny_lm),
        "data:data": "stage:grow",
    }

    kept, samples = rows(qa, "01-grow"), rows(qa, "01-grow", "samples.jsonl")
    assert len(samples) == 12 and sorted(r["index"] for r in samples) == list(range(12))
    assert all(len(r["samples"]) == 4 and all("\n" not in s["text"] for s in r["samples"]) for r in samples)
    assert len(kept) == 12  # best of n: one row per prompt, its best sample
    for row, record in zip(kept, samples, strict=True):
        assert row["prompt"] == record["prompt"] and row["score"] == max(s["score"] for s in record["samples"])
        assert row["score"] == -abs(len(row["completion"]) - 3)  # the user's function scored it
    pairs = rows(qa, "03-pairs")
    assert pairs and all(
        p["chosen_score"] > p["rejected_score"] and {"chosen", "rejected", "answer"} <= p.keys() for p in pairs
    )
    done = {e["stage"]: e for e in events if e["event"] == "stage_end"}
    assert done["grow"]["metrics"]["kept_rows"] == 12 and done["pairs"]["metrics"]["kept_rows"] == len(pairs)
    assert json.loads((qa / "runs/t/02-sft/artifact.json").read_text())["kind"] in ("causal_lm", "adapter")

    assert [s["action"] for s in run(path)[1][0]["steps"]] == ["cached"] * 4
    (qa / "reward.py").write_text(REWARD_PY.format(target=2))  # edit the reward function
    code, events = run(path)
    assert code == 0, events[-1]
    assert [(s["stage"], s["action"]) for s in events[0]["steps"]] == [
        ("grow", "run"),
        ("sft", "run"),
        ("pairs", "cached"),
        ("dpo", "cached"),
    ]
    assert all(r["score"] == -abs(len(r["completion"]) - 2) for r in rows(qa, "01-grow"))


def test_a_killed_generate_resumes_at_the_next_prompt_and_writes_what_an_unbroken_run_writes(
    tiny_lm: Path, qa: Path
) -> None:
    path = recipe(qa, grow("grow", str(tiny_lm), "{builtin: numeric_match, column: answer}", "all", limit=40))
    kill_run_at_step(path, qa, 12)
    progress = qa / "runs/t/01-grow.tmp/checkpoints/progress.jsonl"
    assert progress.is_file() and not (qa / "runs/t/01-grow").exists()
    with open(progress, "a") as handle:  # a kill in the middle of a write leaves half a line
        handle.write('{"index": 39, "prompt": "Quest')
    code, events = run(path)
    assert code == 0, events[-1]
    assert [e["action"] for e in events if e["event"] == "stage_start"] == ["resume"]
    resumed = rows(qa, "01-grow", "samples.jsonl")
    assert sorted(r["index"] for r in resumed) == list(range(40))  # every prompt once
    code, _ = run(path, "run_dir=runs/straight")
    assert code == 0
    straight = (qa / "runs/straight/01-grow/output/data.jsonl").read_text()
    assert (qa / "runs/t/01-grow/output/data.jsonl").read_text() == straight


def test_an_openai_compatible_endpoint_generates(tiny_lm: Path, qa: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmctl.serve.app import Source
    from tests.e2e.test_serve import server

    monkeypatch.setenv("GEN_KEY", "s3cret-key-for-tests")
    with server(Source(str(tiny_lm)), api_key="s3cret-key-for-tests") as base:
        stage = grow("remote", "previous", "{builtin: regex, pattern: '\\d'}", "all", limit=3)
        stage = stage.replace("    model: previous\n", f"    endpoint: {{url: '{base}/v1', api_key_env: GEN_KEY}}\n")
        code, events = run(recipe(qa, stage))
    assert code == 0, events[-1]
    samples = rows(qa, "01-remote", "samples.jsonl")
    assert len(samples) == 3 and all(len(r["samples"]) == 4 for r in samples)
    texts = [s["text"] for s in samples[0]["samples"]]
    assert len(set(texts)) > 1  # each of the n seeded choices draws its own sample
    assert all(s["score"] == float(any(ch.isdigit() for ch in s["text"])) for r in samples for s in r["samples"])
    assert "s3cret" not in (qa / "runs/t/01-remote/artifact.json").read_text()


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        (
            lambda m: grow("g", m, "{builtin: regex, pattern: x}", "pairs").replace("n: 4", "n: 1"),
            "keep: pairs needs n >= 2",
        ),
        (
            lambda m: grow("g", m, "", "best_of_n").replace("    rewards: []\n", ""),
            "list the `rewards` that score them",
        ),
        (
            lambda m: (
                grow("g", m, "{builtin: regex, pattern: x}", "pairs")
                + SFT_ON.format(name="s", model=m, source="g", format="prompt_completion")
            ),
            "stage 'g' writes preference rows; set format: preference here",
        ),
        (
            lambda m: (
                SFT_ON.format(name="s", model=m, source="later", format="prompt_completion")
                + grow("later", m, "{builtin: regex, pattern: x}", "all")
            ),
            "stage 'later' comes later in the recipe",
        ),
        (
            lambda m: grow("g", m, "{builtin: regex, pattern: x}", "all").replace(
                "do_sample: true", "do_sample: false"
            ),
            "greedy completions are all the same",
        ),
    ],
)
def test_recipe_mistakes_are_found_at_validate(tiny_lm: Path, qa: Path, stages, message: str) -> None:
    from typer.testing import CliRunner

    from llmctl.cli import app

    result = CliRunner().invoke(app, ["validate", str(recipe(qa, stages(str(tiny_lm))))])
    assert result.exit_code == 2 and message in result.output, result.output


def test_plan_estimates_a_generate_stage_as_inference(tiny_lm: Path) -> None:
    from transformers import AutoModelForCausalLM

    from llmctl.models.causal_lm import load_config
    from llmctl.run.estimate import estimate_stage
    from llmctl.stages.generate import GenerateSpec
    from llmctl.stages.sft import SFTSpec

    spec = GenerateSpec(model=str(tiny_lm), data={"path": "p.jsonl", "format": "prompt"})
    estimate = estimate_stage(spec, load_config(str(tiny_lm)), "fp32")
    total = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_lm).parameters())
    assert (estimate.total, estimate.trainable, estimate.inference) == (total, 0, True)
    trained = estimate_stage(
        SFTSpec(model=str(tiny_lm), data={"path": "p.jsonl"}, peft={"method": "none"}),
        load_config(str(tiny_lm)),
        "fp32",
    )
    assert total * 4 / 2**30 < estimate.memory_gib < trained.memory_gib / 3  # weights and a KV cache, no optimizer
    assert estimate.describe().endswith("to run")


def test_a_mixture_may_take_one_source_from_a_generate_stage(tiny_lm: Path, qa: Path) -> None:
    from typer.testing import CliRunner

    from llmctl.cli import app

    mixed = SFT_ON.format(name="s", model=tiny_lm, source="g", format="prompt_completion").replace(
        "data: {path: stage:g, format: prompt_completion, validation: 0}",
        "data: {format: prompt_completion, validation: 0, mix: [{path: stage:g}, {path: qa.jsonl, "
        "columns: {prompt: question, completion: answer}}]}",
    )
    path = recipe(qa, grow("g", str(tiny_lm), "{builtin: regex, pattern: x}", "all"), mixed)
    result = CliRunner().invoke(app, ["--json", "plan", str(path)])
    assert result.exit_code == 0, result.output  # the sources share the mixture's format
    steps = {s["stage"]: s for s in json.loads(result.output)["steps"]}
    assert steps["s"]["inputs"]["data:data.mix[0].path"] == "stage:g"
