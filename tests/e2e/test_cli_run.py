"""The CLI end to end on tiny recipes: caching, re-runs, resume after kill -9, locking, failures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app
from llmctl.store.lock import RunLock
from tests.conftest import kill_run_at_step, run_json
from tests.stages.test_pretrain import CONTINUE

pytestmark = pytest.mark.slow
runner = CliRunner()


def ends(events: list[dict]) -> dict[str, str]:
    return {e["stage"]: e["status"] for e in events if e["event"] == "stage_end"}


def test_run_twice_then_change_one_stage(tiny_recipe, workdir: Path) -> None:
    path = str(tiny_recipe(steps=10, extra=CONTINUE))
    code, events = run_json(path)
    assert code == 0 and ends(events) == {"pretrain": "complete", "more": "complete"}
    assert events[-1] | {"time": "t", "run_id": "r"} == {
        "time": "t",
        "run_id": "r",
        "event": "run_end",
        "status": "complete",
        "outcome": "complete",
        "run_dir": "runs/tiny",
    }

    code, events = run_json(path)
    assert code == 0 and ends(events) == {"pretrain": "cached", "more": "cached"}
    assert not [e for e in events if e["event"] == "progress"]  # nothing trained

    code, events = run_json(path, "stages.more.train.lr=5e-4")
    assert code == 0 and ends(events) == {"pretrain": "cached", "more": "complete"}
    starts = {e["stage"]: e["reason"] for e in events if e["event"] == "stage_start"}
    assert starts["more"] == "changed: spec (train.lr)"

    manifest = json.loads((workdir / "runs/tiny/llmctl.lock.json").read_text())
    entry = manifest["stages"]["more"]
    assert entry["status"] == "complete" and entry["seed"] == 7 and entry["versions"]["torch"].startswith("2.13")
    assert entry["metrics"]["steps"] == 5 and entry["inputs"] == {"model": "stage:pretrain"}
    assert (workdir / "runs/tiny/recipe.resolved.yaml").read_text().count("type: pretrain") == 2

    shown = runner.invoke(app, ["--json", "show", "tiny"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["stages"]["pretrain"]["status"] == "complete"
    listed = runner.invoke(app, ["--json", "runs"])
    assert json.loads(listed.stdout)[0]["complete"] == 2


def test_kill_9_leaves_no_complete_stage_and_the_rerun_resumes(tiny_recipe, workdir: Path) -> None:
    path = str(tiny_recipe(steps=60, save_steps=10))
    kill_run_at_step(path, workdir, 25)
    stage_tmp = workdir / "runs/tiny/01-pretrain.tmp"
    assert not (workdir / "runs/tiny/01-pretrain").exists()  # nothing looks complete
    shown = json.loads(runner.invoke(app, ["--json", "show", "tiny"]).stdout)
    assert shown["stages"]["pretrain"]["status"] == "interrupted"  # marked running, but its lock died with it
    assert (stage_tmp / "checkpoints" / "checkpoint-20" / "trainer_state.json").exists()

    planned = runner.invoke(app, ["--json", "plan", path])
    step = json.loads(planned.stdout)["steps"][0]
    assert step["action"] == "resume" and "checkpoint-" in step["reason"]

    code, events = run_json(path)
    assert code == 0 and ends(events) == {"pretrain": "complete"}
    progress_steps = [e["step"] for e in events if e["event"] == "progress" and "loss" in e]
    assert progress_steps and min(progress_steps) > 20  # it did not start over
    resumed = json.loads((workdir / "runs/tiny/01-pretrain/metrics.json").read_text())

    code, events = run_json(path, "run_dir=runs/straight")
    straight = json.loads((workdir / "runs/straight/01-pretrain/metrics.json").read_text())
    assert resumed["steps"] == straight["steps"] == 60
    assert resumed["eval_loss"] == pytest.approx(straight["eval_loss"], rel=1e-3)


def test_sigterm_saves_a_checkpoint_releases_the_lock_and_exits_130(tiny_recipe, workdir: Path) -> None:
    import signal

    path = str(tiny_recipe(steps=60, save_steps=1000))  # no periodic checkpoint: the one found is the stop's
    assert kill_run_at_step(path, workdir, 25, signal.SIGTERM) == 130
    checkpoints = sorted((workdir / "runs/tiny/01-pretrain.tmp/checkpoints").glob("checkpoint-*"))
    assert len(checkpoints) == 1 and 25 <= int(checkpoints[0].name.split("-")[1]) < 60
    assert not RunLock.is_held(workdir / "runs/tiny")
    shown = json.loads(runner.invoke(app, ["--json", "show", "tiny"]).stdout)
    assert shown["stages"]["pretrain"]["status"] == "interrupted"
    code, events = run_json(path)
    assert code == 0 and events[1]["action"] == "resume" and checkpoints[0].name in events[1]["reason"]
    assert json.loads((workdir / "runs/tiny/01-pretrain/metrics.json").read_text())["steps"] == 60


def test_if_changed_skips_an_unchanged_recipe_and_notify_gets_a_summary(tiny_recipe, workdir: Path) -> None:
    path = str(tiny_recipe(steps=4))
    notify = f"cat > {workdir / 'summary.json'}"
    code, events = run_json(path, "--if-changed", "--notify-cmd", notify)
    assert code == 0 and ends(events) == {"pretrain": "complete"}
    summary = json.loads((workdir / "summary.json").read_text())
    assert (
        summary["outcome"] == "complete"
        and summary["exit_code"] == 0
        and summary["stages"]["pretrain"]["metrics"]["steps"] == 4
    )

    code, events = run_json(path, "--if-changed")
    assert code == 0 and [e["event"] for e in events] == ["skipped", "outcome"]
    assert "nothing changed" in events[0]["reason"]
    quiet = runner.invoke(app, ["run", path, "--if-changed", "--quiet"])
    assert quiet.exit_code == 0 and quiet.output.strip() == ""  # cron mails whatever a job prints

    (workdir / "corpus.jsonl").write_text((workdir / "corpus.jsonl").read_text() + '{"text": "A new line of data."}\n')
    code, events = run_json(path, "--if-changed", "--notify-cmd", notify)
    assert code == 0 and ends(events) == {"pretrain": "complete"}  # the data changed: it ran

    code, events = run_json(path, "--force", "stages.pretrain.data.path=missing.jsonl", "--notify-cmd", notify)
    assert code == 2 and json.loads((workdir / "summary.json").read_text())["outcome"] == "invalid"
    quiet = runner.invoke(app, ["run", path, "--force", "--quiet"])  # the incident closes: one line says so
    said = quiet.output.strip().splitlines()
    assert (
        quiet.exit_code == 0
        and len(said) == 1
        and said[0].startswith("tiny: recovered (closed): recovered from invalid")
    )


def test_tensorboard_tracking_and_the_html_report(tiny_recipe, workdir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, events = run_json(str(tiny_recipe(steps=10)), "report_to=[tensorboard]", "stages.pretrain.samples=[The cat]")
    assert code == 0
    logs = workdir / "runs/tiny/01-pretrain/logs"
    accumulator = EventAccumulator(str(next(logs.glob("tensorboard/**/events.out.tfevents.*")).parent))
    accumulator.Reload()
    assert "train/loss" in accumulator.Tags()["scalars"] and len(accumulator.Scalars("train/loss")) == 2
    recipe_text = accumulator.Tensors("llmctl/recipe/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| stage.train.max_steps | 10 |" in recipe_text and "| recipe.name | tiny |" in recipe_text

    result = runner.invoke(app, ["report", "tiny"])
    assert result.exit_code == 0
    report = workdir / "runs/tiny/report"
    page = (report / "index.html").read_text()
    assert ">pretrain</h2>" in page and "data:image/png;base64," in page and "Stages" in page
    assert (report / "pretrain-curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ">Speed and memory</h2>" in page and "train_samples_per_s" in page  # the run's own figures
    assert ">Versions</h2>" in page and "<td>transformers</td>" in page and ">Recipe</h2>" in page
    assert ">Samples</h2>" in page and "<pre>The cat</pre>" in page
    assert (
        "<nav><b>Contents</b>" in page and "<a href='#s1'>pretrain</a>" in page and "<h2 id='s1'>pretrain</h2>" in page
    )
    from llmctl.report import _history, _panel_series

    panels = _panel_series(_history(workdir / "runs/tiny/01-pretrain"))
    assert {"loss", "learning rate", "gradient norm"} <= set(panels)  # logged, so plotted
    assert "<details><summary>values on hover</summary><svg" in page and "<title>train loss — step 5: " in page

    assert run_json(str(tiny_recipe(steps=10)), "name=tiny2", "stages.pretrain.train.lr=1e-2")[0] == 0
    compared = runner.invoke(app, ["--json", "report", "tiny", "tiny2"])
    assert compared.exit_code == 0, compared.output
    page = Path(json.loads(compared.output)["report"]).read_text()
    assert "Runs tiny vs tiny2" in page and "<th>tiny</th><th>tiny2</th>" in page and ">pretrain</h2>" in page


def unset(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Unset `names` so llmctl's defaults apply, and unset them again after the test: llmctl sets them in
    os.environ, and a leaked WANDB_MODE would reach later tests' subprocesses."""
    for name in names:
        monkeypatch.setenv(name, "")  # records the current state, which monkeypatch restores at the end
        monkeypatch.delenv(name)


