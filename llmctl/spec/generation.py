"""How a stage generates and scores: sampling settings, OpenAI-compatible endpoints, reward terms."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from llmctl.spec.base import Block


class GenerationSpec(Block):
    """How a stage generates its `samples` and its `eval_set` answers (transformers' generate() settings, as in
    the course's LoRA inference lesson). The default is greedy: exact match then measures the model, not luck."""

    max_new_tokens: int | None = Field(None, ge=1)
    """Tokens per sample (default: the stage's sample_tokens / response_length; eval_set keeps its own)."""
    do_sample: bool = False
    """Sample tokens (true) or decode greedily (false)."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature (with do_sample)."""
    top_k: int = Field(50, ge=0)
    """Sample among the k most likely tokens (0: no cut)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling: the smallest set of tokens holding this probability mass."""
    repetition_penalty: float = Field(1.0, gt=0)
    """Above 1 discourages tokens already present (transformers' repetition_penalty)."""
    length_penalty: float = 1.0
    """Beam search only: > 1 favours longer sequences."""
    num_beams: int = Field(1, ge=1)
    """Beam search width (1: no beam search)."""

    def kwargs(self) -> dict[str, Any]:
        """The generate() keyword arguments (sampling ones only when sampling, so greedy stays warning-free)."""
        out: dict[str, Any] = {
            "do_sample": self.do_sample,
            "num_beams": self.num_beams,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.do_sample:
            out |= {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}
        if self.num_beams > 1:
            out["length_penalty"] = self.length_penalty
        return out


GREEDY = GenerationSpec()


class EndpointSpec(Block):
    """An OpenAI-compatible API to generate with instead of a local model (generate, a benchmark's judge)."""

    url: str = Field(pattern=r"^https?://")
    """Base URL of the API, e.g. http://127.0.0.1:8000/v1 (`llmctl serve`, vLLM) or a hosted one."""
    model: str | None = None
    """The model name sent with each request (default: the first the endpoint lists)."""
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Environment variable holding the API key (a key is never written in a recipe); unset: no key."""
    timeout_s: float = Field(120.0, gt=0)
    """Seconds one request may take."""
    max_retries: int = Field(2, ge=0)
    """Retries of a request that failed for a transient reason (the openai client's back-off)."""
    concurrency: int = Field(4, ge=1)
    """Requests in flight at once."""
    api: Literal["completions", "chat"] = "completions"
    """completions (/v1/completions: the prompt as written) or chat (/v1/chat/completions: the prompt as one
    user message — hosted chat models have no completions API)."""


BUILTIN_REWARDS = ("exact_match", "numeric_match", "regex", "length_penalty")


class RewardTerm(Block):
    """One term of a reward: a Python function, a built-in check, or the stage's reward model; terms are summed
    with their weights (TRL's reward_funcs and reward_weights)."""

    function: str | None = None
    """A Python function `module.path:name` (importable) or `path/to/file.py:name`, called like TRL's reward
    functions: fn(prompts, completions, **columns) -> one float per completion. Its file is part of the stage's
    fingerprint: edit it and the stage re-runs."""
    builtin: Literal["exact_match", "numeric_match", "regex", "length_penalty"] | None = None
    """exact_match: the completion's first line equals `column`'s (case, spaces and end punctuation ignored);
    numeric_match: its first number equals `column`'s first number; regex: `pattern` is found in it;
    length_penalty: -(characters over `max_chars`) / max_chars."""
    model: str | None = None
    """The reward model ('previous', 'stage:NAME', a folder or a hub id) as a term."""
    column: str | None = None
    """exact_match, numeric_match: the prompt data's column holding the reference answer."""
    pattern: str | None = None
    """regex: a Python regular expression."""
    max_chars: int | None = Field(None, ge=1)
    """length_penalty: completions longer than this are penalised in proportion."""
    weight: float = 1.0
    """This term's weight in the sum."""
    timeout_s: float = Field(10.0, gt=0, le=3600)
    """Seconds one call of a function or built-in term may take (it runs in a worker process, which is stopped
    past this and the stage fails naming the term); the model term has none."""

    @model_validator(mode="after")
    def _one_kind(self) -> RewardTerm:
        kinds = [k for k in ("function", "builtin", "model") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a reward term is exactly one of function, builtin or model")
        if self.function is not None and not re.fullmatch(r"[\w./-]+(\.py)?:[A-Za-z_]\w*", self.function):
            raise ValueError(f"function {self.function!r}: write module.path:name or path/to/file.py:name")
        needs = {"exact_match": "column", "numeric_match": "column", "regex": "pattern", "length_penalty": "max_chars"}
        if self.builtin is not None and getattr(self, needs[self.builtin]) is None:
            raise ValueError(f"builtin {self.builtin} needs `{needs[self.builtin]}`")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as err:
                raise ValueError(f"pattern {self.pattern!r} is not a regular expression: {err}") from None
        return self

    @property
    def name(self) -> str:
        """How logs and metrics call the term (TRL logs rewards/NAME)."""
        if self.function is not None:
            return self.function.rsplit(":", 1)[1]
        return self.builtin or "reward_model"

    def source_files(self) -> list[str]:
        """The files a function term runs: its own and the local modules it imports, transitively (beside it, or
        in the working directory) — each fingerprinted like data, so editing a helper re-runs the stage."""
        first = self.source_file()
        if first is None:
            return []
        found: list[str] = []
        pending = [Path(first)]
        while pending:
            path = pending.pop()
            if str(path) in found or len(found) >= MAX_SOURCE_FILES:
                continue
            found.append(str(path))
            pending += _local_imports(path)
        return found

    def source_file(self) -> str | None:
        """The file defining a function term (fingerprinted like data), or None when it cannot be found."""
        if self.function is None:
            return None
        module, _ = self.function.rsplit(":", 1)
        if module.endswith(".py"):
            return module
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            return None
        return found.origin if found is not None and found.origin not in (None, "built-in", "frozen") else None


MAX_SOURCE_FILES = 200


def _local_imports(path: Path) -> list[Path]:
    """The modules `path` imports that live in its folder or the working directory (not installed packages)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names += [base] if base else []
            names += [f"{base}.{alias.name}".lstrip(".") for alias in node.names]
    found = []
    for root in dict.fromkeys((path.parent, Path("."))):
        for name in names:
            parts = name.split(".")
            for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
                if candidate.is_file() and candidate.resolve() != path.resolve():
                    found.append(candidate)
    return found


def reward_files(rewards: list[RewardTerm]) -> dict[str, str]:
    """The files of a stage's function terms and the local modules they import, by field (`rewards[0].function`,
    `rewards[0].function (helper.py)`): fingerprinted like data, so editing one re-runs the stage."""
    return {
        f"rewards[{i}].function" + (f" ({Path(path).name})" if n else ""): path
        for i, term in enumerate(rewards)
        for n, path in enumerate(term.source_files())
    }
