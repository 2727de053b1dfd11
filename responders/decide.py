"""Which replies a contact deserves: pure decisions over typed facts, no database, no clock."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ACKNOWLEDGEMENT = "acknowledgement"
MISSING_DOCUMENTS = "missing_documents"
COMPLETION = "completion"
REFUSAL = "refusal"
STATUS_ANSWER = "status_answer"
ATTESTATION = "attestation"

#: Header on a missing-documents request naming the missing list it asked for (its digest);
#: at delivery time the dossier must still miss exactly that, or the request is cancelled.
MISSING_HEADER = "X-Guichet-Missing"

HOLD_REFUSAL = "refusal awaits a gestionnaire's approval"
HOLD_ATTESTATION = "attestation awaits a gestionnaire's approval"


@dataclass(frozen=True)
class ReplyPolicy:
    """The deployment's reply settings, built once from ``Settings``."""

    reminder_days: tuple[int, ...] = (7, 21)
    auto_send_refusal_codes: frozenset[str] = frozenset()
    max_automatic_per_hour: int = 5


@dataclass(frozen=True)
class ContactFacts:
    id: int
    intent: str | None
    #: Why this contact must get no automatic reply at all (an auto-reply, our own address…).
    no_reply_reason: str | None
    #: False when the contact's dossier news go elsewhere but the contact itself is not
    #: acknowledged (scanned mail answered at the beneficiary's address).
    acknowledge: bool = True


@dataclass(frozen=True)
class DossierFacts:
    id: int
    missing: tuple[str, ...]
    coverage: Mapping[str, Any]
    #: The dossier's latest missing-documents request: its round (1, 2, … each time the list
    #: changed), the digest of the list it asked for, and whether it went or is going out.
    last_request: RequestFacts | None = None
    #: Rounds whose completion message was already written.
    completed_rounds: frozenset[int] = frozenset()


@dataclass(frozen=True)
class RequestFacts:
    round: int
    missing_digest: str
    #: Queued, sending, sent or uncertain: the person was (or is being) asked.
    active: bool


@dataclass(frozen=True)
class PlannedReply:
    purpose: str
    key: str
    #: Set when a gestionnaire must approve the reply before it leaves.
    hold: str | None = None
    #: Reminders wait this many days before they may be sent.
    delay_days: int = 0
    reminder: int = 0
    missing_digest: str | None = None


def digest(values: Iterable[str]) -> str:
    """Short, order-free digest of a list of codes: the version part of an idempotency key."""
    joined = "\n".join(sorted(values))
    return hashlib.sha256(joined.encode()).hexdigest()[:8]


def refusal_reasons(coverage: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The reasons of a decided, refused coverage ([] when it is covered or undecided)."""
    if not coverage.get("decided") or coverage.get("covered"):
        return []
    return [r for r in coverage.get("reasons", []) if r.get("effect") == "refusal"]


def is_refused(coverage: Mapping[str, Any]) -> bool:
    return bool(coverage.get("decided")) and not coverage.get("covered")


def decide(
    contact: ContactFacts, dossier: DossierFacts | None, policy: ReplyPolicy
) -> list[PlannedReply]:
    """Every reply this contact may trigger; the outbox drops those whose key already exists."""
    if contact.no_reply_reason is not None:
        return []
    plans = []
    if contact.acknowledge:
        plans.append(PlannedReply(ACKNOWLEDGEMENT, f"contact:{contact.id}:{ACKNOWLEDGEMENT}"))
    if dossier is not None:
        plans += _dossier_replies(dossier, policy)
    if contact.intent == "status_inquiry":
        plans.append(PlannedReply(STATUS_ANSWER, f"contact:{contact.id}:{STATUS_ANSWER}"))
    if contact.intent == "attestation_request" and dossier is not None:
        plans.append(
            PlannedReply(ATTESTATION, f"contact:{contact.id}:{ATTESTATION}", HOLD_ATTESTATION)
        )
    return plans


def _dossier_replies(dossier: DossierFacts, policy: ReplyPolicy) -> list[PlannedReply]:
    base = f"dossier:{dossier.id}"
    if is_refused(dossier.coverage):
        # Asking a refused claimant for more documents would only mislead them.
        codes = sorted({str(r.get("code")) for r in refusal_reasons(dossier.coverage)})
        automatic = bool(codes) and set(codes) <= policy.auto_send_refusal_codes
        return [
            PlannedReply(
                REFUSAL, f"{base}:{REFUSAL}:{digest(codes)}", None if automatic else HOLD_REFUSAL
            )
        ]
    last = dossier.last_request
    if dossier.missing:
        version = digest(dossier.missing)
        # A new round each time the list differs from the last one asked for, even when it
        # returns to an earlier list: the person must hear of every change, once.
        if last is None:
            round_ = 1
        elif last.missing_digest == version and last.round not in dossier.completed_rounds:
            round_ = last.round
        else:
            round_ = last.round + 1
        request = f"{base}:{MISSING_DOCUMENTS}:{round_}"
        plans = [PlannedReply(MISSING_DOCUMENTS, request, missing_digest=version)]
        for n, days in enumerate(sorted(set(policy.reminder_days)), 1):
            plans.append(
                PlannedReply(
                    MISSING_DOCUMENTS,
                    f"{request}:reminder:{n}",
                    delay_days=days,
                    reminder=n,
                    missing_digest=version,
                )
            )
        return plans
    if last is not None and last.active and last.round not in dossier.completed_rounds:
        # Complete again after a later request: each round that asked is closed by its message.
        return [PlannedReply(COMPLETION, f"{base}:{COMPLETION}:{last.round}")]
    return []


def request_round(key: str) -> tuple[int, bool] | None:
    """``dossier:3:missing_documents:2`` → (2, False); with ``:reminder:1`` → (2, True).

    The round lives in the idempotency key, which is unique: the one place it cannot drift.
    """
    parts = key.split(":")
    if len(parts) < 4 or parts[2] != MISSING_DOCUMENTS or not parts[3].isdigit():
        return None
    return int(parts[3]), len(parts) > 4


def completion_round(key: str) -> int | None:
    parts = key.split(":")
    if len(parts) == 4 and parts[2] == COMPLETION and parts[3].isdigit():
        return int(parts[3])
    return None


def why_cancel(headers: Mapping[str, Any], missing_now: Sequence[str]) -> str | None:
    """Why a missing-documents request (or reminder) must not leave now, or None to send it."""
    asked = headers.get(MISSING_HEADER)
    if not asked:
        return None
    if not missing_now:
        return "no document is missing any more"
    if digest(missing_now) != asked:
        return "the list of missing documents changed since this request was written"
    return None


def parse_reminder_days(raw: str) -> tuple[int, ...]:
    """``"7,21"`` → ``(7, 21)``; an empty text means no reminders."""
    days: list[int] = []
    for part in raw.split(","):
        if part.strip():
            value = int(part)
            if value <= 0:
                raise ValueError(f"reminder days must be positive, got {value}")
            days.append(value)
    return tuple(sorted(set(days)))
