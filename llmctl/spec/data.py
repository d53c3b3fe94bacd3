"""Data blocks: where a stage's rows come from (files, Deep Lake, hf://, mixtures), their format, columns, template and split."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, model_validator

from llmctl.spec.base import MAX_SEED, Block
from llmctl.spec.formats import FORMATS, allowed

if TYPE_CHECKING:
    DataFormat = str
else:
    DataFormat = Literal[tuple(FORMATS)]  # one choice per registered format (data/formats.py)


class DataSpec(Block):
    """Where rows come from, how they are filtered and split, and how a row becomes training text."""

    path: str = ""
    """A Deep Lake dataset (local folder, file://, hub://, s3://, gcs://, az://), a Hugging Face Hub dataset
    (hf://ORG/NAME), a file or glob (.jsonl .json .txt .csv .parquet), or a `datasets.save_to_disk` folder.
    Local paths are relative to the working directory. (Empty when `mix` lists the sources.)"""
    config: str | None = None
    """hf:// datasets: the configuration (`datasets.load_dataset`'s name), e.g. plain_text."""
    revision: str | None = None
    """hf:// datasets: a branch, tag or commit (default: main); the resolved commit is the data fingerprint."""
    streaming: bool = False
    """hf:// datasets: stream rows instead of downloading the whole split (needs `limit`)."""
    query: str | None = None
    """Deep Lake TQL applied before anything else, e.g. "SELECT * WHERE contains(question, 'python')"."""
    split: str | None = None
    """Named split of a saved DatasetDict or of an hf:// dataset (default there: train)."""
    columns: dict[str, str] = {}
    """Renames, {name the format expects: column in the data}, e.g. {prompt: question, completion: answer}.
    A column may be a path into nested values: {completion: "answers.text[0]"} (SQuAD)."""
    format: DataFormat = "text"
    """text | prompt_completion | instruction (instruction/input/output) | chat (messages) |
    preference (prompt/chosen/rejected) | prompt (prompts only, for RL rollouts) | choice (prompt, choices:
    a list of strings, answer: its index or text; for multiple-choice evaluation)."""
    template: str | None = None
    """Python format string over the row's columns, e.g. "Question: {prompt}\n\nAnswer: {completion}". For
    prompt_completion/instruction the completion starts at the completion placeholder."""
    completion_only: bool = False
    """Train on the completion only (the prompt is masked out of the loss; chat: the assistant turns only)."""
    chat_template: str | None = None
    """format chat (and preference rows given as turns): `chatml` (built in, with the markers that mask all but
    assistant turns) or a Jinja template; default: the tokenizer's own chat template."""
    roles: dict[str, str] = {}
    """format chat: speaker → role renames, e.g. {bot: assistant} (ShareGPT's human/gpt map to user/assistant
    without being told)."""
    validation: float | int | str = Field(0.05)
    """Held-out share (0 < x < 1), row count (>= 1), or the path of a second source laid out the same way;
    0 disables evaluation."""
    limit: int | None = Field(None, ge=1)
    """Use at most this many rows (after the query and shuffling)."""
    shuffle: bool = True
    """Shuffle rows (seeded) before splitting."""
    too_long: Literal["truncate", "drop", "error"] = "truncate"
    """Rows longer than the stage's max_length (counted with its tokenizer before training): truncate them
    (the trainer cuts them), drop them, or stop with an error naming the first one."""
    mix: list[DataSpec] = []
    """Several sources mixed into this one (instead of `path`): each with its own path, columns, template,
    query, split, limit and, when interleaving, `weight`; they share this block's format, validation and limit."""
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    """Seed of this block's shuffle, split and interleaving (default: the stage's seed)."""
    strategy: Literal["concat", "interleave"] = "concat"
    """How `mix` sources combine: concat (all rows, shuffled together) or interleave (drawn by `weight` until
    every source is used up)."""
    weight: float | None = Field(None, gt=0)
    """A `mix` source's share of the draws when the mixture interleaves (default: equal shares)."""

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        if isinstance(self.validation, float) and not 0 <= self.validation < 1:
            raise ValueError("validation is a fraction below 1 (0.05), a row count (500) or a second source path")
        if isinstance(self.validation, int) and self.validation < 0:
            raise ValueError("validation must not be negative")
        if self.completion_only and not allowed(self.format, "sft"):
            raise ValueError(f"completion_only needs a prompt and a completion; format {self.format} has none")
        completion = {"prompt_completion": "{completion}", "instruction": "{output}"}.get(self.format)
        if self.template and completion and completion not in self.template:
            raise ValueError(f"template must contain {completion}, where the completion starts (format {self.format})")
        if self.template and self.format == "chat":
            raise ValueError("format chat renders messages with the tokenizer's chat template; drop `template`")
        if self.chat_template and self.format not in ("chat", "preference"):
            raise ValueError("chat_template applies to format chat (and conversational preference rows)")
        if problem := _mix_problem(self):
            raise ValueError(problem)
        hub = self.path.startswith("hf://")
        if not hub and (self.config or self.revision or self.streaming):
            raise ValueError("config, revision and streaming apply to hf:// datasets")
        if self.streaming and self.limit is None:
            raise ValueError("streaming reads `limit` rows: set limit")
        return self


SHARED_BY_MIX = ("format", "completion_only", "validation", "too_long", "shuffle", "chat_template", "seed")


def _mix_problem(mixture: DataSpec) -> str | None:
    """What is wrong with a mixture's sources or with a block that is none, if anything."""
    if not mixture.mix:
        return None if mixture.path else "path is required (or list the sources under mix)"
    if mixture.path:
        return "give either path or mix, not both"
    if isinstance(mixture.validation, str):
        return "a mixture holds out a share or a row count, not a second source"
    for index, source in enumerate(mixture.mix):
        if source.mix:
            return f"mix[{index}]: a mix source cannot be a mixture itself"
        for name in SHARED_BY_MIX:  # (a dumped recipe repeats the defaults: only a different value is a mistake)
            value = getattr(source, name)
            if value != DataSpec.model_fields[name].default and value != getattr(mixture, name):
                return (
                    f"mix[{index}]: {name} belongs to the mixture ({', '.join(SHARED_BY_MIX)} are set once, above mix)"
                )
        if source.weight is not None and mixture.strategy != "interleave":
            return f"mix[{index}]: weight needs strategy: interleave"
    return None


class EvalSetSpec(DataSpec):
    """Prompt/completion pairs scored by exact match of the greedy generation (first line, stripped)."""

    format: Literal["prompt_completion", "instruction"] = "prompt_completion"
    """How rows are read: prompt_completion or instruction."""
    validation: float | int | str = 0
    """Rows held out for the evaluation: a share (0.1), a count (50), or a file or split."""
    max_new_tokens: int = Field(8, ge=1)
    """Tokens generated per answer."""


class PromptSetSpec(DataSpec):
    """Prompts to sample from: every row is one unless `validation` holds some out (they are then not sampled)."""

    validation: float | int | str = 0
    """Rows held out and not sampled (a share, a count); default none."""


def data_blocks(block: Any, prefix: str = "") -> list[tuple[str, DataSpec]]:
    """(field path, DataSpec) for every data block inside `block`, however deeply nested (`data`, `accuracy.data`,
    `local_tasks[0].data`)."""
    if isinstance(block, DataSpec):
        return [(prefix, block)]
    found: list[tuple[str, DataSpec]] = []
    if isinstance(block, BaseModel):
        for name in type(block).model_fields:
            found += data_blocks(getattr(block, name), f"{prefix}.{name}" if prefix else name)
    elif isinstance(block, (list, tuple)):
        for index, item in enumerate(block):
            found += data_blocks(item, f"{prefix}[{index}]")
    return found
