"""The email parser: real and broken messages in, a faithful InboundContact out, never a crash."""

from __future__ import annotations

import hashlib
import random
import re
import struct
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from channels.email_message import automatic_reason, parse_email, read_headers, synthetic_key
from models.inbound import InboundContact

EMAILS = Path(__file__).parent.parent / "data" / "emails"


def _mail(
    body: str = "Bonjour,\nvoici ma facture.\n",
    *,
    sender: str = "Jean Dupont <jean.dupont@example.org>",
    subject: str = "Dossier AS-2026-000001",
    **headers: str,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "sinistres@guichet.example"
    msg["Subject"] = subject
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def _raw(text: str) -> bytes:
    """Hand-written wire bytes: the source uses LF, the wire CRLF."""
    return text.replace("\n", "\r\n").encode("ascii")


def _strings(contact: InboundContact) -> list[str]:
    values = [contact.natural_key, contact.sender, contact.sender_name, contact.subject]
    values += [contact.text, contact.html or "", contact.message_id or ""]
    values += [contact.in_reply_to or "", contact.automatic_reason or ""]
    values += [*contact.recipients, *contact.references, *contact.defects]
    for attachment in contact.attachments:
        values += [attachment.filename, attachment.declared_type, attachment.content_id or ""]
    return values


def _assert_storable(contact: InboundContact) -> None:
    for value in _strings(contact):
        assert not re.search("[\ud800-\udfff\x00]", value), value


# --------------------------------------------------------------------------- bodies


def test_plain_text_message() -> None:
    msg = _mail(
        sender='"Brun, Océane" <Oceane.Brun@Laposte.Example>',
        Cc="Service <Gestion@Guichet.example>, sinistres@guichet.example",
        Date="Thu, 25 Dec 2025 22:34:09 +0100",
        Message_ID="<abc.123@mail.example>",
        In_Reply_To="<prev@guichet.example>",
        References="<first@guichet.example> <prev@guichet.example>",
    )

    contact = parse_email(msg.as_bytes())

    assert contact.channel == "email"
    assert contact.natural_key == "email:abc.123@mail.example"
    assert contact.message_id == "abc.123@mail.example"
    assert contact.sender == "oceane.brun@laposte.example"
    assert contact.sender_name == "Brun, Océane"
    assert contact.recipients == ("sinistres@guichet.example", "gestion@guichet.example")
    assert contact.subject == "Dossier AS-2026-000001"
    assert contact.text == "Bonjour,\nvoici ma facture.\n"
    assert contact.html is None
    assert contact.in_reply_to == "prev@guichet.example"
    assert contact.references == ("first@guichet.example", "prev@guichet.example")
    assert contact.sent_at == datetime(2025, 12, 25, 22, 34, 9, tzinfo=timezone(timedelta(hours=1)))
    assert contact.automatic_reason is None
    assert contact.attachments == ()
    assert contact.defects == ()


def test_alternative_prefers_plain_and_keeps_html() -> None:
    msg = _mail("Le texte brut.\n")
    msg.add_alternative("<html><body><p>Le <b>HTML</b></p></body></html>\n", subtype="html")

    contact = parse_email(msg.as_bytes())

    assert contact.text == "Le texte brut.\n"
    assert contact.html == "<html><body><p>Le <b>HTML</b></p></body></html>\n"
    assert contact.attachments == ()


def test_html_only_message_gets_readable_text() -> None:
    markup = (
        "<html><head><title>Titre</title><style>p { color: red }</style></head><body>"
        "<h1>Demande&nbsp;de remboursement</h1><p>Bonjour,<br>voici   mes\n frais :</p>"
        "<ul><li>taxi 12&euro;</li><li>h&ocirc;tel &amp; repas</li></ul>"
        "<table><tr><td>Total</td><td>58 &#8364;</td></tr></table>"
        "<script>alert('pirate')</script><div>Cordialement</div></body></html>"
    )
    msg = _mail()
    msg.set_content(markup, subtype="html")

    contact = parse_email(msg.as_bytes())

    assert contact.html is not None
    assert contact.html.startswith("<html><head><title>Titre</title>")
    assert contact.text == (
        "Demande de remboursement\n\nBonjour,\nvoici mes frais :\n\n"
        "taxi 12€\n\nhôtel & repas\n\nTotal 58 €\n\nCordialement"
    )
    assert "pirate" not in contact.text
    assert "color" not in contact.text
    assert "Titre" not in contact.text


def test_empty_plain_alternative_falls_back_to_html() -> None:
    msg = _mail(" \n")
    msg.add_alternative("<p>Le vrai contenu</p>", subtype="html")

    assert parse_email(msg.as_bytes()).text == "Le vrai contenu"


def test_body_split_around_an_inline_image_is_joined() -> None:
    raw = _raw(
        "From: a@example.org\nContent-Type: multipart/mixed; boundary=b\n\n"
        "--b\nContent-Type: text/plain\n\nAvant la photo\n"
        "--b\nContent-Type: image/jpeg\nContent-Disposition: inline\n"
        "Content-Transfer-Encoding: base64\n\n/9j/4AAQ\n"
        "--b\nContent-Type: text/plain\n\nApres la photo, dossier AS-2026-000001\n--b--\n"
    )

    contact = parse_email(raw)

    assert contact.text == "Avant la photo\nApres la photo, dossier AS-2026-000001"
    assert [(a.filename, a.inline, a.content) for a in contact.attachments] == [
        ("part-1.jpg", True, b"\xff\xd8\xff\xe0\x00\x10")
    ]


# --------------------------------------------------------------------------- attachments


def test_rfc2231_non_ascii_filename() -> None:
    raw = _raw(
        "From: a@example.org\nSubject: pj\nContent-Type: multipart/mixed; boundary=b\n\n"
        "--b\nContent-Type: text/plain; charset=utf-8\n\ncorps\n"
        "--b\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n"
        "Content-Disposition: attachment;\n"
        " filename*0*=utf-8''Capture%20d%E2%80%99%C3%A9cran%202026-03-28%20%C3%A0%2022;\n"
        " filename*1*=.51.05.pdf\n\nJVBERi0xLjQK\n"
        '--b\nContent-Type: application/pdf; name="ignored.pdf"\n'
        "Content-Transfer-Encoding: base64\n"
        "Content-Disposition: attachment; filename*=iso-8859-1'fr'facture%20h%F4tel.pdf\n\n"
        "JVBERi0xLjQK\n--b--\n"
    )

    contact = parse_email(raw)

    assert [a.filename for a in contact.attachments] == [
        "Capture d’écran 2026-03-28 à 22.51.05.pdf",
        "facture hôtel.pdf",
    ]
    assert all(a.declared_type == "application/pdf" for a in contact.attachments)
    assert all(a.content == b"%PDF-1.4\n" for a in contact.attachments)
    assert contact.text == "corps"


def test_rfc2047_filename_and_content_type_name() -> None:
    raw = _raw(
        "From: a@example.org\nContent-Type: multipart/mixed; boundary=b\n\n"
        "--b\nContent-Type: text/plain\n\ncorps\n"
        "--b\nContent-Type: image/jpeg\nContent-Transfer-Encoding: base64\n"
        'Content-Disposition: attachment; filename="=?utf-8?q?pi=C3=A8ce_identit=C3=A9=2Ejpg?="\n'
        "\n/9j/4AAQ\n"
        '--b\nContent-Type: application/pdf; name="=?iso-8859-1?q?relev=E9=2Epdf?="\n'
        "Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n--b--\n"
    )

    contact = parse_email(raw)

    assert [(a.filename, a.declared_type) for a in contact.attachments] == [
        ("pièce identité.jpg", "image/jpeg"),
        ("relevé.pdf", "application/pdf"),
    ]


def test_filenames_are_sanitised() -> None:
    long_stem = "x" * 300
    msg = _mail()
    for name in ("../../etc/passwd", "C:\\Users\\eve\\rapport.pdf", "fac\u202eture\x07.pdf"):
        msg.add_attachment(b"data", maintype="application", subtype="pdf", filename=name)
    msg.add_attachment(b"data", maintype="application", subtype="pdf", filename=long_stem + ".pdf")
    msg.add_attachment(b"data", maintype="application", subtype="pdf", filename="..")

    names = [a.filename for a in parse_email(msg.as_bytes()).attachments]

    assert names[:3] == ["passwd", "rapport.pdf", "facture.pdf"]
    assert names[3] == "x" * 196 + ".pdf"
    assert names[4] == "part-5.pdf"


def test_unnamed_parts_get_numbered_names() -> None:
    raw = _raw(
        "From: a@example.org\nContent-Type: multipart/mixed; boundary=b\n\n"
        "--b\nContent-Type: text/plain\n\ncorps\n"
        "--b\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\niVBORw==\n"
        "--b\nContent-Type: text/csv\n\na;b\n"
        "--b\nContent-Type: text/plain\nContent-Disposition: attachment\n\nnotes\n"
        "--b\nContent-Type: application/x-unheard-of\n\n???\n--b--\n"
    )

    contact = parse_email(raw)

    assert [(a.filename, a.declared_type, a.content) for a in contact.attachments] == [
        ("part-1.png", "image/png", b"\x89PNG"),
        ("part-2.csv", "text/csv", b"a;b"),
        ("part-3.txt", "text/plain", b"notes"),
        ("part-4.bin", "application/x-unheard-of", b"???"),
    ]
    assert contact.text == "corps"


def test_inline_image_in_related_has_content_id() -> None:
    raw = _raw(
        "From: a@example.org\nContent-Type: multipart/related; boundary=r\n\n"
        "--r\nContent-Type: text/html; charset=utf-8\n\n"
        '<p>Voir la photo :</p><img src="cid:photo.1@mail.example">\n'
        "--r\nContent-Type: image/png; name=photo.png\nContent-ID: < photo.1@mail.example >\n"
        "Content-Transfer-Encoding: base64\n\niVBORw==\n--r--\n"
    )

    contact = parse_email(raw)

    assert contact.text == "Voir la photo :"
    assert contact.html == '<p>Voir la photo :</p><img src="cid:photo.1@mail.example">'
    [image] = contact.attachments
    assert image.filename == "photo.png"
    assert image.declared_type == "image/png"
    assert image.inline is True
    assert image.content_id == "photo.1@mail.example"
    assert image.content == b"\x89PNG"


def test_attachment_with_content_id_outside_related_is_not_inline() -> None:
    msg = _mail()
    msg.add_attachment(
        b"%PDF", maintype="application", subtype="pdf", filename="a.pdf", cid="<x@y>"
    )

    [attachment] = parse_email(msg.as_bytes()).attachments

    assert attachment.inline is False
    assert attachment.content_id == "x@y"


# --------------------------------------------------------------------------- forwards


def _forward(inner: EmailMessage, note: str, subject: str) -> EmailMessage:
    outer = _mail(note, sender="Agence <agence@voyages.example>", subject=subject)
    outer.add_attachment(inner)
    return outer


def test_forwarded_message_is_unpacked() -> None:
    inner = _mail(
        "Facture ci-jointe.\n",
        sender="=?utf-8?q?Oc=C3=A9ane?= Brun <oceane@laposte.example>",
        subject="Facture taxi",
    )
    inner.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="taxi.pdf")
    outer = _forward(inner, "Je vous transfère la demande.\n", "TR: Facture taxi")

    contact = parse_email(outer.as_bytes())

    assert contact.sender == "agence@voyages.example"
    assert contact.text == (
        "Je vous transfère la demande."
        "\n\n-------- Message transféré --------\n"
        "De : Océane Brun <oceane@laposte.example>\nObjet : Facture taxi\n\n"
        "Facture ci-jointe.\n"
    )
    assert [(a.filename, a.declared_type, a.content) for a in contact.attachments] == [
        ("taxi.pdf", "application/pdf", b"%PDF-1.4")
    ]
    assert contact.defects == ()


