"""GED: scanned mail dropped with index sidecars comes in; closed dossiers go out as archives."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import mimetypes
import os
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from channels.drops import DropFolder, TryLater, move_done, move_error, sidecar_of
from models.blobs import write_durably
from models.inbound import InboundAttachment, InboundContact
from models.jobs import GED_EXPORT_JOB, ClaimedJob
from models.store import Accepted, Envelope, Store, audit
from models.tables import Document, Dossier

log = logging.getLogger(__name__)

CHANNEL = "ged"
SIDECAR_SUFFIX = ".json"
#: Who sent a dropped file when its sidecar does not say.
DEFAULT_SOURCE = "mailroom"
_REFERENCE = re.compile(r"AS-\d{4}-\d{6}")
MANIFEST = "dossier.json"


class SidecarError(ValueError):
    """The index sidecar cannot be trusted: the file and its sidecar go to error/ together."""


class Sidecar(BaseModel):
    """The index a mailroom writes beside a scan (``NAME.json``). Unknown keys are refused:
    a misspelt ``dosier_ref`` silently ignored would lose a person's label."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    dossier_ref: str | None = None
    doc_type: str | None = None
    received_at: datetime | None = None
    source: str | None = None

    @field_validator("dossier_ref")
    @classmethod
    def _reference(cls, value: str | None) -> str | None:
        if value is None:
            return None
        ref = value.strip().upper()
        if not _REFERENCE.fullmatch(ref):
            raise ValueError(f"{value!r} is not a dossier reference like AS-2026-000001")
        return ref

    @field_validator("received_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            # A clock without a zone is an hour or two off in France: ask rather than guess.
            raise ValueError("needs a timezone offset, like 2026-11-02T09:30:00+01:00")
        return value

    @field_validator("source", "doc_type")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty")
        return value.strip() if value is not None else None


def read_sidecar(raw: bytes, doc_types: Collection[str]) -> Sidecar:
    """Parse and check a sidecar; every problem is one ``SidecarError`` naming the field."""
    try:
        sidecar = Sidecar.model_validate_json(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'sidecar'}: {e['msg']}" for e in exc.errors()
        ]
        raise SidecarError("; ".join(problems)) from None
    if sidecar.doc_type is not None and sidecar.doc_type not in doc_types:
        known = ", ".join(sorted(doc_types))
        raise SidecarError(f"doc_type: {sidecar.doc_type!r} is not one of {known}")
    if sidecar.source is not None and len(sidecar.source) > 320:
        raise SidecarError("source: longer than 320 characters")
    return sidecar


def ged_contact(filename: str, content: bytes, sidecar: Sidecar | None) -> InboundContact:
    """The normalised contact of one dropped file: keyed by its bytes, labelled by a person."""
    index = sidecar or Sidecar()
    declared = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return InboundContact(
        channel=CHANNEL,
        # The same scan dropped twice is one contact with a duplicate delivery.
        natural_key=hashlib.sha256(content).hexdigest(),
        sender=index.source or DEFAULT_SOURCE,
        subject=filename,
        sent_at=index.received_at,
        dossier_hint=index.dossier_ref,
        attachments=(InboundAttachment(filename, declared, content, doc_type_hint=index.doc_type),),
    )


class GedDrop:
    """The GED drop folder: each stable file (with its sidecar) becomes one stored contact."""

    name = CHANNEL

    def __init__(
        self,
        store: Store,
        folder: Path,
        *,
        doc_types: Collection[str],
        stable_seconds: float,
        poll_seconds: float,
        on_accepted: Callable[[Accepted], None] = lambda _: None,
    ) -> None:
        self.store = store
        self.doc_types = frozenset(doc_types)
        self.on_accepted = on_accepted
        self.watcher = DropFolder(
            folder,
            self.take,
            stable_seconds=stable_seconds,
            poll_seconds=poll_seconds,
            name=f"{CHANNEL} drop",
            sidecar_suffix=SIDECAR_SUFFIX,
        )

    def routes(self) -> Sequence[web.RouteDef]:
        return ()

    async def start(self) -> None:
        await self.watcher.start()

    async def stop(self) -> None:
        await self.watcher.stop()

    async def take(self, path: Path) -> None:
        """Store one dropped file, then move it (and its sidecar) to done/; a bad sidecar
        sends both to error/; a store that cannot write leaves them for a later pass."""
        sidecar_path = sidecar_of(path, SIDECAR_SUFFIX)
        content, sidecar_raw = await asyncio.to_thread(_read, path, sidecar_path)
        companions = [sidecar_path] if sidecar_raw is not None else []
        try:
            if not content:
                raise SidecarError("the file is empty")
            sidecar = read_sidecar(sidecar_raw, self.doc_types) if sidecar_raw is not None else None
        except SidecarError as exc:
            reason = f"{sidecar_path.name}: {exc}" if content else str(exc)
            log.warning("%s drop: %s refused: %s", CHANNEL, path.name, reason)
            await asyncio.to_thread(move_error, path, reason, companions=companions)
            return
        inbound = ged_contact(path.name, content, sidecar)
        try:
            accepted = await self.store.accept_contact(
                inbound, content, Envelope(peer=f"file:{path.name}"[:200])
            )
        except (SQLAlchemyError, OSError) as exc:
            # Not the file's fault: it stays in the folder until the store takes it.
            raise TryLater(f"could not store {path.name}: {exc}") from exc
        self.on_accepted(accepted)
        state = "duplicate of" if accepted.duplicate else "stored as"
        log.info("%s drop: %s %s contact %d", CHANNEL, path.name, state, accepted.contact_id)
        await asyncio.to_thread(move_done, path, companions=companions)


