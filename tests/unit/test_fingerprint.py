"""Stage fingerprints: canonical (key order never matters), one hash per part, and the changed parts named."""

from __future__ import annotations

from llmctl import fingerprint as fp


def test_canonical_json_ignores_key_order_and_spacing() -> None:
    assert fp.canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == '{"a":[1,{"c":3,"d":2}],"b":1}'
    assert fp.digest({"a": 1, "b": 2}) == fp.digest({"b": 2, "a": 1}) != fp.digest({"a": 1, "b": 3})


def test_each_part_has_its_own_hash_and_a_change_names_its_part() -> None:
    before = fp.stage_parts({"lr": 1e-3}, {"seed": 1}, {"model": "abc"}, {"d.jsonl": "sha"})
    assert set(before) == set(fp.PART_NAMES) and len(set(before.values())) == len(fp.PART_NAMES)
    after = fp.stage_parts({"lr": 2e-3}, {"seed": 1}, {"model": "abc"}, {"d.jsonl": "other"})
    assert fp.changed_parts(before, after) == ["spec", "data"]
    assert fp.changed_parts(before, before) == [] and fp.combine(before) != fp.combine(after)
    assert fp.changed_parts(None, after) == list(fp.PART_NAMES)  # never run: everything is new


def test_library_versions_are_read_from_metadata() -> None:
    versions = fp.library_versions()
    assert versions["torch"].startswith("2.") and all(isinstance(v, str) for v in versions.values())