def test_forward_chain_deeper_than_max_depth_is_kept_as_eml() -> None:
    innermost = _mail("Texte d'origine.\n", subject="Niveau 3")
    innermost.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="deep.pdf")
    level2 = _forward(innermost, "Deuxième transfert.\n", "Niveau 2")
    level1 = _forward(level2, "Premier transfert.\n", "Niveau 1")

    contact = parse_email(level1.as_bytes(), max_depth=1)

    assert "Premier transfert." in contact.text
    assert "Objet : Niveau 2\n\nDeuxième transfert." in contact.text
    assert "Texte d'origine." not in contact.text
    [kept] = contact.attachments
    assert kept.filename == "forwarded-1.eml"
    assert kept.declared_type == "message/rfc822"
    reparsed = parse_email(kept.content)
    assert reparsed.subject == "Niveau 3"
    assert reparsed.text == "Texte d'origine.\n"
    assert [a.filename for a in reparsed.attachments] == ["deep.pdf"]
    assert any("kept as attachment forwarded-1.eml" in d for d in contact.defects)


def test_default_depth_unpacks_five_levels() -> None:
    message = _mail("niveau 6\n", subject="6")
    message.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="six.pdf")
    for level in range(5, -1, -1):
        message = _forward(message, f"niveau {level}\n", str(level))

    contact = parse_email(message.as_bytes())

    assert contact.text.count("-------- Message transféré --------") == 5
    assert "niveau 5" in contact.text
    assert "niveau 6" not in contact.text
    assert [a.filename for a in contact.attachments] == ["forwarded-1.eml"]


