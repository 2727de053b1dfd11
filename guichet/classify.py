"""Classify files and corpora (``guichet classify``, ``eval``, ``train``): reading, qualifying."""

from __future__ import annotations

import asyncio
import hashlib
import json
import mimetypes
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from channels.email_message import parse_email
from classifiers.corpus import DOC_TYPES, ENTITY_KEYS, INTENTS, CorpusItem, read_corpus, split
from classifiers.evaluation import EntityScores, LabelScores
from classifiers.qualify import Qualification, Qualifier
from classifiers.textmodel import TextClassifier
from intake.reading import OcrPool, Reading, ReadingLimits, read_document
from models.inbound import message_text

MESSAGE_SUFFIXES = frozenset({".txt"})
EMAIL_SUFFIXES = frozenset({".eml"})
EDI_SUFFIXES = frozenset({".edi", ".edifact"})


class Reader:
    """Reads documents through intake, remembering texts by content hash between runs."""

    def __init__(self, pool: OcrPool, limits: ReadingLimits, cache_dir: Path | None = None) -> None:
        self.pool = pool
        self.limits = limits
        self.cache_dir = cache_dir
        # Several contacts' documents are read at once, as in the service, within the pool.
        self._gate = asyncio.Semaphore(4)

    async def read(self, content: bytes, filename: str, declared_type: str = "") -> Reading:
        declared = declared_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        cached = self._cache_path(content)
        if cached is not None and cached.exists():
            return Reading(**json.loads(cached.read_text(encoding="utf-8")))
        async with self._gate:
            reading = await read_document(content, filename, declared, self.pool, self.limits)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            fields = {k: v for k, v in asdict(reading).items() if k != "children"}
            cached.write_text(json.dumps(fields, ensure_ascii=False), encoding="utf-8")
        return reading

    def _cache_path(self, content: bytes) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(content).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.json"


def _kind_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in MESSAGE_SUFFIXES:
        return "message"
    if suffix in EMAIL_SUFFIXES:
        return "email"
    if suffix in EDI_SUFFIXES:
        return "edi"
    return "document"


def _result(path: Path, kind: str) -> dict[str, Any]:
    return {
        "file": str(path),
        "kind": kind,
        "language": None,
        "intent": None,
        "doc_type": None,
        "confidence": {"intent": None, "doc_type": None},
        "entities": {},
        "text_source": None,
        "pages": None,
        "status": "ok",
        "reason": None,
    }


def _apply(result: dict[str, Any], q: Qualification) -> None:
    result["language"] = q.language
    result["entities"] = q.entities
    key = "doc_type" if q.kind == "document" else "intent"
    result[key] = q.label
    result["confidence"][key] = round(q.confidence, 4) if q.confidence is not None else None


