"""Where a contact's automatic replies go, channel by channel, and when they go nowhere."""

from __future__ import annotations

import pytest

from models.tables import Beneficiary, Contact, Dossier
from responders.acknowledge import MailIdentity, ReplyRoute, reply_route

US = MailIdentity("Guichet", "sinistres", "guichet.localhost", ("guichet.localhost",))


def _contact(channel: str, sender: str, automatic: str | None = None) -> Contact:
    return Contact(channel=channel, sender=sender, natural_key="k", automatic_reason=automatic)


def _dossier(emails: list[str]) -> Dossier:
    dossier = Dossier(ref="AS-2026-000001", claim_type="medical_abroad")
    dossier.beneficiary = Beneficiary(name="Lucie Martin", emails=emails, phones=[])
    return dossier


@pytest.mark.parametrize(
    ("channel", "sender", "route"),
    [
        ("email", "jean@example.org", ReplyRoute("email", "jean@example.org")),
        ("sms", "+33612345678", ReplyRoute("sms", "+33612345678")),
        ("chat", "chat:c_4f2a", ReplyRoute("chat", "chat:c_4f2a")),
        ("chat", "lucie@example.org", ReplyRoute("chat", "lucie@example.org")),
    ],
)
def test_replies_go_back_on_the_channel_used(channel: str, sender: str, route: ReplyRoute) -> None:
    assert reply_route(_contact(channel, sender), None, US) == route


@pytest.mark.parametrize(
    ("contact", "reason"),
    [
        (_contact("email", "jean@example.org", "bounce"), "automatic message (bounce)"),
        (_contact("sms", "+33612345678", "SMS opt-out keyword"), "automatic message (SMS opt"),
        (_contact("email", "robot@guichet.localhost"), "one of our own addresses"),
        (_contact("email", "no-at-sign"), "no sender address"),
        (_contact("sms", "0612345678"), "not a phone number SMS can answer"),
        (_contact("edi", "62912910111069"), "CONTRL message is its only reply"),
        (_contact("fax", "+33100000000"), "no automatic reply on channel fax"),
    ],
)
def test_no_route_says_why(contact: Contact, reason: str) -> None:
    route = reply_route(contact, None, US)
    assert isinstance(route, str) and reason in route


def test_scanned_mail_news_go_to_the_beneficiary_email_without_acknowledgement() -> None:
    letter = _contact("ged", "mailroom")
    assert reply_route(letter, _dossier(["lucie@example.org", "l.martin@example.com"]), US) == (
        ReplyRoute("email", "lucie@example.org", acknowledge=False)
    )
    no_email = reply_route(letter, _dossier([]), US)
    assert isinstance(no_email, str) and "no dossier beneficiary with an email" in no_email
    assert isinstance(reply_route(letter, None, US), str)
