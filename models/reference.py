"""Load reference data (beneficiaries, contracts, guarantees, dossiers) idempotently."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.store import audit
from models.tables import Beneficiary, Contract, Dossier, Guarantee

DOSSIER_STATUSES = frozenset(
    {"open", "awaiting_documents", "in_review", "approved", "refused", "paid", "closed"}
)


class ReferenceDataError(ValueError):
    """The reference file is wrong; the message names the entry and the field."""


@dataclass(frozen=True)
class LoadReport:
    created: int
    updated: int


def read_reference_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ReferenceDataError(f"{path}: {exc}") from exc


def _money(value: Any, where: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value)).quantize(Decimal("0.01"))
    except InvalidOperation as exc:
        raise ReferenceDataError(f"{where}: not an amount: {value!r}") from exc


def _date(value: Any, where: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise ReferenceDataError(f"{where}: not a date: {value!r}") from exc


def _required(entry: dict[str, Any], key: str, where: str) -> Any:
    if key not in entry or entry[key] in ("", None):
        raise ReferenceDataError(f"{where}: missing {key!r}")
    return entry[key]


async def load_reference_data(
    session: AsyncSession, data: dict[str, Any], actor: str = "import"
) -> LoadReport:
    """Create or update every entry, keyed by name, contract number, guarantee code and ref."""
    created = updated = 0
    people: dict[str, Beneficiary] = {}
    for n, entry in enumerate(data.get("beneficiaries", []), 1):
        where = f"beneficiaries[{n}]"
        emails = [str(e).strip().lower() for e in _required(entry, "emails", where)]
        person = await session.scalar(
            select(Beneficiary).where(Beneficiary.name == _required(entry, "name", where))
        )
        if person is None:
            person = Beneficiary(
                name=entry["name"], emails=emails, phones=list(entry.get("phones", []))
            )
            session.add(person)
            created += 1
        else:
            person.emails, person.phones = emails, list(entry.get("phones", []))
            updated += 1
        people[str(entry.get("key", emails[0]))] = person
    await session.flush()

    contracts: dict[str, Contract] = {}
    for n, entry in enumerate(data.get("contracts", []), 1):
        where = f"contracts[{n}]"
        number = str(_required(entry, "number", where))
        holder = people.get(str(_required(entry, "beneficiary", where)))
        if holder is None:
            raise ReferenceDataError(f"{where}: unknown beneficiary {entry['beneficiary']!r}")
        contract = await session.scalar(select(Contract).where(Contract.number == number))
        values = {
            "product": str(_required(entry, "product", where)),
            "beneficiary_id": holder.id,
            "starts_on": _date(_required(entry, "starts_on", where), where),
            "ends_on": _date(_required(entry, "ends_on", where), where),
            "currency": str(entry.get("currency", "EUR")),
        }
        if contract is None:
            contract = Contract(number=number, **values)
            session.add(contract)
            created += 1
        else:
            for key, value in values.items():
                setattr(contract, key, value)
            updated += 1
        await session.flush()
        contracts[number] = contract
        for m, g in enumerate(entry.get("guarantees", []), 1):
            gwhere = f"{where}.guarantees[{m}]"
            code = str(_required(g, "code", gwhere))
            guarantee = await session.scalar(
                select(Guarantee).where(
                    Guarantee.contract_id == contract.id, Guarantee.code == code
                )
            )
            gvalues = {
                "label": str(g.get("label", "")),
                "claim_types": list(_required(g, "claim_types", gwhere)),
                "ceiling": _money(g.get("ceiling"), gwhere),
                "deductible": _money(g.get("deductible", "0"), gwhere) or Decimal("0"),
                "currency": str(g.get("currency", contract.currency)),
                "declaration_days": g.get("declaration_days"),
                "refund_days": int(g.get("refund_days", 730)),
            }
            if guarantee is None:
                session.add(Guarantee(contract_id=contract.id, code=code, **gvalues))
                created += 1
            else:
                for key, value in gvalues.items():
                    setattr(guarantee, key, value)
                updated += 1

    for n, entry in enumerate(data.get("dossiers", []), 1):
        where = f"dossiers[{n}]"
        ref = str(_required(entry, "ref", where)).upper()
        contract = contracts.get(str(entry.get("contract", ""))) or await session.scalar(
            select(Contract).where(Contract.number == str(_required(entry, "contract", where)))
        )
        if contract is None:
            raise ReferenceDataError(f"{where}: unknown contract {entry['contract']!r}")
        status = str(entry.get("status", "open"))
        if status not in DOSSIER_STATUSES:
            raise ReferenceDataError(f"{where}: status must be one of {sorted(DOSSIER_STATUSES)}")
        dossier = await session.scalar(select(Dossier).where(Dossier.ref == ref))
        dvalues = {
            "contract_id": contract.id,
            "beneficiary_id": contract.beneficiary_id,
            "claim_type": str(_required(entry, "claim_type", where)),
            "event_date": _date(entry["event_date"], where) if "event_date" in entry else None,
            "event_place": str(entry.get("event_place", "")),
            "status": status,
            "summary": str(entry.get("summary", "")),
            "currency": contract.currency,
        }
        if dossier is None:
            dossier = Dossier(ref=ref, **dvalues)
            if "declared_on" in entry:
                # When the dossier was first declared: the declaration deadline counts from it.
                declared = _date(entry["declared_on"], where)
                dossier.created_at = datetime.combine(declared, time(12), tzinfo=UTC)
            session.add(dossier)
            await session.flush()
            audit(session, actor, "dossier.created", "dossier", ref, after={"status": status})
            created += 1
        else:
            # Re-running an import must not undo what gestionnaires did since: only fill gaps.
            updated += 1
    return LoadReport(created=created, updated=updated)