# --------------------------------------------------------------------------- TNEF


def _tnef_attribute(level: int, attribute: int, kind: int, data: bytes) -> bytes:
    header = struct.pack("<BHHI", level, attribute, kind, len(data))
    return header + data + struct.pack("<H", sum(data) & 0xFFFF)


def _tnef(body: bytes, files: list[tuple[str, bytes]]) -> bytes:
    """A minimal winmail.dat: TNEF version, a plain body, and one attribute triple per file."""
    out = struct.pack("<IH", 0x223E9F78, 1)
    out += _tnef_attribute(1, 0x9006, 0x0008, struct.pack("<I", 0x00010000))
    out += _tnef_attribute(1, 0x800C, 0x0002, body)
    for name, content in files:
        out += _tnef_attribute(2, 0x9002, 0x0006, bytes(14))
        out += _tnef_attribute(2, 0x8010, 0x0001, name.encode() + b"\x00")
        out += _tnef_attribute(2, 0x800F, 0x0006, content)
    return out


def test_winmail_dat_is_unpacked() -> None:
    msg = _mail(" \n")
    winmail = _tnef(
        b"Corps Outlook: dossier AS-2026-000001",
        [("facture.pdf", b"%PDF-1.4 facture"), ("photo.jpg", b"\xff\xd8\xff\xe0photo")],
    )
    msg.add_attachment(winmail, maintype="application", subtype="ms-tnef", filename="winmail.dat")

    contact = parse_email(msg.as_bytes())

    assert [(a.filename, a.declared_type, a.content) for a in contact.attachments] == [
        ("facture.pdf", "application/pdf", b"%PDF-1.4 facture"),
        ("photo.jpg", "image/jpeg", b"\xff\xd8\xff\xe0photo"),
    ]
    assert contact.text == "Corps Outlook: dossier AS-2026-000001"
    assert contact.defects == ()


