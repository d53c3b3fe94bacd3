"""Run lock, atomic directory replacement, manifest writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmctl.errors import RunLocked
from llmctl.store.files import replace_dir
from llmctl.store.lock import RunLock
from llmctl.store.manifest import Manifest


def test_second_lock_fails_with_pid_and_time(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        with pytest.raises(RunLocked, match=rf"locked by pid {os.getpid()} since \d{{4}}-"):
            RunLock(tmp_path).__enter__()
    with RunLock(tmp_path):  # released on exit: can be taken again
        pass


def test_lock_of_a_killed_process_is_recovered(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from llmctl.store.lock import RunLock; import time\n"
            f"with RunLock(__import__('pathlib').Path({str(tmp_path)!r})):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
        RunLock(tmp_path).__enter__()
    assert RunLock.is_held(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert not RunLock.is_held(tmp_path)
    with RunLock(tmp_path):
        pass


def test_replace_dir_swaps_whole_folders(tmp_path: Path) -> None:
    dest = tmp_path / "01-x"
    for version in ("old", "new"):
        src = tmp_path / "01-x.tmp"
        src.mkdir()
        (src / "file").write_text(version)
        replace_dir(src, dest)
        assert (dest / "file").read_text() == version
        assert not src.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01-x"]


def test_replace_dir_recovers_after_crash_between_renames(tmp_path: Path) -> None:
    """A crash after moving the old folder aside leaves `.old` behind; the next commit cleans it up."""
    (tmp_path / "01-x.old").mkdir()
    src = tmp_path / "01-x.tmp"
    src.mkdir()
    replace_dir(src, tmp_path / "01-x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01-x"]


def test_manifest_round_trip(tmp_path: Path) -> None:
    manifest = Manifest.load(tmp_path)
    manifest.update("pretrain", status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    assert Manifest.load(tmp_path).stage("pretrain").status == "running"  # typed records (issue 14)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
