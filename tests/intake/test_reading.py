"""Reading documents: text layers, OCR of scans and photos, files inside files, macros."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytesseract
import pytest
from PIL import Image
from pillow_heif import register_heif_opener
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from intake.deskew import skew_angle
from intake.reading import OcrPool, ReadingLimits, read_document
from tests.intake.files import (
    FONT,
    email_with,
    have_font,
    office_package,
    ole,
    outlook_msg,
    read_tree,
    text_image,
    vba_project,
    zip_of,
)

DOCS = Path(__file__).parent.parent / "data" / "documents"
LIMITS = ReadingLimits(ocr_page_timeout=60)


@pytest.fixture(scope="module")
def pool() -> Iterator[OcrPool]:
    pool = OcrPool(2)
    yield pool
    pool.shutdown()


def _pdf(pages: list[str], encrypt: str | None = None) -> bytes:
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4, encrypt=encrypt)
    for text in pages:
        if text:
            pdf.setFont("Helvetica", 14)
            pdf.drawString(72, 720, text)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


async def test_text_layer_pdf(pool: OcrPool) -> None:
    content = (DOCS / "quote-text-layer.pdf").read_bytes()
    reading = await read_document(content, "devis.pdf", "application/pdf", pool, LIMITS)
    assert (reading.status, reading.sniffed_type, reading.text_source) == (
        "ok",
        "application/pdf",
        "text_layer",
    )
    assert reading.pages == 1
    assert "1 279,02" in reading.text or "1279,02" in reading.text.replace(" ", "")
    assert reading.type_mismatch is None


async def test_scanned_pdf_is_ocrd(pool: OcrPool) -> None:
    content = (DOCS / "quote-scanned.pdf").read_bytes()
    reading = await read_document(content, "scan.pdf", "application/pdf", pool, LIMITS)
    assert (reading.status, reading.text_source) == ("ok", "ocr")
    assert "817,51" in reading.text


async def test_phone_photo_and_fax_tiff_are_ocrd(pool: OcrPool) -> None:
    photo = await read_document(
        (DOCS / "statement-photo.jpg").read_bytes(), "IMG_0042.jpg", "image/jpeg", pool, LIMITS
    )
    assert (photo.status, photo.sniffed_type, photo.text_source) == ("ok", "image/jpeg", "ocr")
    assert "58,88" in photo.text
    fax = await read_document(
        (DOCS / "rib-fax.tif").read_bytes(), "rib.tif", "image/tiff", pool, LIMITS
    )
    assert fax.status == "ok"
    assert "FR76 3002 7298" in fax.text


async def test_mixed_pdf_is_read_page_by_page(pool: OcrPool) -> None:
    with Image.open(DOCS / "statement-photo.jpg") as photo:
        scan = photo.copy()
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    pdf.drawString(72, 720, "Page de garde : demande de remboursement du dossier AS-2026-000001")
    pdf.showPage()
    pdf.drawInlineImage(scan, 0, 0, width=A4[0], height=A4[1])
    pdf.showPage()
    pdf.save()
    reading = await read_document(buffer.getvalue(), "envoi.pdf", "application/pdf", pool, LIMITS)
    assert (reading.status, reading.text_source, reading.pages) == ("ok", "mixed", 2)
    assert "AS-2026-000001" in reading.text
    assert "58,88" in reading.text


async def test_page_cap_reads_the_first_pages_and_says_so(pool: OcrPool) -> None:
    content = _pdf([f"Page numero {n} du document de test" for n in range(1, 6)])
    reading = await read_document(
        content, "long.pdf", "application/pdf", pool, ReadingLimits(max_pages=2)
    )
    assert reading.status == "partial"
    assert reading.pages == 5
    assert "Page numero 2" in reading.text and "Page numero 3" not in reading.text
    assert reading.reason == "only the first 2 of 5 pages were read"


async def test_encrypted_pdf(pool: OcrPool) -> None:
    content = _pdf(["secret"], encrypt="motdepasse")
    reading = await read_document(content, "releve.pdf", "application/pdf", pool, LIMITS)
    assert reading.status == "encrypted"
    assert reading.reason == "PDF is encrypted with a password"


async def test_pdf_with_empty_user_password_is_opened(pool: OcrPool) -> None:
    from reportlab.lib import pdfencrypt

    encryption = pdfencrypt.StandardEncryption("", ownerPassword="owner", canPrint=1)
    content = _pdf(["Facture acquittee numero 4242 pour le dossier"], encrypt=encryption)
    reading = await read_document(content, "facture.pdf", "application/pdf", pool, LIMITS)
    assert reading.status == "ok"
    assert "4242" in reading.text


async def test_truncated_pdf_is_unreadable_not_an_exception(pool: OcrPool) -> None:
    content = (DOCS / "quote-text-layer.pdf").read_bytes()[:300]
    reading = await read_document(content, "devis.pdf", "application/pdf", pool, LIMITS)
    assert reading.status == "unreadable"
    assert reading.reason and "PDF cannot be opened" in reading.reason


async def test_extension_lies_about_the_type(pool: OcrPool) -> None:
    content = (DOCS / "statement-photo.jpg").read_bytes()
    reading = await read_document(content, "decompte.pdf", "application/pdf", pool, LIMITS)
    assert reading.sniffed_type == "image/jpeg"
    assert reading.type_mismatch == (
        "content is image/jpeg but declared type says application/pdf"
        " and extension 'pdf' says application/pdf"
    )
    assert reading.status == "ok"  # read as what it really is
    assert "58,88" in reading.text


async def test_executable_is_refused_unopened(pool: OcrPool) -> None:
    elf = b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + b"\x02\x00\x3e\x00" + b"\x00" * 200
    reading = await read_document(elf, "facture.pdf", "application/pdf", pool, LIMITS)
    assert reading.status == "refused"
    assert reading.reason is not None and "refused type" in reading.reason
    assert reading.text == ""


async def test_shell_script_is_refused(pool: OcrPool) -> None:
    reading = await read_document(b"#!/bin/sh\nrm -rf /\n", "run.sh", "text/plain", pool, LIMITS)
    assert reading.status == "refused"


async def test_too_large_is_not_opened(pool: OcrPool) -> None:
    reading = await read_document(
        b"x" * 2000, "big.txt", "text/plain", pool, ReadingLimits(max_bytes=1000)
    )
    assert reading.status == "too_large"
    assert reading.reason == "2000 bytes, over the 1000-byte limit; not opened"


async def test_broken_image_and_decompression_bomb(pool: OcrPool) -> None:
    broken = (DOCS / "statement-photo.jpg").read_bytes()[:400]
    reading = await read_document(broken, "photo.jpg", "image/jpeg", pool, LIMITS)
    assert reading.status == "unreadable"
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")
    bomb = await read_document(buffer.getvalue(), "scan.png", "image/png", pool, LIMITS)
    assert bomb.status == "too_large"
    assert bomb.reason and "too large to open safely" in bomb.reason


async def test_plain_text_and_unknown_types(pool: OcrPool) -> None:
    text = await read_document(
        "Référence AS-2026-000001".encode(), "note.txt", "text/plain", pool, LIMITS
    )
    assert (text.status, text.text) == ("ok", "Référence AS-2026-000001")
    garbage_zip = await read_document(
        b"PK\x03\x04" + b"\x00" * 100, "docs.zip", "application/zip", pool, LIMITS
    )
    assert garbage_zip.status == "unreadable"
    unknown = await read_document(
        b"\x00\x01\x02garbage", "lettre.odt", "application/octet-stream", pool, LIMITS
    )
    assert unknown.status == "unreadable"
    assert unknown.reason and "no reader for" in unknown.reason


async def test_zip_members_become_children_that_read_like_attachments(pool: OcrPool) -> None:
    photo = (DOCS / "statement-photo.jpg").read_bytes()
    quote = (DOCS / "quote-text-layer.pdf").read_bytes()
    archive = zip_of({"scans/devis.pdf": quote, "scans/releve.jpg": photo, "vide/": b""})
    reading = await read_document(archive, "envoi.zip", "application/zip", pool, LIMITS)
    assert (reading.status, reading.reason, reading.sniffed_type) == ("ok", None, "application/zip")
    assert [(c.filename, c.declared_type, c.status) for c in reading.children] == [
        ("devis.pdf", "application/pdf", "pending"),
        ("releve.jpg", "image/jpeg", "pending"),
    ]
    assert reading.children[1].content == photo
    tree = await read_tree(archive, "envoi.zip", "application/zip", pool, LIMITS)
    assert [(r.depth, r.filename, r.reading.status) for r in tree] == [
        (0, "envoi.zip", "ok"),
        (1, "devis.pdf", "ok"),
        (1, "releve.jpg", "ok"),
    ]
    assert "58,88" in tree[2].reading.text
    empty = await read_document(zip_of({}), "vide.zip", "application/zip", pool, LIMITS)
    assert (empty.status, empty.reason, empty.children) == ("ok", "archive is empty", ())


async def test_attached_email_gives_its_text_and_its_attachments(pool: OcrPool) -> None:
    invoice = _pdf(["Facture 2026-118 du garage pour le dossier AS-2026-000001"])
    content = email_with(
        "Tr: facture du garage",
        "Voici la facture que le garage m'a envoyée.",
        {"facture.pdf": ("application/pdf", invoice)},
    )
    reading = await read_document(content, "facture.eml", "message/rfc822", pool, LIMITS)
    assert (reading.status, reading.sniffed_type, reading.text_source) == (
        "ok",
        "message/rfc822",
        "text_layer",
    )
    assert reading.text == (
        "From: Jean Dupont <jean.dupont@example.org>\n"
        "To: sinistres@guichet.localhost\n"
        "Subject: Tr: facture du garage\n\n"
        "Voici la facture que le garage m'a envoyée."
    )
    [child] = reading.children
    assert (child.filename, child.declared_type, child.content) == (
        "facture.pdf",
        "application/pdf",
        invoice,
    )
    inner = await read_document(child.content, child.filename, child.declared_type, pool, LIMITS)
    assert inner.status == "ok" and "AS-2026-000001" in inner.text


async def test_email_whose_first_header_libmagic_does_not_know(pool: OcrPool) -> None:
    content = b"Subject: Facture\r\nFrom: a@example.org\r\n\r\nAS-2026-000001\r\n"
    reading = await read_document(content, "fwd.eml", "application/octet-stream", pool, LIMITS)
    assert (reading.status, reading.sniffed_type, reading.type_mismatch) == (
        "ok",
        "message/rfc822",
        None,
    )
    assert reading.text == "From: a@example.org\nSubject: Facture\n\nAS-2026-000001"


async def test_outlook_message_gives_its_text_and_its_attachments(pool: OcrPool) -> None:
    content = outlook_msg(
        "Facture garage",
        "Garage Martin",
        "Bonjour, voici la facture du dossier AS-2026-000001.",
        {"facture.pdf": _pdf(["Facture 2026-118"]), "note.txt": b"Merci"},
    )
    reading = await read_document(content, "Facture.msg", "application/octet-stream", pool, LIMITS)
    assert (reading.status, reading.sniffed_type) == ("ok", "application/vnd.ms-outlook")
    assert reading.text == (
        "From: Garage Martin\nSubject: Facture garage\n\n"
        "Bonjour, voici la facture du dossier AS-2026-000001."
    )
    assert [(c.filename, c.content[:5]) for c in reading.children] == [
        ("facture.pdf", b"%PDF-"),
        ("note.txt", b"Merci"),
    ]


@pytest.mark.parametrize(
    ("filename", "main_part"),
    [("sinistre.docm", "word/document.xml"), ("frais.xlsm", "xl/workbook.xml")],
)
async def test_office_files_with_macros_are_refused(
    pool: OcrPool, filename: str, main_part: str
) -> None:
    content = office_package(main_part, with_macros=True)
    reading = await read_document(content, filename, "application/octet-stream", pool, LIMITS)
    assert (reading.status, reading.reason, reading.text, reading.children) == (
        "refused",
        "Office file with macros: stored, never opened",
        "",
        (),
    )
    plain = office_package(main_part, with_macros=False)
    reading = await read_document(plain, filename, "application/octet-stream", pool, LIMITS)
    assert reading.status == "unreadable"
    assert reading.reason and "no reader for" in reading.reason


async def test_legacy_office_file_with_macros_is_refused(pool: OcrPool) -> None:
    # An OLE file with a VBA project, as a .doc or .xls from Office 97-2003 carries it.
    reading = await read_document(vba_project(), "devis.doc", "application/msword", pool, LIMITS)
    assert (reading.status, reading.reason) == (
        "refused",
        "content is application/x-ole-storage but declared type says application/msword"
        " and extension 'doc' says application/msword;"
        " Office file with macros: stored, never opened",
    )
    without = ole({"WordDocument": b"\x00" * 600})
    plain = await read_document(without, "devis.doc", "application/msword", pool, LIMITS)
    assert plain.status == "unreadable"


async def test_heic_photo_is_ocrd(pool: OcrPool) -> None:
    if not have_font():
        pytest.skip(f"no {FONT} font to draw the text with (Debian package fonts-dejavu-core)")
    register_heif_opener()
    buffer = io.BytesIO()
    text_image(["Facture de remorquage", "Dossier AS-2026-000001"]).convert("RGB").save(
        buffer, format="HEIF", quality=90
    )
    reading = await read_document(buffer.getvalue(), "IMG_0001.HEIC", "", pool, LIMITS)
    assert (reading.status, reading.sniffed_type, reading.text_source) == (
        "ok",
        "image/heic",
        "ocr",
    )
    assert "AS-2026-000001" in reading.text


@pytest.mark.parametrize("turn", [90, 180])
async def test_page_photographed_sideways_is_turned_by_osd(pool: OcrPool, turn: int) -> None:
    if not have_font():
        pytest.skip(f"no {FONT} font to draw the text with (Debian package fonts-dejavu-core)")
    page = text_image(
        [
            "Facture de remorquage du vehicule",
            "Dossier AS-2026-000001",
            "Montant total 245,00 EUR",
            "Garage Martin, route de Lyon",
        ]
    ).rotate(turn, expand=True)
    # Plain Tesseract reads this page as garbage: what follows is OSD's doing.
    assert "remorquage" not in pytesseract.image_to_string(page, lang="fra+eng")
    buffer = io.BytesIO()
    page.save(buffer, format="PNG")
    reading = await read_document(buffer.getvalue(), "scan.png", "image/png", pool, LIMITS)
    assert reading.status == "ok"
    assert "remorquage" in reading.text and "AS-2026-000001" in reading.text


@pytest.mark.parametrize("degrees", [4, -4])
async def test_skewed_scan_is_levelled(pool: OcrPool, degrees: int) -> None:
    with Image.open(DOCS / "statement-photo.jpg") as photo:
        skewed = photo.rotate(
            degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(255, 255, 255)
        )
    # The photo already leans by about 2.8 degrees: the angle found is the sum.
    assert skew_angle(skewed) == pytest.approx(2.8 - degrees, abs=0.3)
    buffer = io.BytesIO()
    skewed.save(buffer, format="JPEG", quality=92)
    reading = await read_document(buffer.getvalue(), "releve.jpg", "image/jpeg", pool, LIMITS)
    assert reading.status == "ok"
    assert "58,88" in reading.text


# A service's process: one reader started and known, then waiting to be killed.
_SERVICE = """
import asyncio, os, sys
from intake.reading import OcrPool

async def main():
    pool = OcrPool(1)
    print(await pool.run(os.getpid), flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def _running(pid: int) -> bool:
    """Alive, and not a zombie waiting for a reaper (the orphan's reaper is the init)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_reader_processes_end_when_their_service_is_killed() -> None:
    """SIGKILL (or the OOM killer) gives the pool no chance to stop its readers: they end
    themselves instead of waiting forever with their memory."""
    service = subprocess.Popen(
        [sys.executable, "-c", _SERVICE],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert service.stdout is not None
        reader = int(service.stdout.readline())
        assert reader != service.pid and _running(reader)
    finally:
        service.send_signal(signal.SIGKILL)
        service.wait(timeout=30)
        if service.stdout is not None:
            service.stdout.close()
    deadline = time.monotonic() + 15
    while _running(reader) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _running(reader):
        os.kill(reader, signal.SIGKILL)
        raise AssertionError(f"reader {reader} outlived its killed service")
