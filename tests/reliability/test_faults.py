"""Faults: kill -9 at the dangerous moments (mid-commit, mid-checkpoint, mid-publish), damaged outputs and
manifests, a full disk and a read-only run folder. Each ends in a clear error or a clean recovery on the next
run — never in a stage that looks complete and is not."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app
from llmctl.store.artifacts import Artifact
from llmctl.store.registry import Registry
from tests.conftest import run_json

pytestmark = [pytest.mark.slow, pytest.mark.reliability]
DEPLOY = """\
  - type: deploy
    model_name: tiny
    registry: models
"""
# Runs llmctl with one function wrapped so that the process SIGKILLs itself when it is reached (a crash at a
# precise point, which a signal sent from outside cannot time). argv: module, attribute, stop-when, llmctl args.
CRASHER = """\
import importlib, os, signal, sys
module, attribute, when = sys.argv[1:4]
owner_name, _, function = attribute.rpartition(".")
owner = importlib.import_module(module)
for part in filter(None, owner_name.split(".")):
    owner = getattr(owner, part)
original = getattr(owner, function)
def crash(*args, **kwargs):
    if when in repr(args) + repr(kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(owner, function, crash)
from llmctl.cli import app
sys.argv = ["llmctl", *sys.argv[4:]]
app()
"""


def crash_run(workdir: Path, recipe: Path, target: str, when: str = "") -> int:
    module, _, attribute = target.partition(":")
    done = subprocess.run(
        [sys.executable, "-c", CRASHER, module, attribute, when, "--json", "run", str(recipe)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode


def stages_complete_and_sound(run_dir: Path) -> list[str]:
    """Names of stages that look complete; each must pass its content check."""
    complete = []
    for folder in sorted(p for p in run_dir.iterdir() if p.is_dir() and p.name[:2].isdigit() and "." not in p.name):
        artifact = Artifact.read(folder)
        if artifact is not None:
            assert artifact.damage() is None, folder
            complete.append(artifact.stage)
    return complete


@pytest.mark.parametrize(
    ("target", "when", "complete_after_crash"),
    [
        ("llmctl.run.execute:replace_dir", "01-pretrain", []),
        ("llmctl.store.manifest:Manifest.update", "'status': 'complete'", ["pretrain"]),
        ("transformers:Trainer._save_optimizer_and_scheduler", "", []),
        ("llmctl.store.registry:Registry._promote", "", ["pretrain"]),
    ],
    ids=["mid-commit", "after-commit-before-manifest", "mid-checkpoint", "mid-promote"],
)
def test_kill_9_at_a_dangerous_moment_then_the_next_run_recovers(
    tiny_recipe, workdir: Path, target: str, when: str, complete_after_crash: list[str]
) -> None:
    recipe = tiny_recipe(steps=12, save_steps=4, extra=DEPLOY)
    assert crash_run(workdir, recipe, target, when) == -9
    run_dir = workdir / "runs/tiny"
    assert stages_complete_and_sound(run_dir) == complete_after_crash
    assert CliRunner().invoke(app, ["runs"]).exit_code == 0
    code, events = run_json(str(recipe))
    assert code == 0, events[-1]
    assert stages_complete_and_sound(run_dir) == ["pretrain", "deploy"]
    registry = Registry(workdir / "models")
    assert (registry.current_path("tiny") / "config.json").exists()
    assert not list((workdir / "models/tiny").glob(".*tmp"))


def test_a_forced_rerun_killed_mid_commit_keeps_the_old_output(tiny_recipe, workdir: Path) -> None:
    recipe = tiny_recipe(steps=6)
    assert run_json(str(recipe))[0] == 0
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CRASHER,
            "llmctl.run.execute",
            "replace_dir",
            "01-pretrain",
            "--json",
            "run",
            str(recipe),
            "--force",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -9, done.stderr[-3000:]
    assert stages_complete_and_sound(workdir / "runs/tiny") == ["pretrain"]  # the old output, whole


def test_a_deleted_or_edited_weight_file_is_noticed_and_its_stage_reruns(tiny_recipe, workdir: Path) -> None:
    recipe = tiny_recipe(steps=6, extra=DEPLOY)
    assert run_json(str(recipe))[0] == 0
    weights = workdir / "runs/tiny/01-pretrain/output/model.safetensors"
    weights.unlink()
    code, events = run_json(str(recipe))
    starts = {e["stage"]: e for e in events if e["event"] == "stage_start"}
    assert code == 0 and starts["pretrain"]["action"] == "run"
    assert "output of stage 'pretrain' damaged: model.safetensors is missing" in starts["pretrain"]["reason"]
    assert starts["deploy"]["action"] == "run"  # its input re-ran
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    weights.write_bytes(bytes(data))
    code, events = run_json(str(recipe))
    start = next(e for e in events if e["event"] == "stage_start" and e["stage"] == "pretrain")
    assert code == 0 and "model.safetensors was modified after the stage completed" in start["reason"]
    code, events = run_json(str(recipe))
    assert code == 0 and {e["action"] for e in events if e["event"] == "stage_start"} == {"cached"}


def test_damaged_manifests_and_descriptors(tiny_recipe, workdir: Path) -> None:
    recipe = tiny_recipe(steps=6)
    other = tiny_recipe(name="other", steps=6)
    assert run_json(str(recipe))[0] == 0 and run_json(str(other))[0] == 0
    manifest = workdir / "runs/tiny/llmctl.lock.json"
    manifest.write_text(manifest.read_text()[:40])  # truncated
    listed = CliRunner().invoke(app, ["--json", "runs"])
    assert listed.exit_code == 0
    status = {r["run"]: r["status"] for r in json.loads(listed.stdout)}
    assert status == {"tiny": "unreadable manifest", "other": "complete"}
    shown = CliRunner().invoke(app, ["show", "tiny"])
    assert shown.exit_code == 2 and "unreadable manifest" in shown.output and "Traceback" not in shown.output
    code, events = run_json(str(recipe))  # the run rewrites its manifest; the stage output is still whole
    assert code == 0 and [e["action"] for e in events if e["event"] == "stage_start"] == ["cached"]
    descriptor = workdir / "runs/other/01-pretrain/artifact.json"
    descriptor.write_text("{")
    code, events = run_json(str(other))
    assert code == 0 and [e["action"] for e in events if e["event"] == "stage_start"] == ["run"]


def in_small_mount(workdir: Path, mount_options: str, script: str) -> subprocess.CompletedProcess:
    """Run `script` in a private mount namespace where workdir/runs is a tmpfs mounted with `mount_options`."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a small or read-only file system")
    (workdir / "runs").mkdir(exist_ok=True)
    command = f"mount -t tmpfs -o {mount_options} tmpfs runs && {script}"
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", command],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    if "mount:" in done.stderr and "permission denied" in done.stderr.lower():
        pytest.skip("this machine does not allow mounting in a user namespace")
    return done


