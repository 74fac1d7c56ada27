"""The LMTP listener's protocol, fed in 1-, 16- and 4096-byte chunks (no sockets, no threads):
replies, bounds, one answer per recipient after its commit, TEMPFAIL paths, XFORWARD."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from sidecar.bounce import group, lmtp
from sidecar.bounce.derive import Outcome
from sidecar.bounce.envelope import Envelope
from sidecar.bounce.lmtp_data import DataSink

CHUNKS = [1, 16, 4096]


class FakeGroup:
    """GroupCommit's interface: submit(spool, env, length) -> Deferred. ``hold`` keeps the answers
    back until release(); ``fail`` names recipients whose commit fails."""

    def __init__(self, hold: bool = False, fail: tuple[str, ...] = ()) -> None:
        self.items: list[tuple[bytes, Envelope, int]] = []
        self.waiting: list[tuple[defer.Deferred[Any], Envelope]] = []
        self.hold = hold
        self.fail = fail

    def submit(self, spool: Any, env: Envelope, length: int) -> defer.Deferred[Any]:
        spool.seek(0)
        raw = spool.read()
        spool.close()
        self.items.append((raw, env, length))
        d: defer.Deferred[Any] = defer.Deferred()
        self.waiting.append((d, env))
        if not self.hold:
            self.release()
        return d

    def release(self) -> None:
        waiting, self.waiting = self.waiting, []
        for d, env in waiting:
            if env.recipient in self.fail:
                d.errback(Failure(RuntimeError("database is locked")))
            else:
                d.callback(Outcome("parsed", len(self.items), recipients=1))


def connect(grp: Any, **kw: Any) -> tuple[lmtp.LmtpProtocol, StringTransport, lmtp.LmtpFactory]:
    kw.setdefault("clock", Clock())
    factory = lmtp.LmtpFactory(grp, max_size=kw.pop("max_size", 1 << 20), hostname="lmtp.test", **kw)
    proto = factory.buildProtocol(None)
    assert isinstance(proto, lmtp.LmtpProtocol)
    tr = StringTransport()
    proto.makeConnection(tr)
    return proto, tr, factory


def feed(proto: Any, data: bytes, size: int) -> None:
    for i in range(0, len(data), size):
        proto.dataReceived(data[i : i + size])


def replies(tr: StringTransport) -> list[str]:
    return [line for line in tr.value().decode().split("\r\n") if line]


def codes(tr: StringTransport) -> list[str]:
    return [line[:3] for line in replies(tr)]


DSN = b"Subject: Undelivered Mail\r\nContent-Type: text/plain\r\n\r\n..leading dot\r\n.\r\nx\r\n"
STUFFED = DSN.replace(b"\r\n.", b"\r\n..")
SESSION = (
    b"LHLO postfix.test\r\nXFORWARD IDENT=4Xq9+2B1\r\nMAIL FROM:<> BODY=8BITMIME SIZE=100\r\n"
    b"RCPT TO:<bounces+tok1@bounce.test>\r\nRCPT TO:<bounces@bounce.test>\r\nDATA\r\n" + STUFFED + b".\r\nQUIT\r\n"
)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_session_in_chunks_one_reply_per_recipient(chunk: int) -> None:
    grp = FakeGroup()
    proto, tr, _ = connect(grp)
    feed(proto, SESSION, chunk)
    lines = replies(tr)
    assert lines[0] == "220 lmtp.test LMTP postfix-sidecar ready"
    assert (
        "250 XFORWARD NAME ADDR PORT PROTO HELO SOURCE IDENT" in lines
        and "250-PIPELINING" in lines
        and "250-8BITMIME" in lines
    )
    after = lines[lines.index("354 End data with <CR><LF>.<CR><LF>") + 1 :]
    assert [line[:3] for line in after] == ["250", "250", "221"]
    assert after[0].startswith("250 2.0.0 Ok: parsed")
    assert tr.disconnecting
    # each recipient its own hand-off: the pipe's DOR lines, LF line ends, dots unstuffed
    body = DSN.replace(b"\r\n", b"\n")
    (raw1, env1, n1), (raw2, env2, n2) = grp.items
    assert raw1 == b"Return-Path: <MAILER-DAEMON>\nX-Original-To: bounces+tok1@bounce.test\n" + (
        b"Delivered-To: bounces+tok1@bounce.test\n" + body
    )
    assert raw2.endswith(b"Delivered-To: bounces@bounce.test\n" + body)
    assert raw1 != raw2 and n1 == len(raw1) and n2 == len(raw2)
    assert env1 == Envelope("MAILER-DAEMON", "bounces+tok1@bounce.test", "4Xq9+1", "tok1", len(raw1), False)
    assert (env2.extension, env2.queue_id, env2.recipient) == ("", "4Xq9+1", "bounces@bounce.test")


def test_replies_wait_for_the_commit_and_pipelined_commands_wait_for_them() -> None:
    grp = FakeGroup(hold=True)
    proto, tr, _ = connect(grp)
    feed(proto, SESSION.replace(b"QUIT", b"NOOP"), 4096)
    assert codes(tr)[-1] == "354" and len(grp.items) == 2  # handed over, nothing promised yet
    grp.release()
    assert codes(tr)[-3:] == ["250", "250", "250"] and replies(tr)[-1] == "250 2.0.0 Ok"


def test_a_failed_commit_is_451_for_that_recipient_only() -> None:
    grp = FakeGroup(fail=("bounces@bounce.test",))
    proto, tr, _ = connect(grp)
    feed(proto, SESSION, 4096)
    after = replies(tr)[-3:]
    assert after[0].startswith("250 ")
    assert after[1].startswith("451 4.3.0 not recorded, try again later: RuntimeError: database is locked")


def test_group_commit_reads_each_copy_and_closes_the_shared_spool(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real GroupCommit (its thread replaced by a direct call) over the per-recipient copies."""
    seen: list[tuple[bytes, Envelope]] = []

    def record(recorder: Any, items: list[tuple[bytes, Envelope]]) -> list[Any]:
        seen.extend(items)
        return [Outcome("parsed", n + 1) for n in range(len(items))]

    monkeypatch.setattr(group, "deferToThreadPool", lambda reactor, pool, fn, *a: defer.maybeDeferred(fn, *a))
    monkeypatch.setattr(group, "record_group", record)
    gc = group.GroupCommit(None, None, None)  # type: ignore[arg-type]
    proto, tr, _ = connect(gc)
    feed(proto, SESSION, 16)
    assert [env.recipient for _, env in seen] == ["bounces+tok1@bounce.test", "bounces@bounce.test"]
    assert all(raw.endswith(DSN.replace(b"\r\n", b"\n")) for raw, _ in seen)
    assert codes(tr)[-3:] == ["250", "250", "221"]


