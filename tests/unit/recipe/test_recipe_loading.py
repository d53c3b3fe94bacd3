"""Recipe loading: extends, overrides, interpolation, positions."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmctl.errors import RecipeError
from llmctl.recipe import load as recipe
from llmctl.recipe import schema
from tests.conftest import write

BASE = """\
name: base
seed: 1
stages:
  - type: pretrain
    model: {config: {n_layer: 1}}
    data: {path: corpus.jsonl}
    train: {lr: 1.0e-3, batch_size: 4}
"""


def load(path: Path, *overrides: str) -> schema.Recipe:
    return schema.validate(recipe.load(path, list(overrides)))


def test_overrides_address_stages_by_name(tmp_path: Path) -> None:
    parsed = load(write(tmp_path / "r.yaml", BASE), "stages.pretrain.train.lr=2e-4", "seed=7")
    assert parsed.seed == 7
    assert parsed.stages[0].train.lr == pytest.approx(2e-4)
    assert parsed.stages[0].train.batch_size == 4


def test_override_of_unknown_stage_names_the_stages(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as err:
        load(write(tmp_path / "r.yaml", BASE), "stages.sft.train.lr=1")
    assert "override 'stages.sft.train.lr=1'" in str(err.value) and "stages: pretrain" in str(err.value)


def test_bad_override_value_points_at_the_override(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as err:
        load(write(tmp_path / "r.yaml", BASE), "stages.pretrain.train.batch_size=many")
    assert "override 'stages.pretrain.train.batch_size=many': stages[0].train.batch_size" in str(err.value)


def test_extends_merges_stages_by_name_and_keeps_positions(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", BASE)
    child = write(
        tmp_path / "child.yaml",
        """\
        extends: base.yaml
        name: child
        stages:
          - name: pretrain
            train: {lr: 5.0e-4}
          - type: pretrain
            name: more
            model: {init: previous}
            data: {path: other.jsonl}
            train: {max_stepz: 3}
        """,
    )
    loaded = recipe.load(child)
    assert [s["name"] for s in loaded.tree["stages"]] == ["pretrain", "more"]
    assert loaded.tree["stages"][0]["train"] == {"lr": 5e-4, "batch_size": 4}
    assert loaded.tree["seed"] == 1
    with pytest.raises(RecipeError) as err:
        schema.validate(loaded)
    assert f"{child}:10:13: stages[1].train: unknown field 'max_stepz'" in str(err.value)


def test_error_in_base_file_points_into_the_base(tmp_path: Path) -> None:
    base = write(tmp_path / "base.yaml", BASE.replace("batch_size: 4", "batch_size: four"))
    child = write(tmp_path / "child.yaml", "extends: base.yaml\nname: child\n")
    with pytest.raises(RecipeError) as err:
        load(child)
    assert f"{base}:7:" in str(err.value)


def test_missing_base_and_cycles(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "extends: b.yaml\nname: a\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\nname: b\n")
    with pytest.raises(RecipeError, match="circular extends"):
        recipe.load(tmp_path / "a.yaml")
    with pytest.raises(RecipeError, match="base recipe not found"):
        recipe.load(write(tmp_path / "c.yaml", "extends: nope.yaml\nname: c\n"))


def test_interpolation_env_and_stage_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORPUS", "from-env.jsonl")
    body = (
        BASE.replace("corpus.jsonl", "'${oc.env:CORPUS,default.jsonl}'")
        + """\
  - type: pretrain
    name: more
    model: {init: "${stages.pretrain.output}"}
    data: {path: corpus.jsonl}
    seed: ${seed}
"""
    )
    parsed = load(write(tmp_path / "r.yaml", body), "run_dir=" + str(tmp_path / "run"))
    assert parsed.stages[0].data.path == "from-env.jsonl"
    assert parsed.stages[1].model.init == str(tmp_path / "run" / "01-pretrain" / "output")
    assert parsed.stages[1].seed == 1


def test_duplicate_yaml_keys_are_errors(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="duplicate key"):
        recipe.load(write(tmp_path / "r.yaml", BASE + "seed: 2\n"))


def test_ppo_settings_moved_into_train_still_load_with_a_warning(tmp_path) -> None:
    import pytest

    from llmctl.recipe import load as loader
    from llmctl.recipe import schema

    path = tmp_path / "r.yaml"
    path.write_text(
        "name: rl\nstages:\n  - type: ppo\n    model: m\n    reward_model: r\n"
        "    data: {path: p.jsonl, format: prompt}\n    lr: 3.0e-5\n    batch_size: 8\n    train: {logging_steps: 2}\n"
    )
    with pytest.warns(FutureWarning, match="lr, batch_size moved into `train:`"):
        spec = schema.validate(loader.load(path)).stages[0]
    assert (spec.train.lr, spec.train.batch_size, spec.train.logging_steps) == (3.0e-5, 8, 2)
