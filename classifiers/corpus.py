"""Read labelled corpora (labels.jsonl + files) and split them reproducibly."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INTENTS = (
    "refund_request",
    "document_submission",
    "new_claim",
    "status_inquiry",
    "attestation_request",
    "complaint",
    "provider_invoice",
    "opt_out",
    "other",
)
DOC_TYPES = (
    "medical_invoice",
    "invoice",
    "transport_ticket",
    "medical_certificate",
    "social_security_statement",
    "bank_details",
    "identity_document",
    "police_report",
    "quote",
    "other",
)
KINDS = ("message", "document", "email", "edi")
ENTITY_KEYS = (
    "dossier_ref",
    "contract_no",
    "amount_total",
    "currency",
    "date",
    "iban",
    "phone",
    "person",
)


class CorpusError(ValueError):
    """A corpus line is malformed; the message names the file and line."""


@dataclass(frozen=True)
class CorpusItem:
    id: str
    kind: str
    channel: str
    path: Path
    language: str
    intent: str | None = None
    doc_type: str | None = None
    entities: dict[str, str] = field(default_factory=dict)
    attachments: tuple[dict[str, Any], ...] = ()

    @property
    def label(self) -> str | None:
        return self.intent if self.kind in ("message", "email", "edi") else self.doc_type


def read_corpus(root: Path) -> list[CorpusItem]:
    labels = root / "labels.jsonl"
    if not labels.is_file():
        raise CorpusError(f"{root}: no labels.jsonl (is this a corpus folder?)")
    items = []
    with labels.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{labels}:{number}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{where}: {exc}") from exc
            items.append(_item(root, data, where))
    return items


def _item(root: Path, data: dict[str, Any], where: str) -> CorpusItem:
    for key in ("id", "kind", "file"):
        if not isinstance(data.get(key), str):
            raise CorpusError(f"{where}: missing {key!r}")
    if data["kind"] not in KINDS:
        raise CorpusError(f"{where}: kind must be one of {KINDS}")
    intent, doc_type = data.get("intent"), data.get("doc_type")
    if intent is not None and intent not in INTENTS:
        raise CorpusError(f"{where}: unknown intent {intent!r}")
    if doc_type is not None and doc_type not in DOC_TYPES:
        raise CorpusError(f"{where}: unknown doc_type {doc_type!r}")
    path = (root / data["file"]).resolve()
    if not path.is_relative_to(root.resolve()):
        raise CorpusError(f"{where}: file {data['file']!r} is outside the corpus")
    return CorpusItem(
        id=data["id"],
        kind=data["kind"],
        channel=str(data.get("channel", "")),
        path=path,
        language=str(data.get("language", "")),
        intent=intent,
        doc_type=doc_type,
        entities={str(k): str(v) for k, v in (data.get("entities") or {}).items()},
        attachments=tuple(data.get("attachments") or ()),
    )


def is_holdout(item_id: str, fraction: float) -> bool:
    """Stable split by id: the same items are held out on every machine and every run."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(item_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def split(
    items: Iterable[CorpusItem], fraction: float
) -> tuple[list[CorpusItem], list[CorpusItem]]:
    train: list[CorpusItem] = []
    held: list[CorpusItem] = []
    for item in items:
        (held if is_holdout(item.id, fraction) else train).append(item)
    return train, held


def iter_text_items(items: Iterable[CorpusItem]) -> Iterator[tuple[CorpusItem, str]]:
    """Items whose text is stored as a plain file (messages, extracted document texts)."""
    for item in items:
        if item.path.suffix == ".txt":
            yield item, item.path.read_text(encoding="utf-8", errors="replace")
