"""Data layer: every source type round-trips, TQL filters, splits, templates, checks, fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app
from llmctl.data import lake
from llmctl.data.fingerprint import content_key, fingerprint_data
from llmctl.data.sources import load_examples, read_rows, source_kind
from llmctl.errors import DataError
from llmctl.spec import formats
from llmctl.spec.data import DataSpec

runner = CliRunner()
ROWS = [{"question": f"What is {i} plus 1?", "answer": str(i + 1), "n": i} for i in range(40)]


def write_rows(folder: Path, kind: str) -> str:
    """The same rows as a source of `kind`; returns its path."""
    from datasets import Dataset

    table = Dataset.from_list(ROWS)
    path = folder / f"rows.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif kind == "json":
        path.write_text(json.dumps(ROWS))
    elif kind == "csv":
        table.to_csv(str(path))
    elif kind == "parquet":
        table.to_parquet(str(path))
    elif kind == "hf":
        table.save_to_disk(str(path))
    elif kind == "lake":
        lake.write(str(path), table, "rows")
    return str(path)


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet", "hf", "lake"])
def test_every_source_round_trips(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lake, "BATCH", 7)  # several batches, a short last one
    path = write_rows(tmp_path, kind)
    rows = read_rows(path)
    assert len(rows) == 40
    assert [r["question"] for r in rows] == [r["question"] for r in ROWS]
    assert [int(r["answer"]) for r in rows] == [r["n"] + 1 for r in ROWS]  # csv reads answer back as int
    assert source_kind(path) == {"hf": "hf_disk", "lake": "deeplake"}.get(kind, "files")


def test_plain_text_and_globs(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    (tmp_path / "b.txt").write_text("three\n")
    assert read_rows(str(tmp_path / "*.txt"))["text"] == ["one", "two", "three"]


def test_lake_lists_survive_as_json(tmp_path: Path) -> None:
    from datasets import Dataset

    chats = [
        {"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}]}
        for i in range(3)
    ]
    lake.write(str(tmp_path / "chat"), Dataset.from_list(chats), "chats")
    assert read_rows(str(tmp_path / "chat"))["messages"] == [c["messages"] for c in chats]


def test_tql_query_filters(tmp_path: Path) -> None:
    path = write_rows(tmp_path, "lake")
    rows = read_rows(path, query="SELECT * WHERE n >= 30")
    assert sorted(rows["n"]) == list(range(30, 40))
    rows = read_rows(path, query="SELECT * WHERE contains(question, '7 plus')")
    assert sorted(rows["n"]) == [7, 17, 27, 37]
    with pytest.raises(DataError, match="columns: question, answer, n"):
        read_rows(path, query="SELECT * WHERE nope > 1")
    with pytest.raises(DataError, match="data.query needs a Deep Lake source"):
        read_rows(write_rows(tmp_path, "jsonl"), query="SELECT *")


def spec(path: str, **fields: object) -> DataSpec:
    base = {
        "path": path,
        "format": "prompt_completion",
        "columns": {"prompt": "question", "completion": "answer"},
        "template": "Question: {prompt}\n\nAnswer: {completion}",
    }
    return DataSpec(**(base | fields))


def test_template_renders_exactly_and_splits_prompt_from_completion(tmp_path: Path) -> None:
    train, _ = load_examples(spec(write_rows(tmp_path, "jsonl"), shuffle=False, validation=0), seed=0)
    # the space before the answer moves into the completion, so the prompt's tokens prefix the full text's
    assert train[3] == {"prompt": "Question: What is 3 plus 1?\n\nAnswer:", "completion": " 4"}


def test_instruction_format_default_template() -> None:
    row = {"instruction": "Classify the sentiment.", "input": "Shares soared.", "output": "positive"}
    rendered = formats.render(row, "instruction", None)
    assert (
        rendered["prompt"]
        == "### Instruction:\nClassify the sentiment.\n\n### Input:\nShares soared.\n\n### Response:\n"
    )
    assert rendered["completion"] == "positive"
    assert formats.render(row | {"input": ""}, "instruction", None)["prompt"].count("###") == 2


def test_splits_are_disjoint_and_reproducible(tmp_path: Path) -> None:
    data = spec(write_rows(tmp_path, "lake"), validation=0.25)
    train, held = load_examples(data, seed=3)
    again_train, again_held = load_examples(data, seed=3)
    assert len(train) == 30 and len(held) == 10
    assert set(train["prompt"]).isdisjoint(held["prompt"])
    assert train["prompt"] == again_train["prompt"] and held["prompt"] == again_held["prompt"]
    other, _ = load_examples(data, seed=4)
    assert other["prompt"] != train["prompt"]
    counted, held5 = load_examples(spec(data.path, validation=5, limit=20), seed=3)
    assert (len(counted), len(held5)) == (15, 5)


def test_second_source_as_validation(tmp_path: Path) -> None:
    first = write_rows(tmp_path, "jsonl")
    (tmp_path / "val").mkdir()
    second = write_rows(tmp_path / "val", "parquet")
    train, held = load_examples(spec(first, validation=second), seed=0)
    assert len(train) == 40 and len(held) == 40


@pytest.mark.parametrize(
    ("rows", "fields", "message"),
    [
        (
            [{"q": "x", "a": "y"}],
            {"columns": {}},
            "format 'prompt_completion' needs columns prompt, completion; available: q, a",
        ),
        ([{"question": "x", "answer": None}], {}, "row 0: column 'completion' is null, expected a string"),
        ([{"question": "x", "answer": "1"}, {"question": 5, "answer": "2"}], {}, "row 1: column 'prompt' is int"),
        (
            [{"question": "x", "answer": "y"}],
            {"columns": {"prompt": "quest", "completion": "answer"}},
            "has no column quest; available: question, answer",
        ),
        ([{"question": "x", "answer": "y"}], {"template": "Q: {prompt} {extra} A: {completion}"}, "needs column extra"),
    ],
    ids=["missing-columns", "null", "non-string", "bad-rename", "template-column"],
)
def test_bad_data_is_reported_with_source_and_row(tmp_path: Path, rows: list, fields: dict, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        load_examples(spec(str(path), validation=0, **fields), seed=0)
    assert message in str(err.value)


def test_template_without_completion_is_a_recipe_error() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="template must contain {completion}"):
        spec("x.jsonl", template="Q: {prompt}")
    with pytest.raises(ValidationError, match="completion_only needs a prompt and a completion"):
        DataSpec(path="x", format="text", completion_only=True)


def test_empty_after_query(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no rows after the query"):
        load_examples(spec(write_rows(tmp_path, "lake"), query="SELECT * WHERE n > 100"), seed=0)


def test_fingerprint_follows_lake_versions_and_file_content(tmp_path: Path) -> None:
    from datasets import Dataset

    path = write_rows(tmp_path, "lake")
    before = content_key(fingerprint_data(DataSpec(path=path)))
    assert before == content_key(fingerprint_data(DataSpec(path=path)))
    assert content_key(fingerprint_data(DataSpec(path=path, query="SELECT * WHERE n > 3"))) != before
    lake.write(path, Dataset.from_list(ROWS[:2]), "two more rows")
    after = content_key(fingerprint_data(DataSpec(path=path)))["version"]
    assert after != before["version"] and after.endswith("/42")
    assert len(read_rows(path)) == 42  # the new version is read, not a stale cache


def test_data_cli_import_show_demo_preview(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    src = write_rows(tmp_path, "jsonl")
    first = runner.invoke(app, ["--json", "data", "import", src, "lake1", "-m", "first"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["--json", "data", "import", src, "lake1", "-m", "again"])
    v1, v2 = json.loads(first.stdout)["version"], json.loads(second.stdout)["version"]
    assert v1 != v2
    shown = runner.invoke(app, ["--json", "data", "show", "lake1", "--query", "SELECT * WHERE n < 2", "--limit", "1"])
    info = json.loads(shown.stdout)
    assert info["rows"] == 4 and info["total_rows"] == 80 and info["version"] == v2 and len(info["sample"]) == 1

    demo = runner.invoke(app, ["--json", "data", "demo", "demo"])
    assert demo.exit_code == 0 and set(json.loads(demo.stdout)["datasets"]) == {
        "corpus",
        "instructions",
        "preferences",
        "prompts",
        "eval",
    }
    prefs = read_rows("demo/preferences")
    assert all(
        int(r["chosen"]) + 0
        == int(r["prompt"].split("is ")[1].split(" plus")[0]) + int(r["prompt"].split("plus ")[1].split("?")[0])
        for r in prefs
    )
    assert all(r["chosen"] != r["rejected"] for r in prefs)

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: p\nstages:\n  - type: pretrain\n    model: {config: {n_layer: 1}}\n"
        "    data: {path: demo/instructions, format: text, template: 'Q: {question} A: {answer}'}\n"
    )
    preview = runner.invoke(app, ["--json", "data", "preview", str(recipe), "-n", "2"])
    assert preview.exit_code == 0, preview.output
    examples = json.loads(preview.stdout)
    assert len(examples) == 2 and examples[0]["parts"][0]["text"].startswith("Q: What is ")
    missing = runner.invoke(app, ["data", "show", "nowhere/*.jsonl"])
    assert missing.exit_code == 2 and "no file or dataset found" in missing.output


def test_nested_columns_pick_values_and_name_the_row_without_one(tmp_path: Path) -> None:
    """SQuAD's answers.text[0] as the completion, the context and question rendered by the template."""
    rows = [
        {
            "context": "Paris is in France.",
            "question": "Where is Paris?",
            "answers": {"text": ["France"], "answer_start": [12]},
        },
        {
            "context": "Rome is in Italy.",
            "question": "Where is Rome?",
            "answers": {"text": ["Italy"], "answer_start": [11]},
        },
    ]
    path = tmp_path / "squad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = DataSpec(
        path=str(path),
        format="prompt_completion",
        columns={"completion": "answers.text[0]"},
        validation=0,
        shuffle=False,
        template="Context: {context}\n\nQuestion: {question}\n\nAnswer: {completion}",
    )
    train, _ = load_examples(spec, seed=0)
    assert train[0]["prompt"] == "Context: Paris is in France.\n\nQuestion: Where is Paris?\n\nAnswer:"
    assert train[0]["completion"].strip() == "France"
    rows[1]["answers"] = {"text": [], "answer_start": []}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"row 2: no value at answers\.text\[0\]"):
        load_examples(spec, seed=0)


