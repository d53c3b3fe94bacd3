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

NOTIFY_TIMEOUT_S = 30  # LLMCTL_NOTIFY_TIMEOUT overrides
NOTIFY_TAIL = 200
LOCK_PATIENCE = 3  # a firing holding the lock longer than this many times the pipeline's expected time is stuck
LOCK_PATIENCE_UNKNOWN_S = 6 * 3600  # …and when no stage ever finished here, this long


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
    run_dir: Path | None = None  # known once the recipe loaded (`begin`)
    recipe_name: str | None = None
    held: list[str] = field(default_factory=list)  # deploys that left an operator's decision in place
    overrode: list[str] = field(default_factory=list)  # deploys that moved an alias against one
    notify: str | None = None  # the notify command (also given to killed firings found on the way)
    webhook: Any = None  # the recipe's `notify:` block, once it loaded (before the plan)

    def begin(self, run_dir: Path, recipe_name: str, notify: str | None, mlflow: bool = False) -> None:
        """The firing knows its run folder: firings found there that were killed without a line are recorded
        (and notified) first, then this one's marker is dropped."""
        self.run_dir, self.recipe_name = run_dir, recipe_name
        for info in history.unfinished(run_dir, self.run_id):
            self._record_killed(info, notify, mlflow)
        with contextlib.suppress(OSError, LlmctlError):  # a read-only run folder fails later, with its own message
            history.mark_started(run_dir, self.run_id, {"recipe_file": str(self.recipe_file)})

    def emit(self, event: dict[str, Any]) -> None:
        """The events callback the pipeline gets: remembers stage starts and ends, then passes the event on."""
        if event["event"] == "stage_start":
            self.stages[event["stage"]] = {"action": event["action"]}
        elif event["event"] == "stage_end":
            self.stages.setdefault(event["stage"], {"action": "run"}).update(
                status=event["status"], metrics=event.get("metrics") or {}, duration_s=event.get("duration_s")
            )
            if held := (event.get("metrics") or {}).get("held"):
                self.held.append(f"{event['stage']}: {held}")
            if overrode := (event.get("metrics") or {}).get("overrode"):
                self.overrode.append(f"{event['stage']}: overrode the operator's {overrode}")
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
            "produced_by": self._producers(),
            "fingerprints": {s.name: s.fingerprint for s in self.plan.steps} if self.plan else {},
        }

    def _producers(self) -> dict[str, str | None]:
        """Per stage, the firing whose run made its artifact: this one for stages it runs, else the one that
        last ran it (a version deployed from a cached stage names the firing that trained its weights)."""
        if self.plan is None:
            return {}
        from llmctl.store.manifest import Manifest

        manifest = Manifest.load(self.plan.run_dir)
        return {
            s.name: self.run_id if s.action in ("run", "resume") else manifest.stage(s.name).run_id
            for s in self.plan.steps
            if s.action != "skip"
        }

    def finish(self, error: BaseException | None, notify: str | None, skipped: bool = False) -> dict[str, Any]:
        """Record the firing in the run's history — its outcome, the incident it opens, continues or closes —
        after running the notify command (whose own result is part of the record); returns the record."""
        outcome, code = ("skipped", 0) if skipped else history.outcome_of(error)
        run_dir = self.plan.run_dir if self.plan else self.run_dir or guess_run_dir(self.recipe_file, self.overrides)
        last = _last_record(run_dir) if run_dir else None
        previous = history.previous_outcome(run_dir) if run_dir else None
        benign = outcome == "locked" and run_dir is not None and _benign_lock(error, run_dir)
        neutral = benign or (outcome == "complete" and bool(self.held) and not self.overrode)
        outcome, incident, alert = history.incident_after(last, outcome, self.run_id, neutral)
        record = self._record(outcome, code, error, run_dir, previous)
        record |= {"incident": incident, "alert": alert}
        if alert == "closed" and incident is not None:  # say what recovered
            record["message"] = (record["message"] + "; " if record["message"] else "") + (
                f"recovered from {incident['kind']} (incident {incident['id']}, open since {incident['opened']})"
            )
        outcome = self._deploy_alerts(record)
        if last is not None and (last.get("notify") or {}).get("ok") is False:
            record["previous_notify"] = last["notify"]
        if outcome == "recovered" and self.plan is not None:
            from llmctl import tracking

            if "mlflow" in tracking.recipe_trackers(self.plan.recipe):
                with contextlib.suppress(Exception):  # the tracker's tag must not lose the record
                    tracking.tag_outcome(self.plan.recipe.name, self.run_id, outcome)
        if notify:
            record["notify"] = _notify(notify, record, self.forward)
        self._webhook(record)
        self._append(run_dir, record)
        self.forward(
            {"event": "outcome", "outcome": outcome, "exit_code": code, "run_id": self.run_id, "record": record}
        )
        return record

    def _deploy_alerts(self, record: dict[str, Any]) -> str:
        """What deploys add to the record: versions held back by an operator's decision (`held`), a new version
        published unpromoted (outcome `awaiting-approval`, alert `approval`), an operator's decision overridden
        (alert `override`: what is served changed against it). Returns the outcome."""
        if self.held:
            record["held"] = self.held
        waiting = [p for p in record.get("published", []) if p.get("new") and p.get("promoted") is False]
        if waiting and record["outcome"] in ("complete", "recovered"):
            record |= {"outcome": "awaiting-approval", "awaiting": waiting, "alert": record["alert"] or "approval"}
        if self.overrode:
            record["overrode"] = self.overrode
            record["alert"] = record["alert"] if record["alert"] in ("opened", "changed") else "override"
        return str(record["outcome"])

    def _webhook(self, record: dict[str, Any]) -> None:
        """Deliver the record to the recipe's `notify.webhook` (when it wants this firing); the delivery goes into
        the record. An invalid recipe has no webhook to read: `--notify-cmd` is the notifier that sees those."""
        spec = self.plan.recipe.notify if self.plan is not None else self.webhook
        if spec is None:
            return
        from llmctl.run import webhook

        if webhook.wanted(spec, record):
            record["webhook"] = webhook.deliver(spec, record)
            if not record["webhook"]["ok"]:
                self.forward({"event": "warning", "message": f"webhook not delivered: {record['webhook']['error']}"})

    def _append(self, run_dir: Path | None, record: dict[str, Any]) -> None:
        if run_dir is None:
            return
        try:
            history.append(run_dir, record)
        except (OSError, LlmctlError) as problem:  # a full disk or a planted link must not hide the outcome
            self.forward({"event": "warning", "message": f"run history not written: {problem}"})
        history.mark_finished(run_dir, record["run_id"])

    def _record_killed(self, info: dict[str, Any], notify: str | None, mlflow: bool) -> None:
        """Record a firing that died without its line (found by its marker): outcome `killed`, the stage it was
        running marked failed, its MLflow run closed, the incident opened and notified."""
        assert self.run_dir is not None
        run_id, pid = str(info["run_id"]), int(info.get("pid") or 0)
        stage = fail_running_stage(self.run_dir, pid, "killed without recording (SIGKILL of the whole run)")
        where = f" while stage '{stage}' was running" if stage else ""
        last = _last_record(self.run_dir)
        outcome, incident, alert = history.incident_after(last, "killed", run_id)
        record: dict[str, Any] = {
            "run_id": run_id,
            "recipe": self.recipe_name,
            "recipe_file": info.get("recipe_file") or str(self.recipe_file),
            "run_dir": str(self.run_dir.absolute()),
            "outcome": outcome,
            "exit_code": history.EXIT_CODES["killed"],
            "previous_outcome": history.previous_outcome(self.run_dir),
            "message": f"the firing (pid {pid}) was killed{where} before it could record an outcome "
            "(SIGKILL of llmctl and its watcher: `timeout -s KILL`, `kill -9`); found by firing " + self.run_id,
            "started": info.get("started"),
            "finished": None,
            "detected": iso_time(),
            "duration_s": None,
            "changed": [],
            "published": [],
            "stages": {stage: {"status": "failed", "action": "run"}} if stage else {},
            "incident": incident,
            "alert": alert,
        }
        if mlflow:
            from llmctl import tracking

            with contextlib.suppress(Exception):  # a tracker that cannot be reached must not stop this firing
                tracking.close_killed(self.recipe_name or "", run_id)
        if notify:
            record["notify"] = _notify(notify, record, self.forward)
        self._webhook(record)
        self._append(self.run_dir, record)
        self.forward({"event": "warning", "message": record["message"]})

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
        from llmctl.store.manifest import Manifest

        rejected = getattr(error, "stage", None) if isinstance(error, GateFailed) else None
        manifest = Manifest.load(self.plan.run_dir)
        found = {}
        for step in self.plan.steps:
            seen = self.stages.get(step.name)
            result: dict[str, Any] = {"type": step.spec.type, "action": step.action, "reason": step.reason}
            if seen is not None and "status" in seen:  # lineage: which firing made the artifact, and its identity
                result |= {"fingerprint": step.fingerprint, "produced_by": manifest.stage(step.name).run_id}
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
                if seen.get("duration_s") is not None:
                    result["duration_s"] = seen["duration_s"]
            else:  # started, never ended
                result["status"] = outcome if outcome in ("rejected", "interrupted") else "failed"
            found[step.name] = result
        return found


