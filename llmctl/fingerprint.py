"""Stage fingerprints: sha256 over the canonical JSON of what determines a stage's output.

Parts (kept separately in the manifest so `plan` can say *why* a stage re-runs):
spec (the stage's validated fields), settings (seed, device/dtype policy), inputs (upstream fingerprints
or external references), data (file sizes/mtimes/content hashes or dataset versions), versions (libraries).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import metadata
from typing import Any

TRACKED_LIBRARIES = (
    "llmctl", "torch", "transformers", "tokenizers", "accelerate", "datasets", "trl", "peft",
    "deeplake", "neural-compressor", "optimum-intel", "openvino", "lm-eval",
)  # fmt: skip
PART_NAMES = ("spec", "settings", "inputs", "data", "versions")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape a stage's output (read from metadata: no imports)."""
    versions = {}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def stage_parts(
    spec: dict[str, Any], settings: dict[str, Any], inputs: dict[str, str], data: dict[str, Any]
) -> dict[str, str]:
    """One hash per part; the stage fingerprint is the hash of these."""
    values = {"spec": spec, "settings": settings, "inputs": inputs, "data": data, "versions": library_versions()}
    return {name: digest(values[name]) for name in PART_NAMES}


def combine(parts: dict[str, str]) -> str:
    return digest(parts)


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two versions of a stage (`train.lr`, `rewards[1].weight`);
    [] when the old one is unknown (recorded by an older llmctl)."""
    if not old:
        return []
    flat_old, flat_new = _flat(old), _flat(new)
    return [k for k in dict.fromkeys([*flat_old, *flat_new]) if flat_old.get(k, _MISSING) != flat_new.get(k, _MISSING)]


_MISSING = object()


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        return {
            k: v
            for key, item in value.items()
            for k, v in _flat(item, f"{prefix}.{key}" if prefix else str(key)).items()
        }
    if isinstance(value, list) and value:
        return {k: v for i, item in enumerate(value) for k, v in _flat(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def changed_parts(old: dict[str, str] | None, new: dict[str, str]) -> list[str]:
    """Which parts differ from the last recorded run (all of them when there is none)."""
    if not old:
        return list(PART_NAMES)
    return [name for name in PART_NAMES if old.get(name) != new[name]]
