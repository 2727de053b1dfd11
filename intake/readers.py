"""Blocking readers run in the OCR process pool: PDF text layer, page rendering, Tesseract."""

from __future__ import annotations

import io
import os
import re
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import cast

# Tesseract's OpenMP threads fight each other when several pages run at once; one thread per
# process and one process per core is faster and predictable (set before tesseract starts).
os.environ.setdefault("OMP_THREAD_LIMIT", "1")

import pdfplumber
import pypdfium2
import pytesseract
from PIL import Image, ImageOps
from pillow_heif import register_heif_opener

from intake.deskew import deskew

# iPhones send HEIC photos; pillow-heif teaches Pillow to open them like any other image.
register_heif_opener()

# Pillow's decompression-bomb guard: a warning above this, an error above twice it. A 300 dpi
# A3 page is ~17 Mpx; anything past 90 Mpx is not a document a beneficiary photographed.
Image.MAX_IMAGE_PIXELS = 90_000_000

#: A page with fewer useful characters than this in its text layer is treated as a scan.
MIN_TEXT_LAYER_CHARS = 20
#: A first OCR reading with fewer real words or a lower mean confidence than this is suspect:
#: upright pages score 70 to 95, sideways or upside-down ones about 45.
MIN_REAL_WORDS = 3
MIN_MEAN_CONFIDENCE = 60.0
#: Grey levels between the darkest and lightest pixel under which a page is blank.
BLANK_CONTRAST = 16
#: Below this OSD confidence the orientation is a guess, not worth a second OCR run.
MIN_OSD_CONFIDENCE = 1.5

_REAL_WORD = re.compile(r"[^\W\d_]{3,}")
_PUNCTUATION = ".,;:!?()[]\"'«»"


class ReaderError(Exception):
    """A reader could not read a file; ``status`` is the document status it leads to."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def __reduce__(self) -> tuple[type[ReaderError], tuple[str, str]]:
        # Raised in a pool process and re-raised in the service: must survive pickling.
        return (ReaderError, (self.status, self.reason))


@dataclass(frozen=True)
class PdfTextLayer:
    page_count: int
    pages: tuple[str, ...]  # text of the first pages, up to the cap


#: How often a reader process checks that the process that started it still lives.
PARENT_CHECK_SECONDS = 1.0


def init_worker(parent: int | None = None) -> None:
    """Set up a reader process of ``OcrPool``, started by process ``parent``."""
    os.environ["OMP_THREAD_LIMIT"] = "1"
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    if parent is not None:
        threading.Thread(
            target=_exit_when_orphaned, args=(parent,), name="guichet-parent", daemon=True
        ).start()


def _exit_when_orphaned(parent: int) -> None:
    """A killed service (SIGKILL, the OOM killer) cannot stop its reader processes, and they
    never see their queue close, since each holds both of its ends: they waited forever, with
    their hundred megabytes each. So each one ends itself once its parent is gone."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def pdf_text_layer(content: bytes, max_pages: int) -> PdfTextLayer:
    """Text of each page through pdfplumber, trying the empty password of 'protected' PDFs."""
    try:
        with pdfplumber.open(io.BytesIO(content), password="") as pdf:
            count = len(pdf.pages)
            texts = []
            for page in pdf.pages[:max_pages]:
                try:
                    texts.append(page.extract_text() or "")
                except Exception:
                    texts.append("")
            return PdfTextLayer(page_count=count, pages=tuple(texts))
    except Exception as exc:
        if _is_password_error(exc):
            raise ReaderError("encrypted", "PDF is encrypted with a password") from exc
        name = type(exc).__name__
        raise ReaderError("unreadable", f"PDF cannot be opened: {name}: {exc}"[:500]) from exc


def _is_password_error(exc: BaseException) -> bool:
    # pdfplumber wraps pdfminer's PDFPasswordIncorrect in a PdfminerException argument.
    seen: list[BaseException] = [exc, *(a for a in exc.args if isinstance(a, BaseException))]
    if exc.__cause__ is not None:
        seen.append(exc.__cause__)
    return any("Password" in type(e).__name__ or "Encrypt" in type(e).__name__ for e in seen)


def ocr_pdf_page(content: bytes, index: int, dpi: int, languages: str, timeout: float) -> str:
    """Render one PDF page at ``dpi`` with pdfium and OCR it."""
    try:
        pdf = pypdfium2.PdfDocument(content, password="")
    except Exception as exc:
        raise ReaderError("unreadable", f"PDF cannot be rendered: {exc}") from exc
    try:
        page = pdf[index]
        bitmap = page.render(scale=dpi / 72, grayscale=True)
        image = bitmap.to_pil()
        page.close()
    finally:
        pdf.close()
    return ocr_page(image, languages, timeout, (dpi, dpi))


