"""The padding estimate behind sft's packing advice."""

from __future__ import annotations

from llmctl.data.lengths import packing_hint, padding_fraction


def test_padding_fraction_counts_what_batches_pad_to_their_longest_row() -> None:
    assert padding_fraction([5, 5, 5, 5], 2) == 0.0
    assert padding_fraction([1, 3, 2, 2], 2) == round(1 - 8 / (3 * 2 + 2 * 2), 3)  # batches (1, 3) and (2, 2)
    assert padding_fraction([4, 1, 1], 2) == round(1 - 6 / (4 * 2 + 1), 3)  # the last batch holds one row
    assert padding_fraction([], 8) == 0.0


def test_packing_hint_only_when_packing_is_a_poor_fit_or_a_missed_one() -> None:
    assert "packing: false" in packing_hint(0.02, packing=True)
    assert "packing: true" in packing_hint(0.74, packing=False)
    assert packing_hint(0.3, packing=True) is None and packing_hint(0.3, packing=False) is None
