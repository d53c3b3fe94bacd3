"""`llmctl chat`: talk to a model folder or a registry's current version in the terminal, tokens streamed as
they are generated (like `litgpt chat` and `tune run generate`).

The prompt is the tokenizer's chat template; for a model fine-tuned by a recipe without one, the recipe's own
prompt template (`data.template`, found through the run folder the model came from); else `role: content`
lines. Commands: /reset, /system TEXT, /exit; Ctrl-C stops an answer, Ctrl-D or /exit leaves."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llmctl.serve.requests import Sampling, stop_scan

HELP = "/reset clears the conversation, /system TEXT sets the system prompt, /exit leaves (Ctrl-C stops an answer)"


@dataclass
class Conversation:
    system: str = ""
    turns: list[dict[str, str]] = field(default_factory=list)

    def messages(self, user: str) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns + [{"role": "user", "content": user}]


def recipe_template(model_dir: Path) -> str | None:
    """The prompt part of the last `data.template` of the recipe that produced `model_dir` (a stage output in a
    run folder, or a registry version whose record names its run folder), cut before `{completion}`."""
    run_dir = next(
        (p for p in (model_dir.parent.parent, model_dir.parent) if (p / "recipe.resolved.yaml").is_file()), None
    )
    record = model_dir / "version.json"
    if run_dir is None and record.is_file():
        named = Path(yaml.safe_load(record.read_text()).get("run_dir") or "")
        run_dir = named if (named / "recipe.resolved.yaml").is_file() else None
    if run_dir is None:
        return None
    stages = (yaml.safe_load((run_dir / "recipe.resolved.yaml").read_text()) or {}).get("stages") or []
    templates = [((s.get("data") or {}).get("template") or "") for s in stages if isinstance(s.get("data"), dict)]
    prompts = [t.split("{completion}")[0].rstrip(" ") for t in templates if "{prompt}" in t]
    return prompts[-1] if prompts else None


class Session:
    """A loaded model and tokenizer answering one conversation."""

    def __init__(self, path: str, sampling: Sampling, max_new_tokens: int, template: str | None) -> None:
        from llmctl.models import causal_lm, quantized

        self.model, self.tokenizer = quantized.load_any(path), causal_lm.load_tokenizer(path)
        self.sampling, self.max_new_tokens, self.template = sampling, max_new_tokens, template
        self.stop_strings = self._stop_strings()
        self.interrupted = threading.Event()

    def _stop_strings(self) -> list[str]:
        """A prompt template's opening words ("Question:") start the next turn: the answer ends there."""
        if getattr(self.tokenizer, "chat_template", None) or not self.template:
            return []
        head = self.template.split("{prompt}")[0].strip()
        return [head] if head else []

    def prompt_source(self) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return "the tokenizer's chat template"
        return (
            f"the template {self.template!r}" if self.template else "'role: content' lines (no chat or prompt template)"
        )

    def answer(self, conversation: Conversation, user: str) -> Iterator[str]:
        """Stream the reply to `user` piece by piece; the conversation keeps the whole exchange."""
        from llmctl.data.chat import render

        prompt, templated = render(self.tokenizer, conversation.messages(user), self.template)
        reply = ""
        for piece in self._stream(prompt, templated):
            reply += piece
            yield piece
        conversation.turns += [{"role": "user", "content": user}, {"role": "assistant", "content": reply.strip()}]

    def _stream(self, prompt: str, templated: bool) -> Iterator[str]:
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        inputs = self.tokenizer(
            prompt, return_tensors="pt", add_special_tokens=not templated, return_token_type_ids=False
        )
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.interrupted.clear()
        stop = StoppingCriteriaList([lambda ids, scores, **_: self.interrupted.is_set()])
        worker = threading.Thread(
            target=self.model.generate,
            daemon=True,
            kwargs=dict(
                **inputs,
                streamer=streamer,
                stopping_criteria=stop,
                pad_token_id=self.tokenizer.pad_token_id,
                max_new_tokens=self.max_new_tokens,
                **self.sampling.generate_kwargs(),
            ),
        )
        worker.start()
        yield from _until_stop(streamer, self.stop_strings, self.interrupted)
        worker.join()


def _until_stop(pieces: Iterator[str], stops: list[str], interrupted: threading.Event) -> Iterator[str]:
    """Pass text through up to the first stop string, holding back what could still become one (the server's
    stop_scan)."""
    text, sent = "", 0
    for piece in pieces:
        text += piece
        cut, safe = stop_scan(text, sent, stops)
        if cut >= 0:
            interrupted.set()  # ends generate() at its next step
            yield text[sent:cut]
            for _ in pieces:  # drain the streamer so the generating thread can finish
                pass
            return
        if safe > sent:
            yield text[sent:safe]
            sent = safe
    yield text[sent:]


def repl(
    session: Session, conversation: Conversation, read: Callable[[str], str], write: Callable[[str], None]
) -> None:
    """Read a line, answer it, until /exit or end of input."""
    write(f"chatting with {session.model.__class__.__name__}, prompts from {session.prompt_source()}\n{HELP}\n")
    while True:
        try:
            line = read("you> ").strip()
        except EOFError:
            write("\n")
            return
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return
        if line == "/reset":
            conversation.turns.clear()
            write("(conversation cleared)\n")
            continue
        if line.startswith("/system"):
            conversation.system = line.removeprefix("/system").strip()
            conversation.turns.clear()
            write(f"(system prompt {'set' if conversation.system else 'cleared'}; conversation cleared)\n")
            continue
        if line.startswith("/"):
            write(f"unknown command {line.split()[0]}; {HELP}\n")
            continue
        write("model> ")
        try:
            for piece in session.answer(conversation, line):
                write(piece)
        except KeyboardInterrupt:
            session.interrupted.set()
            write(" [stopped]")
        write("\n")