def test_garbage_winmail_dat_is_kept_with_a_defect() -> None:
    msg = _mail()
    msg.add_attachment(
        b"not TNEF at all", maintype="application", subtype="octet-stream", filename="WINMAIL.DAT"
    )

    contact = parse_email(msg.as_bytes())

    [kept] = contact.attachments
    assert (kept.filename, kept.content) == ("WINMAIL.DAT", b"not TNEF at all")
    assert contact.text == "Bonjour,\nvoici ma facture.\n"
    [defect] = contact.defects
    assert defect.startswith("could not decode TNEF WINMAIL.DAT in application/octet-stream part 2")


# --------------------------------------------------------------------------- broken input


def test_missing_closing_boundary() -> None:
    raw = _raw(
        "From: a@example.org\nSubject: coupe\nContent-Type: multipart/mixed; boundary=b\n\n"
        "--b\nContent-Type: text/plain\n\nle corps\n"
        "--b\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=f.pdf\n"
        "Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n"
    )

    contact = parse_email(raw)

    assert contact.text == "le corps"
    assert [(a.filename, a.content) for a in contact.attachments] == [("f.pdf", b"%PDF-1.4\n")]
    assert contact.defects == (
        "missing closing boundary in multipart/mixed message [CloseBoundaryNotFoundDefect]",
    )


