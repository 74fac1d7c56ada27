"""The outbox: deriving deliveries from the feeds, per-address order, backoff, dead letters, re-delivery."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import insert, select

from sidecar.store.db import make_engine, upgrade
from sidecar.store.models import Event, WebhookCursor, WebhookDelivery
from sidecar.suppression.store import SuppressionStore
from sidecar.webhooks import outbox
from sidecar.webhooks.outbox import Subscription
from sidecar.webhooks.signing import SignatureError, sign, verify

ALL = frozenset({"bounce.recorded", "complaint.recorded", "suppression.added", "suppression.removed",
                 "ratelimit.exceeded"})


@pytest.fixture
def engine(tmp_path):
    e = make_engine(f"sqlite:///{tmp_path}/sidecar.db")
    upgrade(e)
    return e


def bounce(engine, address, when=1000.0, kind="bounce"):
    with engine.begin() as conn:
        return conn.execute(insert(Event).values(created_at=when, kind=kind, address=address, tenant="",
                                                 category="invalid-recipient", reason="no such user", hard=True,
                                                 status="5.1.1", action="failed").returning(Event.id)).scalar_one()


def test_new_subscription_starts_at_the_end_then_derives_every_kind(engine):
    store = SuppressionStore(engine)
    bounce(engine, "old@example.com")
    ob = outbox.Outbox(engine, [Subscription("a", "http://x", "s", ALL),
                                Subscription("b", "http://y", "s", frozenset({"suppression.removed"}))])
    assert ob.materialise(2000.0) == 0
    bounce(engine, "u@example.com")
    store.add("u@example.com", reason="hard bounce", now=1001.0)
    store.remove("u@example.com", now=1002.0)
    bounce(engine, "x@example.com", kind="delay")
    with engine.begin() as conn:
        conn.execute(insert(Event).values(created_at=960.0, kind="ratelimit", address="alice", tenant="",
                                          reason="per-user", diagnostic="7 request(s) refused ..."))
    assert ob.materialise(2001.0) == 5
    assert ob.materialise(2002.0) == 0
    rows = outbox.list_deliveries(engine, subscription="a")
    assert [r["event_type"] for r in rows] == ["ratelimit.exceeded", "bounce.recorded", "suppression.added",
                                               "suppression.removed"]
    assert [r["event_type"] for r in outbox.list_deliveries(engine, subscription="b")] == ["suppression.removed"]
    with engine.connect() as conn:
        p = json.loads(conn.execute(select(WebhookDelivery.payload).where(
            WebhookDelivery.event_type == "ratelimit.exceeded")).scalar_one())
    assert p["data"] == {"rule": "per-user", "key": "per-user:alice", "value": "alice", "refused": 7,
                         "minute": "1970-01-01T00:16:00Z", "event_id": p["data"]["event_id"]}


def test_cursor_survives_a_new_outbox_object(engine):
    subs = [Subscription("a", "http://x", "s", ALL)]
    outbox.Outbox(engine, subs).materialise(1.0)
    bounce(engine, "a@example.com")
    assert outbox.Outbox(engine, subs).materialise(2.0) == 1
    assert outbox.Outbox(engine, subs).materialise(3.0) == 0
    with engine.connect() as conn:
        assert conn.execute(select(WebhookCursor.events_id)).scalar_one() >= 1


def test_claim_keeps_per_address_order_and_leases(engine):
    subs = [Subscription("a", "http://x", "s", ALL)]
    ob = outbox.Outbox(engine, subs)
    ob.materialise(1.0)
    for a in ("p@example.com", "q@example.com", "p@example.com"):
        bounce(engine, a)
    ob.materialise(10.0)
    first = outbox.claim_due(engine, ["a"], 10.0, lease=60)
    assert [r["address"] for r in first] == ["p@example.com", "q@example.com"]
    assert outbox.claim_due(engine, ["a"], 11.0) == []   # leased; the second p waits for the first
    outbox.record_attempt(engine, first[0]["id"], 12.0, ok=True, code=200, error=None, next_at=None)
    second = outbox.claim_due(engine, ["a"], 12.0)
    assert [r["address"] for r in second] == ["p@example.com"]
    # a failed attempt goes back to pending at next_at; dead once next_at is None
    outbox.record_attempt(engine, second[0]["id"], 13.0, ok=False, code=500, error="HTTP 500", next_at=20.0)
    assert outbox.claim_due(engine, ["a"], 19.0) == []
    again = outbox.claim_due(engine, ["a"], 20.0)
    assert again[0]["attempts"] == 1
    outbox.record_attempt(engine, again[0]["id"], 21.0, ok=False, code=None, error="refused", next_at=None)
    dead = outbox.list_deliveries(engine, status="dead")
    assert len(dead) == 1 and dead[0]["attempts"] == 2 and dead[0]["last_error"] == "refused"
    assert outbox.redeliver(engine, from_id=dead[0]["id"], status="dead", now=30.0) == 1
    assert [r["id"] for r in outbox.claim_due(engine, ["a"], 30.0)] == [dead[0]["id"]]
    summary = {s["status"]: s["count"] for s in outbox.summary(engine)}
    assert summary == {"delivered": 1, "pending": 2}   # q still leased, the re-queued p


def test_backoff_is_exponential_until_retry_for():
    at = [outbox.next_attempt(n, 0.0, 0.0, base=10, cap=3600, retry_for=86400) for n in (1, 2, 3, 4, 20)]
    assert at == [10, 20, 40, 80, 3600]
    assert outbox.next_attempt(3, 0.0, 86000.0, base=10, cap=3600, retry_for=86400) == 86040
    assert outbox.next_attempt(9, 0.0, 86000.0, base=10, cap=3600, retry_for=86400) == 86400
    assert outbox.next_attempt(3, 0.0, 86400.0, base=10, cap=3600, retry_for=86400) is None


def test_signature_round_trip_and_rejections():
    body = b'{"id":"evt_e1"}'
    header = sign("s3cret", 1_700_000_000, body)
    assert verify("s3cret", body, header, now=1_700_000_100) == 1_700_000_000
    with pytest.raises(SignatureError, match="does not match"):
        verify("s3cret", body + b" ", header, now=1_700_000_100)
    with pytest.raises(SignatureError, match="does not match"):
        verify("other", body, header, now=1_700_000_100)
    with pytest.raises(SignatureError, match="tolerance"):
        verify("s3cret", body, header, now=1_700_001_000)
    with pytest.raises(SignatureError, match="missing"):
        verify("s3cret", body, None, now=0)
    with pytest.raises(SignatureError, match="malformed"):
        verify("s3cret", body, "v1=abc", now=0)
