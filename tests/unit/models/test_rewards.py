"""Reward terms: the built-in checks, loading user functions, and the guard that stops training on garbage."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from llmctl.errors import RecipeMismatch
from llmctl.models.rewards import RewardFailed, reward_functions
from llmctl.spec.generation import RewardTerm


def run(term: dict, completions: list, **columns: list) -> list[float]:
    (fn,), _ = reward_functions([RewardTerm(**term)], None)
    return fn(["p"] * len(completions), completions, **columns)


def test_builtins_check_against_the_reference_column() -> None:
    answers = ["7", "7. 3 plus 4 is 7.", "12"]
    assert run({"builtin": "numeric_match", "column": "answer"}, [" 7", " 7\n\nQuestion", " 11"], answer=answers) == [
        1,
        1,
        0,
    ]
    assert run({"builtin": "exact_match", "column": "answer"}, [" 7.", "7", "12\nmore"], answer=answers) == [1, 0, 1]
    assert run({"builtin": "regex", "pattern": r"^\s*\d+$"}, [" 7", "seven", "12 apples"]) == [1, 0, 0]
    assert run({"builtin": "length_penalty", "max_chars": 4}, ["abc", "abcdefgh"]) == [0, -1]


def test_terms_are_checked_when_the_recipe_is() -> None:
    for bad, message in (
        ({"builtin": "exact_match"}, "needs `column`"),
        ({"builtin": "regex", "pattern": "("}, "not a regular expression"),
        ({"function": "no colon"}, "module.path:name"),
        ({"builtin": "regex", "pattern": "x", "function": "m:f"}, "exactly one of"),
    ):
        with pytest.raises(ValidationError, match=message):
            RewardTerm(**bad)


def test_a_user_function_is_loaded_from_a_file_and_guarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_rewards.py").write_text(
        "def short(prompts, completions, **kw):\n    return [1.0 if len(c) < 5 else 0.0 for c in completions]\n"
        "def words(prompts, completions, **kw):\n    return ['good' for c in completions]\n"
        "def fewer(prompts, completions, **kw):\n    return [1.0]\n"
        "def nan(prompts, completions, **kw):\n    return [float('nan') for c in completions]\n"
        "def boom(prompts, completions, **kw):\n    raise ZeroDivisionError('oops')\n"
    )
    assert run({"function": "my_rewards.py:short"}, ["ok", "far too long"]) == [1.0, 0.0]
    assert RewardTerm(function="my_rewards.py:short").source_file() == "my_rewards.py"
    for name, message in (
        ("words", "returned 'good'"),
        ("fewer", "returned 1 values for 2"),
        ("nan", "returned nan"),
        ("boom", "raised ZeroDivisionError: oops"),
    ):
        with pytest.raises(RewardFailed, match=rf"rewards\[0\] \({name}\) {message}"):
            run({"function": f"my_rewards.py:{name}"}, ["a", "b"])
    with pytest.raises(RecipeMismatch, match=r"rewards\[0\].function: my_rewards.py has no function 'missing'"):
        run({"function": "my_rewards.py:missing"}, ["a"])
    with pytest.raises(RecipeMismatch, match="importing no_such_module failed"):
        run({"function": "no_such_module:f"}, ["a"])
