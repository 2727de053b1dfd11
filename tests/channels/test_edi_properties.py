"""Properties of the EDIFACT reader: any bytes and any mutation of a real interchange give
either NotEdifact or a result whose every problem has a code and a place; CONTRL re-parses."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from channels.edi import (
    COUNT_DOES_NOT_MATCH,
    INVALID_CHARACTER,
    INVALID_VALUE,
    MISSING,
    NOT_SUPPORTED_IN_POSITION,
    REFERENCES_DO_NOT_MATCH,
    UNSPECIFIED,
    Interchange,
    NotEdifact,
    SyntaxProblem,
    contrl_for,
    read_interchange,
)

EDI = Path(__file__).parent.parent / "data" / "edi"
SAMPLES = sorted(p.read_bytes() for p in EDI.glob("*.edi"))
CODES = {
    INVALID_VALUE,
    MISSING,
    NOT_SUPPORTED_IN_POSITION,
    UNSPECIFIED,
    INVALID_CHARACTER,
    REFERENCES_DO_NOT_MATCH,
    COUNT_DOES_NOT_MATCH,
}
# The message envelope: a problem there may concern the message as a whole.
ENVELOPE = {"UNB", "UNZ", "UNH", "UNT"}
# Money columns are Numeric(14, 2): an amount must be finite and fit 12 integer digits.
MONEY_LIMIT = Decimal(10) ** 12
CI = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NOW = datetime(2026, 3, 25, 13, 12, tzinfo=UTC)


def _check_problem(problem: SyntaxProblem, segments: int, *, in_message: bool) -> None:
    assert problem.code in CODES, problem
    assert problem.reason.strip(), problem
    assert problem.segment, problem
    # A position counts segments within a message (what UCS reports); an interchange-level
    # problem is reported by its segment tag alone (UCI), as is a missing UNH/UNT.
    if problem.position is None:
        assert not in_message or problem.segment in ENVELOPE, problem
    else:
        assert 1 <= problem.position <= segments, problem
    for number in (problem.element, problem.component):
        assert number is None or number >= 1, problem


def _check(interchange: Interchange, raw: bytes) -> None:
    assert interchange.sender and interchange.reference
    assert interchange.status in ("accepted", "partly_accepted", "rejected")
    # A position is the segment's number in its message: never past the end of the file.
    segments = max(1, raw.count(b"'") + raw.count(b"\n") + 1)
    if interchange.problem is not None:
        _check_problem(interchange.problem, segments, in_message=False)
    for message in interchange.messages:
        if message.problem is not None:
            _check_problem(message.problem, segments, in_message=True)
        amounts = [message.total_lines, message.taxable, message.vat, message.total]
        for line in message.lines:
            amounts += [line.quantity, line.unit_price, line.amount, line.vat_rate]
        for value in amounts:
            assert value is None or (value.is_finite() and abs(value) < MONEY_LIMIT), value


def _contrl_reparses(interchange: Interchange) -> None:
    text = contrl_for(interchange, "C42", NOW)
    # What write_contrl puts on disk.
    answer = read_interchange(text.encode("iso8859-1", errors="replace"))
    assert answer.problem is None, answer.problem
    [message] = answer.messages
    assert message.message_type == "CONTRL"
    # CONTRL is not an invoice; that is the only thing wrong with it.
    assert message.problem is not None and message.problem.code == INVALID_VALUE
    assert message.problem.segment == "UNH"
    assert answer.reference == "C42"


def _read(raw: bytes) -> Interchange | None:
    try:
        interchange = read_interchange(raw)
    except NotEdifact:
        return None
    _check(interchange, raw)
    return interchange


@CI
@given(st.binary(max_size=2000))
@example(b"UNB+UNOC:3+A+B+260325:1312+1'")
@example(b"UNA:+.? 'UNB+UNOC:3+A+B+x+1'UNH+1+INVOIC'MOA+77:NaN'UNT+3+1'UNZ+1+1'")
def test_any_bytes_give_not_edifact_or_a_checked_interchange(raw: bytes) -> None:
    interchange = _read(raw)
    if interchange is not None:
        _contrl_reparses(interchange)


def _segment_text() -> st.SearchStrategy[str]:
    return st.text(alphabet="ABCDEFGHINTUXZ0123456789+:.?' \n\x00é€", max_size=40)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real interchange with a few segment- or byte-level edits."""
    raw = draw(st.sampled_from(SAMPLES))
    segments = raw.split(b"'")
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["drop", "dup", "swap", "replace", "bytes", "cut"]))
        at = draw(st.integers(0, len(segments) - 1))
        if kind == "drop" and len(segments) > 1:
            del segments[at]
        elif kind == "dup":
            segments.insert(at, segments[at])
        elif kind == "swap":
            other = draw(st.integers(0, len(segments) - 1))
            segments[at], segments[other] = segments[other], segments[at]
        elif kind == "replace":
            segments[at] = draw(_segment_text()).encode("utf-8")
        elif kind == "bytes":
            chunk = segments[at]
            where = draw(st.integers(0, len(chunk)))
            noise = draw(st.binary(min_size=1, max_size=8))
            segments[at] = chunk[:where] + noise + chunk[where + draw(st.integers(0, 3)) :]
        else:
            segments = segments[: max(1, at)]
    return b"'".join(segments)


@CI
@given(mutated())
@example((EDI / "edi-0001.edi").read_bytes().replace(b"MOA+77:242.57", b"MOA+77:Infinity"))
@example((EDI / "edi-0001.edi").read_bytes().replace(b"MOA+77:242.57", b"MOA+77:1E+400"))
@example((EDI / "edi-0001.edi").read_bytes().replace(b"MOA+203:31.59", b"MOA+203:sNaN"))
@example((EDI / "edi-0001.edi").read_bytes().replace(b"PRI+AAA:2.43", b"PRI+AAA:1" + b"0" * 20))
def test_mutated_interchanges_are_read_or_refused(raw: bytes) -> None:
    interchange = _read(raw)
    if interchange is not None:
        _contrl_reparses(interchange)


def test_an_amount_that_is_no_number_is_an_invalid_value() -> None:
    raw = (EDI / "edi-0001.edi").read_bytes().replace(b"MOA+77:242.57", b"MOA+77:NaN")
    [message] = read_interchange(raw).messages
    assert message.total is None
    assert message.problem is not None
    assert (message.problem.code, message.problem.segment) == (INVALID_VALUE, "MOA")
    assert (message.problem.element, message.problem.component) == (1, 2)
