"""GRPO's objectives on the demo task: held-out exact match after `recipes/grpo_quickstart.yaml` with each loss.

Run: .venv/bin/python scripts/bench_grpo_losses.py [--losses grpo dr_grpo dapo gspo]
Each variant is the shipped recipe with one `stages.grpo.loss…` override (gspo: dapo's aggregation with
sequence-level importance sampling), in its own run folder under runs/, so the pretrain and sft stages are
shared through the cache of the first run only where their fingerprints agree (they do: only grpo differs).
Prints the exact match before and after GRPO, the wall time, and the CPU kind the figures come from.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "grpo": ["stages.grpo.loss.type=grpo"],
    "dr_grpo": ["stages.grpo.loss.type=dr_grpo", "stages.grpo.loss.scale_rewards=none"],
    "dapo": ["stages.grpo.loss.type=dapo", "stages.grpo.loss.epsilon_high=0.28"],
    "gspo": ["stages.grpo.loss.type=dapo", "stages.grpo.loss.importance_sampling=sequence"],
}


def cpu_kind() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    found = sorted({f for f in ("amx_bf16", "avx512_bf16") if f in flags})
    return ", ".join(found) or "AVX2 only (no avx512_bf16, no amx_bf16)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", nargs="+", default=list(VARIANTS))
    losses = parser.parse_args().losses
    print(f"CPU: {cpu_kind()}")
    print(f"{'loss':10s} {'exact match before → after':>28s} {'wall':>8s}")
    for loss in losses:
        start = time.perf_counter()
        folder = f"runs/grpo-loss-{loss}"
        done = subprocess.run(
            [sys.executable, "-m", "llmctl", "--json", "run", "recipes/grpo_quickstart.yaml", f"run_dir={folder}",
             *VARIANTS[loss]],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - start
        if done.returncode != 0:
            print(f"{loss:10s} failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
            continue
        metrics = json.loads((ROOT / folder / "03-grpo" / "metrics.json").read_text())
        before, after = metrics.get("exact_match_before"), metrics.get("exact_match")
        print(f"{loss:10s} {before!s:>13s} → {after!s:<12s} {wall:7.0f}s")


if __name__ == "__main__":
    main()
