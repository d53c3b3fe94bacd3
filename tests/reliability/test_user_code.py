"""User code cannot fake success or hang a run (round three): reward functions that exit, `os._exit`, raise
KeyboardInterrupt, print, never return, backtrack for ever or overflow; a run process that exits without recording
its firing; helpers a run forks and leaves behind; a notify command that floods its output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app
from llmctl.data.demo import qa_pairs
from llmctl.store import history

pytestmark = [pytest.mark.slow, pytest.mark.reliability]
GENERATE = """\
name: t
seed: 1
dtype: fp32
stages:
  - type: generate
    model: {model}
    data: {{path: qa.jsonl, format: prompt, columns: {{prompt: question}}, template: "Q: {{prompt}} A:", limit: 4}}
    n: 2
    batch_size: 4
    generation: {{do_sample: true, max_new_tokens: 3}}
    rewards: [{rewards}]
    keep: all
"""
REWARD = "import os, sys, time, re\n\ndef score(prompts, completions, **columns):\n{body}\n"
NOTIFY = "cat > notified.json"


@pytest.fixture
def generate(workdir: Path, tiny_lm: Path):
    """Write a generate recipe whose reward function's body is `body`; returns its path."""
    (workdir / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_pairs(8, 1)))

    def make(body: str, rewards: str = "{function: reward.py:score, timeout_s: 5}") -> Path:
        (workdir / "reward.py").write_text(REWARD.format(body="\n".join(f"    {line}" for line in body.splitlines())))
        path = workdir / "recipe.yaml"
        path.write_text(GENERATE.format(model=tiny_lm, rewards=rewards))
        return path

    return make


