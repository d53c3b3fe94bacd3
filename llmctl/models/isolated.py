"""User code in a worker process with a deadline per call: reward functions, and the built-in checks (a
recipe's regular expression can backtrack for ever). What the user's code does there cannot reach the run:

- a call that does not return within its `timeout_s` is killed with its process (a thread cannot be killed, and
  Python's `re` holds the GIL for the whole of a catastrophic match, so no in-process deadline can stop it);
- `sys.exit`, `os._exit`, a `KeyboardInterrupt` or a crash end the worker, not the run: the stage fails naming
  the function;
- what it prints goes to the stage's logs/library.out, never to llmctl's stdout (`--json` stays one event a
  line);
- a stop request (the first SIGTERM or Ctrl-C) ends a call in progress within STOP_GRACE_S.

The worker is `python -m llmctl.models.isolated` speaking multiprocessing's framed pickles over two pipes
(`multiprocessing.connection.Connection`); it dies with the process that started it (PR_SET_PDEATHSIG).
multiprocessing's own Process is not used: its `fork` would copy a process holding torch's thread pools (and
deadlock in them), and its `spawn` re-imports the caller's `__main__` (the CLI script, or pytest)."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
import weakref
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from llmctl.store.files import open_own

STOP_GRACE_S = 2.0
POLL_S = 0.1
START_TIMEOUT_S = 120.0  # importing the user's modules
PR_SET_PDEATHSIG = 1


class WorkerFailed(RuntimeError):
    """A call in the worker failed: it raised, exited, crashed or ran past its deadline (the message says which)."""


class LoadFailed(WorkerFailed):
    """A function could not be loaded; `index` is its key (a reward term's position)."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


class Worker:
    """One worker process holding user functions; `call(i, …)` runs function i there. The functions are made in
    the worker by `loader` ("module:function", called with each of `items`' values and its key: a reward term's
    settings, say), so this module knows nothing of what it runs."""

    def __init__(self, loader: str, items: dict[int, Any], output: Path | None) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        _OPEN.add(self)
        self._start(loader, items, output)

    def _start(self, loader: str, items: dict[int, Any], output: Path | None) -> None:
        from_parent, to_child = os.pipe()
        from_child, to_parent = os.pipe()
        sink = subprocess.DEVNULL
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            sink = open_own(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "llmctl.models.isolated", str(from_parent), str(to_parent), str(os.getpid())],
                pass_fds=(from_parent, to_parent),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                cwd=os.getcwd(),
            )
        finally:
            for fd in (from_parent, to_parent) + ((sink,) if isinstance(sink, int) and sink >= 0 else ()):
                os.close(fd)
        self._send, self._receive = Connection(to_child, readable=False), Connection(from_child, writable=False)
        self._send.send((loader, list(items.items())))
        reply = self._wait(START_TIMEOUT_S, "loading the functions")
        if reply[0] == "load_error":
            self.close()
            raise LoadFailed(reply[1], reply[2])

    def call(self, index: int, args: tuple[Any, ...], kwargs: dict[str, Any], timeout_s: float, where: str) -> Any:
        """Term `index`'s function(*args, **kwargs) in the worker; WorkerFailed naming `where` if it does not
        return a value within `timeout_s`."""
        if self._process is None:
            raise WorkerFailed(f"{where}: its worker has stopped after an earlier failure")
        try:
            self._send.send((index, args, kwargs))
        except (OSError, ValueError) as err:
            raise WorkerFailed(f"{where}: could not send the call to its worker ({err})") from None
        reply = self._wait(timeout_s, where)
        if reply[0] == "error":
            raise WorkerFailed(f"{where} raised {reply[1]}")
        return reply[1]

    def _wait(self, timeout_s: float, where: str) -> Any:
        """The worker's next reply. Kills it and raises on a deadline, an ended process or a stop request."""
        from llmctl import signals

        deadline = time.monotonic() + timeout_s
        stop_by: float | None = None
        while True:
            try:
                if self._receive.poll(POLL_S):
                    return self._receive.recv()
            except (EOFError, OSError):
                code = self._ended()
                raise WorkerFailed(
                    f"{where} ended its process ({_describe_exit(code)}); return the values instead"
                ) from None
            except KeyboardInterrupt:
                self.close()
                raise
            now = time.monotonic()
            if signals.requested():
                stop_by = stop_by or now + STOP_GRACE_S
                if now >= stop_by:
                    self.close()
                    raise KeyboardInterrupt
            if now >= deadline:
                self.close()
                raise WorkerFailed(
                    f"{where} did not return within {timeout_s:g} s (timeout_s); it was stopped. Make it faster "
                    "or raise the term's timeout_s"
                )

    def _ended(self) -> int | None:
        """The exit status of a worker whose pipe closed (None: it closed the pipe and lived on, so it is killed)."""
        process = self._process
        code = None
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = process.wait(timeout=1)
        self.close()
        return code

    def close(self) -> None:
        """Stop the worker (idempotent)."""
        process, self._process = self._process, None
        if process is None:
            return
        for connection in (self._send, self._receive):
            connection.close()
        if process.poll() is None:
            process.kill()
        process.wait()


