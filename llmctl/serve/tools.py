"""Tool calls on chat completions: `tools` and `tool_choice` in, `message.tool_calls` out.

The tools reach the model through its tokenizer's chat template (`apply_chat_template(tools=…)`) when the template
knows tools; otherwise through the common fallback, Hermes-style: a system turn listing the functions' JSON
schemas inside <tools></tools> and asking for <tool_call>{"name": …, "arguments": {…}}</tool_call>, earlier calls
and `role: tool` results written back the same way. Calls are parsed from that <tool_call> form (Hermes, Qwen 2/3
and the fallback write it); `tool_choice: required` or a named function is enforced by constrained decoding (an
llguidance Lark grammar embedding each function's parameter schema), so even a weak model answers with a valid
call. Formats other than <tool_call> (Llama 3's python tag, Mistral's [TOOL_CALLS]) are returned as text."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
FALLBACK_SYSTEM = (
    "You may call functions to answer. The functions, as JSON schemas:\n<tools>\n{tools}\n</tools>\n"
    'To call one, answer with <tool_call>{{"name": NAME, "arguments": {{…}}}}</tool_call> and nothing else.'
)


def render(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> tuple[str, bool]:
    """The prompt for a conversation with tools (and whether the chat template wrote it)."""
    from llmctl.data.chat import render as render_chat

    template = getattr(tokenizer, "chat_template", None) or ""
    if "tools" in template:
        shaped = [_for_template(m) for m in messages]
        return tokenizer.apply_chat_template(shaped, tools=tools, tokenize=False, add_generation_prompt=True), True
    listed = "\n".join(json.dumps(t["function"]) for t in tools)
    system = {"role": "system", "content": FALLBACK_SYSTEM.format(tools=listed)}
    return render_chat(tokenizer, [system, *(_written(m) for m in messages)])


def _for_template(message: dict[str, Any]) -> dict[str, Any]:
    """HF chat templates take a call's arguments as a mapping (OpenAI sends a JSON string)."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    shaped = []
    for call in calls:
        function = dict(call.get("function") or {})
        try:
            function["arguments"] = json.loads(function.get("arguments") or "{}")
        except ValueError:
            pass
        shaped.append({"type": "function", "function": function})
    return message | {"tool_calls": shaped}


def _written(message: dict[str, Any]) -> dict[str, Any]:
    """A message in the fallback's words: calls as <tool_call> lines, a tool result as <tool_response>."""
    if message.get("role") == "tool":
        return {"role": "user", "content": f"<tool_response>\n{message.get('content') or ''}\n</tool_response>"}
    calls = message.get("tool_calls") or []
    if calls:
        written = "\n".join(
            "<tool_call>"
            + json.dumps(
                {"name": c["function"]["name"], "arguments": json.loads(c["function"].get("arguments") or "{}")}
            )
            + "</tool_call>"
            for c in calls
        )
        return {"role": "assistant", "content": ((message.get("content") or "") + "\n" + written).strip()}
    return {"role": message["role"], "content": message.get("content") or ""}


def grammar(tools: list[dict[str, Any]], choice: Any) -> str | None:
    """An llguidance grammar forcing one call (`required`: of any tool; a named choice: of that one), or None."""
    import llguidance

    if choice == "required":
        chosen = tools
    elif isinstance(choice, dict):
        name = choice["function"]["name"]
        chosen = [t for t in tools if t["function"]["name"] == name]
    else:
        return None
    schemas = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                "arguments": t["function"].get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in chosen
    ]
    schema = {"anyOf": schemas, "x-guidance": {"whitespace_flexible": False}}
    lark = 'start: "<tool_call>" call "</tool_call>"\ncall: %json ' + json.dumps(schema)
    compiled = llguidance.LLMatcher.grammar_from_lark(lark)
    if error := llguidance.LLMatcher.validate_grammar(compiled):
        raise ValueError(f"a tool's parameters cannot be enforced: {error}")
    return compiled


def parse(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(the text outside calls, or None; the calls in OpenAI's shape) of a model's answer."""
    calls = []
    for found in CALL_RE.finditer(text):
        try:
            call = json.loads(found.group(1))
        except ValueError:
            continue
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            continue
        arguments = call.get("arguments", call.get("parameters", {}))
        calls.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(arguments)},
            }
        )
    if not calls:
        return text, []
    rest = CALL_RE.sub("", text).strip()
    return rest or None, calls