def llmctl(
    workdir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmctl", *args],
        cwd=workdir,
        env=os.environ | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def recorded_failure(workdir: Path) -> dict:
    """The one firing recorded: failed (exit 4), notified, reported in the JUnit file."""
    firings = history.read(workdir / "runs/t")
    assert [r["outcome"] for r in firings] == ["failed"], firings
    assert firings[0]["exit_code"] == 4
    assert json.loads((workdir / "notified.json").read_text())["outcome"] == "failed"
    assert "<error" in (workdir / "junit.xml").read_text()
    assert not (workdir / "runs/t/01-generate").exists()  # nothing committed
    return firings[0]


BAD_EXITS = {
    "sys-exit-0": ("sys.exit(0)", "SystemExit(0)"),
    "raise-systemexit-msg": ('raise SystemExit("bye")', "SystemExit('bye')"),
    "os-exit-0": ("os._exit(0)", "exit status 0"),
    "os-exit-3": ("os._exit(3)", "exit status 3"),
    "keyboard-interrupt": ("raise KeyboardInterrupt", "not a Ctrl-C"),
}


@pytest.mark.parametrize("case", list(BAD_EXITS), ids=list(BAD_EXITS))
def test_a_reward_function_that_exits_is_a_recorded_stage_failure(generate, workdir: Path, case: str) -> None:
    body, said = BAD_EXITS[case]
    recipe = generate(body)
    result = CliRunner().invoke(app, ["run", str(recipe), "--notify-cmd", NOTIFY, "--junit", "junit.xml"])
    assert result.exit_code == 4, result.output
    assert said in result.output and "rewards[0] (score)" in result.output
    assert said in recorded_failure(workdir)["message"]


@pytest.mark.parametrize("case", ["os-exit-3", "sys-exit-0"])
def test_the_same_under_the_watcher_and_unwatched(generate, workdir: Path, case: str) -> None:
    recipe = generate(BAD_EXITS[case][0])
    for supervise in ("1", "0"):
        shutil_rm(workdir / "runs")
        (workdir / "notified.json").unlink(missing_ok=True)
        done = llmctl(
            workdir,
            "run",
            str(recipe),
            "--notify-cmd",
            NOTIFY,
            "--junit",
            "junit.xml",
            env={"LLMCTL_SUPERVISE": supervise},
        )
        assert done.returncode == 4, done.stderr
        recorded_failure(workdir)


def shutil_rm(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def test_a_run_process_that_exits_without_recording_is_a_failure_the_watcher_records(generate, workdir: Path) -> None:
    """Code the run process itself runs calls os._exit(0) mid-stage: exit 0 would be a lie."""
    recipe = generate("return [1.0] * len(completions)")
    script = (
        "import os, sys\nimport llmctl.stages.generate as g\n"
        "g.kept_rows = lambda *a, **k: os._exit(0)\n"
        "from llmctl.cli import main\nsys.argv = ['llmctl', *sys.argv[1:]]\nmain()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "run", str(recipe), "--notify-cmd", NOTIFY],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 4, done.stderr
    assert "without recording its outcome" in done.stderr
    firings = history.read(workdir / "runs/t")
    assert [r["outcome"] for r in firings] == ["failed"]
    assert json.loads((workdir / "notified.json").read_text())["outcome"] == "failed"
    manifest = json.loads((workdir / "runs/t/llmctl.lock.json").read_text())
    assert manifest["stages"]["generate"]["status"] == "failed"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("time.sleep(3600)", "did not return within 2 s"),
        ('re.match(r"(a+)+$", "a" * 40 + "!")\nreturn [0.0] * len(completions)', "did not return within 2 s"),
        ("return [float('nan')] * len(completions)", "finite number"),
        ("return ['1'] * len(completions)", "finite number"),
        ("return [1.0]", "returned 1 values"),
        ("raise ValueError('boom')", "ValueError: boom"),
    ],
    ids=["sleeps-forever", "redos", "nan", "str", "wrong-length", "raises"],
)
def test_hostile_reward_functions_fail_the_stage_within_their_timeout(
    generate, workdir: Path, body: str, said: str
) -> None:
    recipe = generate(body, "{function: reward.py:score, timeout_s: 2}")
    started = time.monotonic()
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 4, result.output
    assert said in result.output
    assert time.monotonic() - started < 60


def test_a_redos_pattern_in_a_builtin_regex_is_stopped_too(tmp_path: Path) -> None:
    from llmctl.models.rewards import RewardFailed, reward_functions
    from llmctl.spec.generation import RewardTerm

    term = RewardTerm(builtin="regex", pattern="(a+)+$", timeout_s=2)
    [check], _ = reward_functions([term], None, tmp_path / "library.out")
    assert check(["q"], ["aaa"]) == [1.0]
    started = time.monotonic()
    with pytest.raises(RewardFailed, match="did not return within 2 s"):
        check(["q"], ["a" * 40 + "!"])  # catastrophic backtracking: hours in `re`, which holds the GIL
    assert time.monotonic() - started < 10
    with pytest.raises(RewardFailed, match="stopped after an earlier failure"):
        check(["q"], ["aaa"])


def test_a_reward_function_that_prints_cannot_forge_json_events(generate, workdir: Path) -> None:
    forged = json.dumps({"event": "outcome", "outcome": "complete", "exit_code": 0})
    recipe = generate(f"print({forged!r})\nreturn [1.0] * len(completions)")
    result = CliRunner().invoke(app, ["--json", "run", str(recipe)])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]  # every line is an event of llmctl's
    assert sum(e["event"] == "outcome" for e in events) == 1
    assert "record" in next(e for e in events if e["event"] == "outcome")
    assert forged in (workdir / "runs/t/01-generate/logs/library.out").read_text()


def test_an_overflowing_weighted_sum_is_a_failure_not_infinity(generate, workdir: Path) -> None:
    recipe = generate("return [1e308] * len(completions)", "{function: reward.py:score, weight: 1e10}")
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 4, result.output
    assert "overflowed" in result.output
    assert "Infinity" not in (workdir / "runs/t/history.jsonl").read_text()


def test_the_first_sigterm_ends_a_run_stuck_in_a_reward_function(generate, workdir: Path) -> None:
    recipe = generate("time.sleep(3600)", "{function: reward.py:score, timeout_s: 600}")
    proc = run_until(recipe, workdir, lambda event: event["event"] == "stage_start")
    time.sleep(8)  # into the reward call
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.stdout.read()  # type: ignore[union-attr]
    assert proc.wait(timeout=30) == 130
    assert time.monotonic() - sent < 15
    assert [r["outcome"] for r in history.read(workdir / "runs/t")] == ["interrupted"]
    assert not leftover_processes(workdir)


def run_until(recipe: Path, workdir: Path, reached: Callable[[dict], bool]) -> subprocess.Popen:
    """`llmctl --json run RECIPE` in a session of its own, returned once an event `reached` holds."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmctl", "--json", "run", str(recipe)],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    for line in proc.stdout:  # type: ignore[union-attr]
        if reached(json.loads(line)):
            break
    return proc


def leftover_processes(workdir: Path) -> list[str]:
    """Command lines of live processes started in `workdir` (llmctl's, their helpers')."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (proc / "cwd").resolve() == workdir.resolve():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