def _last_record(run_dir: Path) -> dict[str, Any] | None:
    """The newest record, for the incident state; a skipped line written before incidents existed says nothing
    about one, so the newest firing that did something decides then."""
    last = history.last_record(run_dir)
    if last is not None and last.get("outcome") == "skipped" and "incident" not in last:
        return history.jsonl.find_last(
            run_dir / history.HISTORY, "run_id", lambda r: r.get("outcome") != "skipped", skip=history.SKIPPED
        )
    return last


def _benign_lock(error: BaseException | None, run_dir: Path) -> bool:
    """Whether a `locked` firing met a holder that is alive and within LOCK_PATIENCE times the pipeline's
    expected time (the stages' last durations here): a long run under a frequent cron, not an incident."""
    since = getattr(error, "since", None)
    if since is None:
        return True  # an old-style lock file: no age to judge by
    from llmctl.store.manifest import Manifest

    try:
        expected = sum(s.duration_s or 0 for s in Manifest.load(run_dir).data.stages.values() if not s.cached)
    except (OSError, ValueError, LlmctlError):
        expected = 0
    patience = LOCK_PATIENCE * expected if expected else LOCK_PATIENCE_UNKNOWN_S
    return time.time() - since <= patience


def fail_running_stage(run_dir: Path, pid: int, why: str) -> str | None:
    """Mark the stage process `pid` was running as failed in the manifest; its name (None when none was)."""
    from llmctl.store.layout import MANIFEST
    from llmctl.store.manifest import Manifest

    if not (run_dir / MANIFEST).is_file():
        return None
    manifest = Manifest.load(run_dir)
    running = [n for n, s in manifest.data.stages.items() if s.status == "running" and s.pid == pid]
    for name in running:
        manifest.update(name, status="failed", error=why, finished=iso_time())
    return running[0] if running else None