def ocr_image(content: bytes, languages: str, timeout: float, max_pages: int) -> list[str]:
    """OCR each frame of an image (multi-page TIFF has several), upright by its EXIF tag."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(content))
            image.load()
            frames = getattr(image, "n_frames", 1)
            dpi = image.info.get("dpi")
            texts = []
            for frame in range(min(frames, max_pages)):
                image.seek(frame)
                page = ImageOps.exif_transpose(image.copy())
                texts.append(ocr_page(page, languages, timeout, dpi))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ReaderError("too_large", f"image too large to open safely: {exc}") from exc
    except ReaderError:
        raise
    except Exception as exc:
        raise ReaderError("unreadable", f"image cannot be decoded: {exc}"[:500]) from exc
    return texts


@dataclass(frozen=True)
class PageText:
    text: str
    real_words: int  # letters only, three or more: what garbage from a sideways page lacks
    confidence: float  # Tesseract's mean word confidence, 0 to 100

    @property
    def looks_wrong(self) -> bool:
        return self.real_words < MIN_REAL_WORDS or self.confidence < MIN_MEAN_CONFIDENCE


def ocr_page(
    image: Image.Image, languages: str, timeout: float, dpi: tuple[float, float] | None = None
) -> str:
    """One Tesseract run on the levelled page; orientation detection and a second run only
    for a page whose first reading looks wrong (upside down, sideways), so that the usual
    page costs what plain ``tesseract`` costs."""
    flat = _flattened(image)
    # A blank page (the back of a scan, padding) would cost two Tesseract runs, the second for
    # its orientation, to read nothing: 50 of them took a minute on a loaded machine.
    low, high = cast(tuple[int, int], flat.convert("L").getextrema())
    if high - low < BLANK_CONTRAST:
        return ""
    page = deskew(flat)
    with tempfile.TemporaryDirectory(prefix="guichet-ocr-") as folder:
        first = _tesseract(page, Path(folder) / "page.tif", languages, timeout, dpi)
        if not first.looks_wrong:
            return first.text
        rotation = _orientation(Path(folder) / "page.tif", timeout)
        if not rotation:
            return first.text
        # Tesseract's "Rotate: 90" means turn clockwise, that is -90 in Pillow's sense.
        turned = deskew(page.rotate(-rotation, expand=True))
        second = _tesseract(turned, Path(folder) / "turned.tif", languages, timeout, dpi)
    return second.text if second.confidence > first.confidence else first.text


def _flattened(image: Image.Image) -> Image.Image:
    """A mode Tesseract reads as it is; transparency over white, not over black."""
    if image.mode in ("1", "L", "RGB"):
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("L" if image.mode in ("I;16", "I", "F") else "RGB")


def _tesseract(
    image: Image.Image,
    path: Path,
    languages: str,
    timeout: float,
    dpi: tuple[float, float] | None,
) -> PageText:
    # Uncompressed TIFF: written in milliseconds where pytesseract's PNG takes a large part of
    # a second, and it carries the resolution Tesseract would have read from the original.
    options: dict[str, object] = {"compression": "raw"}
    if dpi:
        options["dpi"] = dpi
    image.save(path, format="TIFF", **options)
    try:
        data = pytesseract.image_to_data(
            str(path), lang=languages, timeout=timeout, output_type=pytesseract.Output.DICT
        )
    except RuntimeError as exc:
        if "timeout" in str(exc).lower():
            raise ReaderError("timeout", f"OCR took more than {timeout:g} s on a page") from exc
        raise ReaderError("unreadable", f"OCR failed: {exc}"[:500]) from exc
    except pytesseract.TesseractError as exc:
        raise ReaderError("unreadable", f"OCR failed: {exc}"[:500]) from exc
    return _page_text(data)


def _page_text(data: dict[str, list[object]]) -> PageText:
    """Words back into lines and paragraphs as ``tesseract`` prints them, with the quality."""
    paragraphs: dict[tuple[object, ...], dict[object, list[str]]] = {}
    confidences: list[float] = []
    real_words = 0
    for i, raw in enumerate(data["text"]):
        word = str(raw).strip()
        confidence = float(str(data["conf"][i]))
        if not word or confidence < 0:
            continue
        confidences.append(confidence)
        real_words += bool(_REAL_WORD.fullmatch(word.strip(_PUNCTUATION)))
        key = (data["page_num"][i], data["block_num"][i], data["par_num"][i])
        paragraphs.setdefault(key, {}).setdefault(data["line_num"][i], []).append(word)
    text = "\n\n".join(
        "\n".join(" ".join(words) for words in lines.values()) for lines in paragraphs.values()
    )
    mean = sum(confidences) / len(confidences) if confidences else 0.0
    return PageText(text, real_words, mean)


def _orientation(path: Path, timeout: float) -> int:
    """Clockwise degrees Tesseract's OSD says the page needs, 0 when it cannot tell."""
    try:
        osd = pytesseract.image_to_osd(
            str(path), timeout=timeout, output_type=pytesseract.Output.DICT
        )
    except (RuntimeError, pytesseract.TesseractError):
        return 0  # too few characters to tell, or out of time: keep the first reading
    rotation = int(osd.get("rotate", 0)) % 360
    return rotation if float(osd.get("orientation_conf", 0)) >= MIN_OSD_CONFIDENCE else 0
