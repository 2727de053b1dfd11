"""Builds the hostile corpus next to this script: small files that attack intake's budgets.

Run from the project root: ``python tests/data/hostile/make.py``. The output is committed;
the script says how each file was made. Every ``*.eml`` goes through email intake, every other
file arrives as the one attachment of a contact (see tests/intake/test_hostile_corpus.py).
"""

from __future__ import annotations

import base64
import binascii
import io
import struct
import zipfile
import zlib
from email.message import EmailMessage
from pathlib import Path

from PIL import Image
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

HERE = Path(__file__).parent


def _pdf(pages: list[str], encrypt: str | None = None) -> bytes:
    buffer = io.BytesIO()
    document = canvas.Canvas(buffer, pagesize=A4, encrypt=encrypt)
    for text in pages:
        if text:
            document.drawString(72, 720, text)
        document.showPage()
    document.save()
    return buffer.getvalue()


def malformed_pdf() -> bytes:
    # A real header and objects, a cross-reference table pointing nowhere, a stream whose
    # declared length lies and a FlateDecode stream that is not deflate at all.
    return (
        b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
        b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 99999999 >> endobj\n"
        b"3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 -5 1e308] /Contents 4 0 R >>\n"
        b"4 0 obj << /Length 999999 /Filter /FlateDecode >> stream\n" + b"\x00\xff" * 200 + b"\n"
        b"xref\n0 5\n0000000000 65535 f \n0000009999 00000 n \n"
        b"trailer << /Root 1 0 R /Size 5 /Prev 123456789 >>\nstartxref\n987654\n%%EOF\n"
    )


def zip_bomb() -> bytes:
    # 300 MB of zeros in one member: about 300 KB on disk, a ratio near 1000.
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("factures.pdf", "w", force_zip64=True) as member,
    ):
        for _ in range(300):
            member.write(bytes(1024 * 1024))
    return buffer.getvalue()


