"""The scores `guichet eval` prints."""

from __future__ import annotations

import pytest

from classifiers.evaluation import EntityScores, LabelScores


def test_precision_recall_f1_and_confusion() -> None:
    scores = LabelScores()
    for gold, predicted in [("a", "a"), ("a", "b"), ("b", "b"), ("b", "b"), ("c", None)]:
        scores.add(gold, predicted)
    report = scores.report(("a", "b", "c"))
    a, b, c = (report["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"], a["support"]) == (1.0, 0.5, 2)
    assert b["precision"] == pytest.approx(0.6667, abs=1e-4) and b["recall"] == 1.0
    assert (c["precision"], c["recall"], c["f1"]) == (0.0, 0.0, 0.0)
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0) / 3, abs=1e-4)
    assert report["accuracy"] == 0.6
    assert report["confusion"]["labels"] == ["a", "b", "c", "(none)"]
    assert report["confusion"]["rows"] == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1]]


def test_entity_exact_match_and_spurious() -> None:
    scores = EntityScores()
    scores.add("1", {"iban": "FR76", "date": "2026-01-02"}, {"iban": "FR76", "date": "2026-02-01"})
    scores.add("2", {"iban": "BE31"}, {"iban": "BE31", "phone": "+33612345678"})
    report = scores.report(("iban", "date", "phone", "person"))
    assert report["iban"]["exact_match"] == 1.0
    assert report["date"]["exact_match"] == 0.0
    assert report["date"]["misses"] == [("1", "2026-01-02", "2026-02-01")]
    assert (report["phone"]["labelled"], report["phone"]["spurious"]) == (0, 1)
    assert report["person"]["exact_match"] is None
