"""Hostile and broken recipes: each is refused by `validate` (and so by `run`) with exit 2, a message that
names file:line or the field, and no traceback — quickly, without reading or writing outside the run folder."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app
from llmctl.store.registry import Registry
from tests.unit.recipe.test_recipe_errors import GOOD  # the smallest valid recipe, shared with the unit tests

pytestmark = pytest.mark.reliability
runner = CliRunner()
BENCH = """\
  - type: benchmark
    local_tasks:
      - name: toy
        data: {path: qa.jsonl, format: prompt_completion}
"""


@pytest.fixture(autouse=True)
def corpus(tmp_path: Path) -> None:
    """The data file GOOD names (validate and plan check that local data exists)."""
    (tmp_path / "corpus.jsonl").write_text('{"text": "hello"}\n')


def alias_bomb() -> str:
    text, previous = "name: demo\nl0: &l0 [x, x, x, x, x, x, x, x, x]\n", "l0"
    for level in range(1, 10):
        text += f"l{level}: &l{level} [{', '.join(['*' + previous] * 9)}]\n"
        previous = f"l{level}"
    return text + GOOD.split("\n", 1)[1]


CASES = {
    "stage-name-traversal": (
        GOOD.replace("- type: pretrain", "- type: pretrain\n    name: x/../../../victim"),
        "stages[0].name: a name is",
    ),
    "stage-name-dotdot": (GOOD.replace("- type: pretrain", "- type: pretrain\n    name: .."), "stages[0].name"),
    "recipe-name-slash": (GOOD.replace("name: demo", "name: a/b"), "name: a name is"),
    "run-dir-root": (
        GOOD.replace("name: demo", "name: demo\nrun_dir: /"),
        "run_dir: / would put a run folder around the root",
    ),
    "run-dir-file": (GOOD.replace("name: demo", "name: demo\nrun_dir: /etc/passwd"), "run_dir: /etc/passwd is a file"),
    "run-dir-not-ours": (GOOD.replace("name: demo", "name: demo\nrun_dir: /etc"), "/etc is not an llmctl run folder"),
    "run-dir-cwd": (GOOD.replace("name: demo", "name: demo\nrun_dir: ."), "around the root, home or working directory"),
    "alias-bomb": (alias_bomb(), "expands to more than 100,000 values"),
    "deep-nesting": ("name: demo\nx: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 64 levels"),
    "max-steps-0": (GOOD + "    train: {max_steps: 0}\n", "max_steps is -1 (train for `epochs`) or at least 1"),
    "max-steps-negative": (
        GOOD + "    train: {max_steps: -5}\n",
        "train.max_steps: Input should be greater than or equal to -1",
    ),
    "lr-inf": (GOOD + "    train: {lr: .inf}\n", "train.lr: Input should be a finite number"),
    "lr-nan": (GOOD + "    train: {lr: .nan}\n", "train.lr: Input should be a finite number"),
    "seed-too-big": (
        GOOD.replace("name: demo", "name: demo\nseed: 4294967296"),
        "seed: Input should be less than or equal to 4294967295",
    ),
    "seed-negative": (GOOD + "    seed: -1\n", "stages[0].seed: Input should be greater than or equal to 0"),
    "duplicate-key": (GOOD.replace("name: demo", "name: demo\nseed: 1\nseed: 2"), "duplicate key"),
    "duplicate-stage": (GOOD + GOOD.split("stages:\n", 1)[1], "duplicate stage name 'pretrain'"),
    "extends-missing": ("extends: nowhere.yaml\n" + GOOD, "base recipe not found"),
    "extends-self": ("extends: bad.yaml\n" + GOOD, "circular extends"),
    "env-unset": (
        GOOD.replace("name: demo", "name: demo\ndescription: ${oc.env:LLMCTL_SURELY_UNSET}"),
        "LLMCTL_SURELY_UNSET' not found",
    ),
    "interpolation-cycle": (GOOD.replace("name: demo", "name: demo\na: ${b}\nb: ${a}"), "Recursive interpolation"),
    "forward-reference": (
        GOOD + "  - type: sft\n    model: stage:later\n    data: {path: x.jsonl, format: prompt_completion}\n"
        "  - type: sft\n    name: later\n    data: {path: x.jsonl, format: prompt_completion}\n",
        "stage 'later' comes later in the recipe",
    ),
    "gate-unknown-task": (
        GOOD + BENCH + "    gate: {checks: ['nosuch/exact_match >= 0.5']}\n",
        "task 'nosuch' is not benchmarked here",
    ),
    "gate-unknown-metric": (
        GOOD + BENCH + "    gate: {checks: ['toy/accuracy >= 0.5']}\n",
        "task 'toy' reports exact_match, not 'accuracy'",
    ),
    "gate-unknown-stage-metric": (
        GOOD + BENCH + "    gate: {checks: ['perplexity < 30']}\n",
        "metric 'perplexity' is not measured here",
    ),
    "model-name-traversal": (GOOD + "  - type: deploy\n    model_name: ../../outside\n", "model_name: a name is"),
    "yaml-1.1-boolean": (
        GOOD.replace("name: demo", "name: demo\nseed: yes"),
        "seed: Input should be a valid integer, unable to parse string as an integer (got 'yes')",
    ),
    "sexagesimal": (GOOD + "    train: {max_steps: 1:30}\n", "got '1:30'"),
    "set-tag": (
        GOOD.replace("name: demo", "name: demo\ndescription: !!set {a, b}"),
        "bad.yaml:2:14: description: YAML tag !!set is not supported",
    ),
    "binary-tag": (
        GOOD.replace("name: demo", "name: demo\ndescription: !!binary aGVsbG8="),
        "YAML tag !!binary is not supported",
    ),
    "not-a-mapping": ("- just\n- a list\n", "a recipe must be a mapping"),
    "yaml-syntax": (GOOD + "    model: [oops\n", "YAML syntax error"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_recipe_is_refused_with_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    monkeypatch.chdir(tmp_path)
    body, needle = CASES[case]
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(body)
    started = time.perf_counter()
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    assert needle in result.output, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert time.perf_counter() - started < 5
    assert not (tmp_path / "runs").exists() and not (tmp_path / "victim").exists()


def interpolation_bomb(levels: int) -> str:
    text = "name: demo\na0: x\n" + "".join(f"a{i}: ${{a{i - 1}}}${{a{i - 1}}}\n" for i in range(1, levels + 1))
    return text + f"description: ${{a{levels}}}\n" + GOOD.split("\n", 1)[1]


def exhausting_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """Inputs that once ran for minutes, read without limit or hung: (command, what the message says)."""
    os.mkfifo(tmp_path / "fifo.yaml")
    cases = {
        "bomb-40": (interpolation_bomb(40), "a8: recipe rejected: its ${…} references expand to 511"),
        "extends-dev-zero": ("extends: /dev/zero\n" + GOOD, "/dev/zero: not a regular file"),
        "extends-fifo": ("extends: fifo.yaml\n" + GOOD, "fifo.yaml: not a regular file"),
        "extends-number": ("extends: 5\n" + GOOD, "extends: must be a recipe file name or a list of them"),
        "data-dev-zero": (
            GOOD.replace("corpus.jsonl", "/dev/zero"),
            "data path /dev/zero is not a regular file or folder",
        ),
    }
    commands = {}
    for name, (body, needle) in cases.items():
        (tmp_path / f"{name}.yaml").write_text(body)
        commands[name] = (["plan" if name.startswith("data") else "validate", str(tmp_path / f"{name}.yaml")], needle)
    commands["recipe-dev-zero"] = (["validate", "/dev/zero"], "/dev/zero: not a regular file")
    commands["recipe-fifo"] = (["validate", str(tmp_path / "fifo.yaml")], "fifo.yaml: not a regular file")
    return commands


def test_exhausting_recipes_are_refused_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An interpolation bomb (n=12 took 17.7 s, n=40 ran 11 CPU-minutes ignoring Ctrl-C), a device or FIFO as
    recipe, base or data (read 2.6 GB in 3 s, or hung): exit 2 naming the file or field, fast and small."""
    import tracemalloc

    monkeypatch.chdir(tmp_path)
    for name, (args, needle) in exhausting_cases(tmp_path).items():
        tracemalloc.start()
        started = time.perf_counter()
        result = runner.invoke(app, args)
        elapsed, (_, peak) = time.perf_counter() - started, tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert result.exit_code == 2 and needle in result.output, (name, result.output)
        assert "Traceback" not in result.output and "internal error" not in result.output, name
        assert elapsed < 1.5 and peak < 64 << 20, (name, elapsed, peak)


