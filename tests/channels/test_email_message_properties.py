"""Properties of the MIME parser: any bytes give a storable contact with its defects listed,
well-formed messages keep subject, sender and files, and no header injection gets through."""

from __future__ import annotations

import base64
import time
import unicodedata
from email.message import EmailMessage
from email.utils import formataddr
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from channels.email_message import (
    _clean_text,
    _normalise_address,
    _parsed_addresses,
    _plain_text,
    _simple_mailbox,
    _structured,
    parse_email,
    read_headers,
)
from models.inbound import InboundContact
from models.store import Store
from models.tables import Contact

EMAILS = Path(__file__).parent.parent / "data" / "emails"
SAMPLES = sorted(p.read_bytes() for p in EMAILS.glob("*.eml"))
CI = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Column sizes the store enforces (models/tables.py).
MAX_NATURAL_KEY = 500
MAX_ADDRESS = 320


def _storable(text: str) -> bool:
    # PostgreSQL refuses NUL in text and lone surrogates cannot even be encoded.
    return "\x00" not in text and not any("\ud800" <= ch <= "\udfff" for ch in text)


def _one_line(text: str) -> bool:
    return not any(unicodedata.category(ch) == "Cc" for ch in text)


def _check(contact: InboundContact) -> None:
    assert contact.channel == "email"
    assert contact.natural_key.startswith("email:")
    assert len(contact.natural_key) <= MAX_NATURAL_KEY
    assert len(contact.sender) <= MAX_ADDRESS
    # The catch-all in parse_email is a safety net: reaching it means a parser bug.
    assert not any(d.startswith("parser failure") for d in contact.defects), contact.defects
    texts = [contact.sender, contact.sender_name, contact.subject, contact.text, *contact.defects]
    texts += [*contact.recipients, *contact.references, contact.html or ""]
    texts += [contact.message_id or "", contact.in_reply_to or ""]
    assert all(_storable(t) for t in texts)
    for line in (contact.subject, contact.sender_name, *contact.recipients, contact.sender):
        assert _one_line(line), line
    for attachment in contact.attachments:
        name = attachment.filename
        # The blob store is content-addressed: a name is only ever shown, never a path.
        assert name and name not in (".", "..") and "/" not in name and "\\" not in name
        assert _one_line(name) and _storable(name) and len(name) <= 200
        assert _storable(attachment.declared_type)


