"""Which replies a contact deserves: the pure decision, then once per change over a real store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from intake.reading import OcrPool
from models.store import Store
from models.tables import AuditEvent, Job
from responders.decide import (
    HOLD_ATTESTATION,
    HOLD_REFUSAL,
    MISSING_HEADER,
    ContactFacts,
    DossierFacts,
    ReplyPolicy,
    RequestFacts,
    completion_round,
    decide,
    digest,
    parse_reminder_days,
    request_round,
    why_cancel,
)
from responders.outbox import CAP_REACHED
from tests.conftest import Relay
from tests.responders.flow import contact_at_respond, load_demo, replies, runner, set_dossier

REFUSED = {
    "decided": True,
    "covered": False,
    "reasons": [
        {
            "code": "contract_expired",
            "clause": "3.1",
            "message_fr": "Le contrat n'était plus en vigueur le jour de l'événement.",
            "message_en": "The contract was no longer in force on the day of the event.",
            "effect": "refusal",
        },
        {
            "code": "over_ceiling",
            "clause": "5.2",
            "message_fr": "Plafond atteint.",
            "message_en": "Ceiling reached.",
            "effect": "adjustment",
        },
    ],
    "amount_claimed": "1250.40",
    "amount_covered": None,
    "currency": "EUR",
    "rates_used": [],
    "guarantee": None,
}


def _dossier(
    missing: tuple[str, ...] = (),
    coverage: dict[str, object] | None = None,
    *,
    last: RequestFacts | None = None,
    completed: frozenset[int] = frozenset(),
) -> DossierFacts:
    return DossierFacts(3, missing, coverage or {}, last, completed)


def _keys(
    contact: ContactFacts, dossier: DossierFacts | None, policy: ReplyPolicy | None = None
) -> list[str]:
    return [plan.key for plan in decide(contact, dossier, policy or ReplyPolicy())]


CONTACT = ContactFacts(12, None, None)


def test_missing_documents_request_and_reminders_are_keyed_by_round() -> None:
    plans = decide(CONTACT, _dossier(("bank_details", "medical_invoice")), ReplyPolicy())
    version = digest(["medical_invoice", "bank_details"])
    assert [(p.purpose, p.key, p.delay_days, p.hold) for p in plans] == [
        ("acknowledgement", "contact:12:acknowledgement", 0, None),
        ("missing_documents", "dossier:3:missing_documents:1", 0, None),
        ("missing_documents", "dossier:3:missing_documents:1:reminder:1", 7, None),
        ("missing_documents", "dossier:3:missing_documents:1:reminder:2", 21, None),
    ]
    assert {p.missing_digest for p in plans[1:]} == {version}
    asked = RequestFacts(1, version, active=True)
    # The same list in another order is the same round: a later contact sends nothing more.
    later = _dossier(("medical_invoice", "bank_details"), last=asked)
    assert _keys(ContactFacts(13, None, None), later)[1] == plans[1].key
    # Another list is a new round.
    assert _keys(CONTACT, _dossier(("bank_details",), last=asked))[1] == (
        "dossier:3:missing_documents:2"
    )


def test_a_list_that_returns_to_an_earlier_state_is_asked_again() -> None:
    first = digest(["bank_details", "medical_invoice"])
    second = RequestFacts(2, digest(["bank_details"]), active=True)
    # Round 1 asked for both, round 2 for one; the list is back to both: round 3 says so.
    back = _dossier(("bank_details", "medical_invoice"), last=second)
    plans = decide(CONTACT, back, ReplyPolicy())
    assert (plans[1].key, plans[1].missing_digest) == ("dossier:3:missing_documents:3", first)
    # Complete, then the same list is missing again (a document was rejected): a new round.
    done = _dossier(("bank_details",), last=second, completed=frozenset({2}))
    assert _keys(CONTACT, done)[1] == "dossier:3:missing_documents:3"


def test_request_and_completion_rounds_are_read_back_from_keys() -> None:
    assert request_round("dossier:3:missing_documents:2") == (2, False)
    assert request_round("dossier:3:missing_documents:2:reminder:1") == (2, True)
    assert request_round("contact:3:acknowledgement") is None
    assert request_round("dossier:3:missing_documents:ab12cd34") is None
    assert completion_round("dossier:3:completion:4") == 4
    assert completion_round("dossier:3:missing_documents:4") is None


def test_automatic_messages_get_nothing() -> None:
    contact = ContactFacts(12, "status_inquiry", "automatic message (bounce)")
    assert decide(contact, _dossier(("bank_details",), REFUSED), ReplyPolicy()) == []


def test_completion_once_per_round_that_asked() -> None:
    assert _keys(CONTACT, _dossier()) == ["contact:12:acknowledgement"]
    asked = RequestFacts(1, digest(["bank_details"]), active=True)
    assert _keys(CONTACT, _dossier(last=asked)) == [
        "contact:12:acknowledgement",
        "dossier:3:completion:1",
    ]
    assert _keys(CONTACT, _dossier(last=asked, completed=frozenset({1}))) == [
        "contact:12:acknowledgement"
    ]
    # Complete again after a later round: that round gets its own completion message.
    again = RequestFacts(2, digest(["medical_invoice"]), active=True)
    assert _keys(CONTACT, _dossier(last=again, completed=frozenset({1})))[1:] == [
        "dossier:3:completion:2"
    ]
    # A request a gestionnaire rejected (or that was cancelled) asked nobody: nothing to close.
    rejected = RequestFacts(1, digest(["bank_details"]), active=False)
    assert _keys(CONTACT, _dossier(last=rejected)) == ["contact:12:acknowledgement"]


def test_scanned_mail_is_not_acknowledged_but_its_dossier_news_go_out() -> None:
    letter = ContactFacts(12, None, None, acknowledge=False)
    assert _keys(letter, _dossier(("bank_details",))) == [
        "dossier:3:missing_documents:1",
        "dossier:3:missing_documents:1:reminder:1",
        "dossier:3:missing_documents:1:reminder:2",
    ]


def test_refusal_is_held_unless_every_code_is_sent_automatically() -> None:
    plans = decide(CONTACT, _dossier(("bank_details",), REFUSED), ReplyPolicy())
    # A refused claimant is not asked for more documents.
    assert [(p.purpose, p.key, p.hold) for p in plans[1:]] == [
        ("refusal", f"dossier:3:refusal:{digest(['contract_expired'])}", HOLD_REFUSAL)
    ]
    auto = ReplyPolicy(auto_send_refusal_codes=frozenset({"contract_expired"}))
    assert decide(CONTACT, _dossier((), REFUSED), auto)[1].hold is None
    undecided = REFUSED | {"decided": False}
    assert _keys(CONTACT, _dossier((), undecided)) == ["contact:12:acknowledgement"]


def test_status_answer_and_attestation_follow_the_intent() -> None:
    assert _keys(ContactFacts(12, "status_inquiry", None), None) == [
        "contact:12:acknowledgement",
        "contact:12:status_answer",
    ]
    plans = decide(ContactFacts(12, "attestation_request", None), _dossier(), ReplyPolicy())
    assert [(p.key, p.hold) for p in plans[1:]] == [("contact:12:attestation", HOLD_ATTESTATION)]
    # No dossier, nothing to attest: the gestionnaire sees the contact in review.
    assert _keys(ContactFacts(12, "attestation_request", None), None) == [
        "contact:12:acknowledgement"
    ]


def test_why_cancel_compares_with_the_missing_list_now() -> None:
    headers = {MISSING_HEADER: digest(["a", "b"])}
    assert why_cancel(headers, ["b", "a"]) is None
    assert why_cancel(headers, []) == "no document is missing any more"
    assert why_cancel(headers, ["a"]) == (
        "the list of missing documents changed since this request was written"
    )
    assert why_cancel({}, []) is None


def test_reminder_days_setting() -> None:
    assert parse_reminder_days("21, 7") == (7, 21)
    assert parse_reminder_days("") == ()
    with pytest.raises(ValueError, match="positive"):
        parse_reminder_days("0")


# --- over a real store and a real relay -------------------------------------------------------


@pytest.fixture(scope="module")
def ocr() -> Iterator[OcrPool]:
    pool = OcrPool(1)
    yield pool
    pool.shutdown()


async def _make_due(store: Store) -> None:
    async with store.sessions() as session, session.begin():
        await session.execute(update(Job).values(run_after=datetime.now(UTC)))


async def test_missing_documents_once_per_change_with_reminders_cancelled_when_stale(
    store: Store, ocr: OcrPool, relay: Relay
) -> None:
    await load_demo(store)
    # One person writing five times: above the default cap, tested on its own below.
    jobs = runner(store, ocr, relay, max_automatic_per_hour=50)
    await set_dossier(store, missing=["medical_invoice", "bank_details"])
    await contact_at_respond(store, "c1@example.org")
    await jobs.run_pending()
    first = await replies(store)
    assert [(r.purpose, r.status) for r in first] == [
        ("acknowledgement", "sent"),
        ("missing_documents", "sent"),
        ("missing_documents", "queued"),
        ("missing_documents", "queued"),
    ]
    request = first[1]
    assert (
        "les factures acquittées de l'hôpital, du médecin ou de la pharmacie" in request.body_text
    )
    assert "un relevé d'identité bancaire (RIB) à votre nom" in request.body_text
    assert (
        request.body_html is not None
        and "<li>un relevé d&#39;identité bancaire" in request.body_html
    )
    now = datetime.now(UTC)
    for reminder, days in zip(first[2:], (7, 21), strict=True):
        assert reminder.send_after is not None
        assert (
            timedelta(days=days) - timedelta(minutes=5)
            < reminder.send_after - now
            <= timedelta(days=days)
        )
    async with store.sessions() as session:
        waiting = (
            await session.scalars(select(Job.run_after).where(Job.status == "pending"))
        ).all()
    assert len(waiting) == 2 and all(at > now + timedelta(days=6) for at in waiting)

    # A later contact with the same missing list (and a replay) sends no second request.
    await contact_at_respond(store, "c2@example.org")
    await jobs.run_pending()
    assert [r.purpose for r in await replies(store)][4:] == ["acknowledgement"]

    # One document arrived: a new request for what is still missing, and the old reminders,
    # when their time comes, are cancelled rather than sent.
    await set_dossier(store, missing=["bank_details"])
    await contact_at_respond(store, "c3@example.org")
    await jobs.run_pending()
    await _make_due(store)
    await jobs.run_pending()
    by_key = {r.idempotency_key: r for r in await replies(store)}
    old = [r for k, r in by_key.items() if k.startswith(request.idempotency_key + ":reminder")]
    assert [(r.status, r.status_reason) for r in old] == [
        ("cancelled", "the list of missing documents changed since this request was written")
    ] * 2
    new = by_key[f"dossier:{request.dossier_id}:missing_documents:2"]
    assert new.status == "sent" and "factures" not in new.body_text
    reminders = [r for k, r in by_key.items() if k.startswith(new.idempotency_key + ":")]
    assert [r.status for r in reminders] == ["sent", "sent"]  # still missing: they go
    async with store.sessions() as session:
        cancelled = (
            await session.scalars(select(AuditEvent).where(AuditEvent.action == "reply.cancelled"))
        ).all()
    assert len(cancelled) == 2 and cancelled[0].before == {"status": "queued", "reason": None}

    # Nothing missing any more: the completion acknowledgement, once.
    await set_dossier(store, missing=[])
    await contact_at_respond(store, "c4@example.org")
    await contact_at_respond(store, "c5@example.org")
    await jobs.run_pending()
    purposes = [r.purpose for r in await replies(store)]
    assert purposes.count("completion") == 1
    subjects = [m["Subject"] for _, m in relay.received]
    assert "[AS-2026-000001] Votre dossier est complet" in subjects
    assert "[AS-2026-000001] Rappel : documents à nous transmettre" in subjects

    # The RIB turns out unusable: the list is back to an earlier state. The person is asked
    # again (round 3), and told again when the dossier is complete once more.
    await set_dossier(store, missing=["bank_details"])
    await contact_at_respond(store, "c6@example.org")
    await jobs.run_pending()
    await set_dossier(store, missing=[])
    await contact_at_respond(store, "c7@example.org")
    await jobs.run_pending()
    keys = {r.idempotency_key: r.status for r in await replies(store)}
    base = f"dossier:{request.dossier_id}"
    assert keys[f"{base}:missing_documents:3"] == "sent"
    completions = [f"{base}:completion:2", f"{base}:completion:3"]
    assert [k for k in keys if ":completion" in k] == completions
    assert {keys[k] for k in completions} == {"sent"}


async def test_refusal_is_held_with_its_reasons(store: Store, ocr: OcrPool, relay: Relay) -> None:
    await load_demo(store)
    await set_dossier(store, missing=["bank_details"], coverage=REFUSED)
    await contact_at_respond(store, "r1@example.org", language="en")
    await runner(store, ocr, relay).run_pending()
    [_, refusal] = await replies(store)
    assert (refusal.purpose, refusal.status, refusal.status_reason) == (
        "refusal",
        "held",
        HOLD_REFUSAL,
    )
    assert (
        "The contract was no longer in force on the day of the event. (clause 3.1"
        in refusal.body_text
    )
    assert "€1,250.40" in refusal.body_text and "Ceiling reached" not in refusal.body_text
    assert len(relay.received) == 1  # the acknowledgement only


async def test_refusal_codes_listed_in_settings_go_automatically(
    store: Store, ocr: OcrPool, relay: Relay
) -> None:
    await load_demo(store)
    await set_dossier(store, coverage=REFUSED)
    await contact_at_respond(store, "r2@example.org")
    await runner(store, ocr, relay, auto_send_refusal_codes="contract_expired").run_pending()
    assert [(r.purpose, r.status) for r in await replies(store)] == [
        ("acknowledgement", "sent"),
        ("refusal", "sent"),
    ]
    [_, (_, refusal)] = relay.received
    assert refusal["Subject"] == "[AS-2026-000001] Réponse à votre demande de prise en charge"
    body = refusal.get_body(("plain",))
    assert body is not None and "1\u202f250,40\xa0€" in body.get_content()


async def test_per_recipient_cap_holds_automatic_replies(
    store: Store, ocr: OcrPool, relay: Relay
) -> None:
    await load_demo(store)
    await set_dossier(store, missing=["bank_details"])
    for n in range(3):
        await contact_at_respond(store, f"loop{n}@example.org", intent="status_inquiry")
    await runner(store, ocr, relay, max_automatic_per_hour=3).run_pending()
    statuses = [(r.purpose, r.status, r.status_reason) for r in await replies(store)]
    due = [s for s in statuses if s[1] != "queued"]  # the reminders wait for their day
    assert due[:3] == [
        ("acknowledgement", "sent", None),
        ("missing_documents", "sent", None),
        ("status_answer", "sent", None),
    ]
    assert due[3:] == [
        ("acknowledgement", "held", CAP_REACHED),
        ("status_answer", "held", CAP_REACHED),
        ("acknowledgement", "held", CAP_REACHED),
        ("status_answer", "held", CAP_REACHED),
    ]
    assert len(relay.received) == 3


async def test_reminders_of_a_request_held_by_the_cap_are_cancelled(
    store: Store, ocr: OcrPool, relay: Relay
) -> None:
    await load_demo(store)
    await set_dossier(store, missing=["bank_details"])
    # The acknowledgement takes the only automatic reply of the hour: the request is held.
    await contact_at_respond(store, "held@example.org")
    jobs = runner(store, ocr, relay, max_automatic_per_hour=1)
    await jobs.run_pending()
    await _make_due(store)
    await jobs.run_pending()
    statuses = [(r.purpose, r.status, r.status_reason) for r in await replies(store)]
    assert statuses == [
        ("acknowledgement", "sent", None),
        ("missing_documents", "held", CAP_REACHED),
        ("missing_documents", "cancelled", "its request was not sent (it is held)"),
        ("missing_documents", "cancelled", "its request was not sent (it is held)"),
    ]
    assert len(relay.received) == 1


async def test_status_answer_says_state_missing_and_next_step(
    store: Store, ocr: OcrPool, relay: Relay
) -> None:
    await load_demo(store)
    await set_dossier(store, missing=["bank_details"], status="awaiting_documents")
    await contact_at_respond(store, "s1@example.org", intent="status_inquiry", language="en")
    await runner(store, ocr, relay).run_pending()
    answer = next(r for r in await replies(store) if r.purpose == "status_answer")
    assert answer.status == "sent"
    assert (
        "Your file AS-2026-000001 (Medical costs abroad) is awaiting documents." in answer.body_text
    )
    assert "your bank details (RIB) in your name" in answer.body_text
    assert "Next step: as soon as we receive these documents" in answer.body_text


async def test_attestation_is_a_held_email_with_its_pdf(
    store: Store, ocr: OcrPool, relay: Relay
) -> None:
    await load_demo(store)
    await contact_at_respond(store, "att@example.org", intent="attestation_request")
    await runner(store, ocr, relay).run_pending()
    attestation = next(r for r in await replies(store) if r.purpose == "attestation")
    assert (attestation.status, attestation.status_reason) == ("held", HOLD_ATTESTATION)
    [ref] = attestation.headers["X-Guichet-Attachments"]
    assert ref["filename"] == "attestation-AS-2026-000001.pdf"
    assert store.blobs.get(ref["sha256"]).startswith(b"%PDF-")