def test_a_recipe_at_the_reference_bound_still_resolves(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(interpolation_bomb(7))  # 255 resolutions: at the bound, and a 128-character description
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2 and "unknown field 'a0'" in result.output and "recipe rejected" not in result.output


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("name: d\xe9mo\n".encode("latin-1"), "bad.yaml:1:8: not UTF-8 text: byte 0xe9 at offset 7"),
        (b"\x00\x01\x02name: x\n", "YAML error: unacceptable character"),
        (b"name: demo\n# " + b"x" * (2 << 20) + b"\n", "recipe is 2.0 MiB; recipes are at most 1 MiB"),
    ],
    ids=["latin-1", "binary", "huge"],
)
def test_unreadable_recipe_bytes(tmp_path: Path, content: bytes, needle: str) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_bytes(content)
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2 and needle in result.output, result.output


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("stages.pretrain.name=x/../../../y", "a name is"),
        ("stages.pretrain.train.lr=[oops", "override 'stages.pretrain.train.lr=[oops'"),
        ("seed=${oc.env:LLMCTL_SURELY_UNSET}", "not found"),
    ],
    ids=["name-traversal", "broken-value", "unset-env"],
)
def test_hostile_overrides_are_refused_at_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, override: str, needle: str
) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(GOOD)
    result = runner.invoke(app, ["plan", str(recipe), override])
    assert result.exit_code == 2 and needle in result.output, result.output
    assert not (tmp_path / "runs").exists()


