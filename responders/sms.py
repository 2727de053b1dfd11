"""SMS length: GSM-7 (extension characters count twice) or UCS-2 segments of a text."""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

# GSM 03.38 basic character set.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Reached through the escape character: each costs two septets.
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

# What Babel and typography put in French text that GSM-7 lacks, and its nearest GSM-7 form.
_PLAIN = str.maketrans(
    {
        "\u00a0": " ",
        "\u202f": " ",
        "\u2009": " ",
        "\u2019": "'",
        "\u2018": "'",
        "\u201c": '"',
        "\u201d": '"',
        "«": '"',
        "»": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2026": "...",
    }
)


@dataclass(frozen=True)
class SmsLength:
    encoding: str  # "gsm7" or "ucs2"
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int


def is_gsm7(text: str) -> bool:
    return all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)


def measure(text: str) -> SmsLength:
    """Segments as a handset counts them: 160/153 septets, or 70/67 UTF-16 units."""
    if is_gsm7(text):
        units = sum(2 if c in GSM7_EXTENSION else 1 for c in text)
        single, multi, encoding = 160, 153, "gsm7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "ucs2"
    if units == 0:
        return SmsLength(encoding, 0, 0)
    segments = 1 if units <= single else math.ceil(units / multi)
    return SmsLength(encoding, units, segments)


def to_gsm7(text: str) -> str:
    """Keep a French or English text in GSM-7 (so 153 characters a segment, not 67):
    spaces and quotes made plain, accents GSM-7 lacks (ê, â, î, ô, û, ë, ï) dropped."""
    text = text.translate(_PLAIN)
    out: list[str] = []
    for char in text:
        if char in GSM7_BASIC or char in GSM7_EXTENSION:
            out.append(char)
            continue
        base = unicodedata.normalize("NFD", char)[0]
        out.append(base if base in GSM7_BASIC else "?")
    return "".join(out)
