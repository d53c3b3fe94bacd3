"""Artifacts: what a stage hands to the next — a folder plus a small typed descriptor (artifact.json)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from llmctl.store.files import write_atomic

DESCRIPTOR = "artifact.json"


class ArtifactKind(str, Enum):
    """The kinds of thing a stage can produce; stages declare which they accept and produce."""

    causal_lm = "causal_lm"  # a standalone AutoModelForCausalLM folder (+ tokenizer)
    adapter = "adapter"  # a PEFT adapter folder plus the base model it applies to
    reward_model = "reward_model"  # an AutoModelForSequenceClassification folder, one output
    quantized_lm = "quantized_lm"  # a quantized causal LM folder with a backend descriptor
    eval_report = "eval_report"  # evaluation results
    dataset = "dataset"  # rows a stage wrote (generate): a data block reads them as `path: stage:NAME`
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
        self.files = file_manifest(stage_dir / self.path)
        self.committed = time.time()
        write_atomic(stage_dir / DESCRIPTOR, json.dumps(self.to_json(), indent=2, sort_keys=True, default=str) + "\n")

    def to_json(self) -> dict[str, Any]:
        """The artifact as JSON-able data (its kind as text): the descriptor, and what a launched stage's ranks and
        their parent pass each other."""
        return asdict(self) | {"kind": self.kind.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        """The artifact `to_json` wrote."""
        return cls(**(data | {"kind": ArtifactKind(data["kind"])}))

    def damage(self) -> str | None:
        """What is wrong with the output folder against the content manifest, or with what the stage did outside
        it (a deployment's published version), or None."""
        if self.kind is ArtifactKind.deployment and (published := self.meta.get("deployment", {}).get("path")):
            if not (Path(published) / "version.json").is_file():
                return f"its published version {published} is gone from the registry"
        return manifest_damage(Path(self.path), self.files, self.committed, "the stage completed")

    @property
    def dataset_file(self) -> str:
        """A dataset artifact's rows file (what a `path: stage:NAME` data block reads)."""
        return str(Path(self.path) / self.meta.get("file", "data.jsonl"))

    @classmethod
    def read(cls, stage_dir: Path) -> Artifact | None:
        """The descriptor in `stage_dir`, or None when there is none (the stage never completed)."""
        try:
            data = json.loads((stage_dir / DESCRIPTOR).read_text())
            path = stage_dir / data["path"]  # stored relative, so a run folder can be moved
            return cls.from_json(data | {"path": str(path.absolute())})
        except (OSError, ValueError, KeyError, TypeError):
            return None


def file_manifest(folder: Path) -> dict[str, list[Any]]:
    """Relative path -> [size, sha256] of every file below `folder` ({} when there is no folder)."""
    if not folder.is_dir():
        return {}
    return {
        str(f.relative_to(folder)): [f.stat().st_size, sha256_file(f)] for f in sorted(folder.rglob("*")) if f.is_file()
    }


def manifest_damage(folder: Path, files: dict[str, list[Any]], since: float, event: str) -> str | None:
    """What is wrong with `folder` against its `file_manifest`, written at time `since` (when `event` happened), or None. Sizes are checked
    always; a file changed after `since` is hashed — changed by its ctime too, which no `touch`, `cp -p` or
    backup restore can set back (a same-size file with an older mtime was used silently). Copying a folder
    costs one hash pass."""
    for name, (size, digest) in files.items():
        file = folder / name
        if not file.is_file():
            return f"{name} is missing"
        stat = file.stat()
        if stat.st_size != size:
            return f"{name} changed size ({size} -> {stat.st_size} bytes)"
        if max(stat.st_mtime, stat.st_ctime) > since and sha256_file(file) != digest:
            return f"{name} was modified after {event}"
    return None


def sha256_file(path: Path) -> str:
    """A file's sha256, read in 1 MiB blocks (the one file hash llmctl has: outputs, registry versions, data, ranks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_digest(folder: Path) -> str:
    """sha256 over the weight files' hashes of a model folder (equal on every rank when gradients were synchronised)."""
    return hashlib.sha256("".join(sha256_file(f) for f in sorted(folder.glob("*.safetensors"))).encode()).hexdigest()
