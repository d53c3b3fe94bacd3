"""Graceful stop: the first SIGINT/SIGTERM asks the running stage to stop at its next safe point (a trainer
saves a checkpoint at the end of the current step; other stages finish, and no further stage starts); a
second signal stops at once. Either way the run lock is released and exit code 130 follows, and the next
`llmctl run` resumes."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STOP = threading.Event()
ECHO_S = 5.0
EXPIRED: list[str] = []  # the time limits that asked for the stop (`deadline`)


def requested() -> bool:
    return STOP.is_set()


def hold_early_sigterm() -> None:
    """Until `graceful_stop` takes over, a SIGTERM only records the request (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: STOP.set())


@contextmanager
def graceful_stop(keep_pending: bool = False) -> Iterator[None]:
    """Install the SIGINT/SIGTERM handlers for the duration of a run (main thread only). `keep_pending`: a stop
    requested before (see `hold_early_sigterm`) still counts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    first: list[float] = []

    def handler(signum: int, frame: Any) -> None:
        if STOP.is_set():
            # Schedulers deliver one SIGTERM twice: Slurm signals every process of a job step and torchrun, one of
            # them, passes it on to its ranks. A repeat within ECHO_S is that echo, not a second request.
            if signum == signal.SIGTERM and time.monotonic() - first[0] < ECHO_S:
                return
            raise KeyboardInterrupt
        first[:] = [time.monotonic()]
        STOP.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    if STOP.is_set() and keep_pending:
        first[:] = [time.monotonic()]
    else:
        STOP.clear()
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        STOP.clear()


@contextmanager
def deadline(seconds: float | None, what: str) -> Iterator[None]:
    """A wall-clock limit: when it is reached, the process asks itself to stop as SIGTERM does (a trainer saves
    a checkpoint, launched workers are told), and `EXPIRED` says which limit did it."""
    if not seconds:
        yield
        return
    import os

    def expire() -> None:
        EXPIRED.append(f"{what} reached its timeout_s ({seconds:g} s)")
        os.kill(os.getpid(), signal.SIGTERM)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _stop_everywhere() -> bool:
    """Whether a stop was requested — on any rank of a distributed job. The ranks get SIGTERM at slightly
    different moments; deciding alone, one rank stopped (and saved) a step before the other, which then waited in
    a collective for a peer that had left ("Connection closed by peer") and no checkpoint was written. One tiny
    all-reduce per step makes them stop at the same step."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return STOP.is_set()
    import torch

    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"  # NCCL: GPU tensors
    flag = torch.tensor([1 if STOP.is_set() else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def stop_callback(save_then_raise: bool = False) -> Any:
    """A TrainerCallback that, once a stop is requested, saves a checkpoint at the end of the step and ends
    training; the stage then raises KeyboardInterrupt (see `raise_if_requested`). `save_then_raise`: raise right
    after that checkpoint is saved, for trainers whose loop ignores should_training_stop (TRL's PPO)."""
    from transformers import TrainerCallback

    class StopOnSignal(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if _stop_everywhere():
                control.should_save = True
                control.should_training_stop = True
            return control

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if STOP.is_set() and save_then_raise:
                raise KeyboardInterrupt

    return StopOnSignal()


def raise_if_requested() -> None:
    if STOP.is_set():
        raise KeyboardInterrupt
