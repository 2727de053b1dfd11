"""Real files built by the tests: PDFs, zips, Outlook messages, macro-enabled Office packages."""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from extract_msg.ole_writer import OleWriter
from PIL import Image, ImageDraw, ImageFont
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from intake.reading import OcrPool, Reading, ReadingLimits, read_document

DOCS = Path(__file__).parent.parent / "data" / "documents"
#: Found by Pillow in the system font folders (XDG_DATA_DIRS), as fonts-dejavu installs it.
FONT = "DejaVuSans.ttf"
STATUSES = {"ok", "partial", "encrypted", "refused", "too_large", "timeout", "unreadable"}


def pdf(pages: list[str], encrypt: object = None) -> bytes:
    buffer = io.BytesIO()
    document = canvas.Canvas(buffer, pagesize=A4, encrypt=encrypt)
    for text in pages:
        if text:
            document.setFont("Helvetica", 14)
            document.drawString(72, 720, text)
        document.showPage()
    document.save()
    return buffer.getvalue()


def have_font() -> bool:
    try:
        ImageFont.truetype(FONT, 12)
    except OSError:
        return False
    return True


def text_image(lines: list[str], size: int = 56) -> Image.Image:
    """Black text on white, big enough for Tesseract; needs the DejaVu font (callers skip)."""
    font = ImageFont.truetype(FONT, size)
    image = Image.new("L", (1800, 200 + len(lines) * size * 2), 255)
    draw = ImageDraw.Draw(image)
    for n, line in enumerate(lines):
        draw.text((100, 100 + n * size * 2), line, fill=0, font=font)
    return image


def zip_of(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def zeros_zip(megabytes: int, name: str = "zeros.bin") -> bytes:
    """``megabytes`` of zeros deflated at level 9: about a thousandth of that on disk."""
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open(name, "w") as member,
    ):
        block = bytes(1024 * 1024)
        for _ in range(megabytes):
            member.write(block)
    return buffer.getvalue()


def _headers(content: bytearray) -> list[tuple[int, bool, bytes]]:
    """(offset, is central, name) of each local and central header of a zip."""
    found = []
    for signature, central in ((b"PK\x03\x04", False), (b"PK\x01\x02", True)):
        at = content.find(signature)
        while at >= 0:
            length_at, name_at = (at + 28, at + 46) if central else (at + 26, at + 30)
            (length,) = struct.unpack_from("<H", content, length_at)
            found.append((at, central, bytes(content[name_at : name_at + length])))
            at = content.find(signature, at + 4)
    return found


def mark_encrypted(archive: bytes, name: str) -> bytes:
    """Set the 'encrypted' flag bit of one member, as ZipCrypto tools do (zipfile cannot write
    encrypted members, and reading stops at the flag: the data itself is never looked at)."""
    content = bytearray(archive)
    for at, central, member in _headers(content):
        if member == name.encode():
            flags_at = at + (8 if central else 6)
            (flags,) = struct.unpack_from("<H", content, flags_at)
            struct.pack_into("<H", content, flags_at, flags | 0x1)
    return bytes(content)


def declare_size(archive: bytes, name: str, size: int) -> bytes:
    """Make one member's headers lie about its unpacked size."""
    content = bytearray(archive)
    for at, central, member in _headers(content):
        if member == name.encode():
            struct.pack_into("<I", content, at + (24 if central else 22), size)
    return bytes(content)


def ole(streams: dict[str, bytes | None]) -> bytes:
    """An OLE compound file (the container of .msg, .doc, vbaProject.bin); ``None`` makes a
    storage. Written with extract-msg's own OLE writer."""
    writer = OleWriter()
    for path, data in streams.items():
        if data is None:
            writer.addEntry(path, storage=True)
        else:
            writer.addEntry(path, data)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-le")


