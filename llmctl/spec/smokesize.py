"""How small `--smoke` cuts a recipe (kept apart from llmctl/smoke.py so that stage modules can shrink their own
settings without importing the recipe schema, which imports them)."""

from __future__ import annotations

from dataclasses import dataclass

SUFFIX = "-smoke"  # of the run folder and the registry a smoke run writes


@dataclass(frozen=True)
class SmokeSize:
    rows: int = 32
    """Rows per data source (training, evaluation, calibration)."""
    held_out: int = 4
    """Validation rows of a training source that holds some out."""
    steps: int = 2
    """Optimizer steps per training stage."""
    seq_len: int = 128
    """Longest sequence (max_length, block_size, prompt and response lengths are cut to it)."""
    new_tokens: int = 8
    docs: int = 8
    """Documents per benchmark task."""
    trials: int = 2
    """Quantization configurations tried."""
    calibration: int = 8
    tokenizer_rows: int = 200


SMOKE = SmokeSize()