def test_a_full_disk_is_exit_4_with_a_clear_message_and_the_next_run_recovers(tiny_recipe, workdir: Path) -> None:
    recipe = tiny_recipe(steps=6)
    llmctl = f"{sys.executable} -m llmctl run {recipe.name}"
    done = in_small_mount(
        workdir, "size=200k", f"{llmctl}; echo exit=$?; mount -o remount,size=64m runs && {llmctl}; echo exit=$?"
    )
    exits = [line for line in done.stdout.splitlines() if line.startswith("exit=")]
    assert exits == ["exit=4", "exit=0"], done.stdout + done.stderr
    assert "the disk is full" in done.stderr and "Traceback" not in done.stderr


def test_a_read_only_run_folder_is_exit_4_with_a_clear_message(tiny_recipe, workdir: Path) -> None:
    recipe = tiny_recipe(steps=6)
    done = in_small_mount(workdir, "size=64m,ro", f"{sys.executable} -m llmctl run {recipe.name}; echo exit=$?")
    assert "exit=4" in done.stdout, done.stdout + done.stderr
    assert "read-only" in done.stderr and "Traceback" not in done.stderr


def test_report_on_a_damaged_run_file_names_it_with_exit_2(tiny_recipe, workdir: Path) -> None:
    assert CliRunner().invoke(app, ["run", str(tiny_recipe(steps=2))]).exit_code == 0
    (workdir / "runs/tiny/recipe.resolved.yaml").write_bytes(b"name: tiny\n\x94\xff\x00binary")
    result = CliRunner().invoke(app, ["report", "tiny"])
    assert result.exit_code == 2, result.output
    assert (
        "recipe.resolved.yaml: damaged run file (not UTF-8" in result.output and "internal error" not in result.output
    )


