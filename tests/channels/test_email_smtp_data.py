"""Guichet's block-wise DATA reader against stock aiosmtpd: same content, same replies, for any
byte stream and any way TCP cuts it, and nothing read past the final dot."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from itertools import pairwise

from aiosmtpd.smtp import SMTP
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from channels.email_smtp import IntakeSMTP, smtp_factory

#: Small, so that hypothesis reaches the 552 refusal without megabytes of data.
SIZE_LIMIT = 4000
CI = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Recorder:
    """A DATA hook that keeps what the session handed over."""

    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        assert envelope.original_content == content
        self.contents.append(content)
        return f"250 OK: {len(content)} bytes"


async def _conversation(
    smtp: type[SMTP], chunks: list[bytes], after: bytes
) -> tuple[list[bytes], list[bytes]]:
    """Every reply of a session that sends ``chunks`` as its DATA (in separate writes) and then
    ``after`` right behind them, and the contents the handler received."""
    recorder = Recorder()
    factory = smtp_factory(recorder, "guichet.localhost", SIZE_LIMIT, session=smtp)
    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()  # greeting
        writer.write(b"HELO client\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n")
        for _ in range(3):
            await reader.readline()
        writer.write(b"DATA\r\n")
        assert (await reader.readline()).startswith(b"354")
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            # Let the server read this write on its own, so the cuts are the ones asked for.
            await asyncio.sleep(0.001)
        writer.write(after + b"QUIT\r\n")
        replies = (await asyncio.wait_for(reader.read(), 20)).split(b"\r\n")
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
    return replies, recorder.contents


def _both(chunks: list[bytes], after: bytes = b"") -> tuple[tuple[list[bytes], list[bytes]], ...]:
    async def run() -> tuple[tuple[list[bytes], list[bytes]], ...]:
        return (
            await _conversation(SMTP, chunks, after),
            await _conversation(IntakeSMTP, chunks, after),
        )

    return asyncio.run(run())


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(points) if b > a]


#: Lines of a message: any bytes, dot-stuffed lines, lines ending with a dot, lines around the
#: length limit. A lone dot (the end) is only ever the last line; the content and replies after
#: an early end are the pipelining test's.
LINE = st.one_of(
    st.binary(max_size=90).filter(lambda line: b"\r\n" not in line and line != b"."),
    st.sampled_from([b"", b"..", b"...", b"Cordialement.", b".\r", b"a\rb", b"x\n.", b"\n"]),
    st.integers(990, 1010).map(lambda n: b"y" * n),
)


@CI
@given(
    lines=st.lists(LINE, max_size=60),
    cuts=st.lists(st.integers(0, 10**6), max_size=12),
    pipelined=st.sampled_from([b"", b"NOOP\r\n", b"RSET\r\nNOOP\r\n"]),
)
@example(lines=[], cuts=[], pipelined=b"")
@example(lines=[b".."], cuts=[1, 2, 3, 4, 5, 6], pipelined=b"NOOP\r\n")
@example(lines=[b"a", b".b", b".."], cuts=[3, 4, 5, 6, 7], pipelined=b"")
@example(lines=[b"y" * 999, b"z"], cuts=[], pipelined=b"")
@example(lines=[b"y" * 1000], cuts=[], pipelined=b"")
@example(lines=[b"x" * 80] * 60, cuts=[], pipelined=b"")
def test_same_as_aiosmtpd(lines: list[bytes], cuts: list[int], pipelined: bytes) -> None:
    data = b"".join(line + b"\r\n" for line in lines) + b".\r\n"
    (stock_replies, stock), (ours_replies, ours) = _both(_cut(data, cuts), pipelined)
    assert ours == stock
    if _refused_twice(lines):
        # Too big and a line too long: refused either way, but aiosmtpd names the condition
        # it met first, which depends on how TCP cut the stream; Guichet says 552.
        assert ours_replies[0] == b"552 Error: Too much mail data"
        assert stock_replies[0].startswith((b"552 ", b"500 Line too long"))
        assert ours_replies[1:] == stock_replies[1:]
    else:
        assert ours_replies == stock_replies


def _refused_twice(lines: list[bytes]) -> bool:
    """Whether the message of ``lines`` is both too big and has a line too long."""
    size = sum(len(line) + 2 for line in lines)
    return size > SIZE_LIMIT and any(len(line) + 2 > 1001 for line in lines)


def test_message_content_and_pipelined_commands() -> None:
    data = b"Subject: x\r\n\r\n.point\r\n..\r\nfin.\r\n.\r\n"
    # In one write with the commands behind it (RFC 2920 allows that), then a byte at a time.
    for chunks in ([data + b"NOOP\r\n"], [bytes([b]) for b in data + b"NOOP\r\n"]):
        (stock_replies, stock), (ours_replies, ours) = _both(chunks)
        assert ours == stock == [b"Subject: x\r\n\r\npoint\r\n.\r\nfin.\r\n"]
        assert ours_replies == stock_replies
        assert ours_replies[:3] == [b"250 OK: 30 bytes", b"250 OK", b"221 Bye"]


def test_refusals_are_given_once_the_data_is_over() -> None:
    cases: dict[bytes, Callable[[bytes], bool]] = {
        b"a" * 1200 + b"\r\n.\r\n": lambda r: r.startswith(b"500 Line too long"),
        (b"b" * 70 + b"\r\n") * 100 + b".\r\n": lambda r: r == b"552 Error: Too much mail data",
    }
    for data, refused in cases.items():
        (_, stock), (ours_replies, ours) = _both([data], b"NOOP\r\n")
        assert ours == stock == []
        assert refused(ours_replies[0]), ours_replies
        # The session goes on with the commands sent behind the data.
        assert ours_replies[1:3] == [b"250 OK", b"221 Bye"]
