"""The reactor side of group commit: who waits, who goes together, who is answered what."""

from __future__ import annotations

import io
from typing import Any

import pytest
from twisted.internet import defer

from sidecar.bounce import group
from sidecar.bounce.derive import Outcome
from sidecar.bounce.envelope import Envelope


class Pool:
    """deferToThreadPool stand-in: each call waits until the test fires it."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[Any], defer.Deferred[Any]]] = []

    def __call__(self, reactor: Any, pool: Any, fn: Any, recorder: Any, batch: list[Any]) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.calls.append((batch, d))
        return d


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> Pool:
    p = Pool()
    monkeypatch.setattr(group, "deferToThreadPool", p)
    return p


def submit(g: group.GroupCommit, n: int, length: int = 10) -> tuple[defer.Deferred[Outcome], list[Any]]:
    d = g.submit(io.BytesIO(b"x" * length), Envelope(queue_id=f"Q{n}"), length)
    got: list[Any] = []
    d.addBoth(got.append)
    return d, got


def test_arrivals_during_a_transaction_go_together_in_the_next(pool: Pool) -> None:
    g = group.GroupCommit(None, None, None)  # type: ignore[arg-type]
    _, first = submit(g, 0)
    assert len(pool.calls) == 1 and len(pool.calls[0][0]) == 1
    waiting = [submit(g, n)[1] for n in range(1, 4)]
    assert len(pool.calls) == 1  # nothing more starts while the first group is written
    pool.calls[0][1].callback([Outcome("parsed", 1)])
    assert first[0].message_id == 1 and not any(waiting)  # answered only after its own commit
    assert len(pool.calls) == 2 and [e.queue_id for _, e in pool.calls[1][0]] == ["Q1", "Q2", "Q3"]
    pool.calls[1][1].callback([Outcome("parsed", 2), RuntimeError("parser crashed"), Outcome("duplicate", 1)])
    assert waiting[0][0].message_id == 2 and waiting[2][0].outcome == "duplicate"
    assert waiting[1][0].check(RuntimeError)  # that member alone fails
    assert not g.running and not g.waiting


def test_a_failed_group_fails_every_member_and_the_next_group_still_runs(pool: Pool) -> None:
    g = group.GroupCommit(None, None, None)  # type: ignore[arg-type]
    submit(g, 0)
    members = [submit(g, n)[1] for n in range(1, 3)]
    pool.calls[0][1].callback([Outcome("parsed", 1)])
    later = submit(g, 3)[1]
    pool.calls[1][1].errback(RuntimeError("thread pool stopped"))
    assert all(m[0].check(RuntimeError) for m in members)
    assert len(pool.calls) == 3 and not later  # the one that came meanwhile is in the next group
    pool.calls[2][1].callback([Outcome("parsed", 4)])
    assert later[0].message_id == 4


def test_a_group_is_bounded_in_messages_and_bytes(pool: Pool) -> None:
    g = group.GroupCommit(None, None, None)  # type: ignore[arg-type]
    submit(g, 0)
    for n in range(group.MAX_MESSAGES + 5):
        submit(g, n)
    pool.calls[0][1].callback([Outcome("parsed", 1)])
    assert len(pool.calls[1][0]) == group.MAX_MESSAGES
    pool.calls[1][1].callback([Outcome("parsed", 1)] * group.MAX_MESSAGES)
    assert len(pool.calls[2][0]) == 5
    pool.calls[2][1].callback([Outcome("parsed", 1)] * 5)
    big = group.MAX_BYTES // 2 + 1
    submit(g, 100, big)  # runs at once
    for n in range(3):
        submit(g, 101 + n, big)
    pool.calls[3][1].callback([Outcome("parsed", 1)])
    assert len(pool.calls[4][0]) == 1  # two of these would pass MAX_BYTES: one at a time
