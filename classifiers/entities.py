"""Facts of a contact or document: dossier, contract, amount, date, IBAN, phone and person."""

from __future__ import annotations

import functools
import html
import re
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, NamedTuple

import phonenumbers
from schwifty import IBAN, registry
from schwifty.exceptions import NationalChecksumNotVerified

from classifiers.references import find_references

if TYPE_CHECKING:
    from spacy.language import Language

__all__ = ["EntityContext", "extract_entities", "load_nlp"]

# Past this, a "document" is a dump (log, spreadsheet): the facts are in the first pages anyway,
# and every rule below stays linear but the person fallback must not read megabytes.
_MAX_CHARS = 200_000
_MAX_NLP_CHARS = 5_000


@dataclass(frozen=True)
class EntityContext:
    kind: str  # "message" | "email" | "document" | "edi"
    language: str = "fr"
    sender_name: str | None = None  # email From display name (person labels come from it)


def extract_entities(text: str, context: EntityContext) -> dict[str, str]:
    """The facts a person reads off ``text``, normalised; a key is absent when not found.

    Pass what a person would read: for an email its subject, a blank line and its text body
    (quoted replies included); for a document its text layer or OCR; for EDI the raw
    interchange. The rules read French, English, Spanish, Italian and German whatever
    ``context.language`` says, so a mislabelled language costs nothing.
    """
    if not text or not text.strip():
        return {}
    text = _prepare(text[:_MAX_CHARS])
    if context.kind == "edi" or text.lstrip().startswith(("UNA", "UNB+")):
        return _edi_entities(text)

    found: dict[str, str] = {}
    references = find_references(text)
    if references:
        found["dossier_ref"] = references[0]
    contract = _find_contract(text)
    if contract:
        found["contract_no"] = contract
    iban, iban_spans = _find_iban(text)
    if not iban:
        iban, rib_spans = _iban_from_rib(text)
        iban_spans += rib_spans
    if iban:
        found["iban"] = iban
    # Account numbers, references and masked IBANs are long digit runs: blank them so that
    # phone, amount and date rules never read a piece of them.
    clean = _blank_spans(text, iban_spans + _reference_spans(text))
    header_lines = _header_lines(clean) if context.kind != "document" else frozenset()
    numeric = _numeric_view(clean)
    amount = _find_amount(numeric, context.kind)
    if amount:
        found["amount_total"], found["currency"] = amount
    when = _find_date(numeric, context.kind, header_lines)
    if when:
        found["date"] = when
    phone = _find_phone(numeric, header_lines) or _find_foreign_phone(clean, context.language)
    if phone:
        found["phone"] = phone
    person = _find_person(clean, context, header_lines)
    if person:
        found["person"] = person
    return found


# --------------------------------------------------------------------------- text preparation

_HTML_HINT = re.compile(r"<(?:html|body|p|div|br|table|span)\b", re.IGNORECASE)
_HTML_BREAK = re.compile(r"<(?:br|/p|/div|/tr|/li|/h\d|/table)\b[^>]*>", re.IGNORECASE)
_HTML_DROP = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]{0,2000}>")
# No-break, narrow no-break, thin and figure spaces all separate thousands in French amounts.
_SPACES = str.maketrans(
    {"\u00a0": " ", "\u202f": " ", "\u2009": " ", "\u2007": " ", "\t": "   ", "\r": None}
)


def _prepare(text: str) -> str:
    if _HTML_HINT.search(text[:5000]):
        text = _HTML_DROP.sub(" ", text)
        text = _HTML_BREAK.sub("\n", text)
        text = html.unescape(_HTML_TAG.sub("", text))
    return text.translate(_SPACES)


# OCR reads 0 as O and 1 as l, I or | inside numbers ("1 279,O2 €", "1O/03/2026", "l 554,01").
# Amounts, dates and phones read a copy where such a letter touching digits is a digit again;
# the copy keeps every offset, and names are still read from the original.
_OCR_IN_NUMBER = re.compile(
    r"(?<=\d)[OoIl|](?=[\d/.,:\s-]?\d)|(?<=\d[/.,:-])[OoIl|](?=\d)|(?<=\d)[OoBSZ]\b|"
    r"(?<=\d)[BSZ](?=\d)|(?<![\w'’])[OoIl|](?=\d)|(?<![\w.,])[lI|](?= \d{3}[.,]\d{2}\b)"
)
_OCR_DIGIT_OF = {"O": "0", "o": "0", "I": "1", "l": "1", "|": "1", "B": "8", "S": "5", "Z": "2"}


def _numeric_view(text: str) -> str:
    return _OCR_IN_NUMBER.sub(lambda m: _OCR_DIGIT_OF[m.group(0)], text)


def _blank_spans(text: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return text
    chars = list(text)
    for start, end in spans:
        for i in range(start, end):
            if chars[i] != "\n":
                chars[i] = " "
    return "".join(chars)


_REFERENCE_LIKE = re.compile(
    r"(?<![A-Za-z0-9])A[\s._-]?S[\s._-]*2[0O]\w{2}[\s._-]*(?:\w{6}|\w{1,5} \w{1,5})", re.I
)


def _reference_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _REFERENCE_LIKE.finditer(text)]


class _Line(NamedTuple):
    start: int
    end: int
    text: str


def _lines(text: str) -> list[_Line]:
    lines: list[_Line] = []
    start = 0
    for part in text.split("\n"):
        lines.append(_Line(start, start + len(part), part))
        start += len(part) + 1
    return lines


def _line_index(lines: list[_Line], pos: int) -> int:
    lo, hi = 0, len(lines) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if lines[mid].start <= pos:
            lo = mid
        else:
            hi = mid - 1
    return lo


# Reply and forward headers inside a body ("Le 3 mars 2026 à 10:02, X a écrit :", "De : ...",
# "Date : ..."): their dates and numbers belong to the mail system, not to the facts.
_WROTE = re.compile(
    r"^\W*(?:le|on|el|il|am|op)\b.{0,200}\b(?:a écrit|wrote|escribió|ha scritto|schrieb|"
    r"schreef)\s*:?\s*$",
    re.IGNORECASE,
)
_HEADER_FIELD = re.compile(
    r"^\W*(?:de|from|von|da|envoyé(?: le)?|sent|gesendet|inviato|enviado|date|datum|data|fecha|"
    r"objet|subject|betreff|oggetto|asunto|à|to|an|a|para|cc)\s*:",
    re.IGNORECASE,
)
_HEADER_ANCHOR = re.compile(
    r"^\W*(?:de|from|von|da|envoyé|sent|gesendet|inviato|enviado|objet|subject|betreff|oggetto|"
    r"asunto)\s*:",
    re.IGNORECASE,
)


def _header_lines(text: str) -> frozenset[int]:
    lines = text.split("\n")
    marked: set[int] = set()
    for i, line in enumerate(lines):
        if len(line) > 300:
            continue
        if _WROTE.match(line):
            marked.add(i)
        elif i + 1 < len(lines) and len(lines[i + 1]) < 300 and _WROTE.match(line + lines[i + 1]):
            marked.update((i, i + 1))  # mail clients wrap the long "a écrit" line
        elif _HEADER_FIELD.match(line):
            window = lines[max(0, i - 4) : i + 5]
            if sum(1 for other in window if _HEADER_ANCHOR.match(other)) >= 1 and any(
                _HEADER_FIELD.match(other) for other in window if other is not line
            ):
                marked.add(i)
    return frozenset(marked)


# --------------------------------------------------------------------------- contract number

_OCR_DIGITS = str.maketrans("OoDQIl|!]SsBZzG", "000011111558226")
_CONTRACT = re.compile(
    r"(?<![A-Za-z0-9])C\s?T[\s.:#°-]{0,3}((?:[0-9OIl][ .-]?){7}[0-9OIl])(?![0-9])",
    re.IGNORECASE,
)


def _find_contract(text: str) -> str | None:
    for match in _CONTRACT.finditer(text):
        raw = re.sub(r"[ .-]", "", match.group(1))
        if sum(c.isdigit() for c in raw) < 6:
            continue
        return "CT" + raw.translate(_OCR_DIGITS)
    return None


# --------------------------------------------------------------------------- IBAN

# The country code may be glued to the word "IBAN" ("IBANIE29 ...") when OCR loses a space.
_IBAN_START = re.compile(
    r"(?:(?<![A-Za-z0-9])|(?<=IBAN)|(?<=I8AN))([A-Za-z]{2}) ?([0-9OIlSB]{2})(?=[ .-]?[A-Za-z0-9])"
)
# Digit-for-letter and letter-for-digit misreads of OCR, tried only where the country's BBAN
# format says a digit (or a letter) must stand.
_TO_DIGIT = {"O": "0", "D": "0", "Q": "0", "I": "1", "L": "1", "S": "5", "B": "8", "Z": "2"}
_TO_LETTER = {"0": "O", "1": "I", "5": "S", "8": "B", "2": "Z", "6": "G"}
_MAX_REPAIRS = 4


class _IbanSpec(NamedTuple):
    length: int
    classes: str  # one of "n", "a", "c" per BBAN position


@functools.lru_cache(maxsize=128)
def _iban_spec(country: str) -> _IbanSpec | None:
    try:
        spec = registry.get_iban_spec(country)
    except Exception:
        return None
    classes = "".join(
        kind * int(count) for count, kind in re.findall(r"(\d+)!?([nace])", spec.bban_spec)
    )
    if len(classes) != spec.bban_length:
        classes = "c" * spec.bban_length
    return _IbanSpec(spec.iban_length, classes)