def test_mlflow_file_store_receives_metrics_and_the_resolved_recipe(
    tiny_recipe,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    unset(monkeypatch, "MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_NAME")
    code, events = run_json(str(tiny_recipe(steps=10)), "report_to=[mlflow]")
    assert code == 0, events[-1]
    client = mlflow.MlflowClient(tracking_uri=f"file:{workdir / 'mlruns'}")
    experiment = client.get_experiment_by_name("tiny").experiment_id
    parent, run = sorted(
        client.search_runs([experiment]), key=lambda r: r.info.run_name != f"tiny/{events[-1]['run_id']}"
    )
    assert parent.info.status == "FINISHED" and parent.data.tags["llmctl.outcome"] == "complete"
    assert (
        parent.data.tags["llmctl.run_id"] == events[-1]["run_id"]
        and "corpus.jsonl" in parent.data.tags["llmctl.data.pretrain"]
    )
    assert run.info.run_name == "tiny/pretrain" and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id  # nested in the firing's run
    assert {"loss", "eval_loss", "stage/eval_loss", "stage/steps"} <= run.data.metrics.keys()
    assert run.data.params["llmctl.stage.train.max_steps"] == "10" and run.data.params["llmctl.recipe.name"] == "tiny"
    assert "learning_rate" in run.data.params  # the TrainingArguments, logged by transformers' own callback
    recipe = Path(client.download_artifacts(run.info.run_id, "llmctl/recipe.resolved.yaml", str(workdir)))
    assert "max_steps: 10" in recipe.read_text()

    gate = "  - type: benchmark\n    perplexity: {data: {path: corpus.jsonl, limit: 5}, max_length: 32}\n    gate: {checks: ['perplexity < 1']}\n"
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")  # set for the first recipe in this process; each recipe has its own
    code, events = run_json(str(tiny_recipe(name="gated", steps=2, extra=gate)), "report_to=[mlflow]")
    assert code == 3
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("gated").experiment_id])}
    firing = next(r for name, r in runs.items() if name.startswith("gated/2"))
    assert firing.info.status == "FAILED" and firing.data.tags["llmctl.outcome"] == "rejected"
    assert runs["gated/benchmark"].info.status == "FAILED" and runs["gated/pretrain"].info.status == "FINISHED"


