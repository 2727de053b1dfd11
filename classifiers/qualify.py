"""Qualify a contact or a document: language, intent or document type with confidence, entities."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from classifiers.entities import EntityContext, extract_entities, load_nlp
from classifiers.language import guess_language
from classifiers.textmodel import TextClassifier

MODELS_DIR = Path(__file__).resolve().parent / "models"

# A message that is only an opt-out keyword is decided by rule: the law, not a model, says
# what STOP means, and it must work even for a one-word SMS the model never saw.
_OPT_OUT = re.compile(
    r"^\W*(stop( sms)?|arret|arrete[rz]?|desabonne(r|z|ment)?( moi)?|unsubscribe|baja|"
    r"cancella(mi)?|abmelden|stopp)\W*$",
    re.IGNORECASE,
)
_EDI_INVOICE = re.compile(r"UNH\+[^+']*\+INVOIC", re.IGNORECASE)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def is_opt_out(text: str) -> bool:
    return bool(_OPT_OUT.match(_fold(text).strip()))


@dataclass(frozen=True)
class Qualification:
    """What Guichet understood of one text; ``label`` is an intent or a document type."""

    kind: str
    language: str
    label: str | None
    confidence: float | None
    entities: dict[str, str] = field(default_factory=dict)
    rule: str | None = None


class Qualifier:
    """Loads the trained models once and qualifies texts in batches."""

    def __init__(self, models_dir: Path = MODELS_DIR, default_language: str = "fr") -> None:
        self.models_dir = models_dir
        self.default_language = default_language

    @cached_property
    def intent_model(self) -> TextClassifier:
        return TextClassifier.load(self.models_dir / "intent.npz")

    @cached_property
    def doc_type_model(self) -> TextClassifier:
        return TextClassifier.load(self.models_dir / "doc_type.npz")

    def warm_up(self) -> None:
        """Load models, spaCy and the language detector now rather than on the first contact."""
        self.messages(["Bonjour, où en est mon dossier ? Cordialement, Jean Dupont"])
        self.documents(["Facture n° 12 Total TTC 10,00 EUR"])
        load_nlp()

    def messages(
        self,
        texts: Sequence[str],
        *,
        kind: str = "message",
        sender_names: Sequence[str | None] | None = None,
    ) -> list[Qualification]:
        """Intent, language and entities of message bodies (SMS, chat, email subject + body)."""
        names = list(sender_names) if sender_names is not None else [None] * len(texts)
        predictions = self.intent_model.predict(texts) if texts else []
        results = []
        for text, name, (intent, confidence) in zip(texts, names, predictions, strict=True):
            language = guess_language(text, self.default_language)
            rule = None
            if kind == "edi" and _EDI_INVOICE.search(text):
                intent, confidence, rule = "provider_invoice", 1.0, "EDIFACT INVOIC message"
            elif is_opt_out(text):
                intent, confidence, rule = "opt_out", 1.0, "opt-out keyword"
            entities = extract_entities(
                text, EntityContext(kind=kind, language=language, sender_name=name)
            )
            results.append(Qualification(kind, language, intent, confidence, entities, rule))
        return results

    def documents(self, texts: Sequence[str]) -> list[Qualification]:
        """Document type, language and entities of extracted document texts."""
        usable = [i for i, text in enumerate(texts) if text.strip()]
        predictions = dict(
            zip(usable, self.doc_type_model.predict([texts[i] for i in usable]), strict=True)
        )
        results = []
        for i, text in enumerate(texts):
            language = guess_language(text, self.default_language)
            if i not in predictions:
                # No text (refused, encrypted, unreadable): nothing to classify, say so.
                results.append(Qualification("document", language, None, None, {}, "no text"))
                continue
            doc_type, confidence = predictions[i]
            entities = extract_entities(text, EntityContext(kind="document", language=language))
            results.append(Qualification("document", language, doc_type, confidence, entities))
        return results
