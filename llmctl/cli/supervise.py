"""`llmctl run` under a watcher (Linux): the run happens in a forked child while this process waits for it, so a
run killed by a signal — the kernel's OOM killer sends SIGKILL — still ends with a message naming the signal, the
stage and the likely cause, a line in the run's history and the `--notify-cmd` call, none of which a process can
do about its own death. The watcher holds no model and no lock: it is the CLI before it loaded anything.

Signals: Ctrl-C in a terminal reaches the child directly (same process group), so the watcher ignores SIGINT;
SIGTERM and SIGHUP sent to the watcher (cron, systemd, `timeout`) are passed on to the child, which stops
gracefully as before. When the watcher itself is killed, the child gets SIGKILL (PR_SET_PDEATHSIG), as if the
run had been one process.

The child reports its recorded outcome (`recorded`) before it exits; a child that exits without one — user code
that called `os._exit`, or anything else that skipped the record — is a failed firing (exit 4, recorded by the
watcher), whatever its exit status: exit 0 means the run did its work and said so. The watcher is the child
subreaper of the run's process tree: whatever the run forked and left behind is ended when the child exits."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from llmctl import reaper

INFO_ENV = "LLMCTL_SUPERVISOR_INFO"  # where the child notes what the watcher needs if it dies
CHILD_ENV = "LLMCTL_SUPERVISED"
RUN_ID_ENV = "LLMCTL_RUN_ID"
PR_SET_PDEATHSIG = 1


def wanted(args: list[str]) -> bool:
    """Whether this invocation is a `run` to watch (Linux, not already watched, not turned off)."""
    command = next((a for a in args if not a.startswith("-")), None)
    return (
        command == "run"
        and sys.platform.startswith("linux")
        and not os.environ.get(CHILD_ENV)
        and os.environ.get("LLMCTL_SUPERVISE", "1") != "0"
        and not any(a in ("--help", "-h") for a in args)
    )


def note(info: dict[str, Any]) -> None:
    """In the child: what the watcher needs to record a killed firing (the recipe, overrides, notify command),
    added to what was noted before."""
    path = os.environ.get(INFO_ENV)
    if path:
        Path(path).write_text(json.dumps(_noted(path) | info, default=str))


def recorded(record: dict[str, Any]) -> None:
    """In the child: the firing's outcome is recorded (its history line written, the notify command run)."""
    note({"recorded": {"outcome": record.get("outcome"), "exit_code": record.get("exit_code")}})


def _noted(path: str) -> dict[str, Any]:
    try:
        found = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def run_watched(run: Callable[[], None]) -> NoReturn:
    """Run `run` (the CLI) in a child and exit as it did; a child killed by a signal is reported and recorded."""
    from llmctl import api
    from llmctl.hardware import oom_kills

    ooms_before = oom_kills()
    handle, info = tempfile.mkstemp(prefix="llmctl-run-", suffix=".json")
    os.close(handle)
    run_id = api.new_run_id()
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    reaper.become_subreaper()
    child = os.fork()
    if child == 0:
        _child(run, parent, info, run_id)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the child itself
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: _forward(child, signum))
    status = _wait(child)
    reaper.end(reaper.children())  # what the run forked and left behind (re-parented to us)
    code = 1
    try:
        noted = _noted(info)
        if os.WIFSIGNALED(status):
            after = oom_kills()
            noted["oom"] = None if ooms_before is None or after is None else after > ooms_before
            code = _report_vanished(noted, os.WTERMSIG(status), None, child, run_id)
        elif noted.get("recipe") and not noted.get("dry_run") and "recorded" not in noted:
            code = _report_vanished(noted, None, os.WEXITSTATUS(status), child, run_id)
        else:
            code = os.WEXITSTATUS(status)
    finally:
        Path(info).unlink(missing_ok=True)
        os._exit(code)


def _forward(child: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signum)


def _wait(child: int) -> int:
    """The child's wait status (orphans re-parented to us meanwhile are reaped as they exit, never waited for)."""
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == child:
            return status


def _child(run: Callable[[], None], parent: int, info: str, run_id: str) -> NoReturn:
    import ctypes

    code = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the watcher died before the line above
            os._exit(137)
        os.environ |= {CHILD_ENV: "1", INFO_ENV: info, RUN_ID_ENV: run_id}
        run()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _report_vanished(noted: dict[str, Any], sig: int | None, status: int | None, child: int, run_id: str) -> int:
    """Say what happened to a child that died by signal `sig`, or exited with `status` without recording its
    firing; record the firing and notify. Returns the exit code (4, a failed stage)."""
    from llmctl import api
    from llmctl.cli.common import OUTPUT, report_error
    from llmctl.render import timestamped

    OUTPUT.json = bool(noted.get("json"))

    def emit(event: dict[str, Any]) -> None:  # `--json`: the outcome event the run would have printed
        if OUTPUT.json and event["event"] in ("outcome", "warning"):
            print(json.dumps(timestamped(event)), flush=True)

    error = api.killed(noted, sig, child, run_id, emit, exit_status=status)
    report_error(error)
    return error.exit_code
