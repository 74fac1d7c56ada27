"""The hand-off framing, fed in 1-, 16- and 4096-byte chunks (no sockets, no threads)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.testing import StringTransport

from sidecar.bounce import group, handoff
from sidecar.bounce.derive import Outcome
from sidecar.bounce.envelope import Envelope


class FakeRecorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[bytes, Envelope]] = []
        self.fail = fail

    def record(self, data: bytes, env: Envelope) -> Outcome:
        if self.fail:
            raise RuntimeError("database is locked")
        self.calls.append((data, env))
        return Outcome("parsed", 7, recipients=1, suppressions=1)


def record_each(recorder: Any, items: list[tuple[bytes, Envelope]]) -> list[Any]:
    """group.record_group's contract over FakeRecorder.record: an Outcome or the exception, per item."""
    out: list[Any] = []
    for data, env in items:
        try:
            out.append(recorder.record(data, env))
        except Exception as e:
            out.append(e)
    return out


@pytest.fixture(autouse=True)
def inline_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group, "deferToThreadPool", lambda reactor, pool, fn, *a: defer.maybeDeferred(fn, *a))
    monkeypatch.setattr(group, "record_group", record_each)


def connect(recorder: Any, max_size: int = 1 << 20) -> tuple[handoff.HandoffProtocol, StringTransport]:
    proto = handoff.HandoffFactory(recorder, None, None, max_size).buildProtocol(None)
    tr = StringTransport()
    proto.makeConnection(tr)
    return proto, tr


def feed(proto: handoff.HandoffProtocol, data: bytes, size: int) -> None:
    for i in range(0, len(data), size):
        proto.dataReceived(data[i : i + size])


@pytest.mark.parametrize("chunk", [1, 16, 4096])
def test_request_in_chunks(chunk: int) -> None:
    body = b"Subject: bounce\n\n" + b"y" * 5000
    env = Envelope("MAILER-DAEMON", "bounces@b.example", "Q9", "tok", len(body))
    rec = FakeRecorder()
    proto, tr = connect(rec)
    feed(proto, env.to_header(len(body)) + body, chunk)
    assert rec.calls == [(body, env)]
    assert tr.value().startswith(b"OK parsed id=7") and tr.value().endswith(b"\n")
    assert tr.disconnecting


def test_failure_replies_tempfail() -> None:
    proto, tr = connect(FakeRecorder(fail=True))
    feed(proto, Envelope().to_header(3) + b"abc", 4096)
    assert tr.value() == b"TEMPFAIL RuntimeError: database is locked\n"


@pytest.mark.parametrize("junk", [b"not json\n", b'{"length": -1}\n', b"[1]\n", b"x" * 20000])
def test_malformed_header(junk: bytes) -> None:
    rec = FakeRecorder()
    proto, tr = connect(rec)
    feed(proto, junk, 4096)
    assert tr.value().startswith(b"TEMPFAIL") and not rec.calls


def test_declared_length_over_the_limit_is_closed_before_the_body() -> None:
    rec = FakeRecorder()
    proto, tr = connect(rec, max_size=100)
    feed(proto, Envelope(size=300).to_header(101), 64)  # the body is never waited for
    assert tr.disconnecting and tr.value() == b"" and not rec.calls  # unanswered: the client records itself
    feed(proto, b"z" * 101, 64)
    assert not rec.calls


def test_bytes_past_the_declared_length_are_ignored() -> None:
    rec = FakeRecorder()
    proto, tr = connect(rec, max_size=100)
    feed(proto, Envelope(size=100).to_header(100) + b"z" * 300, 64)
    ((data, env),) = rec.calls
    assert data == b"z" * 100 and not env.truncated and env.size == 100


def test_body_larger_than_the_memory_spool_goes_to_a_file() -> None:
    rec = FakeRecorder()
    proto, tr = connect(rec, max_size=1 << 21)
    body = b"q" * (handoff.SPOOL_MEMORY + 2)
    feed(proto, Envelope().to_header(len(body)) + body[:-1], 65536)
    assert proto.spool._rolled  # on disk, not in memory
    feed(proto, body[-1:], 1)
    assert rec.calls[0][0] == body and tr.value().startswith(b"OK")


def test_connections_beyond_the_cap_are_refused() -> None:
    factory = handoff.HandoffFactory(FakeRecorder(), None, None, 100, max_connections=2)
    protos = [factory.buildProtocol(None) for _ in range(2)]
    for p in protos:
        assert p is not None
        p.makeConnection(StringTransport())
    assert factory.buildProtocol(None) is None
    protos[0].connectionLost()
    assert factory.buildProtocol(None) is not None