def _valid_iban(candidate: str, *, repaired: bool = False) -> bool:
    """ISO 13616 check digits and length always; the national checksum only for a repair.

    An IBAN read as written is trusted on its mod-97 digits: some banks' national checksums
    are not what schwifty knows. A repaired one must also pass the national checksum (RIB
    key...), which makes a repair far less likely to validate by chance. Countries without a
    registered algorithm only warn: that is expected here.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NationalChecksumNotVerified)
            IBAN(candidate, validate_bban=repaired)
    except ValueError:
        return False
    return True


def _find_iban(text: str) -> tuple[str | None, list[tuple[int, int]]]:
    found: str | None = None
    spans: list[tuple[int, int]] = []
    for match in _IBAN_START.finditer(text):
        country = match.group(1).upper()
        spec = _iban_spec(country)
        if spec is None:
            continue
        chars, end = _collect_alnum(text, match.end(), len(spec.classes))
        if len(chars) < len(spec.classes) or not _valid_iban(_plain(match, chars)):
            # Layout-preserving text puts column gaps inside an IBAN; read across them, but
            # only keep what then validates as written.
            wide, wide_end = _collect_alnum(text, match.end(), len(spec.classes), max_gap=6)
            if len(wide) == len(spec.classes) and _valid_iban(_plain(match, wide)):
                chars, end = wide, wide_end
        if len(chars) < len(spec.classes):
            if len(chars) >= 10 and sum(c in "*#Xx" for c in text[match.end() : end + 8]) >= 2:
                spans.append((match.start(), end))  # masked IBAN: keep its digits off the rest
            continue
        digits = sum(c.isdigit() for c in chars)
        if match.group(1).isupper() and digits * 10 >= len(chars) * 6:
            spans.append((match.start(), end))
        if found:
            continue
        check = match.group(2)
        bban = "".join(chars).upper()
        plain = country + check + bban
        if check.isdigit() and _valid_iban(plain):
            found = plain
        elif match.group(1).isupper():
            # Lower-case "de 12 ..." is a word followed by a number, not a misread IBAN.
            found = _repair_iban(country, check, bban, spec)
        if found and (match.start(), end) not in spans:
            spans.append((match.start(), end))
    return found, spans


# A French RIB's four fields: bank, branch, account and key. OCR often breaks the IBAN line of a
# RIB while the field line survives; the key (checked below) makes the IBAN certain.
_RIB_FIELDS = re.compile(
    r"(?<![0-9A-Z])(\d{5})[ \t]+(\d{5})[ \t]+([0-9A-Z]{11})[ \t]+(\d{2})(?!\d)"
)


def _iban_from_rib(text: str) -> tuple[str | None, list[tuple[int, int]]]:
    for match in _RIB_FIELDS.finditer(text):
        bank, branch, account, key = match.groups()
        try:
            iban = IBAN.generate("FR", bank_code=bank, branch_code=branch, account_code=account)
        except ValueError:
            continue
        if iban.compact.endswith(key):
            return iban.compact, [match.span()]
    return None, []


def _plain(match: re.Match[str], chars: list[str]) -> str:
    return match.group(1).upper() + match.group(2) + "".join(chars).upper()


def _collect_alnum(text: str, pos: int, wanted: int, max_gap: int = 1) -> tuple[list[str], int]:
    """Up to ``wanted`` letters and digits from ``pos``, across single spaces, dashes or dots
    and one line break (an IBAN wrapped at the end of a line); stops at a column gap (more
    than ``max_gap`` separators)."""
    chars: list[str] = []
    end = pos
    gap = 0
    breaks = 0
    i = pos
    limit = min(len(text), pos + wanted * (2 + max_gap) + 10)
    while i < limit and len(chars) < wanted:
        c = text[i]
        if c.isascii() and c.isalnum():
            chars.append(c)
            gap = 0
            end = i + 1
        elif c in " .-":
            gap += 1
            if gap > max_gap:
                break
        elif c == "\n" and breaks == 0 and len(chars) >= 8:
            # One wrap, possibly with a blank line in between (OCR of a narrow column).
            breaks += 1
            gap = 0
            nxt = text.find("\n", i + 1)
            if nxt != -1 and not text[i + 1 : nxt].strip() and nxt - i < 10:
                i = nxt
        else:
            break
        i += 1
    return chars, end


def _repair_iban(country: str, check: str, bban: str, spec: _IbanSpec) -> str | None:
    check = "".join(_TO_DIGIT.get(c, c) for c in check.upper())
    if not check.isdigit():
        return None
    fixed: list[str] = []
    ambiguous: list[int] = []
    repairs = 0
    for i, c in enumerate(bban):
        kind = spec.classes[i]
        if kind == "n" and not c.isdigit():
            if c not in _TO_DIGIT:
                return None
            fixed.append(_TO_DIGIT[c])
            repairs += 1
        elif kind == "a" and c.isdigit():
            if c not in _TO_LETTER:
                return None
            fixed.append(_TO_LETTER[c])
            repairs += 1
        else:
            fixed.append(c)
            if kind == "c" and c in _TO_DIGIT:
                ambiguous.append(i)
    if repairs > _MAX_REPAIRS or len(ambiguous) > _MAX_REPAIRS:
        return None
    # Letters in free positions may be real letters or misread digits: try each combination.
    for mask in range(1 << len(ambiguous)):
        if repairs + bin(mask).count("1") > _MAX_REPAIRS:
            continue
        attempt = list(fixed)
        for bit, i in enumerate(ambiguous):
            if mask >> bit & 1:
                attempt[i] = _TO_DIGIT[attempt[i]]
        candidate = country + check + "".join(attempt)
        if _valid_iban(candidate, repaired=True):
            return candidate
    return None


# --------------------------------------------------------------------------- phone

# OCR reads 1 as l, I, | or ], and 0 as O: tolerated in one digit of a pair, never in two.
_PHONE_DIGIT = r"[0-9OIl\]|]"
_PHONE_PAIR = rf"(?:[0-9]{{2}}|[0-9]{_PHONE_DIGIT}|{_PHONE_DIGIT}[0-9])"
_PHONE = re.compile(
    r"(?<![\w+/.,-])("
    # international: +33 6 12 34 56 78, +44 (0)20 7946 0754, +1 (407) 555-0195, 0033 6...
    r"(?:\+|00) ?[1-9][0-9]{0,2}\)?(?: ?\(0\))?(?:[ .-]?\(?[0-9]{1,4}\)?){2,6}"
    r"|"
    # French national: 06 12 34 56 78, 06.12.34.56.78, 06-12-34-56-78, 0612345678
    rf"(?<!\d[ .-])\(?0[1-9]\)?(?:[ .-]?{_PHONE_PAIR}){{4}}(?![ .-]?\d)"
    r")(?![\w])"
)
_PHONE_LABEL = re.compile(
    r"t[ée]l|phone|portable|mobile|gsm|cell|handy|tel[ée]fono|joindre|rappeler|appeler|"
    r"num[ée]ro|number|contact|whatsapp",
    re.IGNORECASE,
)
# Numbers of another kind that can look like a phone number.
_PHONE_BAD_LABEL = re.compile(
    r"fax|t[ée]l[ée]copie|siret|siren|rpps|adeli|finess|s[ée]curit[ée] sociale|etkt|ticket|"
    r"billet|confirmation|iban|rib|compte|guichet|proc[èe]s|facture|invoice|n°|no\.|nr\.|"
    r"r[ée]f",
    re.IGNORECASE,
)


def _find_phone(text: str, header_lines: frozenset[int]) -> str | None:
    best: tuple[int, int, str] | None = None
    for line_no, line in enumerate(text.split("\n")):
        if line_no in header_lines or len(line) > 2000:
            continue
        for match in _PHONE.finditer(line):
            raw = match.group(1)
            number = _parse_phone(raw)
            if number is None:
                continue
            before = line[max(0, match.start() - 30) : match.start()]
            # The nearest label decides: "Tél. 01 23 45 67 89 - Fax 01 23 45 67 80".
            good = _last_position(_PHONE_LABEL, before)
            bad = _last_position(_PHONE_BAD_LABEL, before)
            if bad > good:
                continue
            # A reply's quoted lines carry the assistance company's own numbers: last choice.
            score = -1 if line.lstrip().startswith(">") else 0
            if good >= 0:
                score += 2
            key = (-score, line_no, number)
            if best is None or key < best:
                best = key
        if best is not None and best[0] <= -2:
            break
    return best[2] if best else None


# Where a text in this language most likely dials from, for numbers written the national way.
_REGIONS = {"en": ("GB", "US", "IE"), "es": ("ES",), "it": ("IT",), "de": ("DE", "AT", "CH")}
_PHONE_CONTEXT = re.compile(r"(t[eé]l|phone|tel[eé]fono|telefono|ruf|mobile?|cell|fax)", re.I)


def _find_foreign_phone(text: str, language: str) -> str | None:
    """A national number of the writer's country ("07700 900417" in English, "055 432 1876"
    in Italian), only next to a phone label, since bare digit runs are often something else."""
    for region in _REGIONS.get(language, ()):
        for match in phonenumbers.PhoneNumberMatcher(
            text[:20000], region, leniency=phonenumbers.Leniency.VALID
        ):
            before = text[max(0, match.start - 30) : match.start]
            after = text[match.end : match.end + 3]
            if _PHONE_CONTEXT.search(before) and not after[:1].isdigit():
                return phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
    return None


def _last_position(pattern: re.Pattern[str], text: str) -> int:
    position = -1
    for match in pattern.finditer(text):
        position = match.start()
    return position


def _parse_phone(raw: str) -> str | None:
    cleaned = raw.translate(_OCR_DIGITS) if not raw.startswith(("+", "00")) else raw
    digits = re.sub(r"\D", "", cleaned)
    if len(digits) < 8 or len(digits) > 15:
        return None
    try:
        number = phonenumbers.parse(cleaned, "FR")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        # Ranges not yet allocated (07 1x...) still reach a real person once they are: a
        # well-formed French national number is kept when it has the right length.
        national = re.fullmatch(r"0[1-9]\d{8}", digits)
        if not (national and phonenumbers.is_possible_number(number)):
            return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# --------------------------------------------------------------------------- amounts

_CURRENCY_WORDS: dict[str, str] = {
    "€": "EUR",
    "eur": "EUR",
    "euro": "EUR",
    "euros": "EUR",
    "$": "USD",
    "us$": "USD",
    "usd": "USD",
    "dollars": "USD",
    "£": "GBP",
    "gbp": "GBP",
    "chf": "CHF",
    "sfr": "CHF",
    "sfr.": "CHF",
    "fr.": "CHF",
    "mad": "MAD",
    "dh": "MAD",
    "dhs": "MAD",
    "dirham": "MAD",
    "dirhams": "MAD",
    "c$": "CAD",
    "ca$": "CAD",
    "cad": "CAD",
    "a$": "AUD",
    "aud": "AUD",
    "¥": "JPY",
    "jpy": "JPY",
    "tnd": "TND",
    "dzd": "DZD",
    "xof": "XOF",
    "sek": "SEK",
    "nok": "NOK",
    "dkk": "DKK",
    "pln": "PLN",
    "czk": "CZK",
    "huf": "HUF",
    "ron": "RON",
    "try": "TRY",
    "aed": "AED",
    "thb": "THB",
    "mxn": "MXN",
    "brl": "BRL",
    "cny": "CNY",
}
_CUR = (
    r"(?:US\$|C\$|CA\$|A\$|€|\$|£|¥|(?<![A-Za-z])(?:EUR|[Ee]ur|USD|GBP|CHF|MAD|CAD|AUD|JPY|"
    r"TND|DZD|XOF|SEK|NOK|DKK|PLN|CZK|HUF|RON|TRY|AED|THB|MXN|BRL|CNY|SFr\.?|Fr\.|DHS?|Dhs|"
    r"[Ee]uros?|EUROS?|[Dd]irhams?|dollars)(?![A-Za-z]))"
)
_NUMBER = (
    r"(?:\d{1,3}(?:(?:[ '’]|\.(?=\d{3}(?!\d))|,(?=\d{3}(?!\d)))\d{3})+(?:[.,]\d{1,2})?"
    r"|\d+(?:[.,]\d{1,2})?)"
)
# "15e arrondissement", "2e étage": French ordinals, not SMS euros.
_NOT_ORDINAL = (
    r"(?! ?(?:arr|si[èe]cle|[ée]tage|fois|rang|jour|[ée]dition|classe|place|anniv|ann[ée]e|"
    r"mois|semaine|heure|tour|round))"
)
_AMOUNT = re.compile(
    rf"(?<![\w,'’/])(?<![\d][.:-])(?:(?P<pre>{_CUR}) ?)?(?P<num>{_NUMBER})"
    rf"(?![\d/:]|[.,]\d)(?: ?(?P<post>{_CUR})|(?P<e>e)(?![A-Za-zÀ-ÿ]){_NOT_ORDINAL})?"
)
# How strongly the words before an amount say "this is the total to pay".
_TOTAL_STRONG = re.compile(
    r"net (?:à|a) payer|total (?:à|a) payer|reste (?:à|a) (?:charge|payer)|montant d[uû]|"
    r"(?:total|montant)(?: total)? (?:rembours[ée]|vers[ée])|total rembours|"
    r"amount due|total due|balance due|amount payable|total a pagar|importe a pagar|"
    r"totale da pagare|da pagare|zu zahlen|gesamtbetrag|rechnungsbetrag|endbetrag|"
    r"(?:à|a) payer|a pagar|(?:total|amount) (?:paid|reimbursed|refunded)",
    re.IGNORECASE,
)
_TOTAL_GOOD = re.compile(
    r"total ttc|montant ttc|montant total|prix total|total amount|importe total|"
    r"total factura|total de la factura|totale documento|totale fattura|totale preventivo|"
    r"grand total|total pay[ée]|prix pay[ée]|importo totale|total g[ée]n[ée]ral|"
    r"total du devis|total general|gesamtsumme|gesamtpreis|total (?:of|de|du|des)\b",
    re.IGNORECASE,
)
_TOTAL_WEAK = re.compile(
    r"\b(?:total|totale|totaal|summe|gesamt|insgesamt|importe|importo|montant|amount|somme|"
    r"soit|sum|betrag|prix|price|co[uû]t|cost|pay[ée]|paid|avanc[ée]|r[ée]gl[ée]|factur[ée]|"
    r"rembourse\w*|refund|reimburse\w*|pagado|pagato|pagu[ée]|bezahlt)\b",
    re.IGNORECASE,
)
_NOT_TOTAL = re.compile(
    r"\b(?:HT|H\.T\.|hors tax\w*|TVA|T\.V\.A\.|VAT|IVA|MwSt|USt|sous[- ]total|sub[- ]?total|"
    r"imponibile|base imponible|base remb\w*|dont|part (?:assurance maladie|AMO|SS|s[ée]cu\w*)|"
    r"taxes?|fare|tarif|acompte|remise|discount|deposit|caution|franchise|"
    r"participation forfaitaire|d[ée]j[àa] (?:pay|rembours)\w*|nettobetrag|netto)\b",
    re.IGNORECASE,
)
_TOTAL_AFTER = re.compile(
    r"^[ ,()]{0,3}(?:au total|in total|en tout|TTC|all included|tout compris|insgesamt|"
    r"en total|in totale|total(?! *:))\b",
    re.IGNORECASE,
)
_NUMBER_SIGN = re.compile(r"(?:\bn[.°º]?|\bno\.?|\bnr\.?|#)\s*$", re.IGNORECASE)
_EUROS_CONTEXT = re.compile(r"\ben euros?\b|\bin euros?\b|\bEUR\b|€", re.IGNORECASE)


class _Amount(NamedTuple):
    value: str
    currency: str | None
    score: int
    pos: int
    number: float


def _parse_number(raw: str) -> tuple[str, float] | None:
    raw = re.sub(r"[ '’]", "", raw)
    last = max(raw.rfind("."), raw.rfind(","))
    if last >= 0 and len(raw) - last - 1 in (1, 2):
        whole, cents = raw[:last], raw[last + 1 :]
    else:
        whole, cents = raw, ""
    whole = re.sub(r"[.,]", "", whole)
    if not whole.isdigit() or len(whole) > 9:
        return None
    value = f"{int(whole)}.{cents.ljust(2, '0')}"
    return value, float(value)


def _currency_of(token: str | None) -> str | None:
    if not token:
        return None
    return _CURRENCY_WORDS.get(token.lower()) or _CURRENCY_WORDS.get(token)


def _amount_candidates(text: str, kind: str, skip_quoted: bool) -> list[_Amount]:
    lines = _lines(text)
    found: list[_Amount] = []
    pending: tuple[int, int] | None = None  # (score, line index) of a total label without amount
    for index, line in enumerate(lines):
        content = line.text
        if len(content) > 2000 or (skip_quoted and content.lstrip().startswith(">")):
            continue
        line_found: list[_Amount] = []
        previous_end = 0
        for match in _AMOUNT.finditer(content):
            parsed = _parse_number(match.group("num"))
            if parsed is None:
                continue
            value, number = parsed
            currency = _currency_of(match.group("pre")) or _currency_of(match.group("post"))
            if currency is None and match.group("e") and (number >= 5 or "," in match.group(0)):
                currency = "EUR"  # SMS spelling "45e", "120,53e"
            start = match.start()
            if content[max(0, start - 2) : start].strip().endswith(("-", "−")):
                previous_end = match.end()
                continue  # a deduction ("Part Assurance Maladie -100,34 €")
            if _NUMBER_SIGN.search(content[max(0, start - 6) : start]):
                continue  # "n.º 88454" misread as "n.£ 88454": a number, not money
            # The label of an amount is the text since the previous amount: quantities and
            # rates in between ("TVA 20 % 213,17") do not cut it off.
            before = content[previous_end:start]
            after = content[match.end() : match.end() + 25]
            score = _label_score(before, after)
            # A bare number counts only on a total line, or just under a total label in a
            # document's layout, and with cents ("Total : 82,87").
            labelled = score >= 3 or (pending is not None and kind == "document")
            if currency is None and not (labelled and re.search(r"[.,]\d{2}$", match.group("num"))):
                continue
            previous_end = match.end()
            line_found.append(_Amount(value, currency, score, line.start + start, number))
        if line_found:
            found.extend(line_found)
            if pending and not any(a.score > 0 for a in line_found) and kind == "document":
                first = line_found[0]
                if index - pending[1] <= 4:
                    found.append(first._replace(score=pending[0] - 1))
            pending = None
            continue
        label = _label_score(content, "")
        # A total label whose amount the layout pushed a few lines down ("Prix total payé :").
        # A bare column header ("Montant") is not one: its line items follow.
        is_total = label >= 5 or (label >= 3 and re.search(r"\btota[a-z]*\b", content, re.I))
        if is_total and kind == "document" and len(content.strip()) < 80:
            pending = (label, index)
        elif pending and index - pending[1] > 4:
            pending = None
    return found


def _label_score(before: str, after: str) -> int:
    tail = before[-60:]
    if _NOT_TOTAL.search(tail):
        negative = _NOT_TOTAL.search(tail)
        strong = _TOTAL_STRONG.search(tail)
        # "Total HT ... 445,68" is not the total, but "TVA incluse, net à payer" is.
        if not (strong and negative and strong.start() > negative.start()):
            return -5
    if _TOTAL_STRONG.search(tail):
        return 6
    if _TOTAL_GOOD.search(tail):
        return 5
    if _TOTAL_AFTER.search(after):
        return 4
    if _TOTAL_WEAK.search(tail):
        return 3
    return 0


def _find_amount(text: str, kind: str) -> tuple[str, str] | None:
    # A reply's quoted lines restate an earlier message: they count only when nothing else does.
    candidates = _amount_candidates(text, kind, skip_quoted=kind != "document")
    if not candidates and kind != "document":
        candidates = _amount_candidates(text, kind, skip_quoted=False)
    if not candidates:
        return None
    positive = [a for a in candidates if a.score >= 0] or candidates
    best_score = max(a.score for a in positive)
    best = [a for a in positive if a.score == best_score]
    if best_score <= 0:
        marked = [a for a in best if a.currency]
        best = marked or best
        if kind == "document":
            # Without a total label, a document amount is trusted only when written with cents.
            best = [a for a in best if _has_cents(text, a.pos)]
            if not best:
                return None
    # Several equally good candidates: a total is at least each of its parts.
    chosen = max(best, key=lambda a: (a.number, -a.pos))
    currency = chosen.currency or _dominant_currency(candidates, text)
    if currency is None:
        return None
    return chosen.value, currency


def _has_cents(text: str, pos: int) -> bool:
    return bool(re.match(r"\D{0,5}\d[\d '’.,]*[.,]\d{2}(?!\d)", text[pos : pos + 30]))


def _dominant_currency(candidates: list[_Amount], text: str) -> str | None:
    counts = Counter(a.currency for a in candidates if a.currency)
    if counts:
        return counts.most_common(1)[0][0]
    if _EUROS_CONTEXT.search(text):
        return "EUR"
    return None


# --------------------------------------------------------------------------- dates

_MONTHS: dict[str, int] = {}
for _number, _names in enumerate(
    [
        "janvier janv jan january enero ene gennaio genn gen januar jänner jaenner",
        "février fevrier févr fevr fév fev feb february febrero febbraio febr februar",
        "mars mar march marzo märz maerz marz",
        "avril avr apr april abril aprile",
        "mai may mayo maggio mag",
        "juin jun june junio giugno giu juni",
        "juillet juil jul july julio luglio lug juli",
        "août aout aoû aug august agosto ago",
        "septembre sept sep september septiembre setiembre settembre set",
        "octobre oct october octubre ottobre ott oktober okt",
        "novembre nov november noviembre",
        "décembre decembre déc dec december diciembre dic dicembre dezember dez",
    ],
    start=1,
):
    for _name in _names.split():
        _MONTHS[_name] = _number
_LONG_MONTHS = {name: number for name, number in _MONTHS.items() if len(name) >= 5}


@functools.lru_cache(maxsize=1024)
def _month(word: str) -> int:
    """The month a word names, 0 if none; long names may carry one misread letter."""
    word = word.lower()
    if word in _MONTHS:
        return _MONTHS[word]
    if len(word) < 5:
        return 0
    for name, number in _LONG_MONTHS.items():
        if len(name) == len(word) and sum(a != b for a, b in zip(name, word, strict=True)) == 1:
            return number
    return 0


_NUMERIC_DATE = re.compile(
    r"(?<!\d)(?<!\d[./-])(?<![./-]\d)(\d{1,2})([./-]) ?(\d{1,2})\2 ?(\d{4}|\d{2})(?![./-]?\d)"
)
_SPACED_DATE = re.compile(r"(?<![\d/.-])(\d{2}) (\d{2}) ?((?:19|20)\d{2})(?!\d)")
_ISO_DATE = re.compile(r"(?<![\d/.-])((?:19|20)\d{2})([-/.])(\d{1,2})\2(\d{1,2})(?![\d/.-]?\d)")
# Any word may stand for the month: _month() reads it, forgiving one OCR error ("févricr").
_MONTH_WORD = r"[^\W\d_]{3,10}"
_WRITTEN_DATE = re.compile(
    rf"(?<!\d)(\d{{1,2}})(?:er|re|st|nd|rd|th|º|°|\.)? ?(?:de |of |d')?({_MONTH_WORD})\.?,? "
    rf"(?:de |del )?((?:19|20)\d{{2}})(?!\d)",
    re.IGNORECASE,
)
_WRITTEN_DATE_EN = re.compile(
    rf"(?<![\w])({_MONTH_WORD})\.? (\d{{1,2}})(?:st|nd|rd|th)?,? ((?:19|20)\d{{2}})(?!\d)",
    re.IGNORECASE,
)
_AIRLINE_DATE = re.compile(
    r"(?<![A-Za-z0-9])(\d{2})(JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)(\d{2}|\d{4})(?!\d)"
)

# "né le", "née :", "nata il"...; a bare "ne" is the French negation, so it needs "le" or ":".
_BIRTH = re.compile(
    r"\bn[ée]\(?e?\)?s?\s*(?:le|:|on|am)\b|\bnée?s?\b|naissance|naiss\.|birth|\bborn\b|"
    r"\bDOB\b|nacid[oa]|nacimiento|\bnat[oa]\b|nascita|geboren|geburt|\bgeb\.",
    re.IGNORECASE,
)
_EXPIRY = re.compile(
    r"expir|validit|valid until|valid thru|valable|scadenza|validez|g[üu]ltig|\b4b\b|"
    r"jusqu'au|until",
    re.IGNORECASE,
)
_ISSUE = re.compile(
    r"d[ée]livr|issu(?:e|ing)|[ée]mis|emisi[oó]n|rilascio|ausgestellt|ausstellung|\b4a\b|"
    r"[ée]dit[ée]",
    re.IGNORECASE,
)
_LABEL_KIND = re.compile(
    rf"(?P<birth>{_BIRTH.pattern})|(?P<expiry>{_EXPIRY.pattern})|(?P<issue>{_ISSUE.pattern})",
    re.IGNORECASE,
)
_DATE_LABEL = re.compile(
    r"\bdate\b|\bfecha\b|\bdata\b|\bdatum\b|d[ée]compte du|r[ée]servation|reserva|booking|"
    r"report|informe|rapport|\ble\s*$|\bdu\s*$|,\s*$|\baller\b|outbound|\bvol\b|flight|"
    r"\bd[ée]part\b|travel",
    re.IGNORECASE,
)
_SOFT_DISTRACTOR = re.compile(
    r"intervention|soins|\bcare\b|s[ée]jour|\bstay\b|entr[ée]e|sortie|admi(?:tted|ssion)|"
    r"arriv|llegada|arrivo|ankunft|salida|partenza|faits|offen[cs]e|depuis|since|desde|"
    r"survenu|\bin data\b|manifiesta|\bque el d[ií]a\b|hospitali|ordonnance|prescription|"
    r"[ée]ch[ée]ance|\bdue\b|vencimiento|f[äa]llig|examen|consultation|\bvisit",
    re.IGNORECASE,
)
_ID_DOCUMENT = re.compile(
    r"passeport|passport|carte nationale|identity card|d'identit[ée]|identidad|identit[àa]\b|"
    r"permis de conduire|driving licen|"
    r"documento nacional|carta di identit|pasaporte|reisepass|personalausweis|f[üu]hrerschein",
    re.IGNORECASE,
)
# European driving licence fields: 3 is the birth date (4a issue, 4b expiry).
_LICENCE_BIRTH_FIELD = re.compile(r"(?:^|\s)3\.\s*$")
_VEHICLE_REGISTRATION = re.compile(
    r"certificat d'immatriculation|carte grise|fahrzeugschein|permiso de circulaci",
    re.IGNORECASE,
)


class _Date(NamedTuple):
    value: date
    start: int
    end: int


def _dated(match: re.Match[str], year: int, month: int, day: int) -> list[_Date]:
    value = _make_date(year, month, day)
    return [_Date(value, match.start(), match.end())] if value else []


def _make_date(year: int, month: int, day: int) -> date | None:
    if not month:
        return None
    if year < 100:
        year += 2000 if year < 70 else 1900
    if not 1900 <= year <= 2099:
        return None
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _date_candidates(text: str) -> list[_Date]:
    found: list[_Date] = []
    for match in _NUMERIC_DATE.finditer(text):
        day, month = int(match.group(1)), int(match.group(3))
        if month > 12 >= day:
            day, month = month, day  # US order (03/25/2026)
        found.extend(_dated(match, int(match.group(4)), month, day))
    for match in _SPACED_DATE.finditer(text):
        found.extend(_dated(match, int(match.group(3)), int(match.group(2)), int(match.group(1))))
    for match in _ISO_DATE.finditer(text):
        found.extend(_dated(match, int(match.group(1)), int(match.group(3)), int(match.group(4))))
    for match in _WRITTEN_DATE.finditer(text):
        month = _month(match.group(2))
        found.extend(_dated(match, int(match.group(3)), month, int(match.group(1))))
    for match in _WRITTEN_DATE_EN.finditer(text):
        month = _month(match.group(1))
        found.extend(_dated(match, int(match.group(3)), month, int(match.group(2))))
    for match in _AIRLINE_DATE.finditer(text):
        month = _MONTHS[match.group(2).lower()]
        found.extend(_dated(match, int(match.group(3)), month, int(match.group(1))))
    found.sort(key=lambda d: (d.start, -d.end))
    # Overlapping matches ("12 mars 2026" also read as something else): keep the first, longest.
    kept: list[_Date] = []
    for candidate in found:
        if kept and candidate.start < kept[-1].end:
            continue
        kept.append(candidate)
    return kept


def _date_contexts(text: str, dates: list[_Date]) -> list[str]:
    """For each date, the label text that qualifies it: the words before it on its line, or
    the matching label of the line above when the line holds only values (ID card layout)."""
    lines = _lines(text)
    by_line: dict[int, list[int]] = {}
    for i, d in enumerate(dates):
        by_line.setdefault(_line_index(lines, d.start), []).append(i)
    contexts = [""] * len(dates)
    for line_no, indexes in by_line.items():
        line = lines[line_no]
        previous_end = line.start
        for order, i in enumerate(indexes):
            d = dates[i]
            before = text[previous_end : d.start]
            if order == 0:
                before = text[max(line.start, d.start - 80) : d.start]
            previous_end = d.end
            if _BIRTH.search(before) or _EXPIRY.search(before) or _ISSUE.search(before):
                contexts[i] = before
                continue
            if re.search(r"[^\W\d_]{2,}", before):
                contexts[i] = before
                continue
            above = _previous_label_line(lines, line_no)
            kinds = _label_kinds(above)
            if len(kinds) == len(indexes):
                contexts[i] = kinds[order]
            elif len(indexes) == 1:
                contexts[i] = above
            else:
                contexts[i] = before
    return contexts


def _previous_label_line(lines: list[_Line], line_no: int) -> str:
    for back in range(line_no - 1, max(-1, line_no - 3), -1):
        content = lines[back].text.strip()
        if content:
            return content
    return ""


def _label_kinds(label: str) -> list[str]:
    kinds: list[str] = []
    for match in _LABEL_KIND.finditer(label):
        kind = match.lastgroup or ""
        if not kinds or kinds[-1] != kind:
            kinds.append(kind)
    return [{"birth": "né", "expiry": "expiry", "issue": "date de délivrance"}[k] for k in kinds]


def _find_date(text: str, kind: str, header_lines: frozenset[int]) -> str | None:
    dates = _date_candidates(text)
    if not dates:
        return None
    contexts = _date_contexts(text, dates)
    lines = _lines(text)
    scored: list[tuple[int, int, date]] = []
    identity = kind == "document" and bool(_ID_DOCUMENT.search(text))
    for d, context in zip(dates, contexts, strict=True):
        tail = context[-50:]
        if _BIRTH.search(tail) or _EXPIRY.search(tail):
            continue
        if identity and _LICENCE_BIRTH_FIELD.search(tail):
            continue
        line_no = _line_index(lines, d.start)
        if line_no in header_lines:
            continue
        score = 0
        if kind == "document":
            if _ISSUE.search(tail):
                score += 4
            if _DATE_LABEL.search(tail):
                score += 3
            if _SOFT_DISTRACTOR.search(tail):
                score -= 3
        elif lines[line_no].text.lstrip().startswith(">"):
            score -= 1  # quoted text: an earlier message, less likely the subject of this one
        scored.append((score, d.start, d.value))
    if not scored:
        return None
    if kind == "document" and _VEHICLE_REGISTRATION.search(text):
        # Field I (date of this certificate) is the latest date printed on a carte grise.
        return max(scored, key=lambda s: s[2])[2].isoformat()
    if identity and max(s[0] for s in scored) <= 0:
        ordered = sorted(s[2] for s in scored)
        # Without readable labels: birth first, expiry last, issue in between.
        return ordered[len(ordered) // 2 if len(ordered) >= 3 else -1].isoformat()
    best = max(scored, key=lambda s: (s[0], -s[1]))
    return best[2].isoformat()


# --------------------------------------------------------------------------- person


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_UP = "A-ZÀ-ÖØ-Þ"
_LOW = "a-zß-öø-ÿ"
_CAP_WORD = rf"(?:[{_UP}]['’])?[{_UP}][{_LOW}]+(?:-[{_UP}][{_LOW}]+)*"
_UPPER_WORD = rf"(?:[{_UP}]['’])?[{_UP}]{{2,}}(?:-[{_UP}]{{2,}})*"
_PARTICLE = r"(?:de|du|des|da|di|del|della|van|von|der|den|le|la|dos|do|y)"
_NAME_WORD = rf"(?:{_CAP_WORD}|{_UPPER_WORD})"
_NAME = rf"{_NAME_WORD}(?:[ ](?:{_PARTICLE}[ ])?{_NAME_WORD}){{0,3}}"
_TITLE = (
    r"(?:M\.|Mme\.?|MME\.?|Mlle\.?|MLLE\.?|Mr\.?|MR\.?|Mrs\.?|MRS\.?|Ms\.?|MS\.?|Miss|Mister|"
    r"Madame|Monsieur|Mademoiselle|MADAME|MONSIEUR|Sr\.|Sra\.|Srta\.|D\./D[ñn]a\.|D[ñn]a\.|"
    r"Don|Doña|Señor|Señora|Sig\.(?:ra|na)?|Signor|Signora|Herr|Frau)"
)
_TITLED = re.compile(rf"(?<![\w.])({_TITLE})[ ]+\n?[ ]*({_NAME})")
# Words that end a name when they follow it, and words a name never contains.
_NOT_NAME_WORDS = _words(
    """
    agence agency rue avenue av boulevard bd allée allee place quai chemin route impasse cours
    lotissement résidence residence bâtiment batiment zone za zac zi za bp cedex né née nee
    date tél tel téléphone telephone phone fax mobile portable email mail courriel adresse
    address facture invoice factura fattura client cliente customer dossier contrat contract
    policy police patient paciente paziente réf ref référence reference merci thanks bonjour
    bonsoir hello dear madame monsieur cordialement regards service services secrétariat
    secretariat direction comptabilité comptabilite accounts account department departamento
    dipartimento ufficio amministrazione administration facturación facturacion facturation
    billing mistral assistance assurance assurances insurance insurer assureur mutuelle banque
    bank banco banca crédit credit caisse hôpital hopital hospital clinique clinic clinica
    clínica ospedale krankenhaus klinik pharmacie pharmacy farmacia apotheke garage taxi taxis
    hôtel hotel albergo dépannage depannage remorquage carrosserie auto autos location loc
    transport transports express centre center centro cabinet groupe group société societe
    company sarl sas sa ltd gmbh spa srl inc team équipe equipe support contact accueil info
    gestion sinistres sinistre claims claim réclamations reclamations relation clientèle
    clientele commercial commerciale serrurerie plomberie électricité electricite police
    gendarmerie commissariat mairie préfecture prefecture ministère ministere république
    republique française francaise france paris lyon marseille total montant amount iban bic
    rib siret tva vat objet subject attestation certificat certificate ordonnance devis quote
    docteur doctor dr pr professeur médecin medecin infirmier urgences emergency the and et
    of le la les des du un une pour votre notre vos nos mon ma mes your our my bonne journée
    journee soirée soiree semaine week merci salutations distinguées distinguees sincères
    sinceres respectueuses atentamente saludos saluti grüße grusse gruss cordiali distinti
    freundlichen best kind many sent envoyé envoye iphone android samsung mobile galaxy
    passager passenger pasajero passeggero titulaire titular nom name surname prénom prenom
    prénoms prenoms given names vol flight gate porte seat siège siege classe class boarding
    embarquement carte card billet ticket e-billet reçu receipt départ depart arrivée arrivee
    from to de à voir see note notes stop oui non ok yes no saint sainte st ste
    mme mlle mr mrs ms miss sr sra srta sig herr frau famille family familia famiglia familie
    """
)
_ROLE_AFTER = re.compile(
    r"^\s*,?\s*(?:\(|-|–)?\s*(?:g[ée]rant|directeur|directrice|responsable|pr[ée]sident|"
    r"docteur|dr\b|m[ée]decin|gardien|gendarme|brigadier|lieutenant|capitaine|adjudant|"
    r"officier|agent|commandant|major|chef|infirmi|secr[ée]taire|comptable|conseill|"
    r"charg[ée]|gestionnaire|praticien|chirurgien|pharmacien|avocat|ma[iî]tre|notaire|"
    r"consultant|officer|manager|director|nurse|physician|surgeon|funcionario|instructor|"
    r"ispettore|carabiniere|polizist|arzt|[ée]tablissement|employ)",
    re.IGNORECASE,
)
_PROVIDER_BEFORE = re.compile(
    r"(?:\bdr\.?|docteur|doctor|dott\.?(?:ssa)?|pr\.|professeur|prof\.|ma[iî]tre|me\.|nous,|"
    r"officer|agent|instructor|gardien|gendarme|sign[ée] par|signed by|médecin|medecin|"
    r"ordonnance|prescripteur|praticien|chez le|m[ée]decin traitant|suivi par|suivie par|"
    r"interlocut\w*|gestionnaire|conseill[eè]re?|technicien\w*|chauffeur|d[ée]panneur|"
    r"driver|mechanic|contact|r[ée]dacteur|v[ée]rificateur|expert)\s*:?\s*$",
    re.IGNORECASE,
)
# "3 rue Denis Papin", "avenue Jean Jaurès": people's names in addresses.
_PLACE_BEFORE = re.compile(
    r"\b(?:rue|avenue|av\.|bd|boulevard|all[ée]e|place|quai|chemin|impasse|route|square|cours|"
    r"lyc[ée]e|coll[èe]ge|[ée]cole|h[ôo]pital|clinique|centre|stade|gare|a[ée]roport|pont|"
    r"via|viale|piazza|calle|avenida|paseo|plaza|stra(?:ß|ss)e|platz|street|road|lane)"
    r"\s+(?:de la |de l'|du |des |de |d')?$",
    re.IGNORECASE,
)
_GREETING_BEFORE = re.compile(
    r"(?:bonjour|bonsoir|cher|ch[èe]re|chers|dear|hello|hi|estimad[oa]s?|querid[oa]|"
    r"gentile|egregio|sehr geehrte[rn]?|liebe[r]?|hallo|guten tag|buongiorno|buenos d[ií]as)"
    r"[\s,]*$",
    re.IGNORECASE,
)
_BENEFICIARY_LABEL = re.compile(
    r"(?:b[ée]n[ée]ficiaire|assur[ée]\(?e?\)?|adh[ée]rent\(?e?\)?|patient\(?e?\)?|"
    r"patient name|paciente|paziente|patientin|client\(?e?\)?|cliente|customer|kunde|"
    r"passager|passag[èe]re|passenger(?: name)?|pasajero|passeggero|fahrgast|voyageur|"
    r"traveller|traveler|titulaire(?: du compte)?|titular|intestatario|kontoinhaber|"
    r"au nom de|a nombre de|victim[e]?|v[ií]ctima|vittima|geschädigte[r]?|plaignant\(?e?\)?|"
    r"plainte de|comparece|denunciante|insured|asegurad[oa](?:/a)?|assicurat[oa]|"
    r"versicherte[r]?|beneficiary|bill to|nom du patient|nom de l'assur[ée]|"
    r"h[ée]bergement de|pour le compte de|on behalf of|au profit de|"
    r"nom(?: et pr[ée]noms?| complet| de l'assur[ée]e?| du b[ée]n[ée]ficiaire)?(?= ?:)|"
    r"name(?= ?:)|full name|nombre(?: y apellidos| completo)?(?= ?:)|"
    r"nome(?: e cognome)?(?= ?:)|cognome e nome|vor- und nachname|assur[ée]e?(?= ?:))"
    r"[ \t]*(?:[:/][ \t]*)?",
    re.IGNORECASE,
)
_SELF_INTRO = re.compile(
    r"(?:^|[.!?,;:\n]\s*|"
    r"\b(?:bonjour|bonsoir|bjr|bsr|slt|salut|coucou|hello|hi|hola|ciao|hallo)\s*,?\s*)"
    r"(?:je suis|je m'appel+e?|je m’appel+e?|mon nom est|je me nomme|moi c'est|c'est|c’est|"
    r"cest|c[ée]|c|s[ée]|"
    r"ici|this is|my name is|i am|i'm|"
    r"soy|me llamo|mi chiamo|sono|ich bin|mein name ist|ich heiße|ich heisse)\s+",
    re.IGNORECASE,
)
_CLOSING_WORDS = (
    r"(?:cordialement|cordialemen|cdlt|cdt|bien (?:à vous|a vous)|bàv|bav|sinc[èe]rement|"
    r"salutations(?: distingu[ée]es)?|"
    r"sinc[èe]res salutations|meilleures salutations|bonne (?:journ[ée]e|soir[ée]e|fin de)|"
    r"merci(?: d'avance| par avance| beaucoup| de votre (?:compr[ée]hension|retour|aide))?|"
    r"dans l'attente[^\n]*|restant à votre disposition|à bientôt|bien amicalement|amicalement|"
    r"regards|kind regards|best regards|best|warm regards|sincerely|yours (?:sincerely|faithfully)|"
    r"thanks(?: in advance)?|thank you|many thanks|cheers|saludos(?: cordiales)?|un saludo|"
    r"atentamente|gracias|cordiali saluti|distinti saluti|saluti|grazie|"
    r"mit freundlichen gr[üu](?:ß|ss)en|freundliche gr[üu](?:ß|ss)e|viele gr[üu](?:ß|ss)e|"
    r"beste gr[üu](?:ß|ss)e|danke|vielen dank)"
)
_CLOSING = re.compile(rf"{_CLOSING_WORDS}\W*$", re.IGNORECASE)
_CLOSING_INLINE = re.compile(rf"\b{_CLOSING_WORDS}[,.!]*\s+(.{{3,60}})$", re.IGNORECASE)
_CONTACT_LINE = re.compile(
    r"^\W*(?:t[ée]l|tel|phone|portable|mobile|gsm|fax|e-?mail|mail|courriel|adresse|address|"
    r"n°|no\.?|contrat|contract|policy|dossier|r[ée]f|iban|\+?\d|www\.|https?:|envoy[ée] de|"
    r"sent from)",
    re.IGNORECASE,
)
# Bounded repeats: unbounded ones rescan a long run of capitals from every word without a "/"
# (quadratic: minutes on a 200 000-character document); a printed name never has 6 words.
_AIRLINE_NAME = re.compile(
    rf"(?<![\w/])([{_UP}]{{1,40}}(?:[ '-][{_UP}]{{1,40}}){{0,5}})/"
    rf"([{_UP}]{{1,40}}(?:[ '-][{_UP}]{{1,40}}){{0,5}}?)"
    r"(?:\s+(?:MR|MRS|MS|MISS|MSTR|DR|CHD|INF))?(?![\w/])"
)
_ID_SURNAME = re.compile(
    r"(?:^|\n)[^\n]{0,20}?(?:\bnom\b|surname|apell?idos|cognome|\bname\b(?!s)|nachname)"
    r"[^\n]{0,30}\n+\W*([^\n]{2,60})",
    re.IGNORECASE,
)
_ID_GIVEN = re.compile(
    r"(?:^|\n)[^\n]{0,20}?(?:pr[ée]noms?|given names?|nombre|\bnome\b|vorname[n]?)"
    r"[^\n]{0,30}\n+\W*([^\n]{2,60})",
    re.IGNORECASE,
)
_LICENCE_FIELDS = re.compile(r"(?:^|\n)\W*1\.\s*([^\n]{2,40})\n\W*2\.\s*([^\n]{2,40})")
_FORM_NAME = re.compile(
    rf"\b(?:Nom|NOM|Name|NAME|Nachname|Surname|Apellidos?|Cognome)\s*:\s*({_NAME})"
    rf"[^\n]{{0,40}}?(?:\n[^\n]{{0,40}}?)?\b(?:Pr[ée]noms?|PR[ÉE]NOMS?|Vorname|First name|"
    rf"Given names?|Nombre|Nome)\s*:\s*({_NAME})"
)
_OWNER = re.compile(
    r"(?:^|\n)\W*(?:C\.1\b\W*)?([^\n]{3,60})\n+[^\n]{0,10}EST LE PROPRI[ÉE]TAIRE|"
    r"(?:^|\n)\W*C\.1\b[ :]*([^\n]{3,60})",
    re.IGNORECASE,
)
_MRZ = re.compile(
    r"(?:^|\n)(?:P|I[DA]?|A|C)[<A-Z]([A-Z]{3})?([A-Z]+(?:<[A-Z]+)*)<<([A-Z]+(?:<[A-Z]+)*)"
)
_BORN_AFTER = re.compile(
    r"^\s*,?\s*(?:-|–)?\s*(?:n[ée]e?\b|né\(e\)|nat[oa]\b|nacid[oa]|born|geb\.|geboren|"
    r"demeurant|domicili[ée]|residente|wohnhaft|de nacionalidad|of )",
    re.IGNORECASE,
)
_SOUSSIGNE = re.compile(
    rf"(?:soussign[ée]e?|undersigned|sottoscritt[oa]|abajo firmante|unterzeichnete[r]?)"
    rf"\s*,?\s*(?:{_TITLE}\s+)?({_NAME})",
    re.IGNORECASE,
)
_SENDER_CLEAN = re.compile(r"[\"'“”«»()\[\]]|\s+via\s.*$", re.IGNORECASE)
_TITLE_PREFIX = re.compile(rf"^\s*{_TITLE}\s+")
_COMMON_FIRST_NAMES = _words(
    """
    adam adrien agathe agnès alain alexandre alexandra alexis alice aline amandine amélie anaïs
    andré andrea angélique anne annie antoine arnaud arthur audrey aurélie aurélien axel
    baptiste benjamin benoît bernard bertrand brigitte bruno camille carine carla carlos
    carmen caroline catherine cécile cédric céline charles charlotte chloé christian
    christine christophe claire clara claude claudine clément coralie corinne cyril damien
    daniel danielle david delphine denis didier dominique dylan éléonore élise élodie elodie
    emma emmanuel emmanuelle éric eric estelle étienne eva fabien fabienne fabrice fanny
    fatima florence florian françois francois françoise franck frédéric frederic gabriel
    gaëlle gaëtan gaetan georges gérard gerard gilles grégory gregory guillaume guy hélène
    helene henri hervé herve hugo hugues inès ines irène isabelle jacques jacqueline james
    jean jeanne jérôme jerome joël johanna jonathan jordan josé joseph josiane julie julien
    juliette justine karim karine kévin kevin laetitia laura laurence laurent léa lea léo leo
    loïc loic louis louise luc lucas lucie lucile ludovic madeleine maëlle maelle manon marc
    marcel margaux marguerite maria marie marine marion martin martine mathieu mathilde
    maxime mehdi mélanie melanie michel michèle micheline mickaël monique morgane mohamed
    nadia nadine natacha nathalie nicolas nicole noémie noël océane oceane olivier pascal
    pascale patrice patricia patrick paul pauline philippe pierre quentin rachel raphaël
    raymond régis rémi remi renée richard robert roger romain rose sabine samuel sandra
    sandrine sarah sébastien sebastien serge simon simone sofia solène sophie stéphane
    stephane stéphanie steve suzanne sylvain sylvie tatiana théo theo thierry thomas timothée
    tristan valentin valérie valerie vanessa véronique veronique victor victoria vincent
    virginie xavier yann yannick yasmine yves yvette yvonne zoé zoe youssef yassine
    ahmed ali amina rachid samir sami leila sofiane nabil malik karima farid hassan
    john michael william richard joseph charles christopher matthew anthony mark donald
    steven andrew joshua kenneth kevin brian george timothy ronald edward jason jeffrey ryan
    jacob gary nicholas eric stephen larry justin scott brandon benjamin frank gregory
    raymond samuel patrick alexander jack dennis jerry tyler aaron henry douglas peter adam
    nathan zachary walter kyle harold carl jeremy keith roger gerald ethan arthur terry
    christian sean lawrence austin joe noah jesse albert bryan billy bruce willie jordan
    dylan alan ralph gabriel roy juan wayne eugene logan randy louis russell vincent philip
    bobby johnny bradley mary patricia jennifer linda elizabeth barbara susan jessica sarah
    karen nancy lisa betty margaret sandra ashley kimberly emily donna michelle dorothy carol
    amanda melissa deborah stephanie rebecca sharon laura cynthia kathleen amy shirley angela
    helen anna brenda pamela nicole emma samantha katherine christine debra rachel catherine
    carolyn janet ruth maria heather diane virginia julie joyce victoria olivia kelly
    christina lauren joan evelyn judith megan cheryl andrea hannah martha jacqueline frances
    gloria ann teresa kathryn sara janice jean alice madison doris abigail julia judy grace
    denise amber marilyn beverly danielle theresa sophia marie diana brittany natalie isabella
    charlotte rose alexis kayla daniel james david oliver harry george jack
    antonio manuel josé francisco javier jesús alejandro miguel rafael pedro ángel pablo
    fernando luis sergio jorge alberto álvaro diego adrián raúl enrique ramón vicente andrés
    joaquín santiago víctor eduardo roberto jaime ignacio alfonso salvador marcos mario
    lucía paula laura marta andrea elena sara ana cristina isabel pilar dolores teresa rosa
    marina nuria silvia irene patricia raquel lorena mercedes rocío beatriz encarnación
    giuseppe giovanni francesco luca marco alessandro matteo lorenzo andrea stefano paolo
    roberto davide simone federico riccardo fabio massimo giorgio salvatore vincenzo pietro
    giulia francesca chiara sara valentina alessia martina elisa federica silvia paola
    giorgia anna laura roberta monica elena barbara claudia alessandra serena
    thomas michael andreas stefan christian daniel peter markus frank klaus jürgen wolfgang
    uwe tobias sebastian florian jan tim lukas jonas felix maximilian niklas paul leon
    sabine petra claudia susanne julia anna lena laura katharina sandra andrea nicole
    stefanie melanie monika ursula birgit lea hannah sophie
    """
)


_PARTICLE_WORDS = _words("de du des da di del della van von der den le la dos do y")


def _clean_name(raw: str) -> str:
    name = re.sub(r"\s+", " ", raw).strip(" ,.;:|-–_*")
    name = _TITLE_PREFIX.sub("", name)
    return name


def _trim_name(name: str) -> str | None:
    """Drop trailing words that are not part of a name ("HUBERT Pierre Agence Rennes")."""
    words = _TITLE_PREFIX.sub("", name).split(" ")
    kept: list[str] = []
    for word in words:
        lowered = word.lower()
        if lowered.strip(".,:;") in _NOT_NAME_WORDS and lowered not in _PARTICLE_WORDS:
            break
        kept.append(word)
    # "Grégory RENARD Sans carte": after "Given SURNAME", a capitalised word starts new text.
    if len(kept) > 2 and _is_cap(kept[0]):
        for i in range(1, len(kept) - 1):
            if kept[i].isupper() and _is_cap(kept[i + 1]):
                kept = kept[: i + 1]
                break
    while kept and re.fullmatch(_PARTICLE, kept[-1]):
        kept.pop()
    if not kept:
        return None
    return " ".join(kept)


def _is_cap(word: str) -> bool:
    return bool(re.fullmatch(_CAP_WORD, word))


def _looks_like_person(name: str, min_words: int = 2) -> bool:
    words = name.split(" ")
    real = [w for w in words if not re.fullmatch(_PARTICLE, w)]
    if not min_words <= len(real) <= 5:
        return False
    # "Lefèvre Dépannage-Remorquage", "Service facturation": an organisation or a role.
    pieces = [p for w in real for p in re.split(r"[-'’]", w) if len(p) > 1]
    if any(p.lower() in _NOT_NAME_WORDS for p in pieces if p.lower() not in _PARTICLE_WORDS):
        return False
    if any(re.search(r"\d|[@/&]", w) for w in words):
        return False
    return all(re.fullmatch(_NAME_WORD, w) or re.fullmatch(_PARTICLE, w) for w in words)


def _name_at(text: str, min_words: int = 2) -> str | None:
    """The person name that starts ``text`` (after an optional title), if any."""
    match = re.match(rf"\s*(?:{_TITLE}[ ]+)?({_NAME})", text)
    if not match:
        return None
    name = _trim_name(match.group(1))
    if not name:
        return None
    if _looks_like_person(name, min_words):
        return name
    return None


def _find_person(text: str, context: EntityContext, header_lines: frozenset[int]) -> str | None:
    # Quoted lines of a reply are someone else's message (often the assistance company's).
    quoted = context.kind != "document"
    lines = _letters_view(text).split("\n")
    visible = "\n".join(
        "" if i in header_lines or (quoted and line.lstrip().startswith(">")) else line
        for i, line in enumerate(lines)
    )
    if context.kind == "email" and context.sender_name:
        sender = _sender_person(context.sender_name)
        if sender:
            return sender
    if context.kind == "document":
        rules = (
            _structured_name,
            _labelled_name,
            _soussigne_name,
            _born_name,
            _titled_name,
            _closing_name,
        )
    else:
        rules = (
            _labelled_name,
            _titled_name,
            _self_introduced_name,
            _soussigne_name,
            _signature_name,
            _trailing_name,
        )
    for rule in rules:
        name = rule(visible)
        if name:
            return name
    return _nlp_person(visible)


# The reverse OCR confusion inside words: "Ju1ien" is Julien, "B0YER" is BOYER.
_DIGIT_IN_WORD = re.compile(r"(?<=[^\W\d_])[015](?=[^\W\d_])")


_LOWER_OF_DIGIT = {"0": "o", "1": "l", "5": "s"}
_UPPER_OF_DIGIT = {"0": "O", "1": "I", "5": "S"}


def _letters_view(text: str) -> str:
    def letter(match: re.Match[str]) -> str:
        upper = text[match.start() - 1].isupper()
        return (_UPPER_OF_DIGIT if upper else _LOWER_OF_DIGIT)[match.group(0)]

    return _DIGIT_IN_WORD.sub(letter, text)


def _sender_person(sender: str) -> str | None:
    cleaned = _SENDER_CLEAN.sub("", sender).strip()
    if "," in cleaned:
        return None  # "Dupont, Jean" or a list: not the name as written in the item
    cleaned = _TITLE_PREFIX.sub("", cleaned)
    cleaned = re.sub(r"\s+", " ", cleaned)
    if _looks_like_person(cleaned):
        return cleaned
    return None


def _structured_name(text: str) -> str | None:
    """Names split across the fields of a form: boarding pass, constat, carte grise, ID."""
    return (
        _airline_name(text)
        or _form_name(text)
        or _registration_holder(text)
        or _identity_name(text)
        or _mrz_name(text)
    )


def _airline_name(text: str) -> str | None:
    match = _AIRLINE_NAME.search(text)
    if not match:
        return None
    surname_words = match.group(1).split(" ")
    while surname_words and surname_words[0].lower() in _NOT_NAME_WORDS:
        surname_words.pop(0)  # a label printed on the same line ("NAME BERNARD/LUCIE")
    surname, given = " ".join(surname_words), match.group(2).strip()
    if len(surname) >= 2 and len(given) >= 2:
        return f"{surname}/{given}"
    return None


def _form_name(text: str) -> str | None:
    match = _FORM_NAME.search(text)  # the first pair: driver A on a constat
    if not match:
        return None
    surname, given = _trim_name(match.group(1)), _trim_name(match.group(2))
    return f"{given} {surname}" if surname and given else None


def _registration_holder(text: str) -> str | None:
    owner = _OWNER.search(text)
    if owner:
        name = _name_at((owner.group(1) or owner.group(2)).strip())
        if name:
            return name
    if _VEHICLE_REGISTRATION.search(text):
        # Field C.1 lost in the OCR order: the holder is the only line that reads as a name.
        for line in text.split("\n"):
            value = line.strip()
            if value.isupper() and _name_at(value) == value:
                return value
    return None


def _identity_name(text: str) -> str | None:
    if not _ID_DOCUMENT.search(text):
        return None
    surname_match = _ID_SURNAME.search(text)
    given_match = _ID_GIVEN.search(text)
    surname = _id_value(surname_match.group(1)) if surname_match else None
    given = _id_value(given_match.group(1)) if given_match else None
    if given_match and not surname:
        # Misread surname label: the value just above the given-name label.
        above = text[: given_match.start()].rstrip().rsplit("\n", 1)[-1]
        surname = _id_value(above) if above.strip().isupper() else None
    if surname and not given:
        # Misread given-name label: the MRZ spells it after the surname ("LAMBERT<<SARAH").
        mrz_given = re.search(re.escape(_strip_accents(surname)) + r"\s*<<\s*([A-Z]+)", text)
        given = mrz_given.group(1) if mrz_given else None
    if surname and given:
        return f"{given} {surname}"
    licence = _LICENCE_FIELDS.search(text)
    if licence:
        surname, given = _id_value(licence.group(1)), _id_value(licence.group(2))
        if surname and given:
            return f"{given} {surname}"
    return None


def _mrz_name(text: str) -> str | None:
    # Last resort: the machine-readable zone has no accents but is rarely misread.
    match = _MRZ.search(text)
    if not match:
        return None
    surname = match.group(2).replace("<", " ").strip()
    given = match.group(3).replace("<", " ").strip()
    if len(surname) >= 2 and len(given) >= 2:
        return f"{given} {surname}"
    return None


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def _id_value(raw: str) -> str | None:
    match = re.search(rf"({_UPPER_WORD}(?:[ ,]+{_UPPER_WORD}){{0,2}}|{_CAP_WORD})", raw)
    if not match:
        return None
    value = match.group(1).replace(",", " ")
    if value.lower() in _NOT_NAME_WORDS:
        return None
    return re.sub(r"\s+", " ", value)


def _labelled_name(text: str) -> str | None:
    for match in _BENEFICIARY_LABEL.finditer(text):
        start = match.start()
        if start > 0 and (text[start - 1].isalpha()):
            continue
        after = text[match.end() : match.end() + 400]
        same_line = after.split("\n", 1)[0]
        # Same line: "Patient : Mme Sarah Breton"; in a layout, columns are 3+ spaces apart.
        if same_line.strip(" :|"):
            segment = re.split(r" {3,}| \| ", same_line.strip(), maxsplit=1)[0]
            name = _name_at(segment)
            if name:
                return name
            if not re.match(r" ?(?: {2,}|\t|\s*\|)", same_line):
                continue  # running text after the label, not a form field
        for following in after.split("\n")[1:4]:
            for segment in re.split(r" {3,}|\s\|\s?", following.strip()):
                titled = _TITLED.search(segment)
                if titled:
                    name = _trim_name(titled.group(2))
                    if name and _looks_like_person(name, 1):
                        return name
            stripped = following.strip()
            if stripped and not re.search(r"\d", stripped):
                name = _name_at(re.split(r" {3,}", stripped)[0])
                if name:
                    return name
    return None


def _not_the_beneficiary(before: str) -> bool:
    """The words before a name make it a doctor, an officer, the addressee or a street."""
    return bool(
        _PROVIDER_BEFORE.search(before)
        or _GREETING_BEFORE.search(before)
        or _PLACE_BEFORE.search(before)
    )


def _titled_name(text: str) -> str | None:
    for match in _TITLED.finditer(text):
        before = text[max(0, match.start() - 40) : match.start()]
        if _not_the_beneficiary(before):
            continue
        name = _trim_name(match.group(2))
        if not name:
            continue
        if not _looks_like_person(name, 1):
            continue
        if len(name.split(" ")) == 1 and len(name) < 3:
            continue
        if _ROLE_AFTER.match(text[match.end() : match.end() + 40]):
            continue
        return name
    return None


def _soussigne_name(text: str) -> str | None:
    for match in _SOUSSIGNE.finditer(text):
        between = text[match.start() : match.start(1)]
        if re.search(r"docteur|doctor|\bdr\b", between, re.IGNORECASE):
            continue
        if _ROLE_AFTER.match(text[match.end() : match.end() + 40]):
            continue
        name = _trim_name(match.group(1))
        if name and _looks_like_person(name):
            return name
    return None


def _born_name(text: str) -> str | None:
    for match in re.finditer(_NAME, text):
        after = text[match.end() : match.end() + 30]
        if not _BORN_AFTER.match(after):
            continue
        before = text[max(0, match.start() - 40) : match.start()]
        if _not_the_beneficiary(before):
            continue
        name = _trim_name(match.group(0))
        if name and _looks_like_person(name):
            return name
    return None


def _self_introduced_name(text: str) -> str | None:
    for match in _SELF_INTRO.finditer(text):
        name = _name_at(text[match.end() : match.end() + 80])
        if name:
            return name
    return None


def _signature_name(text: str) -> str | None:
    return _closing_name(text) or _last_line_name([line.strip() for line in text.split("\n")])


def _closing_name(text: str) -> str | None:
    lines = [line.strip() for line in text.split("\n")]
    for i, line in enumerate(lines):
        if not line or len(line) > 160:
            continue
        inline = _CLOSING_INLINE.search(line)  # "Cordialement, Jean Dupont"
        if inline:
            name = _name_at(inline.group(1))
            if name and name == inline.group(1).strip(" ,."):
                return name
        if not _CLOSING.search(line):
            continue
        for following in lines[i + 1 : i + 4]:
            if not following:
                continue
            name = _name_at(following)
            if name and len(following) < 60:
                return name
            if not _CONTACT_LINE.match(following):
                break
    return None


def _last_line_name(lines: list[str]) -> str | None:
    """A letter or mail signed without a closing formula: the name above the contact lines."""
    tail = [line for line in lines if line]
    for line in reversed(tail[-4:]):
        if _CONTACT_LINE.match(line) or re.search(r"\d{4,}|@", line):
            continue
        if len(line) <= 50:
            name = _name_at(line)
            if name and name == line.strip(" ,."):
                return name
        return None
    return None


def _trailing_name(text: str) -> str | None:
    """SMS signed at the end: "... AS2026001234. Rémi Nguyen" or "... - Sébastien Durand"."""
    stripped = text.strip()
    match = re.search(rf"(?:^|[.!?;:)\-–]\s*|\s-\s)({_NAME})\W*$", stripped)
    if not match:
        return None
    name = _trim_name(match.group(1))
    if not name or not _looks_like_person(name):
        return None
    # Without a signature layout, trust the shape only with a known first name or a SURNAME.
    known = name.split(" ")[0].lower() in _COMMON_FIRST_NAMES
    if not known and not any(w.isupper() and len(w) > 1 for w in name.split(" ")):
        return None
    return name


@functools.lru_cache(maxsize=1)
def load_nlp() -> Language:
    """The French spaCy pipeline, loaded once per process with only what NER needs."""
    import spacy  # heavy import (about a second): only the last-resort fallback needs it

    return spacy.load(
        "fr_core_news_sm",
        exclude=["tagger", "parser", "morphologizer", "attribute_ruler", "lemmatizer", "senter"],
    )


_CAP_BIGRAM = re.compile(rf"{_NAME_WORD} {_NAME_WORD}")


def _nlp_person(text: str) -> str | None:
    sample = text[:_MAX_NLP_CHARS]
    if not _CAP_BIGRAM.search(sample):
        return None  # nothing spaCy could call a full name: skip the model entirely
    try:
        nlp = load_nlp()
    except (OSError, ImportError):
        return None  # model not installed: the rules above still work, only the fallback is lost
    doc = nlp(sample)
    for ent in doc.ents:
        if ent.label_ != "PER":
            continue
        before = sample[max(0, ent.start_char - 40) : ent.start_char]
        if _not_the_beneficiary(before):
            continue
        name = _trim_name(_clean_name(ent.text))
        if not name or not _looks_like_person(name):
            continue
        first = name.split(" ")[0].lower()
        last = name.split(" ")[-1].lower()
        if first not in _COMMON_FIRST_NAMES and last not in _COMMON_FIRST_NAMES:
            continue
        if _ROLE_AFTER.match(sample[ent.end_char : ent.end_char + 40]):
            continue
        return name
    return None


# --------------------------------------------------------------------------- EDIFACT


def _edi_segments(text: str) -> Iterator[list[list[str]]]:
    component, element, release, terminator = ":", "+", "?", "'"
    body = text.lstrip()
    if body.startswith("UNA") and len(body) >= 9:
        component, element, release, terminator = body[3], body[4], body[6], body[8]
        body = body[9:]
    segment: list[list[str]] = [[""]]
    i = 0
    while i < len(body):
        c = body[i]
        if c == release and i + 1 < len(body):
            segment[-1][-1] += body[i + 1]
            i += 2
            continue
        if c == terminator:
            yield segment
            segment = [[""]]
        elif c == element:
            segment.append([""])
        elif c == component:
            segment[-1].append("")
        elif c not in "\r\n":
            segment[-1][-1] += c
        i += 1
    if segment != [[""]]:
        yield segment


def _edi_entities(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    totals: dict[str, str] = {}
    currency: str | None = None
    issued: str | None = None
    references: list[str] = []
    for segment in _edi_segments(text):
        tag = segment[0][0].strip()
        parts = segment[1:]
        if tag == "MOA" and parts and len(parts[0]) >= 2:
            totals.setdefault(parts[0][0], parts[0][1])
            if len(parts[0]) >= 3 and parts[0][2] and currency is None:
                currency = parts[0][2]
        elif tag == "CUX" and parts and len(parts[0]) >= 2 and parts[0][0] in ("2", ""):
            currency = currency or parts[0][1]
        elif tag == "DTM" and parts and len(parts[0]) >= 2 and parts[0][0] in ("137", "3"):
            value = _edi_date(parts[0][1], parts[0][2] if len(parts[0]) > 2 else "102")
            if value and (issued is None or parts[0][0] == "137"):
                issued = value
        elif tag == "RFF" and parts and len(parts[0]) >= 2:
            references.append(parts[0][1])
        elif tag == "COM" and parts and len(parts[0]) >= 2 and parts[0][1] == "TE":
            phone = _parse_phone(parts[0][0])
            if phone and "phone" not in found:
                found["phone"] = phone
    dossiers = find_references(*references) or find_references(text)
    if dossiers:
        found["dossier_ref"] = dossiers[0]
    contract = _find_contract(" ".join(references))
    if contract:
        found["contract_no"] = contract
    # 77 = invoice amount to pay, 86 = message total, 39 = invoice total, 9 = amount due.
    for qualifier in ("77", "9", "86", "39", "128"):
        if qualifier in totals:
            parsed = _parse_number(totals[qualifier])
            if parsed and currency:
                found["amount_total"], found["currency"] = parsed[0], currency.upper()
            break
    if issued:
        found["date"] = issued
    return dict(sorted(found.items()))


def _edi_date(value: str, qualifier: str) -> str | None:
    digits = re.sub(r"\D", "", value)
    if qualifier in ("102", "203", "204") and len(digits) >= 8:
        parsed = _make_date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    elif qualifier == "101" and len(digits) >= 6:
        parsed = _make_date(int(digits[:2]), int(digits[2:4]), int(digits[4:6]))
    else:
        return None
    return parsed.isoformat() if parsed else None
