"""The cheap CLI commands: start-up imports, help, exit codes, init, global flags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = sorted((ROOT / "recipes").glob("*.yaml"))
runner = CliRunner()


@pytest.mark.parametrize(
    "args,code",
    [(["--help"], 0), (["validate", "recipes/quickstart.yaml"], 0), (["validate", "BAD"], 2)],
    ids=["help", "validate", "bad-recipe"],
)
def test_start_up_imports_nothing_heavy(args: list[str], code: int, tmp_path: Path) -> None:
    """--help, validate and a bad recipe's error load no ML library, nor the pipeline (start-up time: see
    scripts/bench_cli.py)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages:\n  - type: sft\n    model: gpt2\n    lora: {r: -1}\n")
    args = [str(bad) if a == "BAD" else a for a in args]
    script = (
        "import sys; from llmctl.cli import app\n"
        "from typer.testing import CliRunner\n"
        f"r = CliRunner().invoke(app, {args!r})\n"
        f"assert r.exit_code == {code}, r.output\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'deeplake', 'datasets', 'numpy', 'openvino',\n"
        "                     'llmctl.run.plan') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT)


def test_version_and_exit_codes_in_help() -> None:
    assert runner.invoke(app, ["--version"]).output.startswith("llmctl ")
    help_text = runner.invoke(app, ["--help"]).output
    assert "Exit codes" in help_text and "5 run locked" in help_text


@pytest.mark.parametrize("template", ["pretrain", "sft", "dpo", "rlhf", "chat"])
def test_init_writes_a_valid_recipe_and_refuses_to_overwrite(
    tmp_path: Path, template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "new.yaml"
    assert runner.invoke(app, ["init", str(target), "--template", template]).exit_code == 0
    no_data = runner.invoke(app, ["validate", str(target)])  # the starter names data the user brings
    assert no_data.exit_code == 2 and "no file or folder matches 'data/" in no_data.output
    for folder in ("data/corpus", "data/qa", "data/preferences", "data/conversations"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "data/corpus.jsonl").write_text('{"text": "hello"}\n')
    (tmp_path / "data/qa_test.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    assert runner.invoke(app, ["validate", str(target)]).exit_code == 0
    again = runner.invoke(app, ["init", str(target)])
    assert again.exit_code == 2 and "exists" in again.output
    assert runner.invoke(app, ["init", str(target), "--template", "nope"]).exit_code == 2


def test_show_unknown_run_is_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["show", "nope", "--root", str(tmp_path)])
    assert result.exit_code == 2 and "no run 'nope'" in result.output


def test_global_flags_may_follow_the_command_and_json_events_are_timestamped(tmp_path: Path) -> None:
    import subprocess
    import sys

    from llmctl.cli import global_flags_first

    assert global_flags_first(["run", "r.yaml", "--json", "a=1", "--", "--debug"]) == [
        "--json",
        "run",
        "r.yaml",
        "a=1",
        "--",
        "--debug",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "llmctl", "validate", str(tmp_path / "missing.yaml"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    event = json.loads(done.stdout.splitlines()[-1])
    assert done.returncode == 2 and event["event"] == "error" and event["time"].endswith("+00:00")


def test_help_shows_argument_help_without_escapes() -> None:
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    assert "Recipe YAML file." in result.output and "Overrides as key=value" in result.output
    assert "\\[" not in result.output and "[required]" in result.output
    assert "--install-completion" in runner.invoke(app, ["--help"]).output


def test_the_exit_code_table_exists_once() -> None:
    """errors.EXIT_CODES is the table: README's rows and `--help`'s line are generated from or held to it."""
    from llmctl.errors import EXIT_CODES, exit_code_summary

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    rows = [f"| {code} | {long} |" for code, (_, long) in EXIT_CODES.items()]
    table = "| code | meaning |\n|---|---|\n" + "\n".join(rows)
    assert table in readme
    shown = " ".join(CliRunner().invoke(app, ["--help"]).output.split())
    assert " ".join(exit_code_summary().split()) in shown


def test_dash_h_is_help_everywhere_and_validate_takes_overrides() -> None:
    for args in (["-h"], ["run", "-h"], ["models", "-h"], ["data", "preview", "-h"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "Usage:" in result.output, args
    recipe = str(ROOT / "recipes/quickstart.yaml")
    assert runner.invoke(app, ["validate", recipe, "seed=3"]).exit_code == 0  # an override, not a second recipe
    result = runner.invoke(app, ["validate", recipe, "seed=x"])
    assert result.exit_code == 2 and "override 'seed=x'" in result.output
