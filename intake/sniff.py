"""True file type from the bytes (python-magic), compared with what the sender declared."""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass

import magic

# Types that are never opened: they are stored and shown to a gestionnaire with the reason.
REFUSED_TYPES = frozenset(
    {
        "application/x-executable",
        "application/x-pie-executable",
        "application/x-sharedlib",
        "application/x-dosexec",
        "application/x-msdownload",
        "application/x-mach-binary",
        "application/vnd.microsoft.portable-executable",
        "application/x-elf",
        "text/x-shellscript",
        "text/x-python",
        "text/x-perl",
        "application/javascript",
        "text/javascript",
        "application/x-bat",
        "application/hta",
    }
)

# Names under which the same content is commonly declared; none of them is a mismatch.
_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "application/x-pdf": "application/pdf",
    "image/tif": "image/tiff",
    "application/x-zip-compressed": "application/zip",
    "message/rfc822": "message/rfc822",
}
_GENERIC = frozenset({"", "application/octet-stream", "application/unknown", "binary/octet-stream"})
#: An RFC 5322 header line: what a message starts with whatever header comes first.
_HEADER_LINE = re.compile(rb"[!-9;-~]+:[ \t]")


@dataclass(frozen=True)
class Sniffed:
    mime: str
    mismatch: str | None

    @property
    def refused(self) -> bool:
        return self.mime in REFUSED_TYPES


def _canonical(mime: str) -> str:
    mime = mime.split(";", 1)[0].strip().lower()
    return _ALIASES.get(mime, mime)


def sniff(content: bytes, filename: str, declared_type: str) -> Sniffed:
    """Sniff the bytes and say, in a sentence, how they differ from the declaration."""
    mime = _canonical(magic.from_buffer(content[:65536], mime=True) or "application/octet-stream")
    declared = _canonical(declared_type)
    if mime == "text/plain" and filename.lower().endswith((".sh", ".bash")):
        mime = "text/x-shellscript"
    # libmagic knows a message only by some first headers (From:, Date:...), not Subject:.
    if (
        mime == "text/plain"
        and (declared == "message/rfc822" or filename.lower().endswith(".eml"))
        and _HEADER_LINE.match(content[:1000])
    ):
        mime = "message/rfc822"
    claims = []
    if declared not in _GENERIC and not declared.startswith("text/"):
        claims.append(("declared type", declared))
    by_extension, _ = mimetypes.guess_type(filename, strict=False)
    if by_extension:
        claims.append(
            (f"extension {filename.rsplit('.', 1)[-1].lower()!r}", _canonical(by_extension))
        )
    wrong = [f"{label} says {claim}" for label, claim in claims if not _agrees(claim, mime)]
    mismatch = f"content is {mime} but " + " and ".join(wrong) if wrong else None
    return Sniffed(mime=mime, mismatch=mismatch)


def _agrees(claim: str, sniffed: str) -> bool:
    if claim == sniffed:
        return True
    # Plain-text families are told apart poorly by magic; only their top type matters.
    if claim.startswith("text/") and sniffed.startswith("text/"):
        return sniffed not in REFUSED_TYPES
    # libmagic cannot tell a macro-enabled Office package (docm, xlsm) from a plain one.
    if "macroenabled" in claim and (sniffed == "application/zip" or "openxml" in sniffed):
        return True
    return claim in _GENERIC
