"""The attestation of assistance: a one-page PDF drawn with reportlab from a text template."""

from __future__ import annotations

import asyncio
import io

from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfgen import canvas

from models.blobs import BlobStore
from responders import decide
from responders.compose import ReplyInputs, reply_context, reply_language

PDF_TYPE = "application/pdf"
# reportlab's standard fonts know WinAnsi only: Babel's narrow no-break space is not in it.
_WIN_ANSI = str.maketrans({"\u202f": "\u00a0", "\u2019": "'"})


def attestation_pdf(title: str, body: str) -> bytes:
    """The PDF of ``title`` and ``body`` (one paragraph a line), reproducible byte for byte."""
    buffer = io.BytesIO()
    # invariant: no creation date or random id, so that the same attestation hashes the same.
    pdf = canvas.Canvas(buffer, pagesize=A4, invariant=True)
    pdf.setTitle(title)
    height = A4[1]
    y = height - 30 * mm
    pdf.setFont("Helvetica-Bold", 16)
    pdf.drawString(25 * mm, y, title.translate(_WIN_ANSI))
    y -= 15 * mm
    pdf.setFont("Helvetica", 11)
    for line in body.translate(_WIN_ANSI).splitlines():
        for part in _wrap(line, 90) or [""]:
            if y < 25 * mm:
                pdf.showPage()
                pdf.setFont("Helvetica", 11)
                y = height - 25 * mm
            pdf.drawString(25 * mm, y, part)
            y -= 6 * mm
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def _wrap(line: str, width: int) -> list[str]:
    parts: list[str] = []
    current = ""
    for word in line.split(" "):
        if current and len(current) + 1 + len(word) > width:
            parts.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        parts.append(current)
    return parts


async def store_attestation(blobs: BlobStore, inputs: ReplyInputs) -> dict[str, str]:
    """Render the attestation PDF into the blob store; returns the reference to attach."""
    lang = reply_language(inputs.contact, inputs.renderer)
    plan = decide.PlannedReply(decide.ATTESTATION, "")
    rendered = inputs.renderer.render(
        decide.ATTESTATION, "pdf", lang, reply_context(plan, inputs, lang)
    )
    content = attestation_pdf(rendered.subject, rendered.body_text)
    digest = await asyncio.to_thread(blobs.put, content)
    ref = inputs.dossier.ref if inputs.dossier else str(inputs.contact.id)
    return {"sha256": digest, "filename": f"attestation-{ref}.pdf", "content_type": PDF_TYPE}