def test_group_commit_failure_is_451_for_every_recipient(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(recorder: Any, items: Any) -> Any:
        raise RuntimeError("thread pool gone")

    monkeypatch.setattr(group, "deferToThreadPool", lambda reactor, pool, fn, *a: defer.maybeDeferred(fn, *a))
    monkeypatch.setattr(group, "record_group", broken)
    proto, tr, _ = connect(group.GroupCommit(None, None, None))  # type: ignore[arg-type]
    feed(proto, SESSION, 4096)
    assert codes(tr)[-3:] == ["451", "451", "221"]


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        (b"MAIL FROM:<>\r\n", "503 5.5.1 say LHLO first"),
        (b"LHLO x\r\nRCPT TO:<a@b>\r\n", "503 5.5.1 need MAIL before RCPT"),
        (b"LHLO x\r\nMAIL FROM:<>\r\nDATA\r\n", "503 5.5.1 need RCPT before DATA"),
        (b"LHLO x\r\nMAIL FROM:<>\r\nMAIL FROM:<>\r\n", "503 5.5.1 nested MAIL command"),
        (b"EHLO x\r\n", "500 5.5.1 this is LMTP: say LHLO"),
        (b"LHLO\r\n", "501 5.5.4 LHLO needs a host name"),
        (b"LHLO x\r\nMAIL FROM:a@b\r\n", "451 4.5.4 syntax: MAIL FROM:<address>"),
        (b"LHLO x\r\nMAIL FROM:<> NOTIFY=NEVER\r\n", "455 4.5.4 unsupported MAIL parameter 'NOTIFY'"),
        (b"LHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<>\r\n", "451 4.1.3 empty recipient address"),
        (b"LHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<a@b> ORCPT=x\r\n", "455 4.5.4 unsupported RCPT parameter 'ORCPT'"),
        (b"LHLO x\r\nMAIL FROM:<a\x01b@c>\r\n", "451 4.5.2 control character in command"),
        (b"LHLO x\r\nXFORWARD IDENT=a+07b\r\n", "501 5.5.4 control character in XFORWARD IDENT"),
        (b"LHLO x\r\nXFORWARD IDENT=" + b"a" * 300 + b"\r\n", "501 5.5.4 XFORWARD IDENT longer than 255 characters"),
        (b"LHLO x\r\nMAIL FROM:<>\r\nXFORWARD IDENT=a\r\n", "503 5.5.1 XFORWARD belongs before MAIL"),
        (b"LHLO x\r\nMAIL FROM:<\xff@x>\r\n", "451 4.5.2 command is not UTF-8"),
        (b"BDAT 10\r\n", "500 5.5.2 command not recognised: 'BDAT'"),
    ],
)
def test_refusals_name_the_problem(commands: bytes, expected: str) -> None:
    grp = FakeGroup()
    proto, tr, _ = connect(grp)
    feed(proto, commands, 4096)
    assert replies(tr)[-1] == expected
    assert not grp.items and not tr.disconnecting


