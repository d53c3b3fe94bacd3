"""No import cycle among llmctl's modules, counting module-level, function-local and TYPE_CHECKING imports (read
by grimp, the graph import-linter builds; nothing is imported). The layers between packages are import-linter
contracts in pyproject.toml, checked by `make lint`."""

from __future__ import annotations

import grimp


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("llmctl", exclude_type_checking_imports=False)
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph.find_modules_directly_imported_by(name)):
            if state.get(target) == "open":
                cycles.append(path[path.index(target) :] + [target] if target in path else [name, target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(graph.modules):
        if name not in state:
            visit(name, [name])
    assert cycles == []