def png_bomb() -> bytes:
    # 40 000 x 40 000 pixels (1.6 Gpx, 200 MB of 1-bit rows) in a few hundred kilobytes, built
    # chunk by chunk so that making it never holds the image either.
    width = height = 40_000
    row = b"\x00" + bytes(width // 8)  # filter byte, then white-free zero pixels
    squeezer = zlib.compressobj(9)
    data = b"".join(squeezer.compress(row) for _ in range(height)) + squeezer.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = binascii.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    image = Image.new("RGB", (800, 600), (200, 120, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    whole = buffer.getvalue()
    return whole[: len(whole) // 2]


def _mail(subject: str, body: str, key: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Jean Dupont <jean.dupont@example.org>"
    msg["To"] = "sinistres@guichet.example"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{key}@hostile.example>"
    msg["Date"] = "Mon, 02 Nov 2026 10:00:00 +0100"
    msg.set_content(body)
    return msg


def uuencoded_mail() -> bytes:
    # Old clients put uuencoded files in the body, or in a part with x-uuencode encoding.
    encoded = b"".join(
        binascii.b2a_uu(chunk)
        for chunk in (lambda d: [d[i : i + 45] for i in range(0, len(d), 45)])(
            b"Facture F-77 montant 88,00 EUR\n" * 5
        )
    )
    uu = b"begin 644 facture.txt\n" + encoded + b"`\nend\n"
    head = (
        b"From: Jean Dupont <jean.dupont@example.org>\r\nTo: sinistres@guichet.example\r\n"
        b"Subject: uuencode\r\nMessage-ID: <uu@hostile.example>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="u"\r\n\r\n'
    )
    return (
        head + b"--u\r\nContent-Type: text/plain\r\n\r\nVoici la facture:\r\n" + uu + b"\r\n"
        b"--u\r\nContent-Type: application/octet-stream; name=f.txt\r\n"
        b"Content-Transfer-Encoding: x-uuencode\r\n\r\n" + uu + b"\r\n"
        b"--u\r\nContent-Type: application/octet-stream; name=broken.txt\r\n"
        b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 broken.txt\n!!!!\n" + b"\r\n"
        b"--u--\r\n"
    )


def _tnef_attribute(level: int, attribute: int, data: bytes) -> bytes:
    checksum = struct.pack("<H", sum(data) & 0xFFFF)
    return struct.pack("<BII", level, attribute, len(data)) + data + checksum


def tnef_mail() -> bytes:
    tnef = struct.pack("<IH", 0x223E9F78, 1)
    tnef += _tnef_attribute(1, 0x00089006, struct.pack("<I", 0x00010000))  # TNEF version
    tnef += _tnef_attribute(1, 0x00069007, struct.pack("<II", 1252, 0))  # OEM code page
    tnef += _tnef_attribute(1, 0x00078008, b"IPM.Microsoft Mail.Note\x00")
    tnef += _tnef_attribute(1, 0x0002800C, b"Bonjour, dossier AS-2026-000001, facture.\x00")
    tnef += _tnef_attribute(2, 0x00069002, b"\x01\x00" + b"\xff" * 4 + bytes(8))
    tnef += _tnef_attribute(2, 0x00018010, b"../../facture.txt\x00")
    tnef += _tnef_attribute(2, 0x0006800F, b"Facture F-2 montant 120,00 EUR\n")
    msg = _mail("TNEF", "Voir winmail.dat", "tnef")
    msg.add_attachment(tnef, maintype="application", subtype="ms-tnef", filename="winmail.dat")
    # The same, cut short: tnefparse must fail on it and the file stay as it came.
    msg.add_attachment(tnef[:40], maintype="application", subtype="ms-tnef", filename="cut.dat")
    return msg.as_bytes()


def broken_charsets_mail() -> bytes:
    head = (
        b"From: =?x-unknown?q?Jean_=E9?= <jean.dupont@example.org>\r\n"
        b"To: sinistres@guichet.example\r\n"
        b"Subject: =?utf-8?b?w6k=?= \xe9t\xe9 =?utf-8?q?=FF=FE?=\r\n"
        b"Message-ID: <charsets@hostile.example>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="c"\r\n\r\n'
    )
    return (
        head + b"--c\r\nContent-Type: text/plain; charset=x-klingon\r\n\r\nD\xe9j\xe0\r\n"
        b"--c\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nlatin-1 \xe9\xe8\r\n"
        b"--c\r\nContent-Type: text/plain; charset=utf-16\r\n\r\n\xff\xfe\x00\xd8\r\n"
        b'--c\r\nContent-Type: text/html; charset="=?utf-8?q?x?="\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!notbase64===\r\n"
        b"--c\r\nContent-Type: text/plain; name*=bogus''%FF%FE.txt\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''%C3%28%A0.txt\r\n\r\nx\r\n"
        b"--c--\r\n"
    )


def many_parts_mail(parts: int = 3000) -> bytes:
    head = (
        b"From: jean.dupont@example.org\r\nTo: sinistres@guichet.example\r\n"
        b"Subject: 3000 parts\r\nMessage-ID: <parts@hostile.example>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n'
    )
    body = b"".join(
        b"--p\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=p%d.txt"
        b"\r\n\r\nligne %d\r\n" % (n, n)
        for n in range(parts)
    )
    return head + body + b"--p--\r\n"


def path_traversal_mail() -> bytes:
    msg = _mail("Noms de fichiers", "Pièces jointes.", "traversal")
    for name in ("../../etc/passwd", "/etc/shadow", "..\\..\\boot.ini", "..", "a/../../b.pdf"):
        msg.add_attachment(b"root:x:0:0\n", maintype="text", subtype="plain", filename=name)
    return msg.as_bytes()


def main() -> None:
    files = {
        "malformed.pdf": malformed_pdf(),
        "encrypted.pdf": _pdf(["Dossier AS-2026-000001, releve"], encrypt="motdepasse"),
        "blank-500-pages.pdf": _pdf([""] * 500),
        "zip-bomb.zip": zip_bomb(),
        "png-bomb.png": png_bomb(),
        "truncated.jpg": truncated_jpeg(),
        "uuencode.eml": uuencoded_mail(),
        "tnef.eml": tnef_mail(),
        "broken-charsets.eml": broken_charsets_mail(),
        "3000-parts.eml": many_parts_mail(),
        "path-traversal.eml": path_traversal_mail(),
        "base64-garbage.eml": _mail("x", "y", "b64")
        .as_bytes()
        .replace(b"Content-Transfer-Encoding: 7bit", b"Content-Transfer-Encoding: base64")
        + base64.b64encode(b"\x00" * 30)[:-3],
    }
    for name, content in files.items():
        (HERE / name).write_bytes(content)
    total = sum(len(c) for c in files.values())
    assert total < 3 * 1024 * 1024, total
    print(f"{len(files)} files, {total} bytes")


if __name__ == "__main__":
    main()
