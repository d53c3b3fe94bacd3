"""Formats: how a row becomes training text. Each format names the columns it needs and renders rows
into the columns TRL's trainers consume (text | prompt+completion | messages | prompt+chosen+rejected | prompt).

A `template:` (Python format string over the row's columns) overrides the default rendering; for formats
with a completion, everything from the completion placeholder on is the completion (what
`completion_only` trains on)."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Literal

from llmctl.errors import DataError

Shape = Literal["text", "sft", "preference", "prompt", "choice"]
"""What a format's rows are for, which is what a stage accepts: plain text (pretraining), a prompt and what to
learn to answer (sft), preference pairs (reward, dpo), prompts alone (RL rollouts), multiple choice (evaluation)."""


@dataclass(frozen=True)
class Format:
    shape: Shape
    required: tuple[str, ...]  # columns needed without a template
    optional: tuple[str, ...]
    completion: str | None  # the column where the completion starts (for templates and masking)
    default_template: str | None
    untemplated: tuple[str, ...] = ()  # columns needed even with a template (not rendered by it)


ALPACA = "### Instruction:\n{instruction}\n\n{input_block}### Response:\n{output}"
# The registry of formats: the recipe's `data.format` choices are its keys, in this order.
FORMATS: dict[str, Format] = {
    "text": Format("text", ("text",), (), None, "{text}"),
    "prompt_completion": Format("sft", ("prompt", "completion"), (), "completion", "{prompt}{completion}"),
    "instruction": Format("sft", ("instruction", "output"), ("input",), "output", ALPACA),
    "chat": Format("sft", ("messages",), (), None, None),
    "preference": Format("preference", ("chosen", "rejected"), ("prompt",), None, None, ("chosen", "rejected")),
    "prompt": Format("prompt", ("prompt",), (), None, "{prompt}"),
    "choice": Format("choice", ("prompt", "choices", "answer"), (), None, "{prompt}", ("choices", "answer")),
}


def formats_of(*shapes: Shape) -> list[str]:
    """The formats whose rows have one of these shapes (what a stage allows), in registry order."""
    return [name for name, fmt in FORMATS.items() if fmt.shape in shapes]


def allowed(fmt: str, *shapes: Shape) -> bool:
    return FORMATS[fmt].shape in shapes


def listed(names: list[str]) -> str:
    """a, b or c"""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


NOT_STRINGS = {"choices": "a list of strings", "answer": "the index or the text of the right choice"}


def placeholders(template: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def needed_columns(fmt: str, template: str | None) -> list[str]:
    """Columns a row must have: the format's own — or, with a template, the ones it names (plus those the
    template does not render, like preference's chosen/rejected)."""
    spec = FORMATS[fmt]
    if not template or fmt == "chat":
        return list(spec.required)
    named = [n for n in dict.fromkeys(placeholders(template)) if n != "input_block"]
    if spec.completion and spec.completion in named:
        named.remove(spec.completion)
        named.append(spec.completion)
    return named + [n for n in spec.untemplated if n not in named]


def check_columns(available: list[str], fmt: str, template: str | None, source: str) -> None:
    missing = [c for c in needed_columns(fmt, template) if c not in available]
    if missing:
        raise DataError(
            f"{source}: format '{fmt}' needs column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}; available: {', '.join(available) or 'none'} "
            "(rename with data.columns, e.g. {prompt: question})"
        )


