"""Bad data stops with exit 2 before any model loads, naming the file and line (or the source row), never as a
library's "Expected object or value at position 40" or a StopIteration after training started."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from llmctl.data.lengths import LengthLimit
from llmctl.data.sources import load_examples
from llmctl.errors import DataError
from llmctl.spec.data import DataSpec
from tests.conftest import run_json

pytestmark = pytest.mark.reliability
ROWS = [{"prompt": f"What is {i} plus 1?", "completion": f" {i + 1}"} for i in range(20)]


def jsonl(rows: list[dict]) -> list[str]:
    return [json.dumps(r) for r in rows]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def load(path: Path, **spec: object) -> None:
    settings = {"format": "prompt_completion", "validation": 0} | spec
    load_examples(DataSpec(path=str(path), **settings), seed=1)  # type: ignore[arg-type]


def replaced(index: int, line: str) -> list[str]:
    lines = jsonl(ROWS)
    lines[index] = line
    return lines


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("broken.jsonl", replaced(5, '{"prompt": "q", "completion": oops}'), "broken.jsonl:6:31: not valid JSON"),
        ("array.jsonl", replaced(7, '["a", "b"]'), "array.jsonl:8: a line holds one JSON object"),
        (
            "scalar.jsonl",
            replaced(2, '"just a string"'),
            'scalar.jsonl:3: a line holds one JSON object {"column": value, …}, not a string',
        ),
        ("mixed.jsonl", jsonl(ROWS[:3]) + ["{", *jsonl(ROWS[3:])], "mixed.jsonl:4:2: not valid JSON"),
        ("empty.jsonl", [""], "empty.jsonl: the file is empty"),
        (
            "ragged.csv",
            ["prompt,completion", "q1, a1", "q2, a2, extra", "q3, a3"],
            "ragged.csv:3: 3 fields, but the header has 2",
        ),
        (
            "list.json",
            [json.dumps([*ROWS[:2], ["not", "a", "row"]])],
            "list.json: item 2 of the top-level list is a JSON array",
        ),
    ],
    ids=["broken-line", "array-line", "scalar-line", "mixed", "empty", "ragged-csv", "json-list-item"],
)
def test_unreadable_files_name_file_and_line(tmp_path: Path, name: str, content: list[str], needle: str) -> None:
    path = write_lines(tmp_path / name, content)
    with pytest.raises(DataError) as caught:
        load(path)
    assert needle in str(caught.value)


def test_non_utf8_bytes_name_line_and_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(
        ("\n".join(jsonl(ROWS[:3])) + "\n").encode() + '{"prompt": "café", "completion": " x"}\n'.encode("latin-1")
    )
    with pytest.raises(DataError, match=r"latin.jsonl:4: not UTF-8: byte 0xe9 at byte offset \d+"):
        load(path)


def test_a_nul_byte_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nul.jsonl"
    path.write_text("\n".join(jsonl(ROWS[:2])) + '\n{"prompt": "a\x00", "completion": " b"}\n')
    with pytest.raises(DataError, match="nul.jsonl:3: holds a NUL byte"):
        load(path)


@pytest.mark.parametrize(
    ("row", "fmt", "needle"),
    [
        ({"prompt": None, "completion": " 1"}, "prompt_completion", "row 9: column 'prompt' is null"),
        ({"prompt": 5, "completion": " 1"}, "prompt_completion", "row 9: column 'prompt' is int"),
        (
            {"prompt": "p", "chosen": " same", "rejected": " same"},
            "preference",
            "row 9: chosen and rejected are the same text",
        ),
        ({"prompt": "  "}, "prompt", "row 9: the prompt is empty"),
    ],
    ids=["null", "int", "chosen-equals-rejected", "empty-prompt"],
)
def test_bad_values_name_the_source_row(tmp_path: Path, row: dict, fmt: str, needle: str) -> None:
    base = {
        "prompt_completion": ROWS,
        "preference": [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": " 0"} for r in ROWS],
        "prompt": [{"prompt": r["prompt"]} for r in ROWS],
    }[fmt]
    rows = [dict(r) for r in base]
    rows[9] = row
    path = write_lines(tmp_path / "rows.jsonl", jsonl(rows))
    with pytest.raises(DataError, match=needle):
        load(path, format=fmt)


def test_a_missing_column_is_named_with_what_exists(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "q.jsonl", jsonl([{"question": "q", "answer": "a"}] * 3))
    with pytest.raises(DataError, match="needs columns prompt, completion; available: question, answer"):
        load(path)


@pytest.mark.parametrize("policy", ["error", "drop", "truncate"])
def test_one_huge_row_under_each_too_long_policy(tmp_path: Path, tiny_lm: Path, policy: str) -> None:
    from llmctl.models.causal_lm import load_tokenizer

    rows = [dict(r) for r in ROWS]
    rows[10]["completion"] = " 7" * 200  # source row 10; shuffling moves it elsewhere
    path = write_lines(tmp_path / "long.jsonl", jsonl(rows))
    limit = LengthLimit(load_tokenizer(str(tiny_lm)), 32, lambda _: None)
    spec = DataSpec(path=str(path), format="prompt_completion", validation=0, too_long=policy)  # type: ignore[arg-type]
    if policy == "error":
        with pytest.raises(DataError, match=r"1 of 20 rows are longer than max_length=32 tokens \(first: row 10,"):
            load_examples(spec, 1, limit)
        return
    train, _ = load_examples(spec, 1, limit)
    assert limit.report["too_long"] == 1
    assert len(train) == (19 if policy == "drop" else 20)
    assert "__llmctl_source_row" not in train.column_names


def five_mb_row(folder: Path) -> Path:
    rows = [dict(r) for r in ROWS]
    rows[10]["completion"] = " 7" * 2_500_000
    return write_lines(folder / "huge.jsonl", jsonl(rows))


def test_a_5mb_row_is_refused_at_once_without_tokenizing_it_whole(tmp_path: Path, tiny_lm: Path) -> None:
    """It took 90 s and 2.5 GB; a 50 MB row had not finished after 120 s."""
    import tracemalloc

    from llmctl.models.causal_lm import load_tokenizer

    limit = LengthLimit(load_tokenizer(str(tiny_lm)), 32, lambda _: None)
    spec = DataSpec(path=str(five_mb_row(tmp_path)), format="prompt_completion", validation=0, too_long="error")
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(
        DataError, match=r"1 of 20 rows are longer than max_length=32 tokens \(first: row 10, at least \d+ tokens\)"
    ):
        load_examples(spec, 1, limit)
    elapsed, (_, peak) = time.perf_counter() - started, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 5 and peak < 256 << 20, (elapsed, peak)


def test_previewing_a_5mb_row_shows_its_start_and_a_bounded_count(
    tmp_path: Path, tiny_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from llmctl.cli import app

    monkeypatch.chdir(tmp_path)
    five_mb_row(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: p\nstages:\n  - type: sft\n    model: {tiny_lm}\n"
        "    data: {path: huge.jsonl, format: prompt_completion, shuffle: false, validation: 0}\n"
    )
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["--json", "data", "preview", str(recipe), "-n", "12"])
    assert result.exit_code == 0, result.output[-2000:]
    assert time.perf_counter() - started < 10 and len(result.output) < 100_000
    huge = json.loads(result.stdout)[10]
    assert huge["tokens_at_least"] and huge["parts"][1]["text"].endswith(",000 more characters]")


def test_a_broken_file_stops_the_run_with_exit_2_before_the_model_loads(workdir: Path, tiny_lm: Path) -> None:
    write_lines(workdir / "sft.jsonl", replaced(5, '{"prompt": "q", "completion": oops}'))
    recipe = workdir / "sft.yaml"
    recipe.write_text(f"""\
