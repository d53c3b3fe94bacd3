"""The import graph points one way: the engine (pipeline, cli, launch, worker) uses stages, models, data and
serve, never the reverse, and no import cycle exists. Read with ast, so no module is imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "llmctl"
ENGINE = {"llmctl.pipeline", "llmctl.cli", "llmctl.launch", "llmctl.worker"}
LOWER = ("llmctl.stages", "llmctl.models", "llmctl.data", "llmctl.serve")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path, type_checking: bool) -> set[str]:
    """llmctl modules imported by `path`: those under `if TYPE_CHECKING:` only when `type_checking`."""
    tree = ast.parse(path.read_text())
    skipped = set()
    if not type_checking:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name in MODULES}


def test_lower_layers_never_import_the_engine() -> None:
    arrows_up = [
        f"{name} -> {target}"
        for name, path in MODULES.items()
        if name.startswith(LOWER)
        for target in imports(path, type_checking=True)
        if target in ENGINE or target.startswith("llmctl.cli.")
    ]
    assert arrows_up == []


def test_no_import_cycles() -> None:
    """Imports that run (module level or inside functions). Annotations may name `schema.Recipe` from a module
    that schema depends on (context, tracking): that reference never runs."""
    graph = {name: imports(path, type_checking=False) - {name} for name, path in MODULES.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target] if target in path else [name, target])
            elif target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


CLI_MODULES = [name for name in MODULES if name == "llmctl.cli" or name.startswith("llmctl.cli.")]
# What a command may reach below the API: the run selection it builds from flags, how it prints, and the libraries
# a command's result is (serve hands a folder to a server; chat is the terminal loop around a model).
CLI_MAY_IMPORT = {
    "llmctl.api",
    "llmctl.errors",
    "llmctl.redaction",
    "llmctl.reaper",  # the watcher (cli/supervise.py) ends what a run left running: process plumbing, a leaf
    "llmctl.rundir",
    "llmctl.render",
    "llmctl.pipeline",
    "llmctl.hardware",
    "llmctl.schema",
    "llmctl.builtin",
    "llmctl.chat",
    "llmctl.serve",
    "llmctl.serve.app",
    "llmctl.serve.limits",
    "llmctl.serve.state",
    "llmctl.serve.requests",
    "llmctl.serve.vllm",
}


def test_the_cli_orchestrates_nothing() -> None:
    """The CLI parses, calls llmctl.api, prints and maps errors to exit codes: it runs no pipeline step, reads no
    registry and no dataset itself."""
    assert {
        "llmctl.cli.app",
        "llmctl.cli.pipeline",
        "llmctl.cli.runs",
        "llmctl.cli.models",
        "llmctl.cli.data",
        "llmctl.cli.recipes",
        "llmctl.cli.serve",
    } <= set(CLI_MODULES)
    reached = {t for name in CLI_MODULES for t in imports(MODULES[name], type_checking=False)}
    beyond = sorted(t for t in reached if t not in CLI_MAY_IMPORT and t != "llmctl" and not t.startswith("llmctl.cli"))
    assert beyond == []
