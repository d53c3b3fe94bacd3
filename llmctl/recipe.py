"""Load a recipe: YAML with source positions, `extends:` bases, `key=value` overrides, OmegaConf interpolation.

The result is a plain resolved tree (stages as a list) plus a map from every key path to where the
user wrote it, so that validation errors can name `file:line:col`.

Inside this module stages are a mapping keyed by stage name (so `${stages.sft.output}` and
`stages.sft.train.lr=2e-4` work); they turn back into a list before validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from llmctl.errors import Problem, RecipeError

KeyPath = tuple[str | int, ...]
STAGES = "stages"
_INJECTED_OUTPUT = "output"  # `${stages.NAME.output}` resolves to the stage's output folder


@dataclass
class LoadedRecipe:
    """A resolved recipe tree and where each of its keys came from."""

    path: Path
    tree: dict[str, Any]
    positions: dict[KeyPath, str] = field(default_factory=dict)

    def where(self, path: KeyPath) -> str:
        """The position of `path`, or of its nearest ancestor that has one."""
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.positions:
                return self.positions[path[:cut]]
        return str(self.path)


def stage_dir_name(index: int, name: str) -> str:
    """`01-pretrain`: the folder of the stage at list position `index` (0-based)."""
    return f"{index + 1:02d}-{name}"


def default_run_dir(tree: dict[str, Any]) -> str:
    """Where a recipe's run lives unless `run_dir:` says otherwise."""
    return str(tree.get("run_dir") or Path("runs") / str(tree.get("name", "run")))


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedRecipe:
    """Read, merge, override and resolve a recipe. Raises RecipeError with every problem found."""
    path = Path(path)
    problems: list[Problem] = []
    positions: dict[KeyPath, str] = {}
    merged = _load_with_bases(path, problems, positions, chain=())
    if problems:
        raise RecipeError(problems, str(path))
    cfg = OmegaConf.create(merged)
    _apply_overrides(cfg, overrides, positions, problems)
    if problems:
        raise RecipeError(problems, str(path))
    outputs = _inject_outputs(cfg)
    tree = _resolve(cfg, positions, problems, str(path))
    if problems:
        raise RecipeError(problems, str(path))
    return LoadedRecipe(path, *_stages_to_list(tree, positions, outputs))


# ---------------------------------------------------------------- reading YAML with positions