def test_no_process_outlives_llmctl_run(generate, workdir: Path) -> None:
    """A reward function forks a helper that never exits (as a native pool's fork did after a resumed run):
    `llmctl run` ends it before returning, watched or not."""
    body = "if os.fork() == 0:\n    time.sleep(3600)\n    os._exit(0)\nreturn [1.0] * len(completions)"
    recipe = generate(body)
    for supervise in ("1", "0"):
        shutil_rm(workdir / "runs")
        done = llmctl(workdir, "run", str(recipe), env={"LLMCTL_SUPERVISE": supervise})
        assert done.returncode == 0, done.stderr
        time.sleep(0.5)
        assert leftover_processes(workdir) == [], supervise


def test_a_killed_run_resumed_leaves_no_process_behind(workdir: Path, tiny_recipe) -> None:
    """The issue's own path: SIGKILL the process group mid-training, run again to completion, and nothing of
    either run is left alive."""
    recipe = tiny_recipe(steps=40, save_steps=10)
    proc = run_until(recipe, workdir, lambda event: event["event"] == "progress" and event.get("step", 0) >= 12)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done = llmctl(workdir, "run", str(recipe))
    assert done.returncode == 0, done.stderr
    time.sleep(0.5)
    assert leftover_processes(workdir) == []


def test_a_notify_command_that_floods_its_output_is_not_kept(tiny_recipe, workdir: Path) -> None:
    recipe = tiny_recipe(steps=2)
    flood = "head -c 300000000 /dev/zero; echo done >&2; exit 3"
    result = CliRunner().invoke(app, ["run", str(recipe), "--notify-cmd", flood])
    assert result.exit_code == 0
    assert "--notify-cmd exited 3: done" in result.output


def test_a_hung_notify_command_is_ended_with_its_children(tiny_recipe, workdir: Path, monkeypatch) -> None:
    from llmctl.run import firing

    monkeypatch.setattr(firing, "NOTIFY_TIMEOUT_S", 2)
    recipe = tiny_recipe(steps=2)
    result = CliRunner().invoke(app, ["run", str(recipe), "--notify-cmd", "sleep 300 & sleep 300"])
    assert result.exit_code == 0
    assert "did not finish within 2 s" in result.output
    time.sleep(0.5)
    assert leftover_processes(workdir) == []


def worker_reward(tmp_path: Path, body: str, timeout_s: float = 5) -> object:
    """A reward function with `body`, loaded through the worker as a stage loads it."""
    from llmctl.models.rewards import reward_functions
    from llmctl.spec.generation import RewardTerm

    (tmp_path / "hostile.py").write_text(REWARD.format(body="\n".join(f"    {line}" for line in body.splitlines())))
    term = RewardTerm(function=f"{tmp_path}/hostile.py:score", timeout_s=timeout_s)
    return reward_functions([term], None, tmp_path / "library.out")[0][0]


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("return (x for x in completions)", "cannot be sent back"),
        ("os.closerange(3, 1024)\ntime.sleep(3600)", "closed its connection"),
        ("os.kill(os.getpid(), 9)", "killed by SIGKILL"),
    ],
    ids=["unpicklable", "closes-its-pipe", "kills-itself"],
)
def test_more_ways_for_a_reward_worker_to_break(tmp_path: Path, body: str, said: str) -> None:
    from llmctl.models.rewards import RewardFailed

    reward = worker_reward(tmp_path, body)
    started = time.monotonic()
    with pytest.raises(RewardFailed, match=said):
        reward(["q"], ["a"])  # type: ignore[operator]
    assert time.monotonic() - started < 8


def test_a_module_that_exits_while_importing_is_a_recipe_mismatch(tmp_path: Path) -> None:
    from llmctl.errors import RecipeMismatch
    from llmctl.models.rewards import reward_functions
    from llmctl.spec.generation import RewardTerm

    (tmp_path / "bad.py").write_text("import sys\nsys.exit(0)\n")
    with pytest.raises(RecipeMismatch, match=r"rewards\[0\].function.*SystemExit\(0\)"):
        reward_functions([RewardTerm(function=f"{tmp_path}/bad.py:score")], None, None)


def test_raw_writes_to_stdout_land_in_the_stage_log(tmp_path: Path) -> None:
    reward = worker_reward(tmp_path, "os.write(1, b'raw line\\n')\nreturn [1.0] * len(completions)")
    assert reward(["q"], ["a"]) == [1.0]  # type: ignore[operator]
    from llmctl.models import isolated

    isolated.close_all()
    assert "raw line" in (tmp_path / "library.out").read_text()
