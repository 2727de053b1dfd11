"""Dossier references as people write them."""

from __future__ import annotations

import pytest

from classifiers.references import find_references


@pytest.mark.parametrize(
    "text",
    [
        "Dossier AS-2026-000001",
        "dossier as-2026-000001 merci",
        "réf. AS 2026 000001",
        "AS2026000001",
        "(as.2026.000001)",
        "Subject: Re: [AS-2026-000001] Accusé",
        "ref:AS_2026_000001.",
    ],
)
def test_variants_are_normalised(text: str) -> None:
    assert find_references(text) == ["AS-2026-000001"]


@pytest.mark.parametrize(
    "text",
    [
        "dossier n°4512",
        "AS-2026-0000012",  # seven digits: not a reference
        "CLASS-2026-000001",
        "AS-1999-000001",
        "BAS2026000001",
    ],
)
def test_near_misses_are_not_references(text: str) -> None:
    assert find_references(text) == []


def test_distinct_references_in_order_across_texts() -> None:
    assert find_references("AS-2026-000002 et as 2026 000001", "rappel AS2026000002") == [
        "AS-2026-000002",
        "AS-2026-000001",
    ]