name: bad-data
stages:
  - type: sft
    model: {tiny_lm}
    data: {{path: sft.jsonl, format: prompt_completion, validation: 0}}
    train: {{max_steps: 2}}
""")
    code, events = run_json(str(recipe))
    assert code == 2
    error = events[-1]
    assert error["event"] == "error" and "sft.jsonl:6:31: not valid JSON" in error["message"]
    assert "Traceback" not in error["message"]
    assert not any(e["event"] == "progress" for e in events)
    assert not (workdir / "runs/bad-data/01-sft").exists()


def test_a_truncated_parquet_file_is_reported_as_one_not_as_bad_utf8(tmp_path: Path) -> None:
    from datasets import Dataset

    whole = tmp_path / "whole.parquet"
    Dataset.from_list(ROWS).to_parquet(str(whole))
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(DataError) as caught:
        load(cut)
    assert "cut.parquet: not a readable Parquet file" in str(caught.value) and "UTF-8" not in str(caught.value)


def test_csv_columns_are_text_even_when_they_hold_numbers(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "sums.csv", ["prompt,completion", 'What is 3 plus 4?,"7"', "What is 1 plus 1?,2"])
    train, _ = load_examples(DataSpec(path=str(path), format="prompt_completion", validation=0, shuffle=False), seed=1)
    assert [row["completion"].strip() for row in train] == ["7", "2"]


def test_library_noise_does_not_come_before_the_clean_error(tmp_path: Path) -> None:
    """In a fresh process, as a user runs it (in-process, an earlier test may have set up the libraries' logging)."""
    import subprocess
    import sys

    path = write_lines(tmp_path / "broken.jsonl", replaced(5, '{"prompt": "q", "completion": oops}'))
    done = subprocess.run(
        [sys.executable, "-m", "llmctl", "data", "show", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "broken.jsonl:6:31" in done.stderr, (
        done.stderr
    )
    assert "Failed to load JSON" not in done.stderr + done.stdout and done.stdout == ""