def test_boundary_never_present_keeps_the_body_as_text() -> None:
    raw = _raw(
        'From: a@example.org\nContent-Type: multipart/mixed; boundary="absent"\n\n'
        "Bonjour, dossier AS-2026-000001.\n"
    )

    contact = parse_email(raw)

    assert contact.text == "Bonjour, dossier AS-2026-000001.\n"
    assert contact.attachments == ()
    assert "no MIME parts found in multipart/mixed message, body kept as text" in contact.defects
    assert (
        "multipart boundary never found in the body in multipart/mixed message"
        " [StartBoundaryNotFoundDefect]"
    ) in contact.defects


def test_eight_bit_bytes_in_headers() -> None:
    raw = (
        b"From: Jos\xe9 P\xe9rez <Jose@Example.ORG>\r\n"
        b"To: Service \xc3\xa9tudes <etudes@guichet.example>\r\n"
        b"Subject: Facture h\xc3\xb4tel \xe2\x80\x93 d\xc3\xa9cembre\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nCorps\r\n"
    )

    contact = parse_email(raw)

    assert contact.sender == "jose@example.org"
    assert contact.sender_name == "José Pérez"
    assert contact.subject == "Facture hôtel – décembre"
    assert contact.recipients == ("etudes@guichet.example",)
    assert contact.defects == (
        "8-bit bytes in From header, decoded as windows-1252",
        "8-bit bytes in To header, decoded as utf-8",
        "8-bit bytes in Subject header, decoded as utf-8",
    )
    _assert_storable(contact)


@pytest.mark.parametrize(
    "from_header",
    [
        # Folded into two words of one encoding, and of two (as the email package writes
        # a long name whose last characters need four bytes).
        "=?utf-8?q?Jean-Fran?=\n =?utf-8?q?=C3=A7ois_Dupr=C3=A9?= <jf@example.org>",
        "=?utf-8?b?SmVhbi1GcmFu?=\n =?utf-8?q?=C3=A7ois_Dupr=C3=A9?= <jf@example.org>",
        "=?utf-8?b?SmVhbi1GcmFu?= =?utf-8?b?w6dvaXMgRHVwcsOp?= <jf@example.org>",
    ],
)
def test_a_name_in_several_encoded_words_has_no_space_between_them(from_header: str) -> None:
    raw = _raw(f"From: {from_header}\nSubject: x\n\nCorps\n")
    for contact in (parse_email(raw), read_headers(raw)):
        assert (contact.sender_name, contact.sender) == ("Jean-François Dupré", "jf@example.org")


def test_unknown_charset_is_decoded_anyway() -> None:
    raw = (
        b'From: a@example.org\r\nContent-Type: text/plain; charset="x-unknown"\r\n'
        b"Content-Transfer-Encoding: 8bit\r\n\r\nR\xe9clamation \x80 50\r\n"
    )

    contact = parse_email(raw)

    assert contact.text == "Réclamation € 50\n"
    assert contact.defects == (
        "unknown charset x-unknown in text/plain message, decoded as windows-1252",
    )


def test_bytes_invalid_for_the_declared_charset() -> None:
    raw = (
        b"From: a@example.org\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\ncaf\xc3\xa9\r\n"
    )

    contact = parse_email(raw)

    assert contact.text == "café\n"
    assert contact.defects == ("invalid us-ascii bytes in text/plain message, decoded as utf-8",)


def test_broken_base64_attachment() -> None:
    raw = _raw(
        "From: a@example.org\nContent-Type: multipart/mixed; boundary=b\n\n"
        "--b\nContent-Type: text/plain\n\ncorps\n"
        "--b\nContent-Type: application/pdf; name=a.pdf\nContent-Transfer-Encoding: base64\n\n"
        "JVBERi0x*LjQ\n"
        "--b\nContent-Type: application/pdf; name=b.pdf\nContent-Transfer-Encoding: base64\n\n"
        "JVBERi0xLjQK\n--b--\n"
    )

    contact = parse_email(raw)

    assert [(a.filename, a.content) for a in contact.attachments] == [
        ("a.pdf", b"%PDF-1.4"),
        ("b.pdf", b"%PDF-1.4\n"),
    ]
    assert contact.defects == (
        "broken base64 (characters outside the alphabet) in application/pdf part 2"
        " [InvalidBase64CharactersDefect]",
        "broken base64 (bad padding) in application/pdf part 2 [InvalidBase64PaddingDefect]",
    )


