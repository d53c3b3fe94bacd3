"""One `llmctl run` seen from outside: what it did, its outcome, its line in the run's history, and the
notification — for every outcome, an invalid recipe included (see `store/history.py` for the outcomes)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl.errors import GateFailed, LlmctlError
from llmctl.redaction import redact
from llmctl.spec.context import Emit
from llmctl.store import history
from llmctl.store.times import iso_time

if TYPE_CHECKING:
    from llmctl.run.plan import Plan

NOTIFY_TIMEOUT_S = 120
NOTIFY_TAIL = 200


@dataclass
class Firing:
    """Collects what a run did from its events; `finish` turns it into the record and the notification."""

    recipe_file: Path
    overrides: list[str]
    forward: Emit
    run_id: str = field(default_factory=history.new_run_id)
    started: float = field(default_factory=time.time)
    plan: Plan | None = None
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped_reason: str = ""

    def emit(self, event: dict[str, Any]) -> None:
        """The events callback the pipeline gets: remembers stage starts and ends, then passes the event on."""
        if event["event"] == "stage_start":
            self.stages[event["stage"]] = {"action": event["action"]}
        elif event["event"] == "stage_end":
            self.stages.setdefault(event["stage"], {"action": "run"}).update(
                status=event["status"], metrics=event.get("metrics") or {}
            )
        self.forward(event)

    @cached_property
    def git(self) -> dict[str, Any] | None:
        """The recipe's git commit (asked once per firing: the record and a published version share it)."""
        return history.git_state(self.recipe_file) if self.recipe_file.exists() else None

    def lineage(self) -> dict[str, Any]:
        """What a published model records about its making: this firing, the recipe's commit, versions, data."""
        from llmctl.fingerprint import library_versions

        return {
            "run_id": self.run_id,
            "git": self.git,
            "versions": library_versions(),
            "data": self.plan.data_versions() if self.plan else {},
        }

    def finish(self, error: BaseException | None, notify: str | None, skipped: bool = False) -> dict[str, Any]:
        """Record the firing in the run's history and run the notify command; returns the record."""
        outcome, code = ("skipped", 0) if skipped else history.outcome_of(error)
        run_dir = self.plan.run_dir if self.plan else guess_run_dir(self.recipe_file, self.overrides)
        previous = history.previous_outcome(run_dir) if run_dir else None
        if outcome == "complete" and previous in history.UNHEALTHY:
            outcome = "recovered"
        record = self._record(outcome, code, error, run_dir, previous)
        if run_dir is not None:
            try:
                history.append(run_dir, record)
            except (OSError, LlmctlError) as problem:  # a full disk or a planted link must not hide the outcome
                self.forward({"event": "warning", "message": f"run history not written: {problem}"})
        self.forward(
            {"event": "outcome", "outcome": outcome, "exit_code": code, "run_id": self.run_id, "record": record}
        )
        if notify:
            _notify(notify, record, self.forward)
        return record

    def _record(
        self, outcome: str, code: int, error: BaseException | None, run_dir: Path | None, previous: str | None
    ) -> dict[str, Any]:
        """The firing's record. A skipped firing's is short (a no-change firing every minute adds one small
        line): no stages, data or git."""
        head = {
            "run_id": self.run_id,
            "recipe": self.plan.recipe.name if self.plan else None,
            "recipe_file": str(self.recipe_file),
            "run_dir": str(run_dir.absolute()) if run_dir else None,
            "outcome": outcome,
            "exit_code": code,
            "previous_outcome": previous,
            "message": self.skipped_reason if outcome == "skipped" else str(error or ""),
            "started": iso_time(self.started),
            "finished": iso_time(),
            "duration_s": round(time.time() - self.started, 2),
        }
        if outcome == "skipped":
            return head | {"changed": [], "published": []}
        stages = self._stage_results(outcome, error)
        return head | {
            "changed": [n for n, s in stages.items() if s["action"] in ("run", "resume") and s["status"] != "not_run"],
            "published": _published(stages),
            "stages": stages,
            "data": self.plan.data_versions() if self.plan else {},
            "git": self.git,
        }

    def _stage_results(self, outcome: str, error: BaseException | None) -> dict[str, dict[str, Any]]:
        """Per stage of the plan: what this firing did with it — complete (ran now), cached, rejected, failed,
        interrupted, not_run (an earlier stage stopped the run) or not_selected; metrics only when it ran or was
        cached now (never an older result)."""
        if self.plan is None:
            return {}
        rejected = getattr(error, "stage", None) if isinstance(error, GateFailed) else None
        found = {}
        for step in self.plan.steps:
            seen = self.stages.get(step.name)
            result: dict[str, Any] = {"type": step.spec.type, "action": step.action, "reason": step.reason}
            if name := getattr(step.spec, "model_name", None):  # a deploy stage's model
                result["name"] = name
            if step.action == "skip":
                result["status"] = "not_selected"
            elif seen is None:
                result["status"] = "not_run"
            elif "status" in seen:
                result |= {
                    "status": "rejected" if step.name == rejected else seen["status"],
                    "metrics": seen["metrics"],
                }
            else:  # started, never ended
                result["status"] = outcome if outcome in ("rejected", "interrupted") else "failed"
            found[step.name] = result
        return found


