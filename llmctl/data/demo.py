"""Deterministic demo data for the quickstart and tests: a corpus of arithmetic facts and simple templated
sentences, question/answer pairs, preference pairs (the correct sum is chosen; the rejected answer is a word,
a copied operand or a near-miss sum), RL prompts, and an evaluation set with exact answers.

`llmctl data demo DEST` writes them as Deep Lake datasets (`demo://NAME` in a recipe does it on first use);
`python -m llmctl.data.demo FILE` writes the corpus as JSONL.
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
    """prompt + chosen (the right sum) + rejected: the failures a small model makes — a word instead of a
    number, a copied operand, or a sum that is off by a little (in equal shares)."""
    rng = random.Random(seed)
    out = []
    for pair in qa_pairs(rows, seed + 1):
        a, b = (int(x) for x in pair["question"].removeprefix("What is ").removesuffix("?").split(" plus "))
        wrong = [rng.choice(NOUNS + ADJECTIVES), str(rng.choice([a, b] if a + b not in (a, b) else [a + b + 1])),
                 str(a + b + rng.choice([-3, -2, -1, 1, 2, 3]))][rng.randrange(3)]
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


def write_demo(dest: Path, seed: int = 0, names: tuple[str, ...] = DEMO_SETS) -> dict[str, str]:
    """Write demo sets as Deep Lake datasets under `dest`; returns {name: version id}."""
    return {name: write_demo_one(dest / name, name, seed) for name in names}


DEMO_SCHEME = "demo://"
DEMO_VERSION = 2  # bump when the generators change, so cached demo sets are rebuilt


def resolve(path: str) -> str:
    """`demo://NAME` → a local Deep Lake dataset holding demo set NAME (seed 0), generated on first use into
    llmctl's cache; any other path is returned unchanged. Lets the quickstart run with no set-up step."""
    if not path.startswith(DEMO_SCHEME):
        return path
    import os
    import shutil

    from llmctl.data.lake import cache_dir
    from llmctl.errors import DataError

    name = path[len(DEMO_SCHEME) :]
    if name not in DEMO_SETS:
        raise DataError(f"data.path {path}: no such demo set; choose one of {', '.join(DEMO_SETS)}")
    target = cache_dir().parent / "demo" / f"v{DEMO_VERSION}" / name
    if not target.exists():
        partial = target.with_name(f".{name}.{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        write_demo_one(partial, name)
        os.replace(partial, target)
    return str(target)


def write_demo_one(dest: Path, name: str, seed: int = 0) -> str:
    """Write one demo set as a Deep Lake dataset at `dest`; returns its version id."""
    from datasets import Dataset

    from llmctl.data import lake

    rows = demo_tables(seed)[name]
    version, _ = lake.write(str(dest), Dataset.from_list(rows), f"llmctl demo data (seed {seed})")
    return version


def write_corpus(path: Path, rows: int = 2000, seed: int = 0) -> Path:
    """Write the corpus as JSONL (`{"text": …}` per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for text in corpus(rows, seed):
            handle.write(json.dumps({"text": text}) + "\n")
    return path


if __name__ == "__main__":
    write_corpus(Path(sys.argv[1] if len(sys.argv) > 1 else "corpus.jsonl"))