class FileClassifier:
    """``guichet classify``: one result per file, models loaded once for the whole call."""

    def __init__(self, qualifier: Qualifier, reader: Reader) -> None:
        self.qualifier = qualifier
        self.reader = reader

    async def classify_paths(
        self, paths: Sequence[Path], kinds: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Results in the order of ``paths``; ``kinds`` overrides what the suffixes say (a
        corpus may hold a document's extracted text as a .txt file)."""
        kind_of = list(kinds) if kinds is not None else [_kind_of(p) for p in paths]
        results: list[dict[str, Any] | None] = [None] * len(paths)
        messages = [(i, p) for i, p in enumerate(paths) if kind_of[i] in ("message", "edi")]
        # Message bodies are classified in one batch: far faster than one call per file.
        for kind in ("message", "edi"):
            batch = []
            texts = []
            for i, path in messages:
                if kind_of[i] != kind:
                    continue
                result = results[i] = _result(path, kind)
                try:
                    texts.append(path.read_text(encoding="utf-8", errors="replace"))
                except OSError as exc:
                    result |= {"status": "unreadable", "reason": f"cannot read file: {exc}"}
                    continue
                batch.append((i, path))
            for (i, _), q in zip(batch, self.qualifier.messages(texts, kind=kind), strict=True):
                batched = results[i]
                assert batched is not None
                _apply(batched, q)
                batched["text_source"] = "plain"
        others = [(i, p) for i, p in enumerate(paths) if results[i] is None]
        done = await asyncio.gather(*(self.classify_file(p, kind_of[i]) for i, p in others))
        for (i, _), result in zip(others, done, strict=True):
            results[i] = result
        return [r for r in results if r is not None]

    async def classify_file(self, path: Path, kind: str | None = None) -> dict[str, Any]:
        kind = kind or _kind_of(path)
        result = _result(path, kind)
        try:
            content = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            result |= {"status": "unreadable", "reason": f"cannot read file: {exc.strerror}"}
            return result
        if kind == "email":
            return await self._email(path, content, result)
        if kind in ("message", "edi"):
            text = content.decode("utf-8", errors="replace")
            _apply(result, self.qualifier.messages([text], kind=kind)[0])
            result["text_source"] = "plain"
            return result
        if path.suffix.lower() in MESSAGE_SUFFIXES:
            # A document's text already extracted (corpora keep them so).
            _apply(result, self.qualifier.documents([content.decode("utf-8", "replace")])[0])
            result["text_source"] = "plain"
            return result
        reading = await self.reader.read(content, path.name)
        _apply(result, self.qualifier.documents([reading.text])[0])
        result |= {
            "text_source": reading.text_source if reading.text_source != "none" else None,
            "pages": reading.pages,
            "status": reading.status,
            "reason": reading.reason,
        }
        return result

    async def _email(self, path: Path, content: bytes, result: dict[str, Any]) -> dict[str, Any]:
        mail = await asyncio.to_thread(parse_email, content)
        q = self.qualifier.messages(
            [message_text(mail.subject, mail.text)], kind="email", sender_names=[mail.sender_name]
        )[0]
        _apply(result, q)
        result["text_source"] = "plain"
        if mail.defects:
            result["reason"] = "; ".join(mail.defects[:5])
        readings = await asyncio.gather(
            *(self.reader.read(a.content, a.filename, a.declared_type) for a in mail.attachments)
        )
        documents = self.qualifier.documents([r.text for r in readings])
        result["attachments"] = [
            {
                "filename": attachment.filename,
                "doc_type": doc.label,
                "confidence": round(doc.confidence, 4) if doc.confidence is not None else None,
                "entities": doc.entities,
                "status": reading.status,
            }
            for attachment, reading, doc in zip(mail.attachments, readings, documents, strict=True)
        ]
        return result


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given, folders walked in name order; hidden files skipped."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")
            )
        else:
            files.append(path)
    return files


# --- training -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSet:
    intent_texts: list[str]
    intents: list[str]
    document_texts: list[str]
    doc_types: list[str]


async def training_texts(items: Sequence[CorpusItem], reader: Reader) -> TrainingSet:
    """Texts and labels of a corpus: message bodies, email texts, and every document's text."""
    result = TrainingSet([], [], [], [])

    async def document(path: Path, content: bytes | None = None, declared: str = "") -> str:
        data = content if content is not None else await asyncio.to_thread(path.read_bytes)
        return (await reader.read(data, path.name, declared)).text

    async def one(item: CorpusItem) -> None:
        if item.kind in ("message", "edi") or (
            item.kind == "document" and item.path.suffix == ".txt"
        ):
            text = item.path.read_text(encoding="utf-8", errors="replace")
            if item.kind == "document" and item.doc_type:
                result.document_texts.append(text)
                result.doc_types.append(item.doc_type)
            elif item.intent:
                result.intent_texts.append(text)
                result.intents.append(item.intent)
        elif item.kind == "email":
            mail = parse_email(item.path.read_bytes())
            if item.intent:
                result.intent_texts.append(message_text(mail.subject, mail.text))
                result.intents.append(item.intent)
            for label, attachment in zip(item.attachments, mail.attachments, strict=False):
                if label.get("doc_type"):
                    text = await document(
                        Path(attachment.filename), attachment.content, attachment.declared_type
                    )
                    result.document_texts.append(text)
                    result.doc_types.append(str(label["doc_type"]))
        elif item.kind == "document" and item.doc_type:
            result.document_texts.append(await document(item.path))
            result.doc_types.append(item.doc_type)

    await asyncio.gather(*(one(item) for item in items))
    return result