def test_wandb_runs_offline_without_a_key_and_records_the_recipe(
    tiny_recipe,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unset(monkeypatch, "WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "WANDB_DIR")
    second = (
        "  - type: pretrain\n    name: again\n    model: {config: {model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 32}}\n"
        "    tokenizer: {vocab_size: 300}\n    data: {path: corpus.jsonl}\n    block_size: 32\n    train: {max_steps: 2}\n"
    )
    code, events = run_json(str(tiny_recipe(steps=10, extra=second)), "report_to=[wandb]")
    assert code == 0, events[-1]
    # wandb 0.31 has no Python reader for its offline log; its records are protobuf, so the strings show as bytes
    runs = [path.read_bytes() for path in (workdir / "wandb").glob("offline-run-*/run-*.wandb")]
    assert len(runs) == 2 and sum(b"tiny/again" in raw for raw in runs) == 1  # one run per stage
    (raw,) = [raw for raw in runs if b"tiny/again" not in raw]
    assert b"tiny/pretrain" in raw and b"train/loss" in raw  # the run's name and the curve
    assert b"stage.train.max_steps" in raw and b"learning_rate" in raw  # the resolved recipe and the TrainingArguments
    assert b"stage/eval_loss" in raw  # the stage's metrics, in the run's summary: the run was finished with the stage


def test_json_stdout_stays_clean_when_the_user_runs_wandb_offline(tiny_recipe, workdir: Path) -> None:
    """transformers prints a notice to stdout on import when WANDB_MODE=offline; --json output must not carry it."""
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "llmctl", "--json", "run", str(tiny_recipe(steps=2))],
        cwd=workdir,
        env=os.environ | {"WANDB_MODE": "offline"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["event"] == "run_end" and "Running in WANDB offline mode" in result.stderr


def test_compare_shows_runs_side_by_side(tiny_recipe) -> None:
    path = str(tiny_recipe(steps=4))
    assert run_json(path)[0] == 0 and run_json(path, "run_dir=runs/other", "stages.pretrain.train.lr=1e-2")[0] == 0
    result = runner.invoke(app, ["--json", "compare", "tiny", "other"])
    assert result.exit_code == 0
    table = json.loads(result.stdout)
    assert table["pretrain/steps"] == {"tiny": 4, "other": 4}
    assert table["pretrain/eval_loss"]["tiny"] != table["pretrain/eval_loss"]["other"]
    assert runner.invoke(app, ["compare", "tiny"]).exit_code == 2


def test_doctor_reports_the_environment(tiny_recipe) -> None:
    result = runner.invoke(app, ["--json", "doctor", str(tiny_recipe())])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["packages"]["trl"] == "1.12.0" and report["imports"]["lm-eval"] == "ok"
    assert {"cuda", "cpu_native_bf16", "auto_dtype"} <= report["devices"].keys() and report["disk_free_gib"] > 0


def test_locked_run_exits_5(tiny_recipe, workdir: Path) -> None:
    path = str(tiny_recipe())
    with RunLock(workdir / "runs/tiny"):
        result = runner.invoke(app, ["run", path])
    assert result.exit_code == 5
    assert f"locked by pid {os.getpid()} since" in result.output


def test_bad_data_is_exit_2_and_a_crash_is_exit_4(tiny_recipe, workdir: Path) -> None:
    path = str(tiny_recipe())
    result = runner.invoke(app, ["run", path, "stages.pretrain.data.columns={text: body}"])
    assert result.exit_code == 2
    assert "has no column body; available: text" in result.output and "Traceback" not in result.output

    original = (workdir / "corpus.jsonl").read_text()
    (workdir / "corpus.jsonl").write_text('{"text": "fine"}\nnot json at all\n')
    result = runner.invoke(app, ["run", path])  # bad data is the recipe's input: exit 2 naming file and line
    assert result.exit_code == 2 and "corpus.jsonl:2:1: not valid JSON" in result.output

    (workdir / "corpus.jsonl").write_text(original)
    # 32 dims do not split in 3 heads
    result = runner.invoke(app, ["run", path, "stages.pretrain.model.config.n_head=3"])
    assert result.exit_code == 2 and "cannot be built from it" in result.output  # found at plan, before anything trains

    (workdir / "broken-model").mkdir()
    (workdir / "broken-model/config.json").write_text("{}")  # a folder that only looks like a model: found at run time
    result = runner.invoke(
        app, ["run", path, "stages.pretrain.model.config=null", "stages.pretrain.model.init=broken-model"]
    )
    assert result.exit_code == 4, result.output
    assert "stage 'pretrain' failed" in result.output and "error.log" in result.output
    manifest = json.loads((workdir / "runs/tiny/llmctl.lock.json").read_text())
    assert manifest["stages"]["pretrain"]["status"] == "failed"


def test_dry_run_runs_nothing(tiny_recipe, workdir: Path) -> None:
    code, events = run_json(str(tiny_recipe()), "--dry-run")
    assert code == 0 and events[0]["event"] == "plan" and not ends(events)
    assert not (workdir / "runs/tiny/01-pretrain").exists()


def test_shipped_quickstart_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's main job, unchanged (about 3 minutes): every stage runs and hands on a loadable artifact, and
    PPO beats SFT on the demo task — held-out reward and exact match both rise (issue 5's acceptance)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    run_dir = tmp_path / "qs"
    code, events = run_json(
        "recipes/quickstart.yaml", f"run_dir={run_dir}", f"stages.deploy.registry={tmp_path}/models"
    )
    assert code == 0, events
    assert [e["stage"] for e in events if e["event"] == "stage_end"] == [
        "pretrain",
        "sft",
        "bench-sft",
        "reward",
        "ppo",
        "bench-ppo",
        "quantize",
        "bench-int8",
        "deploy",
    ]

    def stage_metrics(folder: str) -> dict:
        return json.loads((run_dir / folder / "metrics.json").read_text())

    ppo = stage_metrics("05-ppo")
    assert (
        ppo["mean_reward"] > ppo["mean_reward_before"] + 1 and ppo["exact_match"] > ppo["exact_match_before"] + 0.05
    ), ppo
    assert stage_metrics("06-bench-ppo")["toy_add/exact_match"] == ppo["exact_match"]
    assert {"exact_match_before", "exact_match"} <= stage_metrics("02-sft").keys()
    # Lm-eval agrees
    assert stage_metrics("03-bench-sft")["toy_add/exact_match"] == stage_metrics("02-sft")["exact_match"]
    assert "pairwise_accuracy" in stage_metrics("04-reward")
    quantized = stage_metrics("07-quantize")
    assert quantized["size_mb"] < quantized["size_mb_before"] and quantized["config"]["bits"] == 8
    assert stage_metrics("08-bench-int8")["gate_passed"] is True
    assert (tmp_path / "models/toy-math/current").resolve().name == "v1"
    metrics = stage_metrics("01-pretrain")
    assert metrics["last_logged_loss"] < metrics["first_logged_loss"]
    assert [s["prompt"] for s in metrics["samples"]] == ["3 plus 4 is", "The small cat"]
    output = run_dir / "01-pretrain" / "output"
    model, tokenizer = AutoModelForCausalLM.from_pretrained(output), AutoTokenizer.from_pretrained(output)
    ids = model.generate(**tokenizer("The small", return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert len(tokenizer.decode(ids[0])) > len("The small")


def test_without_a_terminal_progress_comes_as_plain_lines_with_rate_and_eta(
    tiny_recipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMCTL_PROGRESS_EVERY", "0")  # every progress event (the default is one line per 30 s)
    result = runner.invoke(app, ["run", str(tiny_recipe(steps=20))])  # CliRunner's output is not a terminal
    assert result.exit_code == 0, result.output
    code, events = run_json(str(tiny_recipe(steps=20)), "run_dir=runs/again")
    start = next(e for e in events if e["event"] == "stage_start")
    assert start["max_steps"] == 20  # known before training starts: the bar shows 0/20, not 0/?
    lines = [line.strip() for line in result.output.splitlines() if line.strip().startswith("pretrain: step ")]
    assert lines and lines[-1].startswith("pretrain: step 20/20 (100%)") and "it/s" in lines[-1]
    assert any("ETA" in line for line in lines) and sum(line.startswith("pretrain: step 20/20") for line in lines) == 1
    steps = [int(line.split()[2].split("/")[0]) for line in lines]
    assert steps == sorted(steps) and len(set(steps)) > 20 // 5  # more often than the trainer logs (every 5 steps)


def test_show_and_runs_during_a_run_list_every_stage_and_the_live_step(tiny_recipe, workdir: Path) -> None:
    import signal
    import subprocess
    import sys

    path = tiny_recipe(steps=400, extra=CONTINUE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmctl", "--json", "run", str(path)],
        cwd=workdir,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            event = json.loads(line)
            if event["event"] == "progress" and "loss" in event and event["step"] >= 10:
                break
        shown = runner.invoke(app, ["show", "tiny"]).output
        as_json = json.loads(runner.invoke(app, ["--json", "show", "tiny"]).stdout)
        listed = json.loads(runner.invoke(app, ["--json", "runs"]).stdout)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert list(as_json["stages"]) == ["pretrain", "more"]  # the one not started yet too
    assert as_json["stages"]["more"]["status"] == "pending"
    live = as_json["stages"]["pretrain"]["live"]
    assert as_json["stages"]["pretrain"]["status"] == "running" and live["step"] >= 10 and "loss" in live
    assert "running (step " in shown and "pending" in shown
    assert next(r for r in listed if r["run"] == "tiny")["stages"] == 2


def test_a_run_killed_by_the_oom_killer_says_so_records_it_and_notifies(tiny_recipe, workdir: Path) -> None:
    """The kernel's OOM killer sends SIGKILL to the biggest process: the run's, not its watcher's."""
    import signal
    import subprocess
    import sys

    path = tiny_recipe(steps=400, save_steps=10)
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmctl", "--json", "run", str(path), "--notify-cmd", "cat > notified.json"],
        cwd=workdir,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    events = []
    for line in proc.stdout:  # type: ignore[union-attr]
        events.append(json.loads(line))
        if events[-1]["event"] == "progress" and events[-1].get("step", 0) >= 25:
            break
    worker = int(subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()[0])
    os.kill(worker, signal.SIGKILL)  # the run, as the OOM killer would
    events += [json.loads(line) for line in proc.stdout]  # type: ignore[union-attr]
    assert proc.wait(timeout=60) == 4
    error = next(e for e in events if e["event"] == "error")
    assert "stage 'pretrain' was killed by SIGKILL — " in error["message"]
    assert "another process" in error["message"] and "OOM-kill count rose" not in error["message"]  # none counted
    outcome = next(e for e in events if e["event"] == "outcome")
    assert outcome["outcome"] == "failed" and outcome["exit_code"] == 4
    notified = json.loads((workdir / "notified.json").read_text())
    assert notified["outcome"] == "failed" and "SIGKILL" in notified["message"]
    assert notified["run_id"] == events[0]["run_id"]  # the firing's own id, not a second one
    history = (workdir / "runs/tiny/history.jsonl").read_text().splitlines()
    assert len(history) == 1 and json.loads(history[0])["outcome"] == "failed"
    shown = json.loads(runner.invoke(app, ["--json", "show", "tiny"]).stdout)
    assert shown["stages"]["pretrain"]["status"] == "failed" and "SIGKILL" in shown["stages"]["pretrain"]["error"]
    code, events = run_json(str(path))
    assert code == 0 and events[1]["action"] == "resume"  # from the last checkpoint, as after any kill
