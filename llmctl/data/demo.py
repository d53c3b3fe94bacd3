"""Deterministic demo data for the quickstart and tests: a corpus of addition facts (operands 0..12) and simple
templated sentences, question/answer demonstrations, preference pairs, RL prompts, and an evaluation set with
exact answers.

The RLHF part of the demo has a rule a small reward model can learn: like crowd-sourced demonstrations, half
the SFT answers explain themselves ("7. 3 plus 4 is 7.") and half are the bare answer ("7"); raters prefer the
bare answer (every preference pair is bare vs explained, with the same number). SFT therefore answers in either
style, exact match counts only bare answers, and PPO against the reward model moves the policy to the preferred
style: held-out reward and exact match rise together. A reward model cannot be taught to check sums here: it
knows no more arithmetic than the policy it starts from, and PPO exploits the shortcuts it learns instead
(bigger numbers, a favourite number), so correctness is left to what SFT learned.

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


HIGH = 12  # operands are 0..HIGH: every one of the 169 facts occurs in the corpus many times


def arithmetic_fact(rng: random.Random) -> str:
    a, b = rng.randint(0, HIGH), rng.randint(0, HIGH)
    return f"{a} plus {b} is {a + b}." if rng.random() < 0.7 else f"{a + b} minus {b} is {a}."


def sentence(rng: random.Random) -> str:
    subject = f"the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    obj = f"the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    return f"{subject} {rng.choice(VERBS)} {obj} {rng.choice(PLACES)}."


def corpus(rows: int, seed: int = 0) -> list[str]:
    """`rows` short documents, each a few sentences and facts."""
    rng = random.Random(seed)
    docs = []
    for _ in range(rows):
        parts = [arithmetic_fact(rng) if rng.random() < 0.6 else sentence(rng) for _ in range(rng.randint(2, 4))]
        docs.append(" ".join(parts).capitalize())
    return docs


def question(a: int, b: int) -> tuple[str, str]:
    """An addition question and its exact answer."""
    return f"What is {a} plus {b}?", str(a + b)


def qa_pairs(rows: int, seed: int, low: int = 0, high: int = HIGH) -> list[dict[str, str]]:
    """Addition questions with their bare answers."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(rows):
        q, a = question(rng.randint(low, high), rng.randint(low, high))
        pairs.append({"question": q, "answer": a})
    return pairs


def explained(row: dict[str, str]) -> str:
    """The answer followed by the fact it comes from: "7. 3 plus 4 is 7." """
    a, b = row["question"].removeprefix("What is ").removesuffix("?").split(" plus ")
    return f"{row['answer']}. {a} plus {b} is {row['answer']}."


def demonstrations(rows: int, seed: int, explained_share: float = 0.5) -> list[dict[str, str]]:
    """SFT demonstrations: question/answer pairs where `explained_share` of the answers explain themselves."""
    rng = random.Random(seed)
    return [
        {**row, "answer": explained(row) if rng.random() < explained_share else row["answer"]}
        for row in qa_pairs(rows, seed)
    ]


def preference_pairs(rows: int, seed: int) -> list[dict[str, str]]:
    """prompt + chosen (the bare sum) + rejected (the same sum, explained): raters prefer the bare answer."""
    return [
        {
            "prompt": f"Question: {row['question']}\n\nAnswer:",
            "chosen": f" {row['answer']}",
            "rejected": f" {explained(row)}",
        }
        for row in qa_pairs(rows, seed + 1)
    ]


DEMO_SETS = ("corpus", "instructions", "preferences", "prompts", "eval")


def demo_tables(seed: int = 0) -> dict[str, list[dict[str, str]]]:
    """The demo datasets as rows, by name."""
    return {
        "corpus": [{"text": t} for t in corpus(2000, seed)],
        "instructions": demonstrations(1000, seed + 10),
        "preferences": preference_pairs(2000, seed + 20),
        "prompts": [{"prompt": f"Question: {p['question']}\n\nAnswer:"} for p in qa_pairs(512, seed + 30)],
        "eval": qa_pairs(200, seed + 40),
    }


def write_demo(dest: Path, seed: int = 0, names: tuple[str, ...] = DEMO_SETS) -> dict[str, str]:
    """Write demo sets as Deep Lake datasets under `dest`; returns {name: version id}."""
    return {name: write_demo_one(dest / name, name, seed) for name in names}


DEMO_SCHEME = "demo://"
DEMO_VERSION = 3  # bump when the generators change, so cached demo sets are rebuilt
COMPLETE = ".llmctl-complete"  # written into a demo set once it is whole


def resolve(path: str) -> str:
    """`demo://NAME` → a local Deep Lake dataset holding demo set NAME (seed 0), generated on first use into
    llmctl's cache; any other path is returned unchanged. Lets the quickstart run with no set-up step."""
    if not path.startswith(DEMO_SCHEME):
        return path
    import os
    import shutil

    from llmctl.errors import DataError
    from llmctl.store.files import replace_dir
    from llmctl.store.layout import cache_root

    name = path[len(DEMO_SCHEME) :]
    if name not in DEMO_SETS:
        raise DataError(f"data.path {path}: no such demo set; choose one of {', '.join(DEMO_SETS)}")
    target = cache_root() / "demo" / f"v{DEMO_VERSION}" / name
    if not (target / COMPLETE).exists():  # a set without the mark is incomplete (older llmctl: a full disk's empty one)
        partial = target.with_name(f".{name}.{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        write_demo_one(partial, name)  # the same rows and the same Deep Lake version id every time
        (partial / COMPLETE).touch()
        replace_dir(partial, target)
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