def test_too_many_recipients_is_452_and_the_rest_are_delivered() -> None:
    grp = FakeGroup()
    proto, tr, _ = connect(grp, max_recipients=2)
    rcpts = b"".join(b"RCPT TO:<r%d@b.test>\r\n" % i for i in range(3))
    feed(proto, b"LHLO x\r\nMAIL FROM:<>\r\n" + rcpts + b"DATA\r\nhello\r\n.\r\n", 4096)
    assert [r for r in replies(tr) if r.startswith("452")] == [
        "452 4.5.3 too many recipients (ingest.lmtp_max_recipients = 2)"
    ]
    assert [env.recipient for _, env, _ in grp.items] == ["r0@b.test", "r1@b.test"]
    assert codes(tr)[-2:] == ["250", "250"]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_a_long_command_line_closes_the_connection(chunk: int) -> None:
    proto, tr, _ = connect(FakeGroup())
    feed(proto, b"LHLO " + b"x" * 5000 + b"\r\nNOOP\r\n", chunk)
    assert replies(tr)[-1] == "421 4.5.2 line too long (limit 4096 bytes), closing connection"
    assert tr.disconnecting


@pytest.mark.parametrize("chunk", CHUNKS)
def test_a_message_over_the_size_limit_is_cut_and_recorded_as_truncated(chunk: int) -> None:
    grp = FakeGroup()
    proto, tr, _ = connect(grp, max_size=100)
    body = b"".join(b"line %04d of a long bounce\r\n" % i for i in range(200))
    feed(proto, b"LHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<b@b.test>\r\nDATA\r\n" + body + b".\r\n", chunk)
    ((raw, env, length),) = grp.items
    prefix = b"Return-Path: <MAILER-DAEMON>\nX-Original-To: b@b.test\nDelivered-To: b@b.test\n"
    assert raw == prefix + body.replace(b"\r\n", b"\n")[:100] and length == len(raw)
    assert env.truncated and env.size == len(prefix) + len(body) - 200  # LF line ends
    assert codes(tr)[-1] == "250"  # never refused for its size: the pipe keeps such a message too


def test_idle_timeout_421() -> None:
    clock = Clock()
    proto, tr, _ = connect(FakeGroup(), idle_timeout=300.0, clock=clock)
    clock.advance(299)
    feed(proto, b"NOOP\r\n", 4096)  # activity restarts the clock
    clock.advance(299)
    assert not tr.disconnecting
    clock.advance(2)
    assert replies(tr)[-1] == "421 4.4.2 idle timeout, closing connection" and tr.disconnecting


def test_over_the_connection_limit_421() -> None:
    grp = FakeGroup()
    factory = lmtp.LmtpFactory(grp, max_size=1000, max_connections=1, hostname="h", clock=Clock())
    first = factory.buildProtocol(None)
    assert first is not None
    first.makeConnection(StringTransport())
    busy = factory.buildProtocol(None)
    assert busy is not None
    tr = StringTransport()
    busy.makeConnection(tr)
    assert tr.value().startswith(b"421 4.3.2 too many connections") and tr.disconnecting
    first.connectionLost(Failure(Exception("gone")))
    assert isinstance(factory.buildProtocol(None), lmtp.LmtpProtocol)


def test_rset_forgets_the_transaction_and_xforward() -> None:
    grp = FakeGroup()
    proto, tr, _ = connect(grp)
    feed(proto, b"LHLO x\r\nXFORWARD IDENT=OLD\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRSET\r\n", 4096)
    feed(proto, b"MAIL FROM:<>\r\nRCPT TO:<e@f>\r\nDATA\r\nx\r\n.\r\n", 4096)
    ((_, env, _),) = grp.items
    assert (env.recipient, env.queue_id, env.sender) == ("e@f", "", "MAILER-DAEMON")


