"""`guichet classify`, `eval` and `train` as a user runs them, with the shipped models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from classifiers.corpus import INTENTS
from tests.guichet.service import GuichetProcess

DATA = Path(__file__).parent.parent / "data"
CORPUS = DATA / "corpus"
KEYS = {
    "file",
    "kind",
    "language",
    "intent",
    "doc_type",
    "confidence",
    "entities",
    "text_source",
    "pages",
    "status",
    "reason",
}


def _run(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    result = GuichetProcess(tmp_path / "home", relay_port=25).cli(*args)
    return result.returncode, result.stdout, result.stderr


def _lines(stdout: str) -> dict[str, dict[str, Any]]:
    return {Path(o["file"]).name: o for o in map(json.loads, stdout.splitlines())}


def test_classify_a_folder_and_files_as_json(tmp_path: Path) -> None:
    code, out, err = _run(
        tmp_path,
        "classify",
        str(CORPUS / "messages"),
        str(CORPUS / "emails"),
        str(CORPUS / "documents" / "devis.pdf"),
        "--json",
    )
    assert code == 0, err
    results = _lines(out)
    assert len(results) == 11
    for result in results.values():
        assert set(result) - {"attachments"} == KEYS
    stop = results["m02.txt"]
    assert (stop["kind"], stop["intent"], stop["language"], stop["doc_type"]) == (
        "message",
        "opt_out",
        "fr",
        None,
    )
    assert stop["confidence"] == {"intent": 1.0, "doc_type": None}
    assert stop["text_source"] == "plain"
    refund = results["m03.txt"]
    assert refund["entities"]["iban"] == "FR7630006000011234567890189"
    assert 0.0 <= refund["confidence"]["intent"] <= 1.0
    quote = results["devis.pdf"]
    assert (
        quote["kind"],
        quote["doc_type"],
        quote["text_source"],
        quote["pages"],
        quote["status"],
    ) == ("document", "quote", "text_layer", 1, "ok")
    assert quote["intent"] is None
    assert quote["entities"]["dossier_ref"] == "AS-2025-002262"
    mail = results["eml-0001.eml"]
    assert mail["kind"] == "email" and mail["intent"] == "refund_request"
    assert [a["filename"] for a in mail["attachments"]] == ["Facture_F2512217.pdf", "RIB.pdf"]
    assert [a["doc_type"] for a in mail["attachments"]] == ["invoice", "bank_details"]
    assert all(a["status"] == "ok" for a in mail["attachments"])


def test_classify_bad_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "vide.pdf"
    empty.write_bytes(b"")
    code, out, err = _run(tmp_path, "classify", str(empty), str(tmp_path / "absent.txt"), "--json")
    assert code == 1
    assert "absent.txt: no such file or folder" in err
    [result] = _lines(out).values()
    assert result["status"] == "unreadable" and result["doc_type"] is None and result["reason"]


def test_eval_reports_scores(tmp_path: Path) -> None:
    code, out, err = _run(tmp_path, "eval", str(CORPUS), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["items"] == 11
    assert report["intent"]["items"] == 10
    assert report["doc_type"]["items"] == 3  # the quote and the email's two attachments
    assert set(report["intent"]["per_class"]) >= {"opt_out", "refund_request"}
    assert 0.0 <= report["intent"]["macro_f1"] <= 1.0
    assert report["entities"]["dossier_ref"]["labelled"] == 4
    assert report["seconds_per_item"] > 0
    code, text, _ = _run(tmp_path, "eval", str(CORPUS))
    assert code == 0 and "macro-F1" in text and "confusion" in text


def test_train_then_classify_with_the_new_models(tmp_path: Path) -> None:
    models = tmp_path / "models"
    code, out, err = _run(tmp_path, "train", str(CORPUS), "--holdout", "0", "--out", str(models))
    assert code == 0, err
    assert "intent: 10 examples, 9 classes" in out
    assert "doc_type: 3 examples, 3 classes" in out
    assert (models / "intent.npz").exists() and (models / "doc_type.npz").exists()
    code, out, err = _run(
        tmp_path,
        "classify",
        str(CORPUS / "messages" / "m01.txt"),
        "--json",
        "--models",
        str(models),
    )
    assert code == 0, err
    result = _lines(out)["m01.txt"]
    assert result["intent"] in INTENTS
    assert 0.0 < result["confidence"]["intent"] <= 1.0
