"""README's crontab line, run as cron runs it (no TTY, a minimal environment, `sh -c`), firing after firing:
its --notify-cmd mails once when an incident opens, changes or closes and when a pipeline overrides an
operator (`mail` is replaced by a recorder); operators' rollbacks and pins hold; a killed firing is recorded
and alerted once by the next one; overlapping firings of a long run are no incident; a hanging notifier leaves
nothing behind."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmctl.store.registry import Registry
from tests.e2e.test_retraining_loop import LOOP

pytestmark = pytest.mark.slow
README = Path(__file__).parents[2] / "README.md"


def cron_command() -> str:
    """The command of README's crontab line (the five time fields dropped)."""
    block = re.search(r"```cron\n(.*?)```", README.read_text(), re.S)
    assert block, "README has a ```cron block"
    line = next(line for line in block[1].splitlines() if line.strip() and not line.startswith("#"))
    return line.split(None, 5)[5]


class Cron:
    """README's cron line for `recipe`, fired as cron fires it; `fire` returns (exit code, mail subjects)."""

    def __init__(self, recipe: Path, workdir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.recipe, self.workdir = recipe, workdir
        fake = workdir / "bin"
        fake.mkdir(exist_ok=True)
        (fake / "mail").write_text(f'#!/bin/sh\n{{ echo "$@"; cat; echo; }} >> {workdir}/mailbox\n')
        (fake / "mail").chmod(stat.S_IRWXU)
        self.llmctl = str(Path(sys.executable).parent / "llmctl")
        self.command = (
            cron_command()
            .replace("cd /srv/llm", f"cd {workdir}")
            .replace(".venv/bin/llmctl", self.llmctl)
            .replace("recipes/nightly.yaml", recipe.name)
        )
        self.env = {  # what cron gives a job, plus offline switches (tests never touch the network)
            "PATH": f"{fake}:/usr/bin:/bin",
            "HOME": str(workdir),
            "SHELL": "/bin/sh",
            "LOGNAME": "cron",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "LLMCTL_CACHE": os.environ.get("LLMCTL_CACHE", str(workdir / "cache")),
        } | (extra_env or {})
        self.mailbox = workdir / "mailbox"
        self.stdout: list[str] = []

    def edit(self, steps: str) -> None:
        text = self.recipe.read_text()
        self.recipe.write_text(re.sub(r"max_steps: (\d+|\w+)", f"max_steps: {steps}", text, count=1))

    def start(self, steps: str | None = None) -> subprocess.Popen[str]:
        if steps is not None:
            self.edit(steps)
        return subprocess.Popen(
            ["/bin/sh", "-c", self.command], env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip

    def fire(self, steps: str | None = None) -> tuple[int, list[str]]:
        before = self.mailbox.read_text() if self.mailbox.exists() else ""
        proc = self.start(steps)
        out, _ = proc.communicate(timeout=600)
        self.stdout.append(out)
        return proc.returncode, self.mails_since(before)

    def mails_since(self, before: str) -> list[str]:
        after = self.mailbox.read_text() if self.mailbox.exists() else ""
        sent = after[len(before) :]
        return [line for line in sent.splitlines() if line.startswith("-s llmctl nightly:")]

    def models(self, *args: str) -> None:
        subprocess.run([self.llmctl, "models", *args], cwd=self.workdir, env=self.env, check=True, capture_output=True)

    def history(self) -> list[dict]:
        path = self.workdir / "runs" / "tiny" / "history.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]


def mail(outcome: str, alert: str) -> str:
    return f"-s llmctl nightly: {outcome} ({alert}) ops@example.com"


def test_the_readme_cron_line_alerts_once_per_incident(tiny_recipe, workdir: Path) -> None:
    cron = Cron(tiny_recipe(steps=40, extra=LOOP.format(baseline="previous")), workdir)
    assert cron.fire() == (0, [])  # complete: quiet
    assert cron.fire() == (0, [])  # skipped: quiet
    assert cron.fire("1") == (3, [mail("rejected", "opened")])
    assert cron.fire() == (0, [])  # skipped: the rejection stands, no second mail
    assert cron.fire("lots") == (2, [mail("invalid", "changed")])  # the incident changed kind
    assert cron.fire("lots") == (2, [])  # still invalid: no second mail
    assert cron.fire("80") == (0, [mail("recovered", "closed")])
    assert cron.fire() == (0, [])
    assert [out for out in cron.stdout[:2] + cron.stdout[3:4] + cron.stdout[-1:] if out] == []  # --quiet: no cron mail
    history = cron.history()
    assert len(history) == 8 and len({h["run_id"] for h in history}) == 8  # one line per firing
    assert [h["alert"] for h in history] == [None, None, "opened", None, "changed", None, "closed", None]
    opened = history[2]["incident"]["id"]
    assert all(h["incident"]["id"] == opened for h in history[2:7]) and history[6]["incident"]["state"] == "closed"


def test_a_rollback_holds_until_a_new_challenger_beats_the_chosen_version(tiny_recipe, workdir: Path) -> None:
    cron = Cron(tiny_recipe(steps=40, extra=LOOP.format(baseline="registry:models/tiny")), workdir)
    registry = Registry(workdir / "models")
    assert cron.fire() == (0, []) and registry.current("tiny") == "v1"
    assert cron.fire("80") == (0, []) and registry.current("tiny") == "v2"
    assert cron.fire("60") == (3, [mail("rejected", "opened")])  # worse than v2
    cron.models("rollback", "tiny", "--reason", "v2 answers badly in production")
    # the champion changed (v1), so the gate runs again and the cached 60-step model passes it — but it was made
    # before the operator's decision: held, nothing published, nothing alerted, the incident stays open
    assert cron.fire() == (0, []) and registry.current("tiny") == "v1"
    held = cron.history()[-1]
    assert "made before" in held["held"][0] and held["published"] == [] and held["incident"]["state"] == "open"
    assert cron.fire() == (0, []) and registry.current("tiny") == "v1"  # no change: skipped
    assert registry.versions("tiny") == ["v1", "v2"]  # nothing republished
    # a new challenger (a changed recipe) beats v1: promoted; overriding the operator is an alert
    assert cron.fire("120") == (0, [mail("recovered", "override")]) and registry.current("tiny") == "v3"
    assert "rollback to v1" in cron.history()[-1]["overrode"][0]
    cron.models("promote", "tiny", "v1", "--reason", "back to v1 for now")  # the operator moves away from v3
    cron.models("pin", "tiny", "v1", "--reason", "freeze for the audit")
    assert cron.fire("160") == (0, []) and registry.current("tiny") == "v1"  # published, not promoted
    assert "pinned to v1" in cron.history()[-1]["held"][0] and registry.versions("tiny")[-1] == "v4"
    cron.models("unpin", "tiny")
    assert cron.fire("120") == (0, []) and registry.current("tiny") == "v1"  # v3's model: moved away from, held
    assert "never promotes it again" in cron.history()[-1]["held"][0]
    outcomes = [h["outcome"] for h in cron.history()]
    assert outcomes == ["complete", "complete", "rejected", "complete", "skipped", "recovered", "complete", "complete"]


def wait_for_stage(run_dir: Path, status: str = "running", timeout: float = 120) -> None:
    manifest = run_dir / "llmctl.lock.json"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if manifest.exists() and f'"status": "{status}"' in manifest.read_text().replace('":"', '": "'):
            return
        time.sleep(0.2)
    raise AssertionError(f"no stage became {status}")


def test_invalid_killed_and_overlapping_firings_are_each_told_once(tiny_recipe, workdir: Path) -> None:
    recipe = tiny_recipe(steps=40, extra=LOOP.format(baseline="previous"))
    recipe.write_text(recipe.read_text().replace("seed: 7\n", "seed: 7\nreport_to: [mlflow]\n"))
    cron = Cron(recipe, workdir)
    assert cron.fire() == (0, [])
    good = recipe.read_text()
    recipe.write_text(good + "  - {type: benchmark\n")  # a YAML syntax error: `name:` is still readable
    assert cron.fire() == (2, [mail("invalid", "opened")])
    assert cron.fire() == (2, [])
    recipe.write_text(good)  # fixed: nothing changed since the last good firing, and that proves the fix
    assert cron.fire() == (0, [mail("recovered", "closed")])

    killed = cron.start("400")  # `timeout -s KILL` (or kill -9) ends llmctl and its watcher mid-stage
    wait_for_stage(workdir / "runs" / "tiny")
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    code, mails = cron.fire()  # the next firing records the killed one, alerts once, then resumes and completes
    assert code == 0 and mails == [mail("killed", "opened"), mail("recovered", "closed")]
    history = cron.history()
    assert [h["outcome"] for h in history] == ["complete", "invalid", "invalid", "recovered", "killed", "recovered"]
    assert history[4]["stages"] == {"pretrain": {"status": "failed", "action": "run"}}
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(f"file:{workdir / 'mlruns'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    killed_runs = [r for r in runs if r.data.tags.get("llmctl.run_id") == history[4]["run_id"]]
    assert killed_runs and all(r.info.status == "KILLED" for r in killed_runs)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    recovering = [r for r in runs if r.data.tags.get("llmctl.run_id") == history[5]["run_id"]]
    assert [r.data.tags["llmctl.outcome"] for r in recovering] == ["recovered"]  # as the history says

    long = cron.start("800")  # a long firing, and cron fires three more times meanwhile
    wait_for_stage(workdir / "runs" / "tiny")
    overlapping = [cron.fire() for _ in range(3)]
    assert overlapping == [(5, [])] * 3  # locked by a live firing within its expected time: no incident
    assert long.wait(timeout=600) == 0
    history = cron.history()[-4:]
    assert [h["outcome"] for h in history] == ["locked"] * 3 + ["complete"]  # not "recovered" from its own locks
    assert all(h["alert"] is None for h in history)


def test_a_hanging_notifier_is_stopped_whole_and_its_failure_recorded(tiny_recipe, workdir: Path) -> None:
    recipe = tiny_recipe(steps=4)
    env = os.environ | {"LLMCTL_NOTIFY_TIMEOUT": "2"}
    hang = "sleep 4321 & sleep 4322; true"
    done = subprocess.run(
        [sys.executable, "-m", "llmctl", "run", str(recipe), "stages.pretrain.train.lr=x", "--notify-cmd", hang],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "did not finish within 2 s" in done.stderr
    left = subprocess.run(["pgrep", "-f", "sleep 432[12]"], capture_output=True, text=True)
    assert left.stdout == ""  # the script and its background child were ended with it
    first = json.loads((workdir / "runs" / "tiny" / "history.jsonl").read_text().splitlines()[-1])
    assert first["notify"] == {"ok": False, "timeout_s": 2.0, "message": first["notify"]["message"]}
    subprocess.run(
        [sys.executable, "-m", "llmctl", "run", str(recipe), "--notify-cmd", "true"], cwd=workdir, env=env, check=True,
        capture_output=True,
    )  # fmt: skip
    second = json.loads((workdir / "runs" / "tiny" / "history.jsonl").read_text().splitlines()[-1])
    assert second["notify"] == {"ok": True, "exit_code": 0} and second["previous_notify"]["ok"] is False


def test_a_stage_over_its_time_limit_stops_with_a_checkpoint_and_the_next_firing_resumes(
    tiny_recipe, workdir: Path
) -> None:
    from llmctl import api
    from llmctl.errors import Interrupted

    recipe = tiny_recipe(steps=3000, save_steps=1000)
    recipe.write_text(recipe.read_text().replace("    block_size: 32\n", "    block_size: 32\n    timeout_s: 8\n"))
    try:
        api.run(recipe)
        raise AssertionError("the stage should have been stopped by its time limit")
    except Interrupted as stopped:
        assert "stage 'pretrain' reached its timeout_s (8 s)" in str(stopped)
    record = json.loads((workdir / "runs/tiny/history.jsonl").read_text().splitlines()[-1])
    assert record["outcome"] == "interrupted" and "timeout_s" in record["message"]
    plan = api.plan(recipe)
    assert plan.steps[0].action == "resume"  # from the checkpoint the stop saved


def test_a_version_published_without_promotion_awaits_approval_and_alerts_once(tiny_recipe, workdir: Path) -> None:
    from llmctl import api

    deploy = "  - type: deploy\n    model: stage:pretrain\n    model_name: tiny\n    promote: false\n"
    recipe = tiny_recipe(steps=4, extra=deploy)
    first = api.run(recipe, if_changed=True)
    assert first.outcome == "awaiting-approval" and first.record["alert"] == "approval"
    assert first.record["awaiting"][0]["version"] == "v1" and Registry(workdir / "models").current("tiny") is None
    again = api.run(recipe, if_changed=True)
    assert again.outcome == "skipped" and again.record["alert"] is None