def check_values(row: dict[str, Any], index: int, fmt: str, template: str | None, source: str) -> None:
    """Nulls and non-strings are reported by row, before any model loads."""
    for name in needed_columns(fmt, template):
        value = row.get(name)
        if fmt == "chat" and name == "messages":
            if not isinstance(value, list) or not value or not all(_is_turn(m) for m in value):
                raise DataError(
                    f"{source}: row {index}: messages must be a non-empty list of {{role, content}} (OpenAI) "
                    "or {from, value} (ShareGPT) objects"
                )
        elif fmt == "preference" and isinstance(value, list):  # conversational: turns rendered by the chat template
            if not value or not all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in value):
                raise DataError(
                    f"{source}: row {index}: column '{name}' must be a string or a list of {{role, content}} turns"
                )
        elif fmt == "choice" and name in NOT_STRINGS:
            if not _valid_choice_field(name, value, row.get("choices")):
                raise DataError(f"{source}: row {index}: column '{name}' must be {NOT_STRINGS[name]}")
        elif not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            raise DataError(f"{source}: row {index}: column '{name}' is {kind}, expected a string")
    if fmt == "preference" and row.get("chosen") == row.get("rejected"):
        raise DataError(
            f"{source}: row {index}: chosen and rejected are the same text; such a pair teaches nothing "
            "(the loss stays at log 2): drop or fix the row"
        )
    if fmt == "prompt" and not template and not str(row.get("prompt") or "").strip():
        raise DataError(f"{source}: row {index}: the prompt is empty; a rollout needs a prompt to answer")


SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}


def _is_turn(message: Any) -> bool:
    return isinstance(message, dict) and ({"role", "content"} <= message.keys() or {"from", "value"} <= message.keys())


def chat_messages(messages: list[dict[str, Any]], roles: dict[str, str]) -> list[dict[str, str]]:
    """OpenAI `messages` as they are; ShareGPT turns ({from, value}) with their speaker mapped to a role
    (`roles`, then ShareGPT's usual human → user, gpt → assistant)."""
    if "role" in messages[0]:
        return [{"role": roles.get(m["role"], m["role"]), "content": m["content"]} for m in messages]
    return [
        {"role": roles.get(m["from"], SHAREGPT_ROLES.get(m["from"], m["from"])), "content": m["value"]}
        for m in messages
    ]


def render(row: dict[str, Any], fmt: str, template: str | None, roles: dict[str, str] | None = None) -> dict[str, Any]:
    """One row in the layout TRL expects for the format."""
    spec = FORMATS[fmt]
    if fmt == "chat":
        return {"messages": chat_messages(row["messages"], roles or {})}
    template = template or spec.default_template or ""
    values = dict(row)
    if fmt == "instruction":
        values.setdefault("input", "")
        values["input_block"] = f"### Input:\n{row['input']}\n\n" if row.get("input") else ""
    if fmt == "text":
        return {"text": template.format(**values)}
    if fmt == "preference":  # without a prompt column (Anthropic HH), chosen/rejected hold the whole dialogue
        prompt = template.format(**values) if template else row.get("prompt") or ""
        return {"prompt": prompt, "chosen": row["chosen"], "rejected": row["rejected"]}
    if fmt == "prompt":
        return {"prompt": template.format(**values)}
    if fmt == "choice":  # the answer becomes the index of the right choice
        answer = row["answer"] if isinstance(row["answer"], int) else row["choices"].index(row["answer"])
        return {"prompt": template.format(**values), "choices": row["choices"], "answer": answer}
    marker = "{" + str(spec.completion) + "}"
    if marker not in template:
        raise DataError(f"data.template must contain {marker} (where the completion starts) for format {fmt}")
    cut = template.index(marker)
    prompt, completion = template[:cut].format(**values), template[cut:].format(**values)
    # "Answer: " + "7" → "Answer:" + " 7": BPE tokenizers attach the space to the next word, so a prompt
    # ending in a space would not be a token prefix of prompt+completion (and the loss mask would slip).
    stripped = prompt.rstrip(" ")
    return {"prompt": stripped, "completion": prompt[len(stripped) :] + completion}


def _valid_choice_field(name: str, value: Any, choices: Any) -> bool:
    if name == "choices":
        return isinstance(value, list) and len(value) > 1 and all(isinstance(c, str) for c in value)
    if isinstance(value, bool) or not isinstance(choices, list):
        return False
    return (isinstance(value, int) and 0 <= value < len(choices)) or (isinstance(value, str) and value in choices)
