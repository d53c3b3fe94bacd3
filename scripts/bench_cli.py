"""CLI start-up benchmark: `llmctl --help` and `llmctl validate` on every shipped recipe.

Run: .venv/bin/python scripts/bench_cli.py [--repeat 5]
Target (issues 2, 20): each under 0.5 s on a 2-core machine (`--help`, `validate`, a bad recipe's error). Prints median and worst wall-clock times.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LLMCTL = [sys.executable, "-m", "llmctl"]


def timed(args: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(args, cwd=ROOT, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


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
    print(f"{'command':60s} {'median':>8s} {'worst':>8s}")
    for label, args in cases.items():
        times = timed(LLMCTL + args, repeat)
        print(f"{label:60s} {statistics.median(times):7.3f}s {max(times):7.3f}s")


if __name__ == "__main__":
    main()
