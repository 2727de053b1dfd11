"""SMS segments: GSM-7 with its two-septet extension characters, or UCS-2."""

from __future__ import annotations

from responders.sms import is_gsm7, measure, to_gsm7


def test_gsm7_segments() -> None:
    assert measure("").segments == 0
    assert (measure("a" * 160).encoding, measure("a" * 160).segments) == ("gsm7", 1)
    assert measure("a" * 161).segments == 2
    assert measure("a" * 306).segments == 2
    assert measure("a" * 307).segments == 3


def test_extension_characters_count_twice() -> None:
    assert measure("€" * 80) == measure("a" * 160)
    assert measure("€" * 81).segments == 2
    assert measure("[x]").units == 5


def test_ucs2_when_any_character_is_outside_gsm7() -> None:
    assert measure("ê" * 70).segments == 1 and measure("ê" * 70).encoding == "ucs2"
    assert measure("ê" * 71).segments == 2
    assert measure("ê" * 134).segments == 2 and measure("ê" * 135).segments == 3
    # An emoji is two UTF-16 code units.
    assert measure("🙂" * 35).units == 70


def test_to_gsm7_keeps_french_readable() -> None:
    text = to_gsm7("Vous êtes reçu : 1\u202f250,40\u00a0€ — l’assurée à Noël")
    assert text == "Vous etes recu : 1 250,40 € - l'assurée à Noel"
    assert is_gsm7(text)
