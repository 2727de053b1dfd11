"""Read one document in budget: sniff it, take its text (text layer, OCR), find files inside."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Protocol, TypeVar

from intake import archives, macros, messages, readers
from intake.children import ChildFile
from intake.readers import ReaderError
from intake.sniff import sniff

T = TypeVar("T")

IMAGE_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/tiff",
        "image/gif",
        "image/bmp",
        "image/webp",
        "image/heic",
        "image/heif",
    }
)
PLAIN_TEXT_TYPES = frozenset({"text/plain", "text/csv"})
ZIP = "application/zip"
EMAIL = "message/rfc822"
OUTLOOK = "application/vnd.ms-outlook"
#: OLE compound files as libmagic names them: Office 97-2003 and unnamed ones.
OLE_TYPES = frozenset(
    {
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.ms-office",
        "application/x-ole-storage",
        "application/cdfv2",
    }
)
MACROS_REFUSED = "Office file with macros: stored, never opened"


@dataclass(frozen=True)
class ReadingLimits:
    max_bytes: int = 25 * 1024 * 1024
    max_pages: int = 50
    ocr_languages: str = "fra+eng"
    ocr_page_timeout: float = 60.0
    ocr_dpi: int = 300
    archive_max_total_bytes: int = 100 * 1024 * 1024
    archive_max_members: int = 200
    archive_max_ratio: int = 100
    nesting_max_depth: int = 3


@dataclass(frozen=True)
class Reading:
    """What intake learnt from one file; ``status`` is one of the document statuses."""

    sniffed_type: str
    type_mismatch: str | None
    status: str
    reason: str | None
    text: str
    text_source: str  # text_layer, ocr, mixed or none
    pages: int | None
    children: tuple[ChildFile, ...] = ()  # files found inside, to become child documents


class Finish(Protocol):
    """Builds the reading of the document at hand from what a reader found."""

    def __call__(
        self,
        status: str,
        reason: str | None,
        text: str = "",
        source: str = "none",
        pages: int | None = None,
        children: tuple[ChildFile, ...] = (),
    ) -> Reading: ...


class OcrPool:
    """A process pool sized to the cores for the CPU-bound readers (DESIGN: OCR in a pool).

    Spawned rather than forked: the service process holds threads (database drivers) that a
    fork would copy in an undefined state. A worker that dies (a decoder crashing on a hostile
    file, the kernel's OOM killer) breaks the whole executor: it is replaced, the call tried
    once more, and a file that kills a worker twice is unreadable, not an outage.
    """

    def __init__(self, processes: int) -> None:
        self._processes = processes
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=readers.init_worker,
            initargs=(os.getpid(),),
        )

    async def run(self, func: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        for attempt in range(2):
            executor = self._executor
            try:
                return await loop.run_in_executor(executor, func, *args)
            except BrokenProcessPool as exc:
                if self._executor is executor:  # not yet replaced by a concurrent call
                    executor.shutdown(wait=False, cancel_futures=True)
                    self._executor = self._start()
                if attempt:
                    raise ReaderError("unreadable", "the reader process died on this file") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


async def read_document(
    content: bytes,
    filename: str,
    declared_type: str,
    pool: OcrPool,
    limits: ReadingLimits,
    depth: int = 0,
) -> Reading:
    """Never raises for a bad file: every failure becomes a status and a reason.

    ``depth`` is how deep the document sits in archives and attached messages; containers at
    ``limits.nesting_max_depth`` are not opened.
    """
    if len(content) > limits.max_bytes:
        return Reading(
            sniffed_type="",
            type_mismatch=None,
            status="too_large",
            reason=f"{len(content)} bytes, over the {limits.max_bytes}-byte limit; not opened",
            text="",
            text_source="none",
            pages=None,
        )
    sniffed = sniff(content, filename, declared_type)

    def done(
        status: str,
        reason: str | None,
        text: str = "",
        source: str = "none",
        pages: int | None = None,
        children: tuple[ChildFile, ...] = (),
    ) -> Reading:
        reasons = [r for r in (sniffed.mismatch, reason) if r]
        return Reading(
            sniffed_type=sniffed.mime,
            type_mismatch=sniffed.mismatch,
            status=status,
            reason="; ".join(reasons) or None,
            text=text.strip(),
            text_source=source,
            pages=pages,
            children=children,
        )

    mime = sniffed.mime
    if not content:
        return done("unreadable", "empty file (0 bytes)")
    if sniffed.refused:
        return done("refused", f"refused type {mime}: stored, never opened")
    try:
        if mime == "application/pdf":
            return await _read_pdf(content, pool, limits, done)
        if mime in IMAGE_TYPES:
            texts = await pool.run(
                readers.ocr_image,
                content,
                limits.ocr_languages,
                limits.ocr_page_timeout,
                limits.max_pages,
            )
            return done("ok", None, "\n\f".join(texts), "ocr", len(texts))
        if mime in PLAIN_TEXT_TYPES:
            return done("ok", None, content.decode("utf-8", errors="replace"), "text_layer")
        if mime in (EMAIL, OUTLOOK) or (mime in OLE_TYPES and _named_msg(filename)):
            return await _read_message(content, mime == EMAIL, pool, limits, depth, done)
        if mime == ZIP or _is_ooxml(mime):
            return await _read_zip(content, filename, mime, pool, limits, depth, done)
        if mime in OLE_TYPES:
            found = await pool.run(macros.has_vba_macros, content, filename)
            return _office(mime, found, done)
        if mime == "application/encrypted":
            return done("encrypted", "file is encrypted with a password")
    except ReaderError as exc:
        return done(exc.status, exc.reason)
    return done("unreadable", f"no reader for {mime} yet")


def _named_msg(filename: str) -> bool:
    return filename.lower().endswith(".msg")


def _is_ooxml(mime: str) -> bool:
    return mime.startswith("application/vnd.openxmlformats-officedocument.") or (
        mime.startswith("application/vnd.ms-") and "macroenabled" in mime
    )


def _nesting_refusal(depth: int, limits: ReadingLimits) -> str:
    return (
        f"archive limit: nested {depth} levels deep, at the {limits.nesting_max_depth}-level"
        " limit; not unpacked"
    )


async def _read_zip(
    content: bytes,
    filename: str,
    mime: str,
    pool: OcrPool,
    limits: ReadingLimits,
    depth: int,
    done: Finish,
) -> Reading:
    if mime == ZIP and depth >= limits.nesting_max_depth:
        return done("refused", _nesting_refusal(depth, limits))
    unzipped = await pool.run(
        archives.unpack_zip,
        content,
        limits.archive_max_total_bytes,
        limits.archive_max_members,
        limits.archive_max_ratio,
    )
    if unzipped.office_package or mime != ZIP:
        # A docx or xlsm: its VBA project, if any, is an OLE part (vbaProject.bin).
        found = False
        for part in unzipped.members:
            if part.content.startswith(macros.OLE_MAGIC):
                found = found or await pool.run(macros.has_vba_macros, part.content, part.filename)
        return _office(mime if mime != ZIP else "Office documents (OOXML)", found, done)
    if not unzipped.members:
        return done("ok", "archive is empty")
    return done("ok", None, children=unzipped.members)


def _office(mime: str, has_macros: bool, done: Finish) -> Reading:
    if has_macros:
        return done("refused", MACROS_REFUSED)
    return done("unreadable", f"no reader for {mime} yet")


async def _read_message(
    content: bytes,
    rfc822: bool,
    pool: OcrPool,
    limits: ReadingLimits,
    depth: int,
    done: Finish,
) -> Reading:
    opened = await pool.run(messages.open_eml if rfc822 else messages.open_msg, content)
    problems = [opened.problem] if opened.problem else []
    children = opened.attachments
    if len(children) > limits.archive_max_members:
        problems.append(
            f"archive limit: {len(children)} attachments, over the"
            f" {limits.archive_max_members}-member limit; none unpacked"
        )
        children = ()
    elif children and depth >= limits.nesting_max_depth:
        problems.append(_nesting_refusal(depth, limits))
        children = ()
    text = opened.text.strip()
    status = "ok" if not problems else "partial" if text else "unreadable"
    source = "text_layer" if text else "none"
    return done(status, "; ".join(problems) or None, text, source, None, children)


async def _read_pdf(
    content: bytes,
    pool: OcrPool,
    limits: ReadingLimits,
    done: Finish,
) -> Reading:
    layer = await pool.run(readers.pdf_text_layer, content, limits.max_pages)
    pages = list(layer.pages)
    scanned = [
        i for i, text in enumerate(pages) if _useful_chars(text) < readers.MIN_TEXT_LAYER_CHARS
    ]
    # Pages of one document are OCR'd in parallel; a failing page loses only itself.
    results = await asyncio.gather(
        *(
            pool.run(
                readers.ocr_pdf_page,
                content,
                index,
                limits.ocr_dpi,
                limits.ocr_languages,
                limits.ocr_page_timeout,
            )
            for index in scanned
        ),
        return_exceptions=True,
    )
    problems: list[str] = []
    failed_statuses: list[str] = []
    for index, result in zip(scanned, results, strict=True):
        if isinstance(result, ReaderError):
            problems.append(f"page {index + 1}: {result.reason}")
            failed_statuses.append(result.status)
        elif isinstance(result, BaseException):
            problems.append(f"page {index + 1}: {type(result).__name__}: {result}")
            failed_statuses.append("unreadable")
        else:
            pages[index] = result
    if layer.page_count > limits.max_pages:
        problems.append(f"only the first {limits.max_pages} of {layer.page_count} pages were read")
    ocr_ok = len(scanned) - len(failed_statuses)
    text_ok = len(pages) - len(scanned)
    source = (
        "mixed" if ocr_ok and text_ok else "ocr" if ocr_ok else "text_layer" if text_ok else "none"
    )
    if failed_statuses and len(failed_statuses) == len(pages):
        status = "timeout" if all(s == "timeout" for s in failed_statuses) else "unreadable"
    elif problems:
        status = "partial"
    else:
        status = "ok"
    return done(status, "; ".join(problems) or None, "\n\f".join(pages), source, layer.page_count)


def _useful_chars(text: str) -> int:
    return sum(1 for ch in text if ch.isalnum())