def test_headers_that_crash_the_policy() -> None:
    raw = _raw(
        'From: "\nTo: =?utf-8?q??=\nSubject: ok\nContent-Type: text/plain; .*\n\n'
        "Bonjour, dossier AS-2026-000001\n"
    )

    contact = parse_email(raw, envelope_sender="jean@example.org")

    assert contact.text == "Bonjour, dossier AS-2026-000001\n"
    assert contact.subject == "ok"
    assert contact.sender == "jean@example.org"
    assert contact.defects[0].startswith(
        "MIME parser failed on message (IndexError: string index out of range)"
    )
    assert contact.recipients == ()
    assert any(d.startswith("unparseable From header (IndexError") for d in contact.defects)
    assert any(d.startswith("unparseable To header (IndexError") for d in contact.defects)


def test_huge_header_is_truncated_instead_of_stalling() -> None:
    recipients = ", ".join(f"x{i}@example.org" for i in range(10_000))
    raw = _raw(f"From: a@example.org\nTo: {recipients}\n\nCorps\n")

    contact = parse_email(raw)

    assert contact.defects == ("To header longer than 32768 characters, truncated",)
    assert contact.recipients[:2] == ("x0@example.org", "x1@example.org")
    assert 1_000 < len(contact.recipients) < 10_000


def test_defect_list_is_capped() -> None:
    part = "--b\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\niVBOR*w\n"
    raw = _raw(
        "From: a@example.org\nContent-Type: multipart/mixed; boundary=b\n\n"
        + part * 150
        + "--b--\n"
    )

    contact = parse_email(raw)

    assert len(contact.attachments) == 150
    assert len(contact.defects) == 101
    assert contact.defects[-1] == "200 more defects not listed"


def test_nesting_beyond_the_parser_recursion_keeps_headers_and_body() -> None:
    chain = "Content-Type: message/rfc822\n\nFrom: x@example.org\nSubject: niveau\n" * 3000
    raw = _raw(f"From: a@example.org\nMessage-ID: <deep@example.org>\n{chain}\nfin\n")

    contact = parse_email(raw)

    assert contact.natural_key == "email:deep@example.org"
    assert contact.sender == "a@example.org"
    assert contact.text.count("-------- Message transféré --------") == 5
    assert [a.filename for a in contact.attachments] == ["forwarded-1.eml"]
    assert "only its headers were parsed" in contact.defects[0]
    assert not any(d.startswith("parser failure") for d in contact.defects)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage \x80\r\n\r\n\x00",
        b"Subject: only headers",
        b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n",
        b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n",
        b"From: <@>\r\nDate: 31 Feb 99999 99:99\r\nMessage-ID: <>\r\n\r\n\xff",
    ],
)
def test_garbage_never_raises(raw: bytes) -> None:
    contact = parse_email(raw)

    assert contact.natural_key == synthetic_key(raw)
    assert contact.sent_at is None
    _assert_storable(contact)


def test_mutated_real_email_never_raises() -> None:
    original = (EMAILS / "eml-0001.eml").read_bytes()
    rng = random.Random(20260101)
    for _ in range(150):
        data = bytearray(original)
        for _ in range(rng.randint(1, 40)):
            position = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.5:
                data[position] = rng.randrange(256)
            elif choice < 0.8:
                del data[position : position + rng.randint(1, 200)]
            else:
                data[position:position] = rng.choice([b"\r\n", b"--", b"=?", b'"', b";", b"\x00"])
        contact = parse_email(bytes(data))
        assert contact.natural_key.startswith("email:")
        _assert_storable(contact)


# --------------------------------------------------------------------------- identity


def test_synthetic_key_ignores_line_endings_and_trailing_blanks() -> None:
    lf = b"From: a@example.org\nSubject: sans id\n\nCorps\n"
    crlf = lf.replace(b"\n", b"\r\n") + b"\r\n  \r\n"

    key = parse_email(lf).natural_key

    assert parse_email(lf).message_id is None
    assert key == parse_email(crlf).natural_key == synthetic_key(crlf)
    assert key == "email:sha256:" + hashlib.sha256(lf.rstrip()).hexdigest()
    assert key != synthetic_key(lf.replace(b"Corps", b"Autre"))


