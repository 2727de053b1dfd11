"""Open attached messages (.eml, .msg): headers and body as text, attachments as children."""

from __future__ import annotations

import html
import re
import warnings
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

from intake.children import ChildFile, child_name
from intake.macros import OLE_MAGIC

SUMMARY_HEADERS = ("From", "To", "Cc", "Date", "Subject")
_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]+>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class OpenedMessage:
    text: str
    attachments: tuple[ChildFile, ...]
    problem: str | None = None  # set when the message was only partly understood


def open_eml(content: bytes) -> OpenedMessage:
    """Never raises: a message the parser cannot make sense of is kept as its raw text."""
    try:
        message = BytesParser(policy=policy.default).parsebytes(content)
        assert isinstance(message, EmailMessage)
        summary = [(name, _header(message, name)) for name in SUMMARY_HEADERS]
        body = _eml_body(message)
        attachments = tuple(
            _eml_attachment(part, n) for n, part in enumerate(message.iter_attachments(), 1)
        )
    except Exception as exc:
        raw = content.decode("utf-8", errors="replace")
        return OpenedMessage(raw, (), f"message cannot be parsed ({exc}); raw text kept"[:500])
    return OpenedMessage(_join(summary, body), attachments)


def _header(message: Message, name: str) -> str:
    try:
        return str(message.get(name, "") or "")
    except Exception:
        # A header policy.default cannot parse (a broken address list) is kept as it came.
        return next((str(v) for k, v in message.raw_items() if k.lower() == name.lower()), "")


def _eml_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        text = str(part.get_content())
    except Exception:
        payload = part.get_payload(decode=True)
        text = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else ""
    return _html_to_text(text) if part.get_content_subtype() == "html" else text


def _eml_attachment(part: EmailMessage, n: int) -> ChildFile:
    declared = part.get_content_type()
    if declared == "message/rfc822" or part.is_multipart():
        inner = part.get_payload(0) if declared == "message/rfc822" else part
        assert isinstance(inner, Message)
        name = child_name(part.get_filename() or "", f"message-{n}.eml")
        return ChildFile(name, "message/rfc822", inner.as_bytes())
    name = child_name(part.get_filename() or "", f"attachment-{n}")
    payload = part.get_payload(decode=True)
    return ChildFile(name, declared, payload if isinstance(payload, bytes) else b"")


def open_msg(content: bytes) -> OpenedMessage:
    """An Outlook .msg through extract-msg; never raises."""
    if not content.startswith(OLE_MAGIC):
        # extract-msg takes any other bytes for a file name.
        return OpenedMessage("", (), "Outlook message is not an OLE file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # extract-msg's dependencies warn on import
            import extract_msg

        msg: Any = extract_msg.openMsg(content, strict=False)
    except Exception as exc:
        return OpenedMessage("", (), f"Outlook message cannot be opened: {exc}"[:500])
    try:
        fields = {
            "From": msg.sender,
            "To": msg.to,
            "Cc": msg.cc,
            "Date": msg.date,
            "Subject": msg.subject,
        }
        summary = [(name, _field(fields, name)) for name in SUMMARY_HEADERS]
        body = _msg_body(msg)
        attachments = tuple(
            _msg_attachment(att, n) for n, att in enumerate(msg.attachments or (), 1)
        )
        return OpenedMessage(_join(summary, body), attachments)
    except Exception as exc:
        return OpenedMessage("", (), f"Outlook message cannot be read: {exc}"[:500])
    finally:
        msg.close()


def _field(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    return "" if value is None else str(value)


def _msg_body(msg: Any) -> str:
    if msg.body:
        return str(msg.body)
    markup = msg.htmlBody
    if isinstance(markup, bytes):
        return _html_to_text(markup.decode("utf-8", errors="replace"))
    return ""


def _msg_attachment(att: Any, n: int) -> ChildFile:
    try:
        data = att.data
        if isinstance(data, bytes):
            name = child_name(att.longFilename or att.shortFilename or "", f"attachment-{n}")
            return ChildFile(name, att.mimetype or "", data)
        if hasattr(data, "exportBytes"):  # an Outlook message attached to this one
            name = child_name(att.longFilename or att.displayName or "", f"message-{n}")
            if not name.lower().endswith(".msg"):
                name += ".msg"
            return ChildFile(name, "application/vnd.ms-outlook", data.exportBytes())
        problem = f"attachment of type {att.type!r} has no content to extract"
    except Exception as exc:
        problem = f"attachment cannot be extracted: {exc}"
    # Recorded all the same, with the reason (nothing silently dropped).
    return ChildFile(f"attachment-{n}", "", b"", "unreadable", problem[:500])


def _html_to_text(markup: str) -> str:
    text = html.unescape(_TAG.sub(" ", markup))
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def _join(summary: list[tuple[str, str]], body: str) -> str:
    lines = [f"{name}: {value}" for name, value in summary if value.strip()]
    return "\n".join(lines) + "\n\n" + body.strip()
