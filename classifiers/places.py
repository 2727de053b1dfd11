"""Where an event happened, read off a beneficiary's message ("à Barcelone", spaCy places)."""

from __future__ import annotations

import re

from classifiers.entities import load_nlp

__all__ = ["find_place"]

_MAX_CHARS = 3_000
_NAME = r"[A-ZÀ-Ý][\w'’-]+"
# A capitalised name after a place preposition; "de" joins multi-word names (Saint-Jean de Luz).
_AFTER_PREPOSITION = re.compile(
    rf"(?:(?<=\s)|^)(?:à|a|au|aux|en|in|at|near|près de|pres de|en|bei|nach|cerca de|vicino a)"
    rf"\s+({_NAME}(?:(?:\s+|\s+de\s+|\s+del\s+|-){_NAME}){{0,3}})"
)
# Capitalised words after a preposition that are not places (dates, people, the company).
_NOT_PLACES = frozenset(
    {
        "janvier",
        "février",
        "fevrier",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "aout",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
        "decembre",
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "enero",
        "febrero",
        "marzo",
        "abril",
        "mayo",
        "junio",
        "julio",
        "agosto",
        "septiembre",
        "octubre",
        "noviembre",
        "diciembre",
        "lundi",
        "mardi",
        "mercredi",
        "jeudi",
        "vendredi",
        "samedi",
        "dimanche",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "madame",
        "monsieur",
        "mme",
        "mr",
        "mrs",
        "ms",
        "dr",
        "docteur",
        "doctor",
        "cordialement",
        "bonjour",
        "merci",
        "the",
        "la",
        "le",
        "les",
        "mon",
        "ma",
        "mes",
        "my",
        "our",
        "votre",
        "your",
        "notre",
        "nous",
        "vous",
        "je",
        "i",
        "il",
        "elle",
        "urgence",
        "urgences",
        "assistance",
    }
)


def find_place(text: str) -> str:
    """The event's place, or "" when the text names none.

    A name after a place preposition is taken first: it is what people write ("à Barcelone",
    "in Lisbon"), and spaCy's small model tags capitalised greetings as places too often to
    come first. spaCy's LOC/GPE entities are the fallback, for names without a preposition.
    """
    sample = text[:_MAX_CHARS]
    for match in _AFTER_PREPOSITION.finditer(sample):
        name = match.group(1).strip(" -'’")
        if name.split()[0].lower() not in _NOT_PLACES:
            return name[:200]
    return _nlp_place(sample)


def _nlp_place(sample: str) -> str:
    if not re.search(_NAME, sample):
        return ""
    try:
        nlp = load_nlp()
    except (OSError, ImportError):
        return ""  # model not installed: the preposition rule above still works
    for ent in nlp(sample).ents:
        if ent.label_ not in ("LOC", "GPE"):
            continue
        name = ent.text.strip()
        if name and name.split()[0].lower() not in _NOT_PLACES and len(name.split()) <= 4:
            return name[:200]
    return ""
