"""OCR of page images through Guichet's intake versus plain `tesseract`, same pages and parallelism.

Usage: .venv/bin/python bench/ocr_vs_tesseract.py [--pages N] [--rounds R] [--jobs J] [FOLDER]

Without FOLDER, pages are made from the test documents (scans and photos, PDF pages rendered at
300 dpi). Prints the median wall time of each side over the rounds and their ratio (target: Guichet
no slower than 1.15 x tesseract). When ``ocrmypdf`` is installed (Debian's package; it is not a
dependency of Guichet) it is measured too, the same way as tesseract: one
``ocrmypdf --sidecar TXT --output-type none -j 1`` per page, J at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pypdfium2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from intake.reading import OcrPool, ReadingLimits, read_document

DOCS = Path(__file__).resolve().parent.parent / "tests" / "data" / "documents"


def make_pages(folder: Path, count: int) -> list[Path]:
    sources: list[Path] = [
        p for p in sorted(DOCS.iterdir()) if p.suffix in (".jpg", ".png", ".tif")
    ]
    for pdf_path in sorted(DOCS.glob("*.pdf")):
        pdf = pypdfium2.PdfDocument(pdf_path.read_bytes())
        for index in range(len(pdf)):
            target = folder / f"{pdf_path.stem}-{index + 1}.png"
            pdf[index].render(scale=300 / 72, grayscale=True).to_pil().save(target)
            sources.append(target)
        pdf.close()
    return [sources[i % len(sources)] for i in range(count)]


def run_tesseract(pages: list[Path], jobs: int, languages: str) -> float:
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    started = time.perf_counter()
    running: list[subprocess.Popen[bytes]] = []
    for page in pages:
        if len(running) >= jobs:
            running.pop(0).wait()
        running.append(
            subprocess.Popen(
                ["tesseract", str(page), "-", "-l", languages],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        )
    for process in running:
        process.wait()
    return time.perf_counter() - started


def run_ocrmypdf(pages: list[Path], jobs: int, languages: str, out: Path) -> float:
    """One ocrmypdf per page, ``jobs`` at a time, only the sidecar text kept (no PDF made)."""
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    started = time.perf_counter()
    running: list[subprocess.Popen[bytes]] = []
    for n, page in enumerate(pages):
        if len(running) >= jobs:
            running.pop(0).wait()
        running.append(
            subprocess.Popen(
                [
                    "ocrmypdf",
                    "-q",
                    "-l",
                    languages,
                    "-j",
                    "1",
                    "--image-dpi",
                    "300",
                    "--sidecar",
                    str(out / f"{n}.txt"),
                    "--output-type",
                    "none",
                    str(page),
                    "-",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        )
    for process in running:
        process.wait()
    elapsed = time.perf_counter() - started
    missing = [n for n in range(len(pages)) if not (out / f"{n}.txt").exists()]
    if missing:
        raise SystemExit(f"ocrmypdf made no text for {len(missing)} pages (first: {missing[0]})")
    return elapsed


async def run_guichet(pages: list[Path], pool: OcrPool, languages: str) -> float:
    limits = ReadingLimits(ocr_languages=languages)
    contents = [(p.read_bytes(), p.name) for p in pages]
    started = time.perf_counter()
    readings = await asyncio.gather(
        *(read_document(content, name, "", pool, limits) for content, name in contents)
    )
    elapsed = time.perf_counter() - started
    failed = [r for r in readings if r.status != "ok"]
    if failed:
        raise SystemExit(f"{len(failed)} pages failed: {failed[0].reason}")
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path)
    parser.add_argument("--pages", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--languages", default="fra+eng")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        if args.folder:
            pages = sorted(
                p
                for p in args.folder.iterdir()
                if p.suffix.lower() in (".png", ".jpg", ".tif", ".tiff")
            )
        else:
            pages = make_pages(Path(tmp), args.pages)
        pool = OcrPool(args.jobs)
        await run_guichet(pages[: args.jobs], pool, args.languages)  # start the pool's processes
        ocrmypdf = shutil.which("ocrmypdf")
        anchor, ours, other = [], [], []
        for r in range(args.rounds):
            anchor.append(run_tesseract(pages, args.jobs, args.languages))
            ours.append(await run_guichet(pages, pool, args.languages))
            if ocrmypdf:
                sidecars = Path(tmp) / f"sidecars-{r}"
                sidecars.mkdir()
                other.append(run_ocrmypdf(pages, args.jobs, args.languages, sidecars))
        pool.shutdown()
    a, g = statistics.median(anchor), statistics.median(ours)
    print(f"{len(pages)} pages, {args.jobs} in parallel, {args.rounds} rounds (medians)")
    print(f"{'':24} {'seconds':>8} {'pages/s':>8}")
    print(f"{'plain tesseract':24} {a:8.2f} {len(pages) / a:8.2f}")
    print(f"{'guichet intake':24} {g:8.2f} {len(pages) / g:8.2f}")
    if other:
        o = statistics.median(other)
        print(f"{'ocrmypdf --sidecar':24} {o:8.2f} {len(pages) / o:8.2f}")
    else:
        print(f"{'ocrmypdf --sidecar':24} skipped: ocrmypdf not installed")
    print(f"ratio guichet / tesseract: {g / a:.3f} (target <= 1.15)")
    if other:
        print(f"ratio guichet / ocrmypdf: {g / o:.3f}")
    print(
        f"machine: {os.cpu_count()} cores; 1-min load average {load:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end"
    )


if __name__ == "__main__":
    asyncio.run(main())
