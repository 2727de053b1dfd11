"""Scores of classifiers against labels: precision, recall, F1, confusion, entity exact match."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LabelScores:
    """Per-class scores of one classification task (intents, or document types)."""

    gold: list[str] = field(default_factory=list)
    predicted: list[str] = field(default_factory=list)

    def add(self, gold: str, predicted: str | None) -> None:
        self.gold.append(gold)
        self.predicted.append(predicted or "(none)")

    def report(self, classes: Sequence[str]) -> dict[str, Any]:
        pairs = Counter(zip(self.gold, self.predicted, strict=True))
        per_class: dict[str, dict[str, float | int]] = {}
        for label in classes:
            tp = pairs[(label, label)]
            predicted = sum(n for (_, p), n in pairs.items() if p == label)
            support = sum(n for (g, _), n in pairs.items() if g == label)
            precision = tp / predicted if predicted else 0.0
            recall = tp / support if support else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            per_class[label] = {
                "precision": round(precision, 4),
                "recall": round(recall, 4),
                "f1": round(f1, 4),
                "support": support,
            }
        present = [label for label in classes if per_class[label]["support"]]
        macro = (
            sum(float(per_class[label]["f1"]) for label in present) / len(present)
            if present
            else 0.0
        )
        columns = [*classes, "(none)"]
        return {
            "items": len(self.gold),
            "accuracy": round(sum(pairs[(c, c)] for c in classes) / len(self.gold), 4)
            if self.gold
            else 0.0,
            "macro_f1": round(macro, 4),
            "per_class": per_class,
            "confusion": {
                "labels": columns,
                "rows": [[pairs[(gold, predicted)] for predicted in columns] for gold in classes],
            },
        }


@dataclass
class EntityScores:
    """Exact match per entity key, over the items whose labels carry that key."""

    labelled: Counter[str] = field(default_factory=Counter)
    exact: Counter[str] = field(default_factory=Counter)
    spurious: Counter[str] = field(default_factory=Counter)
    misses: dict[str, list[tuple[str, str, str | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def add(self, item_id: str, gold: dict[str, str], predicted: dict[str, str]) -> None:
        for key, value in gold.items():
            self.labelled[key] += 1
            if predicted.get(key) == value:
                self.exact[key] += 1
            else:
                self.misses[key].append((item_id, value, predicted.get(key)))
        for key in predicted.keys() - gold.keys():
            self.spurious[key] += 1

    def report(self, keys: Iterable[str]) -> dict[str, Any]:
        return {
            key: {
                "labelled": self.labelled[key],
                "exact_match": round(self.exact[key] / self.labelled[key], 4)
                if self.labelled[key]
                else None,
                "spurious": self.spurious[key],
                "misses": self.misses.get(key, [])[:10],
            }
            for key in keys
        }
