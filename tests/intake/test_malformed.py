"""Malformed and hostile files: each one ends with a status and a reason, and none hangs."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from intake.readers import ReaderError
from intake.reading import OcrPool, ReadingLimits, read_document
from tests.intake.files import (
    DOCS,
    STATUSES,
    declare_size,
    email_with,
    mark_encrypted,
    ole,
    pdf,
    read_tree,
    zeros_zip,
    zip_of,
)

LIMITS = ReadingLimits(ocr_page_timeout=60)
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pool() -> Iterator[OcrPool]:
    pool = OcrPool(2)
    yield pool
    pool.shutdown()


def _big_image(format: str) -> bytes:
    # 10 000 x 10 000 one-bit pixels: 100 Mpx to decode, a few kilobytes on disk.
    buffer = io.BytesIO()
    options = {"compression": "group4"} if format == "TIFF" else {}
    Image.new("1", (10_000, 10_000), 1).save(buffer, format=format, **options)
    return buffer.getvalue()


_TEXT_PDF = (DOCS / "quote-text-layer.pdf").read_bytes()
_PHOTO = (DOCS / "statement-photo.jpg").read_bytes()

MALFORMED = {
    "zero bytes": (b"", "facture.pdf", "application/pdf", "unreadable"),
    "pdf cut at 300 bytes": (_TEXT_PDF[:300], "devis.pdf", "application/pdf", "unreadable"),
    "pdf cut in half": (_TEXT_PDF[: len(_TEXT_PDF) // 2], "devis.pdf", "application/pdf", None),
    "pdf without its trailer": (_TEXT_PDF[:-200], "devis.pdf", "application/pdf", None),
    "pdf header only": (b"%PDF-1.7\n", "devis.pdf", "application/pdf", "unreadable"),
    "encrypted pdf": (pdf(["secret"], encrypt="motdepasse"), "r.pdf", "application/pdf", None),
    "jpeg cut short": (_PHOTO[:2000], "photo.jpg", "image/jpeg", "unreadable"),
    "jpeg header only": (b"\xff\xd8\xff\xe0" + b"\x00" * 20, "photo.jpg", "image/jpeg", None),
    "10000 px png": (_big_image("PNG"), "scan.png", "image/png", "too_large"),
    "10000 px tiff": (_big_image("TIFF"), "fax.tif", "image/tiff", "too_large"),
    "garbage zip": (b"PK\x03\x04" + b"\x00" * 100, "docs.zip", "application/zip", "unreadable"),
    "zip cut in half": (
        zip_of({"a.pdf": _TEXT_PDF})[: len(_TEXT_PDF) // 3],
        "docs.zip",
        "application/zip",
        "unreadable",
    ),
    "random bytes": (bytes(range(256)) * 40, "x.bin", "application/octet-stream", "unreadable"),
    "broken eml": (b"From: \xff\xfe\r\n\r\n\xff\xfe", "fwd.eml", "message/rfc822", None),
    "msg that is no message": (
        ole({"Book": b"\x00" * 600}),
        "mail.msg",
        "application/vnd.ms-outlook",
        None,
    ),
}


@pytest.mark.parametrize(
    ("content", "filename", "declared", "expected"),
    list(MALFORMED.values()),
    ids=list(MALFORMED),
)
async def test_every_malformed_file_ends_with_a_status(
    pool: OcrPool, content: bytes, filename: str, declared: str, expected: str | None
) -> None:
    started = time.monotonic()
    reading = await read_document(content, filename, declared, pool, LIMITS)
    assert reading.status in STATUSES
    if expected:
        assert reading.status == expected, reading.reason
    if reading.status != "ok":
        assert reading.reason
    assert time.monotonic() - started < 60


async def test_zero_bytes_say_so(pool: OcrPool) -> None:
    reading = await read_document(b"", "facture.pdf", "application/pdf", pool, LIMITS)
    assert (reading.status, reading.reason) == (
        "unreadable",
        "content is application/x-empty but declared type says application/pdf"
        " and extension 'pdf' says application/pdf; empty file (0 bytes)",
    )


async def test_wrong_magic_is_read_as_what_it_is(pool: OcrPool) -> None:
    buffer = io.BytesIO()
    Image.open(DOCS / "statement-photo.jpg").save(buffer, format="PNG")
    png = await read_document(buffer.getvalue(), "decompte.pdf", "application/pdf", pool, LIMITS)
    assert (png.status, png.sniffed_type) == ("ok", "image/png")
    assert png.type_mismatch and png.type_mismatch.startswith("content is image/png")
    assert "58,88" in png.text
    text = await read_document(b"Dossier AS-2026-000001\n", "photo.jpg", "image/jpeg", pool, LIMITS)
    assert (text.status, text.sniffed_type, text.text) == (
        "ok",
        "text/plain",
        "Dossier AS-2026-000001",
    )
    assert text.reason and text.reason.startswith("content is text/plain but declared type")


async def test_encrypted_pdf_is_encrypted(pool: OcrPool) -> None:
    content = pdf(["secret"], encrypt="motdepasse")
    reading = await read_document(content, "releve.pdf", "application/pdf", pool, LIMITS)
    assert (reading.status, reading.reason) == ("encrypted", "PDF is encrypted with a password")


async def test_zip_bomb_is_refused_from_its_directory(pool: OcrPool) -> None:
    bomb = zeros_zip(200)
    assert len(bomb) < 1024 * 1024
    started = time.monotonic()
    reading = await read_document(bomb, "factures.zip", "application/zip", pool, LIMITS)
    assert reading.status == "refused"
    assert reading.reason == (
        "zip bomb: members declare 209715200 bytes unpacked, over the 104857600-byte limit"
    )
    assert reading.children == ()
    assert time.monotonic() - started < 10


async def test_zip_member_over_the_ratio_is_refused(pool: OcrPool) -> None:
    reading = await read_document(zeros_zip(20), "a.zip", "application/zip", pool, LIMITS)
    assert reading.status == "refused"
    assert reading.reason and reading.reason.startswith("zip bomb: zeros.bin expands ")


async def test_zip_that_lies_about_its_sizes_is_caught_while_unpacking(pool: OcrPool) -> None:
    # 5 MB of zeros whose headers claim 1000 bytes: every declared check passes.
    liar = declare_size(zeros_zip(5, "note.txt"), "note.txt", 1000)
    reading = await read_document(liar, "a.zip", "application/zip", pool, LIMITS)
    assert (reading.status, reading.reason) == (
        "refused",
        "zip bomb: note.txt inflates past the 1000 bytes it declares",
    )


async def test_nested_zip_of_zips_bomb(pool: OcrPool) -> None:
    # 42.zip in small: every level looks harmless, the leaves expand a thousand times.
    leaf = zeros_zip(20)
    level = zip_of({f"part-{n}.zip": leaf for n in range(4)})
    top = zip_of({f"lot-{n}.zip": level for n in range(4)})
    tree = await read_tree(top, "envoi.zip", "application/zip", pool, LIMITS)
    assert [r.reading.status for r in tree if r.depth < 2] == ["ok"] * 5
    leaves = [r for r in tree if r.depth == 2]
    assert len(leaves) == 16
    assert all(r.reading.status == "refused" for r in leaves)
    assert all((r.reading.reason or "").startswith("zip bomb:") for r in leaves)


async def test_nesting_deeper_than_the_limit_is_not_unpacked(pool: OcrPool) -> None:
    content = b"Dossier AS-2026-000001"
    for depth in range(5):
        content = zip_of({f"level-{depth}.zip" if depth else "note.txt": content})
    tree = await read_tree(content, "envoi.zip", "application/zip", pool, LIMITS)
    assert [(r.depth, r.reading.status) for r in tree] == [
        (0, "ok"),
        (1, "ok"),
        (2, "ok"),
        (3, "refused"),
    ]
    assert tree[-1].reading.reason == (
        "archive limit: nested 3 levels deep, at the 3-level limit; not unpacked"
    )


async def test_zip_with_too_many_members(pool: OcrPool) -> None:
    many = zip_of({f"page-{n}.txt": b"x" for n in range(201)})
    reading = await read_document(many, "pages.zip", "application/zip", pool, LIMITS)
    assert reading.status == "refused"
    assert reading.reason and reading.reason.startswith("archive limit: the directory lists 201")
    few = await read_document(
        many, "pages.zip", "application/zip", pool, ReadingLimits(archive_max_members=300)
    )
    assert (few.status, len(few.children)) == ("ok", 201)


async def test_path_traversal_names_become_base_names(pool: OcrPool) -> None:
    archive = zip_of(
        {
            "../../etc/passwd": b"root:x:0:0",
            "..\\..\\windows\\win.ini": b"[fonts]",
            "/tmp/abs.txt": b"absolute",
            "dossier/sous/facture.txt": b"AS-2026-000001",
            "../": b"",
            "..": b"dots",
        }
    )
    reading = await read_document(archive, "envoi.zip", "application/zip", pool, LIMITS)
    assert reading.status == "ok"
    assert [c.filename for c in reading.children] == [
        "passwd",
        "win.ini",
        "abs.txt",
        "facture.txt",
        "member-5",
    ]


async def test_encrypted_member_becomes_an_encrypted_child(pool: OcrPool) -> None:
    archive = mark_encrypted(
        zip_of({"rib.pdf": pdf(["RIB"]), "note.txt": b"Mot de passe par SMS"}), "rib.pdf"
    )
    reading = await read_document(archive, "envoi.zip", "application/zip", pool, LIMITS)
    assert reading.status == "ok"
    encrypted, note = reading.children
    assert (encrypted.filename, encrypted.status, encrypted.reason, encrypted.content) == (
        "rib.pdf",
        "encrypted",
        "archive member is encrypted with a password",
        b"",
    )
    assert (note.filename, note.status, note.content) == (
        "note.txt",
        "pending",
        b"Mot de passe par SMS",
    )


async def test_corrupt_member_loses_only_itself(pool: OcrPool) -> None:
    archive = bytearray(zip_of({"a.txt": b"A" * 5000, "b.txt": b"lisible"}))
    at = archive.find(b"PK\x01\x02") + 16  # a.txt's checksum in the central directory
    archive[at : at + 4] = b"\x00" * 4
    reading = await read_document(bytes(archive), "envoi.zip", "application/zip", pool, LIMITS)
    assert reading.status == "ok"
    broken, fine = reading.children
    assert broken.status == "unreadable"
    assert broken.reason and broken.reason.startswith("archive member cannot be extracted")
    assert (fine.status, fine.content) == ("pending", b"lisible")


async def test_message_nested_in_messages_stops_at_the_limit(pool: OcrPool) -> None:
    content = email_with("Niveau 0", "fond", {"note.txt": ("text/plain", b"AS-2026-000001")})
    for depth in range(1, 5):
        content = email_with(f"Niveau {depth}", "corps", {"fwd.eml": ("message/rfc822", content)})
    tree = await read_tree(content, "fwd.eml", "message/rfc822", pool, LIMITS)
    assert [(r.depth, r.reading.status) for r in tree] == [
        (0, "ok"),
        (1, "ok"),
        (2, "ok"),
        (3, "partial"),
    ]
    assert "Subject: Niveau 1" in tree[-1].reading.text
    assert tree[-1].reading.reason == (
        "archive limit: nested 3 levels deep, at the 3-level limit; not unpacked"
    )


async def test_ocr_over_its_time_is_a_timeout(pool: OcrPool) -> None:
    limits = ReadingLimits(ocr_page_timeout=0.05)
    reading = await read_document(_PHOTO, "photo.jpg", "image/jpeg", pool, limits)
    assert (reading.status, reading.reason) == ("timeout", "OCR took more than 0.05 s on a page")


async def test_a_reader_process_that_dies_costs_one_file_not_the_pool() -> None:
    pool = OcrPool(1)
    try:
        with pytest.raises(ReaderError, match="the reader process died on this file"):
            await pool.run(os._exit, 1)
        archive = zip_of({"note.txt": b"AS-2026-000001"})
        reading = await read_document(archive, "envoi.zip", "application/zip", pool, LIMITS)
        assert (reading.status, len(reading.children)) == ("ok", 1)
    finally:
        pool.shutdown()