def _published(stages: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The registry versions that deploy stages which ran in this firing published (or found already there)."""
    return [
        {
            "stage": name,
            "name": s.get("name"),
            "version": s["metrics"]["version"],
            "new": s["metrics"].get("new_version"),
        }
        for name, s in stages.items()
        if s["status"] == "complete" and "version" in s.get("metrics", {})
    ]


def _notify(command: str, record: dict[str, Any], emit: Emit) -> None:
    """Run the notify command with the record as JSON on stdin and LLMCTL_OUTCOME, LLMCTL_EXIT_CODE,
    LLMCTL_RUN_ID and LLMCTL_RECIPE in its environment; its failure is a warning only. It runs in a process group
    of its own, ended whole at the timeout (a script's children too); its output is not kept (stderr's last
    NOTIFY_TAIL bytes go into the warning), so a chatty command cannot fill llmctl's memory."""
    import signal
    import tempfile

    env = os.environ | {
        "LLMCTL_OUTCOME": record["outcome"],
        "LLMCTL_EXIT_CODE": str(record["exit_code"]),
        "LLMCTL_RUN_ID": record["run_id"],
        "LLMCTL_RECIPE": record["recipe"] or record["recipe_file"],
    }
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stderr:
        stdin.write(json.dumps(redact(record), default=str).encode())
        stdin.seek(0)
        try:
            proc = subprocess.Popen(
                command, shell=True, stdin=stdin, stdout=subprocess.DEVNULL, stderr=stderr, env=env,
                start_new_session=True,
            )  # fmt: skip
        except OSError as problem:
            emit({"event": "warning", "message": f"--notify-cmd failed: {problem}"})
            return
        try:
            code = proc.wait(timeout=NOTIFY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            emit({"event": "warning", "message": f"--notify-cmd did not finish within {NOTIFY_TIMEOUT_S} s; stopped"})
            return
        if code != 0:
            stderr.seek(max(0, stderr.seek(0, 2) - NOTIFY_TAIL))
            said = stderr.read().decode(errors="replace").strip()
            emit({"event": "warning", "message": f"--notify-cmd exited {code}: {said}"})


def guess_run_dir(recipe_file: Path, overrides: list[str]) -> Path | None:
    """The run folder of a recipe that did not validate, from its `name:` (and `run_dir:` when that folder
    already holds a run), so an invalid firing is recorded where the valid ones are; None when unknown."""
    import yaml

    from llmctl.store.layout import MANIFEST, NAME_PATTERN, RunLayout, unsafe_run_dir

    try:
        raw = yaml.safe_load(recipe_file.read_text()[:1_000_000]) if recipe_file.is_file() else None
    except (OSError, ValueError, yaml.YAMLError):
        raw = None
    values = dict(raw) if isinstance(raw, dict) else {}
    values |= dict(o.split("=", 1) for o in overrides if o.split("=", 1)[0] in ("name", "run_dir"))
    name, run_dir = values.get("name"), values.get("run_dir")
    if isinstance(run_dir, str) and run_dir and (Path(run_dir) / MANIFEST).is_file():
        return Path(run_dir)
    if isinstance(name, str) and re.fullmatch(NAME_PATTERN, name) and not run_dir:
        folder = RunLayout.of(name, None).run_dir
        return folder if unsafe_run_dir(folder) is None else None
    return None