def outlook_msg(subject: str, sender: str, body: str, attachments: dict[str, bytes]) -> bytes:
    """A minimal Outlook message per [MS-OXMSG]: string properties as __substg1.0_ streams,
    one storage per attachment with its name, data and 'by value' attach method."""
    count = len(attachments)
    streams: dict[str, bytes | None] = {
        "__substg1.0_001A001F": _utf16("IPM.Note"),
        "__substg1.0_0037001F": _utf16(subject),
        "__substg1.0_0C1A001F": _utf16(sender),
        "__substg1.0_1000001F": _utf16(body),
        # Top-level property stream header: reserved, next ids, counts, reserved.
        "__properties_version1.0": struct.pack("<8xIIII8x", 0, count, 0, count),
        "__nameid_version1.0": None,
        "__nameid_version1.0/__substg1.0_00020102": b"",
        "__nameid_version1.0/__substg1.0_00030102": b"",
        "__nameid_version1.0/__substg1.0_00040102": b"",
    }
    for n, (name, data) in enumerate(attachments.items()):
        storage = f"__attach_version1.0_#{n:08X}"
        streams[storage] = None
        streams[f"{storage}/__substg1.0_3707001F"] = _utf16(name)
        streams[f"{storage}/__substg1.0_37010102"] = data
        # PidTagAttachMethod = 1 (by value), then the size entry of the binary data.
        streams[f"{storage}/__properties_version1.0"] = (
            b"\x00" * 8
            + struct.pack("<IIi4x", 0x37050003, 0x06, 1)
            + struct.pack("<IIII", 0x37010102, 0x06, len(data), 0)
        )
    return ole(streams)


def vba_project() -> bytes:
    """The OLE part that carries a VBA project: a VBA storage with its dir stream and a
    PROJECT stream, the structure olevba looks for."""
    return ole(
        {
            "PROJECT": b'ID="{00000000-0000-0000-0000-000000000000}"\r\n'
            b'Document=ThisDocument/&H00000000\r\nName="Project"\r\n',
            "VBA": None,
            "VBA/dir": b"\x01" + b"\x00" * 10,
            "VBA/_VBA_PROJECT": b"\xcc\x61\xff\xff\x00\x00\x00",
            "VBA/ThisDocument": b"\x00" * 16,
        }
    )


_CONTENT_TYPES = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    b'<Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/>'
    b'<Default Extension="xml" ContentType="application/xml"/>'
    b"</Types>"
)


def office_package(main_part: str, with_macros: bool) -> bytes:
    """A docm/xlsm-shaped OOXML package (``main_part`` e.g. word/document.xml)."""
    folder = main_part.split("/", 1)[0]
    members = {"[Content_Types].xml": _CONTENT_TYPES, main_part: b'<?xml version="1.0"?><x/>'}
    if with_macros:
        members[f"{folder}/vbaProject.bin"] = vba_project()
    return zip_of(members)


def email_with(subject: str, body: str, attachments: dict[str, tuple[str, bytes]]) -> bytes:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = "Jean Dupont <jean.dupont@example.org>"
    message["To"] = "sinistres@guichet.localhost"
    message.set_content(body)
    for name, (mime, content) in attachments.items():
        if mime == "message/rfc822":
            inner = BytesParser(policy=policy.default).parsebytes(content)
            message.add_attachment(inner, filename=name)
        else:
            maintype, subtype = mime.split("/")
            message.add_attachment(content, maintype=maintype, subtype=subtype, filename=name)
    return message.as_bytes()


@dataclass(frozen=True)
class Read:
    depth: int
    filename: str
    reading: Reading


async def read_tree(
    content: bytes,
    filename: str,
    declared_type: str,
    pool: OcrPool,
    limits: ReadingLimits,
    depth: int = 0,
) -> list[Read]:
    """Read a file and, as the pipeline does, every file found inside it, depth first."""
    reading = await read_document(content, filename, declared_type, pool, limits, depth)
    found = [Read(depth, filename, reading)]
    for child in reading.children:
        if child.status == "pending":
            found += await read_tree(
                child.content, child.filename, child.declared_type, pool, limits, depth + 1
            )
        else:
            decided = Reading("", None, child.status, child.reason, "", "none", None)
            found.append(Read(depth + 1, child.filename, decided))
    return found
