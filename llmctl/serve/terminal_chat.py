"""`llmctl chat`: talk to a model folder or a registry's current version in the terminal, tokens streamed as
they are generated (like `litgpt chat` and `tune run generate`).

The prompt is the tokenizer's chat template; for a model fine-tuned by a recipe without one, the recipe's own
prompt template (`data.template`, found through the run folder the model came from); else `role: content`
lines. Commands: /reset, /system TEXT, /exit; Ctrl-C stops an answer, Ctrl-D or /exit leaves."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmctl.serve.requests import Sampling, stop_scan

MIN_ROOM = 16  # tokens an answer needs at least: older turns are dropped to leave this much of the context
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
        self.context: int | None = causal_lm.context_length(self.model.config)
        self.stop_strings = self._stop_strings()
        self.interrupted = threading.Event()
        self.generated = (0, 0.0)  # the last answer's tokens and seconds

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

    def fit(self, conversation: Conversation, user: str) -> str | None:
        """Drop the oldest turns until the prompt leaves MIN_ROOM tokens of the model's context for the answer;
        what was done, to tell the person (None: nothing). A message too long even alone is refused."""
        dropped = 0
        while self.context is not None and self._prompt_tokens(conversation, user) + MIN_ROOM > self.context:
            if not conversation.turns:
                raise PromptTooLong(
                    f"this message does not fit the model's context of {self.context} tokens with room for an "
                    "answer; shorten it (or /system to drop the system prompt)"
                )
            del conversation.turns[:2]
            dropped += 1
        return (
            f"(the oldest {dropped} exchange(s) no longer fit the context of {self.context} tokens: dropped)"
            if dropped
            else None
        )

    def _prompt_tokens(self, conversation: Conversation, user: str) -> int:
        return len(self._inputs(conversation, user)["input_ids"][0])

    def _inputs(self, conversation: Conversation, user: str) -> Any:
        from llmctl.data.chat import render

        prompt, templated = render(self.tokenizer, conversation.messages(user), self.template)
        return self.tokenizer(
            prompt, return_tensors="pt", add_special_tokens=not templated, return_token_type_ids=False
        )

    def answer(self, conversation: Conversation, user: str) -> Iterator[str]:
        """Stream the reply to `user` piece by piece (call `fit` first); the conversation keeps the exchange. The
        answer is capped to what is left of the context."""
        inputs = self._inputs(conversation, user)
        room = self.max_new_tokens
        if self.context is not None:
            room = max(1, min(room, self.context - len(inputs["input_ids"][0])))
        reply, started = "", time.perf_counter()
        for piece in self._stream(inputs, room):
            reply += piece
            yield piece
        tokens = len(self.tokenizer(reply, add_special_tokens=False)["input_ids"])
        self.generated = (tokens, time.perf_counter() - started)
        conversation.turns += [{"role": "user", "content": user}, {"role": "assistant", "content": reply.strip()}]

    def _stream(self, inputs: Any, max_new_tokens: int) -> Iterator[str]:
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.interrupted.clear()
        stop = StoppingCriteriaList([lambda ids, scores, **_: self.interrupted.is_set()])
        failed: list[BaseException] = []

        def generate() -> None:
            try:
                self.model.generate(
                    **inputs,
                    streamer=streamer,
                    stopping_criteria=stop,
                    pad_token_id=self.tokenizer.pad_token_id,
                    max_new_tokens=max_new_tokens,
                    **self.sampling.generate_kwargs(),
                )
            except Exception as err:  # noqa: BLE001 - handed to the reader, who would otherwise wait forever
                failed.append(err)
                streamer.end()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        yield from _until_stop(streamer, self.stop_strings, self.interrupted)
        worker.join()
        if failed:
            raise GenerationFailed(f"generation failed: {type(failed[0]).__name__}: {failed[0]}")


class PromptTooLong(Exception):
    """A message that cannot fit the model's context even without the conversation before it."""


class GenerationFailed(Exception):
    """The model raised while generating an answer (the chat says so and goes on)."""


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
        try:
            if notice := session.fit(conversation, line):
                write(notice + "\n")
        except PromptTooLong as err:
            write(f"({err})\n")
            continue
        write("model> ")
        try:
            for piece in session.answer(conversation, line):
                write(piece)
            tokens, seconds = session.generated
            write(f"\n  [{tokens} tokens, {tokens / seconds:.1f} tokens/s]" if seconds > 0 else "")
        except KeyboardInterrupt:
            session.interrupted.set()
            write(" [stopped]")
        except GenerationFailed as err:
            write(f" [{err}]")
        write("\n")