def test_an_unknown_model_config_key_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(GOOD.replace("{n_layer: 1}", "{n_lyer: 1}"))
    result = runner.invoke(app, ["plan", str(recipe)])
    assert (
        result.exit_code == 2
        and "model.config.n_lyer: not a field of GPT2Config — did you mean 'n_layer'?" in result.output
    )


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        (
            "{config: {n_layer: 1, n_head: 3, n_embd: 32}}",
            "stages.pretrain.model.config: a gpt2 model cannot be built from it: `embed_dim` must be divisible",
        ),
        ("{config: {n_layer: '1'}}", "model.config.n_layer: '1' is not a whole number"),
        ("{config: {n_layer: -1}}", "model.config.n_layer: -1 is a size; it must be at least 1"),
        ("{config: {n_head: true}}", "model.config.n_head: True is not a whole number"),
        ("{init: /etc}", "model /etc is not a model folder (it has no config.json)"),
    ],
    ids=["heads-do-not-divide", "layers-as-text", "negative-layers", "boolean-heads", "not-a-model-folder"],
)
def test_a_model_that_cannot_work_is_refused_at_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str, needle: str
) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(GOOD.replace("{config: {n_layer: 1}}", model))
    for command in ("plan", "run"):
        result = runner.invoke(app, [command, str(recipe)])
        assert result.exit_code == 2 and needle in result.output, (command, result.output)
        assert "Traceback" not in result.output and not (tmp_path / "runs/demo/01-pretrain.tmp").exists()


def test_a_model_too_big_for_this_machine_is_a_warning_at_plan_and_refused_by_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        GOOD.replace("{config: {n_layer: 1}}", "{config: {n_layer: 1, vocab_size: 1000000000}}  # 420 GiB to train")
    )
    planned = runner.invoke(app, ["plan", str(recipe)])
    assert (
        planned.exit_code == 0 and "GiB of memory" in planned.output and "this machine cannot run it" in planned.output
    )
    refused = runner.invoke(app, ["run", str(recipe)])
    assert (
        refused.exit_code == 2
        and "stages[0]: needs ~" in refused.output
        and "more than this machine's" in refused.output
    )
    assert not (tmp_path / "runs/demo/01-pretrain.tmp").exists()
    doctor = runner.invoke(app, ["doctor", str(recipe)])
    assert "more than this machine's" in doctor.output and "no problems found" not in doctor.output
    forced = runner.invoke(app, ["--json", "run", str(recipe), "--ignore-memory", "--dry-run"])
    assert forced.exit_code == 0 and '"event": "warning"' in forced.output and "more than this machine" in forced.output


def test_a_model_near_the_machine_memory_is_a_warning_at_plan_doctor_and_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmctl.run import estimate

    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(GOOD)
    planned = json.loads(runner.invoke(app, ["--json", "plan", str(recipe)]).output)
    need = planned["steps"][0]["memory_gib"]
    monkeypatch.setattr(estimate, "machine_memory_gib", lambda device: max(need, 0.01) / 0.9)  # 90% of it
    for args in (["plan", str(recipe)], ["doctor", str(recipe)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "% of this machine's" in result.output and "swap" in result.output, args
    ran = runner.invoke(app, ["--json", "run", str(recipe), "--dry-run"])
    assert ran.exit_code == 0 and "% of this machine's" in ran.output and '"event": "warning"' in ran.output


def test_registry_refuses_paths_and_dangling_pointers(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "config.json").write_text("{}")
    registry = Registry(tmp_path / "models")
    registry.deploy("chat", source, {}, promote=False, keep=1)
    assert registry.versions("chat") == ["v1"]  # promote: false + keep: 1 keeps what it just published
    args = ["--registry", str(tmp_path / "models")]
    for name, version in (("chat", "../../outside"), ("../x", "v1"), ("chat", "v1/../../x")):
        result = runner.invoke(app, ["models", "promote", name, version, *args])
        assert result.exit_code == 2, result.output
    assert registry.current("chat") is None
    (tmp_path / "models/chat/current").symlink_to("v9")
    result = runner.invoke(app, ["serve", "--registry", str(tmp_path / "models"), "--name", "chat"])
    assert result.exit_code == 2 and "current points at 'v9', which is not a version" in result.output


def test_concurrent_deploys_into_one_registry_never_fail(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    source = tmp_path / "src"
    source.mkdir()
    (source / "weights.bin").write_bytes(b"x" * 100_000)
    registry = Registry(tmp_path / "models")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: registry.deploy("chat", source, {}, promote=True, keep=2), range(12)))
    assert len({version for version, *_ in results}) == 12
    assert len(registry.versions("chat")) == 2 and registry.current("chat") == registry.versions("chat")[-1]


def test_a_cache_folder_that_is_a_file_is_a_located_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("LLMCTL_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(GOOD.replace("corpus.jsonl", "demo://corpus"))
    result = runner.invoke(app, ["plan", str(recipe)])
    assert result.exit_code == 2, result.output
    assert f"LLMCTL_CACHE {tmp_path / 'cache'} is a file" in result.output and "internal error" not in result.output