def test_folded_message_id() -> None:
    raw = _raw("From: a@example.org\nMessage-ID:\n <PA4PR16MB5430@outlook.example>\n\nCorps\n")

    contact = parse_email(raw)

    assert contact.message_id == "PA4PR16MB5430@outlook.example"
    assert contact.natural_key == "email:PA4PR16MB5430@outlook.example"


def test_oversized_message_id_falls_back_to_the_synthetic_key() -> None:
    raw = _raw(f"From: a@example.org\nMessage-ID: <{'x' * 600}@example.org>\n\nCorps\n")

    contact = parse_email(raw)

    assert contact.message_id is None
    assert contact.natural_key == synthetic_key(raw)
    assert contact.defects == ("Message-ID longer than 494 characters, ignored",)


def test_rfc2047_subject_is_decoded_and_collapsed() -> None:
    raw = _raw(
        "From: =?iso-8859-1?q?=C9ric_Cl=E9ment?= <eric@free.example>\n"
        "Subject: =?utf-8?q?R=C3=A9clamation_=E2=80=93?=\n"
        "  =?windows-1252?q?_dossier_n=B0?=   AS-2026-000001\n\nCorps\n"
    )

    contact = parse_email(raw)

    assert contact.subject == "Réclamation – dossier n° AS-2026-000001"
    assert contact.sender_name == "Éric Clément"


def test_dates() -> None:
    utc = parse_email(_raw("From: a@example.org\nDate: Mon, 5 Jan 2026 10:00:00 -0000\n\nx\n"))
    invalid = parse_email(_raw("From: a@example.org\nDate: le 5 janvier\n\nx\n"))

    assert utc.sent_at == datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    assert invalid.sent_at is None
    assert invalid.defects == ("invalid Date header 'le 5 janvier'",)


def test_sender_fallbacks() -> None:
    by_sender = parse_email(_raw("Sender: Secretariat <Secretariat@Example.org>\n\nx\n"))
    by_return_path = parse_email(_raw("Return-Path: <Bounce@Example.org>\n\nx\n"))
    by_envelope = parse_email(_raw("Subject: x\n\nx\n"), envelope_sender="Env@Example.org")
    nobody = parse_email(_raw("Subject: x\n\nx\n"))

    assert (by_sender.sender, by_sender.sender_name) == ("secretariat@example.org", "Secretariat")
    assert by_return_path.sender == "bounce@example.org"
    assert by_envelope.sender == "env@example.org"
    assert nobody.sender == ""
    assert nobody.defects == ("no sender address found",)


# --------------------------------------------------------------------------- RFC 3834


@pytest.mark.parametrize(
    ("headers", "envelope_sender", "expected"),
    [
        ({"Auto-Submitted": "auto-replied; owner=x"}, None, "Auto-Submitted: auto-replied"),
        ({"Auto-Submitted": "Auto-Generated"}, None, "Auto-Submitted: auto-generated"),
        ({"Precedence": "bulk"}, None, "Precedence: bulk"),
        ({"Precedence": "List"}, None, "Precedence: list"),
        ({"Precedence": "junk"}, None, "Precedence: junk"),
        ({}, "", "null envelope sender"),
        ({}, "<>", "null envelope sender"),
        ({"Return-Path": "<>"}, None, "null Return-Path"),
        (
            {"From": "Mail Delivery System <MAILER-DAEMON@mx.example>"},
            None,
            "From is mailer-daemon",
        ),
        ({"Sender": "postmaster@example.org"}, None, "Sender is postmaster"),
        ({"X-Autoreply": "yes"}, None, "X-Autoreply header"),
        ({"X-Autorespond": "Absent"}, None, "X-Autorespond header"),
        ({"X-Auto-Response-Suppress": "All"}, None, "X-Auto-Response-Suppress: All"),
        ({"X-Auto-Response-Suppress": "DR, OOF"}, None, "X-Auto-Response-Suppress: DR, OOF"),
        ({"X-Auto-Response-Suppress": "AutoReply"}, None, "X-Auto-Response-Suppress: AutoReply"),
        ({"List-Id": "<infos.example.org>"}, None, "mailing list (List-Id)"),
        ({"List-Unsubscribe": "<mailto:u@example.org>"}, None, "mailing list (List-Unsubscribe)"),
    ],
)
def test_automatic_reason_rules(
    headers: dict[str, str], envelope_sender: str | None, expected: str
) -> None:
    msg = _mail(sender=headers.pop("From", "Jean Dupont <jean.dupont@example.org>"))
    for name, value in headers.items():
        msg[name] = value

    assert automatic_reason(msg, envelope_sender) == expected
    assert parse_email(msg.as_bytes(), envelope_sender=envelope_sender).automatic_reason == expected


