"""Deterministic demo data for the quickstart and tests: a small corpus of arithmetic facts and simple
templated sentences that a tiny model learns measurably in a minute on a CPU.

Run `python -m llmctl.data.demo recipes/data/corpus.jsonl` to regenerate the shipped corpus.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ADJECTIVES = ["small", "big", "red", "quiet", "happy", "old", "young", "green"]
NOUNS = ["cat", "dog", "bird", "fox", "child", "teacher", "farmer", "robot"]
VERBS = ["sees", "follows", "helps", "finds", "likes", "watches"]
PLACES = ["in the garden", "near the river", "at school", "in the house", "on the hill"]


def arithmetic_fact(rng: random.Random) -> str:
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    return f"{a} plus {b} is {a + b}." if rng.random() < 0.5 else f"{a + b} minus {b} is {a}."


def sentence(rng: random.Random) -> str:
    subject = f"the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    obj = f"the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    return f"{subject} {rng.choice(VERBS)} {obj} {rng.choice(PLACES)}."


def corpus(rows: int, seed: int = 0) -> list[str]:
    """`rows` short documents, each a few sentences and facts."""
    rng = random.Random(seed)
    docs = []
    for _ in range(rows):
        parts = [arithmetic_fact(rng) if rng.random() < 0.5 else sentence(rng) for _ in range(rng.randint(2, 4))]
        docs.append(" ".join(parts).capitalize())
    return docs


def write_corpus(path: Path, rows: int = 2000, seed: int = 0) -> Path:
    """Write the corpus as JSONL (`{"text": …}` per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for text in corpus(rows, seed):
            handle.write(json.dumps({"text": text}) + "\n")
    return path


if __name__ == "__main__":
    write_corpus(Path(sys.argv[1] if len(sys.argv) > 1 else "recipes/data/corpus.jsonl"))
