"""The caching header registry: one class per header name, the same headers as policy.default."""

from __future__ import annotations

import email.policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser

from channels.mail_policy import DEFAULT, CachingHeaderRegistry

RAW = (
    b"From: =?utf-8?q?Jean-Fran=C3=A7ois_Dupr=C3=A9?= <jf@example.org>\r\n"
    b'To: sinistres@guichet.example, "Assistance" <aide@example.net>\r\n'
    b"Subject: =?iso-8859-1?q?Remboursement_d=E9j=E0_demand=E9?=\r\n"
    b"Date: Mon, 07 Dec 2026 10:00:00 +0100\r\n"
    b"Message-ID: <abc@example.org>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Bonjour\r\n"
)


def test_one_class_per_header_name_whatever_its_case() -> None:
    registry = CachingHeaderRegistry()
    assert registry["Subject"] is registry["subject"]
    assert registry["From"] is not registry["Subject"]
    assert registry["X-Unknown"] is registry["x-unknown"]


def test_mapping_a_name_again_replaces_its_kept_class() -> None:
    registry = CachingHeaderRegistry()
    before = registry["X-Dossier"]
    registry.map_to_type("X-Dossier", email.headerregistry.AddressHeader)
    after = registry["x-dossier"]
    assert after is not before
    assert issubclass(after, email.headerregistry.AddressHeader)


def test_parses_like_the_stock_policy() -> None:
    ours = BytesParser(policy=DEFAULT).parsebytes(RAW)
    stock = BytesParser(policy=email.policy.default).parsebytes(RAW)
    for name in ("From", "To", "Subject", "Date", "Message-ID", "Content-Type"):
        assert str(ours[name]) == str(stock[name])
        assert type(ours[name]).__mro__[1:] == type(stock[name]).__mro__[1:]
    assert ours["From"].addresses[0].display_name == "Jean-François Dupré"
    assert ours.get_content() == stock.get_content()


def build(policy: email.policy.EmailPolicy[EmailMessage]) -> bytes:
    message = EmailMessage(policy=policy)
    message["From"] = Address("Guichet Assistance", "sinistres", "guichet.example")
    message["To"] = "Jean-François Dupré <jf@example.org>"
    message["Subject"] = "Votre demande a bien été reçue — dossier AS-2026-000123"
    message["Date"] = "Mon, 07 Dec 2026 10:00:00 +0100"
    message["Content-Language"] = "fr"
    message.set_content("Bonjour,\n\nNous avons bien reçu votre demande.\n")
    message.add_alternative("<p>Nous avons bien reçu votre demande.</p>", subtype="html")
    # The generator draws a random boundary; a fixed one makes the bytes comparable.
    message.set_boundary("guichet-boundary")
    return message.as_bytes()


def test_builds_the_same_bytes_as_the_stock_policy() -> None:
    ours = build(DEFAULT)
    assert ours == build(email.policy.default)
    # Twice through the kept classes: still the same bytes.
    assert build(DEFAULT) == ours
