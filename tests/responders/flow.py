"""Drive the respond step over a real store: contacts put straight at ``respond`` on a dossier."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from guichet.service import build_runner
from guichet.settings import PROJECT_ROOT, load_settings
from intake.reading import OcrPool
from intake.runner import JobRunner
from models.inbound import InboundContact
from models.reference import load_reference_data, read_reference_file
from models.store import Store
from models.tables import Contact, Dossier, OutboundMessage
from tests.conftest import Relay

REF = "AS-2026-000001"  # medical costs abroad in config/demo.toml


async def load_demo(store: Store) -> None:
    async with store.sessions() as session, session.begin():
        await load_reference_data(
            session, read_reference_file(PROJECT_ROOT / "config" / "demo.toml")
        )


def runner(store: Store, ocr: OcrPool, relay: Relay, **settings: Any) -> JobRunner:
    return build_runner(
        load_settings(
            environ={}, smtp_relay=f"{relay.host}:{relay.port}", home="unused", **settings
        ),
        store,
        ocr,
    )


async def set_dossier(store: Store, ref: str = REF, **values: Any) -> int:
    """Set the evaluation results the evaluate step would have committed."""
    async with store.sessions() as session, session.begin():
        await session.execute(update(Dossier).where(Dossier.ref == ref).values(**values))
        dossier_id = await session.scalar(select(Dossier.id).where(Dossier.ref == ref))
        assert dossier_id is not None
        return dossier_id


async def contact_at_respond(
    store: Store,
    key: str,
    *,
    ref: str | None = REF,
    intent: str | None = None,
    sender: str = "jean.dupont@example.org",
    name: str = "Jean Dupont",
    language: str = "fr",
) -> int:
    """A contact that went through extract, classify, match and evaluate: only respond is left."""
    accepted = await store.accept_contact(
        InboundContact(
            channel="email",
            natural_key=f"email:{key}",
            message_id=key,
            sender=sender,
            sender_name=name,
            subject="Mon dossier",
            text="Bonjour",
            sent_at=datetime(2026, 11, 2, tzinfo=UTC),
        ),
        b"raw " + key.encode(),
    )
    async with store.sessions() as session, session.begin():
        dossier_id = (
            await session.scalar(select(Dossier.id).where(Dossier.ref == ref)) if ref else None
        )
        await session.execute(
            update(Contact)
            .where(Contact.id == accepted.contact_id)
            .values(
                step="respond",
                status="processing",
                dossier_id=dossier_id,
                intent=intent,
                language=language,
            )
        )
    return accepted.contact_id


async def replies(store: Store) -> list[OutboundMessage]:
    async with store.sessions() as session:
        return list(
            (await session.scalars(select(OutboundMessage).order_by(OutboundMessage.id))).all()
        )
