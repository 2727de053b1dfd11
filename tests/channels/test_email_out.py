"""Email out through a real relay: the HTML alternative and a PDF attachment from the blob store."""

from __future__ import annotations

from pathlib import Path

import pytest

from channels.base import DeliveryError
from channels.email_out import ATTACHMENTS_HEADER, SmtpRelaySender
from models.blobs import BlobStore
from models.tables import OutboundMessage
from responders.attestation import attestation_pdf
from tests.conftest import Relay, free_port


def _message(**headers: object) -> OutboundMessage:
    return OutboundMessage(
        idempotency_key="contact:1:attestation",
        purpose="attestation",
        template="email/fr/attestation",
        channel="email",
        language="fr",
        recipient="jean.dupont@example.org",
        subject="[AS-2026-000001] Votre attestation d'assistance",
        body_text="Bonjour,\n\nVeuillez trouver l'attestation ci-jointe.\n",
        body_html="<p>Bonjour <strong>Jean &amp; Fils</strong>,</p>",
        headers={"Auto-Submitted": "auto-replied", **headers},
        message_id="abc.attestation@guichet.localhost",
    )


async def test_html_alternative_and_pdf_attachment_reach_the_relay(
    relay: Relay, tmp_path: Path
) -> None:
    blobs = BlobStore(tmp_path)
    pdf = attestation_pdf(
        "Attestation d'assistance", "Guichet atteste que Jean Dupont…\n\nFait le 12 mars 2026."
    )
    digest = blobs.put(pdf)
    ref = {
        "sha256": digest,
        "filename": "attestation-AS-2026-000001.pdf",
        "content_type": "application/pdf",
    }
    sender = SmtpRelaySender(
        relay.host, relay.port, "Guichet", "sinistres@guichet.localhost", blobs=blobs
    )
    await sender.send(_message(**{ATTACHMENTS_HEADER: [ref]}))
    [(envelope, email)] = relay.received
    assert envelope.mail_from == "<>"
    assert email.get_content_type() == "multipart/mixed"
    plain, html = email.get_body(("plain",)), email.get_body(("html",))
    assert plain is not None and "ci-jointe" in plain.get_content()
    assert html is not None and "<strong>Jean &amp; Fils</strong>" in html.get_content()
    [attachment] = list(email.iter_attachments())
    assert attachment.get_filename() == "attestation-AS-2026-000001.pdf"
    assert attachment.get_content_type() == "application/pdf"
    content = attachment.get_content()
    assert content == pdf and content.startswith(b"%PDF-")
    # Our bookkeeping headers never leave.
    assert email[ATTACHMENTS_HEADER] is None
    # The reply's language is said for the whole message (setting the content clears every
    # Content-* header, so it once never left).
    assert email["Content-Language"] == "fr"


@pytest.mark.parametrize("html", [None, "<p>Bonjour</p>"])
async def test_the_reply_says_its_language(relay: Relay, html: str | None) -> None:
    sender = SmtpRelaySender(relay.host, relay.port, "Guichet", "sinistres@guichet.localhost")
    message = _message()
    message.language, message.body_html = "en", html
    await sender.send(message)
    [(_, email)] = relay.received
    assert email["Content-Language"] == "en"


async def test_attestation_pdf_is_reproducible() -> None:
    assert attestation_pdf("A", "b") == attestation_pdf("A", "b")


async def test_missing_blob_is_a_permanent_failure(relay: Relay, tmp_path: Path) -> None:
    ref = {"sha256": "0" * 64, "filename": "x.pdf", "content_type": "application/pdf"}
    sender = SmtpRelaySender(
        relay.host, relay.port, "G", "s@guichet.localhost", blobs=BlobStore(tmp_path)
    )
    with pytest.raises(DeliveryError) as raised:
        await sender.send(_message(**{ATTACHMENTS_HEADER: [ref]}))
    assert raised.value.permanent and relay.received == []


async def test_a_relay_that_hangs_up_after_the_message_makes_it_uncertain(relay: Relay) -> None:
    """It may have queued the message: sending again could deliver it twice."""
    sender = SmtpRelaySender(relay.host, relay.port, "Guichet", "sinistres@guichet.localhost")
    relay.hang_up_after_data = True
    with pytest.raises(DeliveryError) as caught:
        await sender.send(_message())
    assert caught.value.uncertain and not caught.value.permanent
    assert len(relay.received) == 1


async def test_a_relay_that_is_down_is_tried_again_later() -> None:
    sender = SmtpRelaySender("127.0.0.1", free_port(), "Guichet", "sinistres@guichet.localhost")
    with pytest.raises(DeliveryError) as caught:
        await sender.send(_message())
    assert not caught.value.uncertain and not caught.value.permanent


async def test_a_kept_session_carries_the_next_replies_then_is_released(relay: Relay) -> None:
    sender = SmtpRelaySender(
        relay.host, relay.port, "Guichet", "sinistres@guichet.localhost", keep_connections=1
    )
    for _ in range(3):
        await sender.send(_message())
    assert len(relay.received) == 3
    assert sender.connections_opened == 1 and len(set(relay.peers)) == 1
    await sender.release()
    await sender.send(_message())
    assert sender.connections_opened == 2 and len(set(relay.peers)) == 2
    await sender.release()


async def test_a_session_the_relay_ended_is_replaced_without_losing_the_reply(
    relay: Relay,
) -> None:
    """The relay takes two messages per session, then answers 421 to MAIL FROM: nothing was
    handed over, so the reply goes out at once on a new connection, once."""
    relay.messages_per_session = 2
    sender = SmtpRelaySender(
        relay.host, relay.port, "Guichet", "sinistres@guichet.localhost", keep_connections=1
    )
    for _ in range(5):
        await sender.send(_message())
    assert len(relay.received) == 5
    assert sender.connections_opened == 3
    assert [relay.peers.count(peer) for peer in dict.fromkeys(relay.peers)] == [2, 2, 1]
    await sender.release()


async def test_without_keeping_each_reply_has_its_own_session(relay: Relay) -> None:
    sender = SmtpRelaySender(relay.host, relay.port, "Guichet", "sinistres@guichet.localhost")
    await sender.send(_message())
    await sender.send(_message())
    assert sender.connections_opened == 2 and len(set(relay.peers)) == 2
