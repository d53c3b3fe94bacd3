"""Preference tuning with and without RL on the same demo task: reward + PPO (recipes/quickstart.yaml) against
DPO (recipes/dpo_quickstart.yaml), both from the same pretrained and SFT'd tiny GPT-2.

Run: .venv/bin/python scripts/bench_dpo.py
Runs pretrain and sft once (about 2 minutes), then each preference stage alone in a fresh process (`--only`),
and prints wall time (start-up included), peak RSS and the held-out exact match each reaches.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_overhead import ROOT, measure  # (scripts/ is on sys.path when this file runs)


def stage_metrics(run_dir: Path, folder: str) -> dict:
    return json.loads((run_dir / folder / "metrics.json").read_text())


def main() -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="bench_dpo_")) / "run"
    llmctl = [sys.executable, "-m", "llmctl", "run"]
    quickstart, dpo = "recipes/quickstart.yaml", "recipes/dpo_quickstart.yaml"
    subprocess.run([*llmctl, quickstart, f"run_dir={run_dir}", "--until", "sft", "--quiet"], cwd=ROOT, check=True)
    reward = measure([*llmctl, quickstart, f"run_dir={run_dir}", "--only", "reward", "--quiet"])
    ppo = measure([*llmctl, quickstart, f"run_dir={run_dir}", "--only", "ppo", "--quiet"])
    direct = measure([*llmctl, dpo, f"run_dir={run_dir}", "--only", "dpo", "--quiet"])
    before = stage_metrics(run_dir, "02-sft")["exact_match"]
    rl_wall = reward[0] + ppo[0]
    print(
        json.dumps(
            {
                "exact_match_after_sft": before,
                "reward_plus_ppo": {
                    "wall_s": round(rl_wall, 1),
                    "peak_rss_mib": max(reward[1], ppo[1]),
                    "reward_wall_s": reward[0],
                    "ppo_wall_s": ppo[0],
                    "exact_match": stage_metrics(run_dir, "05-ppo")["exact_match"],
                },
                "dpo": {
                    "wall_s": direct[0],
                    "peak_rss_mib": direct[1],
                    "exact_match": stage_metrics(run_dir, "04-dpo")["exact_match"],
                },
                "time_ratio_dpo_over_rl": round(direct[0] / rl_wall, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
