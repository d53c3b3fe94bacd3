"""The typed run record, `llmctl.lock.json`: one StageRecord per stage, read and written through Manifest.
(Apart from layout.py so that commands that only need the layout do not import pydantic.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from llmctl.store.files import write_atomic
from llmctl.store.layout import MANIFEST


class StageRecord(BaseModel):
    """One stage's entry in `llmctl.lock.json`."""

    model_config = ConfigDict(extra="allow")

    status: str = "pending"  # running | complete | rejected | failed | interrupted (a dead `running` reads interrupted)
    fingerprint: str = ""
    parts: dict[str, str] = {}
    seed: int | None = None
    started: str | None = None
    finished: str | None = None
    pid: int | None = None
    cached: bool = False
    versions: dict[str, Any] = {}
    data: dict[str, Any] = {}
    inputs: dict[str, str] = {}
    dir: str = ""
    duration_s: float | None = None
    metrics: dict[str, Any] = {}
    output: str | None = None
    error: str | None = None
    run_id: str | None = None  # the firing that last ran the stage
    accepted_metrics: dict[str, Any] | None = None  # metrics of the last run its gate accepted (the baseline)
    baseline_key: str | None = None  # the baseline the gate decided against (a champion's identity)
    earlier_s: float = 0.0  # seconds spent in the attempts a resume continued (counted in duration_s)
    spec: dict[str, Any] = {}  # the stage as resolved when it last ran (env values as written): names what changed
    live: dict[str, Any] = {}  # a running stage's last step and loss, read for `show` (never stored)

    def baseline_metrics(self) -> dict[str, Any] | None:
        """The metrics of the stage's last run that its gate accepted — what a later gate compares with; a
        rejected (or failed) run's are never it. None when there is none."""
        if self.accepted_metrics is not None:
            return self.accepted_metrics
        return self.metrics if self.status == "complete" else None

    def numeric_metrics(self) -> dict[str, float]:
        """The metrics that are numbers (not flags, samples or text)."""
        return {k: v for k, v in self.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class RunRecord(BaseModel):
    """`llmctl.lock.json`: the run's record, one StageRecord per stage name (first-seen order)."""

    model_config = ConfigDict(extra="allow")

    recipe: str = "?"
    run_dir: str = ""
    stages: dict[str, StageRecord] = {}


@dataclass
class Manifest:
    """The run's record on disk."""

    path: Path
    data: RunRecord = field(default_factory=RunRecord)

    @classmethod
    def load(cls, run_dir: Path) -> Manifest:
        path = run_dir / MANIFEST
        try:
            return cls(path, RunRecord.model_validate_json(path.read_text()))
        except (OSError, ValueError):
            return cls(path)

    def stage(self, name: str) -> StageRecord:
        return self.data.stages.setdefault(name, StageRecord())

    def update(self, name: str, **values: Any) -> None:
        record = self.stage(name)
        for key, value in values.items():
            setattr(record, key, value)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, self.data.model_dump_json(indent=2, exclude={"stages": {"__all__": {"live"}}}) + "\n")
