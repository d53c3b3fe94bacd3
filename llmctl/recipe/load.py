"""Load a recipe: YAML with source positions, `extends:` bases, `key=value` overrides, OmegaConf interpolation.

The result is a plain resolved tree (stages as a list) plus a map from every key path to where the
user wrote it, so that validation errors can name `file:line:col`.

Inside this module stages are a mapping keyed by stage name (so `${stages.sft.output}` and
`stages.sft.train.lr=2e-4` work); they turn back into a list before validation.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from llmctl import redaction
from llmctl.errors import Problem, RecipeError
from llmctl.recipe import yamlcore
from llmctl.spec.base import KeyPath, get_path
from llmctl.store.layout import RunLayout

STAGES = "stages"
_INJECTED_OUTPUT = "output"  # the key: `${stages.NAME.output}` resolves to the stage's output folder
ENV_RESOLVER = "${oc.env:"
ENV_NAME = re.compile(r"\$\{oc\.env:([^,}]+)")
INTERPOLATION = re.compile(r"\$\{[^${}]*\}")  # an innermost `${…}`
NODE_REFERENCE = re.compile(r"\$\{([^${}:]*)\}")  # an innermost `${key.path}` (no resolver)
# Limits that keep a hostile or broken file from taking minutes or all memory before it is rejected.
MAX_RECIPE_BYTES = 1 << 20  # 1 MiB: the largest shipped recipe is ~4 KiB
MAX_VALUES = 100_000  # values after YAML anchors/aliases are expanded (an alias bomb expands exponentially)
MAX_DEPTH = 64  # nesting levels
MAX_REFERENCES = 256  # `${…}` resolutions, references of references counted (shipped recipes use none; ~2 ms each)
MIN_SECRET_CHARS = 6  # shorter values read from the environment (a seed, a device) are not searched for in text


@dataclass
class LoadedRecipe:
    """A resolved recipe tree and where each of its keys came from."""

    path: Path
    tree: dict[str, Any]
    positions: dict[KeyPath, str] = field(default_factory=dict)
    from_env: dict[KeyPath, str] = field(default_factory=dict)
    """Key paths whose value came from the environment (`${oc.env:…}`), directly or through another key,
    with the text the user wrote: written files show that text, never the value (it may be a token)."""

    def where(self, path: KeyPath) -> str:
        """The position of `path`, or of its nearest ancestor that has one."""
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.positions:
                return self.positions[path[:cut]]
        return str(self.path)


def default_run_dir(tree: dict[str, Any]) -> str:
    """Where a recipe's run lives unless `run_dir:` says otherwise."""
    return str(RunLayout.of(str(tree.get("name", "run")), tree.get("run_dir")).run_dir)


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
    raw = OmegaConf.to_container(cfg, resolve=False)
    _check_interpolations(raw, positions, problems)  # type: ignore[arg-type]  # a DictConfig gives a dict
    if problems:
        raise RecipeError(problems, str(path))
    outputs = _inject_outputs(cfg)
    tree = _resolve(cfg, positions, problems, str(path))
    if problems:
        raise RecipeError(problems, str(path))
    from_env = _env_values(raw, tree)
    redaction.hide(env_secrets(raw))
    tree, positions = _stages_to_list(tree, positions, outputs)
    return LoadedRecipe(path, tree, positions, _stage_keys_to_index(from_env, tree))


# ---------------------------------------------------------------- reading YAML with positions


def _read_yaml(path: Path, problems: list[Problem]) -> tuple[Any, dict[KeyPath, str]]:
    """Parse one YAML file into plain data and a position for every key path (stages still a list)."""
    text = _read_text(path, problems)
    if text is None:
        return None, {}
    loader = None
    try:
        loader = yamlcore.CoreLoader(text)
        node = loader.get_single_node()
        if node is not None:
            _check_size(node, path)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problems.append(Problem(where, "", f"YAML syntax error: {err.problem}"))
        return None, {}
    except yaml.YAMLError as err:  # e.g. a control character the YAML reader refuses
        problems.append(Problem(str(path), "", f"YAML error: {str(err).splitlines()[0]}"))
        return None, {}
    except (_TooLarge, RecursionError) as err:
        why = str(err) if isinstance(err, _TooLarge) else f"nested deeper than {MAX_DEPTH} levels"
        problems.append(Problem(str(path), "", f"recipe rejected: {why}"))
        return None, {}
    finally:
        if loader is not None:
            loader.dispose()
    positions: dict[KeyPath, str] = {}
    if node is not None:
        _walk_positions(node, (), path, positions, problems)
    return data, positions


