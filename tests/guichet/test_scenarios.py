"""Dossier scenarios through the real SMTP path, the real service and a real relay."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import date, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest

from guichet.settings import PROJECT_ROOT
from intake.coverage import load_claim_types
from tests.conftest import Relay
from tests.guichet.documents import pdf
from tests.guichet.service import DOMAIN, GuichetProcess

pytestmark = pytest.mark.slow
TODAY = date.today()  # contracts and events are placed around the day the test runs
YEAR = TODAY.year
CLAIM_TYPES = load_claim_types(PROJECT_ROOT / "config" / "claim_types.toml")


def _reference_data() -> str:
    def d(days: int) -> str:
        return (TODAY + timedelta(days=days)).isoformat()

    return f"""
[[beneficiaries]]
key = "lucie"
name = "Lucie Martin"
emails = ["lucie.martin@example.org"]
phones = ["+33611223344"]

[[beneficiaries]]
key = "paul"
name = "Paul Henry"
emails = ["paul.henry@example.org"]
phones = ["+33655667788"]

[[beneficiaries]]
key = "marc"
name = "Marc Petit"
emails = ["marc.petit@example.org"]
phones = ["+33699887766"]

[[contracts]]
number = "CT90000001"
product = "Assistance Voyage"
beneficiary = "lucie"
starts_on = {d(-200)}
ends_on = {d(165)}
  [[contracts.guarantees]]
  code = "FRAIS_MEDICAUX"
  claim_types = ["medical_costs_abroad"]
  ceiling = "5000.00"
  deductible = "30.00"
  declaration_days = 30

[[contracts]]
number = "CT90000002"
product = "Assistance Voyage"
beneficiary = "paul"
starts_on = {d(-800)}
ends_on = {d(-435)}
  [[contracts.guarantees]]
  code = "FRAIS_MEDICAUX"
  claim_types = ["medical_costs_abroad"]
  ceiling = "5000.00"
  deductible = "30.00"

[[contracts]]
number = "CT90000003"
product = "Assistance Voyage"
beneficiary = "marc"
starts_on = {d(-100)}
ends_on = {d(265)}
  [[contracts.guarantees]]
  code = "FRAIS_MEDICAUX"
  claim_types = ["medical_costs_abroad"]
  ceiling = "5000.00"