def test_xforward_unavailable_and_second_transaction_without_ident() -> None:
    grp = FakeGroup()
    proto, tr, _ = connect(grp)
    feed(proto, b"LHLO x\r\nXFORWARD NAME=[UNAVAILABLE] IDENT=[UNAVAILABLE]\r\n", 4096)
    feed(
        proto,
        b"MAIL FROM:<>\r\nRCPT TO:<a@b>\r\nDATA\r\nx\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<a@b>\r\nDATA\r\ny\r\n.\r\n",
        7,
    )
    assert [env.queue_id for _, env, _ in grp.items] == ["", ""]
    feed(proto, b"XFORWARD IDENT=Q1\r\nMAIL FROM:<>\r\nRCPT TO:<a@b>\r\nDATA\r\nz\r\n.\r\n", 4096)
    assert grp.items[-1][1].queue_id == "Q1"


@pytest.mark.parametrize(
    ("address", "delimiters", "extension"),
    [
        ("bounces+tok@b.test", "+", "tok"),
        ("bounces@b.test", "+", ""),
        ("bounces-a+b@b.test", "+-", "a+b"),
        ('"bounces+x y"@b.test', "+", "x y"),
        ("+lead@b.test", "+", ""),
    ],
)
def test_extension(address: str, delimiters: str, extension: str) -> None:
    from sidecar.bounce.lmtp_syntax import split_extension

    assert split_extension(address, delimiters) == extension


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 4096])
@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b".\r\n", b""),
        (b"..\r\n.\r\n", b".\n"),
        (b"a\r\n..b\r\n...\r\n.\r\nNEXT", b"a\n.b\n..\n"),
        (b"a\rb\r\n.x\r\n.\r\n", b"a\rb\n.x\n"),
    ],
)
def test_data_framing(wire: bytes, message: bytes, chunk: int) -> None:
    sink = DataSink(1000)
    rest = None
    for i in range(0, len(wire), chunk):
        if rest is not None:  # after the end: the protocol's command buffer
            rest += wire[i : i + chunk]
        else:
            rest = sink.feed(wire[i : i + chunk])
    assert rest is not None
    sink.spool.seek(0)
    assert sink.spool.read() == message and sink.total == len(message) and not sink.truncated
    assert wire.endswith(rest) and (rest == b"" or rest.endswith(b"NEXT"))


@pytest.mark.parametrize(
    ("head", "queue_id"),
    [
        (b"Received: by mail.lab.test (Postfix)\n\tid 8D48F224922; Sat, 28 Nov 2026\nSubject: x\n", "8D48F224922"),
        (
            b"Received: from x (unknown)\n\tby m.test (Postfix) with ESMTP id 4Xq9Z1w2Jhz9v\n\tfor <a@b>; Sat\n",
            "4Xq9Z1w2Jhz9v",
        ),
        (b"Subject: x\nReceived: by m.test (Postfix) id ABCDEF;\n", ""),  # not the first line: not ours
        (b"Received: by m.test (Exim) id ABCDEF;\n", ""),
    ],
)
def test_queue_id_from_postfixs_own_received_line(head: bytes, queue_id: str) -> None:
    from sidecar.bounce.lmtp_syntax import received_queue_id

    assert received_queue_id(head) == queue_id
    grp = FakeGroup()
    proto, _, _ = connect(grp)
    feed(proto, b"LHLO x\r\nXFORWARD SOURCE=LOCAL\r\nMAIL FROM:<>\r\nRCPT TO:<a@b>\r\nDATA\r\n", 4096)
    feed(proto, head.replace(b"\n", b"\r\n") + b".\r\n", 4096)
    assert grp.items[0][1].queue_id == queue_id


def test_input_pipelined_while_a_commit_is_awaited_pauses_reading() -> None:
    grp = FakeGroup(hold=True)
    proto, tr, _ = connect(grp)
    feed(proto, b"LHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<a@b>\r\nDATA\r\nx\r\n.\r\n", 4096)
    feed(proto, b"NOOP\r\n" * 12000, 4096)  # 72 KB the client sends without waiting
    assert tr.producerState == "paused" and codes(tr)[-1] == "354"
    grp.release()
    assert tr.producerState == "producing"
    assert replies(tr).count("250 2.0.0 Ok") == 12000  # every NOOP answered once reading resumed