def _read_text(path: Path, problems: list[Problem]) -> str | None:
    """The file as UTF-8 text, or None with a problem naming the size limit or the first bad byte."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # /dev/zero reads forever, a FIFO blocks until written
            problems.append(
                Problem(str(path), "", "not a regular file (a device, FIFO or socket); a recipe is a YAML file")
            )
            return None
        with open(path, "rb") as handle:
            raw = handle.read(MAX_RECIPE_BYTES + 1)  # bounded whatever stat said (a file that grows, /proc)
        if (size := max(info.st_size, len(raw))) > MAX_RECIPE_BYTES:
            problems.append(
                Problem(
                    str(path),
                    "",
                    f"recipe is {size / 2**20:.1f} MiB; recipes are at most "
                    f"{MAX_RECIPE_BYTES // 2**20} MiB (put data in data files, not in the recipe)",
                )
            )
            return None
    except OSError as err:
        problems.append(Problem(str(path), "", f"cannot read recipe: {err.strerror or err}"))
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        problems.append(
            Problem(
                f"{path}:{line}:{column}",
                "",
                f"not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start}; save the recipe as UTF-8",
            )
        )
        return None


class _TooLarge(Exception):
    """A YAML document that expands beyond MAX_VALUES values or MAX_DEPTH levels."""


def _check_size(root: yaml.Node, path: Path) -> None:
    """Count values with aliases expanded (memoized per node, so an alias bomb is measured, not expanded)
    and nesting depth, before anything builds the expanded tree."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise _TooLarge(f"nested deeper than {MAX_DEPTH} levels")
        if id(node) in sizes:
            return sizes[id(node)]
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        total = 1 + sum(size(child, depth + 1) for child in children)
        if total > MAX_VALUES:
            raise _TooLarge(f"expands to more than {MAX_VALUES:,} values (YAML anchors and aliases * are expanded)")
        sizes[id(node)] = total
        return total

    size(root, 0)


def _walk_positions(node: yaml.Node, at: KeyPath, path: Path, out: dict[KeyPath, str], problems: list[Problem]) -> None:
    """Record `file:line:col` for every mapping key and list item below `node`; flag duplicate keys and tags
    beyond YAML's core schema (`!!set`, `!!binary`, …)."""
    if (tag := yamlcore.unsupported_tag(node)) is not None:
        where = f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"
        problems.append(
            Problem(where, dotted(at), f"YAML tag {tag} is not supported; write a plain mapping, list or value")
        )
        return
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
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(base, str) for base in bases):
        problems.append(
            Problem(
                own_positions.get(("extends",), str(path)),
                "extends",
                "must be a recipe file name or a list of them (relative to this recipe)",
            )
        )
        bases = []
    for base in bases:
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
            cfg.merge_with(_nested(parts, yamlcore.load(item.split("=", 1)[1])))
        except (OmegaConfBaseException, yaml.YAMLError, ValueError) as err:  # the value is parsed as YAML (1.2)
            problems.append(Problem(where, key, _omegaconf_message(err)))
            continue
        for sub in [k for k in positions if k[: len(parts)] == parts]:
            positions.pop(sub)
        positions[parts] = where


def _check_interpolations(tree: dict[str, Any], positions: dict[KeyPath, str], problems: list[Problem]) -> None:
    """Refuse a recipe whose `${…}` references would take more than MAX_REFERENCES resolutions or build a value
    over MAX_RECIPE_BYTES, before OmegaConf resolves anything: it resolves each reference anew (milliseconds
    each), so `a1: ${a0}${a0}` … `a40: ${a39}${a39}` would run for days. References are counted with their own
    references expanded, memoized per key, so a bomb is measured, not expanded."""
    measured: dict[KeyPath, tuple[int, int]] = {}

    def measure(key_path: KeyPath, visiting: frozenset[KeyPath]) -> tuple[int, int]:
        """(resolutions, length) of the value at `key_path` once resolved."""
        if key_path in measured:
            return measured[key_path]
        if key_path in visiting:  # a cycle: OmegaConf reports it
            return 1, 0
        value, visiting = get_path(tree, key_path), visiting | {key_path}
        if isinstance(value, dict | list):
            keys = value.keys() if isinstance(value, dict) else range(len(value))
            parts = [measure(key_path + (key,), visiting) for key in keys]
            result = 1 + sum(p[0] for p in parts), sum(p[1] for p in parts)
        elif isinstance(value, str):
            resolutions, length = 1, len(INTERPOLATION.sub("", value))
            for reference in NODE_REFERENCE.findall(value):
                target = _reference_target(tree, key_path, reference)
                if target is not None:
                    more, longer = measure(target, visiting)
                    resolutions, length = resolutions + more, length + longer
            result = resolutions, length
        else:
            result = 1, len(str(value))
        measured[key_path] = result
        return result

    for key_path, text in _strings(tree, ()):
        if "${" not in text:
            continue
        found = measure(key_path, frozenset())
        if found[0] > MAX_REFERENCES or found[1] > MAX_RECIPE_BYTES:
            why = (
                f"its ${{…}} references expand to {found[0]:,} resolutions (at most {MAX_REFERENCES:,})"
                if found[0] > MAX_REFERENCES
                else f"it resolves to {found[1]:,} characters (at most {MAX_RECIPE_BYTES:,})"
            )
            problems.append(
                Problem(
                    positions.get(key_path, ""),
                    dotted(key_path),
                    f"recipe rejected: {why}; a value "
                    "that references another several times, level after level, doubles at each level",
                )
            )
            return


