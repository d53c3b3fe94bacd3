"""YAML 1.2's core schema for PyYAML, which implements YAML 1.1: there `seed: yes` is 1 (a boolean), `no` is
false, `max_steps: 1:30` is 90 (base 60), `017` is 15 (octal) and `2024-01-01` is a date. Under the core schema
they are the strings and numbers they look like, and only true/false are booleans (ruamel.yaml would do this
too, but it is one more dependency for four regular expressions). Explicit tags beyond the core types
(`!!set`, `!!binary`, `!!timestamp`, `!!omap`, …) are reported by `unsupported_tag`."""

from __future__ import annotations

import re
from typing import Any

import yaml

CORE_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq", "merge")}
_RESOLVERS = [
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+.0123456789",
    ),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("merge", r"^(?:<<)$", "<"),
]


class CoreLoader(yaml.SafeLoader):
    """A SafeLoader that resolves plain scalars by YAML 1.2's core schema."""

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        value = str(self.construct_scalar(node))
        sign, digits = (-1, value[1:]) if value.startswith("-") else (1, value.lstrip("+"))
        base = {"0o": 8, "0x": 16}.get(digits[:2], 10)
        return sign * int(digits[2:] if base != 10 else digits, base)


for _name, _pattern, _first in _RESOLVERS:
    CoreLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_name}", re.compile(_pattern), list(_first))
CoreLoader.add_constructor("tag:yaml.org,2002:int", CoreLoader.construct_yaml_int)


def load(text: str) -> Any:
    """One YAML document under the core schema (unsupported tags are still constructed: check the nodes)."""
    return yaml.load(text, Loader=CoreLoader)


def unsupported_tag(node: yaml.Node) -> str | None:
    """The node's tag in `!!name` form when it is not one of the core schema's, else None."""
    if node.tag in CORE_TAGS:
        return None
    return node.tag.replace("tag:yaml.org,2002:", "!!")