@CI
@given(st.binary(max_size=3000))
@example(b"")
@example(b"\r\n\r\n")
@example(b"Content-Type: multipart/mixed\r\n\r\n--\r\n")
@example(b"From: =?utf-8?b?AA==?= <\x00@x>\r\nSubject: \xff\xfe\x00\r\n\r\n\xff")
def test_any_bytes_give_a_storable_contact(raw: bytes) -> None:
    _check(parse_email(raw))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real message with a few byte-level edits: cut, duplicated or spliced-in junk."""
    raw = bytearray(draw(st.sampled_from([*SAMPLES, _built("Objet", "x@example.org", [])])))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw)))
        kind = draw(st.sampled_from(["cut", "junk", "dup", "delete"]))
        if kind == "cut":
            del raw[at:]
        elif kind == "junk":
            junk = draw(
                st.one_of(
                    st.binary(min_size=1, max_size=20),
                    st.sampled_from(
                        [
                            b"\r\n--",
                            b"\r\nContent-Type: multipart/mixed; boundary=x\r\n",
                            b"\r\nContent-Transfer-Encoding: base64\r\n",
                            b"=?utf-8?q?=FF=FE?=",
                            b"\r\n\r\n",
                            b"charset=x-unknown",
                        ]
                    ),
                )
            )
            raw[at:at] = junk
        elif kind == "dup":
            raw[at:at] = raw[max(0, at - 200) : at]
        else:
            del raw[at : at + draw(st.integers(1, 50))]
    return bytes(raw)


@CI
@given(mutated())
def test_mutated_messages_give_a_storable_contact(raw: bytes) -> None:
    started = time.monotonic()
    contact = parse_email(raw)
    _check(contact)
    assert time.monotonic() - started < 10


def _identity(contact: InboundContact) -> tuple[object, ...]:
    return (
        contact.natural_key,
        contact.sender,
        contact.sender_name,
        contact.message_id,
        contact.subject,
        contact.automatic_reason,
    )


@CI
@given(st.one_of(mutated(), st.binary(max_size=3000)), st.sampled_from([None, "", "a@b.example"]))
@example(b"From: a@b.example\r\n\nMessage-ID: <late@x>\r\n\r\n", None)
@example(b"From: a@b.example\r\rMessage-ID: <cr@x>\n\nbody", None)
def test_the_smtp_session_and_intake_agree_on_identity(raw: bytes, mail_from: str | None) -> None:
    """The session answers from the headers alone; intake's full parse of the same bytes must
    give the same natural key, sender and subject, or a re-sent mail would not be known."""
    early = read_headers(raw, envelope_sender=mail_from)
    assert early.raw_only and not early.text and not early.attachments
    assert _identity(early) == _identity(parse_email(raw, envelope_sender=mail_from))


def _built(subject: str, sender: str, files: list[tuple[str, bytes]], name: str = "") -> bytes:
    msg = EmailMessage()
    msg["From"] = formataddr((name, sender)) if name else sender
    msg["To"] = "sinistres@guichet.example"
    msg["Subject"] = subject
    msg["Message-ID"] = "<rt@example.org>"
    msg.set_content("Bonjour,\nvoici les pièces.\n")
    for filename, content in files:
        msg.add_attachment(
            content, maintype="application", subtype="octet-stream", filename=filename
        )
    return msg.as_bytes()


# Printable text as people type it; the parser collapses runs of whitespace in a subject.
_words = st.text(
    alphabet=st.characters(
        blacklist_categories=["Cc", "Cs", "Zl", "Zp", "Cf", "Co", "Cn"],
        blacklist_characters="\x85",
    ),
    min_size=1,
    max_size=60,
).map(lambda s: " ".join(s.split()))
# The email package writes an ASCII "=?...?=" as is, and every reader then decodes it.
_words = _words.filter(lambda s: bool(s) and "=?" not in s)
_local = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
_filename = st.from_regex(r"[\w\u00e9\u00e8 ()-]{1,40}\.(pdf|jpg|png|docx|txt)", fullmatch=True)


@CI
@given(
    _words,
    _local,
    _words,
    st.lists(st.tuples(_filename, st.binary(max_size=300)), max_size=5),
)
@example("Remboursement: facture n°12 €", "jean.dupont", "Jean Dupont", [("a b.pdf", b"%PDF")])
def test_well_formed_messages_round_trip(
    subject: str, local: str, name: str, files: list[tuple[str, bytes]]
) -> None:
    sender = f"{local}@example.org"
    contact = parse_email(_built(subject, sender, files, name))
    _check(contact)
    assert contact.subject == subject
    assert contact.sender == sender
    assert contact.sender_name == " ".join(name.split())
    assert contact.recipients == ("sinistres@guichet.example",)
    assert contact.message_id == "rt@example.org"
    assert [(a.filename, a.content) for a in contact.attachments] == [
        (unicodedata.normalize("NFC", f.strip()), c) for f, c in files
    ]
    assert "voici les pièces." in contact.text


def _word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


INJECTIONS = [
    "Jean\r\nBcc: pirate@evil.example",
    "Jean\nTo: pirate@evil.example",
    "Jean\rX-Injected: 1",
    "Jean\x00Dupont",
    "..\\..\\windows\\system32\\evil.exe",
    "../../etc/passwd",
    "fdp\u202eexe.pdf",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_header_injection_in_names_stays_in_the_name(payload: str) -> None:
    quoted = payload.encode().hex()
    percent = "".join(f"%{quoted[i : i + 2]}" for i in range(0, len(quoted), 2))
    raw = (
        f"From: {_word(payload)} <jean@example.org>\r\n"
        "To: sinistres@guichet.example\r\n"
        f"Subject: {_word(payload)}\r\n"
        "Message-ID: <inj@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\ncorps\r\n"
        f'--b\r\nContent-Type: application/pdf; name="{_word(payload)}"\r\n'
        "Content-Disposition: attachment\r\n\r\n%PDF-1.4\r\n"
        "--b\r\nContent-Type: application/pdf\r\n"
        f"Content-Disposition: attachment; filename*=utf-8''{percent}\r\n\r\n%PDF-1.4\r\n"
        "--b--\r\n"
    ).encode()
    contact = parse_email(raw)
    _check(contact)
    assert contact.sender == "jean@example.org"
    assert contact.recipients == ("sinistres@guichet.example",)
    assert "evil" not in " ".join(contact.recipients)
    assert len(contact.attachments) == 2
    for attachment in contact.attachments:
        assert attachment.content.startswith(b"%PDF")
        assert "\u202e" not in attachment.filename


HOSTILE = [
    b"",
    b"\xff\xfe\x00\x00garbage",
    b"Subject: " + b"=?utf-8?q?" + b"=FF" * 5000 + b"?=\r\n\r\nx",
    b"Content-Type: multipart/mixed; boundary=a\r\n\r\n" + b"--a\r\n" * 3000,
    b"Message-ID: <" + b"x" * 2000 + b">\r\nFrom: a@b\r\n\r\nlong id",
]


@pytest.mark.parametrize("raw", HOSTILE, ids=range(len(HOSTILE)))
async def test_store_keeps_the_raw_bytes_of_any_message(store: Store, raw: bytes) -> None:
    contact = parse_email(raw)
    _check(contact)
    accepted = await store.accept_contact(contact, raw)
    again = await store.accept_contact(parse_email(raw), raw)
    assert (again.contact_id, again.duplicate) == (accepted.contact_id, True)
    async with store.sessions() as session:
        row = await session.get_one(Contact, accepted.contact_id)
    assert row.raw_sha256 is not None and await store.raw_content(row.raw_sha256) == raw


# --- the plain-mailbox shortcut of the header reading ---------------------------------------

_ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
_atoms = st.text(alphabet=_ATEXT, min_size=1, max_size=8)
_labels = st.text(alphabet="abcxyz019-", min_size=1, max_size=8)
_addr_specs = st.builds(
    lambda local, domain: f"{'.'.join(local)}@{'.'.join(domain)}",
    st.lists(_atoms, min_size=1, max_size=3),
    st.lists(_labels, min_size=1, max_size=3),
)
_spaces = st.text(alphabet=" \t", max_size=3)
_mailboxes = st.one_of(
    st.builds(lambda a, s, t: f"{s}{a}{t}", _addr_specs, _spaces, _spaces),
    st.builds(
        lambda name, a, s: f"{s}{name}{s}<{a}>{s}",
        st.text(alphabet="Jean Dupont-'\t019", max_size=20),
        _addr_specs,
        _spaces,
    ),
    st.builds(
        lambda name, a, s: f'{s}"{name}"{s}<{a}>{s}',
        st.text(alphabet="Dupont, Jean.'-019 ", max_size=20),
        _addr_specs,
        _spaces,
    ),
)


def _read(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(_clean_text(name), _normalise_address(address)) for name, address in pairs]


@CI
@given(st.one_of(_mailboxes, st.text(max_size=60)))
def test_a_plain_mailbox_is_read_as_the_policy_parser_reads_it(text: str) -> None:
    # The SMTP session reads From without the policy's parser when it is one plain mailbox;
    # the answer must be the parser's, or the two reads of one message would disagree.
    simple = _simple_mailbox(text)
    if simple is None:
        return
    assert _read([simple]) == _read(_parsed_addresses("from", text, None)), text


def test_the_shortcut_takes_the_common_forms_and_leaves_the_rest() -> None:
    taken = ["jean@example.org", "Jean Dupont <jean@example.org>", '"Dupont, J." <j@ex.fr>']
    left = ["=?utf-8?q?J=C3=A9r=C3=B4me?= <j@ex.fr>", "a@ex.fr, b@ex.fr", "j@ex.fr (Jean)"]
    assert all(_simple_mailbox(text) is not None for text in taken)
    assert all(_simple_mailbox(text) is None for text in left)


@CI
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=80))
def test_a_plain_subject_is_read_as_the_policy_parser_reads_it(text: str) -> None:
    # Read as is when plain ASCII without encoded words: the same as the parser's reading.
    if not _plain_text(text):
        return
    assert _clean_text(text) == _clean_text(str(_structured("subject", text, None))), text
