"""README's GitHub Actions workflow is valid YAML that keeps run state and the registry between runs, and every
llmctl command in it parses with the CLI as it is (click checks the subcommand and each flag, runs nothing)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml

from llmctl.cli import app, global_flags_first

README = Path(__file__).parents[2] / "README.md"


def workflow() -> dict:
    block = re.search(r"```yaml\n(# \.github/workflows/llm\.yml.*?)```", README.read_text(), re.S)
    assert block, "README shows the workflow"
    return yaml.safe_load(block[1])


def llmctl_commands(steps: list[dict]) -> list[list[str]]:
    found = []
    for step in steps:
        for part in re.split(r"&&|>", step.get("run", "")):
            words = shlex.split(part.split("#")[0])
            if words and words[0].endswith("llmctl"):
                found.append(words[1:])
    return found


def test_the_workflow_caches_run_state_and_its_llmctl_commands_parse() -> None:
    steps = workflow()["jobs"]["pipeline"]["steps"]
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache"))
    assert cache["with"]["path"].split("\n") == ["runs", "models"]
    commands = llmctl_commands(steps)
    assert [c[0] if c[0] != "--json" else c[1] for c in commands] == ["validate", "run", "runs", "report"]
    group = typer.main.get_command(app)
    for args in commands:
        args = global_flags_first(args)
        ctx = group.make_context("llmctl", list(args), resilient_parsing=False)
        name, *rest = ctx._protected_args + ctx.args  # click 8.5 keeps the subcommand's name there
        command = group.get_command(ctx, name)
        assert command is not None, name
        command.make_context(name, rest, parent=ctx)  # raises on an unknown flag


def test_an_unknown_flag_would_be_caught() -> None:
    group = typer.main.get_command(app)
    ctx = group.make_context("llmctl", ["run", "r.yaml", "--if-changd"])
    with pytest.raises(Exception, match="No such option: --if-changd"):  # typer's own click's NoSuchOption
        group.get_command(ctx, "run").make_context("run", ctx.args, parent=ctx)