def _read_yaml(path: Path, problems: list[Problem]) -> tuple[Any, dict[KeyPath, str]]:
    """Parse one YAML file into plain data and a position for every key path (stages still a list)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        problems.append(Problem(str(path), "", f"cannot read recipe: {err.strerror or err}"))
        return None, {}
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problems.append(Problem(where, "", f"YAML syntax error: {err.problem}"))
        return None, {}
    positions: dict[KeyPath, str] = {}
    if node is not None:
        _walk_positions(node, (), path, positions, problems)
    return data, positions


def _walk_positions(node: yaml.Node, at: KeyPath, path: Path, out: dict[KeyPath, str], problems: list[Problem]) -> None:
    """Record `file:line:col` for every mapping key and list item below `node`; flag duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = at + (key_node.value,)
            where = f"{path}:{key_node.start_mark.line + 1}:{key_node.start_mark.column + 1}"
            if key_path in out:
                problems.append(Problem(where, dotted(key_path), f"duplicate key (first at {out[key_path]})"))
            out[key_path] = where
            _walk_positions(value_node, key_path, path, out, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out[at + (index,)] = f"{path}:{item.start_mark.line + 1}:{item.start_mark.column + 1}"
            _walk_positions(item, at + (index,), path, out, problems)


def _load_with_bases(
    path: Path, problems: list[Problem], positions: dict[KeyPath, str], chain: tuple[Path, ...]
) -> dict[str, Any]:
    """Load `path` on top of the files it `extends:` (paths relative to it), stages keyed by name."""
    resolved = path.resolve()
    if resolved in chain:
        problems.append(Problem(str(path), "extends", "circular extends: " + " -> ".join(map(str, chain + (path,)))))
        return {}
    data, own_positions = _read_yaml(path, problems)
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(Problem(f"{path}:1:1", "", "a recipe must be a mapping (name:, stages:, …)"))
        return {}
    merged: dict[str, Any] = {}
    bases = data.pop("extends", None) or []
    for base in [bases] if isinstance(bases, str) else bases:
        base_path = path.parent / str(base)
        if not base_path.exists():
            where = own_positions.get(("extends",), str(path))
            problems.append(Problem(where, "extends", f"base recipe not found: {base_path}"))
            continue
        merged = _merge(merged, _load_with_bases(base_path, problems, positions, chain + (resolved,)))
    own = _stages_to_mapping(data, own_positions, problems, path)
    positions.update(own_positions)
    return _merge(merged, own)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Deep merge (top wins); stages merge by name, new stages append."""
    return OmegaConf.to_container(OmegaConf.merge(base, top), resolve=False) if base else top  # type: ignore[return-value]


def _stages_to_mapping(
    data: dict[str, Any], positions: dict[KeyPath, str], problems: list[Problem], path: Path
) -> dict[str, Any]:
    """Turn `stages: [..]` into `{name: {...}}` and re-key positions from index to name."""
    stages = data.get(STAGES)
    if stages is None:
        return data
    if not isinstance(stages, list):
        problems.append(Problem(positions.get((STAGES,), str(path)), STAGES, "must be a list of stages (`- type: …`)"))
        return data
    keyed: dict[str, Any] = {}
    for index, stage in enumerate(stages):
        where = positions.get((STAGES, index), str(path))
        if not isinstance(stage, dict):
            problems.append(Problem(where, f"stages[{index}]", "a stage must be a mapping with `type:`"))
            continue
        name = str(stage.get("name") or stage.get("type") or f"stage{index + 1}")
        if name in keyed:
            problems.append(
                Problem(where, f"stages[{index}]", f"duplicate stage name '{name}'; give each stage a unique `name:`")
            )
            continue
        keyed[name] = {"name": name, **stage}
        for key in [k for k in positions if k[:2] == (STAGES, index)]:
            positions[(STAGES, name) + key[2:]] = positions.pop(key)
    return {**data, STAGES: keyed}


# ---------------------------------------------------------------- overrides and interpolation


def _apply_overrides(
    cfg: DictConfig, overrides: list[str] | tuple[str, ...], positions: dict[KeyPath, str], problems: list[Problem]
) -> None:
    """Apply `key=value` overrides (OmegaConf dotlist); each key's position becomes the override itself."""
    stage_names = list(cfg.get(STAGES) or {})
    for item in overrides:
        where = f"override '{item}'"
        if "=" not in item:
            problems.append(Problem(where, "", "an override is key=value, e.g. stages.sft.train.lr=2e-4"))
            continue
        key = item.split("=", 1)[0].strip()
        parts = tuple(key.split("."))
        if parts[0] == STAGES and len(parts) > 1 and parts[1] not in stage_names:
            problems.append(Problem(where, key, f"no stage named '{parts[1]}' (stages: {', '.join(stage_names)})"))
            continue
        try:
            cfg.merge_with(OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as err:
            problems.append(Problem(where, key, _omegaconf_message(err)))
            continue
        for sub in [k for k in positions if k[: len(parts)] == parts]:
            positions.pop(sub)
        positions[parts] = where


def _inject_outputs(cfg: DictConfig) -> set[str]:
    """Give each stage an `output` key (its output folder) for `${stages.NAME.output}`; return which got one."""
    stages = cfg.get(STAGES)
    if not isinstance(stages, DictConfig):
        return set()
    try:
        run_dir = Path(default_run_dir({"name": cfg.get("name"), "run_dir": cfg.get("run_dir")}))
    except OmegaConfBaseException:
        return set()  # the bad interpolation is reported by _resolve
    injected = set()
    for index, name in enumerate(stages):
        stage = stages[name]
        if isinstance(stage, DictConfig) and _INJECTED_OUTPUT not in stage:
            stage[_INJECTED_OUTPUT] = str(run_dir.absolute() / stage_dir_name(index, str(name)) / "output")
            injected.add(str(name))
    return injected


def _resolve(cfg: DictConfig, positions: dict[KeyPath, str], problems: list[Problem], source: str) -> dict[str, Any]:
    """Resolve every `${…}`; a failure is reported at the key that holds the bad interpolation."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException:
        pass
    names = list(cfg.get(STAGES) or {}) if isinstance(cfg.get(STAGES), DictConfig) else []
    for key_path, err in _interpolation_errors(cfg, ()):
        where = next((positions[key_path[:n]] for n in range(len(key_path), -1, -1) if key_path[:n] in positions), source)
        shown = (STAGES, names.index(key_path[1])) + key_path[2:] if key_path[:1] == (STAGES,) and len(key_path) > 1 else key_path
        problems.append(Problem(where, dotted(shown), f"cannot resolve interpolation: {_omegaconf_message(err)}"))
    return {}


def _interpolation_errors(node: DictConfig | ListConfig, at: KeyPath) -> list[tuple[KeyPath, Exception]]:
    found: list[tuple[KeyPath, Exception]] = []
    keys = list(node.keys()) if isinstance(node, DictConfig) else list(range(len(node)))
    for key in keys:
        try:
            child = node[key]
        except OmegaConfBaseException as err:
            found.append((at + (key,), err))
            continue
        if isinstance(child, (DictConfig, ListConfig)):
            found.extend(_interpolation_errors(child, at + (key,)))
    return found


def _omegaconf_message(err: Exception) -> str:
    """OmegaConf messages carry a multi-line context block; keep the first line."""
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _stages_to_list(
    tree: dict[str, Any], positions: dict[KeyPath, str], injected: set[str]
) -> tuple[dict[str, Any], dict[KeyPath, str]]:
    """Back from `{name: stage}` to a list; positions keyed by list index, as validation reports them."""
    stages = tree.get(STAGES)
    if not isinstance(stages, dict):
        return tree, positions
    as_list = []
    for index, (name, stage) in enumerate(stages.items()):
        if isinstance(stage, dict) and name in injected:
            stage.pop(_INJECTED_OUTPUT, None)
        as_list.append(stage)
        for key in [k for k in positions if k[:2] == (STAGES, name)]:
            positions[(STAGES, index) + key[2:]] = positions.pop(key)
    return {**tree, STAGES: as_list}, positions


def dotted(path: KeyPath) -> str:
    """`("stages", 1, "train", "lr")` → `stages[1].train.lr`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