def _published(stages: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The registry versions that deploy stages which ran in this firing published (or found already there)."""
    return [
        {
            "stage": name,
            "name": s.get("name"),
            "version": s["metrics"]["version"],
            "new": s["metrics"].get("new_version"),
            "promoted": s["metrics"].get("promoted"),
        }
        for name, s in stages.items()
        if s["status"] == "complete" and "version" in s.get("metrics", {}) and not s["metrics"].get("held")
    ]


def _notify(command: str, record: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Run the notify command with the record as JSON on stdin and LLMCTL_OUTCOME, LLMCTL_ALERT (opened, changed,
    closed or empty), LLMCTL_EXIT_CODE, LLMCTL_RUN_ID and LLMCTL_RECIPE in its environment; returns its result
    ({ok, exit_code | timeout_s, message}) for the record — its failure is a warning, never the firing's. It runs
    in a process group of its own, ended whole at the timeout (LLMCTL_NOTIFY_TIMEOUT, default NOTIFY_TIMEOUT_S:
    a script's children too); its output is not kept (stderr's last NOTIFY_TAIL bytes go into the warning), so a
    chatty command cannot fill llmctl's memory."""
    import signal
    import tempfile

    timeout = _notify_timeout()
    env = os.environ | {
        "LLMCTL_OUTCOME": record["outcome"],
        "LLMCTL_ALERT": record.get("alert") or "",
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
            return _notify_failed(emit, {"ok": False, "message": f"--notify-cmd failed: {problem}"})
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            message = f"--notify-cmd did not finish within {timeout:g} s; stopped (LLMCTL_NOTIFY_TIMEOUT)"
            return _notify_failed(emit, {"ok": False, "timeout_s": timeout, "message": message})
        if code != 0:
            stderr.seek(max(0, stderr.seek(0, 2) - NOTIFY_TAIL))
            said = stderr.read().decode(errors="replace").strip()
            return _notify_failed(
                emit, {"ok": False, "exit_code": code, "message": f"--notify-cmd exited {code}: {said}"}
            )
    return {"ok": True, "exit_code": 0}


def _notify_failed(emit: Emit, result: dict[str, Any]) -> dict[str, Any]:
    emit({"event": "warning", "message": result["message"]})
    return result


def _notify_timeout() -> float:
    try:
        return max(1.0, float(os.environ.get("LLMCTL_NOTIFY_TIMEOUT", NOTIFY_TIMEOUT_S)))
    except ValueError:
        return NOTIFY_TIMEOUT_S


def guess_run_dir(recipe_file: Path, overrides: list[str]) -> Path | None:
    """The run folder of a recipe that did not validate, from its `name:` (and `run_dir:` when that folder
    already holds a run), so an invalid firing is recorded where the valid ones are — read as YAML, or from the
    top-level lines when the YAML does not parse; else the recipe file's own state folder
    (runs/.recipes/STEM-HASH), so the firing is recorded all the same. None only when no file is named."""
    import hashlib

    import yaml

    from llmctl.store.layout import MANIFEST, NAME_PATTERN, RUNS_ROOT, RunLayout, unsafe_run_dir

    try:
        text = recipe_file.read_text()[:1_000_000] if recipe_file.is_file() else ""
    except (OSError, ValueError):
        text = ""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:  # a syntax error elsewhere: the top-level `name:` and `run_dir:` lines still say it
        raw = {m[1]: m[2].strip().strip("'\"") for m in re.finditer(r"^(name|run_dir):[ \t]*([^#\n]*)", text, re.M)}
    values = dict(raw) if isinstance(raw, dict) else {}
    values |= dict(o.split("=", 1) for o in overrides if o.split("=", 1)[0] in ("name", "run_dir"))
    name, run_dir = values.get("name"), values.get("run_dir")
    if isinstance(run_dir, str) and run_dir and (Path(run_dir) / MANIFEST).is_file():
        return Path(run_dir)
    if isinstance(name, str) and re.fullmatch(NAME_PATTERN, name) and not run_dir:
        folder = RunLayout.of(name, None).run_dir
        if unsafe_run_dir(folder) is None:
            return folder
    if not str(recipe_file):
        return None
    key = hashlib.sha256(str(recipe_file.absolute()).encode()).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", recipe_file.stem)[:40] or "recipe"
    return RUNS_ROOT / ".recipes" / f"{stem}-{key}"