def _read(path: Path, sidecar: Path) -> tuple[bytes, bytes | None]:
    content = path.read_bytes()
    try:
        return content, sidecar.read_bytes()
    except FileNotFoundError:
        return content, None


# --------------------------------------------------------------------------- export


class DossierNotFound(LookupError):
    """No dossier has this reference (or id)."""


@dataclass(frozen=True)
class ExportedDocument:
    """One file of the export: the document's original bytes and their metadata."""

    digest: str
    name: str
    metadata: dict[str, Any]


def _safe_name(filename: str) -> str:
    """A file name that stays inside its folder and is not hidden, whatever was sent."""
    name = re.sub(r"[\x00-\x1f/\\:]+", "_", filename.rsplit("/", 1)[-1]).strip(" .")
    return name[:150] or "document"


async def _export_plan(
    session: AsyncSession, dossier: Dossier
) -> tuple[list[ExportedDocument], dict[str, Any]]:
    documents = (
        await session.scalars(
            select(Document)
            .where(Document.dossier_id == dossier.id)
            .options(selectinload(Document.contact))
            .order_by(Document.id)
        )
    ).all()
    files = []
    for document in documents:
        contact = document.contact
        # The id first: two documents sent with the same name never collide.
        name = f"{document.id:06d}-{_safe_name(document.filename)}"
        files.append(
            ExportedDocument(
                digest=document.sha256,
                name=name,
                metadata={
                    "dossier_ref": dossier.ref,
                    "document_id": document.id,
                    "parent_document_id": document.parent_id,
                    "filename": document.filename,
                    "exported_as": name,
                    "sha256": document.sha256,
                    "size": document.size,
                    "declared_type": document.declared_type,
                    "sniffed_type": document.sniffed_type,
                    "pages": document.pages,
                    "doc_type": document.doc_type,
                    "doc_type_confidence": document.doc_type_confidence,
                    "doc_type_labelled": document.doc_type_hint is not None,
                    "language": document.language,
                    "status": document.status,
                    "reason": document.reason,
                    "received_at": contact.received_at.isoformat(),
                    "sent_at": contact.sent_at.isoformat() if contact.sent_at else None,
                    "contact": {
                        "id": contact.id,
                        "channel": contact.channel,
                        "sender": contact.sender,
                        "subject": contact.subject,
                    },
                },
            )
        )
    manifest = {
        "dossier_ref": dossier.ref,
        "status": dossier.status,
        "claim_type": dossier.claim_type,
        "event_date": dossier.event_date.isoformat() if dossier.event_date else None,
        "opened_after_the_fact": dossier.opened_after_the_fact,
        "documents": [f.name for f in files],
    }
    return files, manifest


def _metadata_bytes(metadata: dict[str, Any]) -> bytes:
    return (json.dumps(metadata, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()


def _write_export(
    store: Store, folder: Path, files: list[ExportedDocument], manifest: dict[str, Any]
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for exported in files:
        content = store.blobs.get(exported.digest)
        if hashlib.sha256(content).hexdigest() != exported.digest:
            raise OSError(f"blob {exported.digest} is corrupt: its bytes do not match")
        target = folder / exported.name
        write_durably(target, content)
        sidecar = sidecar_of(target, SIDECAR_SUFFIX)
        write_durably(sidecar, _metadata_bytes(exported.metadata))
        written += [target, sidecar]
    # The manifest comes last: a reader that finds it finds every file it lists.
    write_durably(folder / MANIFEST, _metadata_bytes(manifest))
    written.append(folder / MANIFEST)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return written


async def export_dossier(store: Store, root: Path, *, ref: str | None = None) -> list[Path]:
    """Write dossier ``ref``'s documents (bytes plus a JSON sidecar each) and a manifest
    under ``root/REF/``; returns the files written. Raises ``DossierNotFound``."""
    return await _export(store, root, Dossier.ref == (ref or "").strip().upper(), ref)


async def _export(store: Store, root: Path, where: Any, label: object) -> list[Path]:
    async with store.sessions() as session:
        dossier = await session.scalar(select(Dossier).where(where))
        if dossier is None:
            raise DossierNotFound(f"no dossier {label}")
        files, manifest = await _export_plan(session, dossier)
        ref = dossier.ref
    if not _REFERENCE.fullmatch(ref):
        raise ValueError(f"dossier reference {ref!r} cannot name a folder")
    written = await asyncio.to_thread(_write_export, store, root / ref, files, manifest)
    log.info("ged export: %s: %d document(s) written to %s", ref, len(files), root / ref)
    return written


class GedExport:
    """Job handler: archives a closed dossier in the GED export folder (safe to replay)."""

    kind = GED_EXPORT_JOB

    def __init__(self, store: Store, root: Path) -> None:
        self.store = store
        self.root = root

    async def run(self, job: ClaimedJob) -> None:
        await _export(self.store, self.root, Dossier.id == job.subject_id, job.subject_id)

    async def on_parked(self, session: AsyncSession, job: ClaimedJob, error: str) -> None:
        dossier = await session.get(Dossier, job.subject_id)
        audit(
            session,
            f"channel:{CHANNEL}",
            "dossier.export_failed",
            "dossier",
            dossier.ref if dossier else job.subject_id,
            note=f"GED export failed after {job.attempts} attempts: {error}",
        )
