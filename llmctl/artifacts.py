"""Artifacts: what a stage hands to the next — a folder plus a small typed descriptor (artifact.json)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from llmctl import redaction

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
    files: dict[str, list[Any]] = field(default_factory=dict)
    """Content manifest of the output folder: relative path -> [size, sha256], written at commit."""
    committed: float = 0.0

    def write(self, stage_dir: Path) -> None:
        """Write `artifact.json` into the stage folder (before that folder is moved into place), with a
        content manifest of the output folder so a damaged output is noticed instead of being reused."""
        output = stage_dir / self.path
        self.files = {str(f.relative_to(output)): [f.stat().st_size, _sha256(f)]
                      for f in sorted(output.rglob("*")) if f.is_file()} if output.is_dir() else {}
        self.committed = time.time()
        data = asdict(self) | {"kind": self.kind.value}
        (stage_dir / DESCRIPTOR).write_text(json.dumps(redaction.redact(data), indent=2, sort_keys=True) + "\n")

    def damage(self) -> str | None:
        """What is wrong with the output folder against the content manifest, or None. Sizes are checked
        always; a file modified after the commit is hashed (so copying a run folder costs one hash pass)."""
        output = Path(self.path)
        for name, (size, digest) in self.files.items():
            file = output / name
            if not file.is_file():
                return f"{name} is missing"
            stat = file.stat()
            if stat.st_size != size:
                return f"{name} changed size ({size} -> {stat.st_size} bytes)"
            if stat.st_mtime > self.committed and _sha256(file) != digest:
                return f"{name} was modified after the stage completed"
        return None

    @classmethod
    def read(cls, stage_dir: Path) -> Artifact | None:
        """The descriptor in `stage_dir`, or None when there is none (the stage never completed)."""
        try:
            data = json.loads((stage_dir / DESCRIPTOR).read_text())
            path = stage_dir / data["path"]  # stored relative, so a run folder can be moved
            return cls(**(data | {"kind": ArtifactKind(data["kind"]), "path": str(path.absolute())}))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
