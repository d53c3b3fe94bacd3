"""CLI start-up benchmark: `llmctl --help` and `llmctl validate` on every shipped recipe; with a finished
quickstart (`llmctl run recipes/quickstart.yaml` once), the everyday path of a scheduled job too: a fully cached
`run`, `plan`, an `--if-changed` no-op and a firing that finds the run locked.

Run: .venv/bin/python scripts/bench_cli.py [--repeat 5]
Targets: `--help`, `validate` and a bad recipe's error under 0.5 s (issues 2, 20); the cached run, plan, no-op
and locked firing under 1 s of CPU each (issue 41). Prints median and worst wall-clock times, and the median
CPU time (user + system, the command and its children).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LLMCTL = [sys.executable, "-m", "llmctl"]


def timed(args: list[str], repeat: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds (user + system of the command and everything it started) per repetition."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(args, cwd=ROOT, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def show(label: str, args: list[str], repeat: int) -> None:
    walls, cpus = timed(LLMCTL + args, repeat)
    print(f"{label:60s} {statistics.median(walls):7.3f}s {max(walls):7.3f}s {statistics.median(cpus):7.3f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    recipes = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "recipes").glob("*.yaml"))
    cases = {"llmctl --help": ["--help"], **{f"llmctl validate {r}": ["validate", r] for r in recipes}}
    cases[f"llmctl validate (all {len(recipes)})"] = ["validate", *recipes]
    bad = Path(tempfile.mkdtemp()) / "bad.yaml"
    bad.write_text("name: x\nstages:\n  - type: sft\n    model: gpt2\n    lora: {r: -1}\n")
    cases["llmctl validate BAD (exit 2)"] = ["validate", str(bad)]
    print(f"{'command':60s} {'median':>8s} {'worst':>8s} {'cpu':>8s}")
    for label, args in cases.items():
        show(label, args, repeat)
    quickstart = ROOT / "runs" / "quickstart"
    if not (quickstart / "llmctl.lock.json").is_file():
        print("(no finished quickstart in runs/quickstart: run it once for the scheduled-job figures)")
        return
    recipe = "recipes/quickstart.yaml"
    show("llmctl run quickstart (every stage cached)", ["run", recipe, "--quiet"], repeat)
    show("llmctl plan quickstart", ["plan", recipe], repeat)
    show("llmctl run quickstart --if-changed (no-op)", ["run", recipe, "--if-changed", "--quiet"], repeat)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from llmctl.store.lock import RunLock; "
         "RunLock(Path(sys.argv[1])).__enter__(); print(flush=True); time.sleep(600)", str(quickstart)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env=os.environ,
    )  # fmt: skip
    try:
        holder.stdout.readline()  # type: ignore[union-attr]  # the lock is held
        show("llmctl run quickstart (locked by another firing, exit 5)", ["run", recipe, "--quiet"], repeat)
    finally:
        holder.kill()
        holder.wait()


if __name__ == "__main__":
    main()
