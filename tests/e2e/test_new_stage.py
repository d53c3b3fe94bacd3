"""Adding a stage type is one new file plus one registry line: a throwaway `echo` stage, written into a copy of the
package, validates, plans and runs after a tiny pretrain through `llmctl.api`, and its output lands in the run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "llmctl"
ECHO = '''
"""A throwaway stage: writes its message and the model it was handed into a report."""

from __future__ import annotations

import json
from typing import Literal

from llmctl.store.artifacts import Artifact, ArtifactKind
from llmctl.spec.base import PREVIOUS, InputSlot
from llmctl.spec.stage import StageSpec


class EchoSpec(StageSpec):
    type: Literal["echo"] = "echo"
    message: str = "hello"
    model: str = PREVIOUS
    produces = ArtifactKind.eval_report

    def inputs(self) -> dict[str, InputSlot]:
        return {"model": InputSlot(self.model, (ArtifactKind.causal_lm,), "model")}


def run(spec: EchoSpec, ctx) -> Artifact:
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / "echo.json").write_text(json.dumps({"message": spec.message, "model": ctx.input("model")}))
    return Artifact(ArtifactKind.eval_report, str(ctx.out_dir), meta={"metrics": {"echoed": 1}})
'''
SCRIPT = """
import json, sys
from llmctl import api
checked = api.validate(sys.argv[1])
result = api.run(sys.argv[1])
print(json.dumps({"stages": checked.stages, "status": result.status,
                  "echo": json.loads((result.run_dir / "02-echo/output/echo.json").read_text())}))
"""


def test_a_new_stage_is_one_file_and_one_line(tmp_path: Path, workdir: Path) -> None:
    copy = tmp_path / "pkg" / "llmctl"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "stages" / "echo.py").write_text(ECHO)  # the file
    registry = copy / "stages" / "__init__.py"
    text = registry.read_text().replace(
        "from llmctl.stages import benchmark,", "from llmctl.stages import benchmark, echo,"
    )
    # The line (and its import)
    registry.write_text(
        text.replace(
            "ENTRIES: tuple[StageEntry, ...] = (\n",
            "ENTRIES: tuple[StageEntry, ...] = (\n    StageEntry(echo.EchoSpec, echo.run),\n",
        )
    )
    recipe = workdir / "echo.yaml"
    recipe.write_text(
        textwrap.dedent("""\
        name: echo
        dtype: fp32
        stages:
          - type: pretrain
            model: {config: {model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 32, n_positions: 64}}
            tokenizer: {vocab_size: 300}
            data: {path: corpus.jsonl}
            block_size: 32
            train: {max_steps: 2}
          - type: echo
            message: hi there
        """)
    )
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(recipe)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "PYTHONPATH": str(tmp_path / "pkg"),
            "PATH": "/usr/bin:/bin",
            "HF_HUB_OFFLINE": "1",
            "LLMCTL_CACHE": str(tmp_path / "cache"),
            "HOME": str(tmp_path),
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["stages"] == ["pretrain", "echo"] and found["status"] == "complete"
    assert found["echo"]["message"] == "hi there" and found["echo"]["model"].endswith("01-pretrain/output")
