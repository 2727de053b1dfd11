"""Language of a text among fr, en, es, it and de (lingua); French unless it says otherwise."""

from __future__ import annotations

import re
from functools import cache

from lingua import Language, LanguageDetector, LanguageDetectorBuilder

_CODES = {
    Language.FRENCH: "fr",
    Language.ENGLISH: "en",
    Language.SPANISH: "es",
    Language.ITALIAN: "it",
    Language.GERMAN: "de",
}
SUPPORTED = tuple(_CODES.values())
_WORD = re.compile(r"[^\W\d_]{2,}", re.UNICODE)
# Words every language's SMS uses alike: a text made only of them says nothing of its language.
_NEUTRAL = frozenset({"stop", "sms", "ok", "okay", "pub", "info", "infos", "mms", "email", "mail"})


@cache
def detector() -> LanguageDetector:
    # Only the languages our customers write in: fewer models, fewer confusions (ca/pt/ro).
    return (
        LanguageDetectorBuilder.from_languages(*_CODES).with_minimum_relative_distance(0.1).build()
    )


def guess_language(text: str, default: str = "fr") -> str:
    """The text's language code, or ``default`` when the text is too short to tell.

    A one-word reply ("STOP", "Ok", "5") in a French conversation is French: only a longer
    single word the detector is sure about ("Unsubscribe") overrides the default.
    """
    sample = text[:3000]
    words = _WORD.findall(sample)
    if not words or all(word.lower() in _NEUTRAL for word in words):
        return default
    if len(words) == 1:
        if len(words[0]) < 6:
            return default
        best = detector().compute_language_confidence_values(words[0])[0]
        return _CODES[best.language] if best.value >= 0.8 else default
    found = detector().detect_language_of(sample)
    return _CODES[found] if found is not None else default
