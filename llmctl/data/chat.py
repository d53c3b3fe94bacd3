"""Chat data: the template that turns `messages` into training text. The tokenizer's own chat template is used
unless the data block names one; `chatml` ships here with `{% generation %}` markers, which is what TRL's
`assistant_only_loss` needs to mask everything but the assistant turns (`completion_only: true`)."""

from __future__ import annotations

from typing import Any

from llmctl.errors import UsageError
from llmctl.specs import DataSpec

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
        raise UsageError("data.chat_template: the model's tokenizer has no chat template; name one "
                         "(chat_template: chatml) or give a Jinja template")