def starts(events: list[dict]) -> dict[str, dict]:
    return {e["stage"]: e for e in events if e["event"] == "stage_start"}


def test_a_deploy_whose_published_version_is_gone_publishes_again(tiny_recipe, workdir: Path) -> None:
    recipe = tiny_recipe(steps=4, extra=DEPLOY)
    assert run_json(str(recipe))[0] == 0
    shutil.rmtree(workdir / "models")  # the registry was moved or deleted
    code, events = run_json(str(recipe))
    assert (
        code == 0 and starts(events)["pretrain"]["action"] == "cached" and starts(events)["deploy"]["action"] == "run"
    )
    assert (
        "its published version" in starts(events)["deploy"]["reason"]
        and "is gone from the registry" in starts(events)["deploy"]["reason"]
    )
    assert Registry(workdir / "models").current("tiny") == "v1"


def test_weights_restored_with_an_older_mtime_are_noticed(tiny_recipe, workdir: Path) -> None:
    recipe = tiny_recipe(steps=4)
    assert run_json(str(recipe))[0] == 0
    weights = workdir / "runs/tiny/01-pretrain/output/model.safetensors"
    before = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, other content: a backup restore, `cp -p`, clock skew
    replacement = workdir / "restored.safetensors"
    replacement.write_bytes(bytes(data))
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns - 10**9))  # older than the commit
    os.replace(replacement, weights)
    code, events = run_json(str(recipe))
    assert (
        code == 0 and "model.safetensors was modified after the stage completed" in starts(events)["pretrain"]["reason"]
    )


def test_a_full_disk_while_making_demo_data_commits_nothing(workdir: Path) -> None:
    show = f"LLMCTL_CACHE=runs/cache {sys.executable} -m llmctl data show demo://corpus --limit 1"
    done = in_small_mount(
        workdir, "size=100k", f"{show}; echo exit=$?; mount -o remount,size=64m runs && {show}; echo exit=$?"
    )
    exits = [line for line in done.stdout.splitlines() if line.startswith("exit=")]
    assert exits == ["exit=4", "exit=0"], done.stdout + done.stderr
    assert "Deep Lake committed 0 of 2000 rows" in done.stderr and "2000 rows" in done.stdout


def test_a_stage_folder_replaced_by_a_symlink_is_rerun_without_touching_its_target(tiny_recipe, workdir: Path) -> None:
    recipe = tiny_recipe(steps=4)
    assert run_json(str(recipe))[0] == 0
    stage, elsewhere = workdir / "runs/tiny/01-pretrain", workdir / "elsewhere"
    shutil.move(stage, elsewhere)
    stage.symlink_to(elsewhere, target_is_directory=True)
    kept = sorted(p.relative_to(elsewhere) for p in elsewhere.rglob("*"))
    code, events = run_json(str(recipe))
    assert code == 0 and "is a symbolic link" in starts(events)["pretrain"]["reason"]
    assert stage.is_dir() and not stage.is_symlink() and not (workdir / "runs/tiny/01-pretrain.tmp").exists()
    assert sorted(p.relative_to(elsewhere) for p in elsewhere.rglob("*")) == kept
    (workdir / "runs/tiny/01-pretrain.tmp").symlink_to(elsewhere, target_is_directory=True)  # a leftover link
    code, events = run_json(str(recipe), "--force")
    assert code == 0 and not (workdir / "runs/tiny/01-pretrain.tmp").exists() and (elsewhere / "output").is_dir()


def test_a_version_with_damaged_weights_is_not_promoted(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "model.safetensors").write_bytes(b"w" * 10_000)
    registry = Registry(tmp_path / "models")
    for _ in range(2):
        registry.deploy("chat", source, {}, promote=True, keep=None)
    weights = tmp_path / "models/chat/v1/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])  # truncated
    result = CliRunner().invoke(app, ["models", "promote", "chat", "v1", "--registry", str(tmp_path / "models")])
    assert result.exit_code == 2 and "model 'chat' v1 is damaged (model.safetensors changed size" in result.output
    assert registry.current("chat") == "v2"
    weights.write_bytes(b"x" * 10_000)  # same size, other bytes
    assert "model.safetensors was modified after it was published" in (registry.damage("chat", "v1") or "")
