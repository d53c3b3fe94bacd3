"""Chat data: the template that turns `messages` into training text. The tokenizer's own chat template is used
unless the data block names one; `chatml` ships here with `{% generation %}` markers, which is what TRL's
`assistant_only_loss` needs to mask everything but the assistant turns (`completion_only: true`)."""

from __future__ import annotations

from typing import Any

from llmctl.errors import RecipeMismatch
from llmctl.spec.data import DataSpec

CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}{{- message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
NAMED = {"chatml": CHATML}


def use_template(tokenizer: Any, data: DataSpec) -> None:
    """Give `tokenizer` the data block's chat template (saved with the model, so serving renders chats the way
    the model was trained); a tokenizer without one, and no template named, is a clear error."""
    if data.chat_template:
        tokenizer.chat_template = NAMED.get(data.chat_template, data.chat_template)
    elif not getattr(tokenizer, "chat_template", None):
        raise RecipeMismatch(
            "data.chat_template",
            "data.chat_template: the model's tokenizer has no chat template; name one "
            "(chat_template: chatml) or give a Jinja template",
        )


FALLBACK = "{role}: {content}\n"  # tokenizers without a chat template, and no prompt template given


def render(tokenizer: Any, messages: list[dict[str, Any]], template: str | None = None) -> tuple[str, bool]:
    """The prompt for `messages` ending in a user turn, and whether it came from the tokenizer's chat template
    (which writes its own special tokens). Without one: a recipe's prompt template (`{prompt}`, as in
    `data.template`), the earlier turns rendered by it and followed by their answers; else `role: content` lines."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), True
    if template:
        system = "".join(m["content"] + "\n\n" for m in messages if m["role"] in ("system", "developer"))
        turns, pending = [], ""
        for message in messages:
            if message["role"] == "user":
                pending = template.format(prompt=message["content"])
            elif message["role"] == "assistant":
                turns.append(f"{pending} {message['content']}".rstrip() if pending else message["content"])
                pending = ""
        return system + "".join(turn + "\n\n" for turn in turns) + pending, False
    return "".join(FALLBACK.format(role=m["role"], content=m["content"]) for m in messages) + "assistant:", False
