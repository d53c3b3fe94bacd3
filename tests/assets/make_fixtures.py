"""Write the course-shaped fixtures in this folder: tens of rows with exactly the columns and nesting of the
course's sources (LIMA, FinGPT sentiment, OpenOrca,
Anthropic HH, Alpaca-OrcaChat, SQuAD, hellaswag, OpenWebText).

    .venv/bin/python tests/assets/make_fixtures.py      # rewrites *.jsonl here (deterministic)

The rows are written for the tests (no text is copied from the real datasets); tests/e2e/test_course_recipes.py
runs every shipped recipe with `--smoke` on them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
ROWS = 40
TOPICS = [
    "the sea",
    "a city at night",
    "an old library",
    "the first snow",
    "a long train ride",
    "a quiet garden",
    "the moon",
    "a busy market",
    "a mountain lake",
    "a rainy afternoon",
]
TASKS = [
    (
        "Write a short poem about {t}.",
        "Here is a short poem about {t}:\n\nLight falls on {t},\nslow and kind,\nand leaves a little warmth behind.",
    ),
    (
        "Give three tips for visiting {t}.",
        "1. Go early, before the crowds.\n2. Bring water and a light coat.\n3. Take your time near {t}.",
    ),
    (
        "Explain in two sentences why people like {t}.",
        "People like {t} because it slows them down. It gives them a moment of calm in a busy day.",
    ),
    (
        "How do I describe {t} to a child?",
        "Use simple words and the senses: what {t} looks like, sounds like and feels like.",
    ),
]
COMPANIES = [
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Foods",
    "Stark Metals",
    "Wayne Logistics",
    "Hooli",
    "Vandelay Imports",
]
NEWS = {
    "positive": [
        "{c} shares rose 5% after strong quarterly earnings.",
        "{c} raised its full-year outlook on record demand.",
        "{c} won a large government contract worth $2 billion.",
    ],
    "negative": [
        "{c} shares fell 8% after the company cut its forecast.",
        "{c} reported a wider loss as costs surged.",
        "Regulators fined {c} over accounting errors.",
    ],
    "neutral": [
        "{c} will hold its annual meeting on 12 May.",
        "{c} appointed a new chief financial officer.",
        "{c} said it will publish results next week.",
    ],
}
FINGPT_INSTRUCTION = "What is the sentiment of this news? Please choose an answer from {negative/neutral/positive}."
FACTS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What gas do plants take in from the air?", "Plants take in carbon dioxide."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
]
SYSTEMS = [
    "",
    "You are an AI assistant. Provide a detailed answer so the user does not need to search elsewhere.",
    "You are a helpful assistant who always explains the reasoning step by step.",
]
PLACES = [
    ("Paris", "France", "the Seine"),
    ("Cairo", "Egypt", "the Nile"),
    ("London", "England", "the Thames"),
    ("Vienna", "Austria", "the Danube"),
    ("Budapest", "Hungary", "the Danube"),
    ("Rome", "Italy", "the Tiber"),
]
ACTIVITIES = [
    (
        "Making a sandwich",
        "A man takes two slices of bread out of a bag.",
        "He",
        [
            "spreads butter on one slice and adds cheese.",
            "throws the bread into the river.",
            "starts to paint the kitchen wall.",
            "drives to the airport.",
        ],
    ),
    (
        "Washing the dog",
        "A woman fills a tub with warm water.",
        "She",
        [
            "lifts the dog into the tub and soaps its fur.",
            "plants tomatoes in the tub.",
            "reads a newspaper on the roof.",
            "sells the tub to a neighbour.",
        ],
    ),
    (
        "Playing the guitar",
        "A boy sits on a chair holding a guitar.",
        "He",
        [
            "strums a few chords and starts to sing.",
            "eats the guitar strings.",
            "swims across a lake.",
            "repairs a car engine.",
        ],
    ),
]


def write(name: str, rows: list[dict]) -> None:
    with (HERE / name).open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def lima(rng: random.Random) -> list[dict]:
    """GAIR/lima: question, answer (the course's Deep Lake copy keeps these two)."""
    out = []
    for i in range(ROWS):
        q, a = TASKS[i % len(TASKS)]
        t = TOPICS[(i // len(TASKS) + i) % len(TOPICS)]
        out.append({"question": q.format(t=t), "answer": a.format(t=t)})
    return out


def fingpt(rng: random.Random) -> list[dict]:
    """FinGPT/fingpt-sentiment-train: instruction, input, output."""
    out = []
    for i in range(ROWS):
        label = ["positive", "negative", "neutral"][i % 3]
        text = rng.choice(NEWS[label]).format(c=rng.choice(COMPANIES))
        out.append({"input": text, "output": label, "instruction": FINGPT_INSTRUCTION})
    return out


def openorca(rng: random.Random) -> list[dict]:
    """Open-Orca/OpenOrca: id, system_prompt, question, response."""
    out = []
    for i in range(ROWS):
        q, a = FACTS[i % len(FACTS)]
        out.append(
            {
                "id": f"{['niv', 'flan', 't0', 'cot'][i % 4]}.{1000 + i}",
                "system_prompt": SYSTEMS[i % len(SYSTEMS)],
                "question": q,
                "response": a,
            }
        )
    return out


def hh(rng: random.Random) -> list[dict]:
    """Anthropic/hh-rlhf: chosen, rejected — each the whole dialogue, sharing the prompt turns."""
    out = []
    for i in range(ROWS):
        q, a = FACTS[i % len(FACTS)]
        prompt = f"\n\nHuman: {q}"
        if i % 2:
            prompt += f"\n\nAssistant: {a}\n\nHuman: Can you say more?"
            good, bad = "Sure. " + a + " It is a well known fact.", "No. Look it up yourself."
        else:
            good, bad = a, "I don't know and I don't care."
        out.append({"chosen": f"{prompt}\n\nAssistant: {good}", "rejected": f"{prompt}\n\nAssistant: {bad}"})
    return out


def alpaca_orcachat(rng: random.Random) -> list[dict]:
    """The course's PPO prompts (Deep Lake genai360/Alpaca-OrcaChat): instruction, input, output; the prompt
    the policy answers is the `input` column."""
    out = []
    for i in range(ROWS):
        q, a = FACTS[i % len(FACTS)]
        out.append({"instruction": SYSTEMS[1 + i % 2], "input": q, "output": a})
    return out


def squad(rng: random.Random) -> list[dict]:
    """rajpurkar/squad: id, title, context, question, answers {text: [...], answer_start: [...]}."""
    out = []
    for i in range(ROWS):
        city, country, river = PLACES[i % len(PLACES)]
        context = f"{city} is the capital of {country}. The river {river.split()[-1]} flows through {city}, and the city is known for its museums."
        if i % 2:
            question, answer = f"Which river flows through {city}?", river.split()[-1]
        else:
            question, answer = f"{city} is the capital of which country?", country
        out.append(
            {
                "id": f"5733be28{i:04x}",
                "title": city,
                "context": context,
                "question": question,
                "answers": {"text": [answer], "answer_start": [context.index(answer)]},
            }
        )
    return out


def hellaswag(rng: random.Random) -> list[dict]:
    """Rowan/hellaswag: ind, activity_label, ctx_a, ctx_b, ctx, endings (4), source_id, split, split_type, label."""
    out = []
    for i in range(ROWS):
        activity, ctx_a, ctx_b, endings = ACTIVITIES[i % len(ACTIVITIES)]
        order = list(range(4))
        rng.shuffle(order)
        shuffled = [endings[j] for j in order]
        out.append(
            {
                "ind": i,
                "activity_label": activity,
                "ctx_a": ctx_a,
                "ctx_b": ctx_b,
                "ctx": f"{ctx_a} {ctx_b}",
                "endings": shuffled,
                "source_id": f"activitynet~v_{i:05d}",
                "split": "val",
                "split_type": "indomain",
                "label": str(order.index(0)),
            }
        )
    return out


def openwebtext(rng: random.Random) -> list[dict]:
    """Skylion007/openwebtext: text (web documents of a few paragraphs)."""
    out = []
    for i in range(ROWS):
        city, country, river = PLACES[i % len(PLACES)]
        topic = TOPICS[i % len(TOPICS)]
        sentences = [
            f"{city} is a city in {country}.",
            f"Every spring, visitors walk along {river}.",
            f"Local writers often describe {topic} in their stories.",
            "Prices in the old town rose again this year.",
            "The council said it will open two new libraries.",
            f"Many people in {city} cycle to work.",
        ]
        rng.shuffle(sentences)
        out.append({"text": " ".join(sentences) + "\n\n" + " ".join(sentences[:3])})
    return out


def main() -> None:
    rng = random.Random(0)
    for name, build in [
        ("lima", lima),
        ("fingpt_sentiment", fingpt),
        ("openorca", openorca),
        ("anthropic_hh", hh),
        ("alpaca_orcachat", alpaca_orcachat),
        ("squad", squad),
        ("hellaswag", hellaswag),
        ("openwebtext", openwebtext),
    ]:
        write(f"{name}.jsonl", build(rng))


if __name__ == "__main__":
    main()
