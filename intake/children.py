"""Files found inside a document (archive members, attachments of attached messages)."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import PurePosixPath

#: Document.filename is a String(255).
MAX_NAME = 255


@dataclass(frozen=True)
class ChildFile:
    """A file to become a child document; ``status`` other than pending is already decided
    (an encrypted member is recorded as such and never read)."""

    filename: str
    declared_type: str
    content: bytes
    status: str = "pending"
    reason: str | None = None


def child_name(raw: str, fallback: str) -> str:
    """The base name only: ``../../etc/passwd`` and ``C:\\x\\y.pdf`` must never become paths."""
    base = PurePosixPath(raw.replace("\\", "/")).name
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    if base in ("", ".", ".."):
        return fallback
    if len(base) > MAX_NAME:
        _, dot, extension = base.rpartition(".")
        keep = f"{dot}{extension}" if dot and len(extension) <= 10 else ""
        base = base[: MAX_NAME - len(keep)] + keep
    return base


def guessed_type(filename: str) -> str:
    return mimetypes.guess_type(filename, strict=False)[0] or ""
