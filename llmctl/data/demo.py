"""Deterministic demo data for the quickstart and tests: a corpus of arithmetic facts and simple templated
sentences, question/answer pairs, preference pairs (the correct sum is chosen, a wrong one rejected — a rule
a reward model can learn), RL prompts, and an evaluation set with exact answers.

`llmctl data demo DEST` writes them as Deep Lake datasets; `python -m llmctl.data.demo FILE` rewrites the
shipped JSONL corpus (recipes/data/corpus.jsonl).
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


def question(a: int, b: int) -> tuple[str, str]:
    """An addition question and its exact answer."""
    return f"What is {a} plus {b}?", str(a + b)


def qa_pairs(rows: int, seed: int, low: int = 0, high: int = 20) -> list[dict[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(rows):
        q, a = question(rng.randint(low, high), rng.randint(low, high))
        pairs.append({"question": q, "answer": a})
    return pairs


def preference_pairs(rows: int, seed: int) -> list[dict[str, str]]:
    """prompt + chosen (the right sum) + rejected (off by 1 to 5)."""
    rng = random.Random(seed)
    out = []
    for pair in qa_pairs(rows, seed + 1):
        wrong = int(pair["answer"]) + rng.choice([-5, -3, -2, -1, 1, 2, 3, 5])
        out.append({"prompt": f"Question: {pair['question']}\n\nAnswer:", "chosen": f" {pair['answer']}", "rejected": f" {wrong}"})
    return out


DEMO_SETS = ("corpus", "instructions", "preferences", "prompts", "eval")


def demo_tables(seed: int = 0) -> dict[str, list[dict[str, str]]]:
    """The demo datasets as rows, by name."""
    return {
        "corpus": [{"text": t} for t in corpus(2000, seed)],
        "instructions": qa_pairs(1000, seed + 10),
        "preferences": preference_pairs(1000, seed + 20),
        "prompts": [{"prompt": f"Question: {p['question']}\n\nAnswer:"} for p in qa_pairs(256, seed + 30)],
        "eval": qa_pairs(200, seed + 40),
    }


def write_demo(dest: Path, seed: int = 0) -> dict[str, str]:
    """Write every demo set as a Deep Lake dataset under `dest`; returns {name: version id}."""
    from datasets import Dataset

    from llmctl.data import lake

    versions = {}
    for name, rows in demo_tables(seed).items():
        versions[name], _ = lake.write(str(dest / name), Dataset.from_list(rows), f"llmctl demo data (seed {seed})")
    return versions


def write_corpus(path: Path, rows: int = 2000, seed: int = 0) -> Path:
    """Write the corpus as JSONL (`{"text": …}` per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for text in corpus(rows, seed):
            handle.write(json.dumps({"text": text}) + "\n")
    return path


if __name__ == "__main__":
    write_corpus(Path(sys.argv[1] if len(sys.argv) > 1 else "recipes/data/corpus.jsonl"))