def test_delivery_report_is_automatic() -> None:
    raw = _raw(
        "From: Mail Delivery <bounces@mx.example>\nSubject: Undelivered\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=r\n\n"
        "--r\nContent-Type: text/plain\n\nYour message could not be delivered.\n"
        "--r\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n"
        "Final-Recipient: rfc822; x@example.org\nAction: failed\nStatus: 5.1.1\n--r--\n"
    )

    contact = parse_email(raw)

    assert contact.automatic_reason == "multipart/report (delivery-status)"
    assert contact.text == "Your message could not be delivered."
    [report] = contact.attachments
    assert report.declared_type == "message/delivery-status"
    assert report.filename == "part-1.txt"
    assert b"Status: 5.1.1" in report.content


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Auto-Submitted": "no"},
        {"Auto-Submitted": "No (sent by a person)"},
        {"Precedence": "first-class"},
        {"X-Auto-Response-Suppress": "DR, RN"},
        {"Return-Path": "<jean.dupont@example.org>"},
    ],
)
def test_human_mail_is_not_automatic(headers: dict[str, str]) -> None:
    msg = _mail()
    for name, value in headers.items():
        msg[name] = value

    assert automatic_reason(msg, "jean.dupont@example.org") is None
    assert automatic_reason(msg, None) is None
    assert parse_email(msg.as_bytes()).automatic_reason is None


def test_automatic_reason_on_a_parsed_message() -> None:
    raw = _raw("From: a@example.org\nAuto-Submitted: auto-replied\n\nJe suis absent.\n")
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)

    assert automatic_reason(msg, None) == "Auto-Submitted: auto-replied"


# --------------------------------------------------------------------------- real corpus


def test_corpus_refund_request_with_two_pdfs() -> None:
    contact = parse_email((EMAILS / "eml-0001.eml").read_bytes())

    assert contact.subject == "Demande de remboursement – dossier AS-2025-004124"
    assert contact.sender == "oceane.brun@laposte.example"
    assert contact.sender_name == "Océane Brun"
    assert contact.recipients == ("remboursements@mistral-assistance.example",)
    assert contact.message_id == (
        "PA4PR16MB54309DE915D4F398@PA7PR79MB2890.eurprd06.prod.outlook.example"
    )
    assert contact.sent_at == datetime(2025, 12, 25, 21, 34, 9, tzinfo=UTC)
    assert "soit 358,22 €" in contact.text
    assert [(a.filename, a.declared_type) for a in contact.attachments] == [
        ("Facture_F2512217.pdf", "application/pdf"),
        ("RIB.pdf", "application/pdf"),
    ]
    assert all(a.content.startswith(b"%PDF") for a in contact.attachments)
    assert contact.automatic_reason is None
    assert contact.defects == ()


def test_corpus_windows_1252_body_and_latin1_rfc2231_filename() -> None:
    contact = parse_email((EMAILS / "eml-0003.eml").read_bytes())

    assert contact.subject == "Frais avancés taxi + hôtel – AS 2026 010961"
    assert contact.sender == "ericclement@free.example"
    assert contact.sender_name == "Éric Clément"
    assert "taxi 89,02 € et hôtel 489,57 €" in contact.text
    assert "Éric Clément" in contact.text
    assert [(a.filename, a.declared_type) for a in contact.attachments] == [
        ("ticket taxi.jpg", "image/jpeg"),
        ("facture hôtel.pdf", "application/pdf"),
        ("RIB.jpg", "image/jpeg"),
    ]
    assert contact.attachments[0].content.startswith(b"\xff\xd8\xff")
    assert contact.attachments[1].content.startswith(b"%PDF")
    assert contact.defects == ()
