"""Nothing a recipe holds can become a command (round three): Slurm fields and run folders written into the
batch script, and text that reaches a CI runner's log (GitHub's `::` workflow commands) or its JUnit report."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from llmctl.cli import app
from llmctl.launch.slurm import script, submit_options
from llmctl.spec.launcher import LauncherSpec

pytestmark = pytest.mark.reliability
runner = CliRunner()
INJECTED = "x\ntouch {marker}; id > {marker}"


@pytest.mark.parametrize(
    "settings",
    [
        {"account": INJECTED},
        {"qos": INJECTED},
        {"partition": "gpu;id"},
        {"constraint": INJECTED},
        {"constraint": "a100$(id)"},
        {"extra": [INJECTED]},
        {"extra": ["--comment=$(id)"]},
        {"extra": ["--exclusive --wrap='id'"]},
        {"extra": ["-x"]},
    ],
    ids=[
        "account",
        "qos",
        "partition",
        "constraint",
        "constraint-subst",
        "extra-newline",
        "extra-subst",
        "extra-space",
        "extra-short",
    ],
)
def test_slurm_fields_that_could_run_a_command_are_refused_at_validate(settings: dict) -> None:
    with pytest.raises(ValidationError):
        LauncherSpec(engine="slurm", **settings)


def test_the_same_in_a_recipe_is_exit_2_naming_the_field(workdir: Path) -> None:
    (workdir / "r.yaml").write_text(
        'name: r\nlauncher: {engine: slurm, account: "lab\\nid > pwned"}\nstages:\n  - type: pretrain\n'
        "    model: {config: {model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 32}}\n"
        "    tokenizer: {vocab_size: 300}\n    data: {path: corpus.jsonl}\n"
    )
    result = runner.invoke(app, ["validate", "r.yaml"])
    assert result.exit_code == 2
    assert "launcher.account" in result.output


def test_real_slurm_values_still_pass() -> None:
    LauncherSpec(
        engine="slurm",
        partition="gpu,debug",
        account="lab-1",
        qos="high",
        constraint="a100&(ib|roce)",
        extra=["--exclusive", "--mem=0", "--gres=gpu:4", "--mail-user=me@lab.org", "--exclude=node[1-3]"],
    )


def test_a_hostile_run_folder_cannot_run_in_the_batch_script(tmp_path: Path) -> None:
    """The script with a run folder holding a space and `$(…)`: bash parses it, and run with stub Slurm commands
    nothing injected runs and srun gets its output path as one argument."""
    marker = tmp_path / "pwned"
    logs = tmp_path / f"runs/a b $(touch {marker})/01-sft.tmp/logs"
    launcher = LauncherSpec(
        engine="slurm", nodes=1, account="lab", constraint="a100|h100", extra=["--exclusive", "--mem=0"]
    )
    text = script(launcher, logs.parent / "worker.json", logs, "llmctl-r-sft")
    (tmp_path / "job.sh").write_text(text)
    assert subprocess.run(["bash", "-n", str(tmp_path / "job.sh")]).returncode == 0
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name in ("scontrol", "srun"):
        (stubs / name).write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > {tmp_path}/{name}.args\necho node1\n')
        (stubs / name).chmod(0o755)
    done = subprocess.run(
        ["bash", str(tmp_path / "job.sh")],
        env=os.environ | {"PATH": f"{stubs}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "node1"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    args = (tmp_path / "srun.args").read_text().splitlines()
    assert f"--output={logs}/slurm-%j-node%n.out" in args
    assert all(line.startswith("#SBATCH --") for line in text.splitlines() if line.startswith("#SBATCH"))
    assert submit_options(logs) == [f"--output={logs}/slurm-%j.out"]  # one argv entry for sbatch, no shell


FORGED = '"a\\n::set-output name=deploy::prod\\n\\r::add-mask::x\\n  ::warning::forged"'


def test_ci_output_cannot_carry_workflow_commands(workdir: Path) -> None:
    """An unknown recipe key holding newlines and `::` lines, under GitHub Actions: the only workflow commands
    on stdout/stderr are llmctl's own `::error` annotations, their messages escaped."""
    (workdir / "r.yaml").write_text(f"name: r\n{FORGED}: 1\nstages: []\n")
    for args in (["validate", "r.yaml"], ["--json", "validate", "r.yaml"]):
        done = subprocess.run(
            [sys.executable, "-m", "llmctl", *args],
            cwd=workdir,
            env=os.environ | {"GITHUB_ACTIONS": "true"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        lines = (done.stdout + done.stderr).replace("\r", "\n").splitlines()
        commands = [line.strip() for line in lines if line.strip().startswith("::")]
        assert commands and all(c.startswith("::error ") for c in commands), commands
        assert not any("set-output" in c.split("::", 2)[1] for c in commands)
        assert any("%0A" in c for c in commands)  # the key's newlines escaped inside its annotation


def test_junit_stays_parseable_with_control_characters(workdir: Path) -> None:
    (workdir / "r.yaml").write_text('name: r\n"bad\\x1b[31m\\x00key\\x0c": 1\nstages: []\n')
    result = runner.invoke(app, ["validate", "r.yaml", "--junit", "report.xml"])
    assert result.exit_code == 2
    failure = ET.parse(workdir / "report.xml").getroot().find(".//failure")
    assert failure is not None and "key" in (failure.text or "")


@pytest.mark.parametrize(
    ("target", "said"),
    [(".", "is a folder"), ("/proc/self/status", "system folder"), ("file.txt/report.xml", "which is a file")],
)
def test_a_junit_path_nothing_can_be_written_to_is_exit_2_before_the_run(
    tiny_recipe, workdir: Path, target: str, said: str
) -> None:
    (workdir / "file.txt").write_text("x")
    recipe = tiny_recipe(steps=2)
    for command in (["validate"], ["plan"], ["run"]):
        result = runner.invoke(app, [*command, str(recipe), "--junit", target])
        assert result.exit_code == 2, result.output
        assert said in result.output
    assert not (workdir / "runs").exists()  # nothing ran
