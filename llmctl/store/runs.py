"""Reading run folders: the runs under a root, one run's record with its pending and running stages, a stage's
metrics (`llmctl runs`, `show`, `report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmctl.errors import UsageError
from llmctl.store.layout import MANIFEST, OUTPUT, RESOLVED, RUNS_ROOT, TMP_SUFFIX
from llmctl.store.lock import RunLock
from llmctl.store.manifest import RunRecord, StageRecord


def list_runs(root: Path) -> list[dict[str, Any]]:
    """One summary per run folder under `root` that has a manifest, newest first."""
    found = []
    for manifest_path in sorted(root.glob(f"*/{MANIFEST}"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            record = _read(manifest_path)
        except UsageError:  # one damaged run must not hide the others
            found.append(
                {
                    "run": manifest_path.parent.name,
                    "recipe": "?",
                    "stages": 0,
                    "complete": 0,
                    "status": "unreadable manifest",
                    "updated": "",
                }
            )
            continue
        statuses = [_status(s, manifest_path.parent) for s in record.stages.values()]
        planned = planned_stages(manifest_path.parent)
        found.append(
            {
                "run": manifest_path.parent.name,
                "recipe": record.recipe,
                "stages": len(set(planned) | set(record.stages)),
                "complete": statuses.count("complete"),
                "status": next(
                    (s for s in ("running", "failed", "interrupted", "rejected") if s in statuses),
                    "complete" if statuses else "empty",
                ),
                "updated": max((s.finished or s.started or "" for s in record.stages.values()), default=""),
                "last_outcome": _last_outcome(manifest_path.parent),
            }
        )
    return found


def _last_outcome(run_dir: Path) -> str | None:
    """The outcome of the run's last recorded firing (None before the first)."""
    from llmctl.store import history

    return history.last_outcome(run_dir)


def _status(stage: StageRecord, run_dir: Path) -> str:
    """A stage marked running whose run no longer holds the lock was killed: report it as interrupted."""
    return "interrupted" if stage.status == "running" and not RunLock.is_held(run_dir) else stage.status


def load_run(ref: str, root: Path) -> RunRecord:
    """The record of a run given by name (under `root`) or by folder, with stale 'running' corrected."""
    for folder in (Path(ref), root / ref):
        if (folder / MANIFEST).exists():
            record = _read(folder / MANIFEST)
            # Paths are rewritten to where the run folder is now, so a copied or moved run reads (and its report
            # writes) only there, never in the folder it was copied from.
            record.run_dir = str(folder.absolute())
            for stage in record.stages.values():
                stage.status = _status(stage, folder)
                if stage.dir:
                    stage.output = str((folder / stage.dir / OUTPUT).absolute())
                if stage.status == "running":
                    stage.live = live_progress(folder / f"{stage.dir}{TMP_SUFFIX}")
            _add_pending(record, folder)
            return record
    known = ", ".join(r["run"] for r in list_runs(root)) or "none"
    raise UsageError(f"no run '{ref}' (looked in {ref}/ and {root / ref}/); runs under {root}/: {known}")


def planned_stages(run_dir: Path) -> list[str]:
    """The stage names of the recipe the run last started with (recipe.resolved.yaml), in order; [] without one."""
    import yaml

    try:
        tree = yaml.safe_load((run_dir / RESOLVED).read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError):  # (a damaged file: not UTF-8, not YAML)
        return []
    stages = tree.get("stages") if isinstance(tree, dict) else None
    return [str(s.get("name") or s.get("type")) for s in stages or [] if isinstance(s, dict)]


def _add_pending(record: RunRecord, run_dir: Path) -> None:
    """Stages of the recipe that have not started yet, as `pending`, in the recipe's order."""
    names = planned_stages(run_dir)
    if not names or all(n in record.stages for n in names):
        return
    ordered = {n: record.stages.get(n) or StageRecord(status="pending") for n in names}
    record.stages = ordered | {n: s for n, s in record.stages.items() if n not in ordered}


def live_progress(stage_tmp: Path) -> dict[str, Any]:
    """A running stage's last logged step, loss and step count (from its logs/train.jsonl), or {}."""
    import json

    path = stage_tmp / "logs" / "train.jsonl"
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 65536))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return {}
    live: dict[str, Any] = {}
    for line in lines[1:] if len(lines) > 1 else lines:  # the first may be cut
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        live["step"] = entry.get("step", live.get("step"))
        if isinstance(entry.get("loss"), (int, float)):
            live["loss"] = entry["loss"]
    return live


def _read(path: Path) -> RunRecord:
    try:
        return RunRecord.model_validate_json(path.read_text())
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"{path}: unreadable manifest ({reason})") from None


def stage_metrics(ref: str, stage: str, root: Path = RUNS_ROOT) -> dict[str, Any] | None:
    """The metrics of a past run's stage that its gate accepted (by run name or folder), or None."""
    entry = load_run(ref, root).stages.get(stage)
    return entry.baseline_metrics() if entry is not None else None
