"""A text classifier (TF-IDF on characters and words, logistic regression) and its artefact."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

FORMAT_VERSION = 1

_QUOTED_HEADER = re.compile(
    r"^(le .{5,120} a écrit|on .{5,120} wrote|el .{5,120} escribió|il .{5,120} ha scritto|"
    r"am .{5,120} schrieb|-{2,} ?(original message|message d'origine|message transféré)|de ?: .+@)",
    re.IGNORECASE,
)
_DIGITS = re.compile(r"\d")
_SPACES = re.compile(r"[ \t\u00a0\u202f]+")


def normalise(text: str, *, max_chars: int = 6000) -> str:
    """What the models see: quoted history dropped, accents folded, digits masked.

    Folding accents and masking digits makes "rembourssement", "REMBOURSEMENT" and
    "remboursement" look alike and keeps amounts and dates from being memorised.
    """
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(">"):
            continue
        if _QUOTED_HEADER.match(stripped):
            break
        lines.append(stripped)
    folded = unicodedata.normalize("NFKD", "\n".join(lines)[:max_chars].lower())
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return _SPACES.sub(" ", _DIGITS.sub("0", folded))


def _vectorizers() -> tuple[TfidfVectorizer, TfidfVectorizer]:
    chars = TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=(2, 5),
        min_df=2,
        sublinear_tf=True,
        max_features=80000,
        dtype=np.float32,
    )
    words = TfidfVectorizer(
        analyzer="word",
        ngram_range=(1, 2),
        min_df=2,
        sublinear_tf=True,
        max_features=40000,
        token_pattern=r"(?u)\b\w\w+\b",  # noqa: S106 - a regex, not a password
        dtype=np.float32,
    )
    return chars, words


@dataclass
class TextClassifier:
    """One label per text with a probability; saved as a numpy archive, never a pickle."""

    chars: TfidfVectorizer
    words: TfidfVectorizer
    model: LogisticRegression
    meta: dict[str, Any]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self.model.classes_)

    @classmethod
    def train(
        cls,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        c: float = 8.0,
        meta: dict[str, Any] | None = None,
    ) -> TextClassifier:
        if len(set(labels)) < 2:
            raise ValueError("training needs at least two labels")
        chars, words = _vectorizers()
        prepared = [normalise(t) for t in texts]
        features = sparse.hstack(
            [chars.fit_transform(prepared), words.fit_transform(prepared)]
        ).tocsr()
        model = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
        model.fit(features, list(labels))
        counts = {
            str(label): int(n)
            for label, n in zip(*np.unique(list(labels), return_counts=True), strict=True)
        }
        return cls(chars, words, model, {**(meta or {}), "examples": counts})

    def _features(self, texts: Sequence[str]) -> Any:
        prepared = [normalise(t) for t in texts]
        return sparse.hstack(
            [self.chars.transform(prepared), self.words.transform(prepared)]
        ).tocsr()

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """The most probable label of each text and its probability in [0, 1]."""
        if not texts:
            return []
        probabilities = self.model.predict_proba(self._features(texts))
        best = probabilities.argmax(axis=1)
        return [(self.labels[i], float(probabilities[row, i])) for row, i in enumerate(best)]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {
            "meta": np.array(
                json.dumps({**self.meta, "format": FORMAT_VERSION}, ensure_ascii=False)
            ),
            "classes": np.array(self.labels),
            "coef": self.model.coef_.astype(np.float32),
            "intercept": self.model.intercept_.astype(np.float32),
        }
        for name, vectorizer in (("chars", self.chars), ("words", self.words)):
            terms = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)
            arrays[f"{name}_terms"] = np.array(terms)
            arrays[f"{name}_idf"] = vectorizer.idf_.astype(np.float32)
        with path.open("wb") as fh:
            np.savez_compressed(fh, **arrays)

    @classmethod
    def load(cls, path: Path) -> TextClassifier:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != FORMAT_VERSION:
                raise ValueError(
                    f"{path}: model format {meta.get('format')} is not {FORMAT_VERSION}"
                )
            chars, words = _vectorizers()
            for name, vectorizer in (("chars", chars), ("words", words)):
                terms = [str(t) for t in data[f"{name}_terms"]]
                vectorizer.vocabulary_ = {term: i for i, term in enumerate(terms)}
                vectorizer.idf_ = data[f"{name}_idf"].astype(np.float64)
            model = LogisticRegression()
            model.classes_ = np.array([str(c) for c in data["classes"]])
            model.coef_ = data["coef"].astype(np.float64)
            model.intercept_ = data["intercept"].astype(np.float64)
        return cls(chars, words, model, meta)
