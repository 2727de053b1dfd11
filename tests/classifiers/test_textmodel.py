"""The text classifier: normalisation, training, and its pickle-free artefact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classifiers.corpus import iter_text_items, read_corpus
from classifiers.qualify import MODELS_DIR as MODELS
from classifiers.textmodel import TextClassifier, normalise

TRAINING = Path(__file__).resolve().parents[2] / "classifiers" / "training"

TEXTS = {
    "refund": [
        "Je souhaite être remboursé des frais de taxi",
        "merci de me rembourser la facture de l'hôtel",
        "remboursement des frais médicaux svp",
        "pouvez vous me rembourser les 120 euros avancés",
        "je demande le remboursement de mes dépenses",
        "rembourser la facture du garage merci",
    ],
    "status": [
        "où en est mon dossier ?",
        "avez-vous des nouvelles de mon dossier",
        "je voudrais savoir où en est le traitement",
        "quel est l'état d'avancement de ma demande",
        "des nouvelles de mon dossier svp",
        "où en est ma demande de prise en charge",
    ],
}


def _train() -> TextClassifier:
    texts = [t for group in TEXTS.values() for t in group]
    labels = [label for label, group in TEXTS.items() for _ in group]
    return TextClassifier.train(texts, labels, meta={"sources": ["unit"]})


def test_normalise_drops_quoted_history_folds_accents_masks_digits() -> None:
    text = (
        "Où EN est mon dossier 2026 ?\n> ancien message\n"
        "Le 3 mars 2026, Assistance a écrit :\nvieux"
    )
    assert normalise(text) == "ou en est mon dossier 0000 ?"


def test_predicts_with_probabilities() -> None:
    model = _train()
    [(label, confidence)] = model.predict(["rembourser mes frais de pharmacie"])
    assert label == "refund"
    assert 0.5 < confidence <= 1.0
    assert model.predict(["ou en est mon dossier svp"])[0][0] == "status"
    assert model.meta["examples"] == {"refund": 6, "status": 6}


def test_artefact_round_trip_gives_the_same_predictions(tmp_path: Path) -> None:
    model = _train()
    model.save(tmp_path / "m.npz")
    loaded = TextClassifier.load(tmp_path / "m.npz")
    probes = ["rembourser la facture", "état de mon dossier", "texte sans rapport"]
    assert [label for label, _ in loaded.predict(probes)] == [
        label for label, _ in model.predict(probes)
    ]
    for (_, a), (_, b) in zip(loaded.predict(probes), model.predict(probes), strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    assert loaded.meta["sources"] == ["unit"]
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
        assert "coef" in data  # loads with pickles refused: nothing executable in the artefact


def test_refuses_a_single_label_and_a_wrong_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least two labels"):
        TextClassifier.train(["a b", "c d"], ["x", "x"])
    model = _train()
    model.meta["format"] = 99
    path = tmp_path / "old.npz"
    model.save(path)  # save() always writes the current format
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["meta"] = np.array('{"format": 0}')
    np.savez_compressed(path, **arrays)
    with pytest.raises(ValueError, match="model format 0"):
        TextClassifier.load(path)


PROBES = [
    "rembourser mes frais de pharmacie",
    "Où en est mon dossier AS-2026-000123 ? Merci",
    "",  # nothing at all
    "zzqx wvvk",  # no n-gram the model knows
    "remboursement " * 400,  # one n-gram counted many times
    "Bonjour,\n> cité\nLe 3 mars 2026, X a écrit :\nrembourser",
]


def test_the_direct_computation_is_scikit_learns_with_two_labels() -> None:
    model = _train()
    direct, reference = model.predict(PROBES), model.predict_with_sklearn(PROBES)
    assert [label for label, _ in direct] == [label for label, _ in reference]
    for (_, a), (_, b) in zip(direct, reference, strict=True):
        assert a == pytest.approx(b, abs=1e-6)


@pytest.mark.parametrize("name", ["intent", "doc_type"])
def test_the_direct_computation_is_scikit_learns_with_the_shipped_models(name: str) -> None:
    """Many labels (softmax), on every training text of the project and on the probes."""
    model = TextClassifier.load(MODELS / f"{name}.npz")
    texts = [text for _, text in iter_text_items(read_corpus(TRAINING))] + PROBES
    direct, reference = model.predict(texts), model.predict_with_sklearn(texts)
    assert len(direct) == len(texts) > 400
    assert [label for label, _ in direct] == [label for label, _ in reference]
    assert max(abs(a - b) for (_, a), (_, b) in zip(direct, reference, strict=True)) < 1e-6
