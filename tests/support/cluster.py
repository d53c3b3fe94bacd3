"""A real single-node Slurm for the tests: munged, slurmctld and slurmd (Debian's slurm-wlm packages, which
.ci/run installs) started on loopback in a temporary folder, no accounting daemon. Use `slurm_cluster()` as a
context manager; it yields the environment (SLURM_CONF) that Slurm's commands need."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch")

CONF = """\
ClusterName=llmctltest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={port}
SlurmdPort={port2}
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=30
InactiveLimit=0
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


def available() -> bool:
    return all(shutil.which(d) for d in DAEMONS) and os.geteuid() == 0


@contextmanager
def slurm_cluster(root: Path) -> Iterator[dict[str, str]]:
    """Start munged, slurmctld and slurmd under `root`; yield an environment with SLURM_CONF; stop them."""
    (root / "munge").mkdir(parents=True)
    (root / "munge").chmod(0o700)
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    key = root / "munge/munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    ports = [_free_port(), _free_port()]
    conf = root / "slurm.conf"
    conf.write_text(
        CONF.format(
            host=socket.gethostname().split(".")[0],
            port=ports[0],
            port2=ports[1],
            root=root,
            cpus=os.cpu_count(),
        )
    )
    env = os.environ | {"SLURM_CONF": str(conf)}
    munge = root / "munge"
    subprocess.run(
        ["munged", "-f", f"--key-file={key}", f"--socket={munge}/munge.socket", f"--pid-file={munge}/munged.pid"]
        + [f"--log-file={munge}/munged.log", f"--seed-file={munge}/seed"],
        check=True,
    )
    try:
        subprocess.run(["slurmctld", "-f", str(conf)], check=True, env=env)
        subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env)
        _wait_idle(env, root)
        yield env
    finally:
        for pid_file in (root / "slurmd.pid", root / "slurmctld.pid", munge / "munged.pid"):
            if pid_file.exists():
                subprocess.run(["kill", pid_file.read_text().strip()], check=False)


def _wait_idle(env: dict[str, str], root: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env)
        if done.stdout.strip() == "idle":
            return
        time.sleep(0.5)
    logs = "\n".join(p.read_text()[-2000:] for p in (root / "slurmctld.log", root / "slurmd.log") if p.exists())
    raise RuntimeError(f"the test Slurm cluster did not come up:\n{logs}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def ray_cluster(root: Path, cpus: int = 2) -> Iterator[str]:
    """`ray start --head` with `cpus` CPUs (a real local Ray cluster, its own processes); yields its address."""
    import sys

    ray = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run(
        [ray, "start", "--head", f"--port={port}", f"--num-cpus={cpus}", "--include-dashboard=false"]
        + [f"--temp-dir={root}", "--disable-usage-stats"],
        check=True,
        capture_output=True,
        env=env,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env)