def _mix_files(folder: Path) -> tuple[Path, Path]:
    a, b = folder / "a.jsonl", folder / "b.jsonl"
    a.write_text("".join(json.dumps({"q": f"a{i}", "ans": f"A{i}"}) + "\n" for i in range(30)))
    b.write_text("".join(json.dumps({"question": f"b{i}", "answer": f"B{i}"}) + "\n" for i in range(10)))
    return a, b


def test_a_mixture_renders_each_source_with_its_own_columns_and_limit(tmp_path: Path) -> None:
    a, b = _mix_files(tmp_path)
    spec = DataSpec(
        format="prompt_completion",
        validation=4,
        mix=[
            DataSpec(path=str(a), columns={"prompt": "q", "completion": "ans"}, limit=12),
            DataSpec(
                path=str(b),
                columns={"prompt": "question", "completion": "answer"},
                template="Q: {prompt} A: {completion}",
            ),
        ],
    )
    train, held = load_examples(spec, seed=0)
    prompts = list(train["prompt"]) + list(held["prompt"])
    assert (
        len(prompts) == 22
        and sum(p.startswith("a") for p in prompts) == 12
        and sum(p.startswith("Q: b") for p in prompts) == 10
    )


def test_interleaving_follows_the_weights_and_fingerprints_each_source(tmp_path: Path) -> None:
    a, b = _mix_files(tmp_path)
    spec = DataSpec(
        format="prompt_completion",
        validation=0,
        strategy="interleave",
        limit=20,
        mix=[
            DataSpec(path=str(a), columns={"prompt": "q", "completion": "ans"}, weight=3),
            DataSpec(path=str(b), columns={"prompt": "question", "completion": "answer"}, weight=1),
        ],
    )
    rows, _ = load_examples(spec, seed=0)
    share_a = sum(p.startswith("a") for p in rows["prompt"]) / len(rows)
    assert len(rows) == 20 and 0.55 <= share_a <= 0.95
    before = content_key(fingerprint_data(spec))
    b.write_text(b.read_text() + json.dumps({"question": "new", "answer": "N"}) + "\n")
    after = content_key(fingerprint_data(spec))
    assert before["mix"][0] == after["mix"][0] and before["mix"][1] != after["mix"][1]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"path": "x.jsonl", "mix": [{"path": "y.jsonl"}]}, "give either path or mix"),
        ({"mix": [{"path": "y.jsonl", "weight": 2}]}, "weight needs strategy: interleave"),
        ({"mix": [{"path": "y.jsonl", "validation": 0.2}]}, "validation belongs to the mixture"),
        ({"mix": [{"path": "y.jsonl"}], "validation": "z.jsonl"}, "not a second source"),
        ({}, "path is required"),
    ],
)
def test_mixture_settings_are_checked(fields: dict, message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        DataSpec(**fields)


def test_plan_shows_the_rows_each_mixed_source_gives_and_a_block_seed_reshuffles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = _mix_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(f"""name: mix
stages:
  - type: sft
    model: gpt2
    data:
      format: prompt_completion
      mix:
        - {{path: {a}, columns: {{prompt: q, completion: ans}}, limit: 7}}
        - {{path: {b}, columns: {{prompt: question, completion: answer}}}}
""")
    result = CliRunner().invoke(app, ["--json", "plan", str(recipe)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["steps"][0]["mixture"] == {str(a): 7, str(b): 10}
    spec = DataSpec(
        path=str(b), format="prompt_completion", columns={"prompt": "question", "completion": "answer"}, validation=0
    )
    order = lambda **fields: list(load_examples(spec.model_copy(update=fields), seed=0)[0]["prompt"])  # noqa: E731
    assert order() == order(seed=0) and order() != order(seed=1)
