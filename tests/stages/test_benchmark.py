"""benchmark: lm-eval on local tasks whose answers the test controls (so the expected value is known),
log-likelihood multiple choice, perplexity, speed, quality gates (pass, fail → exit 3 and later stages do
not run, baseline comparison), quantized models, and the offline built-in task error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app
from tests.conftest import run_json
from tests.stages.test_quantize import quantize

pytestmark = pytest.mark.slow


def greedy_answers(model: Path, prompts: list[str], tokens: int = 3) -> list[str]:
    from llmctl.models.causal_lm import generate, load, load_tokenizer

    return [o.split("\n")[0].strip() for o in generate(load(str(model)), load_tokenizer(str(model)), prompts, tokens)]


@pytest.fixture
def tasks(tiny_lm: Path, workdir: Path) -> Path:
    """exact.jsonl: 10 prompts, the first 6 with the tiny model's own greedy answer as the target and the rest
    with an answer it does not give, so exact match must be 0.6; choice.jsonl: a one-token and a five-token
    continuation, the right one being the short (more likely) one."""
    prompts = [f"Question: What is {a} plus {b}?\n\nAnswer:" for a, b in zip(range(1, 11), range(3, 13), strict=False)]
    answers = greedy_answers(tiny_lm, prompts)
    rows = [
        {"prompt": p, "completion": " " + (a if i < 6 else a + "zzz")}
        for i, (p, a) in enumerate(zip(prompts, answers, strict=False))
    ]
    (workdir / "exact.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    choice = [{"prompt": "The small", "choices": [" cat", " cat cat cat cat"], "answer": 0}] * 4
    (workdir / "choice.jsonl").write_text("".join(json.dumps(r) + "\n" for r in choice))
    return workdir


BENCH = """\
  - type: benchmark
    name: {name}
    model: {model}
    local_tasks:
      - name: exact
        data: {{path: exact.jsonl, format: prompt_completion, shuffle: false}}
        max_new_tokens: 3
      - name: choice
        data: {{path: choice.jsonl, format: choice}}
      - name: ppl
        data: {{path: corpus.jsonl, limit: 5}}
    perplexity: {{data: {{path: corpus.jsonl, limit: 5}}, max_length: 64}}
    speed: {{prompt_tokens: 8, new_tokens: 4, batch_sizes: [1, 2], prompts: 2}}
{gate}"""


def bench(name: str = "bench", model: str = "previous", gate: str = "") -> str:
    return BENCH.format(name=name, model=model, gate=gate)


def recipe(folder: Path, *stages: str) -> Path:
    path = folder / "recipe.yaml"
    path.write_text("name: t\nseed: 5\ndtype: fp32\nstages:\n" + "".join(stages))
    return path


def metrics(folder: Path, stage: str) -> dict:
    return json.loads((folder / "runs/t" / stage / "metrics.json").read_text())


def test_local_tasks_perplexity_and_speed_give_the_known_values(tiny_lm: Path, tasks: Path) -> None:
    code, events = run_json(str(recipe(tasks, bench(model=str(tiny_lm)))))
    assert code == 0, events[-1]
    result = metrics(tasks, "01-bench")
    assert result["exact/exact_match"] == pytest.approx(0.6)
    assert "exact/exact_match_stderr" in result and 0 <= result["choice/acc"] <= 1 and "choice/acc_norm" in result
    assert result["ppl/word_perplexity"] > 1 and result["ppl/bits_per_byte"] > 0 and result["perplexity"] > 1
    assert {"tokens_per_s_batch1", "tokens_per_s_batch2", "ms_per_token_batch1"} <= result.keys()
    out = tasks / "runs/t/01-bench/output"
    assert "exact" in json.loads((out / "lm_eval_results.json").read_text())["results"]
    assert "exact_match" in (out / "results.md").read_text()
    assert (tasks / "runs/t/01-bench/tasks/exact.yaml").exists()  # re-runnable with lm_eval --include_path
    assert_relocatable(tasks / "runs/t", tasks / "elsewhere/t")


def assert_relocatable(run: Path, copy: Path) -> None:
    """A copied run folder reads and writes only where it is: show, report, and its lm-eval task YAMLs."""
    import shutil

    import yaml
    from typer.testing import CliRunner

    from llmctl.cli import app

    tasks_yaml = yaml.safe_load((run / "01-bench/tasks/exact.yaml").read_text())
    assert Path(tasks_yaml["dataset_kwargs"]["data_files"]["test"]).is_file()  # not the deleted .tmp folder
    shutil.copytree(run, copy)
    shown = json.loads(CliRunner().invoke(app, ["--json", "show", str(copy)]).stdout)
    assert shown["run_dir"] == str(copy.absolute()) and shown["stages"]["bench"]["output"].startswith(
        str(copy.absolute())
    )
    assert CliRunner().invoke(app, ["report", str(copy)]).exit_code == 0
    assert (copy / "report/index.html").exists() and not (run / "report").exists()


def test_choice_accuracy_follows_log_likelihood(tiny_lm: Path, tasks: Path) -> None:
    """A one-token continuation is more likely than the same token repeated four times: acc is 1; with the
    answer index flipped it is 0."""
    code, events = run_json(str(recipe(tasks, bench(model=str(tiny_lm)))))
    assert code == 0 and metrics(tasks, "01-bench")["choice/acc"] == 1.0
    flipped = [{"prompt": "The small", "choices": [" cat", " cat cat cat cat"], "answer": " cat cat cat cat"}] * 4
    (tasks / "choice.jsonl").write_text("".join(json.dumps(r) + "\n" for r in flipped))
    code, events = run_json(str(recipe(tasks, bench(model=str(tiny_lm)))))
    assert code == 0 and metrics(tasks, "01-bench")["choice/acc"] == 0.0


def test_gate_failure_exits_3_and_later_stages_do_not_run_even_when_cached(tiny_lm: Path, tasks: Path) -> None:
    gate = "    gate: {checks: ['exact/exact_match >= 0.9', 'perplexity < 1000000']}\n"
    after = bench("after", model=str(tiny_lm))
    path = recipe(tasks, bench(model=str(tiny_lm), gate=gate), after)
    code, events = run_json(str(path))
    assert code == 3
    message = events[-1]["message"]
    assert "FAIL  exact/exact_match = 0.6  (needs >= 0.9)" in message and "pass  perplexity" in message
    assert [e["stage"] for e in events if e["event"] == "stage_start"] == ["bench"]
    code, events = run_json(str(path))  # cached: the decision stands
    assert code == 3 and [e["status"] for e in events if e["event"] == "stage_end"] == ["cached"]

    code, events = run_json(str(path), "stages.bench.gate.checks=['exact/exact_match >= 0.5']")
    assert code == 0 and metrics(tasks, "01-bench")["gate_passed"] is True


def test_gate_against_the_previous_run(tiny_lm: Path, tasks: Path) -> None:
    gate = "    gate: {baseline: previous, compare: [exact/exact_match], tolerance: 0.05}\n"
    path = recipe(tasks, bench(model=str(tiny_lm), gate=gate))
    code, _ = run_json(str(path))
    assert code == 0  # no previous run yet: nothing to regress from
    rows = (tasks / "exact.jsonl").read_text().splitlines()
    worse = [json.dumps(json.loads(r) | {"completion": " nope"}) for r in rows[:3]] + rows[3:]
    (tasks / "exact.jsonl").write_text("\n".join(worse) + "\n")  # the data changed: the stage re-runs
    code, events = run_json(str(path))
    assert code == 3 and "exact/exact_match = 0.3" in events[-1]["message"] and "previous run" in events[-1]["message"]


def test_quantized_models_are_evaluable(tiny_lm: Path, tasks: Path) -> None:
    stages = [
        quantize("ov", str(tiny_lm), "backend: openvino\nbits: 8"),
        bench("bench-ov", "stage:ov"),
        quantize("inc", str(tiny_lm), "backend: inc\nbits: 8"),
        bench("bench-inc", "stage:inc"),
    ]
    code, events = run_json(str(recipe(tasks, *stages)))
    assert code == 0, events[-1]
    for stage in ("02-bench-ov", "04-bench-inc"):
        result = metrics(tasks, stage)
        # Int8 keeps greedy answers
        assert result["exact/exact_match"] >= 0.5 and result["choice/acc"] == 1.0, (
            stage,
            result,
        )


def test_builtin_task_offline_fails_with_a_clear_message(tiny_lm: Path, tasks: Path) -> None:
    path = recipe(tasks, f"  - type: benchmark\n    model: {tiny_lm}\n    tasks: [arc_easy]\n    limit: 2\n")
    code, events = run_json(str(path))
    assert code == 2 and "download their datasets from the Hugging Face hub" in events[-1]["message"]
    path = recipe(tasks, f"  - type: benchmark\n    model: {tiny_lm}\n    tasks: [hellaswg]\n")
    code, events = run_json(str(path))
    assert code == 2 and "did you mean 'hellaswag'" in events[-1]["message"]


def test_bad_gate_and_empty_benchmark_fail_validation(tasks: Path) -> None:
    bad = recipe(tasks, "  - type: benchmark\n    local_tasks: []\n")
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2 and "nothing to measure" in result.output
    bad = recipe(tasks, bench(model="x", gate="    gate: {checks: ['exact/exact_match about 3']}\n"))
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2 and "is not `METRIC OP NUMBER`" in result.output
    bad = recipe(tasks, bench(model="x", gate="    gate: {checks: ['hellaswag/acc >= 0.3']}\n"))
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2 and "task 'hellaswag' is not benchmarked here" in result.output
