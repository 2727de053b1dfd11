"""Gestionnaires' corrections of the classifiers, kept as training data in the corpus format."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.inbound import message_text
from models.store import audit
from models.tables import Contact, Document, TrainingExample


def _channel_kind(contact: Contact) -> str:
    return {"email": "email", "edi": "edi"}.get(contact.channel, "message")


async def correct_contact(
    session: AsyncSession,
    contact: Contact,
    actor: str,
    *,
    intent: str | None = None,
    entities: dict[str, str] | None = None,
) -> TrainingExample:
    """Set what the person says is right, audit it, and keep it as a training example."""
    before = {"intent": contact.intent, "entities": contact.entities}
    if intent is not None:
        contact.intent = intent
        contact.intent_confidence = 1.0
    if entities is not None:
        contact.entities = dict(entities)
    after = {"intent": contact.intent, "entities": contact.entities}
    audit(session, actor, "contact.corrected", "contact", contact.id, before=before, after=after)
    text = message_text(contact.subject, contact.text)
    example = TrainingExample(
        actor=actor,
        contact_id=contact.id,
        kind="message",
        label={
            "kind": "message",
            "channel": contact.channel,
            "language": contact.language or "fr",
            "intent": contact.intent,
            "entities": contact.entities,
            "source_kind": _channel_kind(contact),
        },
        text=text,
    )
    session.add(example)
    return example


async def correct_document(
    session: AsyncSession,
    document: Document,
    actor: str,
    *,
    doc_type: str | None = None,
    entities: dict[str, str] | None = None,
    language: str = "fr",
    channel: str = "email",
) -> TrainingExample:
    before = {"doc_type": document.doc_type, "entities": document.entities}
    if doc_type is not None:
        document.doc_type = doc_type
        document.doc_type_confidence = 1.0
    if entities is not None:
        document.entities = dict(entities)
    after = {"doc_type": document.doc_type, "entities": document.entities}
    audit(session, actor, "document.corrected", "document", document.id, before=before, after=after)
    example = TrainingExample(
        actor=actor,
        contact_id=document.contact_id,
        document_id=document.id,
        kind="document",
        label={
            "kind": "document",
            "channel": channel,
            "language": language,
            "doc_type": document.doc_type,
            "entities": document.entities,
        },
        text=document.text,
    )
    session.add(example)
    return example


async def export_corpus(session: AsyncSession, folder: Path) -> int:
    """Write every correction as a corpus folder (labels.jsonl + one .txt per item).

    The latest correction of a contact or document wins: an earlier one was superseded.
    """
    examples = (await session.scalars(select(TrainingExample).order_by(TrainingExample.id))).all()
    latest: dict[tuple[str, int | None, int | None], TrainingExample] = {}
    for example in examples:
        latest[(example.kind, example.contact_id, example.document_id)] = example
    files: dict[str, str] = {}
    lines = []
    for example in latest.values():
        sub = "messages" if example.kind == "message" else "documents"
        item_id = f"correction-{example.id:06d}"
        files[f"{sub}/{item_id}.txt"] = example.text
        label: dict[str, Any] = {k: v for k, v in example.label.items() if k != "source_kind"}
        label |= {"id": item_id, "file": f"{sub}/{item_id}.txt"}
        lines.append(json.dumps(label, ensure_ascii=False, sort_keys=True))
    files["labels.jsonl"] = "".join(f"{line}\n" for line in lines)
    await asyncio.to_thread(_write_files, folder, files)
    return len(lines)


def _write_files(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