def train_models(data: TrainingSet, out: Path, sources: list[str]) -> dict[str, Any]:
    """Fit and save both models; returns what was trained on."""
    meta = {"sources": sources, "trained_at": time.strftime("%Y-%m-%d")}
    intent = TextClassifier.train(data.intent_texts, data.intents, meta=meta)
    intent.save(out / "intent.npz")
    usable = [(t, d) for t, d in zip(data.document_texts, data.doc_types, strict=True) if t.strip()]
    doc_type = TextClassifier.train([t for t, _ in usable], [d for _, d in usable], meta=meta)
    doc_type.save(out / "doc_type.npz")
    return {"intent": intent.meta["examples"], "doc_type": doc_type.meta["examples"]}


# --- evaluation -----------------------------------------------------------------------------


async def evaluate(
    classifier: FileClassifier, corpora: Sequence[Path], holdout: float | None
) -> dict[str, Any]:
    items: list[CorpusItem] = []
    for corpus in corpora:
        loaded = read_corpus(corpus)
        items.extend(split(loaded, holdout)[1] if holdout else loaded)
    started = time.perf_counter()
    results = await classifier.classify_paths(
        [item.path for item in items], [item.kind for item in items]
    )
    elapsed = time.perf_counter() - started
    intents, doc_types, entities = LabelScores(), LabelScores(), EntityScores()
    languages = LabelScores()
    for item, result in zip(items, results, strict=True):
        languages.add(item.language, result["language"])
        if item.intent:
            intents.add(item.intent, result["intent"])
        if item.doc_type:
            doc_types.add(item.doc_type, result["doc_type"])
        for label, attachment in zip(
            item.attachments, result.get("attachments") or [], strict=False
        ):
            if label.get("doc_type"):
                doc_types.add(str(label["doc_type"]), attachment["doc_type"])
        entities.add(item.id, item.entities, result["entities"])
    return {
        "items": len(items),
        "seconds_per_item": round(elapsed / len(items), 4) if items else None,
        "intent": intents.report(INTENTS),
        "doc_type": doc_types.report(DOC_TYPES),
        "language": languages.report(("fr", "en", "es", "it", "de")),
        "entities": entities.report(ENTITY_KEYS),
    }


def format_report(report: dict[str, Any]) -> str:
    """The evaluation as a person reads it: macro-F1, per-class table, confusions, entities."""
    lines = [f"{report['items']} items, {report['seconds_per_item']} s per item"]
    for task in ("intent", "doc_type", "language"):
        scores = report[task]
        if not scores["items"]:
            continue
        lines.append(
            f"\n{task}: macro-F1 {scores['macro_f1']:.3f},"
            f" accuracy {scores['accuracy']:.3f} ({scores['items']} items)"
        )
        lines.append(f"  {'class':28} {'prec':>6} {'recall':>6} {'F1':>6} {'n':>5}")
        for label, s in scores["per_class"].items():
            if s["support"] or s["precision"]:
                lines.append(
                    f"  {label:28} {s['precision']:6.3f} {s['recall']:6.3f}"
                    f" {s['f1']:6.3f} {s['support']:5d}"
                )
        confusion = scores["confusion"]
        labels = confusion["labels"]
        lines.append("  confusion (rows: truth, columns: predicted):")
        for label, row in zip(labels, confusion["rows"], strict=False):
            if any(row):
                cells = ", ".join(f"{labels[j]}={n}" for j, n in enumerate(row) if n)
                lines.append(f"    {label}: {cells}")
    lines.append("\nentities: exact match among labelled items (spurious = found but not labelled)")
    for key, s in report["entities"].items():
        if s["labelled"] or s["spurious"]:
            rate = "n/a" if s["exact_match"] is None else f"{s['exact_match']:.3f}"
            lines.append(
                f"  {key:14} {rate:>6}  labelled {s['labelled']:4d}  spurious {s['spurious']:3d}"
            )
    return "\n".join(lines)
