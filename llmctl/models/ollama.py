"""An Ollama Modelfile for a GGUF folder: the model file, a prompt template derived from the tokenizer's chat
template, its stop strings, the context length and the model's sampling defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SYSTEM, USER, ANSWER = "\x01system\x01", "\x01user\x01", "\x01answer\x01"


def modelfile(folder: str, model_file: str) -> str:
    """An Ollama Modelfile for the GGUF folder (`ollama create NAME -f Modelfile` inside it): the model file, a
    prompt template derived from the tokenizer's chat template (rendered with placeholders, which become Ollama's
    {{ .System }} / {{ .Prompt }} / {{ .Response }}), its stop strings, the context length and the model's own
    sampling defaults. A model without a chat template gets the raw prompt (a completion model)."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from llmctl.models.causal_lm import context_length

    tokenizer = AutoTokenizer.from_pretrained(folder)
    template, stops = _ollama_template(tokenizer)
    lines = [
        "# Ollama: `ollama create NAME -f Modelfile` in this folder, then `ollama run NAME`. Written by llmctl.",
        f"FROM ./{model_file}",
    ]
    if '"""' in template:  # a Modelfile's triple quotes have no escape: the template would end early and inject lines
        lines.append("# no TEMPLATE: the chat template holds three double quotes, which a Modelfile cannot quote")
    else:
        lines.append(f'TEMPLATE """{template}"""')
    lines += [f"PARAMETER stop {_quoted(stop)}" for stop in stops if stop.isprintable()]  # a newline would inject
    if context := context_length(AutoConfig.from_pretrained(folder)):
        lines.append(f"PARAMETER num_ctx {context}")
    if (Path(folder) / "generation_config.json").is_file():
        generation = GenerationConfig.from_pretrained(folder)
        if generation.do_sample:
            lines += [f"PARAMETER temperature {generation.temperature}", f"PARAMETER top_p {generation.top_p}"]
            if generation.top_k:
                lines.append(f"PARAMETER top_k {generation.top_k}")
        if generation.repetition_penalty not in (None, 1.0):
            lines.append(f"PARAMETER repeat_penalty {generation.repetition_penalty}")
    return "\n".join(lines) + "\n"


def _ollama_template(tokenizer: Any) -> tuple[str, list[str]]:
    """(Ollama template, stop strings) from the tokenizer's chat template; `{{ .Prompt }}` without one."""
    eos = [tokenizer.eos_token] if tokenizer.eos_token else []
    if not getattr(tokenizer, "chat_template", None):
        return "{{ .Prompt }}", eos

    def render(messages: list[dict[str, str]], prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)

    user = [{"role": "user", "content": USER}]
    asked = render(user, True)
    answered = render([*user, {"role": "assistant", "content": ANSWER}], False)
    after = answered.split(ANSWER, 1)[1] if ANSWER in answered else ""
    template = asked.replace(USER, "{{ .Prompt }}") + "{{ .Response }}" + after
    try:
        with_system = render([{"role": "system", "content": SYSTEM}, *user], True)
    except Exception:  # noqa: BLE001 - templates that refuse a system message (Gemma's) raise their own errors
        with_system = asked
    if SYSTEM in with_system and with_system.endswith(asked):  # a system block that goes first when given
        block = with_system[: -len(asked)].replace(SYSTEM, "{{ .System }}")
        template = "{{ if .System }}" + block + "{{ end }}" + template
    stops = [s for s in [after.strip(), *eos] if s]
    return template, list(dict.fromkeys(stops))


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