def _reference_target(tree: dict[str, Any], holder: KeyPath, reference: str) -> KeyPath | None:
    """The key path a node interpolation names (`a.b`, `a[0].b`, relative `.sibling`, `..uncle`), or None."""
    reference = reference.strip()
    dots = len(reference) - len(reference.lstrip("."))
    at: KeyPath = holder[:-dots] if dots else ()
    for part in re.findall(r"[^.\[\]]+", reference[dots:]):
        node = get_path(tree, at)
        key: str | int = int(part) if isinstance(node, list) and part.isdigit() else part
        if not isinstance(node, dict | list) or get_path(tree, at + (key,)) is None:
            return None
        at = at + (key,)
    return at if at != holder else None


def _nested(parts: KeyPath, value: Any) -> dict[str, Any]:
    """`{"a": {"b": value}}` for parts ("a", "b")."""
    for part in reversed(parts):
        value = {part: value}
    return value


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
            stage[_INJECTED_OUTPUT] = str(RunLayout(run_dir.absolute()).output_of(index, str(name)))
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
        where = next(
            (positions[key_path[:n]] for n in range(len(key_path), -1, -1) if key_path[:n] in positions), source
        )
        shown = (
            (STAGES, names.index(key_path[1])) + key_path[2:]
            if key_path[:1] == (STAGES,) and len(key_path) > 1
            else key_path
        )
        problems.append(Problem(where, dotted(shown), f"cannot resolve interpolation: {_omegaconf_message(err)}"))
    return {}


def _interpolation_errors(node: DictConfig | ListConfig, at: KeyPath) -> list[tuple[KeyPath, Exception]]:
    found: list[tuple[KeyPath, Exception]] = []
    keys: list[Any] = list(node.keys()) if isinstance(node, DictConfig) else list(range(len(node)))
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


def env_secrets(raw: Any) -> list[str]:
    """The values of the environment variables the recipe reads (`${oc.env:NAME}` or `${oc.env:NAME,default}`),
    long enough to be worth hiding: the variable's value itself, so that a path or id around it stays readable."""
    names = {match for _, text in _strings(raw, ()) for match in ENV_NAME.findall(text)}
    return [value for name in names if len(value := os.environ.get(name.strip(), "")) >= MIN_SECRET_CHARS]


def _env_values(raw: Any, resolved: Any, at: KeyPath = ()) -> dict[KeyPath, str]:
    """Key paths whose value comes from `${oc.env:…}`, with the unresolved text; then every other string
    that contains one of those values (it was reached through another key, e.g. `${token}`)."""
    direct: dict[KeyPath, str] = {}
    for key_path, text in _strings(raw, at):
        if ENV_RESOLVER in text:
            direct[key_path] = text
    secrets = {str(value) for key_path in direct if len(str(value := get_path(resolved, key_path))) >= MIN_SECRET_CHARS}
    found = dict(direct)
    for key_path, value in _strings(resolved, at):
        if key_path not in found and any(secret in value for secret in secrets):
            found[key_path] = str(get_path(raw, key_path))
    return found


def _strings(tree: Any, at: KeyPath) -> list[tuple[KeyPath, str]]:
    if isinstance(tree, dict):
        return [item for key, value in tree.items() for item in _strings(value, at + (key,))]
    if isinstance(tree, list):
        return [item for index, value in enumerate(tree) for item in _strings(value, at + (index,))]
    return [(at, tree)] if isinstance(tree, str) else []


def _stage_keys_to_index(paths: dict[KeyPath, str], tree: dict[str, Any]) -> dict[KeyPath, str]:
    """`("stages", "sft", …)` → `("stages", 1, …)`, as in the validated recipe."""
    names = [s.get("name") if isinstance(s, dict) else None for s in tree.get(STAGES) or []]
    out = {}
    for key_path, text in paths.items():
        if key_path[:1] == (STAGES,) and len(key_path) > 1 and key_path[1] in names:
            key_path = (STAGES, names.index(key_path[1])) + key_path[2:]
        out[key_path] = text
    return out


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
