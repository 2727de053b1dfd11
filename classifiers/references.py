"""Dossier references (AS-YYYY-NNNNNN) as people really write them, normalised."""

from __future__ import annotations

import re

# Tolerates lower case, spaces, dots or no separator ("as 2026 000001", "AS2026000001"), but
# not a longer run of digits: "AS-2026-0000012" is not a reference. OCR and hurried typing put
# O for 0 and I or l for 1 inside the digits ("AS-2O26-OO1234"): those are read as digits too,
# and OCR sometimes splits the six digits with one space ("AS-2025-01 2524").
_REFERENCE = re.compile(
    r"(?<![A-Za-z0-9])A[\s._-]?S[\s._-]*(2[0O][0-9OIl]{2})[\s._-]*"
    r"([0-9OIl]{6}|[0-9OIl]{1,5} [0-9OIl]{1,5})(?![0-9OIl])",
    re.IGNORECASE,
)
_AS_DIGITS = str.maketrans("OoIil", "00111")
# A run made mostly of letters is a word, not a misread number ("AS 2026 OIlOIl" is noise).
_MIN_REAL_DIGITS = 4


def normalise_reference(year: str, number: str) -> str:
    return f"AS-{year}-{number}"


def find_references(*texts: str) -> list[str]:
    """Every distinct dossier reference in the texts, normalised, in order of appearance."""
    found: list[str] = []
    for text in texts:
        for match in _REFERENCE.finditer(text or ""):
            year, number = match.group(1), match.group(2).replace(" ", "")
            if len(number) != 6 or sum(c.isdigit() for c in number) < _MIN_REAL_DIGITS:
                continue
            reference = normalise_reference(
                year.translate(_AS_DIGITS), number.translate(_AS_DIGITS)
            )
            if reference not in found:
                found.append(reference)
    return found
