"""Exit codes are the contract with cron and CI: `--debug` adds a traceback and changes nothing else, and a
SIGTERM outside `run` ends with 130 and the usual line, like Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app

pytestmark = pytest.mark.reliability
LLMCTL = [sys.executable, "-m", "llmctl"]
PRETRAIN = (
    "name: codes\nseed: 7\ndtype: fp32\nstages:\n  - type: pretrain\n    model: {model}\n"
    "    tokenizer: {{vocab_size: 300}}\n    data: {{path: {data}}}\n    block_size: 32\n    train: {{max_steps: 2}}\n"
)
TINY = "{config: {model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 32, n_positions: 64}}"


@pytest.mark.parametrize(
    ("model", "data", "code"),
    [
        (TINY, "missing.jsonl", 2),  # data not found
        (
            "{init: broken-model}",
            "corpus.jsonl",
            4,
        ),  # a folder that only looks like a model: the stage fails at run time
    ],
    ids=["exit-2", "exit-4"],
)
def test_debug_adds_the_traceback_and_keeps_the_exit_code(workdir: Path, model: str, data: str, code: int) -> None:
    (workdir / "broken-model").mkdir()
    (workdir / "broken-model/config.json").write_text("{}")
    recipe = workdir / "r.yaml"
    recipe.write_text(PRETRAIN.format(model=model, data=data))
    plain = CliRunner().invoke(app, ["run", str(recipe)])
    debug = CliRunner().invoke(app, ["--debug", "run", str(recipe)])
    assert plain.exit_code == debug.exit_code == code, (plain.output, debug.output)
    assert "Traceback" not in plain.output and "Traceback (most recent call last)" in debug.output
    message = plain.output.strip().splitlines()[-1]
    assert message in debug.output


def test_sigterm_during_data_import_exits_130_with_a_message(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"row {i} " + "x" * 200}) + "\n" for i in range(300_000)))
    process = subprocess.Popen(
        [*LLMCTL, "data", "import", str(rows), str(tmp_path / "lake")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "lake").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
