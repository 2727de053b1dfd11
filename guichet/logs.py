"""Logging set-up of the command line, with personal data masked in every log line."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Libraries that log whole messages at DEBUG (SQL parameters, SMTP DATA lines, IMAP traffic,
#: PDF content) or request details at INFO. A pattern cannot mask a message body, so even
#: ``-v`` keeps them at this level.
QUIET_LOGGERS = {
    "aiosqlite": logging.INFO,  # "executing ... (parameters)": every row written, bodies too
    "sqlalchemy.engine": logging.WARNING,  # statements with their parameters
    "mail.log": logging.INFO,  # aiosmtpd: "DATA readline" is each line of each message
    "imapclient": logging.INFO,  # the IMAP conversation, fetched messages included
    "pdfminer": logging.INFO,  # the objects and strings of every PDF read
    "twilio.http_client": logging.WARNING,  # each REST request: URL, query, headers
}

# Addresses and numbers also come URL-encoded, in the access log's query strings ("%40" for
# "@", "%2B" for "+", "+" or "%20" for a space).
_EMAIL = re.compile(r"(?<![\w.+-])([\w.+-])[\w.+-]*(@|%40)((?:[\w-]+\.)+[\w-]{2,})")
# Upper case only, as IBANs are written: lower case would take ordinary words for one.
_IBAN = re.compile(r"\b([A-Z]{2}\d{2})(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_SEP = r"(?:[ .+-]|%20)?"
_PHONE = re.compile(
    r"(?<![\w*%])(?:"
    # International: +33 6 12 34 56 78, +33 (0)6…, +447700900123, 0033 6…
    rf"(?:\+|%2[bB]|00)\d{{1,3}}{_SEP}(?:\(0\){_SEP})?\d(?:{_SEP}\d){{6,13}}"
    # French national: 06 12 34 56 78, 06.12.34.56.78, 0612345678
    rf"|0[1-9](?:{_SEP}\d{{2}}){{4}}"
    r")(?![\w*])"
)
# Card, account and social-security numbers: 11 digits or more, bare or grouped by spaces. A
# number followed by a unit is a measure (bytes free, a duration), which logs must keep.
_DIGITS = re.compile(
    r"(?<![\w*%])\d(?:(?: |%20)?\d){10,}(?![\w*])(?!\s?(?:bytes?|[kKMGT]?B|ms|s|seconds?)\b)"
)
# SQLAlchemy's error text repeats the statement's parameters: a whole row, body included.
_SQL_PARAMETERS = re.compile(
    r"\[parameters: .*?\](?=\s*(?:\(Background on this error|$))", re.DOTALL
)
# PostgreSQL's own error detail quotes the values too: the refused row of a NOT NULL or CHECK
# violation, the key of a unique or foreign-key one. Each to the end of its line.
_PG_ROW = re.compile(r"(Failing row contains )\(.*\)")
_PG_KEY = re.compile(r"(Key \([^)\n]*\)=)\([^\n]*\)")


def _keep_last_two(prefix: str, digits: str) -> str:
    return prefix + "*" * max(len(digits) - 2, 1) + digits[-2:]


def _only_digits(text: str) -> str:
    return re.sub(r"\D", "", re.sub(r"%2[0bB]", "", text))


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = _only_digits(text)
    if text.startswith("+") or text[:3].lower() == "%2b":
        return _keep_last_two("+" + digits[:2], digits[2:])
    return _keep_last_two(digits[:2], digits[2:])


def _digits(match: re.Match[str]) -> str:
    return _keep_last_two("", _only_digits(match.group(0)))


def _iban(match: re.Match[str]) -> str:
    compact = match.group(0).replace(" ", "")
    return f"{match.group(1)}***{compact[-2:]}"


_RULES: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    (_SQL_PARAMETERS, "[parameters: hidden]"),
    (_PG_ROW, r"\1(hidden)"),
    (_PG_KEY, r"\1(hidden)"),
    # Emails first: a local part may hold digits that the later rules would half-mask.
    (_EMAIL, r"\1***\2\3"),
    (_IBAN, _iban),
    (_PHONE, _phone),
    (_DIGITS, _digits),
)


def redact(text: str) -> str:
    """``text`` with email addresses, phone numbers, IBANs and long digit runs masked.

    What is kept lets a line still be followed: an email's first letter and domain
    (``j***@example.fr``), a number's first and last two digits, an IBAN's country.
    """
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Masks personal data in a record before any handler writes it.

    The message is formatted with its arguments first (an address is as often an argument as
    part of the text), then stored back whole; the traceback of ``log.exception`` too, since
    exception messages quote what failed to be stored.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "guichet_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:
            # A bad format string: the handler reports it, with the record as it is.
            return True
        record.msg = redact(message)
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        setattr(record, "guichet_redacted", True)  # noqa: B010 - not a LogRecord attribute
        return True


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Put the filter on every handler of ``logger`` (the root by default), once each.

    On the handlers, not on the logger: a logger's filters never see the records that
    propagate to it from the loggers below, which is where nearly all records come from.
    """
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def configure_logging(verbose: bool) -> None:
    """The command line's logging: INFO (DEBUG with ``-v``) to stderr, personal data masked."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=FORMAT)
    install_redaction()
    if not verbose:
        # Alembic narrates every start-up check at INFO; only a real migration is news.
        logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
        # procrastinate logs every job's start and end at INFO: thousands of lines an hour.
        logging.getLogger("procrastinate").setLevel(logging.WARNING)
    for name, level in QUIET_LOGGERS.items():
        logger = logging.getLogger(name)
        if logger.level < level:
            logger.setLevel(level)
