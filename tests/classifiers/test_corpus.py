"""Reading corpora and splitting them the same way everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from classifiers.corpus import CorpusError, is_holdout, read_corpus, split


def _corpus(tmp_path: Path, lines: list[dict[str, object]]) -> Path:
    (tmp_path / "messages").mkdir()
    (tmp_path / "messages" / "m1.txt").write_text("bonjour")
    (tmp_path / "labels.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return tmp_path


def test_reads_items(tmp_path: Path) -> None:
    root = _corpus(
        tmp_path,
        [
            {
                "id": "m1",
                "kind": "message",
                "channel": "sms",
                "file": "messages/m1.txt",
                "language": "fr",
                "intent": "other",
                "entities": {"phone": "+33612345678"},
            }
        ],
    )
    [item] = read_corpus(root)
    assert split([item], 0.0) == ([item], [])
    assert (item.id, item.kind, item.label, item.entities) == (
        "m1",
        "message",
        "other",
        {"phone": "+33612345678"},
    )
    assert item.path == (root / "messages" / "m1.txt").resolve()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"id": "x", "kind": "fax", "file": "a"}, "kind must be one of"),
        ({"id": "x", "kind": "message", "file": "a", "intent": "hello"}, "unknown intent 'hello'"),
        (
            {"id": "x", "kind": "document", "file": "a", "doc_type": "recipe"},
            "unknown doc_type 'recipe'",
        ),
        ({"id": "x", "kind": "message", "file": "../../etc/passwd"}, "outside the corpus"),
        ({"kind": "message", "file": "a"}, "missing 'id'"),
    ],
)
def test_bad_lines_name_the_line(tmp_path: Path, line: dict[str, object], message: str) -> None:
    root = _corpus(tmp_path, [line])
    with pytest.raises(CorpusError, match=message):
        read_corpus(root)


def test_not_a_corpus(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"no labels\.jsonl"):
        read_corpus(tmp_path)


def test_split_is_stable_and_near_the_fraction() -> None:
    ids = [f"msg-{n:04d}" for n in range(2000)]
    held = [i for i in ids if is_holdout(i, 0.2)]
    assert 0.17 < len(held) / len(ids) < 0.23
    assert held == [i for i in ids if is_holdout(i, 0.2)]
    assert not any(is_holdout(i, 0.0) for i in ids)
