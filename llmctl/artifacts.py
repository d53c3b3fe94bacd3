"""Artifacts: what a stage hands to the next — a folder plus a small typed descriptor (artifact.json)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

DESCRIPTOR = "artifact.json"


class ArtifactKind(str, Enum):
    """The kinds of thing a stage can produce; stages declare which they accept and produce."""

    causal_lm = "causal_lm"  # a standalone AutoModelForCausalLM folder (+ tokenizer)
    adapter = "adapter"  # a PEFT adapter folder plus the base model it applies to
    reward_model = "reward_model"  # an AutoModelForSequenceClassification folder, one output
    quantized_lm = "quantized_lm"  # a quantized causal LM folder with a backend descriptor
    eval_report = "eval_report"  # evaluation results
    deployment = "deployment"  # a published registry version


@dataclass
class Artifact:
    """A stage's result. `path` is the folder the next stage loads (the stage's `output/`)."""

    kind: ArtifactKind
    path: str
    stage: str = ""
    fingerprint: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def write(self, stage_dir: Path) -> None:
        """Write `artifact.json` into the stage folder (before that folder is moved into place)."""
        data = asdict(self) | {"kind": self.kind.value}
        (stage_dir / DESCRIPTOR).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, stage_dir: Path) -> Artifact | None:
        """The descriptor in `stage_dir`, or None when there is none (the stage never completed)."""
        try:
            data = json.loads((stage_dir / DESCRIPTOR).read_text())
            path = stage_dir / data["path"]  # stored relative, so a run folder can be moved
            return cls(**(data | {"kind": ArtifactKind(data["kind"]), "path": str(path.absolute())}))
        except (OSError, ValueError, KeyError, TypeError):
            return None
