"""Peak memory (VmHWM) of `guichet serve` with its models loaded, then after a 25 MB attachment.

Usage: .venv/bin/python bench/memory.py [--rounds R] [--attachment-mb MB]

Anchor, measured in the same run: the peak RSS of a bare
``python -c "import spacy; spacy.load('fr_core_news_sm')"`` (its VmHWM, read by itself at its
end), the largest part of what the service loads. Then, per round, a fresh ``guichet serve``
(SQLite in a temporary home, default workers and OCR processes) is warmed up with one text
email processed end to end (models loaded and used: the acknowledgement reached the relay),
and its ``/proc/PID/status`` VmHWM is read; then one email carrying a PDF of MB megabytes
(photos of a damaged car, one per page, with a caption: a text layer, so no OCR) is sent over
SMTP and followed until its acknowledgement is sent, and VmHWM is read again. The service's own
process and its children (the OCR pool's processes, which read the PDF and are started at
their first use, and multiprocessing's resource tracker) are shown apart. The SMTP size limit is
raised to fit the message (a 25 MB file is 34 MB in base64; the default limit is 25 MiB).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    GuichetServe,
    children,
    corpus_messages,
    free_port,
    load_note,
    peak_rss_kib,
    send_messages,
    server_process,
    text_email,
)

ANCHOR = "import spacy; spacy.load('fr_core_news_sm')"


def anchor_peak_kib() -> int:
    """The anchor's own VmHWM, read by itself at its end: ``wait4``'s ru_maxrss would also
    count the forked copy of this (large) parent before its exec."""
    report = "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')))"
    done = subprocess.run(
        [sys.executable, "-c", f"{ANCHOR}; {report}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return int(done.stdout.split()[1])


def photo_report_pdf(size_bytes: int, pages: int = 4, seed: int = 0) -> bytes:
    """A PDF of about ``size_bytes``: one incompressible JPEG photo per page with a caption."""
    from PIL import Image
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    rng = random.Random(seed)

    def photo(width: int) -> bytes:
        height = width * 3 // 4
        noise = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
        out = io.BytesIO()
        noise.save(out, "JPEG", quality=90)
        return out.getvalue()

    def document(width: int) -> bytes:
        buffer = io.BytesIO()
        sheet = canvas.Canvas(buffer, pagesize=A4)
        for page in range(pages):
            sheet.setFont("Helvetica", 12)
            sheet.drawString(50, 800, f"Constat - photo {page + 1}/{pages} - véhicule AB-123-CD")
            picture = ImageReader(io.BytesIO(photo(width)))
            sheet.drawImage(picture, 50, 300, width=495, height=371)
            sheet.showPage()
        sheet.save()
        return buffer.getvalue()

    # The size grows with the pixel count: scale the photos' width from trial documents.
    width = 400
    for _ in range(3):
        made = document(width)
        if abs(len(made) - size_bytes) < size_bytes * 0.01:
            break
        width = int(width * (size_bytes / len(made)) ** 0.5)
    return made


def wait_sent(service: GuichetServe, count: int, timeout: float = 600) -> float:
    """Wait until ``count`` acknowledgements have been sent; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        sent = service.query(
            "SELECT count(*) FROM outbound_message"
            " WHERE purpose = 'acknowledgement' AND status = 'sent'"
        )[0][0]
        if sent >= count:
            return time.monotonic() - started
        time.sleep(0.1)
    raise SystemExit(f"acknowledgement {count} not sent after {timeout}s")


def peaks(service: GuichetServe) -> tuple[int, int, int]:
    """VmHWM of the service's process, the sum over its children (the OCR pool's processes,
    started at their first use, and multiprocessing's resource tracker), and their number."""
    kids = children(service.pid)
    return peak_rss_kib(service.pid), sum(peak_rss_kib(c) for c in kids), len(kids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--attachment-mb", type=float, default=25.0, help="megabytes (10^6)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    size = int(args.attachment_mb * 1_000_000)
    pdf = photo_report_pdf(size)
    texts = corpus_messages()
    warm = text_email(1, texts[0], "assure1@example.org")
    big = text_email(
        2,
        "Bonjour,\nci-joint les photos du constat pour mon dossier.\nCordialement,\nJean Dupont",
        "assure2@example.org",
        [(pdf, "application/pdf", "constat-photos.pdf")],
    )
    anchor: list[int] = []
    ready: list[tuple[int, int, int]] = []
    after: list[tuple[int, int, int]] = []
    took: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="guichet-bench-") as tmp,
        server_process("bare-smtp", "--port", str(relay := free_port())),
    ):
        for r in range(args.rounds):
            anchor.append(anchor_peak_kib())
            service = GuichetServe(
                Path(tmp) / f"home-{r}",
                relay,
                {"GUICHET_SMTP_MAX_MESSAGE_BYTES": str(len(big) + 1024 * 1024)},
            )
            service.start()
            try:
                send_messages(service.smtp_port, [("assure1@example.org", warm)], 1)
                wait_sent(service, 1)
                ready.append(peaks(service))
                started = time.monotonic()
                result = send_messages(service.smtp_port, [("assure2@example.org", big)], 1)
                if result.failures:
                    raise SystemExit(f"the large message was refused: {result.failures[0]}")
                wait_sent(service, 2)
                took.append(time.monotonic() - started)
                after.append(peaks(service))
            finally:
                service.stop()

    def mib(kib: float) -> str:
        return f"{kib / 1024:8.0f}"

    print(
        f"{args.rounds} rounds (medians), MiB; attachment {len(pdf) / 1e6:.1f} MB PDF, message "
        f"{len(big) / 1e6:.1f} MB, end to end in {statistics.median(took):.1f} s"
    )
    print(f"{'':44} {'service':>8} {'children':>12} {'total':>8}")
    a = statistics.median(anchor)
    print(f"{'anchor: python, import spacy, load fr model':44} {mib(a)} {'':>12} {mib(a)}")
    for name, rows in (("guichet serve, warmed up", ready), ("after the 25 MB attachment", after)):
        own = statistics.median(x for x, _, _ in rows)
        kids = statistics.median(y for _, y, _ in rows)
        count = max(n for _, _, n in rows)
        print(f"{name:44} {mib(own)} {mib(kids)} ({count}) {mib(own + kids)}")
    own_ready = statistics.median(x for x, _, _ in ready)
    print(f"service process warmed up / anchor: {own_ready / a:.2f}")
    print(load_note(load))


if __name__ == "__main__":
    main()