_OPEN: weakref.WeakSet[Worker] = weakref.WeakSet()


@atexit.register
def close_all() -> None:
    """Stop every worker still running (the pipeline calls this when a stage ends: its workers end with it; and
    at exit, for a caller outside the pipeline)."""
    for worker in list(_OPEN):
        worker.close()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "it closed its connection to llmctl"
    if code < 0:
        return (
            f"killed by {signal.Signals(-code).name}"
            if -code in signal.Signals._value2member_map_
            else f"signal {-code}"
        )
    return f"exit status {code}: it called os._exit or crashed"


# ---------------------------------------------------------------- inside the worker


def _serve(from_parent: int, to_parent: int, parent: int) -> None:
    """The worker's loop: load the terms, then answer calls until the parent closes the pipe."""
    import ctypes

    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(0)
    for sig in (signal.SIGINT, signal.SIGTERM):  # a terminal's Ctrl-C and `kill -TERM -PGID` are the run's to handle
        signal.signal(sig, signal.SIG_IGN)
    receive, send = Connection(from_parent, writable=False), Connection(to_parent, readable=False)
    functions = _load_all(receive.recv(), send)
    if functions is None:
        return
    while True:
        try:
            index, args, kwargs = receive.recv()
        except EOFError:
            return
        try:
            reply: tuple[Any, ...] = ("ok", functions[index](*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too: user code's, not ours
            reply = ("error", _exception_text(err))
        try:
            send.send(reply)
        except Exception as err:  # noqa: BLE001 - a value that does not pickle
            send.send(("error", f"a value that cannot be sent back ({type(err).__name__}: {err})"))
        sys.stdout.flush()


def _load_all(request: tuple[str, list[tuple[int, Any]]], send: Connection) -> dict[int, Any] | None:
    """The functions `loader` makes of each item; None (after telling the parent) when one cannot be made."""
    import importlib

    from llmctl.errors import RecipeMismatch

    loader, items = request
    module, _, name = loader.partition(":")
    make = getattr(importlib.import_module(module), name)
    functions = {}
    for index, item in items:
        try:
            functions[index] = make(item, index)
        except RecipeMismatch as err:
            send.send(("load_error", index, str(err)))
            return None
        except BaseException as err:  # noqa: BLE001 - the module's top level called sys.exit, …
            send.send(("load_error", index, f"loading it failed: {_exception_text(err)}"))
            return None
    send.send(("ready",))
    return functions


def _exception_text(err: BaseException) -> str:
    if isinstance(err, SystemExit):
        return f"SystemExit({err.code!r}) (it called sys.exit: a reward function must return its values)"
    if isinstance(err, KeyboardInterrupt):
        return "KeyboardInterrupt (raised by the function itself, not a Ctrl-C)"
    return f"{type(err).__name__}: {err}"


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
