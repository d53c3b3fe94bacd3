"""Reward terms as TRL reward functions: built-in checks against a reference column, user functions loaded
from a module or a file, and the learned reward model — each wrapped so that a function that raises, returns
the wrong number of values, or something that is not a finite number stops the stage with its name, instead
of training on garbage. Functions and built-in checks run in a worker process with a deadline per call
(`models.isolated`): user code can neither hang the run nor end it."""

from __future__ import annotations

import importlib
import importlib.util
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmctl.errors import RecipeMismatch
from llmctl.spec.generation import RewardTerm

RewardFn = Callable[..., list[float]]
NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


class RewardFailed(RuntimeError):
    """A reward term misbehaved during training (the stage fails with exit 4, naming it)."""


def reward_functions(
    terms: list[RewardTerm], model_reward: RewardFn | None, output: Path | None = None
) -> tuple[list[RewardFn], list[float]]:
    """TRL's reward_funcs and reward_weights for the stage's terms (`model_reward` serves the model term).
    Function and built-in terms run in a worker process (`models.isolated`: a deadline per call, their prints to
    `output`); they are loaded there now, before any model: a path or name that does not resolve, or a module
    that fails to import, is a RecipeMismatch naming rewards[i].function."""
    from llmctl.models.isolated import LoadFailed, Worker

    isolated = {i: term.model_dump() for i, term in enumerate(terms) if term.model is None}
    try:
        worker = Worker(f"{__name__}:load_term", isolated, output) if isolated else None
    except LoadFailed as err:
        term = terms[err.index]
        field = f"rewards[{err.index}].function" if term.function else f"rewards[{err.index}]"
        message = str(err) if str(err).startswith(field) else f"{field}: {err}"
        raise RecipeMismatch(field, message) from None
    functions = []
    for index, term in enumerate(terms):
        where = f"rewards[{index}] ({term.name})"
        if worker is not None and index in isolated:
            raw = _in_worker(worker, index, term.timeout_s, where)
        else:
            assert model_reward is not None  # the stage loads it whenever a model term exists
            raw = model_reward
        functions.append(_checked(raw, where, term.name))
    return functions, [term.weight for term in terms]


def load_term(settings: dict[str, Any], index: int) -> RewardFn:
    """A function or built-in term's function, as the user wrote it (made inside the worker, from the term's
    settings)."""
    term = RewardTerm.model_validate(settings)
    return _load(term.function, index) if term.function is not None else _builtin(term)


def weighted_sum(functions: list[RewardFn], weights: list[float]) -> RewardFn:
    """The reward terms as one function: each completion's weighted sum of the terms' values (its score); a sum
    that overflows (a weight times a huge value) is a RewardFailed, never an `Infinity` in the outputs."""

    def score(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        parts = [f(prompts, completions, **columns) for f in functions]
        sums = [sum(w * p[i] for w, p in zip(weights, parts, strict=True)) for i in range(len(completions))]
        if bad := next((s for s in sums if not math.isfinite(s)), None):
            raise RewardFailed(f"the weighted sum of the reward terms is {bad} (a weight times a value overflowed)")
        return sums

    return score


def _in_worker(worker: Any, index: int, timeout_s: float, where: str) -> RewardFn:
    from llmctl.models.isolated import WorkerFailed

    def reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        try:
            return worker.call(index, (prompts, completions), _sendable(columns), timeout_s, f"reward {where}")
        except WorkerFailed as err:
            raise RewardFailed(str(err)) from None

    return reward


def _sendable(columns: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments that can travel to the worker: data columns and TRL's trainer_state; TRL's
    log_extra/log_metric callbacks (methods of the trainer) cannot, and are left out."""
    import pickle

    kept = {}
    for key, value in columns.items():
        if callable(value):
            continue
        try:
            pickle.dumps(value)
        except Exception:  # noqa: BLE001 - whatever pickle refuses stays behind
            continue
        kept[key] = value
    return kept


def _load(function: str, index: int) -> RewardFn:
    module_name, name = function.rsplit(":", 1)
    field = f"rewards[{index}].function"
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            spec = importlib.util.spec_from_file_location(f"llmctl_reward_{index}_{path.stem}", path)
            if spec is None or spec.loader is None or not path.is_file():
                raise RecipeMismatch(field, f"{field}: no file {module_name}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            sys.path.insert(0, str(path.parent.absolute()))  # its own helpers beside it import as they would run
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except RecipeMismatch:
        raise
    except Exception as err:  # noqa: BLE001 - the user's module failed to import: say which, and why
        raise RecipeMismatch(field, f"{field}: importing {module_name} failed: {type(err).__name__}: {err}") from None
    found = getattr(module, name, None)
    if not callable(found):
        raise RecipeMismatch(field, f"{field}: {module_name} has no function {name!r}")
    return found


def _checked(fn: RewardFn, where: str, name: str) -> RewardFn:
    def reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        try:
            values = fn(prompts, completions, **columns)
        except RewardFailed:
            raise
        except Exception as err:
            raise RewardFailed(f"reward {where} raised {type(err).__name__}: {err}") from err
        if not isinstance(values, (list, tuple)) or len(values) != len(completions):
            got = f"{len(values)} values" if isinstance(values, (list, tuple)) else type(values).__name__
            raise RewardFailed(
                f"reward {where} returned {got} for {len(completions)} completions; return one float each"
            )
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)]
        if bad:
            raise RewardFailed(f"reward {where} returned {bad[0]!r}; each value must be a finite number")
        return [float(v) for v in values]

    reward.__name__ = name  # TRL logs rewards/NAME/mean
    return reward


def _builtin(term: RewardTerm) -> RewardFn:
    if term.builtin == "exact_match":
        return _against_column(term.column or "", lambda done, ref: _normal(done) == _normal(ref))
    if term.builtin == "numeric_match":
        return _against_column(term.column or "", _same_number)
    if term.builtin == "regex":
        pattern = re.compile(term.pattern or "")
        return lambda prompts, completions, **_: [float(bool(pattern.search(_text(c)))) for c in completions]
    limit = term.max_chars or 1
    return lambda prompts, completions, **_: [-max(0, len(_text(c)) - limit) / limit for c in completions]


def _against_column(column: str, same: Callable[[str, str], bool]) -> RewardFn:
    def reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        if column not in columns:
            known = ", ".join(k for k in columns if k not in ("trainer_state", "log_extra", "log_metric"))
            raise KeyError(f"the prompt data has no column {column!r} (columns: {known or 'none'})")
        return [float(same(_text(c), str(r))) for c, r in zip(completions, columns[column], strict=True)]

    return reward


def _text(completion: Any) -> str:
    """A completion's text (a conversational one is a list of messages)."""
    if isinstance(completion, list):
        return " ".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


def _normal(text: str) -> str:
    """The first line, lower case, spaces squeezed, end punctuation dropped."""
    line = text.strip().split("\n", 1)[0]
    return " ".join(line.lower().split()).rstrip(".!?;:,")


def _same_number(completion: str, reference: str) -> bool:
    """Whether the first number in the completion equals the first number in the reference."""
    got, want = NUMBER_RE.search(completion), NUMBER_RE.search(reference)
    return got is not None and want is not None and float(got.group()) == float(want.group())