[[dossiers]]
ref = "AS-{YEAR}-900001"
contract = "CT90000002"
claim_type = "medical_costs_abroad"
event_date = {d(-400)}
declared_on = {d(-399)}
event_place = "Lisbonne"
status = "awaiting_documents"
"""


@pytest.fixture
async def guichet(tmp_path: Path, relay: Relay) -> AsyncIterator[GuichetProcess]:
    # Four emails in a minute earn eight replies: above the anti-loop cap, tested elsewhere.
    service = GuichetProcess(
        tmp_path / "home", relay.port, {"GUICHET_MAX_AUTOMATIC_PER_HOUR": "20"}
    )
    service.home.mkdir()
    data = tmp_path / "scenario.toml"
    data.write_text(_reference_data(), encoding="utf-8")
    loaded = service.cli("load", str(data))
    assert loaded.returncode == 0, loaded.stderr
    await service.start()
    try:
        yield service
    finally:
        service.stop()


def _mail(
    sender: str, subject: str, body: str, *docs: str, reply_to: str | None = None, **headers: str
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = f"sinistres@{DOMAIN}"
    message["Subject"] = subject
    message["Message-ID"] = f"<{abs(hash((sender, subject, body, docs)))}@example.org>"
    if reply_to:
        message["In-Reply-To"] = f"<{reply_to}>"
        message["References"] = f"<{reply_to}>"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    for doc in docs:
        message.add_attachment(
            pdf(doc), maintype="application", subtype="pdf", filename=f"{doc}.pdf"
        )
    return message.as_bytes(policy=SMTP)


async def _deliver(guichet: GuichetProcess, raw: bytes) -> dict[str, Any]:
    code, reply = await guichet.send(raw)
    assert code == 250, reply
    match = re.search(rb"contact (\d+)", reply)
    assert match
    return dict(await guichet.wait_contact(int(match.group(1)), ("processed", "needs_review")))


async def _replies(
    guichet: GuichetProcess, recipient: str, purpose: str, status: str = "sent"
) -> list[dict[str, Any]]:
    outbox = await guichet.get(f"/api/outbox?status={status}&limit=200")
    return [
        m for m in outbox["messages"] if m["recipient"] == recipient and m["purpose"] == purpose
    ]


def _text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


async def test_claim_opened_after_the_fact_then_documents_over_three_emails(
    guichet: GuichetProcess, relay: Relay
) -> None:
    lucie = "lucie.martin@example.org"
    event = TODAY - timedelta(days=5)
    first = await _deliver(
        guichet,
        _mail(
            f"Lucie Martin <{lucie}>",
            "Accident pendant mes vacances",
            f"Bonjour,\nJe me suis cassé le poignet en tombant à Barcelone le {event:%d/%m/%Y}. "
            "J'ai été soignée à la clinique et j'ai dû avancer les frais médicaux. "
            "Je n'ai pas pu vous appeler sur place. Comment être remboursée ?\nLucie Martin",
        ),
    )
    ref = first["dossier_ref"]
    assert ref and re.fullmatch(rf"AS-{YEAR}-\d{{6}}", ref), first
    dossier = await guichet.get(f"/api/dossiers/{ref}")
    assert dossier["opened_after_the_fact"] is True
    assert dossier["claim_type"] == "medical_costs_abroad"
    assert dossier["event_date"] == event.isoformat()
    assert dossier["status"] == "awaiting_documents"
    assert dossier["summary"]
    required = [
        "medical_invoice",
        "medical_certificate",
        "social_security_statement",
        "bank_details",
    ]
    assert dossier["missing"] == required

    assert len(await _replies(guichet, lucie, "missing_documents")) == 1
    claim = CLAIM_TYPES["medical_costs_abroad"]
    await relay.wait_for(2)
    requests = [
        m
        for e, m in relay.received
        if e.rcpt_tos == [lucie] and claim.describe("bank_details") in _text(m)
    ]
    assert len(requests) == 1
    for doc in required:  # exactly the required documents, in plain words
        assert claim.describe(doc) in _text(requests[0])
    thread = str(requests[0]["Message-ID"]).strip("<>")
    await _deliver(
        guichet,
        _mail(
            lucie,
            f"Re: {ref}",
            "Voici la facture et le certificat.",
            "medical_invoice",
            "medical_certificate",
            reply_to=thread,
        ),
    )
    assert (await guichet.get(f"/api/dossiers/{ref}"))["missing"] == [
        "social_security_statement",
        "bank_details",
    ]
    await _deliver(
        guichet,
        _mail(
            lucie,
            f"Re: {ref}",
            "Le décompte de la CPAM.",
            "social_security_statement",
            reply_to=thread,
        ),
    )
    assert (await guichet.get(f"/api/dossiers/{ref}"))["missing"] == ["bank_details"]
    await _deliver(
        guichet, _mail(lucie, f"Re: {ref}", "Et mon RIB.", "bank_details", reply_to=thread)
    )
    dossier = await guichet.get(f"/api/dossiers/{ref}")
    assert dossier["missing"] == []
    assert dossier["status"] == "in_review"
    assert all(item["received"] for item in dossier["checklist"])
    assert dossier["coverage"]["covered"] is True
    assert dossier["coverage"]["amount_claimed"] == "520.40"
    assert dossier["coverage"]["amount_covered"] == "280.40"  # 520.40 - 210.00 refunded - 30.00

    await asyncio.sleep(1)
    assert len(await _replies(guichet, lucie, "missing_documents")) == 3  # one per change
    assert len(await _replies(guichet, lucie, "completion")) == 1
    assert len(await _replies(guichet, lucie, "acknowledgement")) == 4
    assert len(dossier["contacts"]) == 4


async def test_expired_contract_refusal_is_held_until_approved(
    guichet: GuichetProcess, relay: Relay
) -> None:
    paul = "paul.henry@example.org"
    ref = f"AS-{YEAR}-900001"
    contact = await _deliver(
        guichet,
        _mail(
            paul,
            f"Remboursement {ref}",
            f"Bonjour, merci de me rembourser les frais médicaux du dossier {ref}.",
            "medical_invoice",
        ),
    )
    assert contact["dossier_ref"] == ref
    dossier = await guichet.get(f"/api/dossiers/{ref}")
    assert dossier["coverage"]["covered"] is False
    assert "contract_not_in_force" in {r["code"] for r in dossier["coverage"]["reasons"]}
    [held] = await _replies(guichet, paul, "refusal", status="held")
    await asyncio.sleep(1)
    assert not [
        m
        for e, m in relay.received
        if e.rcpt_tos == [paul] and m["Subject"] and "cusé" not in m["Subject"]
    ]
    await guichet.post(f"/api/outbox/{held['id']}/approve")
    async with asyncio.timeout(30):
        # Another process's state: nothing to wait on but its API.
        while not await _replies(guichet, paul, "refusal"):  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    refusal = [
        m
        for e, m in relay.received
        if e.rcpt_tos == [paul] and "Réponse à votre demande" in str(m["Subject"])
    ]
    assert len(refusal) == 1


async def test_stranger_quoting_someone_elses_reference_goes_to_review(
    guichet: GuichetProcess,
) -> None:
    ref = f"AS-{YEAR}-900001"
    contact = await _deliver(
        guichet, _mail("curieux@example.net", f"Dossier {ref}", f"Où en est le dossier {ref} ?")
    )
    assert contact["dossier_ref"] is None
    assert contact["status"] == "needs_review"
    assert "not party" in contact["status_reason"]


async def test_auto_reply_and_bounce_get_no_answer(guichet: GuichetProcess, relay: Relay) -> None:
    lucie = "lucie.martin@example.org"
    await _deliver(
        guichet,
        _mail(lucie, "Absence", "Je suis absente jusqu'au 3.", Auto_Submitted="auto-replied"),
    )
    bounce = _mail(
        f"MAILER-DAEMON@{DOMAIN.replace('guichet', 'mx')}", "Undelivered Mail", "Delivery failed"
    )
    code, _ = await guichet.send(bounce, mail_from="")
    assert code == 250
    await asyncio.sleep(3)
    assert not [e for e, _ in relay.received]


async def test_kill_after_250_still_one_missing_documents_request(
    guichet: GuichetProcess, relay: Relay
) -> None:
    marc = "marc.petit@example.org"
    event = TODAY - timedelta(days=3)
    code, reply = await guichet.send(
        _mail(
            marc,
            "Hospitalisation à Rome",
            f"Bonjour, j'ai fait un malaise à Rome le {event:%d/%m/%Y} et j'ai été hospitalisé. "
            "Je n'ai pas pu vous appeler sur place et j'ai dû avancer les frais médicaux. "
            "Comment être remboursé ? Marc Petit",
        )
    )
    assert code == 250
    guichet.kill()
    await guichet.start()
    match = re.search(rb"contact (\d+)", reply)
    assert match
    contact = await guichet.wait_contact(int(match.group(1)), ("processed", "needs_review"))
    assert contact["dossier_ref"], contact
    await asyncio.sleep(2)
    assert len(await _replies(guichet, marc, "missing_documents")) == 1
    assert len(await _replies(guichet, marc, "acknowledgement")) == 1
