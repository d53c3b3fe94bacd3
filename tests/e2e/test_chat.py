"""`llmctl chat` end to end: piped input through the real CLI, the prompt each kind of model gets, streaming
that stops at the template's next turn, and the commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmctl.serve.requests import Sampling
from llmctl.serve.terminal_chat import Conversation, Session, _until_stop, recipe_template, repl

pytestmark = pytest.mark.slow


def chat(model: Path, lines: str, *options: str) -> subprocess.CompletedProcess[str]:
    """`llmctl chat MODEL --temperature 0 OPTIONS` in a subprocess, with `lines` piped in."""
    return subprocess.run(
        [sys.executable, "-m", "llmctl", "chat", str(model), "--temperature", "0", *options],
        input=lines,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )


def test_the_cli_answers_piped_lines_and_obeys_commands(tiny_lm: Path) -> None:
    lines = "What is 3 plus 4?\n/system Be brief.\nAnd 2 plus 2?\n/nope\n/reset\n/exit\nnever read\n"
    done = chat(tiny_lm, lines, "--max-new-tokens", "5", "--template", "Question: {prompt}\n\nAnswer:")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "prompts from the template 'Question: {prompt}\\n\\nAnswer:'" in out
    assert out.count("model> ") == 2 and "(system prompt set; conversation cleared)" in out
    assert "unknown command /nope" in out and "(conversation cleared)" in out and "never read" not in out


def test_prompts_follow_the_chat_template_or_the_recipe_template(tiny_lm: Path, tmp_path: Path) -> None:
    from llmctl.data.chat import CHATML

    run = tmp_path / "runs/r"
    (run / "02-sft").mkdir(parents=True)
    shutil.copytree(tiny_lm, run / "02-sft/output")
    (run / "recipe.resolved.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": [
                    {"type": "pretrain", "data": {"template": None}},
                    {"type": "sft", "data": {"template": "### Q: {prompt}\n### A: {completion}"}},
                ]
            }
        )
    )
    assert recipe_template(run / "02-sft/output") == "### Q: {prompt}\n### A:"
    assert recipe_template(tiny_lm) is None

    session = Session(str(run / "02-sft/output"), Sampling(temperature=0), 3, recipe_template(run / "02-sft/output"))
    conversation = Conversation(system="Be brief.")
    reply = "".join(session.answer(conversation, "hi"))
    assert conversation.turns == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": reply.strip()}]
    assert session.stop_strings == ["### Q:"]
    from llmctl.data.chat import render

    prompt, templated = render(session.tokenizer, conversation.messages("next"), session.template)
    assert (
        prompt == f"Be brief.\n\n### Q: hi\n### A: {reply.strip()}".rstrip() + "\n\n### Q: next\n### A:"
        and not templated
    )

    session.tokenizer.chat_template = CHATML
    prompt, templated = render(session.tokenizer, conversation.messages("next"), session.template)
    assert (
        templated
        and prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>")
        and prompt.endswith("<|im_start|>assistant\n")
    )
    written: list[str] = []
    inputs = iter(["hello", "/exit"])
    repl(session, Conversation(), lambda _: next(inputs), written.append)
    assert "the tokenizer's chat template" in written[0] and "model> " in written


def test_streaming_stops_at_the_next_turn_and_holds_back_partial_stops() -> None:
    import threading

    stopped = threading.Event()
    pieces = ["The answer", " is 7.\n\nQu", "estion: what", " else"]
    shown = list(_until_stop(iter(pieces), ["Question:"], stopped))
    assert "".join(shown) == "The answer is 7.\n\n" and shown[0] == "Th"  # 8 characters held back: "Question" minus one
    assert stopped.is_set()
    assert "".join(_until_stop(iter(["a", "b"]), [], threading.Event())) == "ab"


def test_a_long_chat_on_a_short_context_drops_old_turns_caps_answers_and_never_hangs(tiny_lm: Path) -> None:
    long_line = "What is 3 plus 4 and then 5 plus 6?"
    lines = f"{long_line}\n{long_line}\n{long_line}\n{'word ' * 200}\n/exit\n"
    done = chat(tiny_lm, lines, "--max-new-tokens", "256")  # the tiny model's context is 64 tokens
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count("model> ") == 3 and "Traceback" not in out + done.stderr
    assert "no longer fit the context of 64 tokens: dropped" in out
    assert "this message does not fit the model's context of 64 tokens" in out  # the 200-word line alone
    assert out.count("tokens/s]") == 3
