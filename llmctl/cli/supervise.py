"""`llmctl run` under a watcher (Linux): the run happens in a forked child while this process waits for it, so a
run killed by a signal — the kernel's OOM killer sends SIGKILL — still ends with a message naming the signal, the
stage and the likely cause, a line in the run's history and the `--notify-cmd` call, none of which a process can
do about its own death. The watcher holds no model and no lock: it is the CLI before it loaded anything.

Signals: Ctrl-C in a terminal reaches the child directly (same process group), so the watcher ignores SIGINT;
SIGTERM and SIGHUP sent to the watcher (cron, systemd, `timeout`) are passed on to the child, which stops
gracefully as before. When the watcher itself is killed, the child gets SIGKILL (PR_SET_PDEATHSIG), as if the
run had been one process."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

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
    """In the child: what the watcher needs to record a killed firing (the recipe, overrides, notify command)."""
    path = os.environ.get(INFO_ENV)
    if path:
        Path(path).write_text(json.dumps(info))


def run_watched(run: Callable[[], None]) -> NoReturn:
    """Run `run` (the CLI) in a child and exit as it did; a child killed by a signal is reported and recorded."""
    from llmctl import api

    handle, info = tempfile.mkstemp(prefix="llmctl-run-", suffix=".json")
    os.close(handle)
    run_id = api.new_run_id()
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        _child(run, parent, info, run_id)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the child itself
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: os.kill(child, signum))
    _, status = os.waitpid(child, 0)
    try:
        if os.WIFEXITED(status):
            os._exit(os.WEXITSTATUS(status))
        code = _report_killed(info, os.WTERMSIG(status), child, run_id)
    finally:
        Path(info).unlink(missing_ok=True)
    os._exit(code)


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


def _report_killed(info: str, sig: int, child: int, run_id: str) -> int:
    """Say what happened, record the firing and notify; the exit code (4, a failed stage)."""
    from llmctl import api
    from llmctl.cli.common import OUTPUT, report_error

    try:
        noted = json.loads(Path(info).read_text() or "{}")
    except (OSError, ValueError):
        noted = {}
    from llmctl.render import timestamped

    OUTPUT.json = bool(noted.get("json"))

    def emit(event: dict[str, Any]) -> None:  # `--json`: the outcome event the run would have printed
        if OUTPUT.json and event["event"] in ("outcome", "warning"):
            print(json.dumps(timestamped(event)), flush=True)

    error = api.killed(noted, sig, child, run_id, emit)
    report_error(error)
    return error.exit_code
